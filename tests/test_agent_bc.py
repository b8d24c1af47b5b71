"""BC: the MSE and log-likelihood losses by hand, learning on a tiny offline task, config checks."""

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from o2o.agents import make_agent
from o2o.agents.bc import BCConfig
from o2o.core.hooks import Hooks
from o2o.errors import ConfigError
from tests.helpers import bandit_scores_before_after, gaussian_log_prob, mlp_forward, tiny_batch

OBS, ACT = 3, 2


@pytest.fixture
def batch():
    return tiny_batch(np.random.default_rng(0), 4, OBS, ACT)


def test_deterministic_bc_is_mean_squared_error(batch):
    agent = BCConfig(hidden_dims=(8, 8)).create()
    state = agent.init(jax.random.PRNGKey(0), OBS, ACT)
    loss, metrics = agent.actor_loss(state, batch, jax.random.PRNGKey(1), state.actor.params)
    predicted = np.tanh(mlp_forward(state.actor.params["MLP_0"], batch.observations))
    np.testing.assert_allclose(float(loss), np.mean((predicted - batch.actions) ** 2), rtol=1e-5)
    assert float(metrics["mse"]) == pytest.approx(float(loss))


def test_gaussian_bc_is_negative_log_likelihood(batch):
    agent = BCConfig(hidden_dims=(8,), policy="gaussian").create()
    state = agent.init(jax.random.PRNGKey(0), OBS, ACT)
    params = {**state.actor.params, "log_std": jnp.array([-0.7, 0.4])}
    loss, _ = agent.actor_loss(state, batch, jax.random.PRNGKey(1), params)
    mean = np.tanh(mlp_forward(params["MLP_0"], batch.observations))
    expected = -np.mean(gaussian_log_prob(batch.actions, mean, np.array([-0.7, 0.4])))
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)


def test_log_std_is_clipped(batch):
    agent = BCConfig(hidden_dims=(8,), policy="gaussian").create()
    state = agent.init(jax.random.PRNGKey(0), OBS, ACT)
    params = {**state.actor.params, "log_std": jnp.array([-30.0, 5.0])}
    dist = state.actor(batch.observations, params=params)
    np.testing.assert_allclose(np.asarray(dist.log_std[0]), [-20.0, 2.0])


@pytest.mark.parametrize("policy", ["deterministic", "gaussian"])
def test_bc_improves_over_its_initial_policy(policy):
    agent = BCConfig(hidden_dims=(64, 64), actor_lr=1e-3, policy=policy).create()
    before, after, metrics = bandit_scores_before_after(agent, steps=300)
    # BC imitates the mixture, so it shrinks towards the random half's mean (0): better than its
    # start and the data's average action, not optimal.
    assert after > before + 0.1, (before, after)
    assert np.isfinite(float(metrics["actor_loss"]))


@dataclass(frozen=True)
class PullToZero(Hooks):
    """An actor penalty: weight * mean |a|^2 over the actions the actor proposes."""

    weight: float = 10.0

    def actor_penalty(self, extras, inputs):
        penalty = self.weight * jnp.mean(jnp.sum(inputs.actions**2, axis=-1))
        return penalty, {"pull": penalty}


def test_actor_penalty_hook_is_added(batch):
    config = BCConfig(hidden_dims=(8,))
    plain, hooked = config.create(), config.create(PullToZero())
    state = plain.init(jax.random.PRNGKey(0), OBS, ACT)
    base, _ = plain.actor_loss(state, batch, jax.random.PRNGKey(1), state.actor.params)
    total, metrics = hooked.actor_loss(state, batch, jax.random.PRNGKey(1), state.actor.params)
    actions = np.tanh(mlp_forward(state.actor.params["MLP_0"], batch.observations))
    np.testing.assert_allclose(float(total - base), 10 * np.mean(np.sum(actions**2, -1)), rtol=1e-5)
    assert "pull" in metrics


@pytest.mark.parametrize("policy", ["deterministic", "gaussian"])
def test_act_is_bounded_and_deterministic_when_asked(policy):
    agent = BCConfig(hidden_dims=(8,), policy=policy, exploration_noise=2.0).create()
    state = agent.init(jax.random.PRNGKey(0), OBS, ACT)
    obs = jnp.asarray(np.random.default_rng(0).normal(size=(500, OBS)) * 5, jnp.float32)
    noisy = agent.act(state, obs, jax.random.PRNGKey(1), False)
    greedy = agent.act(state, obs, jax.random.PRNGKey(1), True)
    assert noisy.shape == (500, ACT) and bool(jnp.all(jnp.abs(noisy) <= 1))
    np.testing.assert_array_equal(greedy, agent.act(state, obs, jax.random.PRNGKey(2), True))
    assert not np.allclose(noisy, greedy)


def test_domains_and_online_switch():
    assert BCConfig.for_domain("maze") == BCConfig()
    agent = BCConfig().create()
    assert agent.for_online() == agent
    with pytest.raises(ConfigError, match="domain"):
        BCConfig.for_domain("atari")


@pytest.mark.parametrize(
    "overrides",
    [{"actor_lr": -1.0}, {"policy": "mixture"}, {"exploration_noise": -0.1}, {"hidden_dims": (0,)}],
)
def test_invalid_hyperparameters_are_rejected(overrides):
    with pytest.raises(ConfigError):
        make_agent("bc", **overrides)
