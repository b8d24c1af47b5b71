"""Normalized scores, always with their provenance.

score = 100 * (R - ref_min) / (ref_max - ref_min). Real D4RL data uses D4RL's constants
(``d4rl/infos.py``); locally made data (the lite suites, the maze suite, ``datasets make``)
uses the reference returns stored in the file (uniform-random policy, best checkpoint).
A report prints ``ScoreInfo.describe()`` next to the number.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from o2o.errors import ConfigError

if TYPE_CHECKING:
    from o2o.data.dataset import Dataset

Provenance = Literal["d4rl", "dataset"]

# D4RL REF_MIN / REF_MAX (Farama-Foundation/D4RL d4rl/infos.py; gym-mujoco v1/v2 reuse the
# -random-v0 constants, Adroit v1 the -human-v0 ones).
D4RL_REFERENCE: dict[str, tuple[float, float]] = {
    "halfcheetah": (-280.178953, 12135.0),
    "hopper": (-20.272305, 3234.3),
    "walker2d": (1.629008, 4592.3),
    "ant": (-325.6, 3879.7),
    "antmaze": (0.0, 1.0),
    "pen": (96.262799, 3076.8331017826877),
    "door": (-56.512833, 2880.5693087298737),
    "hammer": (-274.856578, 12794.134825156867),
    "relocate": (-6.425911, 4233.877797728884),
    "kitchen": (0.0, 4.0),
    "maze2d-umaze": (23.85, 161.86),
    "maze2d-medium": (13.13, 277.39),
    "maze2d-large": (6.7, 273.99),
}

# Gymnasium ids for D4RL families (v5: the MuJoCo bindings available here; D4RL's gym v2
# dynamics differ slightly, which is why lite data carries its own references). AntMaze and
# Adroit evaluate on o2o's envs with D4RL's task (o2o/envs/maze.py, o2o/envs/adroit.py).
GYMNASIUM_ENV_FOR_FAMILY = {
    "hopper": "Hopper-v5",
    "halfcheetah": "HalfCheetah-v5",
    "walker2d": "Walker2d-v5",
    "ant": "Ant-v5",
    "antmaze-umaze": "o2o.envs.maze:O2OAntMazeD4RL_UMaze-v0",
    "antmaze-medium": "o2o.envs.maze:O2OAntMazeD4RL_Medium-v0",
    "antmaze-large": "o2o.envs.maze:O2OAntMazeD4RL_Large-v0",
    "pen": "o2o.envs.adroit:O2OAdroitPen-v0",
    "door": "o2o.envs.adroit:O2OAdroitDoor-v0",
    "hammer": "o2o.envs.adroit:O2OAdroitHammer-v0",
    "relocate": "o2o.envs.adroit:O2OAdroitRelocate-v0",
    "maze2d-umaze": "PointMaze_UMaze-v3",
    "maze2d-medium": "PointMaze_Medium-v3",
    "maze2d-large": "PointMaze_Large-v3",
}


def d4rl_family(name: str) -> str | None:
    """'hopper-medium-v2' -> 'hopper', 'maze2d-large-v1' -> 'maze2d-large', 'Hopper-v5' ->
    'hopper'; None when the name belongs to no D4RL family."""
    parts = name.lower().replace("_", "-").split("/")
    # Minari ids put the env in the path: "D4RL/antmaze/umaze-v1", "mujoco/hopper/medium-v0".
    candidates = ["-".join(parts[i:]) for i in range(len(parts) - 1, -1, -1)]
    for candidate in candidates:
        for family in sorted(D4RL_REFERENCE, key=len, reverse=True):
            if candidate == family or candidate.startswith(family + "-"):
                return family
    return None


@dataclass(frozen=True)
class ScoreInfo:
    ref_min: float
    ref_max: float
    provenance: Provenance
    source: str  # where the two numbers come from, in words

    def normalize(self, returns: float | np.ndarray) -> float | np.ndarray:
        scores = (
            100.0 * (np.asarray(returns, np.float64) - self.ref_min) / (self.ref_max - self.ref_min)
        )
        return float(scores) if scores.ndim == 0 else scores

    def describe(self) -> str:
        kind = "D4RL constants" if self.provenance == "d4rl" else "dataset reference returns"
        return f"{kind} (ref_min {self.ref_min:.6g}, ref_max {self.ref_max:.6g}; {self.source})"


def reference_from_metadata(metadata: dict, source: str) -> ScoreInfo | None:
    if "ref_min_score" in metadata and "ref_max_score" in metadata:
        ref_min, ref_max = float(metadata["ref_min_score"]), float(metadata["ref_max_score"])
        if not ref_max > ref_min:
            raise ConfigError(
                f"{source}: reference returns are degenerate (ref_min {ref_min} >= ref_max {ref_max})"
            )
        how = metadata.get("ref_provenance", "stored in the dataset's metadata")
        return ScoreInfo(ref_min, ref_max, "dataset", f"{how}; {source}")
    return None


def d4rl_reference(name: str) -> ScoreInfo | None:
    family = d4rl_family(name)
    if family is None:
        return None
    ref_min, ref_max = D4RL_REFERENCE[family]
    return ScoreInfo(ref_min, ref_max, "d4rl", f"d4rl/infos.py, family '{family}'")


def score_reference(
    dataset_or_name: Dataset | str, reference: Literal["auto", "d4rl", "dataset"] = "auto"
) -> ScoreInfo:
    """Which references normalize returns on this dataset.

    ``auto``: the dataset's own reference returns when it stores them (locally made data,
    Minari), otherwise D4RL's constants for its family (real D4RL files carry none).
    """
    from o2o.data.dataset import Dataset

    if isinstance(dataset_or_name, Dataset):
        metadata = dict(dataset_or_name.metadata)
        label = dataset_or_name.name
    else:
        label = str(dataset_or_name)
        metadata = _metadata_for_name(label)
    names = [str(metadata.get(k, "")) for k in ("dataset", "env_id", "d4rl_family")] + [label]

    if reference in ("auto", "dataset"):
        info = reference_from_metadata(metadata, label)
        if info is not None:
            return info
        if reference == "dataset":
            raise ConfigError(
                f"{label}: the dataset stores no reference returns (ref_min_score/ref_max_score)"
            )
    if reference in ("auto", "d4rl"):
        official_min = metadata.get("official_ref_min_score")
        official_max = metadata.get("official_ref_max_score")
        if reference == "d4rl" and official_min is not None and official_max is not None:
            return ScoreInfo(
                float(official_min), float(official_max), "d4rl", f"stored D4RL constants; {label}"
            )
        for name in names:
            info = d4rl_reference(name) if name else None
            if info is not None:
                return info
    if reference not in ("auto", "d4rl", "dataset"):
        raise ConfigError(f"reference must be 'auto', 'd4rl' or 'dataset', got {reference!r}")
    raise ConfigError(f"{label}: no reference returns known (not a D4RL family, none stored)")


def normalized_score(
    dataset_or_name: Dataset | str,
    returns: float | np.ndarray,
    reference: Literal["auto", "d4rl", "dataset"] = "auto",
) -> float | np.ndarray:
    """100 * (R - ref_min) / (ref_max - ref_min); ``score_reference`` says which refs."""
    return score_reference(dataset_or_name, reference).normalize(returns)


def _metadata_for_name(name: str) -> dict:
    """Metadata of a named or path dataset without loading its columns; {} when absent."""
    from o2o.data.registry import read_metadata_only, resolve_path

    path = resolve_path(name, must_exist=False)
    if path is not None and path.exists():
        return read_metadata_only(path)
    return {}
