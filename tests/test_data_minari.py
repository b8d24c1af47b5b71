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
