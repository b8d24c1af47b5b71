"""Local stand-ins for D4RL's and Minari's Adroit and AntMaze datasets.

The real files cannot be downloaded on every machine (CI, air-gapped clusters), so correctness
of the path from a user's file to a report is proven on small datasets rolled out in the real
envs with a uniform-random policy and written in each real layout:

* D4RL HDF5 (``<name>-standin.hdf5``, e.g. ``pen-human-standin.hdf5``): top-level
  ``observations``, ``actions``, ``rewards``, ``terminals``, ``timeouts`` without
  ``next_observations`` (D4RL's Adroit v1 and AntMaze v2 files have none; the loader derives
  them as D4RL's ``qlearning_dataset`` does), ``infos/qpos`` and ``infos/qvel``, Adroit's
  ``infos/goal_achieved``, AntMaze's ``infos/goal``. Like a real D4RL file it stores no env id:
  the env comes from the name. AntMaze observations are D4RL's 29 dimensions in D4RL's
  coordinates (start cell at the origin); episodes start in every free cell in turn, so some
  start at the goal and the sparse reward is not all zeros.
* Minari (``o2o-standin/<env>/<level>-vN`` under the Minari root): written by ``minari``'s
  own DataCollector around gymnasium-robotics' env (``AdroitHand*-v1`` with D4RL's time
  limit; ``AntMaze_*-v5`` without contact forces, Minari's 27-dimensional ant observation).

The data is random-policy data: it exercises loading, validation, training and evaluation,
not learning. Its metadata says so (``standin``).
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from o2o.data.dataset import Dataset
from o2o.data.hdf5 import write_hdf5
from o2o.data.registry import D4RL_ADROIT, D4RL_ADROIT_LEVELS, D4RL_ANTMAZE, minari_root
from o2o.errors import ConfigError

MINARI_NAMESPACE = "o2o-standin"
# D4RL's Adroit v1 and AntMaze v2 files: no next_observations.
D4RL_COLUMNS = ("observations", "actions", "rewards", "terminals", "timeouts")
STANDIN_NOTE = "local stand-in: uniform-random policy in the real env, not D4RL/Minari data"
MINARI_ANTMAZE_IDS = {"umaze": "AntMaze_UMaze-v5", "medium": "AntMaze_Medium-v5"}
MINARI_ANTMAZE_IDS["large"] = "AntMaze_Large-v5"


@dataclass(frozen=True)
class StandinTarget:
    family: str  # "adroit" or "antmaze"
    env: str  # adroit task (pen ...) or maze size (umaze, medium, large)
    level: str  # human/cloned/expert, or the AntMaze dataset variant (umaze-diverse ...)
    layout: str  # "d4rl" or "minari"
    version: str

    @property
    def d4rl_name(self) -> str:
        return f"antmaze-{self.level}" if self.family == "antmaze" else f"{self.env}-{self.level}"

    @property
    def minari_id(self) -> str:
        return f"{MINARI_NAMESPACE}/{self.family if self.family == 'antmaze' else self.env}/{self.level}-{self.version}"


def parse_target(name: str) -> StandinTarget:
    """A D4RL name (``pen-human-v1``, ``antmaze-medium-play-v2``) -> the D4RL layout; a Minari
    id (``D4RL/pen/human-v2``, ``D4RL/antmaze/umaze-diverse-v1``) -> the Minari layout."""
    text = name.strip().lower()
    minari = re.fullmatch(r"d4rl/([a-z]+)/([a-z-]+)-(v\d+)", text)
    if minari:
        env, level, version = minari.groups()
        layout, base = "minari", f"{env}-{level}"
    else:
        match = re.fullmatch(r"([a-z-]+)-(v\d+)", text)
        if not match:
            raise _unknown(name)
        base, version = match.groups()
        layout = "d4rl"
    if base.startswith("antmaze-") and base[len("antmaze-") :] in D4RL_ANTMAZE:
        level = base[len("antmaze-") :]
        return StandinTarget("antmaze", level.split("-")[0], level, layout, version)
    task, _, level = base.partition("-")
    if task in D4RL_ADROIT and level in D4RL_ADROIT_LEVELS:
        return StandinTarget("adroit", task, level, layout, version)
    raise _unknown(name)


def _unknown(name: str) -> ConfigError:
    return ConfigError(
        f"cannot make a stand-in for {name!r}: expected a D4RL name "
        "({pen,door,hammer,relocate}-{human,cloned,expert}-v1, antmaze-<maze>-v2) or a Minari "
        "id (D4RL/pen/human-v2, D4RL/antmaze/umaze-v1 ...)"
    )


def _random_rollouts(
    env: Any,
    episodes: int,
    max_steps: int,
    seed: int,
    reset_options: Callable[[int], dict | None],
    step_infos: Callable[[dict], dict[str, Any]],
    on_episode: Callable[[int], None] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """D4RL-layout columns (no next_observations) and infos of ``episodes`` random episodes,
    each cut at ``max_steps`` (a timeout) unless the env ends it first; ``on_episode(n)``
    after the n-th (progress)."""
    rng = np.random.default_rng(seed)
    columns: dict[str, list] = {k: [] for k in ("observations", "actions", "rewards")}
    columns.update(terminals=[], timeouts=[])
    infos: dict[str, list] = {}
    low, high = env.action_space.low, env.action_space.high
    for episode in range(episodes):
        observation, _ = env.reset(seed=seed + episode, options=reset_options(episode))
        for step in range(max_steps):
            action = rng.uniform(low, high).astype(np.float32)
            for key, value in step_infos(env).items():
                infos.setdefault(key, []).append(value)
            next_observation, reward, terminated, truncated, info = env.step(action)
            last = terminated or truncated or step == max_steps - 1
            if "goal_achieved" in info:
                infos.setdefault("goal_achieved", []).append(bool(info["goal_achieved"]))
            columns["observations"].append(observation)
            columns["actions"].append(action)
            columns["rewards"].append(reward)
            columns["terminals"].append(bool(terminated))
            columns["timeouts"].append(bool(last and not terminated))
            observation = next_observation
            if last:
                break
        if on_episode is not None:
            on_episode(episode + 1)
    arrays = {k: np.asarray(v) for k, v in columns.items()}
    arrays["observations"] = arrays["observations"].astype(np.float32)
    arrays["rewards"] = arrays["rewards"].astype(np.float32)
    return arrays, {k: np.asarray(v) for k, v in infos.items()}


def _qpos_qvel(data: Any) -> dict[str, np.ndarray]:
    return {"qpos": data.qpos.copy(), "qvel": data.qvel.copy()}


def d4rl_standin(
    target: StandinTarget,
    episodes: int,
    max_steps: int | None,
    seed: int,
    on_episode: Callable[[int], None] | None = None,
) -> Dataset:
    """Random-policy data of ``target`` in D4RL's HDF5 layout (see the module docstring)."""
    if target.family == "adroit":
        from o2o.envs.adroit import adroit_env_id

        env = gym.make(adroit_env_id(target.env))

        def reset_options(episode: int) -> dict | None:
            return None

        def step_infos(env: Any) -> dict[str, Any]:
            return _qpos_qvel(env.unwrapped.data)

    else:
        from o2o.envs.maze import antmaze_d4rl_env_id, free_cells

        env = gym.make(antmaze_d4rl_env_id(target.env))
        maze = env.unwrapped
        goal_cell = maze.eval_goal[target.env]
        # The goal cell first, then every other free cell in turn: some rewards are 1.
        cells = [goal_cell] + [c for c in free_cells(maze.maze_map) if c != goal_cell]
        goal = (maze.goal_xy - maze.origin).astype(np.float32)

        def reset_options(episode: int) -> dict | None:
            return {"reset_cell": cells[episode % len(cells)]}

        def step_infos(env: Any) -> dict[str, Any]:
            return {**_qpos_qvel(env.unwrapped._env.ant_env.data), "goal": goal}

    limit = env.spec.max_episode_steps  # D4RL's
    steps = min(max_steps or limit, limit)
    columns, infos = _random_rollouts(
        env, episodes, steps, seed, reset_options, step_infos, on_episode
    )
    env.close()
    n = columns["rewards"].shape[0]
    # D4RL's layout has no next_observations; Dataset needs them, write_hdf5 is told to skip.
    return Dataset(
        observations=columns["observations"],
        actions=columns["actions"],
        rewards=columns["rewards"],
        next_observations=np.zeros_like(columns["observations"]),
        terminals=columns["terminals"],
        timeouts=columns["timeouts"],
        infos={k: v[:n] for k, v in infos.items()},
        metadata={"standin": STANDIN_NOTE, "policy": "uniform random", "seed": seed},
    )


