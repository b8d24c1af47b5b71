"""O2SAC (o2o/finetune/o2sac.py): the FQE target, the alignment target and retain loss, the
KL penalty in the critic target and the actor loss, against NumPy float64; the CQL → SAC
hand-over; a CLI run; resume inside each phase (slow)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from o2o.core.engine import unstack_seeds
from o2o.core.hooks import ActorInputs, TargetInputs
from o2o.experiment.runs import RunDir
from o2o.finetune.o2sac import alignment_targets
from tests.helpers import (
    mlp_forward,
    ocr_resume_check,
    ocr_started,
    q_values,
    tiny_ocr_spec,
)


@pytest.fixture(scope="module")
def small_hopper():
    from o2o import data as datasets

    return datasets.load("hopper-medium-lite").select(slice(0, 1000))


def np_policy(params, obs):
    """CORL's CQL actor in float64: (mean, log-std)."""
    out = mlp_forward({k: v for k, v in params["MLP_0"].items()}, obs)
    mean, raw = np.split(out, 2, axis=-1)
    m, o = float(params["log_std_multiplier"]), float(params["log_std_offset"])
    return mean, np.clip(m * raw + o, -20.0, 2.0)


def np_log_prob(mean, log_std, pre_tanh):
    std = np.exp(log_std)
    gauss = -0.5 * (((pre_tanh - mean) / std) ** 2 + 2 * log_std + np.log(2 * np.pi))
    return np.sum(gauss - np.log(1 - np.tanh(pre_tanh) ** 2), axis=-1)


def np_log_prob_of(params, obs, actions):
    mean, log_std = np_policy(params, obs)
    pre = np.arctanh(np.clip(np.asarray(actions, np.float64), -1 + 1e-6, 1 - 1e-6))
    return np_log_prob(mean, log_std, pre)


def as_np(tree):
    return jax.tree.map(lambda x: np.asarray(x, np.float64), tree)


def test_fqe_target_matches_numpy(small_hopper):
    pipeline, state, batch = ocr_started(small_hopper, "o2sac")
    method, agent = pipeline.methods.methods[0], pipeline.finetune_agent
    key = jax.random.PRNGKey(3)
    got = np.asarray(method.fqe_target(agent, state, batch, key), np.float64)
    reference = as_np(state.extras["o2sac"]["reference"])
    next_obs = np.asarray(batch.next_observations, np.float64)
    mean, log_std = np_policy(reference, next_obs)
    noise = np.asarray(jax.random.normal(key, mean.shape), np.float64)  # the same draw
    pre = mean + np.exp(log_std) * noise
    next_q = q_values(as_np(state.target_critic_params), next_obs, np.tanh(pre)).min(axis=0)
    r, d = np.asarray(batch.rewards, np.float64), np.asarray(batch.terminals, np.float64)
    expected = r + 0.99 * (1 - d) * (next_q - 0.2 * np_log_prob(mean, log_std, pre))
    np.testing.assert_allclose(got, expected, rtol=2e-4, atol=2e-4)


def test_alignment_target_by_hand():
    q_anchor, alpha = jnp.array([5.0, 5.0, -3.0]), 0.2
    log_anchor, log_sampled = jnp.array([1.0, 1.0, 0.5]), jnp.array([-1.0, -1.0, 0.5])
    q_sampled = jnp.array([4.5, 10.0, 0.0])
    # min(5 − 0.2·(1 − (−1)), 4.5) = 4.5; min(4.6, 10) = 4.6; min(−3 − 0, 0) = −3
    got = alignment_targets(q_anchor, q_sampled, log_anchor, log_sampled, alpha)
    np.testing.assert_allclose(np.asarray(got), [4.5, 4.6, -3.0], rtol=1e-6)


