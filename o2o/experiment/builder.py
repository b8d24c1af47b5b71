"""One builder from a run config to a finished run, for the CLI, the suite runner (local and
Ray) and the demo alike:

    RunSpec (algo, agent config, pipeline config, methods + options)
      -> dataset -> methods -> agent (created with the methods as hooks) -> Pipeline
      -> offline states (pre-trained here, or loaded from another run: paired runs, --from)
      -> run directory rows and summary.json
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from o2o.core.overrides import coerce_overrides
from o2o.data.dataset import COLUMNS
from o2o.errors import ConfigError, did_you_mean
from o2o.experiment.checkpoint import load_checkpoint
from o2o.experiment.divergence import DivergenceGuard
from o2o.experiment.pipeline import (
    OFFLINE,
    OFFLINE_CHECKPOINT,
    Pipeline,
    PipelineConfig,
    PipelineResult,
    dataset_domain,
)
from o2o.experiment.runs import CONFIG, METRICS, RunDir, number, plain_config
from o2o.finetune import (
    budget_options,
    coerce_method_options,
    declared_online_algo,
    make_methods,
    method_agent_defaults,
    method_online_defaults,
    with_dataset,
    with_domain,
)


def agent_config_for(
    algo: str,
    domain: str | None,
    overrides: dict[str, Any],
    budget: tuple[int | None, int | None] | None = None,
    finetuning: bool = False,
) -> Any:
    """Algorithm ``algo``'s config: its preset for ``domain`` (with ``finetuning``: its
    preset for fine-tuning another algorithm's actor, where it has one), the user's
    ``overrides`` (typed from strings or YAML), and with ``budget`` = (offline steps, online
    updates) its budget-dependent schedules fitted to the run's budget unless the user set
    them."""
    from o2o.agents import CONFIGS, domain_config

    if algo not in CONFIGS:
        raise ConfigError(
            f"unknown algorithm '{algo}'{did_you_mean(algo, CONFIGS)}; choose from "
            f"{', '.join(sorted(CONFIGS))}"
        )
    typed = coerce_overrides(overrides, CONFIGS[algo])
    preset = domain_config(algo, domain)
    if finetuning and hasattr(CONFIGS[algo], "for_finetuning"):
        preset = CONFIGS[algo].for_finetuning()
    try:
        config = dataclasses.replace(preset, **typed)
    except TypeError as error:
        raise ConfigError(str(error)) from None
    return config if budget is None else config.fit_to_budget(*budget, keep=tuple(typed))


def _tuples(options: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}


@dataclass(frozen=True)
class RunSpec:
    """Everything that defines a run (what ``config.yaml`` stores)."""

    algo: str
    agent: Any
    pipeline: PipelineConfig
    finetune: str = "vanilla"
    options: dict[str, Any] = field(default_factory=dict)
    online_algo: str | None = None  # fine-tune with another algorithm (Pipeline's ``online``)
    online_agent: Any = None

    @classmethod
    def create(
        cls,
        algo: str,
        pipeline: PipelineConfig,
        finetune: str = "vanilla",
        method_options: dict[str, Any] | None = None,
        agent_overrides: dict[str, Any] | None = None,
        domain: str | None = None,
        dataset: Any = None,
        online_algo: str | None = None,
        online_overrides: dict[str, Any] | None = None,
        offline_budget: int | None = None,
    ) -> RunSpec:
        """A validated spec; ``domain`` None: from the dataset (maze datasets get ``maze``,
        Adroit ones ``adroit``). ``online_algo``: fine-tune with that algorithm (its
        fine-tuning preset, then ``online_overrides``) from the offline actor.
        ``offline_budget``: the offline steps behind the agent where they are not the run's
        own (``--from`` another run), what the methods fit their options to."""
        algo = algo.lower()
        if domain is None:
            domain = dataset_domain(dataset) if dataset is not None else "locomotion"
        options = with_dataset(
            finetune, with_domain(finetune, method_options or {}, domain), pipeline.dataset
        )
        options = budget_options(
            finetune,
            coerce_method_options(finetune, options),
            pipeline.offline_steps if offline_budget is None else offline_budget,
            pipeline.online_steps,
        )
        online_algo = declared_online_algo(finetune, online_algo)
        budget = (pipeline.offline_steps, pipeline.online_steps * pipeline.utd)
        agent = agent_config_for(
            algo,
            domain,
            {**method_agent_defaults(finetune, options, algo), **(agent_overrides or {})},
            budget,
        )
        online_agent = None
        if online_algo is not None:
            online_algo = online_algo.lower()
            defaults = method_online_defaults(finetune, options, online_algo)
            online_agent = agent_config_for(
                online_algo,
                domain,
                {**defaults, **(online_overrides or {})},
                budget,
                finetuning=True,
            )
        elif online_overrides:
            raise ConfigError("--online-set needs --online-algo")
        spec = cls(algo, agent, pipeline, finetune, options, online_algo, online_agent)
        if dataset is not None:
            spec.methods(dataset.obs_dim, dataset.act_dim)  # validates the options
        return spec

    @classmethod
    def from_stored(cls, stored: dict[str, Any]) -> RunSpec:
        from o2o.agents import CONFIGS

        algo = stored["algo"]
        finetune = stored.get("finetune", {"name": "vanilla", "options": {}})
        online = stored.get("online_agent")
        return cls(
            algo,
            CONFIGS[algo](**_tuples(stored["agent"])),
            PipelineConfig(**stored["pipeline"]),
            finetune["name"],
            _tuples(finetune.get("options", {})),
            online["algo"] if online else None,
            CONFIGS[online["algo"]](**_tuples(online["agent"])) if online else None,
        )

    def stored(self) -> dict[str, Any]:
        stored = {
            "algo": self.algo,
            "agent": asdict(self.agent),
            "pipeline": asdict(self.pipeline),
            "finetune": {"name": self.finetune, "options": dict(self.options)},
        }
        if self.online_algo is not None:  # absent otherwise: earlier runs' configs stay equal
            stored["online_agent"] = {"algo": self.online_algo, "agent": asdict(self.online_agent)}
        return plain_config(stored)

    def methods(self, obs_dim: int, act_dim: int) -> Any:
        return make_methods(self.finetune, self.options, obs_dim, act_dim)

    @property
    def online(self) -> tuple[str, Any] | None:
        return None if self.online_algo is None else (self.online_algo, self.online_agent)

    @property
    def paired(self) -> bool:
        """Whether this run can start from a vanilla run's offline checkpoint (its methods
        leave offline training alone)."""
        from o2o.finetune import REGISTRY, parse_labels

        labels = parse_labels(self.finetune)
        return bool(labels) and not any(REGISTRY[label][0].trains_offline for label in labels)

    def build(self, dataset: Any = None, guard: DivergenceGuard | None = None) -> Pipeline:
        from o2o import data as datasets

        dataset = dataset if dataset is not None else datasets.load(self.pipeline.dataset)
        methods = self.methods(dataset.obs_dim, dataset.act_dim)
        return Pipeline(
            self.algo,
            self.agent,
            self.pipeline,
            dataset=dataset,
            methods=methods,
            online=self.online,
            guard=guard,
        )


def source_offline_steps(source: Path) -> int | None:
    """The offline steps of the run a ``--from`` run starts from (its config.yaml, beside
    the checkpoint); None where it has none."""
    source = Path(source)
    run = RunDir(source if source.is_dir() else source.parent)
    if not (run.path / CONFIG).exists():
        return None
    steps = (run.config().get("pipeline") or {}).get("offline_steps")
    return int(steps) if steps is not None else None


def load_offline_states(pipeline: Pipeline, source: Path) -> Any:
    """The offline states of another run (``offline.msgpack`` or a run directory holding it),
    in the structure of ``pipeline``'s agent."""
    source = Path(source)
    path = source / OFFLINE_CHECKPOINT if source.is_dir() else source
    template = pipeline.initial_states()[0]
    return jax.tree.map(jnp.asarray, load_checkpoint(path, {"states": template})["states"])


