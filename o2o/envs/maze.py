"""PointMaze sparse-reward suite: the CPU stand-in for AntMaze.

Evaluation task (like D4RL AntMaze): a fixed start cell and a fixed goal cell per maze;
reward 1 and termination when the ball is within 0.45 of the goal, 0 otherwise; so an
episode's return is its success (0 or 1), the normalized score is 100 x success rate with
references 0 and 1, and the regret of an online phase is the sum over its episodes of
(1 - success). Observations are the ball's (x, y, vx, vy): the goal is fixed, so like
D4RL AntMaze it is not part of the observation.

The envs are registered with Gymnasium as ``O2OPointMaze_{UMaze,Medium,Large}-v0``; the ids
returned by :func:`maze_env_id` carry this module as prefix so that a plain
``gymnasium.make(id)`` imports and registers them.

Data comes from :class:`WaypointController`: breadth-first search over the maze grid to the
commanded goal cell, a PD controller towards the next cell's centre, Gaussian action noise
(D4RL's maze2d controller, simplified).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from o2o.envs.factory import quiet_robotics_notice

SUCCESS_RADIUS = 0.45  # gymnasium-robotics' goal radius

# The gymnasium-robotics maps (copied so that naming an env does not import that package).
MAZE_MAPS: dict[str, list[list[int]]] = {
    "umaze": [
        [1, 1, 1, 1, 1],
        [1, 0, 0, 0, 1],
        [1, 1, 1, 0, 1],
        [1, 0, 0, 0, 1],
        [1, 1, 1, 1, 1],
    ],
    "medium": [
        [1, 1, 1, 1, 1, 1, 1, 1],
        [1, 0, 0, 1, 1, 0, 0, 1],
        [1, 0, 0, 1, 0, 0, 0, 1],
        [1, 1, 0, 0, 0, 1, 1, 1],
        [1, 0, 0, 1, 0, 0, 0, 1],
        [1, 0, 1, 0, 0, 1, 0, 1],
        [1, 0, 0, 0, 1, 0, 0, 1],
        [1, 1, 1, 1, 1, 1, 1, 1],
    ],
    "large": [
        [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
        [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1],
        [1, 0, 1, 1, 0, 1, 0, 1, 0, 1, 0, 1],
        [1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1],
        [1, 0, 1, 1, 1, 1, 0, 1, 1, 1, 0, 1],
        [1, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 1],
        [1, 1, 0, 1, 0, 1, 0, 1, 0, 1, 1, 1],
        [1, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1],
        [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
    ],
}
# Evaluation start and goal cells (row, col): opposite ends of each maze, as in D4RL.
EVAL_START = {"umaze": (3, 1), "medium": (1, 1), "large": (1, 1)}
EVAL_GOAL = {"umaze": (1, 1), "medium": (6, 6), "large": (7, 10)}
# gymnasium-robotics' time limits for PointMaze.
MAX_EPISODE_STEPS = {"umaze": 300, "medium": 600, "large": 800}
# "play"-like data: hand-picked cells the controller is sent between.
PLAY_CELLS = {
    "umaze": [(1, 1), (1, 3), (3, 3), (3, 1)],
    "medium": [(1, 1), (2, 5), (4, 4), (6, 6), (6, 1), (1, 6)],
    "large": [(1, 1), (3, 4), (1, 10), (5, 6), (7, 10), (7, 4), (5, 2)],
}
GYM_NAMES = {
    "umaze": "O2OPointMaze_UMaze-v0",
    "medium": "O2OPointMaze_Medium-v0",
    "large": "O2OPointMaze_Large-v0",
}


def maze_env_id(maze: str) -> str:
    """``gymnasium.make``-able id of a maze's evaluation env (module-prefixed)."""
    return f"{__name__}:{GYM_NAMES[maze]}"


def free_cells(maze_map: Sequence[Sequence[int]]) -> list[tuple[int, int]]:
    return [(r, c) for r, row in enumerate(maze_map) for c, v in enumerate(row) if v != 1]


