"""Twin Delayed DDPG (Fujimoto et al. 2018): clipped double-Q, target policy smoothing,
delayed actor and target updates."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from o2o.core.agent import AgentConfig, CriticAgent, ensemble_mse
from o2o.core.hooks import (
    NO_HOOKS,
    ActorInputs,
    Hooks,
    acting_observations,
    hook_key,
    with_policy_inputs,
)
from o2o.core.networks import DeterministicPolicy, critic_ensemble
from o2o.core.train_state import TrainState, adam, copy_tree, polyak
from o2o.core.types import Transition
from o2o.errors import check_fields


@dataclass(frozen=True)
class TD3Config(AgentConfig):
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    hidden_dims: tuple[int, ...] = (256, 256)
    num_critics: int = 2
    discount: float = 0.99
    tau: float = 0.005
    policy_noise: float = 0.2
    noise_clip: float = 0.5
    policy_delay: int = 2
    exploration_noise: float = 0.1
    critic_layer_norm: bool = False
    # Actor loss -Q1/mean|Q1| (the normaliser held constant), as TD3+BC's Q term: O2TD3's
    # fine-tuning actor, whose loss adds a divergence penalty on the same scale. None (off)
    # rather than False, like every option added after results were committed: a stored
    # config without the key still equals the current one.
    normalize_actor_q: bool | None = None
    actor_grad_clip: float | None = None  # global-norm clip of the actor's gradient

    def __post_init__(self) -> None:
        check_fields(
            self,
            positive=("actor_lr", "critic_lr", "tau", "policy_delay", "num_critics"),
            non_negative=("policy_noise", "noise_clip", "exploration_noise"),
            unit_interval=("discount", "tau"),
            hidden_dims=("hidden_dims",),
            optional_positive=("actor_grad_clip",),
        )

    def create(self, hooks: Hooks = NO_HOOKS) -> TD3:
        return TD3(self, hooks)


@struct.dataclass
class TD3State:
    actor: TrainState
    critic: TrainState
    target_actor_params: dict
    target_critic_params: dict
    step: jax.Array
    extras: Any = None  # fine-tuning method state, read by the hooks


@dataclass(frozen=True)
class TD3(CriticAgent):
    config: TD3Config = field(default_factory=TD3Config)
    hooks: Hooks = NO_HOOKS

    def init(self, key: jax.Array, obs_dim: int, act_dim: int) -> TD3State:
        c = self.config
        actor_key, critic_key = jax.random.split(key)
        obs, act = jnp.zeros((1, obs_dim)), jnp.zeros((1, act_dim))
        actor = TrainState.create(
            DeterministicPolicy(c.hidden_dims, act_dim),
            actor_key,
            (jnp.zeros((1, obs_dim + self.hooks.policy_input_dim)),),
            adam(c.actor_lr, c.actor_grad_clip),
        )
        critic = TrainState.create(
            critic_ensemble(c.hidden_dims, c.num_critics, c.critic_layer_norm),
            critic_key,
            (obs, act),
            adam(c.critic_lr),
        )
        return TD3State(
            actor, critic, copy_tree(actor.params), copy_tree(critic.params), jnp.int32(0)
        )

    def smoothed_target_actions(
        self, state: TD3State, observations: jax.Array, key: jax.Array
    ) -> jax.Array:
        c = self.config
        actions = state.actor(observations, params=state.target_actor_params)
        noise = jnp.clip(
            c.policy_noise * jax.random.normal(key, actions.shape), -c.noise_clip, c.noise_clip
        )
        return jnp.clip(actions + noise, -1.0, 1.0)

    def next_value_fn(self, state: TD3State, batch: Transition, key: jax.Array):
        next_actions = self.smoothed_target_actions(state, batch.actor_next_observations, key)

        def value_with(params):
            return state.critic(batch.next_observations, next_actions, params=params).min(axis=0)

        return value_with, next_actions, None

    def critic_loss(
        self, state: TD3State, batch: Transition, key: jax.Array, critic_params
    ) -> tuple[jax.Array, dict]:
        target = self.critic_target(state, batch, key)
        q = state.critic(batch.observations, batch.actions, params=critic_params)
        td_loss = ensemble_mse(q, target)
        penalty, metrics = self.hooks.critic_penalty(
            state.extras, batch, critic_params, hook_key(key)
        )
        return td_loss + penalty, {"critic_loss": td_loss, "q_mean": q.mean(), **metrics}

    def actor_loss(
        self, state: TD3State, batch: Transition, actor_params
    ) -> tuple[jax.Array, dict]:
        actions = state.actor(batch.actor_observations, params=actor_params)
        q = state.critic(batch.observations, actions)[0]
        if self.config.normalize_actor_q:
            q = q / jax.lax.stop_gradient(jnp.abs(q).mean())
        loss = -q.mean()
        penalty, _ = self.hooks.actor_penalty(
            state.extras, ActorInputs(batch, actions, None, actor_params, state)
        )
        return loss + penalty, {"actor_loss": loss}

    def update(self, state: TD3State, batch: Transition, key: jax.Array) -> tuple[TD3State, dict]:
        c = self.config
        batch = with_policy_inputs(self.hooks, state.extras, batch, key)
        critic, metrics = state.critic.minimize(lambda p: self.critic_loss(state, batch, key, p))
        state = state.replace(critic=critic, step=state.step + 1)

        def delayed_actor_update(state: TD3State) -> tuple[TD3State, dict]:
            actor, actor_metrics = state.actor.minimize(lambda p: self.actor_loss(state, batch, p))
            return state.replace(
                actor=actor,
                target_actor_params=polyak(state.target_actor_params, actor.params, c.tau),
                target_critic_params=polyak(state.target_critic_params, state.critic.params, c.tau),
            ), actor_metrics

        def skip(state: TD3State) -> tuple[TD3State, dict]:
            # Actor metrics are NaN on critic-only steps; the engine averages with nanmean.
            shapes = jax.eval_shape(lambda: self.actor_loss(state, batch, state.actor.params)[1])
            return state, jax.tree.map(lambda s: jnp.full(s.shape, jnp.nan, s.dtype), shapes)

        state, actor_metrics = jax.lax.cond(
            state.step % c.policy_delay == 0, delayed_actor_update, skip, state
        )
        return state, {**metrics, **actor_metrics}

    def act(
        self, state: TD3State, observations: jax.Array, key: jax.Array, deterministic: bool
    ) -> jax.Array:
        actions = state.actor(
            acting_observations(self.hooks, state.extras, observations, key, deterministic)
        )
        if deterministic:
            return actions
        noise = self.config.exploration_noise * jax.random.normal(key, actions.shape)
        return jnp.clip(actions + noise, -1.0, 1.0)
