"""O2SAC (OCR-CFT, Luo et al. NeurIPS 2024; methods.md §2.1, §2.4, §2.6): an offline CQL
actor fine-tuned by SAC under a KL constraint.

    o2o train --dataset hopper-medium-lite --algo cql --finetune o2sac

The method declares SAC as its online algorithm (``--online-algo sac`` may be left out) and
gives SAC the paper's networks: CORL's CQL actor (3×256, so the offline actor's parameters
load unchanged) and 3×256 LayerNorm critics. With π_off the offline actor:

* **A, re-evaluation (FQE)**: y = r + γ(1−d)·[min Q̄(s', a') − α·log π_off(a'|s')],
  a' ~ π_off(·|s'), α fixed (0.2; 0.5 on expert / medium-expert).
* **B, alignment**: anchor ȧ = tanh(mean π_off(s)), ã ~ π(·|s) (the current actor), with the
  target critics frozen: Q_anchor = min Q̄(s, ȧ) and
      Q'(s, ã) = min{Q_anchor − α·[log π_off(ȧ|s) − log π_off(ã|s)], min Q̄(s, ã)};
  critic loss Σ_i MSE(Q_i(s, ã), Q') + Σ_i MSE(Q_i(s, ȧ), Q_anchor) (the second sum is the
  retain loss); the actor takes SAC's step E[α log π − min Q] at the same fixed α.
* **C, constrained SAC** at UTD 10: D = log π(a|s) − max(log π_ref(a|s), −50), a ~ π, is
  subtracted ×λ from the bootstrap value (at a') and added ×λ to the actor loss; λ and the
  reference as in ocr.py; α auto-tuned from its preset.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from o2o.core.hooks import ActorInputs, TargetInputs
from o2o.core.types import Transition
from o2o.errors import check_fields
from o2o.finetune.ocr import (
    RANKING_ACTIONS,
    ConstrainedConfig,
    ConstrainedMethod,
    config_level,
    is_larger_antmaze,
    phase_diagnostics,
)

# Fixed in A and B, SAC's initial α in C; AntMaze: 0.2 on umaze, 0.5 on medium and large.
ALPHAS = {"medium": 0.2, "expert": 0.5, "antmaze": 0.2}


@dataclass(frozen=True)
class O2SACConfig(ConstrainedConfig):
    alpha: float | None = None  # None: the level's preset
    utd: int = 10
    log_prob_min: float = -50.0  # log π_ref is clamped below here

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fields(self, positive=("utd",), optional_positive=("alpha",))


def o2sac_alpha(config: O2SACConfig) -> float:
    if config.alpha is not None:
        return config.alpha
    return 0.5 if is_larger_antmaze(config) else ALPHAS[config_level(config)]


def alignment_targets(
    q_anchor: jax.Array,
    q_sampled: jax.Array,
    log_prob_anchor: jax.Array,
    log_prob_sampled: jax.Array,
    alpha: float,
) -> jax.Array:
    """Q'(s, ã) = min{Q_anchor − α·[log π_off(ȧ|s) − log π_off(ã|s)], min Q̄(s, ã)}: the
    max-entropy optimum's Q(s,a) = V(s) + α log π(a|s), anchored at ȧ, never above the
    re-evaluated value."""
    return jnp.minimum(q_anchor - alpha * (log_prob_anchor - log_prob_sampled), q_sampled)


class O2SAC(ConstrainedMethod):
    name = "o2sac"
    config_class = O2SACConfig
    online_algo = "sac"
    epsilons = {"medium": (0.125, 2.0), "expert": (0.005, 0.125), "antmaze": (0.125, 2.0)}
    warmup_per_mille = {"medium": 10, "expert": 10, "antmaze": 25}
    online_reward_conventions = {"maze": "antmaze_cql"}  # CORL CQL's AntMaze 10r − 5
    diagnostics = phase_diagnostics("o2sac", "KL estimate D (ε_t: epsilon)")

    @property
    def alpha(self) -> float:
        return o2sac_alpha(self.config)

    @classmethod
    def online_agent_defaults(cls, config: Any, algo: str) -> dict[str, Any]:
        return {
            **super().online_agent_defaults(config, algo),
            "policy": "cql",
            "actor_hidden_dims": (256, 256, 256),
            # AntMaze: one critic of 5 LayerNorm layers (official ``double_critic=False``).
            **(
                {"critic_hidden_dims": (256,) * 5, "num_critics": 1}
                if config_level(config) == "antmaze"
                else {"critic_hidden_dims": (256, 256, 256)}
            ),
            "critic_layer_norm": True,
            "actor_lr": 1e-4,
            "critic_lr": 3e-4,
            "temperature_lr": 3e-4,
            "init_temperature": o2sac_alpha(config),
        }

    def online_overrides(self) -> dict[str, Any]:
        return {**super().online_overrides(), "utd": self.config.utd}

    def updates_per_env_step(self, agent: Any) -> int:
        return self.config.utd

    def lambda_every(self, agent: Any) -> int:
        return self.config.utd  # on the first of each env step's updates

    def reference_log_prob(
        self, agent_state: Any, reference: Any, observations: jax.Array, actions: jax.Array
    ) -> jax.Array:
        dist = agent_state.actor(observations, params=reference)
        return jnp.maximum(dist.log_prob(actions), self.config.log_prob_min)

    # --- A and B -------------------------------------------------------------------------
    def fqe_next_value(
        self, agent: Any, agent_state: Any, own: dict, batch: Transition, key: jax.Array
    ) -> jax.Array:
        dist = agent_state.actor(batch.actor_next_observations, params=own["reference"])
        actions, log_probs = dist.sample_and_log_prob(key)
        next_q = agent.q_value(
            agent_state, batch.next_observations, actions, agent_state.target_critic_params
        )
        return next_q - self.alpha * log_probs

    def alignment_update(
        self, agent: Any, agent_state: Any, batch: Transition, key: jax.Array
    ) -> tuple[Any, dict]:
        own = agent_state.extras[self.name]
        obs, alpha = batch.observations, self.alpha
        sample_key, actor_key = jax.random.split(key)
        offline = agent_state.actor(batch.actor_observations, params=own["reference"])
        anchor = offline.mode()
        sampled = jax.lax.stop_gradient(
            agent_state.actor(batch.actor_observations).sample_and_log_prob(sample_key)[0]
        )
        target = agent_state.target_critic_params  # frozen through the phase
        q_anchor = agent.q_value(agent_state, obs, anchor, target)
        q_sampled = agent.q_value(agent_state, obs, sampled, target)
        shaped = jax.lax.stop_gradient(
            alignment_targets(
                q_anchor, q_sampled, offline.log_prob(anchor), offline.log_prob(sampled), alpha
            )
        )
        state, metrics = self.align_critic(agent_state, obs, sampled, shaped, anchor, q_anchor)

        def actor_loss(params):
            actions, log_probs = state.actor(
                batch.actor_observations, params=params
            ).sample_and_log_prob(actor_key)
            q = agent.q_value(state, obs, actions)
            return jnp.mean(alpha * log_probs - q), {}

        actor, _ = state.actor.minimize(actor_loss)
        return state.replace(actor=actor), metrics

    def action_preferences(
        self, agent: Any, state: Any, observations: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        dist = state.actor(observations)
        key = jax.random.PRNGKey(1)
        shape = (observations.shape[0], RANKING_ACTIONS - 1, dist.mean.shape[-1])
        noise = jax.random.normal(key, shape)
        pre_tanh = dist.mean[:, None] + jnp.exp(dist.log_std)[:, None] * noise
        actions = jnp.concatenate([dist.mode()[:, None], jnp.tanh(pre_tanh)], axis=1)
        obs = jnp.repeat(observations[:, None], actions.shape[1], axis=1)
        log_probs = state.actor(obs).log_prob(actions)
        return log_probs, actions

    # --- C -------------------------------------------------------------------------------
    def divergence(
        self, agent_state: Any, reference: Any, observations: jax.Array, key: jax.Array
    ) -> jax.Array:
        actions, log_probs = agent_state.actor(observations).sample_and_log_prob(key)
        return log_probs - self.reference_log_prob(agent_state, reference, observations, actions)

    def next_value(self, state: Any, inputs: TargetInputs) -> jax.Array:
        batch = inputs.batch
        reference = self.reference_log_prob(
            inputs.agent_state,
            state["reference"],
            batch.actor_next_observations,
            inputs.next_actions,
        )
        divergence = inputs.next_log_probs - reference
        return inputs.next_value - self.multiplier(state) * divergence

    def actor_penalty(self, state: Any, inputs: ActorInputs) -> tuple[jax.Array, dict]:
        reference = self.reference_log_prob(
            inputs.agent_state, state["reference"], inputs.batch.actor_observations, inputs.actions
        )
        penalty = self.multiplier(state) * jnp.mean(inputs.log_probs - reference)
        return penalty, {f"{self.name}/actor_penalty": penalty}
