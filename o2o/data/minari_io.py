"""Minari dataset directories -> Dataset (via the ``minari`` package, no network).

A Minari dataset directory is ``<root>/<namespace>/<name>-vN/`` with ``data/metadata.json``
and the episode storage beside it. Either that directory or its ``data/`` folder is
accepted. Dict observations (goal-conditioned envs) keep their ``observation`` entry;
AntMaze data gets D4RL's layout, the torso's (x, y) (``achieved_goal``) then
``observation``, and o2o's fixed-goal AntMaze env (``o2o.envs.maze``) for evaluation; Adroit
data (``AdroitHand*-v1``) evaluates on o2o's Adroit env (``o2o.envs.adroit``: D4RL's success
rule) and keeps the per-step ``success`` info as ``infos["goal_achieved"]``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from o2o.data.dataset import Dataset
from o2o.data.validation import fail, validate_columns
from o2o.envs.adroit import adroit_env_id, adroit_task_of
from o2o.envs.maze import antmaze_env_for, antmaze_observation

ANTMAZE_OBS_CONVENTION = (
    "AntMaze: torso (x, y) then the 27-dim ant observation (D4RL's 29-dim layout)"
)


def _data_path(path: Path) -> Path:
    return path / "data" if (path / "data").is_dir() else path


def minari_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The directory's ``metadata.json`` as o2o metadata (env id and references lifted)."""
    path = Path(path)
    metadata_file = _data_path(path) / "metadata.json"
    if not metadata_file.is_file():
        raise fail(str(path), "Minari dataset directory without metadata (no data/metadata.json)")
    try:
        raw = json.loads(metadata_file.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise fail(str(metadata_file), f"unreadable Minari metadata ({error})") from error
    metadata: dict[str, Any] = {"minari": {k: v for k, v in raw.items() if not isinstance(v, dict)}}
    env_spec = raw.get("env_spec")
    if isinstance(env_spec, str):
        try:
            env_spec = json.loads(env_spec)
        except json.JSONDecodeError:
            env_spec = None
    if isinstance(env_spec, dict) and env_spec.get("id"):
        metadata["env_id"] = env_spec["id"]
        if env_spec.get("kwargs"):
            metadata["env_kwargs"] = env_spec["kwargs"]
        antmaze_env = antmaze_env_for(env_spec["id"])
        if antmaze_env is not None:
            # Evaluate on o2o's fixed-goal AntMaze with D4RL's observation layout.
            metadata["minari_env_id"] = env_spec["id"]
            metadata["env_id"] = antmaze_env
            metadata.pop("env_kwargs", None)
            metadata["obs_convention"] = ANTMAZE_OBS_CONVENTION
        adroit_task = adroit_task_of(env_spec["id"])
        if adroit_task is not None:
            # D4RL's time limit and success rule; Minari's own limit is kept for reference.
            metadata["minari_env_id"] = env_spec["id"]
            metadata["env_id"] = adroit_env_id(adroit_task)
            metadata.pop("env_kwargs", None)
            if env_spec.get("max_episode_steps"):
                metadata["minari_max_episode_steps"] = int(env_spec["max_episode_steps"])
    if "dataset_id" in raw:
        metadata["dataset"] = raw["dataset_id"]
    for key in ("ref_min_score", "ref_max_score"):
        if raw.get(key) is not None:
            metadata[key] = float(raw[key])
    if "ref_min_score" in metadata:
        metadata["ref_provenance"] = "Minari metadata (ref_min_score/ref_max_score)"
    return metadata


def _observation_array(observations: Any, source: str, antmaze: bool) -> np.ndarray:
    if isinstance(observations, dict):
        if antmaze and {"observation", "achieved_goal"} <= set(observations):
            return antmaze_observation(observations)
        if "observation" not in observations:
            raise fail(
                source,
                f"dict observations without an 'observation' entry (keys {sorted(observations)})",
            )
        observations = observations["observation"]
    return np.asarray(observations)


def read_minari(path: str | os.PathLike) -> Dataset:
    """Load and validate a Minari dataset directory."""
    path = Path(path)
    source = str(path)
    if not path.exists():
        raise fail(source, "no such file or directory")
    metadata = minari_metadata(path)
    import minari  # heavy import, only when a Minari dataset is actually read

    try:
        minari_dataset = minari.MinariDataset(_data_path(path))
        episodes = list(minari_dataset.iterate_episodes())
    except Exception as error:  # minari raises many kinds; any of them means a bad directory
        raise fail(
            source, f"unreadable Minari dataset ({type(error).__name__}: {error})"
        ) from error
    if not episodes:
        raise fail(source, "dataset is empty (0 episodes)")

    parts: dict[str, list[np.ndarray]] = {
        k: []
        for k in (
            "observations",
            "actions",
            "rewards",
            "next_observations",
            "terminals",
            "timeouts",
        )
    }
    goal_achieved: list[np.ndarray] = []
    for episode in episodes:
        observations = _observation_array(
            episode.observations, source, metadata.get("obs_convention") == ANTMAZE_OBS_CONVENTION
        )
        steps = len(episode.rewards)
        if observations.shape[0] != steps + 1:
            raise fail(
                source,
                f"episode {episode.id}: {observations.shape[0]} observations for {steps} steps "
                "(Minari stores steps + 1)",
            )
        terminals = np.asarray(episode.terminations, np.bool_)
        timeouts = np.asarray(episode.truncations, np.bool_).copy()
        # A Minari episode is a whole episode: close it even when the collector stopped
        # without a truncation flag, so it does not run into the next one.
        if steps and not (terminals[-1] or timeouts[-1]):
            timeouts[-1] = True
        parts["observations"].append(observations[:-1])
        parts["next_observations"].append(observations[1:])
        parts["actions"].append(np.asarray(episode.actions))
        parts["rewards"].append(np.asarray(episode.rewards))
        parts["terminals"].append(terminals)
        parts["timeouts"].append(timeouts)
        success = _step_success(episode.infos, steps)
        if success is not None:
            goal_achieved.append(success)
    columns = validate_columns({k: np.concatenate(v) for k, v in parts.items()}, source)
    infos = {}
    if len(goal_achieved) == len(episodes):
        infos["goal_achieved"] = np.concatenate(goal_achieved)
    metadata["source"] = source
    metadata["format"] = "minari"
    return Dataset(**columns, infos=infos, metadata=metadata)


def _step_success(infos: Any, steps: int) -> np.ndarray | None:
    """The per-step ``success`` info of an episode (Minari stores the reset's info first)."""
    if not isinstance(infos, dict) or "success" not in infos:
        return None
    success = np.asarray(infos["success"], np.bool_).reshape(-1)
    return success[-steps:] if success.shape[0] >= steps else None
