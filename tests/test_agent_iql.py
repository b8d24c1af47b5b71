"""IQL: expectile, critic and AWR losses against float64 numpy, the hooks' value_with, the
cosine actor-lr schedule, learning on a tiny offline task, config checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from o2o.agents import make_agent
from o2o.agents.iql import IQLConfig, periodic_cosine
from o2o.core.hooks import CustomTarget
from o2o.core.losses import awr_weights, expectile_loss
from o2o.errors import ConfigError
from tests.helpers import (
    bandit_scores_before_after,
    gaussian_log_prob,
    mlp_forward,
    q_values,
    tiny_batch,
)

KEY = jax.random.PRNGKey(0)
OBS, ACT = 3, 2


@pytest.fixture
def batch():
    return tiny_batch(np.random.default_rng(0), 4, OBS, ACT)


def make_state(agent, seed=0):
    """A state whose target critic differs from the critic (so a test sees which one is used)."""
    state = agent.init(jax.random.PRNGKey(seed), OBS, ACT)
    return state.replace(
        target_critic_params=jax.tree.map(lambda x: x * 1.3, state.target_critic_params)
    )


def v_values(value_params, obs):
    return mlp_forward(value_params["MLP_0"], obs)[..., 0]


def test_expectile_and_awr_weight_helpers():
    diff = jnp.array([-2.0, -0.5, 0.0, 1.0, 3.0])
    expected = np.mean(np.array([0.3 * 4, 0.3 * 0.25, 0.0, 0.7 * 1, 0.7 * 9]))
    np.testing.assert_allclose(float(expectile_loss(diff, 0.7)), expected, rtol=1e-6)
    weights = awr_weights(jnp.array([-1.0, 0.0, 0.5, 2.0, 1e4]), 3.0, 100.0)
    np.testing.assert_allclose(
        np.asarray(weights), [np.exp(-3), 1.0, np.exp(1.5), 100.0, 100.0], rtol=1e-6
    )
    # No gradient flows through the weights.
    assert float(jax.grad(lambda a: awr_weights(a, 3.0, 100.0).sum())(jnp.array([0.1]))[0]) == 0.0


def test_value_loss_is_expectile_regression_on_min_target_q(batch):
    agent = IQLConfig(hidden_dims=(8, 8), expectile=0.8).create()
    state = make_state(agent)
    loss, _ = agent.value_loss(state, batch, state.value.params)
    q = q_values(state.target_critic_params, batch.observations, batch.actions).min(0)
    u = q - v_values(state.value.params, batch.observations)
    expected = np.mean(np.where(u < 0, 0.2, 0.8) * u**2)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)


def test_critic_target_bootstraps_from_value_of_next_state(batch):
    agent = IQLConfig(hidden_dims=(8,), discount=0.9).create()
    state = make_state(agent)
    loss, _ = agent.critic_loss(state, batch, KEY, state.critic.params)
    target = batch.rewards + 0.9 * (1 - batch.terminals) * v_values(
        state.value.params, batch.next_observations
    )
    q = q_values(state.critic.params, batch.observations, batch.actions)
    np.testing.assert_allclose(float(loss), ((q - target) ** 2).mean(1).sum(), rtol=1e-5)


def test_custom_target_sees_value_with_other_value_params(batch):
    """SAMG-style: the hook recomputes V(s') with frozen V params kept in ``extras``."""
    agent = IQLConfig(hidden_dims=(8,), discount=0.9).create(
        CustomTarget(lambda extras, inputs: inputs.value_with(extras))
    )
    state = make_state(agent)
    frozen_value = jax.tree.map(lambda x: -2.0 * x + 0.1, state.value.params)
    state = state.replace(extras=frozen_value)
    loss, _ = agent.critic_loss(state, batch, KEY, state.critic.params)
    target = batch.rewards + 0.9 * (1 - batch.terminals) * v_values(
        frozen_value, batch.next_observations
    )
    q = q_values(state.critic.params, batch.observations, batch.actions)
    np.testing.assert_allclose(float(loss), ((q - target) ** 2).mean(1).sum(), rtol=1e-5)
    plain, _ = (
        IQLConfig(hidden_dims=(8,), discount=0.9)
        .create()
        .critic_loss(state, batch, KEY, state.critic.params)
    )
    assert abs(float(plain) - float(loss)) > 1e-3


def test_actor_loss_is_clipped_advantage_weighted_log_likelihood(batch):
    agent = IQLConfig(hidden_dims=(8,), beta=40.0).create()
    state = make_state(agent)
    params = {**state.actor.params, "log_std": jnp.array([-0.5, 0.3])}
    loss, metrics = agent.actor_loss(state, batch, jax.random.PRNGKey(0), params)
    adv = q_values(state.target_critic_params, batch.observations, batch.actions).min(0) - v_values(
        state.value.params, batch.observations
    )
    weights = np.minimum(np.exp(40.0 * adv), 100.0)
    assert (weights == 100.0).any() and (weights < 100.0).any(), "the test must exercise the clip"
    mean = np.tanh(mlp_forward(params["MLP_0"], batch.observations))
    expected = -np.mean(weights * gaussian_log_prob(batch.actions, mean, np.array([-0.5, 0.3])))
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    assert float(metrics["awr_weight_max"]) == pytest.approx(100.0)


def test_deterministic_actor_loss_is_weighted_squared_error(batch):
    agent = IQLConfig(hidden_dims=(8,), beta=3.0, deterministic_actor=True).create()
    state = make_state(agent)
    loss, _ = agent.actor_loss(state, batch, jax.random.PRNGKey(0), state.actor.params)
    adv = q_values(state.target_critic_params, batch.observations, batch.actions).min(0) - v_values(
        state.value.params, batch.observations
    )
    actions = np.tanh(mlp_forward(state.actor.params["MLP_0"], batch.observations))
    expected = np.mean(
        np.minimum(np.exp(3.0 * adv), 100) * np.sum((actions - batch.actions) ** 2, -1)
    )
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)


