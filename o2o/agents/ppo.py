"""Proximal Policy Optimization (Schulman et al. 2017), following CleanRL's
``ppo_continuous_action.py`` (and purejaxrl's MuJoCo settings).

An on-policy agent (``o2o.core.rollout`` holds the protocol and the fused update): once per
rollout ``process_rollout`` normalises observations with the statistics the rollout was
collected under, scales rewards by a running std of the discounted return, estimates GAE
advantages, lets a fine-tuning method change them (O2PPO's reference-advantage blend), and
normalises them; then ``epochs`` passes of shuffled minibatches each run ``update``:

  ratio  = π(a|s) / π_old(a|s)
  L_clip = -E[min(ratio·A, clip(ratio, 1 ± ε)·A)]                  (actor, with -c_H·H[π])
  L_V    = ½·E[max((V − R)², (V_old + clip(V − V_old, ±ε) − R)²)]  (critic, unclipped optional)

Actor and critic have separate Adam optimizers (eps 1e-5) with global-norm gradient clipping,
their rates annealed linearly to 0 per rollout over ``anneal_steps`` env steps (CleanRL's
``anneal_lr``; the pipeline sets it to the run's online budget).

Observation and reward normalisation are CleanRL's ``NormalizeObservation`` /
``NormalizeReward`` wrappers moved into the agent state (so they are vmapped over seeds and
checkpointed). Reconstructed detail: the wrappers update their statistics every env step;
here they are merged once per rollout (Chan et al.'s parallel update), so a whole rollout is
collected and learned from under one set of statistics and the stored log-probabilities stay
exact. The first rollout is collected unnormalised (mean 0, variance 1, CleanRL's prior).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from o2o.core.agent import AgentBase, AgentConfig
from o2o.core.hooks import NO_HOOKS, Hooks
from o2o.core.networks import GaussianPolicy, StateValue
from o2o.core.rollout import Rollout, RolloutBatch, RolloutSpec, estimate_advantages
from o2o.core.train_state import TrainState, adam
from o2o.errors import check_fields

ACTIVATIONS = {"tanh": nn.tanh, "relu": nn.relu}


@dataclass(frozen=True)
class PPOConfig(AgentConfig):
    # Defaults: CleanRL's ppo_continuous_action (MuJoCo), as purejaxrl's.
    rollout_length: int = 2048  # env steps per seed per rollout
    epochs: int = 10
    num_minibatches: int = 32
    discount: float = 0.99
    gae_lambda: float = 0.95
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    anneal_lr: bool = True  # linear decay to 0 over anneal_steps, stepped once per rollout
    anneal_steps: int = 1_000_000  # env steps; fitted to the run's online budget
    adam_eps: float = 1e-5
    max_grad_norm: float = 0.5  # per network (actor and critic have separate optimizers)
    clip_ratio: float = 0.2
    clip_value_loss: bool = True  # CleanRL's clip_vloss (OCR-CFT's O2PPO: False)
    value_coef: float = 0.5
    entropy_coef: float = 0.0
    normalize_advantages: bool = True  # over the whole rollout (see process_rollout)
    normalize_observations: bool = True  # running statistics in the state
    normalize_rewards: bool = True  # divide by the running std of the discounted return
    observation_clip: float = 10.0
    reward_clip: float = 10.0
    actor_hidden_dims: tuple[int, ...] = (64, 64)
    critic_hidden_dims: tuple[int, ...] = (64, 64)
    actor_activation: str = "tanh"
    critic_activation: str = "tanh"
    tanh_mean: bool = False  # True: μ = tanh(f(s)), CORL IQL's actor (O2PPO loads one)
    actor_final_scale: float = 0.01  # orthogonal gain of the mean's layer (CleanRL)
    log_std_min: float = -20.0
    log_std_max: float = 2.0

    budget_fields = {"anneal_steps": "online"}

    def __post_init__(self) -> None:
        check_fields(
            self,
            positive=(
                "actor_lr",
                "critic_lr",
                "anneal_steps",
                "adam_eps",
                "max_grad_norm",
                "clip_ratio",
                "observation_clip",
                "reward_clip",
                "actor_final_scale",
            ),
            non_negative=("value_coef", "entropy_coef"),
            hidden_dims=("actor_hidden_dims", "critic_hidden_dims"),
            choices={
                "actor_activation": tuple(ACTIVATIONS),
                "critic_activation": tuple(ACTIVATIONS),
            },
        )
        self.rollout_spec  # validates the rollout shape  # noqa: B018

    @property
    def rollout_spec(self) -> RolloutSpec:
        return RolloutSpec(
            self.rollout_length, self.epochs, self.num_minibatches, self.discount, self.gae_lambda
        )

    @classmethod
    def for_finetuning(cls, **overrides: Any) -> PPOConfig:
        """PPO fine-tuning another algorithm's actor: OCR-CFT's O2PPO settings (methods.md §2.3, Uni-O4's ``ppo.py``): the
        CORL IQL actor (2×256 ReLU, tanh mean), a 3×256 tanh V, minibatches of 128, entropy
        0.01, rates 3e-5 / 2e-4, no value clipping; states normalised with the dataset's fixed
        statistics (the pipeline's), rewards raw (O2PPO on HalfCheetah turns the scaling on)."""
        preset = dict(
            num_minibatches=16,  # 2048 / 128
            actor_lr=3e-5,
            critic_lr=2e-4,
            clip_value_loss=False,
            entropy_coef=0.01,
            normalize_observations=False,
            normalize_rewards=False,
            actor_hidden_dims=(256, 256),
            critic_hidden_dims=(256, 256, 256),
            actor_activation="relu",
            tanh_mean=True,
            actor_final_scale=1.0,
        )
        return cls(**{**preset, **overrides})

    def create(self, hooks: Hooks = NO_HOOKS) -> PPO:
        return PPO(self, hooks)


@struct.dataclass
class RunningMeanStd:
    """Mean and (population) variance of everything merged so far; ``count`` starts at a
    tiny prior weight on (mean 0, variance 1), as CleanRL's ``RunningMeanStd``."""

    mean: jax.Array
    var: jax.Array
    count: jax.Array

    @classmethod
    def create(cls, shape: tuple[int, ...] = ()) -> RunningMeanStd:
        return cls(jnp.zeros(shape), jnp.ones(shape), jnp.float32(1e-4))

    def merge(self, samples: jax.Array) -> RunningMeanStd:
        """Merged with ``samples`` (a leading sample axis): Chan et al.'s parallel update."""
        n = samples.shape[0]
        batch_mean, batch_var = samples.mean(axis=0), samples.var(axis=0)
        total = self.count + n
        delta = batch_mean - self.mean
        m2 = self.var * self.count + batch_var * n + delta**2 * self.count * n / total
        return RunningMeanStd(self.mean + delta * n / total, m2 / total, total)

    def normalize(self, x: jax.Array, clip: float) -> jax.Array:
        return jnp.clip((x - self.mean) / jnp.sqrt(self.var + 1e-8), -clip, clip)


@struct.dataclass
class PPOState:
    actor: TrainState
    critic: TrainState
    observation_stats: RunningMeanStd
    return_stats: RunningMeanStd  # of the discounted return, for reward scaling
    discounted_return: jax.Array  # of the running episode, carried across rollouts
    env_steps: jax.Array  # learned from so far (the rollouts processed)
    extras: Any = None  # fine-tuning method state, read by the hooks


def surrogate_loss(
    log_probs: jax.Array, old_log_probs: jax.Array, advantages: jax.Array, clip_ratio: float
) -> tuple[jax.Array, jax.Array]:
    """(PPO's clipped surrogate loss, the ratios)."""
    ratio = jnp.exp(log_probs - old_log_probs)
    clipped = jnp.clip(ratio, 1.0 - clip_ratio, 1.0 + clip_ratio)
    return -jnp.mean(jnp.minimum(ratio * advantages, clipped * advantages)), ratio


def value_loss(
    values: jax.Array,
    old_values: jax.Array,
    returns: jax.Array,
    clip_ratio: float | None,
) -> jax.Array:
    """½·mean squared error to the returns; with ``clip_ratio`` the pessimistic maximum over
    the prediction and the old value moved by at most ``clip_ratio`` (CleanRL's clip_vloss)."""
    squared = (values - returns) ** 2
    if clip_ratio is not None:
        clipped = old_values + jnp.clip(values - old_values, -clip_ratio, clip_ratio)
        squared = jnp.maximum(squared, (clipped - returns) ** 2)
    return 0.5 * jnp.mean(squared)


def discounted_returns(
    rewards: jax.Array, episode_ends: jax.Array, discount: float, initial: jax.Array
) -> jax.Array:
    """G_t = γ·G_{t−1}·(1 − end_{t−1}) + r_t over a rollout, from the carried G_{−1}
    (``initial``, whose episode is still running); what CleanRL's ``NormalizeReward`` tracks."""

    def step(carry, inputs):
        reward, ended = inputs
        total = carry + reward
        return discount * total * (1.0 - ended), total

    _, returns = jax.lax.scan(step, discount * initial, (rewards, episode_ends))
    return returns


def annealed(learning_rate: float, config: PPOConfig) -> optax.Schedule | float:
    """CleanRL's ``lr·(1 − iteration/num_iterations)``, counted in optimizer steps: constant
    within a rollout, 0 after ``anneal_steps`` env steps."""
    if not config.anneal_lr:
        return learning_rate
    spec = config.rollout_spec
    rollouts = max(1, config.anneal_steps // spec.length)

    def schedule(count: jax.Array) -> jax.Array:
        done = count // spec.updates_per_rollout
        return learning_rate * jnp.maximum(0.0, 1.0 - done / rollouts)

    return schedule


@dataclass(frozen=True)
class PPO(AgentBase):
    config: PPOConfig = field(default_factory=PPOConfig)
    hooks: Hooks = NO_HOOKS
    on_policy = True

    @property
    def rollout_spec(self) -> RolloutSpec:
        return self.config.rollout_spec

    def init(self, key: jax.Array, obs_dim: int, act_dim: int) -> PPOState:
        c = self.config
        actor_key, critic_key = jax.random.split(key)
        obs = jnp.zeros((1, obs_dim))
        policy = GaussianPolicy(
            c.actor_hidden_dims,
            act_dim,
            tanh_mean=c.tanh_mean,
            log_std_min=c.log_std_min,
            log_std_max=c.log_std_max,
            activation=ACTIVATIONS[c.actor_activation],
            final_scale=c.actor_final_scale,
        )
        critic = StateValue(c.critic_hidden_dims, activation=ACTIVATIONS[c.critic_activation])
        return PPOState(
            actor=TrainState.create(
                policy,
                actor_key,
                (obs,),
                adam(annealed(c.actor_lr, c), c.max_grad_norm, c.adam_eps),
            ),
            critic=TrainState.create(
                critic,
                critic_key,
                (obs,),
                adam(annealed(c.critic_lr, c), c.max_grad_norm, c.adam_eps),
            ),
            observation_stats=RunningMeanStd.create((obs_dim,)),
            return_stats=RunningMeanStd.create(),
            discounted_return=jnp.float32(0.0),
            env_steps=jnp.int32(0),
        )

    def normalized(self, state: PPOState, observations: jax.Array) -> jax.Array:
        """Observations as the networks see them (unchanged without normalisation)."""
        if not self.config.normalize_observations:
            return observations
        return state.observation_stats.normalize(observations, self.config.observation_clip)

    def act(
        self, state: PPOState, observations: jax.Array, key: jax.Array, deterministic: bool
    ) -> jax.Array:
        policy = state.actor(self.normalized(state, observations))
        actions = policy.mode() if deterministic else policy.sample(key)
        return jnp.clip(actions, -1.0, 1.0)

    def act_with_info(
        self, state: PPOState, observations: jax.Array, key: jax.Array
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        observations = self.normalized(state, observations)
        actions, log_probs = state.actor(observations).sample_and_log_prob(key)
        return actions, log_probs, state.critic(observations)

    def value(self, state: PPOState, observations: jax.Array) -> jax.Array:
        return state.critic(self.normalized(state, observations))

    def scale_rewards(self, state: PPOState, rollout: Rollout) -> tuple[PPOState, Rollout]:
        """Rewards divided by the running std of the discounted return (updated with this
        rollout's returns first, as the wrapper updates before it divides) and clipped."""
        c = self.config
        ends = jnp.maximum(rollout.terminals, rollout.truncations)
        returns = discounted_returns(rollout.rewards, ends, c.discount, state.discounted_return)
        stats = state.return_stats.merge(returns)
        rewards = jnp.clip(
            rollout.rewards / jnp.sqrt(stats.var + 1e-8), -c.reward_clip, c.reward_clip
        )
        carried = returns[-1] * (1.0 - ends[-1])
        state = state.replace(return_stats=stats, discounted_return=carried)
        return state, rollout._replace(rewards=rewards)

    def process_rollout(
        self, state: PPOState, rollout: Rollout, key: jax.Array
    ) -> tuple[PPOState, RolloutBatch]:
        c = self.config
        if c.normalize_rewards:
            state, rollout = self.scale_rewards(state, rollout)
        batch = estimate_advantages(self, state, rollout)  # V(s') under the collecting stats
        batch = batch._replace(observations=self.normalized(state, rollout.observations))
        advantages = self.hooks.rollout_advantages(state.extras, batch, self, state)
        if c.normalize_advantages:
            # Over the whole rollout, not per minibatch as CleanRL: one statistic per rollout
            # (the same for every epoch) and no small-minibatch noise.
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        if c.normalize_observations:
            stats = state.observation_stats.merge(rollout.observations)
            state = state.replace(observation_stats=stats)
        state = state.replace(env_steps=state.env_steps + rollout.rewards.shape[0])
        return state, batch._replace(advantages=advantages)

    def actor_loss(
        self, state: PPOState, batch: RolloutBatch, actor_params: Any
    ) -> tuple[jax.Array, dict]:
        c = self.config
        policy = state.actor(batch.observations, params=actor_params)
        log_probs = policy.log_prob(batch.actions)
        loss, ratio = surrogate_loss(log_probs, batch.log_probs, batch.advantages, c.clip_ratio)
        entropy = policy.entropy().mean()
        return loss - c.entropy_coef * entropy, {
            "actor_loss": loss,
            "entropy": entropy,
            "ratio": ratio.mean(),
            "clip_fraction": jnp.mean(jnp.abs(ratio - 1.0) > c.clip_ratio),
            # Schulman's low-variance estimator of KL(π_old‖π) (CleanRL's approx_kl).
            "approx_kl": jnp.mean(ratio - 1.0 - jnp.log(ratio)),
        }

    def critic_loss(
        self, state: PPOState, batch: RolloutBatch, critic_params: Any
    ) -> tuple[jax.Array, dict]:
        c = self.config
        values = state.critic(batch.observations, params=critic_params)
        clip = c.clip_ratio if c.clip_value_loss else None
        loss = value_loss(values, batch.values, batch.returns, clip)
        return c.value_coef * loss, {"value_loss": loss, "v_mean": values.mean()}

    def update(self, state: PPOState, batch: RolloutBatch, key: jax.Array) -> tuple[PPOState, dict]:
        actor, actor_metrics = state.actor.minimize(lambda p: self.actor_loss(state, batch, p))
        critic, critic_metrics = state.critic.minimize(lambda p: self.critic_loss(state, batch, p))
        return state.replace(actor=actor, critic=critic), {**actor_metrics, **critic_metrics}
