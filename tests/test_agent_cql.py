"""CQL: the sampled-action sets, the CQL(H) logsumexp term, the TD target (plain and max-target
backup), the actor loss and the Lagrange multiplier against float64 numpy; SAMG's conservative
weights; a custom target; learning on the bandit task; presets and config checks."""

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from o2o.agents import make_agent
from o2o.agents.cql import CQLConfig
from o2o.core.hooks import CustomTarget, Hooks
from o2o.errors import ConfigError
from tests.helpers import bandit_scores_before_after, mlp_forward, q_values, tiny_batch

OBS, ACT, N = 3, 2, 4
SMALL = dict(actor_hidden_dims=(8, 8), critic_hidden_dims=(8, 8), cql_n_actions=N)


@pytest.fixture
def batch():
    return tiny_batch(np.random.default_rng(0), 5, OBS, ACT)


def make_state(agent, seed=0):
    """A state whose target critic differs from the critic."""
    state = agent.init(jax.random.PRNGKey(seed), OBS, ACT)
    return state.replace(
        target_critic_params=jax.tree.map(lambda x: x * 1.3, state.target_critic_params)
    )


def policy_mean_log_std(actor_params, obs):
    """CORL's actor in numpy: MLP -> (mean, raw); log-std = m * raw + o, clipped to [-20, 2]."""
    out = mlp_forward(actor_params["MLP_0"], obs)
    mean, raw = out[..., :ACT], out[..., ACT:]
    m, o = float(actor_params["log_std_multiplier"]), float(actor_params["log_std_offset"])
    return mean, np.clip(m * raw + o, -20, 2)


def tanh_gaussian_log_prob(pre_tanh, mean, log_std):
    gaussian = -0.5 * ((pre_tanh - mean) / np.exp(log_std)) ** 2 - log_std - 0.5 * np.log(2 * np.pi)
    return np.sum(gaussian - np.log(1 - np.tanh(pre_tanh) ** 2), axis=-1)


def q_at(critic_params, obs, actions):
    """(members, B, k) Q-values for k actions per row, all at the row's observation."""
    b, k, _ = actions.shape
    obs_rep = np.repeat(np.asarray(obs, np.float64), k, axis=0)
    return q_values(
        critic_params, obs_rep, np.asarray(actions, np.float64).reshape(b * k, -1)
    ).reshape(-1, b, k)


def logsumexp(x, axis=-1):
    top = x.max(axis=axis, keepdims=True)
    return np.squeeze(top, axis) + np.log(np.exp(x - top).sum(axis=axis))


def test_action_sets_are_uniform_current_policy_and_next_policy_samples(batch):
    agent = CQLConfig(**SMALL).create()
    state = make_state(agent)
    key = jax.random.PRNGKey(3)
    sets = agent.cql_action_sets(state, batch, key)
    assert sets.random.shape == sets.current.shape == sets.next.shape == (5, N, ACT)
    assert sets.current_log_probs.shape == sets.next_log_probs.shape == (5, N)

    random_key, current_key, next_key = jax.random.split(key, 3)
    np.testing.assert_allclose(
        sets.random, jax.random.uniform(random_key, (5, N, ACT), minval=-1, maxval=1)
    )
    for obs, draw_key, actions, log_probs in (
        (batch.observations, current_key, sets.current, sets.current_log_probs),  # pi(.|s)
        (batch.next_observations, next_key, sets.next, sets.next_log_probs),  # pi(.|s')
    ):
        mean, log_std = policy_mean_log_std(state.actor.params, obs)
        pre_tanh = mean[:, None] + np.exp(log_std)[:, None] * np.asarray(
            jax.random.normal(draw_key, (5, N, ACT))
        )
        np.testing.assert_allclose(actions, np.tanh(pre_tanh), rtol=1e-5, atol=1e-6)
        expected = tanh_gaussian_log_prob(pre_tanh, mean[:, None], log_std[:, None])
        np.testing.assert_allclose(log_probs, expected, rtol=1e-4, atol=1e-4)

    # The sets carry no gradient into the actor.
    grads = jax.grad(
        lambda p: agent.cql_action_sets(
            state.replace(actor=state.actor.replace(params=p)), batch, key
        ).current.sum()
    )(state.actor.params)
    assert all(float(jnp.abs(g).max()) == 0 for g in jax.tree.leaves(grads))


