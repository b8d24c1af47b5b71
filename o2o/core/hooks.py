"""Where fine-tuning methods plug into an agent's losses (DESIGN.md, "How fine-tuning
methods plug in").

An agent never knows which method is on. Its losses call the hooks at four places:

* ``reward``: the reward used in the critic target (SERA: r + λ·tanh(r_int));
* ``next_value``: the bootstrap value in the critic target (SAMG: (1-p)·Q + p·Q_off;
  OCR: -λ·divergence);
* ``critic_penalty``: extra critic loss terms (OCR alignment) and ``conservative_weights``,
  per-sample weights of a conservative term (SAMG's p-weighted CQL term);
* ``actor_penalty``: extra actor loss terms (OCR's divergence to a reference policy).

Hook objects are static (hashable config); the state they need (frozen critics, a C-VAE,
latent statistics) lives in the agent state's ``extras`` pytree so it is jitted, vmapped
over seeds and checkpointed with everything else. The default ``Hooks()`` changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax

from o2o.core.types import Transition

Array = jax.Array


@dataclass(frozen=True)
class TargetInputs:
    """What a bootstrap hook sees.

    ``next_value`` is the base algorithm's bootstrap value V(s') (e.g. min Q̄(s',a') - α log π
    for SAC/CQL, V(s') for IQL). ``value_with(params)`` recomputes the same quantity with other
    critic (or value) parameters at the same s' and a', e.g. a frozen offline critic.
    ``next_actions``/``next_log_probs`` are the a' the agent drew (None where there are none).
    """

    batch: Transition
    next_value: Array
    value_with: Callable[[Any], Array]
    next_actions: Array | None = None
    next_log_probs: Array | None = None


@dataclass(frozen=True)
class ActorInputs:
    """What an actor-loss hook sees: the batch, the actions the actor proposed at s and their
    log-probabilities (None for deterministic actors)."""

    batch: Transition
    actions: Array
    log_probs: Array | None
    actor_params: Any


class Hooks:
    """Identity hooks: the base algorithm, unchanged. Subclass and override what a method
    changes; subclasses must be frozen dataclasses (they are static under jit)."""

    def reward(self, extras: Any, batch: Transition) -> Array:
        return batch.rewards

    def next_value(self, extras: Any, inputs: TargetInputs) -> Array:
        return inputs.next_value

    def conservative_weights(self, extras: Any, batch: Transition) -> Array | None:
        """Per-sample weights of a conservative (CQL-style) term; None = unweighted."""
        return None

    def critic_penalty(
        self, extras: Any, batch: Transition, critic_params: Any
    ) -> tuple[Array, dict]:
        return 0.0, {}

    def actor_penalty(self, extras: Any, inputs: ActorInputs) -> tuple[Array, dict]:
        return 0.0, {}

    def __hash__(self) -> int:
        return hash(type(self))

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other)


NO_HOOKS = Hooks()


def target_with_hooks(hooks: Hooks, extras: Any, inputs: TargetInputs, discount: float) -> Array:
    """r' + γ (1 - terminal) V'(s'), where r' and V' come from the hooks; no gradient flows."""
    batch = inputs.batch
    reward = hooks.reward(extras, batch)
    next_value = hooks.next_value(extras, inputs)
    return jax.lax.stop_gradient(reward + discount * (1.0 - batch.terminals) * next_value)


@dataclass(frozen=True)
class CustomTarget(Hooks):
    """Replace the bootstrap value by ``fn(extras, inputs)``; handy for experiments and tests."""

    fn: Callable[[Any, TargetInputs], Array]

    def next_value(self, extras: Any, inputs: TargetInputs) -> Array:
        return self.fn(extras, inputs)
