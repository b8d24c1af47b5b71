"""SPOT: the VAE density term (ELBO and IWAE), the VAE training loss, the actor and critic losses
against float64 numpy; VAE pre-training phase; online discount, λ cooling and optimizer restart;
output-layer init; a custom target; learning on the bandit task; config checks."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from o2o.agents import make_agent
from o2o.agents.spot import MAZE_LAMBDA, SPOTConfig
from o2o.core.hooks import CustomTarget
from o2o.errors import ConfigError
from tests.helpers import BanditTask, mlp_forward, q_values, tiny_batch, train_fused

OBS, ACT = 3, 2
SMALL = dict(hidden_dims=(8, 8), vae_hidden_dims=(16, 16))


@pytest.fixture
def batch():
    return tiny_batch(np.random.default_rng(0), 5, OBS, ACT)


def dense(layer, x):
    return x @ np.asarray(layer["kernel"], np.float64) + np.asarray(layer["bias"], np.float64)


def vae_encode(params, obs, act):
    h = np.maximum(
        mlp_forward(params["encoder"], np.concatenate([obs, act], -1)), 0.0
    )  # all hidden
    log_std = np.clip(dense(params["log_std_head"], h), -4, 15)
    return dense(params["mean_head"], h), np.exp(log_std)


def vae_decode(params, obs, z):
    obs = np.broadcast_to(obs, (*z.shape[:-1], obs.shape[-1]))
    return np.tanh(mlp_forward(params["decoder"], np.concatenate([obs, z], -1)))


def density_by_hand(params, obs, act, key, beta, num_samples):
    """Per-sample mean squared reconstruction error + beta * KL (mean over latent dims)."""
    obs, act = np.asarray(obs, np.float64), np.asarray(act, np.float64)
    mean, std = vae_encode(params, obs, act)
    eps = np.asarray(jax.random.normal(key, (num_samples, *mean.shape)), np.float64)
    recon = vae_decode(params, obs, mean + std * eps)
    recon_error = ((recon - act) ** 2).mean(axis=(0, -1))
    kl = -0.5 * (1 + np.log(std**2) - mean**2 - std**2).mean(-1)
    return recon_error, kl


def actor_forward(actor_params, obs):
    return np.tanh(mlp_forward(actor_params["MLP_0"], obs))


def trained_vae_state(agent, batch, steps=5):
    """A state whose VAE has had a few updates (so the encoder's std is not at its init)."""
    state = agent.init(jax.random.PRNGKey(0), OBS, ACT)
    pretrain = jax.jit(agent.pretrain_update)
    for i in range(steps):
        state, _ = pretrain(state, batch, jax.random.PRNGKey(100 + i))
    return state


@pytest.mark.parametrize("num_samples", [1, 3])
def test_density_term_is_reconstruction_plus_beta_kl(batch, num_samples):
    agent = SPOTConfig(**SMALL, beta=0.7, num_samples=num_samples).create()
    state = trained_vae_state(agent, batch)
    key = jax.random.PRNGKey(9)
    actions = jnp.asarray(np.random.default_rng(3).uniform(-1, 1, (5, ACT)), jnp.float32)
    density = agent.density_penalty(state, batch.observations, actions, key)
    recon, kl = density_by_hand(
        state.vae.params, batch.observations, actions, key, 0.7, num_samples
    )
    np.testing.assert_allclose(density, recon + 0.7 * kl, rtol=1e-4, atol=1e-6)


def test_iwae_density_is_importance_weighted_log_likelihood(batch):
    agent = SPOTConfig(**SMALL, beta=0.5, iwae=True, num_samples=4).create()
    state = trained_vae_state(agent, batch)
    key = jax.random.PRNGKey(2)
    density = agent.density_penalty(state, batch.observations, batch.actions, key)

    obs, act = np.asarray(batch.observations, np.float64), np.asarray(batch.actions, np.float64)
    mean, std = vae_encode(state.vae.params, obs, act)
    z = mean + std * np.asarray(jax.random.normal(key, (4, *mean.shape)), np.float64)
    recon = vae_decode(state.vae.params, obs, z)

    def log_normal(x, mu, sigma):
        return np.sum(-0.5 * ((x - mu) / sigma) ** 2 - np.log(sigma) - 0.5 * np.log(2 * np.pi), -1)

    log_w = (
        log_normal(act, recon, math.sqrt(0.5 / 4))
        + log_normal(z, 0.0, 1.0)
        - log_normal(z, mean, std)
    )
    top = log_w.max(0)
    log_likelihood = top + np.log(np.exp(log_w - top).sum(0)) - np.log(4)
    np.testing.assert_allclose(density, -log_likelihood, rtol=1e-4)


def test_vae_loss_and_pretraining_touch_only_the_vae(batch):
    agent = SPOTConfig(**SMALL, beta=0.5).create()
    state = agent.init(jax.random.PRNGKey(0), OBS, ACT)
    key = jax.random.PRNGKey(4)
    loss, metrics = agent.vae_loss(state, batch, key, state.vae.params)
    recon, kl = density_by_hand(state.vae.params, batch.observations, batch.actions, key, 0.5, 1)
    np.testing.assert_allclose(float(loss), np.mean(recon + 0.5 * kl), rtol=1e-4)
    np.testing.assert_allclose(float(metrics["vae_kl"]), kl.mean(), rtol=1e-4)

    new, _ = agent.pretrain_update(state, batch, key)
    assert int(new.step) == 0 and agent.phases()[0].steps == 100_000
    for same in ((new.actor.params, state.actor.params), (new.critic.params, state.critic.params)):
        assert all(np.array_equal(a, b) for a, b in zip(*map(jax.tree.leaves, same), strict=True))
    assert not all(
        np.array_equal(a, b)
        for a, b in zip(
            jax.tree.leaves(new.vae.params), jax.tree.leaves(state.vae.params), strict=True
        )
    )
    # ...and the actor-critic update never changes the VAE.
    after, _ = agent.update(new, batch, key)
    assert all(
        np.array_equal(a, b)
        for a, b in zip(
            jax.tree.leaves(after.vae.params), jax.tree.leaves(new.vae.params), strict=True
        )
    )


def test_actor_loss_is_normalised_q_plus_lambda_density(batch):
    agent = SPOTConfig(**SMALL, beta=0.5).create()
    state = trained_vae_state(agent, batch)
    key = jax.random.PRNGKey(6)
    loss, metrics = agent.actor_loss(state, batch, key, jnp.float32(0.3), state.actor.params)
    actions = actor_forward(state.actor.params, np.asarray(batch.observations, np.float64))
    q1 = q_values(state.critic.params, batch.observations, actions)[0]
    recon, kl = density_by_hand(state.vae.params, batch.observations, actions, key, 0.5, 1)
    expected = -q1.mean() / np.abs(q1).mean() + 0.3 * np.mean(recon + 0.5 * kl)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-4)
    np.testing.assert_allclose(float(metrics["neg_log_beta"]), np.mean(recon + 0.5 * kl), rtol=1e-4)

    # The density term pushes the actor: its gradient is non-zero through the frozen VAE.
    grads = jax.grad(lambda p: agent.actor_loss(state, batch, key, 1.0, p)[0])(state.actor.params)
    assert any(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grads))


