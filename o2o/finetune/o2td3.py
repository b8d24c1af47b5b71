"""O2TD3 (OCR-CFT, Luo et al. NeurIPS 2024; methods.md §2.2, §2.4): an offline TD3+BC actor
fine-tuned by TD3 under a distance constraint.

    o2o train --dataset hopper-medium-lite --algo td3bc --finetune o2td3

The method declares TD3 as its online algorithm and gives it LayerNorm critics, rates 1e-4
(actor) / 3e-4 (critic), the actor loss −Q1/mean|Q1| (``normalize_actor_q``) and the level's
exploration noise. With π_off the offline actor:

* **A, re-evaluation (FQE)**: TD3's target with π_off: a' = clip(π_off(s') + clip(N(0, 0.2²),
  ±0.5), ±1), y = r + γ(1−d)·min Q̄(s', a'); π_off's target is π_off itself.
* **B, alignment**: anchor ȧ = π_off(s), ã = clip(π(s) + clipped noise, ±1),
  d = min(‖ã − ȧ‖₂/√|A|, 0.2), Q_anchor = min Q̄(s, ȧ) with frozen targets and
      Q_shape = Q_anchor·(1 + k·d²) if Q_anchor < 0 else Q_anchor/(1 + k·d²)
  (lower for a farther ã either way; k = ``distance_beta``), Q'_i = min(Q_shape, Q̄_i(s, ã))
  per critic; loss Σ_i MSE(Q_i(s, ã), Q'_i) + Σ_i MSE(Q_i(s, ȧ), Q_anchor); the actor steps
  on −Q1(s, π(s)).
* **C, constrained TD3** (UTD 1, policy delay 2): the bootstrap value loses
  λ·mean((π(s') − π_ref(s'))²) (one scalar over the batch and action dimensions), the actor
  loss gains λ·mean((π_ref(s) − π(s))²), D = (π_ref(s) − π(s))² elementwise for λ, which
  steps with the delayed actor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from o2o.core.hooks import ActorInputs, TargetInputs
from o2o.core.losses import mse
from o2o.core.types import Transition
from o2o.errors import check_fields
from o2o.finetune.ocr import (
    RANKING_ACTIONS,
    ConstrainedConfig,
    ConstrainedMethod,
    config_level,
    phase_diagnostics,
)

EXPLORATION = {"medium": 0.1, "expert": 0.05, "antmaze": 0.1}  # σ_expl


@dataclass(frozen=True)
class O2TD3Config(ConstrainedConfig):
    distance_beta: float = 1.0  # k
    distance_clip: float = 0.2  # d is clipped at this (the code's σ)
    exploration_noise: float | None = None  # None: the level's preset

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fields(
            self,
            non_negative=("distance_beta",),
            positive=("distance_clip",),
            optional_positive=("exploration_noise",),
        )


def shaped_anchor(q_anchor: jax.Array, distance: jax.Array, beta: float) -> jax.Array:
    """Q_anchor lowered by the squared distance: ×(1 + k·d²) below zero, ÷(1 + k·d²) above,
    so a farther action's target is lower whatever the sign of Q."""
    factor = 1.0 + beta * distance**2
    return jnp.where(q_anchor < 0, q_anchor * factor, q_anchor / factor)


def action_distance(actions: jax.Array, anchor: jax.Array, clip: float) -> jax.Array:
    """min(‖a − ȧ‖₂/√|A|, clip) per sample."""
    norm = jnp.linalg.norm(actions - anchor, axis=-1) / jnp.sqrt(actions.shape[-1])
    return jnp.minimum(norm, clip)


