"""How much of the state space the online phase has visited, logged at every evaluation.

Exploration methods (SERA's state-entropy bonus) claim wider coverage; these two numbers let
every arm of a comparison, vanilla included, be checked for it at equal env steps:

- ``coverage/knn_radius``: the mean Euclidean distance from each state of an evenly spaced
  subsample (at most ``SUBSAMPLE`` states) of the visited states to its ``K``-th nearest
  neighbour in that subsample — the quantity kNN entropy estimators take the log of, so it
  grows when the visited states spread out;
- ``coverage/cells``: the number of distinct cells of a grid of width ``CELL`` over the visited
  states (all of them, not a subsample).

Both are computed in the agent's (normalised) observation space, where one unit is about one
standard deviation of the dataset, and averaged over seeds (per-seed values in
``seed_coverage/...``). The visited states are the newest rows of the buffer online transitions
are written to, so a ring buffer that wrapped covers its retained window only. The subsample is
deterministic, so a resumed run logs the same numbers.
"""

from __future__ import annotations

from typing import Any

import numpy as np

K = 10
SUBSAMPLE = 2048
CELL = 1.0


def recent_rows(size: int, pointer: int, capacity: int, count: int) -> np.ndarray:
    """Indices of the ``count`` newest rows of a ring buffer, oldest first."""
    count = min(count, size, capacity)
    return (pointer - count + np.arange(count)) % capacity


def knn_radius(states: np.ndarray, k: int = K, subsample: int = SUBSAMPLE) -> float | None:
    """Mean distance to the k-th nearest neighbour (the point itself excluded) within an
    evenly spaced subsample of ``states``; None with k or fewer states."""
    if len(states) <= k:
        return None
    if len(states) > subsample:
        states = states[np.linspace(0, len(states) - 1, subsample).round().astype(int)]
    x = np.asarray(states, np.float64)
    squared = np.sum(x * x, axis=1)
    distances = np.sqrt(np.maximum(squared[:, None] + squared[None, :] - 2.0 * x @ x.T, 0.0))
    np.fill_diagonal(distances, np.inf)
    return float(np.partition(distances, k - 1, axis=1)[:, k - 1].mean())


def grid_cells(states: np.ndarray, cell: float = CELL) -> int:
    """Distinct cells of a grid of width ``cell`` holding at least one state."""
    if len(states) == 0:
        return 0
    return int(len(np.unique(np.floor(np.asarray(states) / cell).astype(np.int64), axis=0)))


def coverage_metrics(per_seed_states: list[np.ndarray]) -> dict[str, Any]:
    """The row fields of the module docstring for the visited states of each seed."""
    radii = [knn_radius(s) for s in per_seed_states]
    cells = [grid_cells(s) for s in per_seed_states]
    row: dict[str, Any] = {"coverage/cells": float(np.mean(cells)), "seed_coverage/cells": cells}
    if all(r is not None for r in radii):
        row["coverage/knn_radius"] = float(np.mean(radii))
        row["seed_coverage/knn_radius"] = radii
    return row
