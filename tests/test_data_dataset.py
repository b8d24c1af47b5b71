"""The Dataset type: episodes, Monte-Carlo returns, conversion, own-format round trip."""

from __future__ import annotations

import os

import numpy as np
import pytest

from o2o.core.types import Transition
from o2o.data import Dataset, concatenate, load, read_hdf5, save, write_hdf5


def tiny(rewards, terminals, timeouts, obs_dim=2) -> Dataset:
    n = len(rewards)
    obs = np.arange(n * obs_dim, dtype=np.float32).reshape(n, obs_dim)
    return Dataset(
        observations=obs,
        actions=np.zeros((n, 1), np.float32),
        rewards=np.asarray(rewards, np.float32),
        next_observations=obs + 1,
        terminals=np.asarray(terminals, bool),
        timeouts=np.asarray(timeouts, bool),
        metadata={"dataset": "tiny", "env_id": "Pendulum-v1"},
    )


# episode 1: rows 0-2 terminal; episode 2: rows 3-4 timeout; rows 5-6: incomplete tail
REWARDS = [1, 2, 3, 10, 20, 5, 5]
TERMINALS = [0, 0, 1, 0, 0, 0, 0]
TIMEOUTS = [0, 0, 0, 0, 1, 0, 0]


def test_episode_boundaries_and_returns():
    data = tiny(REWARDS, TERMINALS, TIMEOUTS)
    np.testing.assert_array_equal(data.episode_starts, [0, 3, 5])
    np.testing.assert_array_equal(data.episode_ends, [3, 5, 7])
    np.testing.assert_array_equal(data.episode_complete, [True, True, False])
    assert data.num_episodes == 2
    np.testing.assert_allclose(data.episode_returns(), [6, 30])
    np.testing.assert_allclose(data.episode_returns(include_incomplete=True), [6, 30, 10])
    np.testing.assert_array_equal(data.episode_lengths(), [3, 2])
    stats = data.statistics()
    assert stats["episodes"] == 2 and stats["incomplete_episodes"] == 1
    assert stats["return_mean"] == pytest.approx(18.0)


def test_mc_returns_cal_ql_convention():
    data = tiny(REWARDS, TERMINALS, TIMEOUTS)
    g = 0.5
    expected = [
        1 + g * (2 + g * 3),
        2 + g * 3,
        3,  # terminal: nothing after
        10 + g * 20,
        20,  # timeout: no bootstrap in a Monte-Carlo return
        5 + g * 5,
        5,
    ]
    np.testing.assert_allclose(data.mc_returns(g), expected, rtol=1e-6)
    np.testing.assert_allclose(data.mc_returns(1.0)[:3], [6, 5, 3])


def test_mc_returns_sparse_failure_episodes_are_infinite_horizon():
    data = tiny([-1, -1, -1, -1, 0], [0, 0, 0, 0, 1], [0, 0, 1, 0, 0])
    returns = data.mc_returns(0.9, sparse_failure_reward=-1.0)
    np.testing.assert_allclose(returns[:3], [-10, -10, -10], rtol=1e-6)  # never succeeded
    np.testing.assert_allclose(returns[3:], [-1 + 0.9 * 0, 0], atol=1e-6)  # succeeded
    with pytest.raises(ValueError, match="discount"):
        data.mc_returns(1.5)


def test_to_transition():
    data = tiny(REWARDS, TERMINALS, TIMEOUTS)
    batch = data.to_transition()
    assert isinstance(batch, Transition)
    columns = [c for c in batch if c is not None]  # policy_inputs: a method's, not data
    assert all(isinstance(c, np.ndarray) and c.dtype == np.float32 for c in columns)
    np.testing.assert_array_equal(batch.terminals, TERMINALS)
    np.testing.assert_array_equal(batch.mc_returns, 0)
    np.testing.assert_allclose(data.to_transition(discount=0.5).mc_returns, data.mc_returns(0.5))


def test_concatenate_closes_open_tail():
    a = tiny(REWARDS, TERMINALS, TIMEOUTS)
    b = tiny([1, 1], [0, 0], [0, 1])
    joined = concatenate([a, b], metadata={"dataset": "joined"})
    assert joined.size == 9 and joined.timeouts[6]  # a's incomplete tail is closed
    np.testing.assert_allclose(joined.episode_returns(), [6, 30, 10, 2])
    assert joined.metadata == {"dataset": "joined"}


def test_own_format_round_trip(tmp_path):
    data = tiny(REWARDS, TERMINALS, TIMEOUTS).replace(
        infos={"qpos": np.ones((7, 3), np.float32)},
        metadata={
            "dataset": "tiny",
            "env_id": "Pendulum-v1",
            "ref_min_score": -1.5,
            "ref_max_score": 2,
            "eval_curve": [[1, 2.5], [2, 3.5]],
            "settings": {"a": 1},
            "flag": True,
        },
    )
    path = tmp_path / "sub" / "tiny.hdf5"
    save(data, str(path))
    back = load(path, check_env=False)
    for column in (
        "observations",
        "actions",
        "rewards",
        "next_observations",
        "terminals",
        "timeouts",
    ):
        np.testing.assert_array_equal(getattr(back, column), getattr(data, column))
    np.testing.assert_array_equal(back.infos["qpos"], data.infos["qpos"])
    assert back.metadata["eval_curve"] == [[1, 2.5], [2, 3.5]]
    assert back.metadata["settings"] == {"a": 1}
    assert back.metadata["ref_max_score"] == 2 and back.metadata["flag"] is True
    assert back.metadata["format"].startswith("o2o-d4rl-hdf5")
    # no temp files left behind
    assert [p.name for p in path.parent.iterdir()] == ["tiny.hdf5"]


def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    data = tiny(REWARDS, TERMINALS, TIMEOUTS).replace(metadata={"bad": object()})
    path = tmp_path / "x.hdf5"
    with pytest.raises(TypeError):
        write_hdf5(data, path)
    assert not path.exists() and os.listdir(tmp_path) == []


def test_select_keeps_infos():
    data = tiny(REWARDS, TERMINALS, TIMEOUTS).replace(infos={"qpos": np.arange(7.0)})
    part = data.select(slice(0, 3))
    assert part.size == 3 and part.infos["qpos"].tolist() == [0, 1, 2]


def test_read_hdf5_records_source(tmp_path):
    path = tmp_path / "t.hdf5"
    write_hdf5(tiny(REWARDS, TERMINALS, TIMEOUTS), path)
    assert read_hdf5(path).metadata["source"] == str(path)
