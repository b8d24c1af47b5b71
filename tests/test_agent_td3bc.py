"""TD3+BC: the lambda-normalised actor loss against float64 numpy, its gradient, the target hook,
learning on a tiny offline task, the online switch, config checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from o2o.agents import make_agent
from o2o.agents.td3bc import TD3BCConfig
from o2o.core.hooks import CustomTarget
from o2o.errors import ConfigError
from tests.helpers import bandit_scores_before_after, mlp_forward, q_values, tiny_batch

OBS, ACT = 3, 2


@pytest.fixture
def batch():
    return tiny_batch(np.random.default_rng(0), 4, OBS, ACT)


def test_actor_loss_normalises_q_by_its_mean_magnitude(batch):
    agent = TD3BCConfig(hidden_dims=(8, 8), alpha=2.5).create()
    state = agent.init(jax.random.PRNGKey(0), OBS, ACT)
    loss, metrics = agent.actor_loss(state, batch, state.actor.params)
    actions = np.tanh(mlp_forward(state.actor.params["MLP_0"], batch.observations))
    q1 = q_values(state.critic.params, batch.observations, actions)[0]  # the first critic only
    q_weight = 2.5 / np.abs(q1).mean()
    bc = np.mean((actions - batch.actions) ** 2)
    np.testing.assert_allclose(float(loss), -q_weight * q1.mean() + bc, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["q_weight"]), q_weight, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["bc_loss"]), bc, rtol=1e-5)


def test_normaliser_carries_no_gradient(batch):
    agent = TD3BCConfig(hidden_dims=(8,)).create()
    state = agent.init(jax.random.PRNGKey(1), OBS, ACT)
    q_weight = float(agent.actor_loss(state, batch, state.actor.params)[1]["q_weight"])

    def fixed_weight_loss(params):
        actions = state.actor(batch.observations, params=params)
        q1 = state.critic(batch.observations, actions)[0]
        return -q_weight * q1.mean() + jnp.mean((actions - batch.actions) ** 2)

    got = jax.grad(lambda p: agent.actor_loss(state, batch, p)[0])(state.actor.params)
    want = jax.grad(fixed_weight_loss)(state.actor.params)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-7)


def test_custom_target_replaces_the_bootstrap_value(batch):
    agent = TD3BCConfig(hidden_dims=(8,), discount=0.9).create(
        CustomTarget(lambda extras, inputs: jnp.full_like(inputs.next_value, 3.0))
    )
    state = agent.init(jax.random.PRNGKey(2), OBS, ACT)
    loss, _ = agent.critic_loss(state, batch, jax.random.PRNGKey(3), state.critic.params)
    target = batch.rewards + 0.9 * (1 - batch.terminals) * 3.0
    q = q_values(state.critic.params, batch.observations, batch.actions)
    np.testing.assert_allclose(float(loss), ((q - target) ** 2).mean(1).sum(), rtol=1e-5)


def test_delayed_actor_update_uses_the_td3bc_loss(batch):
    agent = TD3BCConfig(hidden_dims=(8,), policy_delay=2).create()
    state = agent.init(jax.random.PRNGKey(0), OBS, ACT)
    update = jax.jit(agent.update)
    s1, m1 = update(state, batch, jax.random.PRNGKey(1))
    assert np.isnan(float(m1["actor_loss"]))
    s2, m2 = update(s1, batch, jax.random.PRNGKey(2))
    expected, _ = agent.actor_loss(s2.replace(actor=s1.actor), batch, s1.actor.params)
    np.testing.assert_allclose(float(m2["actor_loss"]), float(expected), rtol=1e-5)


def test_td3bc_improves_over_its_initial_policy():
    agent = TD3BCConfig(hidden_dims=(64, 64), actor_lr=1e-3, critic_lr=1e-3).create()
    before, after, metrics = bandit_scores_before_after(agent, steps=400)
    # Well above its start and above what plain BC reaches on this data (about -0.06).
    assert after > max(before + 0.1, -0.03), (before, after)
    assert np.isfinite(float(metrics["critic_loss"]))


def test_online_alpha_and_domains():
    agent = TD3BCConfig().create()
    assert agent.for_online() == agent
    online = TD3BCConfig(online_alpha=10.0).create().for_online()
    assert online.config.alpha == 10.0 and type(online).__name__ == "TD3BC"
    maze = TD3BCConfig.for_domain("maze")
    assert (maze.alpha, maze.policy_noise, maze.noise_clip, maze.policy_delay) == (2.5, 0.2, 0.5, 2)
    with pytest.raises(ConfigError, match="domain"):
        TD3BCConfig.for_domain("pixels")


@pytest.mark.parametrize(
    "overrides", [{"alpha": 0.0}, {"online_alpha": -1.0}, {"policy_delay": 0}, {"noise_clip": -0.5}]
)
def test_invalid_hyperparameters_are_rejected(overrides):
    with pytest.raises(ConfigError):
        make_agent("td3bc", **overrides)
