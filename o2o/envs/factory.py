"""Gymnasium environments with actions rescaled to [-1, 1], the range every agent acts in."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable

import gymnasium as gym
import numpy as np

from o2o.errors import ConfigError

EnvMaker = Callable[[str], gym.Env]

# Env-id prefixes served by o2o's own makers (e.g. the PointMaze suite) instead of gym.make.
_MAKERS: dict[str, EnvMaker] = {}


def register_env(prefix: str, maker: EnvMaker) -> None:
    """Serve env ids starting with ``prefix`` by ``maker(env_id)``."""
    _MAKERS[prefix] = maker


# MuJoCo ≥ 3.3 flags an attribute of Gymnasium's own HalfCheetah asset on every compile,
# once per env (dozens of lines per run); it is not the user's to act on.
_IGNORED_MUJOCO_WARNINGS = ("compiler attribute 'settotalmass' is deprecated",)


def _mujoco_warning(message: str) -> None:
    if not any(ignored in message for ignored in _IGNORED_MUJOCO_WARNINGS):
        warnings.warn(f"MuJoCo: {message}", RuntimeWarning, stacklevel=2)


# gymnasium-robotics 1.2.1–1.4.2 print this notice to stderr on import (every PointMaze run);
# o2o's Adroit support names its env versions itself (docs/datasets.md), so it is dropped.
_ROBOTICS_NOTICE = "environment's reward functions were updated in v1.2.1"


@functools.cache
def quiet_robotics_notice() -> None:
    """Drop gymnasium-robotics' import-time Adroit notice; call before importing it."""
    try:
        from farama_notifications import notifications
    except ImportError:
        return
    versions = notifications.get("gymnasium_robotics", {})
    for version in [v for v, text in versions.items() if _ROBOTICS_NOTICE in text]:
        del versions[version]


@functools.cache
def _route_mujoco_warnings() -> None:
    """MuJoCo's warnings as Python warnings (filterable) instead of bare stdout lines."""
    try:
        import mujoco
    except ImportError:
        return
    mujoco.set_mju_user_warning(_mujoco_warning)


def make_env(env_id: str, seed: int | None = None, **make_kwargs: object) -> gym.Env:
    """A continuous-control env whose action space is Box(-1, 1); one-line error otherwise.
    ``make_kwargs`` go to ``gym.make`` (``render_mode=...``); o2o's own makers take none."""
    _route_mujoco_warnings()
    quiet_robotics_notice()
    maker = next((m for p, m in _MAKERS.items() if env_id.startswith(p)), None)
    if maker and make_kwargs:
        raise ConfigError(f"{env_id} is made by o2o's own maker, which takes no options")
    try:
        env = maker(env_id) if maker else gym.make(env_id, **make_kwargs)
    except gym.error.Error as error:
        raise ConfigError(f"unknown environment '{env_id}': {error}") from None
    except ImportError as error:
        raise ConfigError(f"environment '{env_id}' needs a missing package: {error}") from None
    if not isinstance(env.action_space, gym.spaces.Box):
        env.close()
        raise ConfigError(
            f"environment '{env_id}' has a {type(env.action_space).__name__} action space; o2o needs continuous (Box) actions"
        )
    if (
        not isinstance(env.observation_space, gym.spaces.Box)
        or len(env.observation_space.shape) != 1
    ):
        env.close()
        raise ConfigError(
            f"environment '{env_id}' must have flat Box observations, has {env.observation_space}"
        )
    low, high = env.action_space.low, env.action_space.high
    if not (np.allclose(low, -1.0) and np.allclose(high, 1.0)):
        unit = np.ones(env.action_space.shape, np.float32)
        env = gym.wrappers.RescaleAction(env, -unit, unit)
    if seed is not None:
        env.action_space.seed(seed)
    return env


def env_dims(env_id: str) -> tuple[int, int]:
    """(observation dimension, action dimension)."""
    env = make_env(env_id)
    dims = (int(env.observation_space.shape[0]), int(env.action_space.shape[0]))
    env.close()
    return dims


def success_from_info(info: dict) -> float | None:
    """Success flag where the env reports one (gymnasium-robotics: ``success``/``is_success``)."""
    for name in ("success", "is_success", "goal_achieved"):
        if name in info:
            return float(np.asarray(info[name]).item())
    return None
