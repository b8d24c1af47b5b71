"""Learning curves from ``metrics.jsonl`` rows: mean over seeds with a band of ±1 std, a 95%
confidence interval of the mean (Student t over seeds) or a 95% percentile-bootstrap interval
of the mean over seeds (rliable's choice for few seeds: it stays inside the seeds' range,
where a t-interval of 3 seeds smears across the plot)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np


def curve(
    rows: Sequence[dict], key: str = "normalized_score", band: str = "std"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps, mean over seeds, band) of the per-seed values of ``key``; ``band`` is ``std``
    (half-width: ±1 std over seeds), ``ci95`` (half-width of the t-interval of the mean) or
    ``bootstrap`` (a (2, steps) array: the interval's lower and upper bounds)."""
    per_seed = "seed_normalized_scores" if key == "normalized_score" else "seed_returns"
    steps = np.array([r["step"] for r in rows])
    values = [np.asarray(r.get(per_seed, [r[key]]), float) for r in rows]
    means = np.array([v.mean() for v in values])
    if band == "ci95":
        return steps, means, np.array([ci95(v) for v in values])
    if band == "bootstrap":
        bounds = np.array([bootstrap_interval(v) for v in values]).reshape(-1, 2)
        return steps, means, bounds.T
    return steps, means, np.array([v.std() for v in values])


def ci95(values: np.ndarray) -> float:
    """Half-width of the 95% Student-t confidence interval of the mean (0 for one value)."""
    from scipy import stats

    n = len(values)
    if n < 2:
        return 0.0
    return float(stats.t.ppf(0.975, n - 1) * np.std(values, ddof=1) / np.sqrt(n))


def bootstrap_interval(
    values: np.ndarray, reps: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """The percentile-bootstrap ``level`` interval of the mean of ``values`` (resampled with
    replacement ``reps`` times, a fixed seed so a figure is reproducible)."""
    values = np.asarray(values, float)
    if values.size < 2:
        return float(values.mean()), float(values.mean())
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, (reps, values.size))].mean(axis=1)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def distinct_colors(n: int) -> list:
    """``n`` colours that stay apart: tab10 up to 10 series, tab20 up to 20, then evenly
    spaced hues of a perceptually ordered map (never a cycle that repeats a colour)."""
    import matplotlib

    if n <= 10:
        return [matplotlib.colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [matplotlib.colormaps["tab20"](i) for i in range(n)]
    return [matplotlib.colormaps["turbo"](x) for x in np.linspace(0.05, 0.95, n)]


LINE_STYLES = ("-", "--", "-.", ":")


def plot_learning_curves(
    runs: Mapping[str, Sequence[dict]],
    path: Path,
    title: str,
    key: str = "normalized_score",
    boundary: int | None = None,
    band: str = "std",
    xlabel: str = "step (offline gradient steps, then online env steps)",
) -> Path:
    """One line per run label, in colours distinct for any number of runs, shaded ±1 std
    across seeds (``band="ci95"``: the t-interval of the mean; ``"bootstrap"``: the bootstrap
    interval of the mean); a dashed line at the offline→online ``boundary`` step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    colors = distinct_colors(len(runs))
    for i, (label, rows) in enumerate(runs.items()):
        steps, mean, spread = curve(rows, key, band)
        low, high = spread if band == "bootstrap" else (mean - spread, mean + spread)
        # Past 10 series a line style changes too, so neighbours on the colour map differ twice.
        style = LINE_STYLES[(i // 10) % len(LINE_STYLES)] if len(runs) > 10 else "-"
        ax.plot(steps, mean, style, marker="o", markersize=3, label=label, color=colors[i])
        ax.fill_between(steps, low, high, color=colors[i], alpha=0.2)
    if boundary is not None:
        ax.axvline(boundary, color="grey", linestyle="--", linewidth=1)
        ax.text(boundary, ax.get_ylim()[1], " online →", va="top", color="grey", fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("normalized score" if key == "normalized_score" else key)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8 if len(runs) <= 10 else 6, ncol=1 if len(runs) <= 12 else 2)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
