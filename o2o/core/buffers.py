"""Device-resident transition storage, sampled inside jit.

One type serves both roles: an offline store is a full buffer that is never written, the
online buffer a fixed-capacity ring. All functions are pure, so a leading seed axis is a
``jax.vmap`` away.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from o2o.core.types import Transition, empty_transitions
from o2o.errors import ConfigError, check


@struct.dataclass
class ReplayBuffer:
    data: Transition
    size: jax.Array  # int32 scalar: number of valid rows
    pointer: jax.Array  # int32 scalar: next row to write

    @property
    def capacity(self) -> int:
        return int(self.data.rewards.shape[-1])


def create_buffer(capacity: int, obs_dim: int, act_dim: int) -> ReplayBuffer:
    check(capacity > 0, f"buffer capacity must be positive, got {capacity}")
    data = jax.tree.map(jnp.asarray, empty_transitions(capacity, obs_dim, act_dim))
    return ReplayBuffer(data=data, size=jnp.int32(0), pointer=jnp.int32(0))


def buffer_from_transitions(transitions: Transition, capacity: int | None = None) -> ReplayBuffer:
    """A buffer holding ``transitions``; extra capacity (for appending online data) stays empty."""
    n = int(np.shape(transitions.rewards)[0])
    capacity = n if capacity is None else capacity
    check(capacity >= n, f"buffer capacity {capacity} is smaller than the {n} transitions given")

    def pad(column):
        column = np.asarray(column, np.float32)
        out = np.zeros((capacity, *column.shape[1:]), np.float32)
        out[:n] = column
        return jnp.asarray(out)

    data = jax.tree.map(pad, transitions._replace(policy_inputs=None, policy_aux=None))
    return ReplayBuffer(data=data, size=jnp.int32(n), pointer=jnp.int32(n % capacity))


def add(buffer: ReplayBuffer, transitions: Transition) -> ReplayBuffer:
    """Append a chunk of transitions (leading axis = chunk), wrapping around at capacity."""
    chunk = transitions.rewards.shape[0]
    capacity = buffer.capacity
    rows = (buffer.pointer + jnp.arange(chunk)) % capacity
    data = jax.tree.map(lambda column, new: column.at[rows].set(new), buffer.data, transitions)
    return ReplayBuffer(
        data=data,
        size=jnp.minimum(buffer.size + chunk, capacity).astype(jnp.int32),
        pointer=((buffer.pointer + chunk) % capacity).astype(jnp.int32),
    )


def sample(buffer: ReplayBuffer, key: jax.Array, batch_size: int) -> Transition:
    """Uniform sample with replacement from the valid rows."""
    rows = jax.random.randint(key, (batch_size,), 0, jnp.maximum(buffer.size, 1))
    return jax.tree.map(lambda column: column[rows], buffer.data)


def split_batch(batch_size: int, fractions: Mapping[str, float]) -> dict[str, int]:
    """Integer rows per source summing to ``batch_size`` (largest remainder)."""
    check(batch_size > 0, f"batch size must be positive, got {batch_size}")
    check(len(fractions) > 0, "a sampler needs at least one source")
    total = sum(fractions.values())
    check(
        all(f >= 0 for f in fractions.values()) and total > 0,
        f"source fractions must be non-negative and not all zero, got {dict(fractions)}",
    )
    exact = {name: batch_size * f / total for name, f in fractions.items()}
    counts = {name: int(np.floor(v)) for name, v in exact.items()}
    leftover = batch_size - sum(counts.values())
    for name in sorted(exact, key=lambda n: exact[n] - counts[n], reverse=True)[:leftover]:
        counts[name] += 1
    return counts


@dataclass(frozen=True)
class Sampler:
    """Draws a batch from named buffers in fixed proportions, e.g. ``{"offline": 0.5,
    "online": 0.5}`` (Cal-QL's mix) or ``{"online": 1.0}`` (SAMG)."""

    batch_size: int
    fractions: tuple[tuple[str, float], ...] = (("replay", 1.0),)

    def __post_init__(self) -> None:
        split_batch(self.batch_size, dict(self.fractions))

    @classmethod
    def from_fractions(cls, batch_size: int, **fractions: float) -> Sampler:
        return cls(batch_size, tuple(fractions.items()))

    @property
    def rows_per_source(self) -> dict[str, int]:
        return split_batch(self.batch_size, dict(self.fractions))

    def __call__(self, buffers: Mapping[str, ReplayBuffer], key: jax.Array) -> Transition:
        missing = [name for name, _ in self.fractions if name not in buffers]
        if missing:
            raise ConfigError(f"sampler needs buffers {missing}, have {sorted(buffers)}")
        parts = []
        keys = jax.random.split(key, len(self.fractions))
        for (name, rows), k in zip(self.rows_per_source.items(), keys, strict=True):
            if rows:
                parts.append(sample(buffers[name], k, rows))
        if len(parts) == 1:
            return parts[0]
        return jax.tree.map(lambda *cols: jnp.concatenate(cols, axis=0), *parts)
