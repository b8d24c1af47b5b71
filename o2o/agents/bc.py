"""Behaviour cloning: fit the policy to the dataset's actions, no critic.

CORL's ``any_percent_bc.py`` (and ReBRAC's BC) use a deterministic tanh actor trained by mean
squared error, which is the default here (``policy="deterministic"``). ``policy="gaussian"``
fits a Gaussian policy with a tanh mean and state-independent log-std by maximum likelihood
(the actor of CORL's IQL with every AWR weight equal to 1). CORL's "x% BC" keeps only the
best trajectories of the dataset; that is a data filter for the pipeline, not part of the agent.
BC has no online mechanism: fine-tuning keeps imitating the (growing) replay data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from o2o.core.agent import AgentBase, AgentConfig, check_domain
from o2o.core.hooks import NO_HOOKS, ActorInputs, Hooks, acting_observations, with_policy_inputs
from o2o.core.losses import mse
from o2o.core.networks import DeterministicPolicy, GaussianPolicy
from o2o.core.train_state import TrainState, adam
from o2o.core.types import Transition
from o2o.errors import check_fields

POLICIES = ("deterministic", "gaussian")


@dataclass(frozen=True)
class BCConfig(AgentConfig):
    actor_lr: float = 3e-4
    hidden_dims: tuple[int, ...] = (256, 256)
    policy: str = "deterministic"  # "deterministic": MSE (CORL); "gaussian": log-likelihood
    exploration_noise: float = 0.1  # std of the noise on a deterministic actor's online actions

    def __post_init__(self) -> None:
        check_fields(
            self,
            positive=("actor_lr",),
            non_negative=("exploration_noise",),
            hidden_dims=("hidden_dims",),
            choices={"policy": POLICIES},
        )

    @classmethod
    def for_domain(cls, domain: str = "locomotion", **overrides: Any) -> BCConfig:
        """CORL uses the same BC settings on locomotion, AntMaze and Adroit."""
        check_domain(domain)
        return cls(**overrides)

    def create(self, hooks: Hooks = NO_HOOKS) -> BC:
        return BC(self, hooks)


@struct.dataclass
class BCState:
    actor: TrainState
    step: jax.Array
    extras: Any = None  # fine-tuning method state, read by the hooks


@dataclass(frozen=True)
class BC(AgentBase):
    config: BCConfig = field(default_factory=BCConfig)
    hooks: Hooks = NO_HOOKS

    @property
    def stochastic(self) -> bool:
        return self.config.policy == "gaussian"

    def init(self, key: jax.Array, obs_dim: int, act_dim: int) -> BCState:
        c = self.config
        if self.stochastic:
            module = GaussianPolicy(c.hidden_dims, act_dim)
        else:
            module = DeterministicPolicy(c.hidden_dims, act_dim)
        obs = jnp.zeros((1, obs_dim + self.hooks.policy_input_dim))
        actor = TrainState.create(module, key, (obs,), adam(c.actor_lr))
        return BCState(actor=actor, step=jnp.int32(0))

    def actor_loss(
        self, state: BCState, batch: Transition, key: jax.Array, actor_params
    ) -> tuple[jax.Array, dict]:
        out = state.actor(batch.actor_observations, params=actor_params)
        if self.stochastic:
            loss = -jnp.mean(out.log_prob(batch.actions))
            actions, log_probs = out.sample_and_log_prob(key)
            metrics = {"actor_loss": loss, "mse": mse(out.mode(), batch.actions)}
        else:
            loss = mse(out, batch.actions)
            actions, log_probs = out, None
            metrics = {"actor_loss": loss, "mse": loss}
        penalty, hook_metrics = self.hooks.actor_penalty(
            state.extras, ActorInputs(batch, actions, log_probs, actor_params, state)
        )
        return loss + penalty, {**metrics, **hook_metrics}

    def update(self, state: BCState, batch: Transition, key: jax.Array) -> tuple[BCState, dict]:
        batch = with_policy_inputs(self.hooks, state.extras, batch, key)
        actor, metrics = state.actor.minimize(lambda p: self.actor_loss(state, batch, key, p))
        return state.replace(actor=actor, step=state.step + 1), metrics

    def act(
        self, state: BCState, observations: jax.Array, key: jax.Array, deterministic: bool
    ) -> jax.Array:
        out = state.actor(
            acting_observations(self.hooks, state.extras, observations, key, deterministic)
        )
        if self.stochastic:
            actions = out.mode() if deterministic else out.sample(key)
        else:
            actions = out
            if not deterministic:
                actions = actions + self.config.exploration_noise * jax.random.normal(
                    key, actions.shape
                )
        return jnp.clip(actions, -1.0, 1.0)