class O2TD3(ConstrainedMethod):
    name = "o2td3"
    config_class = O2TD3Config
    online_algo = "td3"
    # The official AntMaze configs exist for umaze and umaze-diverse only; o2o uses them on
    # every AntMaze.
    epsilons = {"medium": (0.0025, 0.04), "expert": (2.5e-5, 6.25e-4), "antmaze": (0.0025, 0.04)}
    warmup_per_mille = {"medium": 10, "expert": 10, "antmaze": 5}  # AntMaze: 1k of 200k
    online_reward_conventions = {"maze": "antmaze_minus_one"}  # the official r − 1
    diagnostics = phase_diagnostics("o2td3", "(π_ref − π)² (ε_t: epsilon)")

    @classmethod
    def online_agent_defaults(cls, config: Any, algo: str) -> dict[str, Any]:
        level = config_level(config)
        noise = config.exploration_noise or EXPLORATION[level]
        return {
            **super().online_agent_defaults(config, algo),
            "critic_layer_norm": level != "antmaze",  # no LayerNorm on AntMaze (official)
            "actor_lr": 1e-4,
            "critic_lr": 3e-4,
            "normalize_actor_q": True,
            "exploration_noise": noise,
        }

    def lambda_every(self, agent: Any) -> int:
        return agent.config.policy_delay  # with the delayed actor step

    # --- A and B -------------------------------------------------------------------------
    def smoothed(self, agent: Any, actions: jax.Array, key: jax.Array) -> jax.Array:
        c = agent.config
        noise = jnp.clip(
            c.policy_noise * jax.random.normal(key, actions.shape), -c.noise_clip, c.noise_clip
        )
        return jnp.clip(actions + noise, -1.0, 1.0)

    def fqe_next_value(
        self, agent: Any, agent_state: Any, own: dict, batch: Transition, key: jax.Array
    ) -> jax.Array:
        offline = agent_state.actor(batch.actor_next_observations, params=own["reference"])
        actions = self.smoothed(agent, offline, key)
        return agent.q_value(
            agent_state, batch.next_observations, actions, agent_state.target_critic_params
        )

    def alignment_update(
        self, agent: Any, agent_state: Any, batch: Transition, key: jax.Array
    ) -> tuple[Any, dict]:
        own = agent_state.extras[self.name]
        c, obs = self.config, batch.observations
        anchor = agent_state.actor(batch.actor_observations, params=own["reference"])
        perturbed = self.smoothed(agent, agent_state.actor(batch.actor_observations), key)
        perturbed = jax.lax.stop_gradient(perturbed)
        target = agent_state.target_critic_params  # frozen through the phase
        q_anchor = agent.q_value(agent_state, obs, anchor, target)
        distance = action_distance(perturbed, anchor, c.distance_clip)
        shaped = shaped_anchor(q_anchor, distance, c.distance_beta)
        per_critic = agent_state.critic(obs, perturbed, params=target)  # (M, B)
        targets = jax.lax.stop_gradient(jnp.minimum(shaped[None], per_critic))
        state, metrics = self.align_critic(agent_state, obs, perturbed, targets, anchor, q_anchor)

        def actor_loss(params):
            actions = state.actor(batch.actor_observations, params=params)
            return -state.critic(obs, actions)[0].mean(), {}

        actor, _ = state.actor.minimize(actor_loss)
        return state.replace(actor=actor), metrics

    def action_preferences(
        self, agent: Any, state: Any, observations: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        greedy = state.actor(observations)
        noise = 0.3 * jax.random.normal(
            jax.random.PRNGKey(1), (observations.shape[0], RANKING_ACTIONS - 1, greedy.shape[-1])
        )
        actions = jnp.concatenate(
            [greedy[:, None], jnp.clip(greedy[:, None] + noise, -1.0, 1.0)], axis=1
        )
        return -jnp.linalg.norm(actions - greedy[:, None], axis=-1), actions

    # --- C -------------------------------------------------------------------------------
    def divergence(
        self, agent_state: Any, reference: Any, observations: jax.Array, key: jax.Array
    ) -> jax.Array:
        return (
            agent_state.actor(observations, params=reference) - agent_state.actor(observations)
        ) ** 2

    def next_value(self, state: Any, inputs: TargetInputs) -> jax.Array:
        obs = inputs.batch.actor_next_observations
        actor = inputs.agent_state.actor
        penalty = mse(actor(obs), actor(obs, params=state["reference"]))
        return inputs.next_value - self.multiplier(state) * penalty

    def actor_penalty(self, state: Any, inputs: ActorInputs) -> tuple[jax.Array, dict]:
        reference = inputs.agent_state.actor(
            inputs.batch.actor_observations, params=state["reference"]
        )
        penalty = self.multiplier(state) * mse(reference, inputs.actions)
        return penalty, {f"{self.name}/actor_penalty": penalty}
