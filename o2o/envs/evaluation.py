"""Evaluation of many episodes at once: a grid of envs (seeds × episodes), one batched
policy call per step."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from o2o.envs.factory import make_env, success_from_info

PolicyFn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class EvalResult:
    """Per-seed statistics; arrays have one entry per seed."""

    returns: np.ndarray  # (seeds, episodes)
    lengths: np.ndarray  # (seeds, episodes)
    successes: np.ndarray | None  # (seeds, episodes), None when the env reports no success

    @property
    def mean_return(self) -> np.ndarray:
        return self.returns.mean(axis=1)

    @property
    def success_rate(self) -> np.ndarray | None:
        return None if self.successes is None else self.successes.mean(axis=1)


class EnvGrid:
    """``num_seeds × num_episodes`` envs kept alive between evaluations (creation is slow)."""

    def __init__(self, env_id: str, num_seeds: int, num_episodes: int):
        self.env_id = env_id
        self.shape = (num_seeds, num_episodes)
        self.envs = [[make_env(env_id) for _ in range(num_episodes)] for _ in range(num_seeds)]

    def close(self) -> None:
        for row in self.envs:
            for env in row:
                env.close()


def evaluate(
    grid: EnvGrid,
    policy: PolicyFn,
    seed: int | Sequence[int],
    max_steps: int | None = None,
    on_step: Callable[[int], None] | None = None,
) -> EvalResult:
    """Run one episode in every env of the grid. ``policy`` maps observations of shape
    (seeds, episodes, obs_dim) to actions (seeds, episodes, act_dim) deterministically.
    ``seed`` is one base per grid row (or one int for all rows); episode e of row s starts
    from reset seed ``seed[s] + e``, so a row's result does not depend on the other rows.
    ``on_step(t)`` after every step t of the grid (progress)."""
    num_seeds, num_episodes = grid.shape
    bases = [seed] * num_seeds if isinstance(seed, int) else list(seed)
    first = grid.envs[0][0]
    observations = np.zeros((num_seeds, num_episodes, first.observation_space.shape[0]), np.float32)
    for s in range(num_seeds):
        for e in range(num_episodes):
            observations[s, e] = grid.envs[s][e].reset(seed=bases[s] + e)[0]
    returns = np.zeros((num_seeds, num_episodes))
    lengths = np.zeros((num_seeds, num_episodes), np.int64)
    successes = np.zeros((num_seeds, num_episodes))
    reports_success = False
    active = np.ones((num_seeds, num_episodes), bool)
    step = 0
    while active.any() and (max_steps is None or step < max_steps):
        actions = np.asarray(policy(observations))
        for s, e in zip(*np.nonzero(active), strict=True):
            obs, reward, terminated, truncated, info = grid.envs[s][e].step(actions[s, e])
            observations[s, e] = obs
            returns[s, e] += reward
            lengths[s, e] += 1
            success = success_from_info(info)
            if success is not None:
                reports_success = True
                successes[s, e] = max(successes[s, e], success)
            if terminated or truncated:
                active[s, e] = False
        step += 1
        if on_step is not None:
            on_step(step)
    return EvalResult(returns, lengths, successes if reports_success else None)


def episode_limit(grid: EnvGrid) -> int | None:
    """The grid's time limit in steps (what an evaluation's progress counts up to); None
    where the env declares none."""
    spec = getattr(grid.envs[0][0], "spec", None)
    return getattr(spec, "max_episode_steps", None)
