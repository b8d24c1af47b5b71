"""O2TD3 (o2o/finetune/o2td3.py): the FQE target, the distance-shaped alignment target with
negative Q, the distance penalty in the critic target and the actor loss, TD3's 1/mean|Q|
actor normalisation, against NumPy float64; the TD3+BC → TD3 hand-over (target actor
included); a CLI run; resume inside each phase (slow)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from o2o.core.hooks import ActorInputs, TargetInputs
from o2o.experiment.runs import RunDir
from o2o.finetune.o2td3 import action_distance, shaped_anchor
from tests.helpers import mlp_forward, ocr_resume_check, ocr_started, q_values


@pytest.fixture(scope="module")
def small_hopper():
    from o2o import data as datasets

    return datasets.load("hopper-medium-lite").select(slice(0, 1000))


def as_np(tree):
    return jax.tree.map(lambda x: np.asarray(x, np.float64), tree)


def np_actor(params, obs):
    return np.tanh(mlp_forward(params["MLP_0"], np.asarray(obs, np.float64)))


def smoothed(actions, key):
    noise = np.asarray(jax.random.normal(key, actions.shape), np.float64)  # the same draw
    return np.clip(actions + np.clip(0.2 * noise, -0.5, 0.5), -1, 1)


def test_fqe_target_matches_numpy(small_hopper):
    pipeline, state, batch = ocr_started(small_hopper, "o2td3")
    method, agent = pipeline.methods.methods[0], pipeline.finetune_agent
    key = jax.random.PRNGKey(3)
    got = np.asarray(method.fqe_target(agent, state, batch, key), np.float64)
    next_obs = np.asarray(batch.next_observations, np.float64)
    actions = smoothed(np_actor(as_np(state.extras["o2td3"]["reference"]), next_obs), key)
    next_q = q_values(as_np(state.target_critic_params), next_obs, actions).min(axis=0)
    r, d = np.asarray(batch.rewards, np.float64), np.asarray(batch.terminals, np.float64)
    np.testing.assert_allclose(got, r + 0.99 * (1 - d) * next_q, rtol=2e-4, atol=2e-4)


def test_shaping_by_hand_with_negative_q():
    q = jnp.array([-2.0, 3.0, -2.0, 0.0])
    d = jnp.array([0.2, 0.2, 0.0, 0.1])
    # −2·(1 + 0.04) = −2.08 (lower, not −2/1.04 = −1.923 which would be higher); 3/1.04;
    # no distance, no change; 0 stays 0.
    expected = [-2.08, 3.0 / 1.04, -2.0, 0.0]
    np.testing.assert_allclose(np.asarray(shaped_anchor(q, d, 1.0)), expected, rtol=1e-6)
    a = jnp.array([[0.3, 0.4], [0.1, 0.0]])
    # ‖(0.3, 0.4)‖/√2 = 0.354 → clipped at 0.2; 0.1/√2 = 0.0707
    got = action_distance(a, jnp.zeros_like(a), 0.2)
    np.testing.assert_allclose(np.asarray(got), [0.2, 0.1 / np.sqrt(2)], rtol=1e-6)


def test_alignment_loss_matches_numpy(small_hopper):
    pipeline, state, batch = ocr_started(small_hopper, "o2td3")
    method, agent = pipeline.methods.methods[0], pipeline.finetune_agent
    key = jax.random.PRNGKey(5)
    new, metrics = method.alignment_update(agent, state, batch, key)
    obs = np.asarray(batch.observations, np.float64)
    anchor = np_actor(as_np(state.extras["o2td3"]["reference"]), obs)
    perturbed = smoothed(np_actor(as_np(state.actor.params), obs), key)
    target = as_np(state.target_critic_params)
    q_anchor = q_values(target, obs, anchor).min(axis=0)
    d = np.minimum(np.linalg.norm(perturbed - anchor, axis=-1) / np.sqrt(3), 0.2)
    factor = 1 + d**2
    shaped = np.where(q_anchor < 0, q_anchor * factor, q_anchor / factor)
    targets = np.minimum(shaped[None], q_values(target, obs, perturbed))
    q = q_values(as_np(state.critic.params), obs, perturbed)
    align = np.sum(np.mean((q - targets) ** 2, axis=-1))
    retain_q = q_values(as_np(state.critic.params), obs, anchor)
    retain = np.sum(np.mean((retain_q - q_anchor[None]) ** 2, axis=-1))
    np.testing.assert_allclose(float(metrics["o2td3/alignment_loss"]), align, rtol=1e-4)
    np.testing.assert_allclose(float(metrics["o2td3/retain_loss"]), retain, rtol=1e-4)
    for x, y in zip(
        jax.tree.leaves(new.target_critic_params),
        jax.tree.leaves(state.target_critic_params),
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_distance_penalty_in_target_and_actor_loss(small_hopper):
    pipeline, state, batch = ocr_started(small_hopper, "o2td3")
    method = pipeline.methods.methods[0]
    own = dict(state.extras["o2td3"])
    own["log_lambda"] = jnp.log(jnp.float32(3.0))
    own["reference"] = jax.tree.map(lambda x: x + 0.05, own["reference"])
    state = state.replace(extras={"o2td3": own})
    rng = np.random.default_rng(0)
    next_value = jnp.asarray(rng.normal(size=batch.rewards.shape), jnp.float32)
    inputs = TargetInputs(batch, next_value, None, jax.random.PRNGKey(0), agent_state=state)
    got = np.asarray(method.next_value(own, inputs), np.float64)
    next_obs = np.asarray(batch.next_observations)
    gap = np_actor(as_np(state.actor.params), next_obs) - np_actor(
        as_np(own["reference"]), next_obs
    )
    np.testing.assert_allclose(got, np.asarray(next_value) - 3.0 * np.mean(gap**2), rtol=1e-4)
    actions = jnp.asarray(rng.uniform(-1, 1, batch.actions.shape), jnp.float32)
    penalty, _ = method.actor_penalty(own, ActorInputs(batch, actions, None, None, state))
    reference = np_actor(as_np(own["reference"]), np.asarray(batch.observations))
    expected = 3.0 * np.mean((reference - np.asarray(actions, np.float64)) ** 2)
    np.testing.assert_allclose(float(penalty), expected, rtol=1e-4)


def test_td3_actor_normalised_by_mean_abs_q_and_target_actor_handed_over(small_hopper):
    pipeline, state, batch = ocr_started(small_hopper, "o2td3")
    agent = pipeline.finetune_agent
    assert agent.config.normalize_actor_q and agent.config.critic_layer_norm is False
    _, metrics = agent.actor_loss(state, batch, state.actor.params)
    obs = np.asarray(batch.observations, np.float64)
    q1 = q_values(as_np(state.critic.params), obs, np_actor(as_np(state.actor.params), obs))[0]
    np.testing.assert_allclose(
        float(metrics["actor_loss"]), -q1.mean() / np.abs(q1).mean(), rtol=1e-4
    )
    for x, y in zip(
        jax.tree.leaves(state.actor.params), jax.tree.leaves(state.target_actor_params), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert pipeline.describe()["online_algo"] == "td3" and pipeline.online_config().utd == 1


@pytest.mark.slow
def test_o2td3_killed_in_each_phase_resumes_identically(tmp_path, small_hopper, monkeypatch):
    # Killed inside alignment (O2SAC's test kills inside re-evaluation and online).
    full, where = ocr_resume_check(tmp_path, small_hopper, "o2td3", monkeypatch, kills=(5,))
    assert where == ["o2td3_alignment"]
    online = [r for r in full.rows if r["phase"] == "online"]
    assert online and "train/o2td3/divergence" in online[-1]


@pytest.mark.slow
def test_cli_o2td3_runs_end_to_end(tmp_path):
    from o2o.cli import main

    argv = ["train", "--dataset", "hopper-medium-lite", "--algo", "td3bc", "--finetune"]
    argv += ["o2td3-interval", "--offline-steps", "100", "--online-steps", "100"]
    argv += ["--eval-episodes", "1", "--batch-size", "32", "--set", "hidden_dims=[16]"]
    argv += ["--online-set", "hidden_dims=[16]", "--runs-dir", str(tmp_path), "--name", "r"]
    assert main([*argv, "--no-progress"]) == 0
    run = RunDir(tmp_path / "r")
    phases = [r["phase"] for r in run.rows()]
    assert phases[:3] == ["offline", "o2td3_reevaluation", "o2td3_alignment"]
    assert phases[-1] == "online"
    events = {r["phase"] for r in run.rows("finetune.jsonl")}
    assert {"o2td3_ranking", "o2td3_initial_reference", "o2td3_reference"} <= events
