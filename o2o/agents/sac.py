"""Soft Actor-Critic (Haarnoja et al. 2018) with a vmapped twin critic and learned temperature.

One update: critic on the soft Bellman target, then actor against the updated critic, then
the temperature towards the target entropy, then Polyak-averaged target critics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

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
from o2o.core.networks import CQLPolicy, TanhGaussianPolicy, Temperature, critic_ensemble
from o2o.core.train_state import TrainState, adam, copy_tree, polyak
from o2o.core.types import Transition
from o2o.errors import check_fields


@dataclass(frozen=True)
class SACConfig(AgentConfig):
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    temperature_lr: float = 3e-4
    hidden_dims: tuple[int, ...] = (256, 256)
    num_critics: int = 2
    discount: float = 0.99
    tau: float = 0.005
    init_temperature: float = 1.0
    target_entropy: float | None = None  # None: -|A|
    backup_entropy: bool = True
    critic_layer_norm: bool = False
    # The actor network: SAC's (separate mean and log-std heads) or CORL's CQL actor (one
    # head, learned log-std scale and shift), whose parameters an offline CQL actor hands
    # over unchanged (OCR-CFT's O2SAC: CQL -> SAC). The options added for it default to None
    # (SAC's own network) so stored configs without them still equal the current ones.
    policy: Literal["tanh_gaussian", "cql"] | None = None  # None: tanh_gaussian
    actor_hidden_dims: tuple[int, ...] | None = None  # None: hidden_dims
    critic_hidden_dims: tuple[int, ...] | None = None  # None: hidden_dims
    log_std_multiplier: float | None = None  # the CQL actor's initial log-std scale (1)
    log_std_offset: float | None = None  # and shift (-1)
    actor_grad_clip: float | None = None  # global-norm clip of the actor's gradient

    def __post_init__(self) -> None:
        check_fields(
            self,
            positive=(
                "actor_lr",
                "critic_lr",
                "temperature_lr",
                "init_temperature",
                "tau",
                "num_critics",
            ),
            unit_interval=("discount", "tau"),
            hidden_dims=("hidden_dims",),
            choices={"policy": (None, "tanh_gaussian", "cql")},
            optional_positive=("actor_grad_clip",),
        )
        for name in ("actor_hidden_dims", "critic_hidden_dims"):
            if getattr(self, name) is not None:
                check_fields(self, hidden_dims=(name,))

    def create(self, hooks: Hooks = NO_HOOKS) -> SAC:
        return SAC(self, hooks)


@struct.dataclass
class SACState:
    actor: TrainState
    critic: TrainState
    target_critic_params: dict
    temperature: TrainState
    target_entropy: jax.Array
    step: jax.Array
    extras: Any = None  # fine-tuning method state, read by the hooks


@dataclass(frozen=True)
class SAC(CriticAgent):
    config: SACConfig = field(default_factory=SACConfig)
    hooks: Hooks = NO_HOOKS

    def init(self, key: jax.Array, obs_dim: int, act_dim: int) -> SACState:
        c = self.config
        actor_key, critic_key, temp_key = jax.random.split(key, 3)
        obs, act = jnp.zeros((1, obs_dim)), jnp.zeros((1, act_dim))
        actor_dims = c.actor_hidden_dims or c.hidden_dims
        policy = (
            CQLPolicy(
                actor_dims,
                act_dim,
                1.0 if c.log_std_multiplier is None else c.log_std_multiplier,
                -1.0 if c.log_std_offset is None else c.log_std_offset,
            )
            if c.policy == "cql"
            else TanhGaussianPolicy(actor_dims, act_dim)
        )
        actor = TrainState.create(
            policy,
            actor_key,
            (jnp.zeros((1, obs_dim + self.hooks.policy_input_dim)),),
            adam(c.actor_lr, c.actor_grad_clip),
        )
        critic = TrainState.create(
            critic_ensemble(
                c.critic_hidden_dims or c.hidden_dims, c.num_critics, c.critic_layer_norm
            ),
            critic_key,
            (obs, act),
            adam(c.critic_lr),
        )
        temperature = TrainState.create(
            Temperature(c.init_temperature), temp_key, (), adam(c.temperature_lr)
        )
        target_entropy = -float(act_dim) if c.target_entropy is None else c.target_entropy
        return SACState(
            actor=actor,
            critic=critic,
            target_critic_params=copy_tree(critic.params),
            temperature=temperature,
            target_entropy=jnp.float32(target_entropy),
            step=jnp.int32(0),
        )

    def next_value_fn(self, state: SACState, batch: Transition, key: jax.Array):
        c = self.config
        next_actions, next_log_probs = state.actor(
            batch.actor_next_observations
        ).sample_and_log_prob(key)

        def value_with(params):
            next_q = state.critic(batch.next_observations, next_actions, params=params).min(axis=0)
            return next_q - state.temperature() * next_log_probs if c.backup_entropy else next_q

        return value_with, next_actions, next_log_probs

    def critic_loss(
        self, state: SACState, batch: Transition, key: jax.Array, critic_params
    ) -> tuple[jax.Array, dict]:
        target = self.critic_target(state, batch, key)
        q = state.critic(batch.observations, batch.actions, params=critic_params)
        td_loss = ensemble_mse(q, target)
        penalty, metrics = self.hooks.critic_penalty(
            state.extras, batch, critic_params, hook_key(key)
        )
        return td_loss + penalty, {"critic_loss": td_loss, "q_mean": q.mean(), **metrics}

    def actor_loss(
        self, state: SACState, batch: Transition, key: jax.Array, actor_params
    ) -> tuple[jax.Array, dict]:
        actions, log_probs = state.actor(
            batch.actor_observations, params=actor_params
        ).sample_and_log_prob(key)
        q = state.critic(batch.observations, actions).min(axis=0)
        weight = self.hooks.improvement_weight(state.extras, batch)
        loss = jnp.mean(state.temperature() * log_probs - (q if weight is None else weight * q))
        penalty, metrics = self.hooks.actor_penalty(
            state.extras, ActorInputs(batch, actions, log_probs, actor_params, state)
        )
        return loss + penalty, {"actor_loss": loss, "entropy": -log_probs.mean(), **metrics}

    def temperature_loss(
        self, state: SACState, entropy: jax.Array, temperature_params
    ) -> tuple[jax.Array, dict]:
        log_temperature = jnp.log(state.temperature(params=temperature_params))
        loss = log_temperature * jax.lax.stop_gradient(entropy - state.target_entropy)
        return loss, {"temperature": jnp.exp(log_temperature), "temperature_loss": loss}

    def update(self, state: SACState, batch: Transition, key: jax.Array) -> tuple[SACState, dict]:
        batch = with_policy_inputs(self.hooks, state.extras, batch, key)
        critic_key, actor_key = jax.random.split(key)
        critic, critic_metrics = state.critic.minimize(
            lambda p: self.critic_loss(state, batch, critic_key, p)
        )
        state = state.replace(critic=critic)
        actor, actor_metrics = state.actor.minimize(
            lambda p: self.actor_loss(state, batch, actor_key, p)
        )
        state = state.replace(actor=actor)
        temperature, temp_metrics = state.temperature.minimize(
            lambda p: self.temperature_loss(state, actor_metrics["entropy"], p)
        )
        state = state.replace(
            temperature=temperature,
            target_critic_params=polyak(state.target_critic_params, critic.params, self.config.tau),
            step=state.step + 1,
        )
        return state, {**critic_metrics, **actor_metrics, **temp_metrics}

    def act(
        self, state: SACState, observations: jax.Array, key: jax.Array, deterministic: bool
    ) -> jax.Array:
        dist = state.actor(
            acting_observations(self.hooks, state.extras, observations, key, deterministic)
        )
        if deterministic:
            return dist.mode()
        return dist.sample_and_log_prob(key)[0]
