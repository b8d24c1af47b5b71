"""Fused, jitted training: K updates per call via ``lax.scan``, seeds as a vmapped axis.

An agent's update is a pure function ``update(state, batch, key) -> (state, metrics)``.
The engine wraps it with in-jit sampling from device-resident buffers, scans it K times and
returns the metrics averaged over the K steps, so the host sees one call and one small
pytree of metrics per K gradient steps.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from o2o.core.buffers import ReplayBuffer, Sampler
from o2o.core.types import Transition

UpdateFn = Callable[[Any, Transition, jax.Array], tuple[Any, dict]]
# Per-seed normalized scores of the greedy policy of the states given (an evaluation): what
# a phase's finish compares policies by.
ScoreFn = Callable[[Any], np.ndarray]
FinishFn = Callable[[Any, Transition, ScoreFn], tuple[Any, list[dict]]]


@dataclass(frozen=True)
class Phase:
    """Updates the engine runs on the offline data outside the offline and online phases:
    an agent's pre-training (SPOT's behaviour VAE) or a method's step between the phases
    (SAMG's C-VAE fit, OCR's re-evaluation). ``update`` has the signature of an agent's update
    and sees the whole agent state (a method's state is in ``state.extras``); it runs fused,
    seeds vmapped, with rows tagged ``name`` in metrics.jsonl, checkpoints and resume.
    ``evaluate``: the policy changes in this phase, so its rows carry evaluations.
    ``finish(states, offline, scores)``: host-side, once after the last step (e.g. statistics
    over the whole dataset, or a choice between policies by ``scores(states)``, an
    evaluation); returns new states and diagnostic rows."""

    name: str
    steps: int
    update: UpdateFn
    when: Literal["before_offline", "before_online"] = "before_offline"
    evaluate: bool = False
    finish: FinishFn | None = None


def chunk_sizes(done: int, total: int, chunk: int) -> list[int]:
    """The fused-call lengths from ``done`` to exactly ``total`` steps (the last may be short)."""
    sizes = []
    while done < total:
        sizes.append(min(chunk, total - done))
        done += sizes[-1]
    return sizes


def fused_update(
    update: UpdateFn, sampler: Sampler, num_updates: int
) -> Callable[[Any, Mapping[str, ReplayBuffer], jax.Array], tuple[Any, jax.Array, dict]]:
    """``(state, buffers, key) -> (state, key, mean metrics)`` doing ``num_updates`` steps."""

    def run(state, buffers, key):
        def step(carry, _):
            state, key = carry
            key, sample_key, update_key = jax.random.split(key, 3)
            state, metrics = update(state, sampler(buffers, sample_key), update_key)
            return (state, key), metrics

        (state, key), metrics = jax.lax.scan(step, (state, key), None, length=num_updates)
        return state, key, jax.tree.map(lambda m: jnp.nanmean(m, axis=0), metrics)

    return run


def any_nan(tree: Any) -> jax.Array:
    """Whether a floating-point array of ``tree`` holds a NaN (a scalar bool). Infinities
    are left to the divergence guard's loss bound: a state may hold ±inf on purpose (a
    running best that starts at -inf)."""
    flags = [
        jnp.any(jnp.isnan(x))
        for x in jax.tree.leaves(tree)
        if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)
    ]
    return jnp.any(jnp.stack(flags)) if flags else jnp.bool_(False)


def with_nan_flag(run: Callable) -> Callable:
    """``run`` (returning ``(state, key, metrics)``) that also returns ``any_nan`` of the new
    state: the divergence guard's input, computed inside the same jitted call so the host
    reads one bool per call instead of the parameters."""

    def guarded(state, data, key):
        state, key, metrics = run(state, data, key)
        return state, key, metrics, any_nan(state)

    return guarded


def compile_fused(
    update: UpdateFn,
    sampler: Sampler,
    num_updates: int,
    seed_axis: bool = True,
    nan_flag: bool = False,
) -> Callable:
    """Jitted fused update; with ``seed_axis`` every argument has a leading seed axis, with
    ``nan_flag`` it returns ``with_nan_flag``'s fourth output."""
    run = fused_update(update, sampler, num_updates)
    if nan_flag:
        run = with_nan_flag(run)
    if seed_axis:
        run = jax.vmap(run)
    return jax.jit(run, donate_argnums=(0,))


def stack_seeds(trees: list[Any]) -> Any:
    """Stack per-seed pytrees along a new leading axis."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def unstack_seeds(tree: Any) -> list[Any]:
    n = jax.tree.leaves(tree)[0].shape[0]
    return [jax.tree.map(lambda x, i=i: x[i], tree) for i in range(n)]


def seed_keys(seed: int, num_seeds: int) -> jax.Array:
    """Independent root keys for seeds ``seed, seed+1, ...``: seed i in a batch of N equals
    seed i run alone."""
    return jnp.stack([jax.random.PRNGKey(seed + i) for i in range(num_seeds)])
