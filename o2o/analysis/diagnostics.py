"""Fine-tuning methods' diagnostics as figures: each registered method declares the metrics
worth watching (``Method.diagnostics``: a phase, a metric of its rows, a title), and the
report plots those its runs logged, one panel each (e.g. SAMG: mean p and the fraction of
online samples with p > 0, averaged over seeds; the C-VAE's KL during its fit, the phase
``samg_cvae`` — for runs made before that phase existed, the ``samg_fit`` rows of
finetune.jsonl, mean ± std over seeds)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

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


def plot_method_diagnostics(
    results: Sequence[RunResult], diagnostics: Sequence[Any], path: Path, title: str
) -> Path | None:
    """One panel per declared diagnostic (``Diagnostic``: phase, metric, title, log scale,
    reference line), one line per run that logged any of them; None when no run did."""
    series = {r.label: [diagnostic_series(r, d.phase, d.key) for d in diagnostics] for r in results}
    series = {label: s for label, s in series.items() if any(x[0].size for x in s)}
    if not series:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        1, len(diagnostics), figsize=(4.4 * len(diagnostics), 3.8), dpi=110, squeeze=False
    )
    for label, per_panel in series.items():
        color = None
        for ax, (steps, mean, std) in zip(axes[0], per_panel, strict=True):
            if not steps.size:
                continue
            (line,) = ax.plot(steps, mean, marker="o", ms=3, color=color, label=label)
            color = line.get_color()
            if std.any():
                ax.fill_between(steps, mean - std, mean + std, color=color, alpha=0.2)
    for ax, d in zip(axes[0], diagnostics, strict=True):
        xlabel = "step" if d.phase in ("offline", "online") else f"{d.phase} step"
        ax.set(title=d.title, xlabel=xlabel, yscale="log" if d.log_scale else "linear")
        if d.reference is not None:
            value, text = d.reference
            ax.axhline(value, color="grey", linestyle=":", linewidth=1)
            ax.text(0.02, value, text, color="grey", fontsize=7, va="bottom",
                    transform=ax.get_yaxis_transform())  # fmt: skip
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
