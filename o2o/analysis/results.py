"""A results directory read back: every run directory below it with its config, summary,
evaluation rows, training episodes and fine-tuning diagnostics.

A run directory is any directory holding ``config.yaml`` from the pipeline. Its (dataset,
algorithm, method) come from ``summary.json`` when it finished, else from the config; the
method's name is its results-directory label (``samg``, ``samg-even`` ...).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from o2o.errors import O2OError
from o2o.experiment.runs import CONFIG, EPISODES, FINETUNE, METRICS, RunDir, plain_config


@dataclass
class RunResult:
    path: Path
    dataset: str
    algo: str
    method: str
    config: dict[str, Any]
    summary: dict[str, Any] | None
    rows: list[dict[str, Any]]  # metrics.jsonl: one row per evaluation, offline and online
    episodes: list[dict[str, Any]]  # episodes.jsonl: one row per online training episode
    finetune: list[dict[str, Any]]  # finetune.jsonl: the method's diagnostics
    # metrics.jsonl rows of the other phases (SPOT's VAE, SAMG's C-VAE fit): train metrics
    phase_rows_other: list[dict[str, Any]] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.summary is not None

    @property
    def healthy(self) -> bool:
        """Finished with a finite score for every seed of both phases: what aggregates over
        runs use, so one diverged or NaN run cannot turn a healthy aggregate into NaN."""
        return self.finished and all(
            np.all(np.isfinite(self.scores(phase))) for phase in ("offline", "online")
        )

    @property
    def key(self) -> tuple[str, str, str]:
        return self.dataset, self.algo, self.method

    @property
    def label(self) -> str:
        return f"{self.algo}/{self.method}"

    @property
    def pipeline(self) -> dict[str, Any]:
        return self.config.get("pipeline", {})

    def scores(self, phase: str) -> np.ndarray:
        """Per-seed normalized score at the last evaluation of ``phase`` (offline / online)."""
        if self.summary is not None and f"{phase}_scores" in self.summary:
            return np.asarray(self.summary[f"{phase}_scores"], float)
        rows = self.phase_rows(phase)
        return np.asarray(rows[-1]["seed_normalized_scores"], float) if rows else np.array([])

    def phase_rows(self, phase: str) -> list[dict[str, Any]]:
        return [r for r in self.rows if _phase_of(r) == phase]

    @property
    def offline_steps(self) -> int:
        """The offline gradient steps behind the run's agent, a ``--from`` run's included
        (``curves.offline_budget``)."""
        from o2o.analysis.curves import offline_budget

        return offline_budget(self.rows, self.pipeline.get("offline_steps"))

    def timeline(self) -> list[dict[str, Any]]:
        """The evaluation rows on one step axis (``curves.timeline``)."""
        from o2o.analysis.curves import timeline

        return timeline(self.rows, self.pipeline.get("offline_steps"))

    def _offline_steps_text(self) -> Any:
        return self.offline_steps if "offline_steps" in self.pipeline else "?"

    @property
    def budget(self) -> str:
        p = self.pipeline
        return (
            f"{self._offline_steps_text()} offline + {p.get('online_steps', '?')} online steps, "
            f"{p.get('seeds', '?')} seeds, {p.get('eval_episodes', '?')} eval episodes"
        )

    @property
    def short_budget(self) -> str:
        """``offline+online steps ×seeds``, e.g. ``5k+5k ×3``: one table cell."""
        p = self.pipeline
        return (
            f"{_steps(self._offline_steps_text())}+{_steps(p.get('online_steps'))} "
            f"×{p.get('seeds', '?')}"
        )

    def agent_changes(self) -> dict[str, Any]:
        """Agent settings that differ from the algorithm's defaults for the dataset's domain,
        such as a CPU-budget ``cql_n_actions=2``. Schedules the pipeline fits to the run's
        budget are not changes."""
        from o2o.agents import CONFIGS, domain_config
        from o2o.experiment.suite import dataset_domain

        stored = self.config.get("agent") or {}
        if self.algo not in CONFIGS:
            return {}
        default_config = domain_config(self.algo, dataset_domain(self.dataset))
        # Through YAML so both sides have the stored form (lists, .inf, ...).
        default = yaml.safe_load(yaml.safe_dump(plain_config(asdict(default_config))))
        return {
            name: value
            for name, value in stored.items()
            if name not in default_config.budget_fields
            and name in default
            and default[name] != value
        }


def _steps(value: Any) -> str:
    if isinstance(value, int) and value >= 1000 and value % 1000 == 0:
        return f"{value // 1000}k"
    return str(value if value is not None else "?")


EVALUATED_PHASES = ("offline", "online")


def _phase_of(row: dict[str, Any]) -> str:
    return row.get("phase", "online")


def load_results(root: Path | str) -> list[RunResult]:
    """Every run below ``root``, sorted by (dataset, algorithm, method)."""
    root = Path(root)
    if not root.is_dir():
        raise O2OError(f"results directory {root} not found")
    results = []
    for config_path in sorted(root.rglob(CONFIG)):
        if any(part.startswith(".") for part in config_path.relative_to(root).parts):
            continue  # scratch runs (the runner's .offline-recreate)
        try:
            config = yaml.safe_load(config_path.read_text()) or {}
        except yaml.YAMLError:
            continue
        if "pipeline" not in config:
            continue  # an online-only run or a suite file, not an offline→online run
        run = RunDir(config_path.parent)
        summary = run.summary()
        finetune = config.get("finetune") or {}
        info = summary or {}
        metrics = run.rows(METRICS)
        results.append(
            RunResult(
                path=run.path,
                dataset=str(info.get("dataset") or config["pipeline"].get("dataset")),
                algo=algo_label(config, info),
                method=str(info.get("method") or _label(run.path, finetune)),
                config=config,
                summary=summary,
                rows=[r for r in metrics if _phase_of(r) in EVALUATED_PHASES],
                phase_rows_other=[r for r in metrics if _phase_of(r) not in EVALUATED_PHASES],
                episodes=run.rows(EPISODES),
                finetune=run.rows(FINETUNE),
            )
        )
    if not results:
        raise O2OError(f"no offline→online runs (config.yaml with a pipeline) below {root}")
    return sorted(results, key=lambda r: (r.dataset, r.algo, method_order(r.method)))


def algo_label(config: dict[str, Any], summary: dict[str, Any]) -> str:
    """``iql``, or ``iql-ppo`` for an IQL run fine-tuned by PPO (the suite's directory name), so
    tables never pair it with a run fine-tuned by IQL itself."""
    algo = str(summary.get("algo") or config.get("algo"))
    online = (config.get("online_agent") or {}).get("algo")
    return algo if online is None or algo.endswith(f"-{online}") else f"{algo}-{online}"


def _label(path: Path, finetune: dict[str, Any]) -> str:
    """An unfinished run's method label: its directory name under the suite layout."""
    name = finetune.get("name", "vanilla")
    return path.name if path.name.startswith(name) else name


def method_order(method: str) -> tuple[int, str]:
    """Vanilla first, then the methods by name."""
    return (0 if method == "vanilla" else 1, method)
