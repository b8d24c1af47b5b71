"""The online trainer: determinism, vmapped seeds, resume after a crash, evaluation."""

import json
import time

import jax
import numpy as np
import pytest

from o2o.agents import SACConfig, TD3Config
from o2o.core import buffers as buf
from o2o.core.engine import compile_fused, fused_update, seed_keys, stack_seeds
from o2o.envs.evaluation import EnvGrid, evaluate
from o2o.experiment.online import OnlineConfig, OnlineTrainer, config_dict
from o2o.experiment.runs import RunDir
from tests.helpers import tiny_batch

SMALL = SACConfig(hidden_dims=(32, 32))


def small_online(**kw) -> OnlineConfig:
    base = dict(
        env="Pendulum-v1",
        steps=400,
        random_steps=100,
        update_after=100,
        update_every=50,
        eval_every=200,
        eval_episodes=2,
    )
    return OnlineConfig(**{**base, **kw})


def leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def run_trainer(agent_config, online, run=None, resume=False, on_eval=None):
    trainer = OnlineTrainer(agent_config.create(), online)
    try:
        return trainer.run(run, resume=resume, on_eval=on_eval, progress=False)
    finally:
        trainer.close()


def test_same_seed_gives_identical_parameters():
    a = run_trainer(SMALL, small_online(steps=200))
    b = run_trainer(SMALL, small_online(steps=200))
    for x, y in zip(leaves(a.states), leaves(b.states), strict=True):
        np.testing.assert_array_equal(x, y)
    c = run_trainer(SMALL, small_online(steps=200, seed=1))
    assert not all(
        np.array_equal(x, y) for x, y in zip(leaves(a.states), leaves(c.states), strict=True)
    )


def test_vmapped_seeds_equal_separate_runs():
    together = run_trainer(SMALL, small_online(steps=200, seeds=2, seed=3))
    alone = [run_trainer(SMALL, small_online(steps=200, seeds=1, seed=s)) for s in (3, 4)]
    for i, single in enumerate(alone):
        for x, y in zip(leaves(together.states), leaves(single.states), strict=True):
            np.testing.assert_allclose(x[i], y[0], rtol=2e-4, atol=2e-5)
        np.testing.assert_allclose(
            together.rows[-1]["seed_returns"][i], single.rows[-1]["seed_returns"][0], rtol=1e-3
        )


def test_fused_scan_equals_sequential_updates():
    agent = TD3Config(hidden_dims=(16,)).create()
    state = agent.init(jax.random.PRNGKey(0), 3, 2)
    data = {"replay": buf.buffer_from_transitions(tiny_batch(np.random.default_rng(0), 64, 3, 2))}
    sampler = buf.Sampler(16)
    fused, _, _ = compile_fused(agent.update, sampler, 4, seed_axis=False)(
        jax.tree.map(lambda x: x.copy(), state), data, jax.random.PRNGKey(1)
    )
    one = jax.jit(fused_update(agent.update, sampler, 1))
    seq, key = state, jax.random.PRNGKey(1)
    for _ in range(4):
        seq, key, _ = one(seq, data, key)
    for x, y in zip(leaves(fused), leaves(seq), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


class Crash(Exception):
    pass


def test_resumed_run_equals_uninterrupted_run(tmp_path):
    online = small_online(steps=600)
    config = config_dict("sac", SMALL, online)
    full_run = RunDir.create(tmp_path / "full", config)
    full = run_trainer(SMALL, online, full_run)

    crashed = RunDir.create(tmp_path / "crashed", config)

    def crash_at_400(row):
        if row["step"] == 400:
            raise Crash

    with pytest.raises(Crash):
        run_trainer(SMALL, online, crashed, on_eval=crash_at_400)
    assert [r["step"] for r in crashed.rows()] == [200, 400]
    resumed = run_trainer(
        SMALL, online, RunDir.create(tmp_path / "crashed", {}, resume=True), resume=True
    )

    for x, y in zip(leaves(full.states), leaves(resumed.states), strict=True):
        np.testing.assert_array_equal(x, y)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "wall_time"} for r in rows]  # noqa: E731
    assert strip(full_run.rows()) == strip(crashed.rows())
    assert [r["step"] for r in crashed.rows()] == [200, 400, 600]