@pytest.mark.parametrize("use_updated_value", [False, True])
def test_update_order_of_value_and_critic(batch, use_updated_value):
    """CORL bootstraps with V before this step's update; Kostrikov/FamO2O after it."""
    agent = IQLConfig(hidden_dims=(8,), value_lr=0.1, use_updated_value=use_updated_value).create()
    state = make_state(agent)
    new, metrics = jax.jit(agent.update)(state, batch, jax.random.PRNGKey(0))
    old_v_loss, _ = agent.critic_loss(state, batch, KEY, state.critic.params)
    new_v_loss, _ = agent.critic_loss(
        state.replace(value=new.value), batch, KEY, state.critic.params
    )
    assert abs(float(old_v_loss) - float(new_v_loss)) > 1e-4
    expected = new_v_loss if use_updated_value else old_v_loss
    np.testing.assert_allclose(float(metrics["critic_loss"]), float(expected), rtol=1e-6)
    assert int(new.step) == 1


def test_actor_lr_follows_corl_periodic_cosine(batch):
    schedule = periodic_cosine(2.0, 10)
    np.testing.assert_allclose(
        [float(schedule(t)) for t in (0, 5, 10, 15, 20)], [2.0, 1.0, 0.0, 1.0, 2.0], atol=1e-6
    )
    # With offline_steps = 3, the 4th actor update runs at lr 0: the actor does not move.
    agent = IQLConfig(hidden_dims=(8,), offline_steps=3).create()
    state = agent.init(jax.random.PRNGKey(0), OBS, ACT)
    update = jax.jit(agent.update)
    for i in range(3):
        state, _ = update(state, batch, jax.random.PRNGKey(i))
    after, _ = update(state, batch, jax.random.PRNGKey(9))
    for a, b in zip(
        jax.tree.leaves(after.actor.params), jax.tree.leaves(state.actor.params), strict=True
    ):
        np.testing.assert_allclose(a, b, atol=1e-7)
    moved = any(
        not np.allclose(a, b)
        for a, b in zip(
            jax.tree.leaves(after.critic.params), jax.tree.leaves(state.critic.params), strict=True
        )
    )
    assert moved, "the critic keeps learning"


def test_iql_improves_over_its_initial_policy():
    steps = 400
    lrs = {"actor_lr": 1e-3, "critic_lr": 1e-3, "value_lr": 1e-3}
    agent = IQLConfig(hidden_dims=(64, 64), offline_steps=steps, **lrs).create()
    before, after, metrics = bandit_scores_before_after(agent, steps=steps)
    # Well above its start and above what plain BC reaches on this data (about -0.06).
    assert after > max(before + 0.1, -0.03), (before, after)
    assert all(np.isfinite(float(v)) for v in metrics.values())


def test_act_mean_when_deterministic_samples_otherwise():
    agent = IQLConfig(hidden_dims=(8,)).create()
    state = agent.init(jax.random.PRNGKey(0), OBS, ACT)
    obs = jnp.zeros((4000, OBS))
    greedy = agent.act(state, obs, jax.random.PRNGKey(1), True)
    np.testing.assert_allclose(
        greedy, np.tanh(mlp_forward(state.actor.params["MLP_0"], np.zeros((4000, OBS)))), atol=1e-6
    )
    sampled = agent.act(state, obs, jax.random.PRNGKey(1), False)
    assert (
        bool(jnp.all(jnp.abs(sampled) <= 1)) and float(jnp.std(sampled)) > 0.3
    )  # std exp(0) = 1, clipped


def test_domain_presets_and_online_switch():
    maze = IQLConfig.for_domain("maze")
    assert (maze.beta, maze.expectile) == (10.0, 0.9)
    assert IQLConfig.for_domain("locomotion") == IQLConfig()
    assert IQLConfig.for_domain("maze", beta=5.0).beta == 5.0
    agent = IQLConfig().create()
    assert agent.for_online() == agent
    adroit = IQLConfig.for_domain("adroit")  # CORL's configs/finetune/iql/*/cloned_v1.yaml
    assert (adroit.beta, adroit.expectile) == (3.0, 0.8)
    with pytest.raises(ConfigError, match="domain"):
        IQLConfig.for_domain("kitchen")


@pytest.mark.parametrize(
    "overrides",
    [
        {"expectile": 1.0},
        {"expectile": 0.0},
        {"beta": 0.0},
        {"value_lr": -1e-3},
        {"actor_lr_schedule": "linear"},
        {"offline_steps": 0},
        {"tau": 2.0},
    ],
)
def test_invalid_hyperparameters_are_rejected(overrides):
    with pytest.raises(ConfigError):
        make_agent("iql", **overrides)
