"""``load``: any name or path -> validated Dataset, checked against its environment."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

from o2o.data.dataset import Dataset
from o2o.data.hdf5 import read_hdf5
from o2o.data.minari_io import read_minari
from o2o.data.registry import lookup, read_metadata_only, resolve_path
from o2o.data.scores import GYMNASIUM_ENV_FOR_FAMILY, d4rl_family
from o2o.data.validation import check_against_spaces
from o2o.errors import DatasetError


def env_id_for(dataset_or_name: Dataset | str) -> str:
    """The Gymnasium env id to evaluate a dataset on (``gymnasium.make``-able; maze ids carry
    their module prefix, ``o2o.envs.maze:...``, so the make call registers them)."""
    if isinstance(dataset_or_name, Dataset):
        metadata = dict(dataset_or_name.metadata)
        label = dataset_or_name.name
    else:
        label = str(dataset_or_name)
        entry = lookup(label)
        if entry is not None:
            return entry.env_id
        path = resolve_path(label, must_exist=False)
        metadata = read_metadata_only(path) if path is not None and path.exists() else {}
    if metadata.get("env_id"):
        return str(metadata["env_id"])
    for name in (str(metadata.get("dataset", "")), label, Path(label).stem):
        entry = lookup(name) if name else None
        if entry is not None:
            return entry.env_id
        family = d4rl_family(name) if name else None
        if family is not None:
            key = family if family in GYMNASIUM_ENV_FOR_FAMILY else None
            if family == "antmaze":
                size = name.lower().split("-")[1] if "-" in name else "umaze"
                key = f"antmaze-{size}"
            if key in GYMNASIUM_ENV_FOR_FAMILY:
                return GYMNASIUM_ENV_FOR_FAMILY[key]
    raise DatasetError(
        f"{label}: cannot tell which environment the dataset belongs to (no env_id in its metadata)"
    )


@functools.lru_cache(maxsize=32)
def _spaces_for(env_id: str, kwargs_json: str = "{}") -> tuple[Any, Any]:
    import gymnasium as gym

    env = gym.make(env_id, **json.loads(kwargs_json))
    try:
        return env.observation_space, env.action_space
    finally:
        env.close()


def _env_spaces(env: Any) -> tuple[Any, Any, str]:
    if isinstance(env, str):
        observation_space, action_space = _spaces_for(env)
        return observation_space, action_space, env
    spec = getattr(env, "spec", None)
    return env.observation_space, env.action_space, getattr(spec, "id", type(env).__name__)


def load(name_or_path: str | os.PathLike, env: Any = None, *, check_env: bool = True) -> Dataset:
    """Load a registered name (``hopper-medium-lite``, ``hopper-medium-lite-v0``), a D4RL-layout
    ``.hdf5`` file (real D4RL, reference lite, o2o's own), or a Minari dataset directory / id.

    ``env`` (a Gymnasium env or env id) is what observation/action dimensions and action
    bounds are checked against; by default the dataset's own env (``env_id_for``) when it
    can be made here. ``check_env=False`` skips the environment checks.
    """
    path = resolve_path(name_or_path)
    assert path is not None
    dataset = read_minari(path) if path.is_dir() else read_hdf5(path)
    metadata = dict(dataset.metadata)
    entry = lookup(str(name_or_path)) or lookup(path.stem)
    if entry is not None:
        metadata.setdefault("registry_name", entry.name)
        metadata.setdefault("env_id", entry.env_id)
    metadata.setdefault("dataset", path.stem if path.is_file() else path.name)
    dataset = dataset.replace(metadata=metadata)

    if env is not None:
        observation_space, action_space, env_name = _env_spaces(env)
    elif check_env:
        try:
            env_id = env_id_for(dataset)
            kwargs = metadata.get("env_kwargs") or {}
            observation_space, action_space = _spaces_for(
                env_id, json.dumps(kwargs, sort_keys=True)
            )
            env_name = env_id
        except Exception:  # the env is not installed here: the data is still usable
            return dataset.replace(metadata={**metadata, "env_checked": False})
        if getattr(observation_space, "shape", None) is None:
            # A goal-conditioned env (Dict observations, e.g. gymnasium-robotics' AntMaze for
            # D4RL AntMaze data) has no flat shape to compare with; only an explicit env is checked.
            return dataset.replace(metadata={**metadata, "env_checked": False})
    else:
        return dataset
    check_against_spaces(
        dataset.observations, dataset.actions, observation_space, action_space, str(path), env_name
    )
    return dataset.replace(metadata={**metadata, "env_checked": True})
