"""PPO: its losses, GAE use, running statistics and rate annealing against NumPy float64
references on hand-made rollouts; the first minibatch's ratio; the CLI from scratch; learning.

Resume of a PPO run equal to an uninterrupted one is in tests/test_rollout.py (parametrised
over its test agent and PPO)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import gaussian_log_prob, numpy_gae

from o2o.agents import PPOConfig
from o2o.agents.ppo import (
    RunningMeanStd,
    annealed,
    discounted_returns,
    surrogate_loss,
    value_loss,
)
from o2o.core.rollout import Rollout, minibatch_epochs
from o2o.errors import ConfigError
from o2o.experiment.online import OnlineConfig
from o2o.experiment.rollout import RolloutTrainer, eval_interval
from o2o.experiment.runs import RunDir

OBS_DIM, ACT_DIM, T = 3, 2, 16


def small_ppo(**overrides):
    base = dict(
        rollout_length=T,
        epochs=2,
        num_minibatches=4,
        actor_hidden_dims=(8,),
        critic_hidden_dims=(8,),
        discount=0.9,
        gae_lambda=0.8,
    )
    return PPOConfig(**{**base, **overrides}).create()


def hand_made_rollout(agent, state, seed=0, obs_shift=0.0) -> Rollout:
    """A rollout with a terminal at t=4, a truncation at t=9 and a still-running episode at
    the end; log-probabilities and values are the collecting policy's."""
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(T, OBS_DIM)) * 3.0 + obs_shift
    next_obs = np.roll(obs, -1, axis=0)
    next_obs[[4, 9, T - 1]] = rng.normal(size=(3, OBS_DIM)) * 3.0 + obs_shift
    terminals, truncations = np.zeros(T), np.zeros(T)
    terminals[4], truncations[9] = 1.0, 1.0
    observations = jnp.asarray(obs, jnp.float32)
    actions, log_probs, values = agent.act_with_info(
        state, observations, jax.random.PRNGKey(seed + 1)
    )
    return Rollout(
        observations=observations,
        actions=actions,
        rewards=jnp.asarray(rng.normal(size=T) * 5.0, jnp.float32),
        next_observations=jnp.asarray(next_obs, jnp.float32),
        terminals=jnp.asarray(terminals, jnp.float32),
        truncations=jnp.asarray(truncations, jnp.float32),
        log_probs=log_probs,
        values=values,
    )


def numpy_moments(samples, prior_count=1e-4):
    """Mean and variance of the samples together with CleanRL's prior (a point of weight
    ``prior_count`` with mean 0 and variance 1), from raw moments."""
    samples = np.asarray(samples, np.float64)
    count = prior_count + len(samples)
    mean = samples.sum(axis=0) / count
    second = (prior_count * 1.0 + (samples**2).sum(axis=0)) / count
    return mean, second - mean**2


def test_surrogate_loss_matches_numpy_on_both_clip_sides():
    old = np.log(np.array([0.5, 0.5, 0.5, 0.5, 0.2, 0.9]))
    new = np.log(np.array([0.7, 0.3, 0.7, 0.3, 0.2, 0.99]))
    adv = np.array([1.0, 1.0, -2.0, -2.0, 3.0, -0.5])
    # By hand, ratio r and min(r·A, clip(r, 0.8, 1.2)·A):
    # r = 1.4, A>0 -> 1.2; r = 0.6, A>0 -> 0.6; r = 1.4, A<0 -> -2.8; r = 0.6, A<0 -> -1.6;
    # r = 1, -> 3; r = 1.1, A<0 -> -0.55.
    want = -np.mean([1.2, 0.6, -2.8, -1.6, 3.0, -0.55])
    loss, ratio = surrogate_loss(*(jnp.asarray(x, jnp.float32) for x in (new, old, adv)), 0.2)
    np.testing.assert_allclose(ratio, [1.4, 0.6, 1.4, 0.6, 1.0, 1.1], rtol=1e-6)
    np.testing.assert_allclose(float(loss), want, rtol=1e-6)


