"""Implicit Q-Learning (Kostrikov et al. 2021), following CORL's ``finetune/iql.py``.

One update, every loss computed from the state at the start of the step (CORL's order):
  1. V by expectile regression on the target critic at the dataset's actions:
     L_V = E[|tau - 1(u<0)| u^2], u = min_i Qbar_i(s, a) - V(s);
  2. twin Q by MSE to y = r + gamma (1 - d) V(s') (through the hooks: ``value_with(v_params)``
     recomputes V(s') with other value parameters, e.g. SAMG's frozen offline V);
  3. the actor by advantage-weighted regression on the dataset's actions:
     L_pi = -E[min(exp(beta A), 100) log pi(a|s)], A = min_i Qbar_i(s, a) - V(s);
  4. Polyak-averaged target critic.
CORL bootstraps and weights with V *before* this step's V update; Kostrikov's reference code (and
FamO2O) use the updated V: ``use_updated_value=True``.

The actor's learning rate follows CORL's ``CosineAnnealingLR(T_max=offline_steps)``, stepped on
every actor update *including the online ones*: PyTorch's schedule is periodic past T_max, so
with CORL's 1M offline + 1M online steps the rate decays to 0 offline and climbs back to its
initial value online. Set ``offline_steps`` to the run's number of offline updates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import optax
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
from o2o.core.losses import awr_weights, expectile_loss
from o2o.core.networks import DeterministicPolicy, GaussianPolicy, StateValue, critic_ensemble
from o2o.core.train_state import TrainState, adam, copy_tree, polyak
from o2o.core.types import Transition
from o2o.errors import check, check_fields

LR_SCHEDULES = ("cosine", "constant", "decay")


def periodic_cosine(learning_rate: float, period: int) -> optax.Schedule:
    """lr * (1 + cos(pi t / period)) / 2 for every t: PyTorch's ``CosineAnnealingLR`` (which
    falls to 0 at t = period and rises again), not optax's cosine decay (which stays at 0)."""

    def schedule(count: jax.Array) -> jax.Array:
        return learning_rate * 0.5 * (1.0 + jnp.cos(jnp.pi * count / period))

    return schedule


@dataclass(frozen=True)
class IQLConfig(AgentConfig):
    reward_conventions = {
        "locomotion": "iql_locomotion",
        "maze": "antmaze_minus_one",
        "adroit": "none",
    }
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    value_lr: float = 3e-4
    hidden_dims: tuple[int, ...] = (256, 256)  # actor, each critic and V
    num_critics: int = 2
    discount: float = 0.99
    tau: float = 0.005
    expectile: float = 0.7  # CORL's iql_tau
    beta: float = 3.0  # inverse temperature of the AWR weights
    max_weight: float = 100.0  # clip of exp(beta * A) (CORL's EXP_ADV_MAX)
    # "cosine" (CORL, periodic), "constant", or "decay": a cosine decay to 0 at offline_steps
    # that stays at 0 (the official FamO2O-IQL code, whose online actor rate is 0; §1.6).
    actor_lr_schedule: str = "cosine"
    offline_steps: int = 1_000_000  # the cosine schedule's half-period
    use_updated_value: bool = False  # True: V after this step's update (Kostrikov, FamO2O)
    deterministic_actor: bool = (
        False  # CORL's iql_deterministic: AWR-weighted MSE instead of log-lik
    )
    exploration_noise: float = 0.03  # deterministic actor only: online noise std ...
    noise_clip: float = 0.5  # ... and its clip

    budget_fields = {"offline_steps": "offline"}

    def __post_init__(self) -> None:
        check_fields(
            self,
            positive=(
                "actor_lr",
                "critic_lr",
                "value_lr",
                "beta",
                "max_weight",
                "offline_steps",
                "tau",
                "num_critics",
            ),
            non_negative=("exploration_noise", "noise_clip"),
            unit_interval=("discount", "tau"),
            hidden_dims=("hidden_dims",),
            choices={"actor_lr_schedule": LR_SCHEDULES},
        )
        check(0 < self.expectile < 1, f"expectile must be in (0, 1), got {self.expectile}")

    @classmethod
    def for_domain(cls, domain: str = "locomotion", **overrides: Any) -> IQLConfig:
        """CORL: locomotion beta 3, expectile 0.7; AntMaze beta 10, expectile 0.9 (the r - 1
        reward shift and state normalisation are the pipeline's); Adroit beta 3, expectile 0.8
        (``configs/finetune/iql/{pen,door,hammer,relocate}/cloned_v1.yaml``; their
        ``actor_dropout: 0.1`` is not reproduced, o2o's IQL actor has no dropout)."""
        check_domain(domain)
        preset = {
            "maze": {"beta": 10.0, "expectile": 0.9},
            "adroit": {"beta": 3.0, "expectile": 0.8},
        }.get(domain, {})
        return cls(**{**preset, **overrides})

    def create(self, hooks: Hooks = NO_HOOKS) -> IQL:
        return IQL(self, hooks)


@struct.dataclass
class IQLState:
    actor: TrainState
    critic: TrainState
    target_critic_params: dict
    value: TrainState
    step: jax.Array
    extras: Any = None  # fine-tuning method state, read by the hooks


