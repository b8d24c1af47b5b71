"""PointMaze sparse-reward suite: env, scripted controller, tiny datasets."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip("gymnasium_robotics")

from o2o.data import load, normalized_score, save, score_reference  # noqa: E402
from o2o.data.cli import main  # noqa: E402
from o2o.data.maze_data import make_maze_dataset, parse_maze_name  # noqa: E402
from o2o.envs.maze import (  # noqa: E402
    EVAL_GOAL,
    MAZE_MAPS,
    WaypointController,
    bfs_distances,
    cell_center,
    cell_of,
    cumulative_regret,
    maze_env_id,
    success_rate,
)


def test_grid_geometry_and_bfs():
    umaze = MAZE_MAPS["umaze"]
    for cell in [(1, 1), (3, 3), (2, 3)]:
        assert cell_of(umaze, cell_center(umaze, cell)) == cell
    distances = bfs_distances(umaze, (1, 1))
    assert distances[(3, 1)] == 6  # around the U
    assert (2, 1) not in distances  # a wall


def test_eval_env_sparse_reward_and_termination():
    env = gym.make(maze_env_id("umaze"))
    assert env.spec.max_episode_steps == 300
    observation, _ = env.reset(seed=0)
    assert observation.shape == (4,)
    # standing still never succeeds: reward 0, no termination, truncation at the limit
    total, steps = 0.0, 0
    while True:
        observation, reward, terminated, truncated, info = env.step(np.zeros(2, np.float32))
        total, steps = total + reward, steps + 1
        if terminated or truncated:
            break
    assert total == 0.0 and truncated and not terminated and steps == 300
    # the noiseless controller reaches the goal: reward 1 once, then termination
    controller = WaypointController(MAZE_MAPS["umaze"], np.random.default_rng(0), noise_std=0.0)
    goal_xy = cell_center(MAZE_MAPS["umaze"], EVAL_GOAL["umaze"])
    observation, _ = env.reset(seed=1)
    for _ in range(300):
        observation, reward, terminated, truncated, info = env.step(
            controller(observation, EVAL_GOAL["umaze"], goal_xy)
        )
        if terminated or truncated:
            break
    assert terminated and reward == 1.0 and info["success"]
    env.close()


def test_success_rate_and_regret():
    returns = [0.0, 1.0, 1.0, 0.0]
    assert success_rate(returns) == 0.5
    np.testing.assert_array_equal(cumulative_regret(returns), [1, 1, 1, 2])


@pytest.mark.parametrize("variant", ["play", "diverse"])
def test_tiny_maze_dataset(tmp_path, variant):
    name = f"pointmaze-umaze-{variant}"
    data = make_maze_dataset(name, transitions=1500, seed=3, eval_episodes=2)
    assert data.size == 1500 and data.obs_dim == 4 and data.act_dim == 2
    assert np.all(np.abs(data.actions) <= 1.0)
    # sparse reward: 1 exactly on terminal rows (success), 0 elsewhere
    np.testing.assert_array_equal(data.rewards, data.terminals.astype(np.float32))
    assert data.terminals.sum() > 0 and data.episode_complete.all()
    assert data.metadata["controller_success_rate"] == 1.0
    returns = data.episode_returns()
    assert set(np.unique(returns)) <= {0.0, 1.0}
    assert score_reference(data).provenance == "dataset"
    assert normalized_score(data, returns.mean()) == pytest.approx(
        100 * data.metadata["data_episode_success_rate"]
    )
    # deterministic given the seed
    again = make_maze_dataset(name, transitions=1500, seed=3, eval_episodes=2)
    np.testing.assert_array_equal(again.observations, data.observations)
    # saved file loads and passes the env check (dims and action bounds)
    path = tmp_path / f"{name}-v0.hdf5"
    save(data, str(path))
    loaded = load(path)
    assert loaded.metadata["env_checked"] is True and loaded.metadata["env_id"] == maze_env_id(
        "umaze"
    )


def test_maze_make_via_cli_into_data_dir(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("O2O_DATA_DIR", str(tmp_path))
    assert main(["make", "pointmaze-medium-diverse", "--transitions", "800"]) == 0
    assert (tmp_path / "pointmaze-medium-diverse-v0.hdf5").exists()
    assert load("pointmaze-medium-diverse").size == 800


def test_bad_maze_name():
    with pytest.raises(ValueError, match="not a maze dataset name"):
        parse_maze_name("pointmaze-huge-play")
