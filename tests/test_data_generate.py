"""The D4RL-recipe generator on a cheap env with a tiny budget: levels, metadata,
determinism, and resuming a killed run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from o2o.data import load, score_reference
from o2o.data.generate import GeneratorConfig, TrainResult, make_lite, make_suite, train_sac
from o2o.errors import ConfigError

TINY = GeneratorConfig(
    train_steps=600,
    eval_every=200,
    eval_episodes=2,
    ref_episodes=2,
    warmup=100,
    transitions=300,
    batch_size=32,
    update_every=50,
    hidden_dims=(32, 32),
    seed=3,
)
LEVELS = ("random", "medium", "medium-replay", "expert", "medium-expert")
COLUMNS = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")


def test_medium_is_the_first_checkpoint_reaching_a_third_of_the_best():
    result = TrainResult([10, 20, 30, 40], [100.0, 400.0, 900.0, 350.0], {}, {}, 0.0)
    assert result.best == (30, 900.0)
    assert result.medium(1 / 3) == (20, 400.0, 300.0)
    negative = TrainResult([10, 20, 30], [-900.0, -300.0, -100.0], {}, {}, 0.0)
    step, _, threshold = negative.medium(1 / 3)
    assert step == 20 and threshold == pytest.approx(-900 + 800 / 3)


def test_config_is_checked():
    with pytest.raises(ConfigError, match="multiple of eval_every"):
        GeneratorConfig(train_steps=1000, eval_every=300, update_every=50)
    with pytest.raises(ConfigError, match="transitions must be positive"):
        GeneratorConfig(transitions=0)
    with pytest.raises(ConfigError, match="cannot make 'ant-medium-lite'"):
        make_lite("ant-medium-lite", TINY)


def test_generator_smoke_determinism_and_resume(tmp_path):
    uninterrupted = make_suite(
        "pendulum", "Pendulum-v1", TINY, tmp_path / "a", tmp_path / "a" / "work"
    )
    assert set(uninterrupted) == set(LEVELS)
    data = {level: load(path) for level, path in uninterrupted.items()}
    for level, dataset in data.items():
        assert dataset.metadata["env_checked"] is True, level
        assert (
            dataset.metadata["level"] == level
            and dataset.metadata["dataset"] == f"pendulum-{level}-lite-v0"
        )
        assert np.all(np.abs(dataset.actions) <= 1.0)
        info = score_reference(dataset)
        assert info.provenance == "dataset" and info.ref_max > info.ref_min
        assert len(dataset.metadata["eval_curve"]) == 3
    for level in ("random", "medium", "expert"):
        assert data[level].size == TINY.transitions
        assert data[level].episode_complete.all()  # the cut last episode ends in a timeout
        assert "qpos" not in data[level].infos  # Pendulum is not a MuJoCo env
    meta = data["medium"].metadata
    assert data["medium-replay"].size == meta["medium_step"]
    assert (
        meta["policy_step"] == meta["medium_step"]
        and data["expert"].metadata["policy_step"] == meta["best_step"]
    )
    curve = dict((int(s), r) for s, r in meta["eval_curve"])
    assert curve[meta["best_step"]] == max(curve.values())
    for column in COLUMNS:
        np.testing.assert_array_equal(
            getattr(data["medium-expert"], column),
            np.concatenate([getattr(data["medium"], column), getattr(data["expert"], column)]),
        )

    # A run killed after its first checkpoint, then made again, equals the uninterrupted one.
    work_b = tmp_path / "b" / "work"
    partial = train_sac("Pendulum-v1", TINY, work_b, stop_after_step=200)
    assert partial.eval_steps == [200] and not partial.extra["completed"]
    resumed = make_suite("pendulum", "Pendulum-v1", TINY, tmp_path / "b", work_b)
    for level in LEVELS:
        again = load(resumed[level])
        for column in COLUMNS:
            np.testing.assert_array_equal(
                getattr(again, column), getattr(data[level], column), err_msg=f"{level} {column}"
            )
        assert again.metadata["eval_curve"] == data[level].metadata["eval_curve"]

    # Present files are skipped; the work dir refuses other training settings.
    before = Path(uninterrupted["expert"]).stat().st_mtime_ns
    make_suite("pendulum", "Pendulum-v1", TINY, tmp_path / "a", tmp_path / "a" / "work")
    assert Path(uninterrupted["expert"]).stat().st_mtime_ns == before
    other = GeneratorConfig(**{**TINY.__dict__, "warmup": 50})
    with pytest.raises(ConfigError, match="other settings"):
        make_suite("pendulum", "Pendulum-v1", other, tmp_path / "c", work_b)