def test_value_loss_clipped_and_plain_match_numpy():
    values = np.array([1.0, 2.0, -1.0, 0.5])
    old = np.array([0.0, 2.5, -1.1, 0.5])
    returns = np.array([2.0, 0.0, 0.0, -1.0])
    plain = 0.5 * np.mean((values - returns) ** 2)
    # clipped predictions: 0 + clip(1, ±.2) = .2; 2.5 - .2 = 2.3; -1.1 + .1 = -1; .5
    clipped_pred = np.array([0.2, 2.3, -1.0, 0.5])
    clipped = 0.5 * np.mean(np.maximum((values - returns) ** 2, (clipped_pred - returns) ** 2))
    args = [jnp.asarray(x, jnp.float32) for x in (values, old, returns)]
    np.testing.assert_allclose(float(value_loss(*args, None)), plain, rtol=1e-6)
    np.testing.assert_allclose(float(value_loss(*args, 0.2)), clipped, rtol=1e-6)
    assert clipped > plain  # the clipped one is the pessimistic maximum


def test_actor_loss_is_surrogate_minus_entropy_bonus():
    agent = small_ppo(entropy_coef=0.3)
    state = agent.init(jax.random.PRNGKey(0), OBS_DIM, ACT_DIM)
    _, batch = agent.process_rollout(state, hand_made_rollout(agent, state), jax.random.PRNGKey(2))
    # Move the policy off the collecting one so the ratios differ from 1.
    params = jax.tree.map(lambda x: x + 0.05, state.actor.params)
    loss, metrics = agent.actor_loss(state, batch, params)
    policy = state.actor(batch.observations, params=params)
    mean = np.asarray(policy.mean, np.float64)
    log_std = np.asarray(policy.log_std, np.float64)
    log_probs = gaussian_log_prob(batch.actions, mean, log_std)
    ratio = np.exp(log_probs - np.asarray(batch.log_probs, np.float64))
    adv = np.asarray(batch.advantages, np.float64)
    surrogate = -np.mean(np.minimum(ratio * adv, np.clip(ratio, 0.8, 1.2) * adv))
    entropy = np.mean(np.sum(log_std + 0.5 * np.log(2 * np.pi * np.e), axis=-1))
    assert not np.allclose(ratio, 1.0)
    np.testing.assert_allclose(float(metrics["entropy"]), entropy, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["actor_loss"]), surrogate, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(float(loss), surrogate - 0.3 * entropy, rtol=1e-4, atol=1e-6)


