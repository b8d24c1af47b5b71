"""Aggregate statistics with ``rliable`` (Agarwal et al., 2021): IQM, mean and optimality
gap of the after-online normalized scores over tasks (datasets) and runs (seeds), with
stratified-bootstrap 95% confidence intervals, and the probability that a fine-tuning method
improves on vanilla fine-tuning of the same base algorithm.

Score matrices are (runs, tasks); a configuration's tasks are the datasets where it finished.
Configurations with unequal seed counts across tasks keep the first ``min`` seeds.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from o2o.analysis.results import RunResult, method_order

OPTIMALITY_THRESHOLD = 100.0  # normalized score of the reference expert


@dataclass(frozen=True)
class Estimate:
    point: float
    low: float
    high: float

    def text(self, digits: int = 1) -> str:
        return f"{self.point:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


@dataclass(frozen=True)
class Aggregate:
    label: str  # algo/method
    tasks: tuple[str, ...]
    runs: int
    iqm: Estimate
    mean: Estimate
    optimality_gap: Estimate


@dataclass(frozen=True)
class Improvement:
    algo: str
    method: str
    tasks: tuple[str, ...]
    probability: Estimate  # P(method > vanilla)


def score_matrices(
    results: Sequence[RunResult], phase: str = "online"
) -> dict[str, tuple[tuple[str, ...], np.ndarray]]:
    """label -> (tasks, scores of shape (runs, tasks)) of the healthy runs."""
    by_label: dict[str, dict[str, np.ndarray]] = defaultdict(dict)
    for r in results:
        scores = r.scores(phase)
        if r.healthy and scores.size:
            by_label[r.label][r.dataset] = scores
    matrices = {}
    for label, per_task in by_label.items():
        tasks = tuple(sorted(per_task))
        runs = min(per_task[t].size for t in tasks)
        matrices[label] = (tasks, np.stack([per_task[t][:runs] for t in tasks], axis=1))
    return matrices


def _aggregates(scores: np.ndarray) -> np.ndarray:
    from rliable import metrics

    return np.array(
        [
            metrics.aggregate_iqm(scores),
            metrics.aggregate_mean(scores),
            metrics.aggregate_optimality_gap(scores, OPTIMALITY_THRESHOLD),
        ]
    )


def _interval(
    score_dict: dict, func, reps: int, seed: int
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    from rliable import library as rly

    with warnings.catch_warnings():
        # arch deprecates the RandomState that rliable passes on; the bootstrap is the same.
        warnings.simplefilter("ignore", FutureWarning)
        return rly.get_interval_estimates(
            score_dict, func, reps=reps, random_state=np.random.RandomState(seed)
        )


def aggregate_statistics(
    results: Sequence[RunResult], reps: int = 2000, seed: int = 0
) -> list[Aggregate]:
    """IQM, mean and optimality gap with stratified-bootstrap 95% CIs, per algo/method."""
    matrices = score_matrices(results)
    if not matrices:
        return []
    points, intervals = _interval(
        {label: scores for label, (_, scores) in matrices.items()}, _aggregates, reps, seed
    )
    out = []
    for label in sorted(matrices, key=_label_order):
        tasks, scores = matrices[label]
        p, ci = points[label], intervals[label]
        estimates = [Estimate(float(p[i]), float(ci[0, i]), float(ci[1, i])) for i in range(3)]
        out.append(Aggregate(label, tasks, scores.shape[0], *estimates))
    return out


def probability_of_improvement(
    results: Sequence[RunResult], reps: int = 2000, seed: int = 0
) -> list[Improvement]:
    """P(method > vanilla) on the datasets both finished, per base algorithm and method."""
    from rliable import metrics

    finished = [r for r in results if r.healthy and r.scores("online").size]
    vanilla = {(r.dataset, r.algo): r.scores("online") for r in finished if r.method == "vanilla"}
    pairs: dict[tuple[str, str], dict[str, tuple[np.ndarray, np.ndarray]]] = defaultdict(dict)
    for r in finished:
        base = vanilla.get((r.dataset, r.algo))
        if r.method != "vanilla" and base is not None:
            pairs[(r.algo, r.method)][r.dataset] = (r.scores("online"), base)
    if not pairs:
        return []
    score_dict, tasks_of = {}, {}
    for (algo, method), per_task in pairs.items():
        tasks = tuple(sorted(per_task))
        runs = min(min(x.size, y.size) for x, y in per_task.values())
        x = np.stack([per_task[t][0][:runs] for t in tasks], axis=1)
        y = np.stack([per_task[t][1][:runs] for t in tasks], axis=1)
        score_dict[f"{algo}/{method}"] = (x, y)
        tasks_of[f"{algo}/{method}"] = tasks
    points, intervals = _interval(score_dict, metrics.probability_of_improvement, reps, seed)
    out = []
    for key in sorted(score_dict, key=_label_order):
        algo, method = key.split("/", 1)
        ci = np.ravel(intervals[key])
        out.append(
            Improvement(
                algo,
                method,
                tasks_of[key],
                Estimate(float(points[key]), float(ci[0]), float(ci[1])),
            )
        )
    return out


def _label_order(label: str) -> tuple[str, tuple[int, str]]:
    algo, method = label.split("/", 1)
    return algo, method_order(method)


@dataclass(frozen=True)
class PairedDifference:
    """A method against a reference on the same tasks. Paired (the default): each seed of the
    method starts from the reference's offline checkpoint of that seed. Unpaired: the arms
    share no checkpoint (a method that trains from the first offline step, such as FamO2O)."""

    tasks: tuple[str, ...]
    runs: int  # seeds per task (paired: pairs per task)
    difference: Estimate  # mean over tasks of the mean per-seed difference (score points)
    relative: Estimate | None  # 100 · difference / |mean reference score| (%); None if that is 0
    wins: int  # paired: (task, seed) pairs the method won; unpaired: (task, seed, seed) pairs
    pairs: int
    # P(the method beats the reference on a seed), ties half, averaged over tasks: paired, the
    # fraction of paired seeds it wins; unpaired, of all (method seed, reference seed) pairs
    # (rliable's probability of improvement). Bootstrapped with the difference's draws.
    probability: Estimate | None = None
    paired: bool = True


def paired_difference(
    method: dict[str, np.ndarray],
    reference: dict[str, np.ndarray],
    reps: int = 10_000,
    seed: int = 0,
    paired: bool = True,
) -> PairedDifference | None:
    """The difference on the tasks both have, with a stratified bootstrap: per task, seeds are
    resampled with replacement; paired, the *same* draws index the method and the reference,
    so the checkpoint a pair shares cancels; unpaired, each arm is drawn independently.
    Percentile 95% intervals. Tasks with unequal seed counts keep the first ``min`` seeds.
    None when no task is shared."""
    tasks = tuple(sorted(set(method) & set(reference)))
    if not tasks:
        return None
    runs = min(min(np.size(method[t]), np.size(reference[t])) for t in tasks)
    x = np.stack([np.asarray(method[t], float)[:runs] for t in tasks])  # (tasks, runs)
    y = np.stack([np.asarray(reference[t], float)[:runs] for t in tasks])
    rng = np.random.default_rng(seed)
    x_draws = rng.integers(0, runs, size=(reps, len(tasks), runs))
    y_draws = x_draws if paired else rng.integers(0, runs, size=(reps, len(tasks), runs))
    rows = np.arange(len(tasks))[None, :, None]
    x_boot = x[rows, x_draws].mean(axis=(1, 2))
    y_boot = y[rows, y_draws].mean(axis=(1, 2))

    def estimate(point: float, boot: np.ndarray) -> Estimate:
        low, high = np.percentile(boot, [2.5, 97.5])
        return Estimate(float(point), float(low), float(high))

    relative = None
    if y.mean() != 0 and np.all(y_boot != 0):
        relative = estimate(
            float(100.0 * (x.mean() - y.mean()) / abs(y.mean())),
            100.0 * (x_boot - y_boot) / np.abs(y_boot),
        )

    def beats(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a > b) + 0.5 * (a == b)

    if paired:
        wins, pairs = int((x > y).sum()), int(x.size)
        probability = estimate(
            float(beats(x, y).mean()), beats(x, y)[rows, x_draws].mean(axis=(1, 2))
        )
    else:
        all_pairs = beats(x[:, :, None], y[:, None, :])  # (tasks, method seed, reference seed)
        wins, pairs = int((x[:, :, None] > y[:, None, :]).sum()), int(all_pairs.size)
        x_b, y_b = x[rows, x_draws], y[rows, y_draws]  # (reps, tasks, runs)
        boot = beats(x_b[..., :, None], y_b[..., None, :]).mean(axis=(1, 2, 3))
        probability = estimate(float(all_pairs.mean()), boot)
    return PairedDifference(
        tasks=tasks,
        runs=runs,
        difference=estimate(float(x.mean() - y.mean()), x_boot - y_boot),
        relative=relative,
        wins=wins,
        pairs=pairs,
        probability=probability,
        paired=paired,
    )
