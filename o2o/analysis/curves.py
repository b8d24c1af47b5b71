"""Learning curves from ``metrics.jsonl`` rows: mean over seeds with, by default, a 95%
percentile-bootstrap interval of the mean over seeds (rliable's choice for few seeds: it stays
inside the seeds' range, where a t-interval of 3 seeds smears across the plot), or the
Student-t interval of the mean, or ±1 std. One step axis per run (``timeline``), series that
stay distinct for any number of runs, single-point series left out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def curve(
    rows: Sequence[dict],
    key: str = "normalized_score",
    band: str = "std",
    per_seed: str | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps, mean over seeds, band) of the per-seed values of ``key`` (in the rows'
    ``per_seed`` list; default: ``seed_normalized_scores`` for the score, else
    ``seed_returns``); ``band`` is ``std`` (half-width: ±1 std over seeds), ``ci95``
    (half-width of the t-interval of the mean) or ``bootstrap`` (a (2, steps) array: the
    interval's lower and upper bounds)."""
    if per_seed is None:
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
    """``n`` colours: tab10 up to 10 series, tab20 up to 20, past that tab20's again (the line
    style tells those apart: ``series_styles``)."""
    import matplotlib

    if n <= 10:
        return [matplotlib.colormaps["tab10"](i) for i in range(n)]
    return [matplotlib.colormaps["tab20"](i % 20) for i in range(n)]


LINE_STYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def series_styles(n: int) -> list[tuple[tuple, str, str]]:
    """(colour, line style, marker) of ``n`` series, no two alike for any ``n``: tab10 or tab20
    colours with solid lines up to 20 series, then each further block of 20 another line
    style, and past 80 another marker."""
    colors = distinct_colors(n)
    if n <= 20:
        return [(colors[i], "-", "o") for i in range(n)]
    return [
        (
            colors[i],
            LINE_STYLES[(i // 20) % len(LINE_STYLES)],
            MARKERS[(i // (20 * len(LINE_STYLES))) % len(MARKERS)],
        )
        for i in range(n)
    ]


def drawable(runs: Mapping[str, Sequence[dict]]) -> dict[str, Sequence[dict]]:
    """The series worth a line: two evaluations or more (a lone point says nothing about
    learning and reads as a stray dot)."""
    return {label: rows for label, rows in runs.items() if len(rows) >= 2}


def offline_budget(rows: Sequence[dict], offline_steps: int | None) -> int:
    """The offline gradient steps behind a run's agent: its configured ``offline_steps``, or
    for a run fine-tuned from another run's checkpoint (``--from`` with ``--offline-steps 0``)
    the last of the offline rows copied from that run."""
    offline = [int(r["step"]) for r in rows if r.get("phase") == "offline"]
    if not offline_steps and offline:
        return offline[-1]
    return int(offline_steps or 0)


def timeline(rows: Sequence[dict], offline_steps: int | None) -> list[dict]:
    """A run's rows on one axis: offline gradient steps, then online env steps counted from
    its real offline budget (``offline_budget``), so a ``--from`` run's online phase does not
    start at 0 on top of the offline curve it was copied from."""
    shift = offline_budget(rows, offline_steps) - int(offline_steps or 0)
    if not shift:
        return list(rows)
    return [
        row if row.get("phase") == "offline" else {**row, "step": row["step"] + shift}
        for row in rows
    ]


def legend_outside(ax: Any, count: int) -> None:
    """The legend right of the axes, where it hides no line."""
    ax.legend(
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
        borderaxespad=0.0,
        fontsize=8 if count <= 10 else 6,
        ncol=1 if count <= 25 else 2,
        frameon=False,
    )


def step_label(value: float) -> str:
    """A step axis tick: ``-60k``, ``500``, ``1.5k`` (full numbers ran into each other)."""
    return f"{value / 1000:g}k" if abs(value) >= 1000 else f"{value:g}"


def steps_axis(ax: Any) -> None:
    from matplotlib.ticker import FuncFormatter

    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: step_label(value)))


BANDS = ("bootstrap", "ci95", "std")


def add_band_argument(parser: Any) -> None:
    """``--band`` of ``o2o report`` and ``o2o plot``."""
    parser.add_argument(
        "--band",
        choices=BANDS,
        default="bootstrap",
        help="band around the mean curves: the percentile-bootstrap interval of the mean over "
        "seeds, the Student-t interval (ci95) or ±1 std (default: %(default)s)",
    )


def save_figure(fig: Any, path: Path | str) -> Path:
    """``fig`` written to ``path`` (parents made), trimmed to its content, then closed."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_learning_curves(
    runs: Mapping[str, Sequence[dict]],
    path: Path,
    title: str,
    key: str = "normalized_score",
    boundary: int | None = None,
    band: str = "bootstrap",
    xlabel: str = "step (offline gradient steps, then online env steps)",
) -> Path | None:
    """One line per run label (``drawable`` ones: two evaluations or more), each with its own
    colour and line style (``series_styles``), shaded by the 95% percentile-bootstrap
    interval of the mean over seeds (``band="ci95"``: the t-interval; ``"std"``: ±1 std); a
    dashed line at the offline→online ``boundary`` step, the legend outside the axes. None
    (nothing written) when no run has two evaluations."""
    runs = drawable(runs)
    if not runs:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for (label, rows), (color, style, marker) in zip(
        runs.items(), series_styles(len(runs)), strict=True
    ):
        steps, mean, spread = curve(rows, key, band)
        low, high = spread if band == "bootstrap" else (mean - spread, mean + spread)
        ax.plot(steps, mean, style, marker=marker, markersize=3, label=label, color=color)
        ax.fill_between(steps, low, high, color=color, alpha=0.2)
    if boundary is not None:
        ax.axvline(boundary, color="grey", linestyle="--", linewidth=1)
        ax.text(boundary, ax.get_ylim()[1], " online →", va="top", color="grey", fontsize=8)
    ax.set_xlabel(xlabel)
    steps_axis(ax)
    ax.set_ylabel("normalized score" if key == "normalized_score" else key)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    legend_outside(ax, len(runs))
    return save_figure(fig, path)
