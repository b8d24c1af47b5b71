"""The batch type every agent consumes and every buffer stores."""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

Array = jnp.ndarray


class Transition(NamedTuple):
    """One (or a batch of) transitions, stored column-wise.

    ``terminals`` is 1.0 only on true MDP termination; a time-limit end is not a terminal,
    so the critic still bootstraps there. ``mc_returns`` holds discounted Monte-Carlo
    returns-to-go where an algorithm needs them (Cal-QL) and zeros otherwise.
    ``policy_inputs`` are extra per-sample actor inputs a fine-tuning method adds inside an
    update (FamO2O's β encoding) and ``policy_aux`` per-sample values it keeps beside them for
    its other hooks (the raw β); ``policy_next_inputs`` are the actor's inputs at s' where they
    differ from those at s (FamO2O-CQL bootstraps with the balance model's β at s while the
    actor trains on a uniform β offline); None: the same as at s. Buffers never store any of
    these (None there).
    """

    observations: Array
    actions: Array
    rewards: Array
    next_observations: Array
    terminals: Array
    mc_returns: Array
    policy_inputs: Array | None = None
    policy_aux: Array | None = None
    policy_next_inputs: Array | None = None

    @property
    def size(self) -> int:
        return int(self.rewards.shape[-1])

    @property
    def actor_observations(self) -> Array:
        """What the actor sees at s: the state, with the method's policy inputs if any."""
        return conditioned(self.observations, self.policy_inputs)

    @property
    def actor_next_observations(self) -> Array:
        """What the actor sees at s': its inputs at s' if a method set them, else those at s."""
        inputs = self.policy_inputs if self.policy_next_inputs is None else self.policy_next_inputs
        return conditioned(self.next_observations, inputs)


def conditioned(observations: Array, inputs: Array | None) -> Array:
    return observations if inputs is None else jnp.concatenate([observations, inputs], axis=-1)


def empty_transitions(capacity: int, obs_dim: int, act_dim: int) -> Transition:
    """Zero-filled float32 columns of a given capacity (host numpy)."""
    return Transition(
        observations=np.zeros((capacity, obs_dim), np.float32),
        actions=np.zeros((capacity, act_dim), np.float32),
        rewards=np.zeros((capacity,), np.float32),
        next_observations=np.zeros((capacity, obs_dim), np.float32),
        terminals=np.zeros((capacity,), np.float32),
        mc_returns=np.zeros((capacity,), np.float32),
    )
