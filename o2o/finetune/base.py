"""The fine-tuning method seam (DESIGN.md, "How fine-tuning methods plug in"; docs/methods.md).

A method is one class: a name, a config dataclass, the slots it uses and what it does in
them. ``Methods`` composes several (``--finetune samg+sera``) into the one ``Hooks`` object an
agent is created with; each method keeps its own state in ``agent_state.extras[method.name]``,
so it is jitted, seed-vmapped and checkpointed with the agent. A method's hooks are inert
until its state exists: from the start of offline training for ``trains_offline`` methods,
from the end of the offline phase otherwise.

Slots (a method declares the ones it uses; two methods may not share an exclusive one):

=================  =========================================================================
``data_policy``    which buffers online updates sample (exclusive)
``reward``         the reward in the critic target                          ``reward``
``bootstrap``      the bootstrap value in the critic target                 ``next_value``
``critic_terms``   extra critic losses, conservative-term weights   ``critic_penalty`` ...
``actor_terms``    extra actor losses                                       ``actor_penalty``
``policy_inputs``  extra actor inputs per sample and when acting, and the improvement-term
                   coefficient they go with (exclusive)          ``improvement_weight``
``advantages``     an on-policy agent's advantages of each rollout  ``rollout_advantages``
``state_update``   method-owned networks trained inside the fused update    ``update``
``phases``         engine-run updates before offline / before online        ``phases``
``events``         host-side events online          ``on_chunk``, ``on_evaluation``
=================  =========================================================================
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from o2o.core.engine import Phase
from o2o.core.hooks import ActorInputs, Hooks, PolicyInputs, TargetInputs
from o2o.core.rollout import RolloutBatch
from o2o.core.types import Transition
from o2o.errors import ConfigError

Array = jax.Array

SLOTS = (
    "data_policy",
    "reward",
    "bootstrap",
    "critic_terms",
    "actor_terms",
    "policy_inputs",
    "advantages",
    "state_update",
    "phases",
    "events",
)
EXCLUSIVE_SLOTS = frozenset({"data_policy", "policy_inputs"})
METHOD_KEY = 0x3E7D  # folded into the update key for method-owned updates


@dataclass(frozen=True)
class Diagnostic:
    """A metric a method logs that the report plots: ``key`` in the rows of ``phase``."""

    phase: str
    key: str
    title: str
    log_scale: bool = False
    reference: tuple[float, str] | None = None  # a horizontal line and its label


class Method:
    """Base of every fine-tuning method: identity in every slot. Subclasses set ``name``,
    ``config_class`` and ``slots`` and override what they change. ``state`` arguments are the
    method's own entry of ``extras``."""

    name: ClassVar[str]
    config_class: ClassVar[type]
    slots: ClassVar[frozenset[str]] = frozenset()
    trains_offline: ClassVar[bool] = False  # its state exists from the start of offline training
    # Options of a ``trains_offline`` method that change nothing before the online phase but
    # acting (FamO2O's β source): variants differing only in them share one offline phase, so
    # a suite starts them from the base variant's offline checkpoint (``offline_twin``).
    online_variant_options: ClassVar[frozenset[str]] = frozenset()
    # ``update`` sees the agent as it was at the start of the step, not after its update
    # (FamO2O's balance model is trained against the universal policy and critic the step
    # started from, before the actor's and critic's updates).
    update_from_step_start: ClassVar[bool] = False
    diagnostics: ClassVar[tuple[Diagnostic, ...]] = ()  # what the report plots
    # The algorithm the method fine-tunes with when it is not the offline one (OCR-CFT's
    # O2SAC: "sac"); the pipeline hands the offline actor to it (``--online-algo``, which
    # then may be left out).
    online_algo: ClassVar[str | None] = None
    # The reward transform of the online agent per dataset domain where the method's paper
    # used its own (O2SAC on AntMaze: 10r − 5), overriding the agent's under ``auto``.
    online_reward_conventions: ClassVar[dict[str, str]] = {}
    policy_input_dim: int = 0

    def __init__(self, config: Any, obs_dim: int, act_dim: int):
        self.config, self.obs_dim, self.act_dim = config, obs_dim, act_dim
        self.label = self.name  # the registry name it was built from (e.g. samg-even)

    # --- inside the jitted update ----------------------------------------------------------
    def reward(self, state: Any, inputs: TargetInputs) -> Array:
        """The reward of the critic target: ``inputs.batch.rewards`` (as earlier methods of
        a composition left them) changed; ``inputs`` as the bootstrap hook sees them."""
        return inputs.batch.rewards

    def next_value(self, state: Any, inputs: TargetInputs) -> Array:
        return inputs.next_value

    def conservative_weights(self, state: Any, batch: Transition, key: Array) -> Array | None:
        return None

    def critic_penalty(
        self, state: Any, batch: Transition, critic_params: Any, key: Array
    ) -> tuple[Array, dict]:
        return 0.0, {}

    def actor_penalty(self, state: Any, inputs: ActorInputs) -> tuple[Array, dict]:
        return 0.0, {}

    def policy_inputs(
        self, state: Any, batch: Transition, key: Array
    ) -> Array | tuple[Array, Array] | PolicyInputs | None:
        return None

    def improvement_weight(self, state: Any, batch: Transition) -> Array | None:
        return None

    def acting_inputs(
        self, state: Any, observations: Array, key: Array, deterministic: bool
    ) -> Array | None:
        return None

    def rollout_advantages(
        self, state: Any, batch: RolloutBatch, agent: Any, agent_state: Any
    ) -> Array:
        """An on-policy agent's advantages of a whole rollout (``batch.advantages``, as
        earlier methods of a composition left them), before the agent normalises them."""
        return batch.advantages

    def update(
        self, state: Any, agent: Any, agent_state: Any, batch: Transition, key: Array
    ) -> tuple[Any, dict]:
        """One step of the method's own networks, after the agent's update in the same fused
        step (``agent_state`` is the agent after its update, or at the start of the step with
        ``update_from_step_start``; either way the agent's update saw ``state`` unchanged)."""
        return state, {}

    def prepare_agent(self, agent: Any, agent_state: Any) -> Any:
        """The agent's state as the method starts (pure, one seed; a method that does not
        train offline: at the end of the offline phase): a one-time change to the agent it
        fine-tunes (O2PPO's log-std reset on hopper-expert)."""
        return agent_state

    def start_online(self, state: Any) -> Any:
        """A ``trains_offline`` method's state at the offline→online boundary (pure, one
        seed): where it switches what it does online (FamO2O's β source)."""
        return state

    # --- on the host ------------------------------------------------------------------------
    @classmethod
    def agent_defaults(cls, config: Any, algo: str) -> dict[str, Any]:
        """Agent options the method sets for ``algo`` unless the user sets them (``--set``
        wins); only a ``trains_offline`` method may (a paired method's agent must be the
        vanilla run's)."""
        return {}

    @classmethod
    def online_agent_defaults(cls, config: Any, algo: str) -> dict[str, Any]:
        """Options of the online agent ``algo`` (the one ``online_algo`` names) the method
        sets unless the user sets them (``--online-set`` wins): its network layout and rates."""
        return {}

    def check_agent(self, algo: str, agent: Any) -> None:
        """Refuse (ConfigError) an agent the method cannot work with."""

    def check_batch_size(self, batch_size: int) -> None:
        """Refuse (ConfigError) the run's batch size if the method cannot work with it (a
        batch-level estimator needs more rows than its neighbours: SERA's k)."""

    def init_state(self, agent: Any, agent_state: Any, key: Array, preprocess: Any) -> Any:
        """The method's state for one seed (pure: it is vmapped over seeds)."""
        return {}

    def phases(self, agent: Any) -> tuple[Phase, ...]:
        return ()

    def data_policy(self) -> str | None:
        return None

    def finetune_data(self, dataset: Any, transitions: Transition, discount: float) -> Transition:
        """The offline transitions the method's fine-tuning sees (its phases before online, the
        offline buffer online) from the pipeline's (``transitions``: the online agent's reward
        convention, states normalised) and the raw ``dataset`` (episode structure); host-side,
        deterministic, called once as the run is built (O2PPO's return scaling)."""
        return transitions

    def online_overrides(self) -> dict[str, Any]:
        """OnlineConfig fields the method fixes (buffer capacity, warm-up transitions)."""
        return {}

    def on_chunk(
        self, agent: Any, step: int, states: Any, buffers: dict, seed: int
    ) -> tuple[Any, list[dict]]:
        """After every fused online update call at env step ``step``: new states (seed axis)
        and diagnostic rows. Must be deterministic in its inputs (resume)."""
        return states, []

    def on_evaluation(
        self, agent: Any, step: int, states: Any, row: dict, seed: int
    ) -> tuple[Any, list[dict]]:
        """After every online evaluation (``row``, per-seed scores included), before its
        checkpoint: new states and diagnostic rows (e.g. a reference policy ← the policy on a
        new best evaluation)."""
        return states, []

    def fit_to_budget(self, offline_steps: int, online_steps: int) -> Method:
        """The method with the options it leaves to the run's budget (``None`` in its config)
        resolved for ``offline_steps`` gradient steps offline and ``online_steps`` env steps
        online; identity for a method without such options. The builder records what it
        resolves in the run's config.yaml, so a resumed run and the report see the value."""
        return self

    def summary(self, rows: list[dict]) -> dict[str, Any]:
        """What the run's summary.json records of this method, from its metrics rows."""
        return {}

    @classmethod
    def report_figure(cls, runs: list[Any], path: Path, dataset: str) -> Path | None:
        """A figure of the method's own beside its diagnostics in the report (``runs``: one
        dataset's ``RunResult``s, its runs among them), written to ``path``; None: none."""
        return None

    def __hash__(self) -> int:
        return hash((type(self), self.config, self.obs_dim, self.act_dim))

    def __eq__(self, other: object) -> bool:
        return (
            type(self) is type(other)
            and self.config == other.config  # type: ignore[attr-defined]
            and (self.obs_dim, self.act_dim) == (other.obs_dim, other.act_dim)  # type: ignore[attr-defined]
        )


