"""Loss pieces shared by several agents (IQL, AWAC, FamO2O, ...)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def expectile_loss(diff: jax.Array, expectile: float) -> jax.Array:
    """IQL's asymmetric L2: mean of |tau - 1(u < 0)| * u^2 with u = diff (e.g. Q - V).

    With tau > 0.5 positive residuals cost more, so V fitted to Q under it approaches an upper
    expectile of Q over the dataset's actions."""
    weight = jnp.where(diff < 0, 1.0 - expectile, expectile)
    return jnp.mean(weight * diff**2)


def awr_weights(
    advantages: jax.Array, inverse_temperature: float | jax.Array, max_weight: float
) -> jax.Array:
    """Advantage-weighted-regression weights min(exp(beta * A), max_weight), no gradient.

    IQL uses beta with a clip of 100 (CORL's EXP_ADV_MAX); AWAC uses beta = 1 / lambda with the
    same clip. The clip runs after the exponential, as CORL does: an overflow to inf is clipped."""
    weights = jnp.minimum(jnp.exp(inverse_temperature * advantages), max_weight)
    return jax.lax.stop_gradient(weights)


def mse(predictions: jax.Array, targets: jax.Array) -> jax.Array:
    """Mean over every element (PyTorch's ``F.mse_loss``): the BC term of BC and TD3+BC."""
    return jnp.mean((predictions - targets) ** 2)
