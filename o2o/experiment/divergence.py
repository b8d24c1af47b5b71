"""The divergence guard: after every fused call (the states it returns are checked inside
the call, ``engine.with_nan_flag``; the metrics come back anyway), stop a run whose
parameters hold a NaN or whose loss passed a bound, before anything of the
diverged state is written, so the last checkpoint stays the last good one.

Only ``stop``: a rollback (restore the last good checkpoint, halve the learning rates, retry)
would make ``config.yaml`` no longer describe the run, and a resumed run would no longer
equal an uninterrupted one; a user reruns with ``--set`` smaller rates instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from o2o.errors import DivergenceError, check
from o2o.experiment.checkpoint import checkpoint_phase

# Reconstructed (no paper or official code has a guard): far above any loss o2o's healthy
# runs log (critic losses stay below ~1e5 even with unscaled locomotion rewards) and far
# below float32's overflow (3.4e38), so a run is stopped well before its weights turn inf.
DEFAULT_MAX_LOSS = 1e10
CHECKPOINTS = ("checkpoint.msgpack", "finetune_start.msgpack", "offline.msgpack")


@dataclass(frozen=True)
class DivergenceGuard:
    """``max_loss``: the largest |loss| (any metric named ``*loss*``, averaged over a fused
    call) a run may log. A NaN loss is not checked by itself (TD3 logs NaN actor losses on
    critic-only steps): a NaN loss makes the parameters NaN, which is."""

    max_loss: float = DEFAULT_MAX_LOSS

    def __post_init__(self) -> None:
        check(self.max_loss > 0, f"max_loss must be positive, got {self.max_loss}")

    def check(self, nan: Any, metrics: dict, phase: str, step: int, run_path: Path | None) -> None:
        """Raise DivergenceError naming the phase, step, loss and last good checkpoint."""
        # |loss| of each metric named *loss*, NaN entries (not computed this call) left out.
        losses = {
            name: np.abs(np.asarray(value, np.float64)[~np.isnan(np.asarray(value, np.float64))])
            for name, value in metrics.items()
            if "loss" in name
        }
        largest = {name: value.max() for name, value in losses.items() if value.size}
        nan = np.asarray(nan, bool).reshape(-1)
        if nan.any():
            problem = f"NaN parameters (seed index {', '.join(map(str, np.flatnonzero(nan)))})"
            if largest:
                problem += " with " + ", ".join(f"{k} {v:.3g}" for k, v in largest.items())
        else:
            beyond = [k for k, v in largest.items() if not v <= self.max_loss]
            if not beyond:
                return
            problem = f"{beyond[0]} {largest[beyond[0]]:.3g} (bound {self.max_loss:.3g})"
        raise DivergenceError(
            f"training diverged in the {phase} phase at step {step}: {problem}"
            + f"; stopped before writing it, the last good checkpoint is {last_good(run_path)}"
            + " (a resumed run would diverge again: start a new run, e.g. with lower learning rates)"
        )


def last_good(run_path: Path | None) -> str:
    """The newest checkpoint of the run, with its phase; every one written passed the guard."""
    if run_path is None:
        return "none (the run has no run directory)"
    existing = [run_path / name for name in CHECKPOINTS if (run_path / name).exists()]
    if not existing:
        return "none (no checkpoint written yet)"
    newest = max(existing, key=lambda path: path.stat().st_mtime_ns)
    phase = checkpoint_phase(newest)
    return f"{newest}" + (f" ({phase} phase)" if phase else "")