def write_d4rl_standin(
    target: StandinTarget,
    out_dir: Path,
    episodes: int = 3,
    max_steps: int | None = None,
    seed: int = 0,
    force: bool = False,
    on_episode: Callable[[int], None] | None = None,
) -> Path:
    path = out_dir / f"{target.d4rl_name}-standin.hdf5"
    if path.exists() and not force:
        raise ConfigError(f"{path} exists (use --force to replace it)")
    dataset = d4rl_standin(target, episodes, max_steps, seed, on_episode)
    return write_hdf5(dataset, path, columns=D4RL_COLUMNS)


class SuccessOnReset(gym.Wrapper):
    """Minari records infos only when reset's and step's have the same keys; gymnasium-robotics'
    reset info lacks ``success``."""

    def reset(self, **kwargs: Any):
        observation, info = self.env.reset(**kwargs)
        return observation, {"success": False, **info}


def write_minari_standin(
    target: StandinTarget,
    root: Path | None = None,
    episodes: int = 3,
    max_steps: int | None = None,
    seed: int = 0,
    force: bool = False,
    on_episode: Callable[[int], None] | None = None,
) -> Path:
    """A Minari dataset ``o2o-standin/<env>/<level>-vN`` under ``root`` (default: the Minari
    root, ``$MINARI_DATASETS_PATH``), written by ``minari.DataCollector``; ``on_episode(n)``
    after the n-th episode (progress)."""
    import minari

    from o2o.envs.factory import quiet_robotics_notice

    quiet_robotics_notice()
    import gymnasium_robotics

    gym.register_envs(gymnasium_robotics)
    root = Path(root) if root is not None else minari_root()
    path = root / target.minari_id
    if path.exists():
        if not force:
            raise ConfigError(f"{path} exists (use --force to replace it)")
        import shutil

        shutil.rmtree(path)
    # The env's time limit is the episode cut (D4RL's limit unless max_steps is shorter), so
    # every episode ends with Minari's own truncation flag.
    if target.family == "adroit":
        from o2o.envs.adroit import MAX_EPISODE_STEPS, ROBOTICS_IDS

        limit = MAX_EPISODE_STEPS[target.env]
        env_id, kwargs = ROBOTICS_IDS[target.env], {}
    else:
        from o2o.envs.maze import ANTMAZE_MAX_EPISODE_STEPS

        limit = ANTMAZE_MAX_EPISODE_STEPS[target.env]
        env_id, kwargs = MINARI_ANTMAZE_IDS[target.env], {"include_cfrc_ext_in_observation": False}
    env = gym.make(env_id, max_episode_steps=min(max_steps or limit, limit), **kwargs)
    # Adroit's per-step success is kept (Minari's D4RL Adroit data has it too).
    adroit = target.family == "adroit"
    collector = minari.DataCollector(SuccessOnReset(env) if adroit else env, record_infos=adroit)
    rng = np.random.default_rng(seed)
    low, high = env.action_space.low, env.action_space.high
    for episode in range(episodes):
        collector.reset(seed=seed + episode)
        terminated = truncated = False
        while not (terminated or truncated):
            action = rng.uniform(low, high).astype(np.float32)
            _, _, terminated, truncated, _ = collector.step(action)
        if on_episode is not None:
            on_episode(episode + 1)
    previous = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # minari's notes on missing author/description
            collector.create_dataset(
                dataset_id=target.minari_id,
                algorithm_name="uniform random (o2o stand-in)",
                description=STANDIN_NOTE,
            )
    finally:
        if previous is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = previous
        collector.close()
    return path