def cell_center(maze_map: Sequence[Sequence[int]], cell: tuple[int, int]) -> np.ndarray:
    """gymnasium-robotics' (row, col) -> (x, y) with unit cells, map centred at the origin."""
    x_center, y_center = len(maze_map[0]) / 2, len(maze_map) / 2
    return np.array([cell[1] + 0.5 - x_center, y_center - (cell[0] + 0.5)])


def cell_of(maze_map: Sequence[Sequence[int]], xy: np.ndarray) -> tuple[int, int]:
    x_center, y_center = len(maze_map[0]) / 2, len(maze_map) / 2
    row = int(np.floor(y_center - xy[1]))
    col = int(np.floor(xy[0] + x_center))
    return min(max(row, 0), len(maze_map) - 1), min(max(col, 0), len(maze_map[0]) - 1)


def bfs_distances(
    maze_map: Sequence[Sequence[int]], goal: tuple[int, int]
) -> dict[tuple[int, int], int]:
    """Grid steps from every free cell to ``goal`` (4-connected)."""
    distances = {goal: 0}
    queue = deque([goal])
    while queue:
        r, c = queue.popleft()
        for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            nxt = (r + dr, c + dc)
            if maze_map[nxt[0]][nxt[1]] != 1 and nxt not in distances:
                distances[nxt] = distances[(r, c)] + 1
                queue.append(nxt)
    return distances


class WaypointController:
    """Noisy PD control along the BFS path to a goal cell.

    Gains are D4RL's maze2d ones (p 10, d -1); the noise is added to the clipped action
    and clipped again, so every action lies in the env's [-1, 1] box.
    """

    def __init__(
        self,
        maze_map: Sequence[Sequence[int]],
        rng: np.random.Generator,
        noise_std: float = 0.3,
        p_gain: float = 10.0,
        d_gain: float = -1.0,
    ) -> None:
        self.maze_map = maze_map
        self.rng = rng
        self.noise_std = noise_std
        self.p_gain = p_gain
        self.d_gain = d_gain
        self._distance_cache: dict[tuple[int, int], dict[tuple[int, int], int]] = {}

    def waypoint(
        self, xy: np.ndarray, goal_cell: tuple[int, int], goal_xy: np.ndarray
    ) -> np.ndarray:
        if goal_cell not in self._distance_cache:
            self._distance_cache[goal_cell] = bfs_distances(self.maze_map, goal_cell)
        distances = self._distance_cache[goal_cell]
        here = cell_of(self.maze_map, xy)
        if here == goal_cell or here not in distances:
            return goal_xy
        r, c = here
        neighbours = [(r + dr, c + dc) for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1))]
        nxt = min((n for n in neighbours if n in distances), key=distances.__getitem__)
        return goal_xy if nxt == goal_cell else cell_center(self.maze_map, nxt)

    def __call__(
        self, observation: np.ndarray, goal_cell: tuple[int, int], goal_xy: np.ndarray
    ) -> np.ndarray:
        xy, velocity = observation[:2], observation[2:4]
        target = self.waypoint(xy, goal_cell, goal_xy)
        action = np.clip(self.p_gain * (target - xy) + self.d_gain * velocity, -1.0, 1.0)
        if self.noise_std > 0:
            action = action + self.rng.normal(0.0, self.noise_std, size=2)
        return np.clip(action, -1.0, 1.0).astype(np.float32)


def make_point_maze(
    maze: str, continuing: bool, maze_map: Sequence[Sequence[int]] | None = None
) -> Any:
    """The raw gymnasium-robotics PointMaze env on one of our maps (dict observations)."""
    quiet_robotics_notice()
    from gymnasium_robotics.envs.maze.point_maze import PointMazeEnv

    if maze not in MAZE_MAPS:
        raise ValueError(f"unknown maze {maze!r}, expected one of {sorted(MAZE_MAPS)}")
    return PointMazeEnv(
        maze_map=maze_map or MAZE_MAPS[maze],
        reward_type="sparse",
        continuing_task=continuing,
        reset_target=False,
    )


