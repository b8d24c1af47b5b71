"""Checks run on every load; each failure is one line naming the file and the problem."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from o2o.errors import DatasetError

REQUIRED_KEYS = ("observations", "actions", "rewards", "terminals")
FLOAT_COLUMNS = ("observations", "actions", "rewards", "next_observations")
FLAG_COLUMNS = ("terminals", "timeouts")
MATRIX_COLUMNS = ("observations", "actions", "next_observations")
VECTOR_COLUMNS = ("rewards", "terminals", "timeouts")

# Sampled SAC actions are tanh-squashed in float32 and may round onto the bound; anything
# further out is a real violation.
ACTION_BOUND_TOLERANCE = 1e-4
# Values beyond this magnitude are refused. A plausibility bound, not an overflow one: no env
# o2o knows comes near it (the largest values of D4RL's and the lite datasets are below 100),
# data beyond it is corrupt or unscaled, and from about 1e19 squared TD errors overflow
# float32, so training would end in NaN instead of an error.
MAX_ABS_VALUE = 1e6


def fail(source: str, problem: str) -> DatasetError:
    return DatasetError(f"{source}: {problem}")


def validate_columns(columns: Mapping[str, Any], source: str) -> dict[str, np.ndarray]:
    """Check raw D4RL columns and return them as float32 / bool numpy arrays.

    ``next_observations`` and ``timeouts`` may be absent (old D4RL files); the caller
    derives them. ``source`` names the file in every message.
    """
    for key in REQUIRED_KEYS:
        if key not in columns:
            raise fail(
                source,
                f"missing key '{key}' (a D4RL-layout dataset needs {', '.join(REQUIRED_KEYS)})",
            )
    arrays = {k: np.asarray(v) for k, v in columns.items() if k in FLOAT_COLUMNS + FLAG_COLUMNS}

    for key, array in arrays.items():
        dtype = array.dtype
        if key in FLOAT_COLUMNS and not np.issubdtype(dtype, np.floating):
            raise fail(source, f"'{key}' has dtype {dtype}, expected a floating-point type")
        if key in FLAG_COLUMNS:
            if dtype == np.bool_:
                continue
            if not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
                raise fail(source, f"'{key}' has dtype {dtype}, expected bool (or 0/1 numbers)")
            if array.size and not np.isin(array, (0, 1)).all():
                raise fail(source, f"'{key}' has dtype {dtype} with values other than 0 and 1")

    for key, array in arrays.items():
        if key in MATRIX_COLUMNS and array.ndim != 2:
            raise fail(source, f"'{key}' has shape {array.shape}, expected rank 2 (N, dim)")
        if key in VECTOR_COLUMNS:
            if array.ndim == 2 and array.shape[1] == 1:
                arrays[key] = array = array[:, 0]
            if array.ndim != 1:
                raise fail(source, f"'{key}' has shape {array.shape}, expected rank 1 (N,)")

    lengths = {key: int(array.shape[0]) for key, array in arrays.items()}
    if len(set(lengths.values())) > 1:
        listing = ", ".join(f"{k}={n}" for k, n in lengths.items())
        raise fail(source, f"key lengths disagree ({listing})")
    if lengths["rewards"] == 0:
        raise fail(source, "dataset is empty (0 transitions)")

    if (
        "next_observations" in arrays
        and arrays["next_observations"].shape[1:] != arrays["observations"].shape[1:]
    ):
        raise fail(
            source,
            f"'next_observations' has shape {arrays['next_observations'].shape} but "
            f"'observations' has {arrays['observations'].shape}",
        )

    for key in FLOAT_COLUMNS:
        if key in arrays:
            finite = np.isfinite(arrays[key])
            if not finite.all():
                bad = np.argwhere(~finite)[0]
                raise fail(
                    source,
                    f"'{key}' contains NaN or inf ({int((~finite).sum())} values, first at row {int(bad[0])})",
                )
            huge = np.abs(arrays[key]) > MAX_ABS_VALUE
            if huge.any():
                bad = np.argwhere(huge)[0]
                raise fail(
                    source,
                    f"'{key}' has values beyond ±{MAX_ABS_VALUE:g} ({int(huge.sum())} values, first "
                    f"{float(arrays[key][tuple(bad)]):g} at row {int(bad[0])}); rescale the data",
                )

    out = {}
    for key, array in arrays.items():
        out[key] = array.astype(np.bool_) if key in FLAG_COLUMNS else array.astype(np.float32)
    if np.any(out["terminals"] & out.get("timeouts", np.zeros_like(out["terminals"]))):
        # D4RL never sets both; a row can only end one way. Terminal wins (no bootstrap).
        out["timeouts"] = out["timeouts"] & ~out["terminals"]
    return out


def check_against_spaces(
    observations: np.ndarray,
    actions: np.ndarray,
    observation_space: Any,
    action_space: Any,
    source: str,
    env_name: str,
) -> None:
    """Observation/action dimensions and action bounds against a Gymnasium env's spaces."""
    obs_shape = getattr(observation_space, "shape", None)
    if obs_shape is None:
        raise fail(source, f"env {env_name} has a non-array observation space {observation_space}")
    if tuple(observations.shape[1:]) != tuple(obs_shape):
        raise fail(
            source,
            f"observation dimension {observations.shape[1]} does not match env {env_name} "
            f"(observation space shape {tuple(obs_shape)})",
        )
    act_shape = getattr(action_space, "shape", None)
    if tuple(actions.shape[1:]) != tuple(act_shape or ()):
        raise fail(
            source,
            f"action dimension {actions.shape[1]} does not match env {env_name} "
            f"(action space shape {act_shape})",
        )
    low = np.asarray(getattr(action_space, "low", -np.inf), np.float64)
    high = np.asarray(getattr(action_space, "high", np.inf), np.float64)
    below = actions < low - ACTION_BOUND_TOLERANCE
    above = actions > high + ACTION_BOUND_TOLERANCE
    outside = below | above
    if outside.any():
        row, col = np.argwhere(outside)[0]
        raise fail(
            source,
            f"{int(outside.any(axis=1).sum())} actions lie outside env {env_name}'s bounds "
            f"[{low.min():g}, {high.max():g}] (first: row {int(row)}, dim {int(col)}, "
            f"value {float(actions[row, col]):g})",
        )
