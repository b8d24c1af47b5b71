"""Minari dataset directories, built locally (no network)."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest

from o2o.data import env_id_for, load, score_reference

minari = pytest.importorskip("minari")


@pytest.fixture
def minari_root(tmp_path, monkeypatch):
    root = tmp_path / "minari"
    root.mkdir()
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return root


def build(dataset_id: str, episodes: int = 3, steps: int = 20):
    env = minari.DataCollector(gym.make("Pendulum-v1", max_episode_steps=steps))
    for seed in range(episodes):
        env.reset(seed=seed)
        env.action_space.seed(seed)
        while True:
            _, _, terminated, truncated, _ = env.step(env.action_space.sample())
            if terminated or truncated:
                break
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return env.create_dataset(
            dataset_id=dataset_id,
            algorithm_name="random",
            ref_min_score=-1500.0,
            ref_max_score=-100.0,
        )


def test_minari_directory_loads(minari_root):
    source = build("o2otest/pendulum/random-v0")
    episodes = list(source.iterate_episodes())
    directory = minari_root / "o2otest" / "pendulum" / "random-v0"
    data = load(directory)
    assert data.size == 60 and data.num_episodes == 3
    assert data.obs_dim == 3 and data.act_dim == 1
    assert data.metadata["env_checked"] is True and env_id_for(data) == "Pendulum-v1"
    np.testing.assert_allclose(
        data.episode_returns(), [e.rewards.sum() for e in episodes], rtol=1e-5
    )
    first = episodes[0]
    np.testing.assert_allclose(data.observations[:20], first.observations[:-1], rtol=1e-6)
    np.testing.assert_allclose(data.next_observations[:20], first.observations[1:], rtol=1e-6)
    assert data.timeouts[19] and not data.terminals.any()  # Pendulum only truncates
    info = score_reference(data)
    assert info.provenance == "dataset" and (info.ref_min, info.ref_max) == (-1500.0, -100.0)
    assert "Minari" in info.describe()


def test_minari_data_folder_and_local_id_resolve(minari_root):
    build("o2otest/pendulum/random-v0", episodes=2)
    by_data_folder = load(minari_root / "o2otest" / "pendulum" / "random-v0" / "data")
    by_id = load("o2otest/pendulum/random-v0")
    np.testing.assert_array_equal(by_data_folder.rewards, by_id.rewards)


def test_minari_dims_checked_against_given_env(minari_root):
    from o2o.errors import DatasetError

    build("o2otest/pendulum/random-v0", episodes=1)
    with pytest.raises(DatasetError, match="observation dimension 3 does not match env Hopper-v5"):
        load("o2otest/pendulum/random-v0", env="Hopper-v5")


@pytest.mark.filterwarnings("ignore:.*AntMaze_UMaze-v4 is out of date")
def test_minari_antmaze_gets_d4rl_layout_and_o2o_eval_env(minari_root):
    gymnasium_robotics = pytest.importorskip("gymnasium_robotics")
    gym.register_envs(gymnasium_robotics)
    env = minari.DataCollector(gym.make("AntMaze_UMaze-v4", max_episode_steps=15))
    for seed in range(2):
        env.reset(seed=seed)
        env.action_space.seed(seed)
        while True:
            _, _, terminated, truncated, _ = env.step(env.action_space.sample())
            if terminated or truncated:
                break
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        source = env.create_dataset(dataset_id="o2otest/antmaze/umaze-v0", algorithm_name="random")
    first = next(iter(source.iterate_episodes()))

    data = load("o2otest/antmaze/umaze-v0")
    assert data.obs_dim == 29 and data.act_dim == 8 and data.size == 30
    np.testing.assert_allclose(
        data.observations[:15, :2], first.observations["achieved_goal"][:-1], rtol=1e-6
    )
    np.testing.assert_allclose(
        data.observations[:15, 2:], first.observations["observation"][:-1], rtol=1e-6
    )
    assert data.metadata["minari_env_id"] == "AntMaze_UMaze-v4"
    assert env_id_for(data) == "o2o.envs.maze:O2OAntMaze_UMaze-v0"
    assert data.metadata["env_checked"] is True  # 29 dims and actions in [-1, 1]
    info = score_reference(data)  # no references in the Minari metadata: D4RL's AntMaze 0 / 1
    assert info.provenance == "d4rl" and (info.ref_min, info.ref_max) == (0.0, 1.0)
    evaluation = gym.make(env_id_for(data))
    observation, _ = evaluation.reset(seed=0)
    assert observation.shape == (29,) and evaluation.spec.max_episode_steps == 700
    evaluation.close()