def conservative_by_hand(
    state, batch, sets, importance_sample, temp, lower_bound=None, weights=None
):
    """Per-member weighted mean gap, in float64."""
    params = state.critic.params
    q_data = q_values(params, batch.observations, batch.actions)
    q_rand, q_cur, q_next = (
        q_at(params, batch.observations, a) for a in (sets.random, sets.current, sets.next)
    )
    if lower_bound is not None:
        q_cur = np.maximum(q_cur, lower_bound[None, :, None])
        q_next = np.maximum(q_next, lower_bound[None, :, None])
    if importance_sample:
        cat = np.concatenate(
            [
                q_rand - ACT * np.log(0.5),
                q_next - np.asarray(sets.next_log_probs)[None],
                q_cur - np.asarray(sets.current_log_probs)[None],
            ],
            axis=-1,
        )
    else:
        cat = np.concatenate([q_rand, q_data[..., None], q_next, q_cur], axis=-1)
    gap = temp * logsumexp(cat / temp) - q_data
    w = np.ones(gap.shape[1]) if weights is None else weights
    return (gap * w[None]).mean(axis=1)


@pytest.mark.parametrize("importance_sample,temp", [(True, 1.0), (False, 1.0), (True, 0.5)])
def test_conservative_term_is_logsumexp_over_the_three_sets_minus_data_q(
    batch, importance_sample, temp
):
    agent = CQLConfig(
        **SMALL, cql_alpha=3.0, cql_importance_sample=importance_sample, cql_temp=temp
    ).create()
    state = make_state(agent)
    sets = agent.cql_action_sets(state, batch, jax.random.PRNGKey(4))
    q = state.critic(batch.observations, batch.actions)
    loss, metrics = agent.conservative_loss(
        state, batch, q, sets, state.critic.params, jax.random.PRNGKey(0)
    )
    member_gaps = conservative_by_hand(state, batch, sets, importance_sample, temp)
    np.testing.assert_allclose(float(loss), 3.0 * member_gaps.sum(), rtol=1e-5)
    np.testing.assert_allclose(float(metrics["cql_gap"]), member_gaps.mean(), rtol=1e-5)


def test_critic_loss_is_td_error_plus_conservative_term(batch):
    agent = CQLConfig(**SMALL, cql_alpha=2.0, discount=0.9, backup_entropy=True).create()
    state = make_state(agent)
    key = jax.random.PRNGKey(11)
    loss, metrics = agent.critic_loss(state, batch, key, state.critic.params)

    target_key, sets_key = jax.random.split(key)
    mean, log_std = policy_mean_log_std(state.actor.params, batch.next_observations)
    pre_tanh = mean + np.exp(log_std) * np.asarray(jax.random.normal(target_key, mean.shape))
    next_q = q_values(state.target_critic_params, batch.next_observations, np.tanh(pre_tanh)).min(0)
    alpha = 1.0  # log alpha starts at 0
    next_value = next_q - alpha * tanh_gaussian_log_prob(pre_tanh, mean, log_std)
    target = batch.rewards + 0.9 * (1 - batch.terminals) * next_value
    q = q_values(state.critic.params, batch.observations, batch.actions)
    td = ((q - target) ** 2).mean(axis=1).sum()
    sets = agent.cql_action_sets(state, batch, sets_key)
    conservative = 2.0 * conservative_by_hand(state, batch, sets, True, 1.0).sum()
    np.testing.assert_allclose(float(metrics["critic_loss"]), td, rtol=1e-4)
    np.testing.assert_allclose(float(loss), td + conservative, rtol=1e-4)


def test_max_target_backup_takes_the_best_of_n_next_actions(batch):
    agent = CQLConfig(**SMALL, cql_max_target_backup=True, discount=0.9).create()
    state = make_state(agent)
    key = jax.random.PRNGKey(5)
    target = agent.critic_target(state, batch, key)
    mean, log_std = policy_mean_log_std(state.actor.params, batch.next_observations)
    pre_tanh = mean[:, None] + np.exp(log_std)[:, None] * np.asarray(
        jax.random.normal(key, (5, N, ACT))
    )
    next_q = q_at(state.target_critic_params, batch.next_observations, np.tanh(pre_tanh)).min(0)
    expected = batch.rewards + 0.9 * (1 - batch.terminals) * next_q.max(axis=1)
    np.testing.assert_allclose(target, expected, rtol=1e-5, atol=1e-6)