@dataclass(frozen=True)
class IQL(CriticAgent):
    config: IQLConfig = field(default_factory=IQLConfig)
    hooks: Hooks = NO_HOOKS

    def init(self, key: jax.Array, obs_dim: int, act_dim: int) -> IQLState:
        c = self.config
        actor_key, critic_key, value_key = jax.random.split(key, 3)
        obs, act = jnp.zeros((1, obs_dim)), jnp.zeros((1, act_dim))
        actor_obs = jnp.zeros((1, obs_dim + self.hooks.policy_input_dim))
        if c.deterministic_actor:
            policy = DeterministicPolicy(c.hidden_dims, act_dim)
        else:
            policy = GaussianPolicy(c.hidden_dims, act_dim, tanh_mean=True)
        actor_lr = {
            "cosine": periodic_cosine(c.actor_lr, c.offline_steps),
            "decay": optax.cosine_decay_schedule(c.actor_lr, c.offline_steps),
            "constant": c.actor_lr,
        }[c.actor_lr_schedule]
        actor = TrainState.create(policy, actor_key, (actor_obs,), adam(actor_lr))
        critic = TrainState.create(
            critic_ensemble(c.hidden_dims, c.num_critics), critic_key, (obs, act), adam(c.critic_lr)
        )
        value = TrainState.create(StateValue(c.hidden_dims), value_key, (obs,), adam(c.value_lr))
        return IQLState(
            actor=actor,
            critic=critic,
            target_critic_params=copy_tree(critic.params),
            value=value,
            step=jnp.int32(0),
        )

    def advantages(
        self, state: IQLState, batch: Transition, value_params=None
    ) -> tuple[jax.Array, jax.Array]:
        """(A, V(s)) with A = min_i Qbar_i(s, a) - V(s) at the dataset's actions."""
        q = state.critic(batch.observations, batch.actions, params=state.target_critic_params).min(
            axis=0
        )
        v = state.value(batch.observations, params=value_params)
        return q - v, v

    def value_loss(
        self, state: IQLState, batch: Transition, value_params
    ) -> tuple[jax.Array, dict]:
        diff, v = self.advantages(state, batch, value_params)
        loss = expectile_loss(diff, self.config.expectile)
        return loss, {"value_loss": loss, "v_mean": v.mean()}

    def next_value_fn(self, state: IQLState, batch: Transition, key: jax.Array):
        """V(s') under value parameters (IQL bootstraps from V, not from a target critic)."""

        def value_with(value_params):
            return state.value(batch.next_observations, params=value_params)

        return value_with, None, None

    def bootstrap_params(self, state: IQLState):
        return state.value.params

    def target_params(self, state: IQLState):
        return state.value.params

    def critic_loss(
        self, state: IQLState, batch: Transition, key: jax.Array, critic_params
    ) -> tuple[jax.Array, dict]:
        target = self.critic_target(state, batch, key)
        q = state.critic(batch.observations, batch.actions, params=critic_params)
        td_loss = ensemble_mse(q, target)
        penalty, metrics = self.hooks.critic_penalty(
            state.extras, batch, critic_params, hook_key(key)
        )
        return td_loss + penalty, {"critic_loss": td_loss, "q_mean": q.mean(), **metrics}

    def actor_loss(
        self, state: IQLState, batch: Transition, key: jax.Array, actor_params
    ) -> tuple[jax.Array, dict]:
        c = self.config
        adv, _ = self.advantages(state, batch)
        beta = self.hooks.improvement_weight(state.extras, batch)
        weights = awr_weights(adv, c.beta if beta is None else beta, c.max_weight)
        out = state.actor(batch.actor_observations, params=actor_params)
        if c.deterministic_actor:
            bc_losses = jnp.sum((out - batch.actions) ** 2, axis=-1)
            actions, log_probs = out, None
        else:
            bc_losses = -out.log_prob(batch.actions)
            actions, log_probs = out.sample_and_log_prob(key)
        loss = jnp.mean(weights * bc_losses)
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

    def update(self, state: IQLState, batch: Transition, key: jax.Array) -> tuple[IQLState, dict]:
        c = self.config
        batch = with_policy_inputs(self.hooks, state.extras, batch, key)
        value, value_metrics = state.value.minimize(lambda p: self.value_loss(state, batch, p))
        # The critic target and the advantages use V before this step's update (CORL) or after.
        v_state = state.replace(value=value) if c.use_updated_value else state
        critic, critic_metrics = state.critic.minimize(
            lambda p: self.critic_loss(v_state, batch, key, p)
        )
        actor, actor_metrics = state.actor.minimize(
            lambda p: self.actor_loss(v_state, batch, key, p)
        )
        state = state.replace(
            actor=actor,
            critic=critic,
            value=value,
            target_critic_params=polyak(state.target_critic_params, critic.params, c.tau),
            step=state.step + 1,
        )
        return state, {**value_metrics, **critic_metrics, **actor_metrics}

    def act(
        self, state: IQLState, observations: jax.Array, key: jax.Array, deterministic: bool
    ) -> jax.Array:
        c = self.config
        out = state.actor(
            acting_observations(self.hooks, state.extras, observations, key, deterministic)
        )
        if c.deterministic_actor:
            actions = out
            if not deterministic:
                noise = c.exploration_noise * jax.random.normal(key, actions.shape)
                actions = actions + jnp.clip(noise, -c.noise_clip, c.noise_clip)
        else:
            actions = out.mode() if deterministic else out.sample(key)
        return jnp.clip(actions, -1.0, 1.0)
