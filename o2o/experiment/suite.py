"""A suite of runs: datasets × algorithms × fine-tuning methods, one budget, one YAML file.

    name: quick-cpu
    datasets: [hopper-medium-lite]
    algos: [bc, iql]
    methods: [vanilla, {samg: {cvae_steps: 1000}}]   # a name, or {name: options}
    seeds: 3                      # one configuration's seeds share a process (vmapped axis)
    offline_steps: 2000
    online_steps: 2000
    offline_eval_every: 1000      # default: once, at the end of the offline phase
    online_eval_every: 500        # default: max(online_steps // 4, 1000)
    eval_episodes: 5
    agent_overrides: {cql: {cql_n_actions: 2}}   # per algorithm
    online_algos: {iql: ppo}      # fine-tune an algorithm's offline actor with another one
    pipeline: {batch_size: 256}   # any other PipelineConfig field

A configuration is one (dataset, algorithm, method) with every seed; its results live in
``<results>/<dataset>/<algo>/<method label>/`` (a label is one directory name), or
``<results>/<dataset>/<algo>-<online algo>/<method label>/`` for an algorithm ``online_algos``
hands to another one online (every method of it, vanilla included, so a method such as O2PPO is
paired with vanilla fine-tuning by the same online algorithm; ``agent_overrides`` of the online
algorithm's name apply to the online agent). Everything is
validated on load, value types and duplicated keys included, so a typo fails in a second
with one line instead of hours into a run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from o2o.core.agent import DOMAINS
from o2o.core.overrides import coerce_overrides
from o2o.errors import ConfigError, DatasetError, O2OError
from o2o.experiment.pipeline import PipelineConfig, domain_of
from o2o.experiment.runs import check_run_name

SUITE_FIELDS = (
    "name",
    "description",
    "datasets",
    "algos",
    "methods",
    "seeds",
    "seed",
    "offline_steps",
    "online_steps",
    "offline_eval_every",
    "online_eval_every",
    "eval_episodes",
    "domain",
    "agent_overrides",
    "online_algos",
    "pipeline",
)
# PipelineConfig fields a suite sets through its own top-level keys.
_TOP_LEVEL_PIPELINE = {
    "dataset",
    "seeds",
    "seed",
    "offline_steps",
    "online_steps",
    "offline_eval_every",
    "online_eval_every",
    "eval_episodes",
}


def dataset_domain(dataset: str) -> str:
    """The hyperparameter preset a dataset name implies (``maze``, ``adroit``, ``locomotion``)."""
    return domain_of(dataset)


@dataclass(frozen=True)
class MethodSpec:
    """A fine-tuning method with its options; ``label`` names its results directory."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)
    label: str = ""

    def __post_init__(self) -> None:
        if not self.label:
            object.__setattr__(self, "label", self.name)


VANILLA = MethodSpec("vanilla")


@dataclass(frozen=True)
class Configuration:
    """One (dataset, algorithm, method) of a suite, every seed together."""

    dataset: str
    algo: str
    method: MethodSpec
    pipeline: PipelineConfig
    domain: str
    agent_overrides: dict[str, Any] = field(default_factory=dict)
    online_algo: str | None = None
    online_overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def algo_label(self) -> str:
        return self.algo if self.online_algo is None else f"{self.algo}-{self.online_algo}"

    @property
    def relpath(self) -> Path:
        return Path(self.dataset.replace("/", "_")) / self.algo_label / self.method.label

    @property
    def name(self) -> str:
        return f"{self.dataset} {self.algo_label} {self.method.label}"

    @property
    def paired(self) -> bool:
        """Fine-tuning methods start from the vanilla run's offline checkpoint."""
        return self.spec().paired

    def vanilla(self) -> Configuration:
        return dataclasses.replace(self, method=VANILLA)

    def offline_source(self) -> Configuration | None:
        """The configuration whose offline checkpoint this one starts from: vanilla's for a
        method that leaves offline training alone (``paired``); the base variant's for a
        variant that differs from it only online (``o2o.finetune.offline_twin``: famo2o-fixed
        and famo2o-random start from famo2o's); None where it trains its own offline phase."""
        if self.paired:
            return self.vanilla()
        from o2o.finetune import offline_twin

        twin = offline_twin(self.method.name, self.method.options)
        if twin is None:
            return None
        source = dataclasses.replace(self, method=MethodSpec(*twin))
        return None if source.relpath == self.relpath else source

    def spec(self) -> Any:
        from o2o.experiment.builder import RunSpec

        return RunSpec.create(
            self.algo,
            self.pipeline,
            self.method.name,
            self.method.options,
            self.agent_overrides,
            self.domain,
            online_algo=self.online_algo,
            online_overrides=self.online_overrides or None,
        )

    def agent_config(self) -> Any:
        return self.spec().agent

    def stored_config(self) -> dict[str, Any]:
        """What ``config.yaml`` of this configuration's run directory holds."""
        return self.spec().stored()