def test_actor_loss_by_hand_and_bc_warmup(batch):
    agent = CQLConfig(**SMALL, bc_steps=2).create()
    state = make_state(agent)
    key = jax.random.PRNGKey(6)
    mean, log_std = policy_mean_log_std(state.actor.params, batch.observations)
    pre_tanh = mean + np.exp(log_std) * np.asarray(jax.random.normal(key, mean.shape))
    log_pi = tanh_gaussian_log_prob(pre_tanh, mean, log_std)
    q_min = q_values(state.critic.params, batch.observations, np.tanh(pre_tanh)).min(0)

    loss, _ = agent.actor_loss(state.replace(step=jnp.int32(2)), batch, key, state.actor.params)
    np.testing.assert_allclose(float(loss), np.mean(log_pi - q_min), rtol=1e-4)

    data_pre_tanh = np.arctanh(np.clip(np.asarray(batch.actions, np.float64), -1 + 1e-6, 1 - 1e-6))
    bc_loss, _ = agent.actor_loss(state, batch, key, state.actor.params)  # step 0 < bc_steps
    expected_bc = np.mean(log_pi - tanh_gaussian_log_prob(data_pre_tanh, mean, log_std))
    np.testing.assert_allclose(float(bc_loss), expected_bc, rtol=1e-3)


@pytest.mark.parametrize("gap_above_target", [True, False])
def test_lagrange_multiplier_rises_above_the_target_gap_and_falls_below(batch, gap_above_target):
    agent = CQLConfig(**SMALL, cql_lagrange=True, cql_alpha=5.0, cql_target_action_gap=0.8).create()
    state = make_state(agent)
    gap = jnp.float32(2.0 if gap_above_target else -1.0)
    loss, metrics = agent.lagrange_loss(state, gap, state.lagrange_multiplier.params)
    np.testing.assert_allclose(float(metrics["alpha_prime"]), math.e, rtol=1e-6)  # log alpha' = 1
    np.testing.assert_allclose(float(loss), -math.e * 5.0 * (float(gap) - 0.8), rtol=1e-6)
    new, _ = state.lagrange_multiplier.minimize(lambda p: agent.lagrange_loss(state, gap, p))
    assert (float(new()) > math.e) == gap_above_target

    # The critic's conservative term is scaled by alpha' * alpha_cql and offset by the target gap.
    sets = agent.cql_action_sets(state, batch, jax.random.PRNGKey(1))
    q = state.critic(batch.observations, batch.actions)
    cons, _ = agent.conservative_loss(
        state, batch, q, sets, state.critic.params, jax.random.PRNGKey(0)
    )
    member_gaps = conservative_by_hand(state, batch, sets, True, 1.0)
    np.testing.assert_allclose(float(cons), math.e * 5.0 * (member_gaps - 0.8).sum(), rtol=1e-5)


def test_update_trains_lagrange_multiplier_only_when_enabled(batch):
    for lagrange in (False, True):
        agent = CQLConfig(**SMALL, cql_lagrange=lagrange).create()
        state = agent.init(jax.random.PRNGKey(0), OBS, ACT)
        new, metrics = agent.update(state, batch, jax.random.PRNGKey(1))
        changed = float(new.lagrange_multiplier()) != float(state.lagrange_multiplier())
        assert changed == lagrange and ("alpha_prime" in metrics) == lagrange
        assert int(new.step) == 1 and np.isfinite(float(metrics["critic_loss"]))


@dataclass(frozen=True)
class HalfWeights(Hooks):
    """SAMG-style per-sample weights on the conservative term."""

    def conservative_weights(self, extras, batch, key):
        return jnp.array([1.0, 0.0, 0.5, 0.0, 2.0])


def test_conservative_weights_multiply_the_per_sample_gap(batch):
    agent = CQLConfig(**SMALL, cql_alpha=1.0).create(HalfWeights())
    state = make_state(agent)
    sets = agent.cql_action_sets(state, batch, jax.random.PRNGKey(8))
    q = state.critic(batch.observations, batch.actions)
    loss, _ = agent.conservative_loss(
        state, batch, q, sets, state.critic.params, jax.random.PRNGKey(0)
    )
    weights = np.array([1.0, 0.0, 0.5, 0.0, 2.0])
    np.testing.assert_allclose(
        float(loss),
        conservative_by_hand(state, batch, sets, True, 1.0, weights=weights).sum(),
        rtol=1e-5,
    )