def test_critic_loss_uses_smoothed_target_and_online_discount(batch):
    agent = SPOTConfig(**SMALL).create().for_online()
    assert agent.config.discount == 0.995 and agent.config.online_phase
    state = agent.init(jax.random.PRNGKey(1), OBS, ACT)
    state = state.replace(
        target_critic_params=jax.tree.map(lambda x: 1.2 * x, state.target_critic_params)
    )
    key = jax.random.PRNGKey(3)
    loss, _ = agent.critic_loss(state, batch, key, state.critic.params)
    target_actions = actor_forward(
        state.target_actor_params, np.asarray(batch.next_observations, np.float64)
    )
    noise = np.clip(0.2 * np.asarray(jax.random.normal(key, target_actions.shape)), -0.5, 0.5)
    next_actions = np.clip(target_actions + noise, -1, 1)
    next_q = q_values(state.target_critic_params, batch.next_observations, next_actions).min(0)
    target = batch.rewards + 0.995 * (1 - batch.terminals) * next_q
    q = q_values(state.critic.params, batch.observations, batch.actions)
    np.testing.assert_allclose(float(loss), ((q - target) ** 2).mean(1).sum(), rtol=1e-5)


def test_custom_target_replaces_the_bootstrap_value(batch):
    agent = SPOTConfig(**SMALL, discount=0.5).create(
        CustomTarget(lambda e, inputs: jnp.full_like(inputs.next_value, -2.0))
    )
    state = agent.init(jax.random.PRNGKey(0), OBS, ACT)
    loss, _ = agent.critic_loss(state, batch, jax.random.PRNGKey(0), state.critic.params)
    target = batch.rewards + 0.5 * (1 - batch.terminals) * -2.0
    q = q_values(state.critic.params, batch.observations, batch.actions)
    np.testing.assert_allclose(float(loss), ((q - target) ** 2).mean(1).sum(), rtol=1e-5)


