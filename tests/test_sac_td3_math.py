"""SAC and TD3 losses against float64 numpy computations on tiny batches."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from o2o.agents import SACConfig, TD3Config, make_agent
from o2o.errors import ConfigError
from tests.helpers import mlp_forward, q_values, tiny_batch

OBS, ACT = 3, 2


@pytest.fixture
def batch():
    return tiny_batch(np.random.default_rng(0), 4, OBS, ACT)


def test_sac_critic_loss_by_hand(batch):
    agent = SACConfig(hidden_dims=(8, 8), discount=0.9).create()
    state = agent.init(jax.random.PRNGKey(0), OBS, ACT)
    # Perturb targets so online and target critics differ.
    state = state.replace(
        target_critic_params=jax.tree.map(lambda x: x * 1.1, state.target_critic_params)
    )
    key = jax.random.PRNGKey(5)
    loss, _ = agent.critic_loss(state, batch, key, state.critic.params)

    next_actions, next_log_probs = state.actor(batch.next_observations).sample_and_log_prob(key)
    next_q = q_values(
        state.target_critic_params, batch.next_observations, np.asarray(next_actions)
    ).min(0)
    alpha = float(state.temperature())
    target = batch.rewards + 0.9 * (1 - batch.terminals) * (
        next_q - alpha * np.asarray(next_log_probs)
    )
    q = q_values(state.critic.params, batch.observations, batch.actions)
    expected = ((q - target) ** 2).mean(axis=1).sum()
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)


def test_sac_actor_and_temperature_losses_by_hand(batch):
    agent = SACConfig(hidden_dims=(8, 8), init_temperature=0.5).create()
    state = agent.init(jax.random.PRNGKey(1), OBS, ACT)
    key = jax.random.PRNGKey(7)
    loss, metrics = agent.actor_loss(state, batch, key, state.actor.params)
    actions, log_probs = state.actor(batch.observations).sample_and_log_prob(key)
    q_min = q_values(state.critic.params, batch.observations, np.asarray(actions)).min(0)
    np.testing.assert_allclose(float(loss), np.mean(0.5 * np.asarray(log_probs) - q_min), rtol=1e-5)

    entropy = metrics["entropy"]
    t_loss, _ = agent.temperature_loss(state, entropy, state.temperature.params)
    np.testing.assert_allclose(float(t_loss), np.log(0.5) * (float(entropy) - (-ACT)), rtol=1e-5)
    # Entropy above target: the gradient step must lower the temperature.
    new_temp, _ = state.temperature.minimize(
        lambda p: agent.temperature_loss(state, jnp.float32(10.0), p)
    )
    assert float(new_temp()) < 0.5


def test_sac_without_entropy_backup(batch):
    agent = SACConfig(hidden_dims=(8,), backup_entropy=False, discount=0.99).create()
    state = agent.init(jax.random.PRNGKey(2), OBS, ACT)
    key = jax.random.PRNGKey(3)
    loss, _ = agent.critic_loss(state, batch, key, state.critic.params)
    next_actions, _ = state.actor(batch.next_observations).sample_and_log_prob(key)
    next_q = q_values(
        state.target_critic_params, batch.next_observations, np.asarray(next_actions)
    ).min(0)
    target = batch.rewards + 0.99 * (1 - batch.terminals) * next_q
    q = q_values(state.critic.params, batch.observations, batch.actions)
    np.testing.assert_allclose(float(loss), ((q - target) ** 2).mean(1).sum(), rtol=1e-5)


def test_sac_update_moves_target_by_polyak(batch):
    agent = SACConfig(hidden_dims=(8,), tau=0.25).create()
    state = agent.init(jax.random.PRNGKey(0), OBS, ACT)
    new, metrics = agent.update(state, batch, jax.random.PRNGKey(1))
    expected = jax.tree.map(
        lambda t, o: 0.75 * t + 0.25 * o, state.target_critic_params, new.critic.params
    )
    for got, want in zip(
        jax.tree.leaves(new.target_critic_params), jax.tree.leaves(expected), strict=True
    ):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    assert int(new.step) == 1 and set(metrics) >= {"critic_loss", "actor_loss", "temperature"}


def test_td3_critic_target_uses_clipped_smoothed_target_actions(batch):
    agent = TD3Config(hidden_dims=(8, 8), discount=0.9, policy_noise=0.2, noise_clip=0.5).create()
    state = agent.init(jax.random.PRNGKey(0), OBS, ACT)
    key = jax.random.PRNGKey(9)
    loss, _ = agent.critic_loss(state, batch, key, state.critic.params)

    mu = np.tanh(mlp_forward(state.target_actor_params["MLP_0"], batch.next_observations))
    noise = np.clip(0.2 * np.asarray(jax.random.normal(key, mu.shape)), -0.5, 0.5)
    next_actions = np.clip(mu + noise, -1, 1)
    next_q = q_values(state.target_critic_params, batch.next_observations, next_actions).min(0)
    target = batch.rewards + 0.9 * (1 - batch.terminals) * next_q
    q = q_values(state.critic.params, batch.observations, batch.actions)
    np.testing.assert_allclose(float(loss), ((q - target) ** 2).mean(1).sum(), rtol=1e-5)


def test_td3_actor_loss_uses_first_critic(batch):
    agent = TD3Config(hidden_dims=(8,)).create()
    state = agent.init(jax.random.PRNGKey(4), OBS, ACT)
    loss, _ = agent.actor_loss(state, batch, state.actor.params)
    actions = np.tanh(mlp_forward(state.actor.params["MLP_0"], batch.observations))
    expected = -q_values(state.critic.params, batch.observations, actions)[0].mean()
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)


def test_td3_delays_actor_and_target_updates(batch):
    agent = TD3Config(hidden_dims=(8,), policy_delay=2).create()
    state = agent.init(jax.random.PRNGKey(0), OBS, ACT)
    s1, m1 = agent.update(state, batch, jax.random.PRNGKey(1))  # step 1: critic only
    for a, b in zip(
        jax.tree.leaves(s1.actor.params), jax.tree.leaves(state.actor.params), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(
        jax.tree.leaves(s1.target_critic_params),
        jax.tree.leaves(state.target_critic_params),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    assert np.isnan(float(m1["actor_loss"]))
    s2, m2 = agent.update(s1, batch, jax.random.PRNGKey(2))  # step 2: actor and targets too
    changed = [
        not np.array_equal(a, b)
        for a, b in zip(
            jax.tree.leaves(s2.actor.params), jax.tree.leaves(s1.actor.params), strict=True
        )
    ]
    assert any(changed) and np.isfinite(float(m2["actor_loss"]))


def test_td3_exploration_noise_and_bounds():
    agent = TD3Config(hidden_dims=(8,), exploration_noise=0.3).create()
    state = agent.init(jax.random.PRNGKey(0), OBS, ACT)
    obs = jnp.zeros((2000, OBS))
    greedy = agent.act(state, obs, jax.random.PRNGKey(1), True)
    noisy = agent.act(state, obs, jax.random.PRNGKey(1), False)
    assert bool(jnp.all(jnp.abs(noisy) <= 1))
    assert abs(float(jnp.std(noisy - greedy)) - 0.3) < 0.03


@pytest.mark.parametrize(
    "name, overrides",
    [
        ("sac", {"actor_lr": -1.0}),
        ("sac", {"discount": 1.5}),
        ("td3", {"policy_delay": 0}),
        ("td3", {"tau": 0.0}),
    ],
)
def test_invalid_hyperparameters_are_rejected(name, overrides):
    with pytest.raises(ConfigError):
        make_agent(name, **overrides)


def test_unknown_algorithm():
    with pytest.raises(ConfigError, match="unknown algorithm"):
        make_agent("nope")
