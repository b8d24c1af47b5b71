"""Pieces shared by the benchmark scripts: the machine's description, its measured dense
matmul FLOP/s, o2o agents at their CORL sizes, and a timer for o2o's fused update.

The scripts run as ``python benchmarks/<script>.py``, which puts this folder on ``sys.path``.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from o2o.agents import CONFIGS, make_agent
from o2o.core import buffers as buf
from o2o.core.engine import compile_fused, stack_seeds
from o2o.core.types import Transition

BATCH = 256


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    return {
        "processor": cpu_model(),
        "cores": os.cpu_count(),
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "jax": jax.__version__,
        "load_average_at_start": list(os.getloadavg()),
    }


def matmul_flops(size: int, reps: int) -> list[float]:
    """Dense float32 ``size``³ matmul FLOP/s, jitted, ``reps`` measurements of 20 products."""
    a = jax.random.normal(jax.random.PRNGKey(0), (size, size), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    rates = []
    for _ in range(reps):
        n = 20
        t0 = time.perf_counter()
        for _ in range(n):
            out = f(a)
        out.block_until_ready()
        rates.append(2 * size**3 * n / (time.perf_counter() - t0))
    return rates


def synthetic_transitions(size: int, obs_dim: int, act_dim: int, seed: int = 0) -> Transition:
    rng = np.random.default_rng(seed)
    return Transition(
        rng.normal(size=(size, obs_dim)).astype(np.float32),
        rng.uniform(-1, 1, (size, act_dim)).astype(np.float32),
        rng.normal(size=size).astype(np.float32),
        rng.normal(size=(size, obs_dim)).astype(np.float32),
        np.zeros(size, np.float32),
        np.zeros(size, np.float32),
    )


def corl_config(algo: str) -> Any:
    """``algo``'s config with CORL's locomotion settings (network sizes included)."""
    config_cls = CONFIGS[algo]
    return (
        config_cls.for_domain("locomotion") if hasattr(config_cls, "for_domain") else config_cls()
    )


def network_sizes(config: Any) -> dict[str, list[int]]:
    """Hidden layer widths per network of an o2o agent config, for the results table."""
    if hasattr(config, "actor_hidden_dims"):  # CQL / Cal-QL
        return {
            "actor": list(config.actor_hidden_dims),
            "critic": list(config.critic_hidden_dims),
        }
    sizes = {"actor": list(config.hidden_dims)}
    if hasattr(config, "num_critics"):
        sizes["critic"] = list(config.hidden_dims)
    if hasattr(config, "value_lr"):  # IQL's state-value network
        sizes["value"] = list(config.hidden_dims)
    return sizes


def xla_flops(fn: Any, *args: Any) -> float:
    """FLOPs XLA counts for the compiled ``fn(*args)``."""
    cost = jax.jit(fn).lower(*args).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost["flops"])


class FusedUpdateTimer:
    """o2o's training call for one agent: ``fused`` updates per jitted call on device-resident
    ``buffers``, optionally ``seeds`` independent seeds on a vmapped axis."""

    def __init__(
        self,
        agent: Any,
        obs_dim: int,
        act_dim: int,
        buffers: dict[str, buf.ReplayBuffer],
        fused: int,
        seeds: int = 1,
        batch_size: int = BATCH,
    ):
        self.fused, self.seeds = fused, seeds
        sampler = buf.Sampler(batch_size)
        state = agent.init(jax.random.PRNGKey(0), obs_dim, act_dim)
        one_step = compile_fused(agent.update, sampler, 1, seed_axis=False).__wrapped__
        self.flops_per_update = xla_flops(one_step, state, buffers, jax.random.PRNGKey(1))
        if seeds == 1:
            self.state, self.data, self.key = state, buffers, jax.random.PRNGKey(1)
        else:
            init_keys = jnp.stack([jax.random.PRNGKey(s) for s in range(seeds)])
            self.state = jax.vmap(lambda k: agent.init(k, obs_dim, act_dim))(init_keys)
            self.data = stack_seeds([buffers] * seeds)
            self.key = jnp.stack([jax.random.PRNGKey(1 + s) for s in range(seeds)])
        self.fn = compile_fused(agent.update, sampler, fused, seed_axis=seeds > 1)
        self.call()  # compile and warm up
        jax.block_until_ready(self.state)

    def call(self) -> dict:
        self.state, self.key, metrics = self.fn(self.state, self.data, self.key)
        return metrics

    def seconds_per_call(self) -> float:
        t0 = time.perf_counter()
        self.call()
        jax.block_until_ready(self.state)
        return time.perf_counter() - t0

    def rate(self, calls: int) -> float:
        """Gradient updates per second (per seed) over ``calls`` fused calls."""
        jax.block_until_ready(self.state)
        t0 = time.perf_counter()
        for _ in range(calls):
            self.call()
        jax.block_until_ready(self.state)
        return calls * self.fused / (time.perf_counter() - t0)


def o2o_timer(
    algo: str,
    obs_dim: int,
    act_dim: int,
    buffers: dict[str, buf.ReplayBuffer],
    fused: int,
    corl_defaults: bool = True,
    seeds: int = 1,
) -> FusedUpdateTimer:
    """A timer for ``algo`` at CORL's locomotion sizes (or 2x256 everywhere)."""
    agent = (
        corl_config(algo).create() if corl_defaults else make_agent(algo, hidden_dims=(256, 256))
    )
    return FusedUpdateTimer(agent, obs_dim, act_dim, buffers, fused, seeds)


def spread(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, np.float64)
    return {"median": float(np.median(a)), "min": float(a.min()), "max": float(a.max())}


def fine_tuning_pipeline(
    algo: str,
    dataset: Any,
    config: Any,
    finetune: str = "vanilla",
    options: dict[str, Any] | None = None,
) -> Any:
    """The O2O pipeline the CLI would build for ``algo`` (CORL locomotion settings, schedules
    fitted to the budget) with fine-tuning method ``finetune``."""
    from o2o.experiment.pipeline import Pipeline
    from o2o.finetune import make_methods

    methods = make_methods(finetune, options or {}, dataset.obs_dim, dataset.act_dim)
    budget = (config.offline_steps, config.online_steps * config.utd)
    agent_config = corl_config(algo).fit_to_budget(*budget)
    return Pipeline(algo, agent_config, config, dataset=dataset, methods=methods)


def write_results(out: Path, result: dict[str, Any], table: str) -> None:
    """Raw JSON at ``out`` and the Markdown table beside it (``.md``); the table is printed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    out.with_suffix(".md").write_text(table)
    print(table)