@dataclass(frozen=True)
class Suite:
    name: str
    datasets: tuple[str, ...]
    algos: tuple[str, ...]
    methods: tuple[MethodSpec, ...]
    seeds: int = 3
    seed: int = 0
    offline_steps: int = 20_000
    online_steps: int = 10_000
    offline_eval_every: int | None = None  # None: once, after the offline phase
    online_eval_every: int | None = None  # None: max(online_steps // 4, 1000)
    eval_episodes: int = 5
    domain: str = "auto"  # hyperparameter preset: auto (maze datasets -> maze), locomotion, maze
    agent_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    online_algos: dict[str, str] = field(default_factory=dict)
    pipeline: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    def configurations(self) -> list[Configuration]:
        """Every configuration, vanilla before the methods paired with it."""
        configs = []
        for dataset in self.datasets:
            for algo in self.algos:
                for method in self.methods:
                    configs.append(
                        Configuration(
                            dataset=dataset,
                            algo=algo,
                            method=method,
                            pipeline=self.pipeline_config(dataset),
                            domain=self._domain(dataset),
                            agent_overrides=dict(self.agent_overrides.get(algo, {})),
                            online_algo=self.online_algos.get(algo),
                            online_overrides=dict(
                                self.agent_overrides.get(self.online_algos.get(algo, ""), {})
                            ),
                        )
                    )
        return configs

    def pipeline_config(self, dataset: str) -> PipelineConfig:
        offline_every = self.offline_eval_every or max(self.offline_steps, 1)
        online_every = self.online_eval_every or max(self.online_steps // 4, 1000)
        try:
            return PipelineConfig(
                dataset=dataset,
                offline_steps=self.offline_steps,
                online_steps=self.online_steps,
                offline_eval_every=offline_every,
                online_eval_every=online_every,
                eval_episodes=self.eval_episodes,
                seeds=self.seeds,
                seed=self.seed,
                **coerce_overrides(self.pipeline, PipelineConfig),
            )
        except TypeError as error:  # a non-integer budget compared with 0
            raise ConfigError(
                f"suite '{self.name}': bad budget or pipeline option ({error})"
            ) from None

    def _domain(self, dataset: str) -> str:
        return self.domain if self.domain != "auto" else dataset_domain(dataset)

    def restricted(
        self,
        datasets: list[str] | None = None,
        algos: list[str] | None = None,
        methods: list[str] | None = None,
    ) -> Suite:
        """The same suite over a subset of its datasets / algorithms / method labels
        (``--only-*``); a method label the suite does not hold is an error."""
        chosen = self.methods
        if methods:
            labels = [m.label for m in self.methods]
            unknown = [name for name in methods if name not in labels]
            if unknown:
                raise ConfigError(
                    f"suite '{self.name}' has no method {', '.join(unknown)} "
                    f"(its methods: {', '.join(labels)})"
                )
            chosen = tuple(m for m in self.methods if m.label in methods)
        return validate(
            dataclasses.replace(
                self,
                datasets=tuple(datasets) if datasets else self.datasets,
                algos=tuple(algos) if algos else self.algos,
                methods=chosen,
            )
        )


def load_suite(path: Path | str) -> Suite:
    """A suite from its YAML file, validated."""
    path = Path(path)
    if not path.is_file():
        raise O2OError(f"suite file {path} not found")
    try:
        raw = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(error, "problem", None)
        raise ConfigError(
            f"suite file {path} is not valid YAML{where}" + (f": {problem}" if problem else "")
        ) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"suite file {path} must hold a mapping of suite fields")
    return suite_from_dict(raw, default_name=path.stem)


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (PyYAML would
    silently keep the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                continue  # the base constructor reports an unhashable key
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def suite_from_dict(raw: dict[str, Any], default_name: str = "suite") -> Suite:
    unknown = sorted(set(raw) - set(SUITE_FIELDS))
    if unknown:
        raise ConfigError(
            f"unknown suite field(s) {', '.join(unknown)}; fields: {', '.join(SUITE_FIELDS)}"
        )
    for key in ("datasets", "algos", "methods"):
        if not isinstance(raw.get(key), list) or not raw[key]:
            raise ConfigError(f"suite field '{key}' must be a non-empty list")
    for key in ("agent_overrides", "online_algos", "pipeline"):
        if not isinstance(raw.get(key) or {}, dict):
            raise ConfigError(f"suite field '{key}' must be a mapping")
    for algo, options in (raw.get("agent_overrides") or {}).items():
        if not isinstance(options or {}, dict):
            raise ConfigError(
                f"suite field 'agent_overrides': {algo} must map option names to values, "
                f"got {options!r}"
            )
    values = dict(raw)
    values["name"] = check_run_name(str(raw.get("name") or default_name), "suite name")
    values["datasets"] = tuple(str(d) for d in raw["datasets"])
    values["algos"] = tuple(str(a).lower() for a in raw["algos"])
    values["methods"] = tuple(_method_spec(m) for m in raw["methods"])
    values["agent_overrides"] = {
        str(k).lower(): dict(v or {}) for k, v in (raw.get("agent_overrides") or {}).items()
    }
    values["online_algos"] = {
        str(k).lower(): str(v).lower() for k, v in (raw.get("online_algos") or {}).items()
    }
    values["pipeline"] = dict(raw.get("pipeline") or {})
    return validate(Suite(**values))


def _method_spec(entry: Any) -> MethodSpec:
    if isinstance(entry, str):
        return MethodSpec(entry)
    if isinstance(entry, dict) and len(entry) == 1:
        ((name, options),) = entry.items()
        if not isinstance(options or {}, dict):
            raise ConfigError(
                f"suite method {name}: options must be a mapping {{option: value}}, got {options!r}"
            )
        options = dict(options or {})
        label = check_run_name(str(options.pop("label", name)), "suite method label")
        return MethodSpec(str(name), options, label)
    raise ConfigError(f"a suite method is a name or {{name: {{option: value}}}}, got {entry!r}")


def validate(suite: Suite) -> Suite:
    """Every name known, every option of the right kind, every budget valid; else ConfigError."""
    from o2o.agents import CONFIGS
    from o2o.finetune import coerce_method_options

    for key in ("seeds", "seed", "offline_steps", "online_steps", "eval_episodes"):
        value = getattr(suite, key)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"suite field '{key}' must be an integer, got {value!r}")
    for key in ("offline_eval_every", "online_eval_every"):
        value = getattr(suite, key)
        if value is not None and (not isinstance(value, int) or value <= 0):
            raise ConfigError(f"suite field '{key}' must be a positive integer, got {value!r}")
    if suite.domain not in ("auto", *DOMAINS):
        raise ConfigError(
            f"suite field 'domain' must be auto, {', '.join(DOMAINS)}, got {suite.domain!r}"
        )
    clash = sorted(set(suite.pipeline) & _TOP_LEVEL_PIPELINE)
    if clash:
        raise ConfigError(f"set {', '.join(clash)} at the top of the suite, not under 'pipeline'")
    for algo in suite.algos:
        if algo not in CONFIGS:
            raise ConfigError(
                f"unknown algorithm '{algo}'; choose from {', '.join(sorted(CONFIGS))}"
            )
    for algo, overrides in suite.agent_overrides.items():
        if algo not in CONFIGS:
            raise ConfigError(
                f"agent_overrides: unknown algorithm '{algo}'; choose from {', '.join(sorted(CONFIGS))}"
            )
        coerce_overrides(overrides, CONFIGS[algo])
    for algo, online in suite.online_algos.items():
        if algo not in suite.algos:
            raise ConfigError(f"online_algos: {algo} is not one of the suite's algos")
        if online not in CONFIGS:
            raise ConfigError(
                f"online_algos: unknown algorithm '{online}'; choose from {', '.join(sorted(CONFIGS))}"
            )
    labels = [m.label for m in suite.methods]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"two suite methods share a label: {', '.join(labels)}")
    for method in suite.methods:
        coerce_method_options(method.name, method.options)
        if method.label == "vanilla" and method.name != "vanilla":
            raise ConfigError("the label 'vanilla' is reserved for the vanilla method")
    for dataset in suite.datasets:
        check_run_name(dataset.replace("/", "_"), "suite dataset directory")
        _check_dataset(dataset)
    for config in suite.configurations():
        config.agent_config()  # a bad agent override or budget fails here, not mid-suite
    return suite


