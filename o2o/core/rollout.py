"""On-policy training: rollout storage, GAE, and the fused "epochs × shuffled minibatches" update.

The replay engine (``engine.py``) samples batches from a buffer; an on-policy agent instead
learns from the rollout it has just collected. One jitted call per rollout does everything:
the agent's whole-rollout processing (bootstrap values of the next states and GAE by the
core, whatever the agent adds around them), then ``epochs`` passes over the rollout in
shuffled minibatches (a ``lax.scan`` of scans), and returns the metrics averaged over every
minibatch update. Seeds are a leading ``vmap`` axis, as in the replay engine.

The on-policy agent protocol (besides ``init(key, obs_dim, act_dim) -> state`` and
``act(state, observations, key, deterministic) -> actions``, as every agent):

- ``on_policy = True``: the online loop collects rollouts (``o2o.experiment.rollout``) instead
  of replaying transitions.
- ``rollout_spec -> RolloutSpec``: rollout length, epochs, minibatches per epoch, discount and
  GAE λ (static; read once when the update is compiled).
- ``act_with_info(state, observations, key) -> (actions, log_probs, values)``: a stochastic
  action per row, its log-density under the acting policy, and V(s). The rollout stores these
  actions as sampled; the loop clips them to the env's [-1, 1] only when it steps the env, so
  the stored log-probabilities stay exact for an unsquashed Gaussian.
- ``value(state, observations) -> values``: V(s), for the bootstrap values of next states.
- ``process_rollout(state, rollout, key) -> (state, batch)``: once per rollout, before the
  epochs, turns the collected ``Rollout`` into the ``RolloutBatch`` the updates consume.
  The core does the estimation: ``estimate_advantages(agent, state, rollout)`` evaluates
  ``value`` on every next state with the collecting parameters (the bootstrap after the
  rollout's last step and at time-limit truncations, which are not terminals) and runs GAE.
  A plain agent returns ``state, estimate_advantages(self, state, rollout)``; around that
  call is the place for what needs the whole rollout: rewards rescaled by a running return
  statistic (before), advantages normalised over the rollout or O2PPO's reference-advantage
  blend, which needs std(A_GAE) over the rollout (after), observations normalised with the
  statistics the rollout was collected under while the state's statistics move on.
- ``update(state, minibatch, key) -> (state, metrics)``: one gradient step on a minibatch
  (a ``RolloutBatch`` of ``length / num_minibatches`` rows); metrics are scalars.

Observations and rewards reach the agent as the loop's ``Preprocess`` makes them (state
normalisation, reward convention), exactly as in the replay loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp

from o2o.core.engine import with_nan_flag
from o2o.errors import check


@dataclass(frozen=True)
class RolloutSpec:
    """How an on-policy agent consumes rollouts."""

    length: int = 2048  # env steps per seed per rollout
    epochs: int = 10  # passes over each rollout
    num_minibatches: int = 32  # minibatches per epoch; each holds length / num_minibatches rows
    discount: float = 0.99
    gae_lambda: float = 0.95

    def __post_init__(self) -> None:
        for name in ("length", "epochs", "num_minibatches"):
            value = getattr(self, name)
            check(value > 0, f"rollout {name} must be positive, got {value}")
        check(
            self.length % self.num_minibatches == 0,
            f"rollout length ({self.length}) must be a multiple of num_minibatches ({self.num_minibatches})",
        )
        check(0 <= self.discount <= 1, f"discount must be in [0, 1], got {self.discount}")
        check(0 <= self.gae_lambda <= 1, f"gae_lambda must be in [0, 1], got {self.gae_lambda}")

    @property
    def minibatch_size(self) -> int:
        return self.length // self.num_minibatches

    @property
    def updates_per_rollout(self) -> int:
        return self.epochs * self.num_minibatches


class Rollout(NamedTuple):
    """What collection stores, time-major: every column has a leading axis of ``length``
    (after the seed axis, where there is one). ``terminals``: the episode truly ended after
    step t (no bootstrap). ``truncations``: it was cut after step t (time limit) and the next
    row starts a new episode; V(next_observations[t]) is bootstrapped there."""

    observations: jax.Array  # (T, obs_dim), s_t
    actions: jax.Array  # (T, act_dim), as sampled (unclipped)
    rewards: jax.Array  # (T,)
    next_observations: jax.Array  # (T, obs_dim), s_{t+1} before any reset
    terminals: jax.Array  # (T,), 1.0 / 0.0
    truncations: jax.Array  # (T,), 1.0 / 0.0, never together with a terminal
    log_probs: jax.Array  # (T,), log π_old(a_t | s_t)
    values: jax.Array  # (T,), V_old(s_t)


class RolloutBatch(NamedTuple):
    """A processed rollout (or a minibatch of one), the input of ``update``."""

    observations: jax.Array
    actions: jax.Array
    log_probs: jax.Array  # at collection
    values: jax.Array  # at collection
    advantages: jax.Array  # GAE(γ, λ), not normalised
    returns: jax.Array  # advantages + values: the λ-return targets of V


class OnPolicyAgent(Protocol):
    on_policy: bool
    rollout_spec: RolloutSpec

    def init(self, key: jax.Array, obs_dim: int, act_dim: int) -> Any: ...

    def act(
        self, state: Any, observations: jax.Array, key: jax.Array, deterministic: bool
    ) -> jax.Array: ...

    def act_with_info(
        self, state: Any, observations: jax.Array, key: jax.Array
    ) -> tuple[jax.Array, jax.Array, jax.Array]: ...

    def value(self, state: Any, observations: jax.Array) -> jax.Array: ...

    def process_rollout(
        self, state: Any, rollout: Rollout, key: jax.Array
    ) -> tuple[Any, RolloutBatch]: ...

    def update(self, state: Any, batch: RolloutBatch, key: jax.Array) -> tuple[Any, dict]: ...


def gae(
    rewards: jax.Array,
    values: jax.Array,
    next_values: jax.Array,
    terminals: jax.Array,
    truncations: jax.Array,
    discount: float,
    gae_lambda: float,
) -> tuple[jax.Array, jax.Array]:
    """Generalised advantage estimation over a leading time axis: ``(advantages, returns)``.

    δ_t = r_t + γ (1 − terminal_t) V(s'_t) − V(s_t) and A_t = δ_t + γλ c_t A_{t+1}, where
    c_t = 0 where the episode ends after step t (terminal or truncation) and after the last
    step. A truncation still bootstraps V(s'_t) in δ_t; only a terminal removes it. Extra
    trailing axes (several envs) are elementwise."""
    continues = (1.0 - terminals) * (1.0 - truncations)
    deltas = rewards + discount * (1.0 - terminals) * next_values - values

    def backward(next_advantage, step):
        delta, cont = step
        advantage = delta + discount * gae_lambda * cont * next_advantage
        return advantage, advantage

    _, advantages = jax.lax.scan(
        backward, jnp.zeros_like(deltas[0]), (deltas, continues), reverse=True
    )
    return advantages, advantages + values


def estimate_advantages(agent: OnPolicyAgent, state: Any, rollout: Rollout) -> RolloutBatch:
    """GAE(γ, λ of ``agent.rollout_spec``) with V(s') from ``agent.value`` under ``state``,
    which must be the parameters that collected the rollout (so call it before any update)."""
    spec = agent.rollout_spec
    next_values = agent.value(state, rollout.next_observations)
    advantages, returns = gae(
        rollout.rewards,
        rollout.values,
        next_values,
        rollout.terminals,
        rollout.truncations,
        spec.discount,
        spec.gae_lambda,
    )
    return RolloutBatch(
        rollout.observations,
        rollout.actions,
        rollout.log_probs,
        rollout.values,
        advantages,
        returns,
    )


MinibatchUpdate = Callable[[Any, Any, jax.Array], tuple[Any, dict]]


def minibatch_epochs(
    update: MinibatchUpdate,
    state: Any,
    batch: Any,
    key: jax.Array,
    epochs: int,
    num_minibatches: int,
) -> tuple[Any, jax.Array, dict]:
    """``epochs`` passes over ``batch`` (a pytree with a leading sample axis), each a fresh
    permutation cut into ``num_minibatches`` equal minibatches: every sample is used exactly
    once per epoch. Returns ``(state, key, metrics)`` with metrics stacked as
    ``(epochs, num_minibatches, ...)``."""
    size = jax.tree.leaves(batch)[0].shape[0]
    check(
        size % num_minibatches == 0,
        f"{size} samples do not split into {num_minibatches} equal minibatches",
    )

    def epoch(carry, _):
        state, key = carry
        key, permutation_key = jax.random.split(key)
        order = jax.random.permutation(permutation_key, size)
        minibatches = jax.tree.map(
            lambda x: x[order].reshape(num_minibatches, size // num_minibatches, *x.shape[1:]),
            batch,
        )

        def step(carry, minibatch):
            state, key = carry
            key, update_key = jax.random.split(key)
            state, metrics = update(state, minibatch, update_key)
            return (state, key), metrics

        return jax.lax.scan(step, (state, key), minibatches)

    (state, key), metrics = jax.lax.scan(epoch, (state, key), None, length=epochs)
    return state, key, metrics


def rollout_update(
    agent: OnPolicyAgent,
) -> Callable[[Any, Rollout, jax.Array], tuple[Any, jax.Array, dict]]:
    """``(state, rollout, key) -> (state, key, mean metrics)``: ``process_rollout``, then
    every minibatch update of every epoch, in one function."""
    spec = agent.rollout_spec

    def run(state, rollout, key):
        key, process_key = jax.random.split(key)
        state, batch = agent.process_rollout(state, rollout, process_key)
        state, key, metrics = minibatch_epochs(
            agent.update, state, batch, key, spec.epochs, spec.num_minibatches
        )
        return state, key, jax.tree.map(lambda m: jnp.nanmean(m, axis=(0, 1)), metrics)

    return run


def compile_rollout_update(
    agent: OnPolicyAgent, seed_axis: bool = True, nan_flag: bool = False
) -> Callable:
    """Jitted ``rollout_update``; with ``seed_axis`` every argument has a leading seed axis,
    with ``nan_flag`` it returns ``engine.with_nan_flag``'s fourth output."""
    run = rollout_update(agent)
    if nan_flag:
        run = with_nan_flag(run)
    if seed_axis:
        run = jax.vmap(run)
    return jax.jit(run, donate_argnums=(0,))
