"""What every agent provides, and the small pieces their losses share.

An agent carries its own knowledge; the pipeline knows none of it by name:
* ``for_online()``: the agent after the offline→online boundary (CQL's online α, SPOT's
  discount, Cal-QL switching calibration off);
* ``phases()``: updates run before the offline phase (SPOT's behaviour VAE), through the same
  engine as every other phase;
* its config's ``budget_fields``: schedules that follow the run's budget (IQL's cosine actor
  rate over the offline steps, SPOT's λ cooling over the online updates);
* ``bootstrap_params``/``bootstrap_value``/``q_params``/``q_value`` (agents with a critic):
  the quantities a fine-tuning method freezes, re-evaluates or conditions on (SAMG, SERA,
  OCR).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar, Literal, Protocol

import jax
import jax.numpy as jnp

from o2o.core.engine import Phase
from o2o.core.hooks import TargetInputs, hook_key, target_with_hooks, with_policy_inputs
from o2o.core.types import Transition
from o2o.errors import ConfigError

BudgetPhase = Literal["offline", "online"]


class Agent(Protocol):
    """An algorithm: a frozen config plus pure functions over its train state."""

    config: Any
    on_policy: bool  # True: trained from rollouts (o2o/experiment/rollout.py), not replay

    def init(self, key: jax.Array, obs_dim: int, act_dim: int) -> Any: ...

    def update(self, state: Any, batch: Transition, key: jax.Array) -> tuple[Any, dict]: ...

    def act(
        self, state: Any, observations: jax.Array, key: jax.Array, deterministic: bool
    ) -> jax.Array: ...

    def for_online(self) -> Agent: ...

    def phases(self) -> tuple[Phase, ...]: ...

    def bootstrap_params(self, state: Any) -> Any: ...

    def bootstrap_value(
        self, state: Any, batch: Transition, key: jax.Array, params: Any = None
    ) -> jax.Array: ...

    def q_params(self, state: Any) -> Any: ...

    def q_value(
        self, state: Any, observations: jax.Array, actions: jax.Array, params: Any = None
    ) -> jax.Array: ...


# Each domain has its presets (agents' ``for_domain``) and reward conventions.
DOMAINS = ("locomotion", "maze", "adroit")


def check_domain(domain: str) -> None:
    if domain not in DOMAINS:
        raise ConfigError(f"domain must be one of {', '.join(DOMAINS)}, got {domain!r}")


class AgentConfig:
    """Shared behaviour of agent configs. ``budget_fields`` maps a field to the part of the
    run's budget it follows (``offline`` steps or ``online`` updates); ``reward_conventions``
    names the reward transform per domain (the pipeline's ``preprocess_for``) and
    ``online_data_policy`` what online updates sample (union, mixed or online)."""

    budget_fields: ClassVar[dict[str, BudgetPhase]] = {}
    # CORL's conventions per algorithm: the reward transform per domain and the online data.
    reward_conventions: ClassVar[dict[str, str]] = {
        "locomotion": "none",
        "maze": "none",
        "adroit": "none",
    }
    online_data_policy: ClassVar[str] = "union"

    def fit_to_budget(
        self, offline_steps: int | None, online_updates: int | None, keep: tuple[str, ...] = ()
    ):
        """This config with its budget-dependent schedules set to the run's budget (fields in
        ``keep`` were set by the user and stay; a phase whose budget is None, as the offline
        one of a run from scratch, leaves its fields alone)."""
        budget = {"offline": offline_steps, "online": online_updates}
        changes = {
            name: max(1, budget[phase])
            for name, phase in self.budget_fields.items()
            if name not in keep and budget[phase] is not None
        }
        return replace(self, **changes) if changes else self


class AgentBase:
    """Defaults of the ``Agent`` protocol: nothing switches online, no pre-training phases,
    no critic for a method to use."""

    on_policy: ClassVar[bool] = False

    def for_online(self):
        return self

    def phases(self) -> tuple[Phase, ...]:
        return ()

    def bootstrap_params(self, state: Any) -> Any:
        raise ConfigError(f"{type(self).__name__} has no critic for a fine-tuning method to use")

    def bootstrap_value(
        self, state: Any, batch: Transition, key: jax.Array, params: Any = None
    ) -> jax.Array:
        raise ConfigError(f"{type(self).__name__} has no critic for a fine-tuning method to use")

    def q_params(self, state: Any) -> Any:
        raise ConfigError(f"{type(self).__name__} has no critic for a fine-tuning method to use")

    def q_value(
        self, state: Any, observations: jax.Array, actions: jax.Array, params: Any = None
    ) -> jax.Array:
        raise ConfigError(f"{type(self).__name__} has no critic for a fine-tuning method to use")


class CriticAgent(AgentBase):
    """Agents with a critic ensemble ``state.critic`` and Polyak targets
    ``state.target_critic_params``; each defines ``next_value_fn`` (its critic target's
    V(s') as a function of critic parameters)."""

    def next_value_fn(self, state: Any, batch: Transition, key: jax.Array) -> Any:
        """(value_with, next_actions, next_log_probs): ``value_with(params)`` is the critic
        target's V(s') under ``params`` at a' drawn once from ``key``."""
        raise NotImplementedError

    def bootstrap_params(self, state: Any) -> Any:
        """The parameters a method freezes as "the offline value" (the online critic)."""
        return state.critic.params

    def target_params(self, state: Any) -> Any:
        """The parameters the critic target bootstraps from (the Polyak target critic)."""
        return state.target_critic_params

    def critic_target(self, state: Any, batch: Transition, key: jax.Array) -> jax.Array:
        """y = r' + γ(1 − d)·V'(s'), r' and V' through the hooks (no gradient); the hooks get
        ``hook_key(key)``."""
        value_with, next_actions, next_log_probs = self.next_value_fn(state, batch, key)
        inputs = TargetInputs(
            batch,
            value_with(self.target_params(state)),
            value_with,
            hook_key(key),
            next_actions,
            next_log_probs,
            agent=self,
            agent_state=state,
        )
        return target_with_hooks(self.hooks, state.extras, inputs, self.config.discount)

    def bootstrap_value(
        self, state: Any, batch: Transition, key: jax.Array, params: Any = None
    ) -> jax.Array:
        """V(s') exactly as the critic target uses it, with ``params`` (default: the target
        parameters the agent bootstraps from). Outside an update (a method's host-side event)
        the batch gets the methods' policy inputs here, as the update would attach them."""
        if batch.policy_inputs is None:
            batch = with_policy_inputs(self.hooks, state.extras, batch, key)
        value_with = self.next_value_fn(state, batch, key)[0]
        return value_with(self.target_params(state) if params is None else params)

    def q_params(self, state: Any) -> Any:
        """The critic ensemble's parameters, what ``q_value`` evaluates by default."""
        return state.critic.params

    def q_value(
        self, state: Any, observations: jax.Array, actions: jax.Array, params: Any = None
    ) -> jax.Array:
        """min_i Q_i(s, a) of the critic ensemble (or of ``params``)."""
        return state.critic(observations, actions, params=params).min(axis=0)


def ensemble_mse(q_values: jax.Array, target: jax.Array) -> jax.Array:
    """Sum over ensemble members of each member's mean squared error (CORL's convention)."""
    return jnp.sum(jnp.mean((q_values - target[None]) ** 2, axis=-1))