def _check_dataset(name: str) -> None:
    from o2o.data import resolve_path

    try:
        path = resolve_path(name)
    except DatasetError as error:
        raise ConfigError(f"suite dataset {error}") from None
    if path is None or not path.exists():
        raise ConfigError(f"suite dataset {name}: no such file or directory")


def parse_agent_sets(items: list[str]) -> dict[str, dict[str, Any]]:
    """``["cql.cql_n_actions=2"]`` -> ``{"cql": {"cql_n_actions": 2}}`` (values read as YAML)."""
    from o2o.agents import CONFIGS
    from o2o.arguments import parse_pairs

    overrides: dict[str, dict[str, Any]] = {}
    for item in items:
        algo, _, pair = item.partition(".")
        name, sep, _ = pair.partition("=")
        if not sep or not name or algo.lower() not in CONFIGS:
            raise ConfigError(
                f"--agent-set expects ALGO.NAME=VALUE with a known ALGO, got '{item}'"
            )
        overrides.setdefault(algo.lower(), {}).update(parse_pairs([pair], "--agent-set"))
    return overrides


def with_agent_overrides(suite: Suite, extra: dict[str, dict[str, Any]]) -> Suite:
    """``suite`` with ``extra`` per-algorithm agent overrides on top of its own."""
    merged = {algo: dict(values) for algo, values in suite.agent_overrides.items()}
    for algo, values in extra.items():
        merged.setdefault(algo, {}).update(values)
    return validate(dataclasses.replace(suite, agent_overrides=merged))
