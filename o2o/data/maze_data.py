"""Datasets for the PointMaze suite from the noisy scripted waypoint controller.

* ``play``: the controller is sent between a few hand-picked cells, starting from one of
  them (D4RL's antmaze-*-play);
* ``diverse``: random goal cells from random start cells (antmaze-*-diverse).

Within a collection episode the controller gets a new goal each time it reaches one, as in
D4RL. Rewards are relabelled for the *evaluation* task: 1 and a terminal when the ball is
within 0.45 of the evaluation goal (the episode then ends, as the evaluation env does), 0
otherwise; other episodes end with a timeout at the env's time limit.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from o2o.data.dataset import Dataset
from o2o.envs.maze import (
    EVAL_GOAL,
    EVAL_START,
    MAX_EPISODE_STEPS,
    MAZE_MAPS,
    PLAY_CELLS,
    SUCCESS_RADIUS,
    WaypointController,
    cell_center,
    free_cells,
    make_point_maze,
    maze_env_id,
)

DEFAULT_MAZE_TRANSITIONS = 100_000


def parse_maze_name(name: str) -> tuple[str, str]:
    """'pointmaze-medium-diverse' -> ('medium', 'diverse')."""
    parts = name.lower().removesuffix("-v0").split("-")
    if (
        len(parts) != 3
        or parts[0] != "pointmaze"
        or parts[1] not in MAZE_MAPS
        or parts[2] not in ("play", "diverse")
    ):
        raise ValueError(
            f"not a maze dataset name: {name!r} (expected pointmaze-{{umaze,medium,large}}-{{play,diverse}})"
        )
    return parts[1], parts[2]


def controller_success_rate(maze: str, episodes: int, seed: int, noise_std: float) -> float:
    """Success rate of the noisy controller on the evaluation task (start -> goal)."""
    import gymnasium as gym

    env = gym.make(maze_env_id(maze))
    controller = WaypointController(MAZE_MAPS[maze], np.random.default_rng(seed), noise_std)
    goal_xy = cell_center(MAZE_MAPS[maze], EVAL_GOAL[maze])
    successes = 0
    for episode in range(episodes):
        observation, _ = env.reset(seed=seed + episode)
        while True:
            observation, reward, terminated, truncated, _ = env.step(
                controller(observation, EVAL_GOAL[maze], goal_xy)
            )
            if terminated or truncated:
                successes += int(reward > 0)
                break
    env.close()
    return successes / episodes


def make_maze_dataset(
    name: str,
    transitions: int = DEFAULT_MAZE_TRANSITIONS,
    seed: int = 0,
    noise_std: float = 0.3,
    eval_episodes: int = 20,
    progress: Callable[[int], None] | None = None,
) -> Dataset:
    """Collect ``transitions`` rows for ``pointmaze-<maze>-<play|diverse>``; deterministic in
    ``seed``. ``progress`` is called with the number of rows collected so far."""
    maze, variant = parse_maze_name(name)
    maze_map = MAZE_MAPS[maze]
    rng = np.random.default_rng(seed)
    controller = WaypointController(maze_map, rng, noise_std)
    goal_cells = PLAY_CELLS[maze] if variant == "play" else free_cells(maze_map)
    start_cells = goal_cells
    eval_goal_xy = cell_center(maze_map, EVAL_GOAL[maze])
    limit = MAX_EPISODE_STEPS[maze]

    env = make_point_maze(maze, continuing=True)
    columns = {
        "observations": np.zeros((transitions, 4), np.float32),
        "actions": np.zeros((transitions, 2), np.float32),
        "rewards": np.zeros(transitions, np.float32),
        "next_observations": np.zeros((transitions, 4), np.float32),
        "terminals": np.zeros(transitions, np.bool_),
        "timeouts": np.zeros(transitions, np.bool_),
    }
    commanded_goals = np.zeros((transitions, 2), np.float32)
    started = time.perf_counter()
    row = 0
    episode = 0
    while row < transitions:
        start = start_cells[rng.integers(len(start_cells))]
        goal = start
        while goal == start:
            goal = goal_cells[rng.integers(len(goal_cells))]
        obs, _ = env.reset(
            seed=int(seed * 1_000_003 + episode),
            options={"goal_cell": np.array(goal), "reset_cell": np.array(start)},
        )
        episode += 1
        observation = obs["observation"]
        for step in range(limit):
            goal_xy = env.goal.copy()
            action = controller(observation, goal, goal_xy)
            obs, _, _, _, _ = env.step(action)
            next_observation = obs["observation"]
            success = bool(np.linalg.norm(next_observation[:2] - eval_goal_xy) <= SUCCESS_RADIUS)
            columns["observations"][row] = observation
            columns["actions"][row] = action
            columns["next_observations"][row] = next_observation
            columns["rewards"][row] = float(success)
            columns["terminals"][row] = success
            columns["timeouts"][row] = (not success) and (
                step == limit - 1 or row == transitions - 1
            )
            commanded_goals[row] = goal_xy
            row += 1
            observation = next_observation
            if success or row == transitions:
                break
            if np.linalg.norm(next_observation[:2] - env.goal) <= 0.5:
                # Reached the commanded goal: pick another one, as D4RL's collection does.
                previous = goal
                while goal == previous:
                    goal = goal_cells[rng.integers(len(goal_cells))]
                env.goal = cell_center(maze_map, goal) + rng.uniform(-0.25, 0.25, size=2)
                env.update_target_site_pos()
        if progress is not None:
            progress(row)
    env.close()
    collect_seconds = time.perf_counter() - started

    data_success = float(
        columns["terminals"].sum() / max(1, (columns["terminals"] | columns["timeouts"]).sum())
    )
    metadata = {
        "dataset": f"pointmaze-{maze}-{variant}-v0",
        "env_id": maze_env_id(maze),
        "suite": "maze",
        "maze": maze,
        "variant": variant,
        "eval_start_cell": list(EVAL_START[maze]),
        "eval_goal_cell": list(EVAL_GOAL[maze]),
        "goal_cells": [list(c) for c in goal_cells],
        "reward": f"sparse: 1 and terminal within {SUCCESS_RADIUS} of the evaluation goal, else 0",
        "policy": f"BFS waypoint PD controller (p 10, d -1), Gaussian action noise std {noise_std}",
        "seed": seed,
        "noise_std": noise_std,
        "collect_seconds": collect_seconds,
        "data_episode_success_rate": data_success,
        "controller_success_rate": controller_success_rate(maze, eval_episodes, seed, noise_std),
        "ref_min_score": 0.0,
        "ref_max_score": 1.0,
        "ref_provenance": "success indicator (return 1 = goal reached), D4RL AntMaze's 0/1 convention",
        "obs_convention": "(x, y, vx, vy) of the ball; the fixed goal is not observed",
    }
    return Dataset(**columns, infos={"goal": commanded_goals}, metadata=metadata)
