"""Named datasets and where their files live.

* ``{hopper,halfcheetah,walker2d}-{level}-lite``: D4RL recipe at small scale. Hopper and
  HalfCheetah come as reference files in ``../shared/datasets`` (next to the repository);
  any of them can be made with ``o2o datasets make NAME`` into the data directory.
* ``pointmaze-{umaze,medium,large}-{play,diverse}``: the sparse-reward maze suite.
* real D4RL (``hopper-medium-v2``, ``antmaze-umaze-v2``, ``pen-human-v1`` ...) and Minari ids
  (``mujoco/hopper/medium-v0``, ``D4RL/pen/human-v2``, ``D4RL/antmaze/umaze-v1``) resolve when
  their files exist locally. D4RL's files carry no env id: it comes from the name here (AntMaze
  to o2o's fixed-goal AntMaze in D4RL's coordinates, Adroit to o2o's Adroit with D4RL's time
  limits and success rule).

The data directory is ``$O2O_DATA_DIR``, default ``~/.cache/o2o/datasets``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py

from o2o.errors import DatasetError, did_you_mean

DATA_DIR_ENV = "O2O_DATA_DIR"
REFERENCE_DIR_ENV = "O2O_REFERENCE_DIR"
DEFAULT_DATA_DIR = "~/.cache/o2o/datasets"

LITE_ENVS = {"hopper": "Hopper-v5", "halfcheetah": "HalfCheetah-v5", "walker2d": "Walker2d-v5"}
LEVELS = ("random", "medium", "medium-replay", "expert", "medium-expert")
MAZES = ("umaze", "medium", "large")
MAZE_VARIANTS = ("play", "diverse")
D4RL_LOCOMOTION = ("hopper", "halfcheetah", "walker2d", "ant")
D4RL_ADROIT = ("pen", "door", "hammer", "relocate")
D4RL_ADROIT_LEVELS = ("human", "cloned", "expert")
D4RL_ANTMAZE = (
    "umaze",
    "umaze-diverse",
    "medium-play",
    "medium-diverse",
    "large-play",
    "large-diverse",
)
# The names D4RL downloads AntMaze v2 under (d4rl/locomotion/__init__.py dataset_url), so a
# user's ~/.d4rl/datasets is found as it is.
D4RL_ANTMAZE_DOWNLOADS = {
    f"antmaze-{variant}-v2": f"Ant_maze_{layout}_noisy_multistart_{start}_multigoal_{goal}"
    "_sparse_fixed.hdf5"
    for variant, layout, start, goal in (
        ("umaze", "u-maze", False, False),
        ("umaze-diverse", "u-maze", True, True),
        ("medium-play", "big-maze", True, False),
        ("medium-diverse", "big-maze", True, True),
        ("large-play", "hardest-maze", True, False),
        ("large-diverse", "hardest-maze", True, True),
    )
}


def data_dir() -> Path:
    return Path(os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR).expanduser()


def reference_dir() -> Path | None:
    """The shared reference files: ``$O2O_REFERENCE_DIR`` or ``<repo>/../shared/datasets``."""
    override = os.environ.get(REFERENCE_DIR_ENV)
    if override:
        return Path(override).expanduser()
    candidate = Path(__file__).resolve().parents[3] / "shared" / "datasets"
    return candidate if candidate.is_dir() else None


@dataclass(frozen=True)
class Entry:
    name: str  # canonical name, e.g. "hopper-medium-lite", "D4RL/pen/human-v2"
    suite: str  # "lite", "maze", "d4rl" (an HDF5 file) or "minari" (a Minari directory)
    env_id: str
    filename: str
    makeable: bool  # `o2o datasets make` can build it

    def candidates(self) -> list[Path]:
        """Where the file may live, in lookup order."""
        if self.suite == "minari":
            return [minari_root() / self.name]
        paths = []
        if self.suite == "lite" and (ref := reference_dir()) is not None:
            paths.append(ref / self.filename)
        paths.append(data_dir() / self.filename)
        if self.suite == "d4rl":
            d4rl_dir = Path(os.environ.get("D4RL_DATASET_DIR", "~/.d4rl/datasets")).expanduser()
            base, _, version = self.name.rpartition("-v")
            paths.append(d4rl_dir / f"{self.name}.hdf5")
            paths.append(d4rl_dir / f"{base.replace('-', '_')}-v{version}.hdf5")
            if self.name in D4RL_ANTMAZE_DOWNLOADS:
                paths.append(d4rl_dir / D4RL_ANTMAZE_DOWNLOADS[self.name])
        return paths

    def find(self) -> Path | None:
        return next((p for p in self.candidates() if p.exists()), None)

    def find_all(self) -> list[Path]:
        """Every copy present; the first is what a load gets."""
        return [p for p in self.candidates() if p.exists()]


def _build_registry() -> dict[str, Entry]:
    from o2o.envs.adroit import adroit_env_id
    from o2o.envs.maze import antmaze_d4rl_env_id, antmaze_env_id, maze_env_id

    entries: dict[str, Entry] = {}
    for env, env_id in LITE_ENVS.items():
        for level in LEVELS:
            name = f"{env}-{level}-lite"
            entries[name] = Entry(name, "lite", env_id, f"{name}-v0.hdf5", True)
    for maze in MAZES:
        for variant in MAZE_VARIANTS:
            name = f"pointmaze-{maze}-{variant}"
            entries[name] = Entry(name, "maze", maze_env_id(maze), f"{name}-v0.hdf5", True)
    for env in D4RL_LOCOMOTION:
        for level in LEVELS:
            name = f"{env}-{level}-v2"
            entries[name] = Entry(name, "d4rl", LITE_ENVS.get(env, "Ant-v5"), f"{name}.hdf5", False)
    for maze in D4RL_ANTMAZE:
        name = f"antmaze-{maze}-v2"
        env_id = antmaze_d4rl_env_id(maze.split("-")[0])
        entries[name] = Entry(name, "d4rl", env_id, f"{name}.hdf5", False)
    for task in D4RL_ADROIT:
        for level in D4RL_ADROIT_LEVELS:
            name = f"{task}-{level}-v1"
            entries[name] = Entry(name, "d4rl", adroit_env_id(task), f"{name}.hdf5", False)
            minari_id = f"D4RL/{task}/{level}-v2"
            entries[minari_id.lower()] = Entry(
                minari_id, "minari", adroit_env_id(task), minari_id, False
            )
    for maze in D4RL_ANTMAZE:
        minari_id = f"D4RL/antmaze/{maze}-v1"
        env_id = antmaze_env_id(maze.split("-")[0])  # Minari's data: gymnasium-robotics' frame
        entries[minari_id.lower()] = Entry(minari_id, "minari", env_id, minari_id, False)
    return entries


_REGISTRY: dict[str, Entry] | None = None


def registry() -> dict[str, Entry]:
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = _build_registry()
    return _REGISTRY


def lookup(name: str) -> Entry | None:
    """Registry entry for a name, accepting the file's ``-v0`` suffix and ``.hdf5``."""
    key = name.strip().lower().removesuffix(".hdf5")
    entries = registry()
    if key in entries:
        return entries[key]
    if key.endswith("-v0") and key[:-3] in entries and entries[key[:-3]].suite != "d4rl":
        return entries[key[:-3]]
    return None


