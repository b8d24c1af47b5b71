"""SAMG's diagnostics as figures: mean p and the fraction of online samples with p > 0
through fine-tuning (``train/samg/*`` in metrics.jsonl, already averaged over seeds), and the
C-VAE's KL term while it is fitted on the offline data (rows of the phase ``samg_cvae`` in
metrics.jsonl, mean over seeds; runs made before the phase existed: ``samg_fit`` rows of
finetune.jsonl, mean ± std over seeds)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from o2o.analysis.results import RunResult

P_MEAN = "train/samg/p_mean"
P_POSITIVE = "train/samg/p_positive"


CVAE_PHASE, CVAE_KL = "samg_cvae", "train/samg/cvae_kl"


def has_samg_diagnostics(result: RunResult) -> bool:
    return (
        any(P_MEAN in row for row in result.rows)
        or any(row.get("phase") == "samg_fit" for row in result.finetune)
        or any(row.get("phase") == CVAE_PHASE for row in result.phase_rows_other)
    )


def kl_curve(result: RunResult) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(C-VAE steps, mean KL over seeds, std over seeds — 0 where only the mean was logged)
    of the offline C-VAE fit."""
    fit = [r for r in result.phase_rows_other if r.get("phase") == CVAE_PHASE and CVAE_KL in r]
    if fit:
        return (
            np.array([r["step"] for r in fit]),
            np.array([r[CVAE_KL] for r in fit]),
            np.zeros(len(fit)),
        )
    by_step: dict[int, list[float]] = defaultdict(list)
    for row in result.finetune:
        if row.get("phase") == "samg_fit" and "kl" in row:
            by_step[int(row["cvae_step"])].append(float(row["kl"]))
    steps = np.array(sorted(by_step))
    return (
        steps,
        np.array([np.mean(by_step[s]) for s in steps]),
        np.array([np.std(by_step[s]) for s in steps]),
    )


def plot_samg_diagnostics(results: Sequence[RunResult], path: Path, title: str) -> Path | None:
    """Three panels (mean p, fraction p > 0, C-VAE KL) with one line per SAMG run; None when
    no run has SAMG diagnostics."""
    runs = [r for r in results if has_samg_diagnostics(r)]
    if not runs:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), dpi=110)
    for r in runs:
        online = [row for row in r.rows if P_MEAN in row]
        steps = [row["step"] for row in online]
        (line,) = axes[0].plot(
            steps, [row[P_MEAN] for row in online], marker="o", ms=3, label=r.label
        )
        axes[1].plot(
            steps,
            [row.get(P_POSITIVE, np.nan) for row in online],
            marker="o",
            ms=3,
            color=line.get_color(),
        )
        kl_steps, kl_mean, kl_std = kl_curve(r)
        if kl_steps.size:
            axes[2].plot(kl_steps, kl_mean, marker="o", ms=3, color=line.get_color())
            axes[2].fill_between(
                kl_steps, kl_mean - kl_std, kl_mean + kl_std, color=line.get_color(), alpha=0.2
            )
    axes[0].set(title="mean p of online batches", xlabel="step", ylim=(0, 1))
    axes[1].set(title="fraction of samples with p > 0", xlabel="step", ylim=(0, 1))
    axes[2].set(title="C-VAE KL (offline fit)", xlabel="C-VAE step", yscale="log")
    axes[2].axhline(0.03, color="grey", linestyle=":", linewidth=1)
    axes[2].text(
        0.02,
        0.03,
        "0.03: the paper's good regime",
        color="grey",
        fontsize=7,
        va="bottom",
        transform=axes[2].get_yaxis_transform(),
    )
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