def test_custom_target_replaces_the_bootstrap_value(batch):
    hooks = CustomTarget(lambda extras, inputs: jnp.full_like(inputs.next_value, 3.0))
    agent = CQLConfig(**SMALL, discount=0.5).create(hooks)
    state = make_state(agent)
    _, metrics = agent.critic_loss(state, batch, jax.random.PRNGKey(0), state.critic.params)
    target = batch.rewards + 0.5 * (1 - batch.terminals) * 3.0
    q = q_values(state.critic.params, batch.observations, batch.actions)
    np.testing.assert_allclose(
        float(metrics["critic_loss"]), ((q - target) ** 2).mean(1).sum(), rtol=1e-5
    )


def test_value_with_recomputes_the_max_backup_with_other_params(batch):
    seen = {}

    def fn(extras, inputs):
        seen["same"] = inputs.value_with(state.target_critic_params)
        seen["next_value"] = inputs.next_value
        return inputs.next_value

    agent = CQLConfig(**SMALL, cql_max_target_backup=True).create(CustomTarget(fn))
    state = make_state(agent)
    agent.critic_target(state, batch, jax.random.PRNGKey(2))
    np.testing.assert_allclose(seen["same"], seen["next_value"], rtol=1e-6)


# Small networks and a faster actor keep the learning tests quick; the math is the defaults'.
LEARNING = dict(
    actor_hidden_dims=(32, 32),
    critic_hidden_dims=(32, 32),
    cql_n_actions=4,
    cql_alpha=1.0,
    actor_lr=1e-3,
)


def test_cql_improves_over_its_initial_policy():
    before, after, metrics = bandit_scores_before_after(CQLConfig(**LEARNING).create(), steps=200)
    assert np.isfinite(float(metrics["critic_loss"]))
    assert after > before + 0.1, (before, after)


def test_act_in_bounds_and_mode_when_deterministic():
    agent = CQLConfig(**SMALL).create()
    state = agent.init(jax.random.PRNGKey(0), OBS, ACT)
    obs = jnp.asarray(np.random.default_rng(1).normal(size=(6, OBS)), jnp.float32)
    mean, _ = policy_mean_log_std(state.actor.params, obs)
    np.testing.assert_allclose(
        agent.act(state, obs, jax.random.PRNGKey(0), True), np.tanh(mean), rtol=1e-5, atol=1e-6
    )
    sampled = agent.act(state, obs, jax.random.PRNGKey(0), False)
    assert sampled.shape == (6, ACT) and float(jnp.abs(sampled).max()) <= 1.0


def test_domain_presets_and_online_switch():
    maze = CQLConfig.for_domain("maze")
    assert (
        maze.critic_hidden_dims == (256,) * 5 and maze.cql_lagrange and maze.cql_max_target_backup
    )
    assert (maze.cql_alpha, maze.cql_target_action_gap, maze.cql_clip_diff_min) == (
        5.0,
        0.8,
        -200.0,
    )
    loco = CQLConfig.for_domain("locomotion")
    assert loco == CQLConfig() and loco.cql_alpha == 10.0 and loco.actor_lr == 1e-4
    online = CQLConfig(cql_alpha=5.0, online_cql_alpha=1.0).create().for_online()
    assert online.config.cql_alpha == 1.0 and online.for_online().config.cql_alpha == 1.0
    assert type(make_agent("cql")).__name__ == "CQL"


@pytest.mark.parametrize(
    "overrides",
    [
        {"actor_lr": -1e-4},
        {"critic_lr": 0.0},
        {"cql_alpha": -1.0},
        {"cql_n_actions": 0},
        {"cql_temp": 0.0},
        {"discount": 1.5},
        {"tau": 0.0},
        {"cql_clip_diff_min": 1.0, "cql_clip_diff_max": 0.0},
        {"critic_hidden_dims": ()},
        {"temperature_lr": -1.0},
    ],
)
def test_invalid_hyperparameters_are_rejected(overrides):
    with pytest.raises(ConfigError):
        CQLConfig(**overrides)


def test_unknown_domain_is_rejected():
    with pytest.raises(ConfigError):
        CQLConfig.for_domain("atari")