def test_resume_drops_rows_logged_after_the_checkpoint(tmp_path):
    online = small_online(steps=400)
    run = RunDir.create(tmp_path / "r", config_dict("sac", SMALL, online))

    def crash(row):
        raise Crash

    with pytest.raises(Crash):
        run_trainer(SMALL, online, run, on_eval=crash)
    # A row written after the checkpoint (a crash between the two) must not survive a resume.
    run.append("metrics.jsonl", {"step": 999, "return": 0.0})
    run_trainer(SMALL, online, run, resume=True)
    assert [r["step"] for r in run.rows()] == [200, 400]


def test_run_dir_refuses_to_overwrite(tmp_path):
    RunDir.create(tmp_path / "x", {"a": 1})
    from o2o.errors import O2OError

    with pytest.raises(O2OError, match="already exists"):
        RunDir.create(tmp_path / "x", {"a": 2})
    assert (tmp_path / "x" / "config.yaml").read_text().strip() == "a: 1"


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    from o2o.errors import O2OError

    online = small_online(steps=200)
    run = RunDir.create(tmp_path / "r", config_dict("sac", SMALL, online))
    run_trainer(SMALL, online, run)
    run.checkpoint_path.write_bytes(b"not msgpack at all")
    with pytest.raises(O2OError, match="corrupt"):
        run_trainer(SMALL, online, run, resume=True)


def test_evaluation_over_a_grid_of_envs():
    grid = EnvGrid("Pendulum-v1", 2, 3)
    calls = []

    def policy(obs):
        calls.append(obs.shape)
        return np.zeros((*obs.shape[:2], 1), np.float32)

    result = evaluate(grid, policy, seed=[0, 100])
    grid.close()
    assert result.returns.shape == (2, 3) and result.mean_return.shape == (2,)
    assert (result.lengths == 200).all()
    assert len(calls) == 200 and calls[0] == (2, 3, 3)  # one batched call per step
    assert result.success_rate is None
    assert (result.returns < 0).all()
    # Different episodes start from different states.
    assert len(np.unique(np.round(result.returns, 3))) == 6


def test_metrics_rows_are_jsonl_with_step_and_return(tmp_path):
    online = small_online(steps=400)
    run = RunDir.create(tmp_path / "r", config_dict("sac", SMALL, online))
    run_trainer(SMALL, online, run)
    lines = (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert [r["step"] for r in rows] == [200, 400]
    assert all(
        {"step", "wall_time", "return", "seed_returns", "train/critic_loss"} <= set(r)
        for r in rows[1:]
    )
    assert (tmp_path / "r" / "episodes.jsonl").exists()


def test_seed_keys_are_per_seed():
    keys = seed_keys(5, 3)
    np.testing.assert_array_equal(keys[1], jax.random.PRNGKey(6))
    stacked = stack_seeds([{"a": np.ones(2)}, {"a": np.zeros(2)}])
    assert stacked["a"].shape == (2, 2)


def test_loop_sections_account_for_the_run():
    trainer = OnlineTrainer(SMALL.create(), small_online(steps=200))
    try:
        start = time.perf_counter()
        result = trainer.run(progress=False)
        wall = time.perf_counter() - start
    finally:
        trainer.close()
    seconds = result.section_seconds
    assert {"act", "env", "buffer", "updates", "eval", "other"} <= set(seconds)
    assert all(v >= 0 for v in seconds.values())
    # The laps cover the loop from its first step to its last evaluation: all of run() but
    # the setup before the first step.
    assert 0.5 * wall < sum(seconds.values()) <= wall


@pytest.mark.parametrize(
    ("random_steps", "warmup_steps", "uniform_steps"), [(0, 100, 0), (100, 0, 100), (50, 100, 50)]
)
def test_warm_up_steps_act_with_the_policy(random_steps, warmup_steps, uniform_steps):
    """SAMG's seed transitions (warm-up, before step 0) come from the offline policy; only the
    budget's first ``random_steps`` are uniform."""
    online = small_online(
        steps=100, random_steps=random_steps, update_after=0, warmup_steps=warmup_steps
    )
    trainer = OnlineTrainer(SMALL.create(), online)
    explore, flags = trainer._explore, []

    def recording(states, observations, keys, uniform):
        flags.append(bool(uniform))
        return explore(states, observations, keys, uniform)

    trainer._explore = recording
    try:
        trainer.run(None, progress=False)
    finally:
        trainer.close()
    assert len(flags) == warmup_steps + 100
    assert flags == [False] * warmup_steps + [True] * uniform_steps + [False] * (
        100 - uniform_steps
    )