def test_process_rollout_gae_and_normalisations_match_numpy():
    """Two rollouts in a row: rewards scaled by the running std of the discounted return
    (carried across rollouts), GAE with V(s') of the collecting parameters and statistics,
    advantages normalised over the rollout, observations normalised with the statistics the
    rollout was collected under, and those statistics merged afterwards."""
    agent = small_ppo()
    state = agent.init(jax.random.PRNGKey(0), OBS_DIM, ACT_DIM)
    c = agent.config
    first = hand_made_rollout(agent, state, seed=0)
    state1, batch1 = agent.process_rollout(state, first, jax.random.PRNGKey(5))
    second = hand_made_rollout(agent, state1, seed=1, obs_shift=2.0)
    state2, batch2 = agent.process_rollout(state1, second, jax.random.PRNGKey(6))

    f64 = lambda x: np.asarray(x, np.float64)  # noqa: E731
    all_returns, carried = [], 0.0
    for rollout, collected, batch in ((first, state, batch1), (second, state1, batch2)):
        r = jax.tree.map(f64, rollout)
        returns = np.zeros(T)
        for t in range(T):
            carried = carried * c.discount + r.rewards[t]
            returns[t] = carried
            if r.terminals[t] or r.truncations[t]:
                carried = 0.0
        all_returns.extend(returns)
        _, var = numpy_moments(np.array(all_returns))
        rewards = np.clip(r.rewards / np.sqrt(var + 1e-8), -10, 10)
        # The collecting statistics, applied to s and s' alike.
        obs_mean = f64(collected.observation_stats.mean)
        obs_std = np.sqrt(f64(collected.observation_stats.var) + 1e-8)
        seen = np.clip((r.observations - obs_mean) / obs_std, -10, 10)
        next_seen = np.clip((r.next_observations - obs_mean) / obs_std, -10, 10)
        next_values = f64(collected.critic(jnp.asarray(next_seen, jnp.float32)))
        adv, ret = numpy_gae(
            rewards, r.values, next_values, r.terminals, r.truncations, c.discount, c.gae_lambda
        )
        np.testing.assert_allclose(batch.returns, ret, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(
            batch.advantages, (adv - adv.mean()) / (adv.std() + 1e-8), rtol=1e-4, atol=1e-4
        )
        np.testing.assert_allclose(batch.observations, seen, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(batch.log_probs, rollout.log_probs)
    np.testing.assert_allclose(state2.discounted_return, carried, rtol=1e-5)
    mean, var = numpy_moments(np.concatenate([f64(first.observations), f64(second.observations)]))
    np.testing.assert_allclose(state2.observation_stats.mean, mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state2.observation_stats.var, var, rtol=1e-5)
    assert not np.allclose(state1.observation_stats.mean, state2.observation_stats.mean)


def test_running_statistics_merge_like_numpy_over_uneven_batches():
    rng = np.random.default_rng(3)
    batches = [rng.normal(2.0, 3.0, size=(n, 4)) for n in (1, 7, 50, 3)]
    stats = RunningMeanStd.create((4,))
    for i, batch in enumerate(batches, 1):
        stats = stats.merge(jnp.asarray(batch, jnp.float32))
        mean, var = numpy_moments(np.concatenate(batches[:i]))
        np.testing.assert_allclose(stats.mean, mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(stats.var, var, rtol=1e-5)
        assert float(stats.count) == pytest.approx(1e-4 + sum(len(b) for b in batches[:i]))


def test_discounted_returns_reset_at_episode_ends_and_carry_over():
    rewards = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    ends = np.array([0.0, 1.0, 0.0, 0.0, 0.0])
    # Carried G = 10 from the last rollout, γ = 0.5: 5 + 1, 3 + 2 (end), 3, 1.5 + 4, 2.75 + 5.
    got = discounted_returns(jnp.asarray(rewards), jnp.asarray(ends), 0.5, jnp.float32(10.0))
    np.testing.assert_allclose(got, [6.0, 5.0, 3.0, 5.5, 7.75])


def test_learning_rate_anneals_per_rollout_to_zero():
    config = PPOConfig(rollout_length=64, num_minibatches=4, epochs=2, anneal_steps=256)
    schedule = annealed(1.0, config)  # 8 optimizer steps per rollout, 4 rollouts
    got = [float(schedule(jnp.int32(n))) for n in (0, 7, 8, 16, 31, 32, 100)]
    assert got == [1.0, 1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
    assert annealed(1.0, PPOConfig(anneal_lr=False)) == 1.0


def test_ratio_is_one_and_the_clip_inactive_at_the_first_minibatch():
    agent = small_ppo()
    state = agent.init(jax.random.PRNGKey(0), OBS_DIM, ACT_DIM)
    state, batch = agent.process_rollout(
        state, hand_made_rollout(agent, state), jax.random.PRNGKey(1)
    )
    _, _, metrics = minibatch_epochs(agent.update, state, batch, jax.random.PRNGKey(2), 2, 4)
    np.testing.assert_allclose(metrics["ratio"][0, 0], 1.0, atol=1e-6)
    assert float(metrics["clip_fraction"][0, 0]) == 0.0
    assert abs(float(metrics["approx_kl"][0, 0])) < 1e-6
    assert float(jnp.abs(metrics["ratio"][1] - 1.0).max()) > 1e-4  # later ones moved
    # At ratio 1 the clipped loss (and its gradient) equals the plain -E[ratio·A].
    minibatch = jax.tree.map(lambda x: x[:4], batch)

    def plain(params):
        log_probs = state.actor(minibatch.observations, params=params).log_prob(minibatch.actions)
        return -jnp.mean(jnp.exp(log_probs - minibatch.log_probs) * minibatch.advantages)

    def clipped(params):
        return agent.actor_loss(state, minibatch, params)[1]["actor_loss"]

    np.testing.assert_allclose(clipped(state.actor.params), plain(state.actor.params), rtol=1e-6)
    for x, y in zip(
        jax.tree.leaves(jax.grad(clipped)(state.actor.params)),
        jax.tree.leaves(jax.grad(plain)(state.actor.params)),
        strict=True,
    ):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)


def test_o2ppo_preset_has_the_iql_actors_parameter_layout():
    from o2o.agents import IQLConfig

    ppo = PPOConfig.for_finetuning().create().init(jax.random.PRNGKey(0), 11, 3)
    iql = IQLConfig().create().init(jax.random.PRNGKey(0), 11, 3)
    shapes = lambda tree: jax.tree.map(np.shape, tree)  # noqa: E731
    assert shapes(ppo.actor.params) == shapes(iql.actor.params)
    assert PPOConfig.for_finetuning(epochs=5).rollout_spec.minibatch_size == 128


def test_eval_interval_rounds_up_to_whole_rollouts_for_on_policy_agents():
    from o2o.agents import SACConfig

    assert eval_interval(PPOConfig(), 5000) == 6144
    assert eval_interval(PPOConfig(), 4096) == 4096
    assert eval_interval(SACConfig(), 5000) == 5000


def test_bad_ppo_settings_are_config_errors():
    with pytest.raises(ConfigError, match="multiple of num_minibatches"):
        PPOConfig(rollout_length=100)
    with pytest.raises(ConfigError, match="actor_activation"):
        PPOConfig(actor_activation="gelu")
    with pytest.raises(ConfigError, match="clip_ratio"):
        PPOConfig(clip_ratio=0.0)


def test_cli_trains_ppo_from_scratch(tmp_path, capsys):
    from o2o.cli import main

    argv = ["train", "--env", "Pendulum-v1", "--algo", "ppo", "--steps", "96"]
    argv += ["--eval-every", "50", "--eval-episodes", "1", "--runs-dir", str(tmp_path)]
    argv += ["--name", "p", "--no-progress", "--set", "rollout_length=32"]
    argv += ["--set", "num_minibatches=4", "--set", "actor_hidden_dims=[8]"]
    assert main(argv) == 0
    assert "ppo on Pendulum-v1: final return" in capsys.readouterr().out
    rows = RunDir(tmp_path / "p").rows()
    # --eval-every 50 became two rollouts (64); 96 steps are three rollouts.
    assert [r["step"] for r in rows] == [64, 96]
    assert {"train/approx_kl", "train/entropy", "train/value_loss"} <= set(rows[-1])
    assert rows[-1]["updates"] == 3 * 10 * 4
    config = (tmp_path / "p" / "config.yaml").read_text()
    assert "anneal_steps: 96" in config  # the rate anneals over the run's steps


@pytest.mark.slow
def test_ppo_learns_inverted_pendulum():
    """CleanRL's defaults on InvertedPendulum-v5, two seeds on the vmapped axis (40 s to 2 min
    on one shared core). The initial greedy policies balance 23 and 25 steps (5 episodes);
    measured after 8k/16k/24k/32k/40k steps: [60, 65], [85, 95], [130, 233], [1000, 176],
    [313, 461]. 40k is the first evaluation at which both seeds pass 200."""
    budget = 40960
    agent = PPOConfig(anneal_steps=budget).create()
    config = OnlineConfig(
        env="InvertedPendulum-v5",
        steps=budget,
        eval_every=8192,
        eval_episodes=5,
        seeds=2,
        random_steps=0,
        update_after=0,
    )
    trainer = RolloutTrainer(agent, config)
    try:
        result = trainer.run(progress=False)
    finally:
        trainer.close()
    curve = [row["seed_returns"] for row in result.rows]
    assert min(curve[-1]) > 200 and max(curve[0]) < 100, curve