class Methods(Hooks):
    """Several methods as the agent's hooks, applied in the order given: rewards and bootstrap
    values pass through each method in turn, conservative weights multiply, penalties add."""

    def __init__(self, methods: tuple[Method, ...] = ()):
        self.methods = tuple(methods)
        names = [m.name for m in self.methods]
        for name in set(names):
            if names.count(name) > 1:
                raise ConfigError(f"fine-tuning method '{name}' is named twice")
        for slot in EXCLUSIVE_SLOTS:
            claiming = [m.label for m in self.methods if slot in m.slots]
            if len(claiming) > 1:
                raise ConfigError(
                    f"{' and '.join(claiming)} cannot be combined: both set the {slot} slot"
                )
        for method in self.methods:
            if "policy_inputs" in method.slots and not method.trains_offline:
                raise ConfigError(
                    f"{method.label} adds policy inputs, so its state must exist from the start "
                    "of offline training (trains_offline = True): the actor is built wider"
                )
        self.policy_input_dim = sum(m.policy_input_dim for m in self.methods)

    @property
    def label(self) -> str:
        return "+".join(m.label for m in self.methods) or "vanilla"

    @property
    def trains_offline(self) -> bool:
        return any(m.trains_offline for m in self.methods)

    def __iter__(self) -> Iterator[Method]:
        return iter(self.methods)

    def __len__(self) -> int:
        return len(self.methods)

    def __hash__(self) -> int:
        return hash((Methods, self.methods))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Methods) and self.methods == other.methods

    def active(self, extras: Any) -> Iterator[tuple[Method, Any]]:
        """The methods whose state exists (decided at trace time: no cost in the update)."""
        for method in self.methods:
            if isinstance(extras, dict) and method.name in extras:
                yield method, extras[method.name]

    def active_with_keys(self, extras: Any, key: Array) -> Iterator[tuple[Method, Any, Array]]:
        for i, (method, state) in enumerate(self.active(extras)):
            yield method, state, jax.random.fold_in(key, i)

    # --- Hooks ------------------------------------------------------------------------------
    # Each method gets its own key, the same one in every hook of a step (see core/hooks.py).
    def reward(self, extras: Any, inputs: TargetInputs) -> Array:
        batch = inputs.batch
        for method, state, own_key in self.active_with_keys(extras, inputs.key):
            rewards = method.reward(state, replace(inputs, batch=batch, key=own_key))
            batch = batch._replace(rewards=rewards)
        return batch.rewards

    def next_value(self, extras: Any, inputs: TargetInputs) -> Array:
        value = inputs.next_value
        for method, state, own_key in self.active_with_keys(extras, inputs.key):
            value = method.next_value(state, replace(inputs, next_value=value, key=own_key))
        return value

    def conservative_weights(self, extras: Any, batch: Transition, key: Array) -> Array | None:
        weights = None
        for method, state, own_key in self.active_with_keys(extras, key):
            w = method.conservative_weights(state, batch, own_key)
            if w is not None:
                weights = w if weights is None else weights * w
        return weights

    def critic_penalty(
        self, extras: Any, batch: Transition, critic_params: Any, key: Array
    ) -> tuple[Array, dict]:
        return _summed(
            m.critic_penalty(s, batch, critic_params, k)
            for m, s, k in self.active_with_keys(extras, key)
        )

    def actor_penalty(self, extras: Any, inputs: ActorInputs) -> tuple[Array, dict]:
        return _summed(m.actor_penalty(s, inputs) for m, s in self.active(extras))

    def policy_inputs(
        self, extras: Any, batch: Transition, key: Array
    ) -> Array | tuple[Array, Array] | PolicyInputs | None:
        for method, state in self.active(extras):
            if "policy_inputs" in method.slots:
                return method.policy_inputs(state, batch, key)
        return None

    def improvement_weight(self, extras: Any, batch: Transition) -> Array | None:
        for method, state in self.active(extras):
            if "policy_inputs" in method.slots:
                return method.improvement_weight(state, batch)
        return None

    def acting_inputs(
        self, extras: Any, observations: Array, key: Array, deterministic: bool
    ) -> Array | None:
        for method, state in self.active(extras):
            if "policy_inputs" in method.slots:
                return method.acting_inputs(state, observations, key, deterministic)
        return None

    def rollout_advantages(
        self, extras: Any, batch: RolloutBatch, agent: Any, agent_state: Any
    ) -> Array:
        for method, state in self.active(extras):
            advantages = method.rollout_advantages(state, batch, agent, agent_state)
            batch = batch._replace(advantages=advantages)
        return batch.advantages

    # --- around the agent -------------------------------------------------------------------
    def wrap_update(self, agent: Any) -> Any:
        """``agent.update`` followed by the method-owned updates, as one update function (the
        agent's own update, untouched, where no method owns networks)."""
        owners = [m for m in self.methods if "state_update" in m.slots]
        if not owners:
            return agent.update

        def update(state, batch, key):
            start = state
            state, metrics = agent.update(state, batch, key)
            if not isinstance(state.extras, dict):  # no method state yet: the state as it is
                return state, metrics
            extras = dict(state.extras)
            method_key = jax.random.fold_in(key, METHOD_KEY)
            for i, method in enumerate(owners):
                if method.name in extras:
                    seen = start if method.update_from_step_start else state
                    extras[method.name], own = method.update(
                        extras[method.name], agent, seen, batch, jax.random.fold_in(method_key, i)
                    )
                    metrics = {**metrics, **own}
            return state.replace(extras=extras), metrics

        return update

    def init_states(
        self, agent: Any, states: Any, keys: Array, preprocess: Any, offline: bool
    ) -> Any:
        """``states`` (seed axis) with the state of every method that starts now added to
        ``extras``: ``offline=True`` at the start of offline training, False at its end (where
        the methods that trained offline pass through ``start_online``)."""
        starting = [m for m in self.methods if m.trains_offline == offline]
        extras = dict(states.extras or {})
        if not offline:
            for method in self.methods:
                if method.trains_offline and method.name in extras:
                    extras[method.name] = jax.vmap(method.start_online)(extras[method.name])
        if not starting:
            return states.replace(extras=extras) if extras else states
        for method in starting:  # before the methods' states, which may copy the agent's
            states = jax.vmap(lambda state, method=method: method.prepare_agent(agent, state))(
                states
            )
        for i, method in enumerate(starting):
            method_keys = jax.vmap(lambda k, i=i: jax.random.fold_in(k, i))(keys)
            extras[method.name] = jax.vmap(
                lambda state, key, method=method: method.init_state(agent, state, key, preprocess)
            )(states, method_keys)
        return states.replace(extras=extras)

    def phases(self, agent: Any) -> tuple[Phase, ...]:
        return tuple(phase for method in self.methods for phase in method.phases(agent))

    def fit_to_budget(self, offline_steps: int, online_steps: int) -> Methods:
        """Every method fitted to the budget (``Method.fit_to_budget``)."""
        fitted = tuple(m.fit_to_budget(offline_steps, online_steps) for m in self.methods)
        return self if fitted == self.methods else Methods(fitted)

    def data_policy(self) -> str | None:
        for method in self.methods:
            if "data_policy" in method.slots:
                return method.data_policy()
        return None

    def finetune_data(self, dataset: Any, transitions: Transition, discount: float) -> Transition:
        for method in self.methods:
            transitions = method.finetune_data(dataset, transitions, discount)
        return transitions

    def online_reward_convention(self, domain: str) -> str | None:
        for method in self.methods:
            if domain in method.online_reward_conventions:
                return method.online_reward_conventions[domain]
        return None

    def online_overrides(self) -> dict[str, Any]:
        overrides: dict[str, Any] = {}
        for method in self.methods:
            overrides.update(method.online_overrides())
        return overrides

    def on_chunk(
        self, agent: Any, step: int, states: Any, buffers: dict, seed: int
    ) -> tuple[Any, list[dict]]:
        rows: list[dict] = []
        for method in self.methods:
            if "events" in method.slots:
                states, new = method.on_chunk(agent, step, states, buffers, seed)
                rows.extend(new)
        return states, rows

    def on_evaluation(
        self, agent: Any, step: int, states: Any, row: dict, seed: int
    ) -> tuple[Any, list[dict]]:
        rows: list[dict] = []
        for method in self.methods:
            if "events" in method.slots:
                states, new = method.on_evaluation(agent, step, states, row, seed)
                rows.extend(new)
        return states, rows

    def has_events(self) -> bool:
        return any("events" in m.slots for m in self.methods)

    def summary(self, rows: list[dict]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for method in self.methods:
            out.update(method.summary(rows))
        return out


def observation_statistics(preprocess: Any, obs_dim: int) -> dict[str, Array]:
    """The agent's state normalisation (identity without one), for a method's state: with
    ``raw_observations`` a method sees the env's raw states where the agent sees normalised
    ones."""
    mean = preprocess.obs_mean if preprocess.obs_mean is not None else np.zeros(obs_dim)
    std = preprocess.obs_std if preprocess.obs_std is not None else np.ones(obs_dim)
    return {"obs_mean": jnp.asarray(mean, jnp.float32), "obs_std": jnp.asarray(std, jnp.float32)}


def raw_observations(state: dict, observations: Array) -> Array:
    """Undo the agent's state normalisation (``state`` holds ``observation_statistics``)."""
    return observations * state["obs_std"] + state["obs_mean"]


def _summed(parts) -> tuple[Array, dict]:
    total, metrics = 0.0, {}
    for loss, more in parts:
        total = total + loss
        metrics.update(more)
    return total, metrics


VANILLA = Methods(())