DATASET_DIGEST = "dataset_sha256"


def dataset_digest(dataset: Any) -> str:
    """SHA-256 of a dataset's transitions (what training reads, whatever the file format)."""
    digest = hashlib.sha256()
    for name in COLUMNS:
        array = np.ascontiguousarray(getattr(dataset, name))
        digest.update(f"{name}{array.dtype}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def check_dataset(run: RunDir, dataset: Any) -> None:
    """A run's dataset is the one it started with: its digest is stored in ``config.yaml`` on
    the first start and compared on every resume (a name can resolve to another file)."""
    config = run.config()
    digest = dataset_digest(dataset)
    stored = config.get(DATASET_DIGEST)
    if stored is None:
        run.write_config({**config, DATASET_DIGEST: digest})
    elif stored != digest:
        raise ConfigError(
            f"{run.path} was started on other data: dataset {config['pipeline']['dataset']!r} "
            f"now has sha256 {digest[:12]}..., the run's config.yaml {stored[:12]}...; "
            "restore the original dataset file or start a new run"
        )


def copy_offline_rows(source: RunDir, run: RunDir) -> None:
    """The offline rows of ``source`` first in ``run``'s metrics.jsonl, written in one atomic
    replace (a run killed while copying them has all or none)."""
    offline = [row for row in source.rows() if row.get("phase") == OFFLINE]
    own = run.rows()
    if [row for row in own if row.get("phase") == OFFLINE] != offline:
        rest = [row for row in own if row.get("phase") != OFFLINE]
        run.write_rows(METRICS, offline + rest)


def execute(
    spec: RunSpec,
    run: RunDir | None,
    resume: bool = False,
    progress: bool = True,
    dataset: Any = None,
    offline_from: Path | None = None,
    on_eval: Any = None,
    announce: Any = None,
    label: str | None = None,
    guard: DivergenceGuard | None = None,
) -> tuple[PipelineResult, dict[str, Any]]:
    """Run (or resume) ``spec`` into ``run``; with ``offline_from`` the offline phase is
    loaded from that run instead of trained (its offline rows are copied, so the run's own
    files tell the whole story). Writes and returns summary.json's content (``label``: the
    method's name there, default ``spec.finetune``); ``guard``: the divergence bound (not
    part of the run's config: a run that does not diverge is the same under any). A new run
    whose setup fails before anything but its config.yaml was written leaves no run directory
    behind. ``run`` None: nothing is written, the rows stay in memory (the Python API's
    ``o2o.fit``)."""
    setup = run.removed_if_setup_fails(new=not resume) if run else contextlib.nullcontext()
    with setup:
        pipeline = spec.build(dataset, guard)
        del dataset  # SAMG keeps no offline data in memory once fine-tuning starts
        if run is not None:
            check_dataset(run, pipeline.dataset)
        if announce is not None:
            announce(pipeline)
        offline_states = None
        if offline_from is not None:
            offline_states = load_offline_states(pipeline, offline_from)
            source = Path(offline_from)
            source_dir = source if source.is_dir() else source.parent
            if run is not None and (source_dir / METRICS).exists():
                copy_offline_rows(RunDir(source_dir), run)
        start = time.perf_counter()
        result = pipeline.run(
            run, resume=resume, progress=progress, offline_states=offline_states, on_eval=on_eval
        )
        summary: dict[str, Any] = {
            "dataset": spec.pipeline.dataset,
            "algo": spec.algo,
            "method": label or spec.finetune,
            "seconds": time.perf_counter() - start,
            **pipeline.describe(),
        }
        for phase in (OFFLINE, "online"):
            rows = [r for r in result.rows if r.get("phase") == phase]
            if rows:
                summary[f"final_{phase}"] = rows[-1]
                summary[f"{phase}_scores"] = rows[-1].get("seed_normalized_scores")
                if "updates" in rows[-1]:
                    summary[f"{phase}_updates"] = rows[-1]["updates"]
        summary.update(pipeline.methods.summary(result.rows))
        if run is not None:
            run.write_summary(summary)
        return result, summary


def score_line(row: dict, seeds: int) -> str:
    scores = np.asarray(row.get("seed_normalized_scores", [np.nan]), float)
    return (
        f"normalized score {number(row.get('normalized_score')):.1f} ± {np.std(scores):.1f} "
        f"(return {number(row['return']):.1f}) over {seeds} seed(s)"
    )