def test_alignment_retain_loss_and_frozen_targets(small_hopper):
    pipeline, state, batch = ocr_started(small_hopper, "o2sac")
    method, agent = pipeline.methods.methods[0], pipeline.finetune_agent
    new, metrics = method.alignment_update(agent, state, batch, jax.random.PRNGKey(5))
    obs = np.asarray(batch.observations, np.float64)
    mean, _ = np_policy(as_np(state.extras["o2sac"]["reference"]), obs)
    anchor = np.tanh(mean)
    q_anchor = q_values(as_np(state.target_critic_params), obs, anchor).min(axis=0)
    q_members = q_values(as_np(state.critic.params), obs, anchor)
    retain = np.sum(np.mean((q_members - q_anchor[None]) ** 2, axis=-1))
    np.testing.assert_allclose(float(metrics["o2sac/retain_loss"]), retain, rtol=1e-4)
    assert float(metrics["o2sac/retain_loss"]) > 0
    # Target critics frozen; critic and actor stepped.
    for x, y in zip(
        jax.tree.leaves(new.target_critic_params),
        jax.tree.leaves(state.target_critic_params),
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    changed = lambda a, b: any(  # noqa: E731
        not np.array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )
    assert changed(new.critic.params, state.critic.params)
    assert changed(new.actor.params, state.actor.params)


def test_kl_penalty_in_target_and_actor_loss(small_hopper):
    pipeline, state, batch = ocr_started(small_hopper, "o2sac")
    method = pipeline.methods.methods[0]
    own = dict(state.extras["o2sac"])
    own["log_lambda"] = jnp.log(jnp.float32(2.0))
    # A reference that differs from π: its mean layer shifted.
    own["reference"] = jax.tree.map(lambda x: x + 0.05, own["reference"])
    state = state.replace(extras={"o2sac": own})
    rng = np.random.default_rng(0)
    actions = jnp.asarray(np.tanh(rng.normal(size=batch.actions.shape)), jnp.float32)
    log_probs = jnp.asarray(rng.normal(size=batch.rewards.shape), jnp.float32)
    next_value = jnp.asarray(rng.normal(size=batch.rewards.shape), jnp.float32)
    inputs = TargetInputs(
        batch, next_value, None, jax.random.PRNGKey(0), actions, log_probs, agent_state=state
    )
    got = np.asarray(method.next_value(own, inputs), np.float64)
    ref = np_log_prob_of(as_np(own["reference"]), np.asarray(batch.next_observations), actions)
    divergence = np.asarray(log_probs, np.float64) - np.maximum(ref, -50.0)
    np.testing.assert_allclose(got, np.asarray(next_value) - 2.0 * divergence, rtol=1e-4, atol=1e-4)
    penalty, _ = method.actor_penalty(own, ActorInputs(batch, actions, log_probs, None, state))
    ref = np_log_prob_of(as_np(own["reference"]), np.asarray(batch.observations), actions)
    expected = 2.0 * np.mean(np.asarray(log_probs, np.float64) - np.maximum(ref, -50.0))
    np.testing.assert_allclose(float(penalty), expected, rtol=1e-4, atol=1e-4)
    # Without the constraint: the base values, no penalty.
    off = pipeline.methods.methods[0].__class__(
        method.config.__class__(**{**method.config.__dict__, "constrain": False}), 11, 3
    )
    np.testing.assert_array_equal(np.asarray(off.next_value(own, inputs)), np.asarray(next_value))


def test_cql_actor_handed_to_sac_with_fresh_critic(small_hopper):
    pipeline, state, _ = ocr_started(small_hopper, "o2sac")
    offline, _ = pipeline.initial_states()
    offline_actor = unstack_seeds(offline)[0].actor.params
    for x, y in zip(
        jax.tree.leaves(offline_actor), jax.tree.leaves(state.actor.params), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert pipeline.describe()["online_algo"] == "sac" and pipeline.policy == "mixed"
    online = pipeline.online_config()
    assert (online.utd, online.update_after) == (10, 1)  # 1% of 100 online steps
    assert [p.name for p in pipeline.phases_before_online] == [
        "o2sac_reevaluation",
        "o2sac_alignment",
    ]
    no_pr = tiny_ocr_spec(small_hopper, "o2sac-no-pr").build(small_hopper)
    assert [p.name for p in no_pr.phases_before_online] == ["o2sac_alignment"]
    no_va = tiny_ocr_spec(small_hopper, "o2sac-no-va").build(small_hopper)
    assert [p.name for p in no_va.phases_before_online] == ["o2sac_reevaluation"]


@pytest.mark.slow
def test_o2sac_killed_in_each_phase_resumes_identically(tmp_path, small_hopper, monkeypatch):
    # Saves: offline 100, offline.msgpack, reevaluation 25 | 50, alignment 25 | 50,
    # finetune_start, online 50 | 100. Killed after reevaluation 25, then (resumed) after
    # online 50, the first online evaluation with its reference replacement; the kill inside
    # alignment is O2TD3's test (the phases' resume is shared).
    full, where = ocr_resume_check(tmp_path, small_hopper, "o2sac", monkeypatch, kills=(3, 5))
    assert where == ["o2sac_reevaluation", "online"]
    phases = [(r["phase"], r["step"]) for r in full.rows]
    assert ("o2sac_reevaluation", 25) in phases and ("o2sac_alignment", 50) in phases
    online = [r for r in full.rows if r["phase"] == "online"]
    assert online and "train/o2sac/lambda" in online[-1] and online[-1]["updates"] == 1000


@pytest.mark.slow
def test_cli_o2sac_runs_end_to_end(tmp_path):
    from o2o.cli import main

    argv = [
        "train",
        "--dataset",
        "hopper-medium-lite",
        "--algo",
        "cql",
        "--finetune",
        "o2sac",
        "--offline-steps",
        "100",
        "--online-steps",
        "100",
        "--eval-episodes",
        "1",
        "--batch-size",
        "32",
        "--set",
        "actor_hidden_dims=[16,16,16]",
        "--set",
        "critic_hidden_dims=[16]",
        "--online-set",
        "actor_hidden_dims=[16,16,16]",
        "--online-set",
        "critic_hidden_dims=[16]",
        "--runs-dir",
        str(tmp_path),
        "--name",
        "r",
        "--no-progress",
    ]
    assert main(argv) == 0
    run = RunDir(tmp_path / "r")
    phases = [r["phase"] for r in run.rows()]
    assert phases[:3] == ["offline", "o2sac_reevaluation", "o2sac_alignment"]
    assert phases[-1] == "online"
    events = {r["phase"] for r in run.rows("finetune.jsonl")}
    assert {"o2sac_ranking", "o2sac_initial_reference", "o2sac_reference"} <= events
    assert run.config()["online_agent"]["algo"] == "sac"