def how_to_get(entry: Entry) -> str:
    """One line: how a user gets an absent dataset onto this machine."""
    if entry.makeable:
        return f"make it with `o2o datasets make {entry.name}`"
    if entry.suite == "minari":
        return (
            f"download it with `minari download {entry.name}` (into $MINARI_DATASETS_PATH, "
            "default ~/.minari/datasets)"
        )
    return (
        f"copy D4RL's {entry.filename} into $O2O_DATA_DIR or $D4RL_DATASET_DIR "
        "(default ~/.d4rl/datasets), see docs/datasets.md"
    )


def minari_root() -> Path:
    return Path(os.environ.get("MINARI_DATASETS_PATH") or "~/.minari/datasets").expanduser()


def resolve_path(name_or_path: str | os.PathLike, must_exist: bool = True) -> Path | None:
    """A file or directory for a registered name, a Minari id or a path.

    With ``must_exist`` an unknown name or an absent registered file is a DatasetError that
    says what to do; without it the result may be None (unknown) or a path not yet made.
    """
    text = str(name_or_path)
    path = Path(text).expanduser()
    if path.exists():
        return path
    entry = lookup(text)
    if entry is not None:
        found = entry.find()
        if found is not None or not must_exist:
            return found or data_dir() / entry.filename
        where = ", ".join(str(p.parent) for p in entry.candidates())
        raise DatasetError(
            f"{entry.name}: dataset file {entry.filename} not found in {where}; {how_to_get(entry)}"
        )
    if "/" in text and not text.endswith((".hdf5", ".h5")) and not path.is_absolute():
        minari_dir = minari_root() / text
        if minari_dir.exists():
            return minari_dir
    looks_like_path = path.suffix in (".hdf5", ".h5") or os.sep in text or text.startswith(".")
    if looks_like_path:
        return path  # the reader reports "no such file" with the path
    if not must_exist:
        return None
    raise DatasetError(
        f"{text}: unknown dataset (not a file, a directory, a local Minari id, or a registered "
        f"name; see `o2o datasets list`){did_you_mean(text, registry(), n=3)}"
    )


def read_metadata_only(path: Path) -> dict[str, Any]:
    """A dataset's metadata without reading its columns."""
    from o2o.data.hdf5 import _read_metadata
    from o2o.data.minari_io import minari_metadata

    if path.is_dir():
        return minari_metadata(path)
    try:
        with h5py.File(path, "r") as handle:
            if "metadata" in handle and isinstance(handle["metadata"], h5py.Group):
                return _read_metadata(handle["metadata"])
    except OSError:
        return {}
    return {}


def entries_with_locations() -> list[tuple[Entry, Path | None]]:
    return [(entry, entry.find()) for entry in registry().values()]
