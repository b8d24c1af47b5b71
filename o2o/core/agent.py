"""What every agent provides, and the small pieces their losses share."""

from __future__ import annotations

from typing import Any, Protocol

import jax
import jax.numpy as jnp

from o2o.core.types import Transition


class Agent(Protocol):
    """An algorithm: a frozen config plus pure functions over its train state."""

    def init(self, key: jax.Array, obs_dim: int, act_dim: int) -> Any: ...

    def update(self, state: Any, batch: Transition, key: jax.Array) -> tuple[Any, dict]: ...

    def act(
        self, state: Any, observations: jax.Array, key: jax.Array, deterministic: bool
    ) -> jax.Array: ...


def ensemble_mse(q_values: jax.Array, target: jax.Array) -> jax.Array:
    """Sum over ensemble members of each member's mean squared error (CORL's convention)."""
    return jnp.sum(jnp.mean((q_values - target[None]) ** 2, axis=-1))
