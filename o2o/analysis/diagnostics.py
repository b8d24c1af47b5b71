"""Fine-tuning methods' diagnostics as figures: each registered method declares the metrics
worth watching (``Method.diagnostics``: a phase, a metric of its rows, a title), and the
report plots those its runs logged, one panel each (e.g. SAMG: mean p and the fraction of
online samples with p > 0, averaged over seeds; the C-VAE's KL during its fit, the phase
``samg_cvae`` — for runs made before that phase existed, the ``samg_fit`` rows of
finetune.jsonl, mean ± std over seeds)."""

from __future__ import annotations

import textwrap
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from o2o.analysis.curves import curve, legend_outside, save_figure, series_styles, steps_axis
from o2o.analysis.results import RunResult
from o2o.experiment.runs import number

CVAE_PHASE, CVAE_KL = "samg_cvae", "train/samg/cvae_kl"


def kl_curve(result: RunResult) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(C-VAE steps, mean KL over seeds, std over seeds — 0 where only the mean was logged)
    of the offline C-VAE fit."""
    fit = [r for r in result.phase_rows_other if r.get("phase") == CVAE_PHASE and CVAE_KL in r]
    if fit:
        return (
            np.array([r["step"] for r in fit]),
            np.array([r[CVAE_KL] for r in fit], float),  # null (not finite) -> NaN
            np.zeros(len(fit)),
        )
    by_step: dict[int, list[float]] = defaultdict(list)
    for row in result.finetune:
        if row.get("phase") == "samg_fit" and "kl" in row:
            by_step[int(row["cvae_step"])].append(number(row["kl"]))
    steps = np.array(sorted(by_step))
    return (
        steps,
        np.array([np.mean(by_step[s]) for s in steps]),
        np.array([np.std(by_step[s]) for s in steps]),
    )


def diagnostic_series(result: RunResult, phase: str, key: str) -> tuple[np.ndarray, ...]:
    """(steps, mean over seeds, std over seeds) of metric ``key`` in the rows of ``phase``
    (``online``, or a method's phase such as ``samg_cvae``); SAMG's KL of runs made before
    the C-VAE fit was a phase comes from their finetune.jsonl."""
    if phase == CVAE_PHASE and key == CVAE_KL:
        return kl_curve(result)
    rows = result.rows if phase in ("offline", "online") else result.phase_rows_other
    rows = [r for r in rows if r.get("phase", "online") == phase and key in r]
    steps = np.array([r["step"] for r in rows])
    return steps, np.array([r[key] for r in rows], float), np.zeros(len(rows))


def diagnostic_panels(
    results: Sequence[RunResult], diagnostics: Sequence[Any]
) -> list[tuple[Any, dict[str, tuple[np.ndarray, ...]]]]:
    """The panels worth drawing: per declared diagnostic, the runs' (steps, mean, std) with
    two points or more; a diagnostic no run logged more than once (a KL logged at the end of
    a short fit only) gets no panel rather than a lone dot."""
    panels = []
    for d in diagnostics:
        series = {r.label: diagnostic_series(r, d.phase, d.key) for r in results}
        series = {label: s for label, s in series.items() if s[0].size >= 2}
        if series:
            panels.append((d, series))
    return panels


PANELS_PER_ROW = 3


def _figure(panels: int, title: str) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # At most PANELS_PER_ROW side by side: five SERA panels in one row made a 2,400-pixel
    # strip whose plots were too small to read.
    columns = min(panels, PANELS_PER_ROW)
    rows = -(-panels // columns)
    fig, grid = plt.subplots(
        rows, columns, figsize=(4.4 * columns, 3.6 * rows), dpi=110, squeeze=False
    )
    for ax in grid.flat[panels:]:
        ax.remove()
    fig.suptitle(title, fontsize=10)
    return fig, list(grid.flat[:panels])


def _save(
    fig: Any, axes: Any, path: Path, labels: list[str], styles: dict, drawn_last: Any
) -> Path:
    # Every label once, in the last panel's legend (a run may be missing from some panels).
    for label in labels:
        if label not in drawn_last:
            color, style, marker = styles[label]
            axes[-1].plot([], [], style, marker=marker, ms=3, color=color, label=label)
    for ax in axes:
        steps_axis(ax)
    legend_outside(axes[-1], len(labels))
    return save_figure(fig, path)


def plot_method_diagnostics(
    results: Sequence[RunResult], diagnostics: Sequence[Any], path: Path, title: str
) -> Path | None:
    """One panel per declared diagnostic (``Diagnostic``: phase, metric, title, log scale,
    reference line) that some run logged at two points or more, one line per run, each run
    in the same style in every panel, the legend outside; None when no panel is left."""
    panels = diagnostic_panels(results, diagnostics)
    if not panels:
        return None
    labels = sorted({label for _, series in panels for label in series}, key=list(
        r.label for r in results).index)  # fmt: skip
    styles = dict(zip(labels, series_styles(len(labels)), strict=True))
    fig, axes = _figure(len(panels), title)
    for ax, (d, series) in zip(axes, panels, strict=True):
        for label, (steps, mean, std) in series.items():
            color, style, marker = styles[label]
            ax.plot(steps, mean, style, marker=marker, ms=3, color=color, label=label)
            if std.any():
                ax.fill_between(steps, mean - std, mean + std, color=color, alpha=0.2)
        xlabel = "step" if d.phase in ("offline", "online") else f"{d.phase} step"
        ax.set(xlabel=xlabel, yscale="log" if d.log_scale else "linear")
        # Wrapped: long titles of neighbouring panels ran into each other.
        ax.set_title(textwrap.fill(d.title, 40), fontsize=9)
        if d.reference is not None:
            value, text = d.reference
            ax.axhline(value, color="grey", linestyle=":", linewidth=1)
            ax.text(0.02, value, text, color="grey", fontsize=7, va="bottom",
                    transform=ax.get_yaxis_transform())  # fmt: skip
        ax.grid(alpha=0.3)
    return _save(fig, axes, path, labels, styles, panels[-1][1])


VISITED_KEYS = (
    ("coverage/knn_radius", "mean distance to the 10th nearest visited state"),
    ("coverage/cells", "distinct unit cells visited"),
)


def visited_series(
    result: RunResult, key: str, band: str = "bootstrap"
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(online env steps, mean over seeds, band low, band high) of a visited-state coverage
    metric (``o2o.experiment.visited``: ``key`` in the online rows, its per-seed values in
    ``seed_coverage/...``); empty arrays for a run that did not log it."""
    offline = int(result.pipeline.get("offline_steps") or 0)
    rows = [r for r in result.rows if r.get("phase", "online") == "online" and key in r]
    if not rows:
        empty = np.array([])
        return empty, empty, empty, empty
    per_seed = "seed_" + key
    rows = [{**r, "step": r["step"] - offline, per_seed: r.get(per_seed, [r[key]])} for r in rows]
    steps, mean, spread = curve(rows, key, band, per_seed=per_seed)
    low, high = spread if band == "bootstrap" else (mean - spread, mean + spread)
    return steps, mean, np.asarray(low), np.asarray(high)


def plot_visited_coverage(
    results: Sequence[RunResult], path: Path, title: str, band: str = "bootstrap"
) -> Path | None:
    """Visited-state coverage against the online env step, one line per run (method), a
    panel per metric that some run logged at two evaluations or more; None otherwise."""
    panels = []
    for key, text in VISITED_KEYS:
        series = {r.label: visited_series(r, key, band) for r in results}
        series = {label: s for label, s in series.items() if s[0].size >= 2}
        if series:
            panels.append((key, text, series))
    if not panels:
        return None
    labels = [r.label for r in results if any(r.label in p[2] for p in panels)]
    styles = dict(zip(labels, series_styles(len(labels)), strict=True))
    fig, axes = _figure(len(panels), title)
    for ax, (key, text, series) in zip(axes, panels, strict=True):
        for label, (steps, mean, low, high) in series.items():
            color, style, marker = styles[label]
            ax.plot(steps, mean, style, marker=marker, ms=3, color=color, label=label)
            ax.fill_between(steps, low, high, color=color, alpha=0.2)
        ax.set_xlabel("online env step")
        ax.set_title(f"{key}\n{text}", fontsize=9)
        ax.grid(alpha=0.3)
    return _save(fig, axes, path, labels, styles, panels[-1][2])