def test_online_phase_records_its_start_cools_lambda_and_restarts_adam(batch):
    offline = SPOTConfig(
        **SMALL, policy_delay=1, lambd=0.4, lambd_cool=True, lambd_end=0.2, lambd_cool_steps=4
    ).create()
    state = offline.init(jax.random.PRNGKey(0), OBS, ACT)
    offline_update = jax.jit(offline.update)
    for i in range(3):
        state, metrics = offline_update(state, batch, jax.random.PRNGKey(i))
    assert float(metrics["lambd"]) == pytest.approx(0.4)  # no cooling offline
    assert int(state.online_start_step) == -1 and int(state.actor.opt_state[0].count) == 3

    online = offline.for_online()
    online_update = jax.jit(online.update)
    lambdas = []
    for i in range(4):
        state, metrics = online_update(state, batch, jax.random.PRNGKey(10 + i))
        lambdas.append(float(metrics["lambd"]))
        if i == 0:  # Adam restarted at the first online update: one step counted since.
            assert (
                int(state.actor.opt_state[0].count) == 1
                and int(state.critic.opt_state[0].count) == 1
            )
    assert int(state.online_start_step) == 3 and int(state.step) == 7
    # lambda * max(end, 1 - t / T) with t = 1..4 online updates, T = 4.
    np.testing.assert_allclose(lambdas, [0.4 * max(0.2, 1 - t / 4) for t in range(1, 5)], rtol=1e-6)


def test_output_layers_initialised_uniformly_for_maze():
    config = SPOTConfig.for_domain("maze", **SMALL)
    assert config.lambd == MAZE_LAMBDA["medium"] and config.lambd_cool
    state = config.create().init(jax.random.PRNGKey(0), OBS, ACT)
    actor_head = state.actor.params["MLP_0"]["Dense_2"]
    critic_head = state.critic.params["VmapStateActionValue_0"]["MLP_0"]["Dense_2"]
    for head, scale in ((actor_head, 1e-3), (critic_head, 3e-3)):
        for leaf in (head["kernel"], head["bias"]):
            assert 0 < float(jnp.abs(leaf).max()) <= scale
    assert not np.allclose(critic_head["kernel"][0], critic_head["kernel"][1])  # per-member draws
    default = SPOTConfig(**SMALL).create().init(jax.random.PRNGKey(0), OBS, ACT)
    assert float(jnp.abs(default.actor.params["MLP_0"]["Dense_2"]["kernel"]).max()) > 1e-2


def test_act_deterministic_and_clipped_exploration():
    agent = SPOTConfig(**SMALL, exploration_noise=10.0, noise_clip=0.5).create()
    state = agent.init(jax.random.PRNGKey(0), OBS, ACT)
    obs = jnp.asarray(np.random.default_rng(0).normal(size=(7, OBS)), jnp.float32)
    mean = agent.act(state, obs, jax.random.PRNGKey(0), True)
    np.testing.assert_allclose(
        mean, actor_forward(state.actor.params, np.asarray(obs, np.float64)), rtol=1e-5, atol=1e-6
    )
    noisy = agent.act(state, obs, jax.random.PRNGKey(1), False)
    assert float(jnp.abs(noisy - mean).max()) <= 0.5 + 1e-6 and float(jnp.abs(noisy).max()) <= 1.0


def test_spot_improves_over_its_initial_policy():
    agent = SPOTConfig(
        hidden_dims=(32, 32), vae_hidden_dims=(32, 32), lambd=0.1, actor_lr=1e-3
    ).create()
    task = BanditTask()
    state = agent.init(jax.random.PRNGKey(0), task.obs_dim, task.act_dim)
    obs = task.observations(1000, seed=7)
    before = task.score(agent.act(state, obs, None, True), obs)
    # The two phases as a pipeline runs them: VAE pre-training, then actor-critic updates.
    state, vae_metrics = train_fused(agent.pretrain_update, state, task.dataset(), steps=200)
    state, metrics = train_fused(agent, state, task.dataset(), steps=400)
    after = task.score(agent.act(state, obs, None, True), obs)
    assert np.isfinite(float(metrics["critic_loss"])) and float(vae_metrics["vae_loss"]) < 0.5
    assert after > before + 0.05, (before, after)  # measured: -0.199 -> -0.078


def test_registry_and_locomotion_defaults():
    assert SPOTConfig.for_domain("locomotion") == SPOTConfig()
    c = SPOTConfig()
    assert (c.actor_lr, c.critic_lr, c.vae_lr, c.beta, c.vae_hidden_dims, c.online_discount) == (
        1e-4,
        3e-4,
        1e-3,
        0.5,
        (750, 750),
        0.995,
    )
    assert type(make_agent("spot")).__name__ == "SPOT"


@pytest.mark.parametrize(
    "overrides",
    [
        {"actor_lr": -1.0},
        {"vae_lr": 0.0},
        {"lambd": -0.1},
        {"beta": -1.0},
        {"online_discount": 1.2},
        {"num_samples": 0},
        {"policy_delay": 0},
        {"vae_latent_dim": 0},
        {"actor_head_init": -1e-3},
    ],
)
def test_invalid_hyperparameters_are_rejected(overrides):
    with pytest.raises(ConfigError):
        SPOTConfig(**overrides)


def test_unknown_domain_is_rejected():
    with pytest.raises(ConfigError):
        SPOTConfig.for_domain("pixels")