class SparsePointMaze(gym.Env):
    """Evaluation env: fixed start cell (with gymnasium-robotics' ±0.25-cell position noise),
    fixed goal at the goal cell's centre, sparse reward, termination on success."""

    metadata = {"render_modes": []}
    eval_start, eval_goal = EVAL_START, EVAL_GOAL
    obs_dim = 4
    success_radius = SUCCESS_RADIUS

    def __init__(self, maze: str = "umaze") -> None:
        self.maze = maze
        self.maze_map = self.map_for(maze)
        self._env = self._make_inner(maze)
        self.goal_xy = np.asarray(
            self._env.maze.cell_rowcol_to_xy(np.array(self.eval_goal[maze])), np.float64
        )
        self.observation_space = gym.spaces.Box(
            -np.inf, np.inf, shape=(self.obs_dim,), dtype=np.float64
        )
        self.action_space = self._env.action_space

    @staticmethod
    def map_for(maze: str) -> list[list[int]]:
        return MAZE_MAPS[maze]

    def _make_inner(self, maze: str) -> Any:
        return make_point_maze(maze, continuing=False, maze_map=self.maze_map)

    def _observation(self, obs: dict) -> np.ndarray:
        return obs["observation"].copy()

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """The evaluation start; ``options={"reset_cell": (row, col)}`` starts elsewhere (data
        collection), the goal stays the task's."""
        super().reset(seed=seed)
        start = (options or {}).get("reset_cell", self.eval_start[self.maze])
        obs, _ = self._env.reset(
            seed=seed,
            options={
                "goal_cell": np.array(self.eval_goal[self.maze]),
                "reset_cell": np.array(start),
            },
        )
        # gymnasium-robotics adds noise to the goal too; the task's goal is the cell centre.
        self._env.goal = self.goal_xy.copy()
        self._env.update_target_site_pos()
        return self._observation(obs), {"success": False}

    def step(self, action):
        obs, _, _, truncated, _ = self._env.step(action)
        distance = np.linalg.norm(obs["achieved_goal"] - self.goal_xy)
        success = bool(distance <= self.success_radius)
        return self._observation(obs), float(success), success, truncated, {"success": success}

    def close(self) -> None:
        self._env.close()


# AntMaze (gymnasium-robotics, cells 4 m wide) with D4RL's start and goal cells and time
# limits, for Minari's AntMaze data (recorded in gymnasium-robotics' coordinates). The
# observation is D4RL's layout: the torso's (x, y) followed by gymnasium-robotics'
# 27-dimensional ant observation (29 in all), since the goal is fixed and not observed.
ANTMAZE_EVAL_START = {"umaze": (1, 1), "medium": (1, 1), "large": (1, 1)}
ANTMAZE_EVAL_GOAL = {"umaze": (3, 1), "medium": (6, 6), "large": (7, 9)}
ANTMAZE_MAX_EPISODE_STEPS = {"umaze": 700, "medium": 1000, "large": 1000}
ANT_GYM_NAMES = {
    "umaze": "O2OAntMaze_UMaze-v0",
    "medium": "O2OAntMaze_Medium-v0",
    "large": "O2OAntMaze_Large-v0",
}


def antmaze_env_id(maze: str) -> str:
    return f"{__name__}:{ANT_GYM_NAMES[maze]}"


def antmaze_env_for(env_id: str) -> str | None:
    """o2o's AntMaze evaluation env for a gymnasium-robotics id ('AntMaze_UMaze-v4' ...)."""
    name = env_id.split(":")[-1].split("-")[0]
    sizes = {"AntMaze_UMaze": "umaze", "AntMaze_Medium": "medium", "AntMaze_Large": "large"}
    return antmaze_env_id(sizes[name]) if name in sizes else None


def antmaze_observation(obs: dict) -> np.ndarray:
    return np.concatenate([obs["achieved_goal"], obs["observation"]], axis=-1)


class SparseAntMaze(SparsePointMaze):
    eval_start, eval_goal = ANTMAZE_EVAL_START, ANTMAZE_EVAL_GOAL
    obs_dim = 29

    def _make_inner(self, maze: str) -> Any:
        quiet_robotics_notice()
        from gymnasium_robotics.envs.maze.ant_maze_v5 import AntMazeEnv

        # Without contact forces: the 27 + 2 dimensions of D4RL and of Minari's AntMaze data.
        return AntMazeEnv(
            maze_map=self.maze_map,
            reward_type="sparse",
            continuing_task=False,
            reset_target=False,
            include_cfrc_ext_in_observation=False,
        )

    def _observation(self, obs: dict) -> np.ndarray:
        return antmaze_observation(obs)


