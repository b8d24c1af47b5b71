"""Advantage-Weighted Actor-Critic (Nair et al. 2020), following CORL's ``finetune/awac.py``.

One update:
  1. twin Q by MSE to y = r + gamma (1 - d) min_i Qbar_i(s', a'), a' ~ pi(.|s') clipped to [-1, 1];
  2. the actor, against the *updated* critic, by advantage-weighted maximum likelihood of the
     dataset's actions: L_pi = -E[min(exp(A / lambda), 100) log pi(a|s)] with
     A = min_i Q_i(s, a) - min_i Q_i(s, a~pi) (one sampled action as the baseline);
  3. Polyak-averaged target critics.
The actor is a Gaussian with an unsquashed mean and a state-independent log-std (CORL's
``Actor``); its samples are clipped to [-1, 1] before they are used or executed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from o2o.core.agent import AgentConfig, CriticAgent, check_domain, ensemble_mse
from o2o.core.hooks import (
    NO_HOOKS,
    ActorInputs,
    Hooks,
    acting_observations,
    hook_key,
    with_policy_inputs,
)
from o2o.core.losses import awr_weights
from o2o.core.networks import Gaussian, GaussianPolicy, critic_ensemble
from o2o.core.train_state import TrainState, adam, copy_tree, polyak
from o2o.core.types import Transition
from o2o.errors import check_fields


def clipped_sample(dist: Gaussian, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(a, log pi(a|s)) with a ~ pi(.|s) clipped to [-1, 1], as CORL's ``Actor.forward``."""
    actions = jnp.clip(dist.sample(key), -1.0, 1.0)
    return actions, dist.log_prob(actions)


@dataclass(frozen=True)
class AWACConfig(AgentConfig):
    reward_conventions = {"locomotion": "none", "maze": "antmaze_minus_one", "adroit": "none"}
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    hidden_dims: tuple[int, ...] = (256, 256, 256)  # actor and each critic
    num_critics: int = 2
    discount: float = 0.99
    tau: float = 0.005
    awac_lambda: float = 1.0 / 3.0  # temperature: weights exp(A / lambda); CORL locomotion 0.3333
    max_weight: float = 100.0  # clip of the weights (CORL's exp_adv_max)

    def __post_init__(self) -> None:
        check_fields(
            self,
            positive=("actor_lr", "critic_lr", "awac_lambda", "max_weight", "tau", "num_critics"),
            unit_interval=("discount", "tau"),
            hidden_dims=("hidden_dims",),
        )

    @classmethod
    def for_domain(cls, domain: str = "locomotion", **overrides: Any) -> AWACConfig:
        """CORL: lambda = 1/3 on locomotion, 0.1 on AntMaze (whose r - 1 reward shift is the
        pipeline's) and on Adroit (``configs/finetune/awac/{pen,door,hammer}/cloned_v1.yaml``)."""
        check_domain(domain)
        preset = {"awac_lambda": 0.1} if domain in ("maze", "adroit") else {}
        return cls(**{**preset, **overrides})

    def create(self, hooks: Hooks = NO_HOOKS) -> AWAC:
        return AWAC(self, hooks)


@struct.dataclass
class AWACState:
    actor: TrainState
    critic: TrainState
    target_critic_params: dict
    step: jax.Array
    extras: Any = None  # fine-tuning method state, read by the hooks


@dataclass(frozen=True)
class AWAC(CriticAgent):
    config: AWACConfig = field(default_factory=AWACConfig)
    hooks: Hooks = NO_HOOKS

    def init(self, key: jax.Array, obs_dim: int, act_dim: int) -> AWACState:
        c = self.config
        actor_key, critic_key = jax.random.split(key)
        obs, act = jnp.zeros((1, obs_dim)), jnp.zeros((1, act_dim))
        actor = TrainState.create(
            GaussianPolicy(c.hidden_dims, act_dim, tanh_mean=False),
            actor_key,
            (jnp.zeros((1, obs_dim + self.hooks.policy_input_dim)),),
            adam(c.actor_lr),
        )
        critic = TrainState.create(
            critic_ensemble(c.hidden_dims, c.num_critics), critic_key, (obs, act), adam(c.critic_lr)
        )
        return AWACState(actor, critic, copy_tree(critic.params), jnp.int32(0))

    def next_value_fn(self, state: AWACState, batch: Transition, key: jax.Array):
        next_actions, next_log_probs = clipped_sample(
            state.actor(batch.actor_next_observations), key
        )

        def value_with(params):
            return state.critic(batch.next_observations, next_actions, params=params).min(axis=0)

        return value_with, next_actions, next_log_probs

    def critic_loss(
        self, state: AWACState, batch: Transition, key: jax.Array, critic_params
    ) -> tuple[jax.Array, dict]:
        target = self.critic_target(state, batch, key)
        q = state.critic(batch.observations, batch.actions, params=critic_params)
        td_loss = ensemble_mse(q, target)
        penalty, metrics = self.hooks.critic_penalty(
            state.extras, batch, critic_params, hook_key(key)
        )
        return td_loss + penalty, {"critic_loss": td_loss, "q_mean": q.mean(), **metrics}

    def actor_loss(
        self, state: AWACState, batch: Transition, key: jax.Array, actor_params
    ) -> tuple[jax.Array, dict]:
        c = self.config
        dist = state.actor(batch.actor_observations, params=actor_params)
        actions, log_probs = clipped_sample(dist, key)
        v = state.critic(batch.observations, jax.lax.stop_gradient(actions)).min(axis=0)
        q = state.critic(batch.observations, batch.actions).min(axis=0)
        adv = q - v
        beta = self.hooks.improvement_weight(state.extras, batch)
        weights = awr_weights(adv, 1.0 / c.awac_lambda if beta is None else beta, c.max_weight)
        loss = -jnp.mean(weights * dist.log_prob(batch.actions))
        penalty, metrics = self.hooks.actor_penalty(
            state.extras, ActorInputs(batch, actions, log_probs, actor_params, state)
        )
        return loss + penalty, {
            "actor_loss": loss,
            "adv_mean": adv.mean(),
            "awr_weight_mean": weights.mean(),
            "awr_weight_max": weights.max(),
            **metrics,
        }

    def update(self, state: AWACState, batch: Transition, key: jax.Array) -> tuple[AWACState, dict]:
        batch = with_policy_inputs(self.hooks, state.extras, batch, key)
        critic_key, actor_key = jax.random.split(key)
        critic, critic_metrics = state.critic.minimize(
            lambda p: self.critic_loss(state, batch, critic_key, p)
        )
        state = state.replace(critic=critic)
        actor, actor_metrics = state.actor.minimize(
            lambda p: self.actor_loss(state, batch, actor_key, p)
        )
        state = state.replace(
            actor=actor,
            target_critic_params=polyak(state.target_critic_params, critic.params, self.config.tau),
            step=state.step + 1,
        )
        return state, {**critic_metrics, **actor_metrics}

    def act(
        self, state: AWACState, observations: jax.Array, key: jax.Array, deterministic: bool
    ) -> jax.Array:
        dist = state.actor(
            acting_observations(self.hooks, state.extras, observations, key, deterministic)
        )
        if deterministic:
            return jnp.clip(dist.mode(), -1.0, 1.0)
        return clipped_sample(dist, key)[0]
