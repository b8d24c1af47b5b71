"""The report's tables as data: normalized scores after each phase with the improvement over
vanilla, and cumulative regret on sparse-reward tasks.

Conventions (stated in the report too):
* a score is the normalized score of the last evaluation of a phase, one number per seed;
  mean ± std are over seeds (population std, ``np.std``);
* improvement over vanilla = 100 · (mean_method − mean_vanilla) / |mean_vanilla| of the
  after-online scores of the same (dataset, algorithm), the SAMG paper's "% improvement";
* cumulative regret = mean over a seed's online training episodes of (1 − success), then
  mean ± std over seeds (SAMG paper, Table 2).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from o2o.analysis.results import RunResult


@dataclass(frozen=True)
class Table:
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]

    def markdown(self) -> str:
        lines = ["| " + " | ".join(self.headers) + " |", "|" + "---|" * len(self.headers)]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines)


@dataclass(frozen=True)
class ScoreRow:
    dataset: str
    algo: str
    method: str
    offline: np.ndarray  # per seed
    online: np.ndarray  # per seed
    improvement: float | None  # % over the vanilla run of the same (dataset, algo); None: no pair
    budget: str = ""  # offline+online steps ×seeds
    settings: str = ""  # agent settings that differ from the algorithm's defaults


def mean_std(values: np.ndarray) -> str:
    values = np.asarray(values, float)
    if values.size == 0:
        return "n/a"
    return f"{values.mean():.1f} ± {values.std():.1f}"


def improvement_percent(method_mean: float, vanilla_mean: float) -> float | None:
    if not np.isfinite(method_mean) or not np.isfinite(vanilla_mean) or vanilla_mean == 0:
        return None
    return 100.0 * (method_mean - vanilla_mean) / abs(vanilla_mean)


def percent_text(improvement: float | None) -> str:
    return "" if improvement is None else f"{improvement:+.1f}%"


def score_rows(results: Sequence[RunResult]) -> list[ScoreRow]:
    """One row per finished run, vanilla first within each (dataset, algorithm)."""
    finished = [r for r in results if r.finished]
    vanilla = {(r.dataset, r.algo): r for r in finished if r.method == "vanilla"}
    rows = []
    for r in finished:
        online = r.scores("online")
        improvement = None
        base = vanilla.get((r.dataset, r.algo))
        if (
            r.method != "vanilla"
            and base is not None
            and online.size
            and base.scores("online").size
        ):
            improvement = improvement_percent(online.mean(), base.scores("online").mean())
        settings = ", ".join(f"{k}={v}" for k, v in r.agent_changes().items())
        rows.append(
            ScoreRow(
                r.dataset,
                r.algo,
                r.method,
                r.scores("offline"),
                online,
                improvement,
                r.short_budget,
                settings,
            )
        )
    return rows


def score_table(results: Sequence[RunResult]) -> Table:
    body = []
    for row in score_rows(results):
        delta = (
            f"{row.online.mean() - row.offline.mean():+.1f}"
            if row.online.size and row.offline.size
            else "n/a"
        )
        improvement = percent_text(row.improvement)
        body.append(
            (
                row.dataset,
                row.algo,
                row.method,
                mean_std(row.offline),
                mean_std(row.online),
                delta,
                improvement,
                row.budget,
                row.settings,
            )
        )
    return Table(
        (
            "dataset",
            "algorithm",
            "method",
            "after offline",
            "after online",
            "Δ online − offline",
            "vs vanilla",
            "budget",
            "non-default settings",
        ),
        tuple(body),
    )


def paired_tables(results: Sequence[RunResult]) -> dict[str, Table]:
    """For each fine-tuning method, its runs side by side with vanilla's of the same
    (dataset, algorithm): the comparison the SAMG paper's Table 1 makes.

    `seeds above` counts the method's seeds whose after-online score exceeds vanilla's mean,
    a quick read of whether a difference in means is carried by one seed."""
    rows = score_rows(results)
    vanilla = {(r.dataset, r.algo): r for r in rows if r.method == "vanilla"}
    by_method: dict[str, list[tuple[str, ...]]] = defaultdict(list)
    for row in rows:
        base = vanilla.get((row.dataset, row.algo))
        if row.method == "vanilla" or base is None or not (row.online.size and base.online.size):
            continue
        above = int(np.sum(row.online > base.online.mean()))
        by_method[row.method].append(
            (
                row.dataset,
                row.algo,
                row.budget,
                mean_std(base.offline),
                mean_std(base.online),
                mean_std(row.online),
                percent_text(row.improvement),
                f"{above}/{row.online.size}",
            )
        )
    return {
        method: Table(
            (
                "dataset",
                "algorithm",
                "budget",
                "after offline",
                "vanilla after online",
                f"{method} after online",
                "vs vanilla",
                "seeds above vanilla's mean",
            ),
            tuple(body),
        )
        for method, body in sorted(by_method.items())
    }


def average_improvement(results: Sequence[RunResult]) -> dict[str, float]:
    """Mean of the per-(dataset, algorithm) improvements of each method over vanilla."""
    by_method: dict[str, list[float]] = defaultdict(list)
    for row in score_rows(results):
        if row.improvement is not None:
            by_method[row.method].append(row.improvement)
    return {method: float(np.mean(values)) for method, values in sorted(by_method.items())}


def seed_regret(result: RunResult) -> np.ndarray:
    """Per seed: mean of (1 − success) over its online training episodes; empty without
    success information."""
    by_seed: dict[int, list[float]] = defaultdict(list)
    for episode in result.episodes:
        if "success" in episode:
            by_seed[int(episode.get("seed", 0))].append(1.0 - float(episode["success"]))
    return np.array([np.mean(by_seed[s]) for s in sorted(by_seed)])


def regret_table(results: Sequence[RunResult]) -> Table | None:
    """Cumulative regret of every run whose episodes report success; None when none does."""
    body = []
    for r in results:
        regret = seed_regret(r)
        if regret.size:
            episodes = sum(1 for e in r.episodes if "success" in e)
            body.append(
                (
                    r.dataset,
                    r.algo,
                    r.method,
                    f"{regret.mean():.3f} ± {regret.std():.3f}",
                    str(episodes),
                )
            )
    if not body:
        return None
    return Table(
        ("dataset", "algorithm", "method", "cumulative regret", "episodes (all seeds)"),
        tuple(body),
    )
