"""AWAC: critic target and advantage-weighted actor loss against float64 numpy, the target hook,
learning on a tiny offline task, config checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from o2o.agents import make_agent
from o2o.agents.awac import AWACConfig
from o2o.core.hooks import CustomTarget
from o2o.errors import ConfigError
from tests.helpers import (
    bandit_scores_before_after,
    gaussian_log_prob,
    mlp_forward,
    q_values,
    tiny_batch,
)

OBS, ACT = 3, 2
LOG_STD = np.array([-0.6, 0.2])


@pytest.fixture
def batch():
    return tiny_batch(np.random.default_rng(0), 4, OBS, ACT)


def make_state(agent, seed=0):
    """Target critic != critic and a non-zero log-std, so a test sees which is used."""
    state = agent.init(jax.random.PRNGKey(seed), OBS, ACT)
    actor = state.actor.replace(
        params={**state.actor.params, "log_std": jnp.asarray(LOG_STD, jnp.float32)}
    )
    return state.replace(
        actor=actor,
        target_critic_params=jax.tree.map(lambda x: x * 1.3, state.target_critic_params),
    )


def sampled_actions(actor_params, obs, key):
    """CORL's Actor.forward: mean + std * eps (unsquashed mean), clipped to [-1, 1]."""
    mean = mlp_forward(actor_params["MLP_0"], obs)
    eps = np.asarray(jax.random.normal(key, mean.shape), np.float64)
    return np.clip(mean + np.exp(LOG_STD) * eps, -1, 1), mean


def test_critic_target_uses_sampled_clipped_next_actions_and_min_target_q(batch):
    agent = AWACConfig(hidden_dims=(8, 8), discount=0.9).create()
    state = make_state(agent)
    key = jax.random.PRNGKey(3)
    loss, _ = agent.critic_loss(state, batch, key, state.critic.params)
    next_actions, _ = sampled_actions(state.actor.params, batch.next_observations, key)
    next_q = q_values(state.target_critic_params, batch.next_observations, next_actions).min(0)
    target = batch.rewards + 0.9 * (1 - batch.terminals) * next_q
    q = q_values(state.critic.params, batch.observations, batch.actions)
    np.testing.assert_allclose(float(loss), ((q - target) ** 2).mean(1).sum(), rtol=1e-5)


def test_custom_target_replaces_the_bootstrap_value(batch):
    """A frozen critic in ``extras`` evaluated at the agent's own a' through ``value_with``."""
    hooks = CustomTarget(
        lambda extras, inputs: 0.5 * inputs.value_with(extras) + 0.5 * inputs.next_value
    )
    agent = AWACConfig(hidden_dims=(8,), discount=0.9).create(hooks)
    state = make_state(agent)
    frozen = jax.tree.map(lambda x: -x, state.critic.params)
    state = state.replace(extras=frozen)
    key = jax.random.PRNGKey(4)
    loss, _ = agent.critic_loss(state, batch, key, state.critic.params)
    next_actions, _ = sampled_actions(state.actor.params, batch.next_observations, key)
    frozen_q = q_values(frozen, batch.next_observations, next_actions).min(0)
    target_q = q_values(state.target_critic_params, batch.next_observations, next_actions).min(0)
    target = batch.rewards + 0.9 * (1 - batch.terminals) * (0.5 * frozen_q + 0.5 * target_q)
    q = q_values(state.critic.params, batch.observations, batch.actions)
    np.testing.assert_allclose(float(loss), ((q - target) ** 2).mean(1).sum(), rtol=1e-5)


def test_actor_loss_is_clipped_advantage_weighted_log_likelihood(batch):
    awac_lambda = 0.03
    agent = AWACConfig(hidden_dims=(8,), awac_lambda=awac_lambda).create()
    state = make_state(agent)
    key = jax.random.PRNGKey(5)
    loss, metrics = agent.actor_loss(state, batch, key, state.actor.params)
    pi_actions, mean = sampled_actions(state.actor.params, batch.observations, key)
    # The baseline and Q use the current (not the target) critic.
    v = q_values(state.critic.params, batch.observations, pi_actions).min(0)
    q = q_values(state.critic.params, batch.observations, batch.actions).min(0)
    weights = np.minimum(np.exp((q - v) / awac_lambda), 100.0)
    assert (weights == 100.0).any() and (weights < 100.0).any(), "the test must exercise the clip"
    expected = -np.mean(weights * gaussian_log_prob(batch.actions, mean, LOG_STD))
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["adv_mean"]), np.mean(q - v), rtol=1e-4, atol=1e-6)


def test_actor_learns_against_the_updated_critic(batch):
    agent = AWACConfig(hidden_dims=(8,), critic_lr=0.05, tau=0.5).create()
    state = make_state(agent)
    new, metrics = jax.jit(agent.update)(state, batch, jax.random.PRNGKey(0))
    critic_key, actor_key = jax.random.split(jax.random.PRNGKey(0))
    after_critic = state.replace(critic=new.critic)
    expected, _ = agent.actor_loss(after_critic, batch, actor_key, state.actor.params)
    np.testing.assert_allclose(float(metrics["actor_loss"]), float(expected), rtol=1e-5)
    polyak = jax.tree.map(
        lambda t, o: 0.5 * t + 0.5 * o, state.target_critic_params, new.critic.params
    )
    for got, want in zip(
        jax.tree.leaves(new.target_critic_params), jax.tree.leaves(polyak), strict=True
    ):
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_awac_improves_over_its_initial_policy():
    agent = AWACConfig(hidden_dims=(64, 64), actor_lr=1e-3, critic_lr=1e-3).create()
    before, after, metrics = bandit_scores_before_after(agent, steps=400)
    # Well above its start and above what plain BC reaches on this data (about -0.06).
    assert after > max(before + 0.1, -0.03), (before, after)
    assert all(np.isfinite(float(v)) for v in metrics.values())


def test_act_is_clipped_mean_or_clipped_sample():
    agent = AWACConfig(hidden_dims=(8,)).create()
    state = agent.init(jax.random.PRNGKey(0), OBS, ACT)
    obs = jnp.asarray(np.random.default_rng(0).normal(size=(2000, OBS)) * 3, jnp.float32)
    greedy = agent.act(state, obs, jax.random.PRNGKey(1), True)
    np.testing.assert_allclose(
        greedy, np.clip(mlp_forward(state.actor.params["MLP_0"], np.asarray(obs)), -1, 1), atol=1e-5
    )
    sampled = agent.act(state, obs, jax.random.PRNGKey(1), False)
    assert bool(jnp.all(jnp.abs(sampled) <= 1)) and not np.allclose(sampled, greedy)


def test_domain_presets_and_online_switch():
    assert AWACConfig.for_domain("maze").awac_lambda == 0.1
    assert AWACConfig.for_domain().awac_lambda == pytest.approx(1 / 3)
    assert AWACConfig().hidden_dims == (256, 256, 256)
    agent = AWACConfig().create()
    assert agent.for_online() == agent
    with pytest.raises(ConfigError, match="domain"):
        AWACConfig.for_domain("kitchen")


@pytest.mark.parametrize(
    "overrides",
    [
        {"awac_lambda": 0.0},
        {"max_weight": -1.0},
        {"critic_lr": 0.0},
        {"discount": -0.1},
        {"num_critics": 0},
    ],
)
def test_invalid_hyperparameters_are_rejected(overrides):
    with pytest.raises(ConfigError):
        make_agent("awac", **overrides)
