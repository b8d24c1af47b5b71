"""Where fine-tuning methods plug into an agent's losses (DESIGN.md, "How fine-tuning
methods plug in"; docs/methods.md).

An agent never knows which method is on. Its update consults the hooks at these places:

* ``reward``: the reward used in the critic target (SERA: r + λ·tanh(r_int)); it sees the
  same ``TargetInputs`` as ``next_value``, so it can evaluate the agent's own networks at the
  batch (SERA conditions on Q̂(s, a) = ``agent.q_value(agent_state, s, a, params)``);
* ``next_value``: the bootstrap value in the critic target (SAMG: (1-p)·Q + p·Q_off;
  OCR: -λ·divergence);
* ``critic_penalty``: extra critic loss terms (OCR alignment) and ``conservative_weights``,
  per-sample weights of a conservative term (SAMG's p-weighted CQL term);
* ``actor_penalty``: extra actor loss terms (OCR's divergence to a reference policy);
* ``policy_inputs`` / ``acting_inputs``: extra actor inputs (FamO2O's β encoding), per
  training sample and per acting observation; the actor is built ``policy_input_dim`` wider;
* ``rollout_advantages``: an on-policy agent's advantages of a whole rollout, after GAE and
  before any normalisation (O2PPO's reference-advantage blend);
* ``improvement_weight``: the per-sample coefficient of the policy-improvement term in the
  actor loss — the AWR inverse temperature (IQL, AWAC) or the weight of Q (CQL, SAC) —
  replacing the agent's own (FamO2O's β).

Guarantees an estimator can rely on: ``reward`` and ``next_value`` are called exactly once
per gradient step, on the whole sampled batch (every row, in sampling order);
``policy_inputs`` once per step, before any loss, and the same inputs serve the actor at s
and at s' unless the hook returns a ``PolicyInputs`` with its own ``at_next``. Every hook of one step receives the same PRNG key (so a random per-sample
quantity, e.g. SAMG-random's p, is the same draw in the target and in the conservative
term); a hook that needs independent draws folds in its own constant.

Hook objects are static (hashable config); the state they need (frozen critics, a C-VAE,
latent statistics) lives in the agent state's ``extras`` pytree so it is jitted, vmapped
over seeds and checkpointed with everything else. The default ``Hooks()`` changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax

from o2o.core.rollout import RolloutBatch
from o2o.core.types import Transition, conditioned

Array = jax.Array

# Hook keys are folded out of the agent's own keys, so the agent's random streams (and every
# result computed without a method) do not change when a method is switched on.
HOOK_KEY = 0x4B1D
POLICY_INPUT_KEY = 0x9E7A


class PolicyInputs(NamedTuple):
    """What ``policy_inputs`` may return: the actor's extra inputs at s, values kept beside
    them for the other hooks (``batch.policy_aux``) and, where they differ, the inputs at s'
    (``batch.policy_next_inputs``; None: those at s)."""

    at_s: Array
    aux: Array | None = None
    at_next: Array | None = None


@dataclass(frozen=True)
class TargetInputs:
    """What a bootstrap hook sees.

    ``next_value`` is the base algorithm's bootstrap value V(s') (e.g. min Q̄(s',a') - α log π
    for SAC/CQL, V(s') for IQL). ``value_with(params)`` recomputes the same quantity with other
    critic (or value) parameters at the same s' and a', e.g. a frozen offline critic.
    ``next_actions``/``next_log_probs`` are the a' the agent drew (None where there are none).
    ``key`` is this step's key for the reward and bootstrap hooks. ``agent``/``agent_state``
    are the agent and its state at the start of the step (the state the target is computed
    from), for hooks that evaluate the agent's own networks through its accessors
    (``q_value``, ``bootstrap_value``); None where the caller has no agent.
    """

    batch: Transition
    next_value: Array
    value_with: Callable[[Any], Array]
    key: Array
    next_actions: Array | None = None
    next_log_probs: Array | None = None
    agent: Any = None
    agent_state: Any = None


@dataclass(frozen=True)
class ActorInputs:
    """What an actor-loss hook sees: the batch, the actions the actor proposed at s and their
    log-probabilities (None for deterministic actors), and the agent's state at the actor's
    step (for evaluating its networks with other parameters: OCR's reference policy; None
    where the caller passes none)."""

    batch: Transition
    actions: Array
    log_probs: Array | None
    actor_params: Any
    agent_state: Any = None


class Hooks:
    """Identity hooks: the base algorithm, unchanged. Subclass and override what a method
    changes; subclasses must be hashable (they are static under jit)."""

    policy_input_dim: int = 0

    def reward(self, extras: Any, inputs: TargetInputs) -> Array:
        """(B,) reward of the critic target for ``inputs.batch``."""
        return inputs.batch.rewards

    def next_value(self, extras: Any, inputs: TargetInputs) -> Array:
        return inputs.next_value

    def conservative_weights(self, extras: Any, batch: Transition, key: Array) -> Array | None:
        """Per-sample weights of a conservative (CQL-style) term; None = unweighted."""
        return None

    def critic_penalty(
        self, extras: Any, batch: Transition, critic_params: Any, key: Array
    ) -> tuple[Array, dict]:
        return 0.0, {}

    def actor_penalty(self, extras: Any, inputs: ActorInputs) -> tuple[Array, dict]:
        return 0.0, {}

    def policy_inputs(
        self, extras: Any, batch: Transition, key: Array
    ) -> Array | tuple[Array, Array] | PolicyInputs | None:
        """(B, policy_input_dim) extra actor inputs for a training batch, optionally with
        (B, ...) values kept beside them for the other hooks (``batch.policy_aux``), or a
        ``PolicyInputs`` that also sets the inputs at s'."""
        return None

    def improvement_weight(self, extras: Any, batch: Transition) -> Array | None:
        """(B,) coefficient of the improvement term, replacing the agent's; None: the agent's."""
        return None

    def acting_inputs(
        self, extras: Any, observations: Array, key: Array, deterministic: bool
    ) -> Array | None:
        """(N, policy_input_dim) extra actor inputs when acting on ``observations``."""
        return None

    def rollout_advantages(
        self, extras: Any, batch: RolloutBatch, agent: Any, agent_state: Any
    ) -> Array:
        """(T,) advantages of a processed rollout (``batch.advantages`` are GAE's, its
        observations as the agent's networks see them), with the agent and its state."""
        return batch.advantages

    def __hash__(self) -> int:
        return hash(type(self))

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other)


NO_HOOKS = Hooks()


def target_with_hooks(hooks: Hooks, extras: Any, inputs: TargetInputs, discount: float) -> Array:
    """r' + γ (1 - terminal) V'(s'), where r' and V' come from the hooks; no gradient flows."""
    reward = hooks.reward(extras, inputs)
    next_value = hooks.next_value(extras, inputs)
    return jax.lax.stop_gradient(reward + discount * (1.0 - inputs.batch.terminals) * next_value)


def hook_key(key: Array) -> Array:
    """The key an agent hands its hooks in a step whose own randomness comes from ``key``."""
    return jax.random.fold_in(key, HOOK_KEY)


def with_policy_inputs(hooks: Hooks, extras: Any, batch: Transition, key: Array) -> Transition:
    """The batch with the hooks' per-sample actor inputs attached (unchanged without any)."""
    if hooks.policy_input_dim == 0:
        return batch
    inputs = hooks.policy_inputs(extras, batch, jax.random.fold_in(key, POLICY_INPUT_KEY))
    if not isinstance(inputs, PolicyInputs):
        inputs = PolicyInputs(*inputs) if isinstance(inputs, tuple) else PolicyInputs(inputs)
    return batch._replace(
        policy_inputs=inputs.at_s, policy_aux=inputs.aux, policy_next_inputs=inputs.at_next
    )


def acting_observations(
    hooks: Hooks, extras: Any, observations: Array, key: Array, deterministic: bool
) -> Array:
    """What the actor sees when acting: ``observations`` with the hooks' inputs, if any."""
    if hooks.policy_input_dim == 0:
        return observations
    inputs = hooks.acting_inputs(
        extras, observations, jax.random.fold_in(key, POLICY_INPUT_KEY), deterministic
    )
    return conditioned(observations, inputs)


@dataclass(frozen=True)
class CustomTarget(Hooks):
    """Replace the bootstrap value by ``fn(extras, inputs)``; handy for experiments and tests."""

    fn: Callable[[Any, TargetInputs], Array]

    def next_value(self, extras: Any, inputs: TargetInputs) -> Array:
        return self.fn(extras, inputs)
