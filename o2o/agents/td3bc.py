"""TD3+BC (Fujimoto & Gu 2021), following CORL's ``offline/td3_bc.py``.

TD3 (critic, target smoothing, delayed actor and target updates: o2o/agents/td3.py) with one
change, the actor loss:
    L_pi = -lambda * E[Q_1(s, pi(s))] + E[(pi(s) - a)^2],   lambda = alpha / E|Q_1(s, pi(s))|,
the normaliser held constant (no gradient). The MSE is a mean over batch and action dimensions
(PyTorch's ``F.mse_loss``). CORL has no fine-tuning script for TD3+BC, so the online phase runs
TD3+BC unchanged unless ``online_alpha`` is set.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import jax
import jax.numpy as jnp

from o2o.agents.td3 import TD3, TD3Config, TD3State
from o2o.core.agent import check_domain
from o2o.core.hooks import NO_HOOKS, ActorInputs, Hooks
from o2o.core.losses import mse
from o2o.core.types import Transition
from o2o.errors import check_fields


@dataclass(frozen=True)
class TD3BCConfig(TD3Config):
    reward_conventions = {"locomotion": "none", "maze": "antmaze_minus_one", "adroit": "none"}
    alpha: float = 2.5  # weight of the normalised Q term against the BC term
    online_alpha: float | None = None  # alpha from the online phase on; None: unchanged

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fields(self, positive=("alpha",), optional_positive=("online_alpha",))

    @classmethod
    def for_domain(cls, domain: str = "locomotion", **overrides: Any) -> TD3BCConfig:
        """CORL's AntMaze configs keep every TD3+BC default (only the reward becomes r - 1,
        which is the pipeline's); CORL has no fine-tuning TD3+BC config for Adroit, which
        keeps the defaults too."""
        check_domain(domain)
        return cls(**overrides)

    def create(self, hooks: Hooks = NO_HOOKS) -> TD3BC:
        return TD3BC(self, hooks)


@dataclass(frozen=True)
class TD3BC(TD3):
    config: TD3BCConfig = field(default_factory=TD3BCConfig)
    hooks: Hooks = NO_HOOKS

    def actor_loss(
        self, state: TD3State, batch: Transition, actor_params
    ) -> tuple[jax.Array, dict]:
        actions = state.actor(batch.actor_observations, params=actor_params)
        q = state.critic(batch.observations, actions)[0]
        q_weight = self.config.alpha / jax.lax.stop_gradient(jnp.abs(q).mean())
        bc_loss = mse(actions, batch.actions)
        loss = -q_weight * q.mean() + bc_loss
        penalty, metrics = self.hooks.actor_penalty(
            state.extras, ActorInputs(batch, actions, None, actor_params, state)
        )
        return loss + penalty, {
            "actor_loss": loss,
            "bc_loss": bc_loss,
            "q_weight": q_weight,
            **metrics,
        }

    def for_online(self) -> TD3BC:
        if self.config.online_alpha is None:
            return self
        return replace(self, config=replace(self.config, alpha=self.config.online_alpha))
