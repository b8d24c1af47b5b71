"""Learning curves from ``metrics.jsonl`` rows: mean over seeds with a band of ±1 std or a
95% confidence interval of the mean (Student t over seeds)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np


def curve(
    rows: Sequence[dict], key: str = "normalized_score", band: str = "std"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps, mean over seeds, half-width of the band) of the per-seed values of ``key``;
    ``band`` is ``std`` (±1 std over seeds) or ``ci95`` (t-interval of the mean)."""
    per_seed = "seed_normalized_scores" if key == "normalized_score" else "seed_returns"
    steps = np.array([r["step"] for r in rows])
    values = [np.asarray(r.get(per_seed, [r[key]]), float) for r in rows]
    if band == "ci95":
        return steps, np.array([v.mean() for v in values]), np.array([ci95(v) for v in values])
    return steps, np.array([v.mean() for v in values]), np.array([v.std() for v in values])


def ci95(values: np.ndarray) -> float:
    """Half-width of the 95% Student-t confidence interval of the mean (0 for one value)."""
    from scipy import stats

    n = len(values)
    if n < 2:
        return 0.0
    return float(stats.t.ppf(0.975, n - 1) * np.std(values, ddof=1) / np.sqrt(n))


def plot_learning_curves(
    runs: Mapping[str, Sequence[dict]],
    path: Path,
    title: str,
    key: str = "normalized_score",
    boundary: int | None = None,
    band: str = "std",
    xlabel: str = "step (offline gradient steps, then online env steps)",
) -> Path:
    """One line per run label, shaded ±1 std across seeds (``band="ci95"``: the 95%
    confidence interval of the mean); a dashed line at the offline→online ``boundary`` step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for label, rows in runs.items():
        steps, mean, std = curve(rows, key, band)
        (line,) = ax.plot(steps, mean, marker="o", markersize=3, label=label)
        ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    if boundary is not None:
        ax.axvline(boundary, color="grey", linestyle="--", linewidth=1)
        ax.text(boundary, ax.get_ylim()[1], " online →", va="top", color="grey", fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("normalized score" if key == "normalized_score" else key)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