# D4RL's AntMaze geometry, for D4RL's HDF5 files (recorded in D4RL's own coordinates):
# D4RL lays map rows along +y with the start cell's centre at the origin, gymnasium-robotics
# lays them along -y with the map centred. On the row-flipped map gymnasium-robotics puts the
# walls where D4RL has them, and D4RL's (x, y) is the torso's position minus the start cell's
# centre: a translation, so the ant's own 27 dimensions are the same in both frames.
D4RL_ANT_GYM_NAMES = {
    "umaze": "O2OAntMazeD4RL_UMaze-v0",
    "medium": "O2OAntMazeD4RL_Medium-v0",
    "large": "O2OAntMazeD4RL_Large-v0",
}
D4RL_ANTMAZE_SUCCESS_RADIUS = 0.5  # d4rl/locomotion/ant.py: reward 1 within 0.5 of the goal


def _flipped(cells: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
    return {maze: (len(MAZE_MAPS[maze]) - 1 - r, c) for maze, (r, c) in cells.items()}


def antmaze_d4rl_env_id(maze: str) -> str:
    return f"{__name__}:{D4RL_ANT_GYM_NAMES[maze]}"


class D4RLFrameAntMaze(SparseAntMaze):
    """SparseAntMaze in D4RL's coordinates (D4RL's start and goal cells, 0.5 goal radius)."""

    eval_start, eval_goal = _flipped(ANTMAZE_EVAL_START), _flipped(ANTMAZE_EVAL_GOAL)
    success_radius = D4RL_ANTMAZE_SUCCESS_RADIUS

    def __init__(self, maze: str = "umaze") -> None:
        super().__init__(maze)
        start = np.array(self.eval_start[maze])
        self.origin = np.asarray(self._env.maze.cell_rowcol_to_xy(start), np.float64)

    @staticmethod
    def map_for(maze: str) -> list[list[int]]:
        return MAZE_MAPS[maze][::-1]

    def _observation(self, obs: dict) -> np.ndarray:
        observation = antmaze_observation(obs)
        observation[:2] -= self.origin
        return observation


def _make_sparse_point_maze(maze: str) -> SparsePointMaze:
    return SparsePointMaze(maze)


def _make_sparse_ant_maze(maze: str) -> SparseAntMaze:
    return SparseAntMaze(maze)


def _make_d4rl_ant_maze(maze: str) -> D4RLFrameAntMaze:
    return D4RLFrameAntMaze(maze)


for _maze in MAZE_MAPS:
    for _name, _maker, _limit in (
        (GYM_NAMES[_maze], "_make_sparse_point_maze", MAX_EPISODE_STEPS[_maze]),
        (ANT_GYM_NAMES[_maze], "_make_sparse_ant_maze", ANTMAZE_MAX_EPISODE_STEPS[_maze]),
        (D4RL_ANT_GYM_NAMES[_maze], "_make_d4rl_ant_maze", ANTMAZE_MAX_EPISODE_STEPS[_maze]),
    ):
        if _name not in gym.registry:
            gym.register(
                id=_name,
                entry_point=f"{__name__}:{_maker}",
                kwargs={"maze": _maze},
                max_episode_steps=_limit,
            )


def success_rate(episode_returns: np.ndarray | Sequence[float]) -> float:
    """Fraction of episodes that reached the goal (return 1 in this suite)."""
    returns = np.asarray(episode_returns, np.float64)
    return float((returns > 0).mean()) if returns.size else float("nan")


def cumulative_regret(episode_returns: np.ndarray | Sequence[float]) -> np.ndarray:
    """Running sum of (1 - success) over episodes in order: the online phase's regret."""
    returns = np.asarray(episode_returns, np.float64)
    return np.cumsum(1.0 - (returns > 0))
