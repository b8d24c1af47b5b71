"""SERA's cost: the estimator's share of one fused update (CORL sizes, batch 256 by default).

    .venv/bin/python benchmarks/sera_cost.py [--algos cql iql] [--batch-sizes 256] [--reps 20]

For each algorithm and batch size, four compiled functions on the same synthetic data
(hopper's dimensions by default):
  * the agent's update without a method (vanilla) and with SERA (``--finetune sera``: the
    update the pipeline runs online, SERA's diagnostics included);
  * SERA's estimate alone (Q̂ of the frozen critic on the batch, then the kNN estimator), and
    the kNN estimator alone (given the values).
Reported: XLA's FLOP count of each (``cost_analysis``; it counts arithmetic, not the
comparisons and selects of the k-th-neighbour search, so the wall time is the measure to
trust) and wall time per update, medians over ``--reps`` repeats of ``--fused`` updates per
call, all alternating so that machine load hits each alike. The share is
(SERA − vanilla) / SERA.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from bench_common import (
    corl_config,
    machine_info,
    spread,
    synthetic_transitions,
    write_results,
    xla_flops,
)

from o2o.core import buffers as buf
from o2o.core.buffers import buffer_from_transitions
from o2o.core.engine import compile_fused
from o2o.experiment.online import Preprocess
from o2o.finetune import make_methods
from o2o.finetune.sera import knn_conditional_entropy

OUT = Path("benchmarks/results/sera_cost.json")


class FusedCalls:
    """``fused`` updates per jitted call of ``update`` on device-resident ``buffers``."""

    def __init__(self, update: Any, state: Any, buffers: dict, batch_size: int, fused: int):
        self.fused = fused
        sampler = buf.Sampler(batch_size)
        one_step = compile_fused(update, sampler, 1, seed_axis=False).__wrapped__
        self.flops_per_update = xla_flops(one_step, state, buffers, jax.random.PRNGKey(1))
        self.fn = compile_fused(update, sampler, fused, seed_axis=False)
        self.state, self.buffers, self.key = state, buffers, jax.random.PRNGKey(1)
        self.seconds_per_update()  # compile and warm up

    def seconds_per_update(self) -> float:
        jax.block_until_ready(self.state)
        start = time.perf_counter()
        self.state, self.key, _ = self.fn(self.state, self.buffers, self.key)
        jax.block_until_ready(self.state)
        return (time.perf_counter() - start) / self.fused


class ScannedCalls:
    """``fn`` on each of a stack of inputs, in one jitted ``lax.scan``: seconds per input."""

    def __init__(self, fn: Any, stacked: tuple):
        def run(stacked):
            def one(total, inputs):
                return total + fn(*inputs).mean(), None

            return jax.lax.scan(one, jnp.float32(0.0), stacked)[0]

        self.fn, self.stacked = jax.jit(run), stacked
        self.count = jax.tree.leaves(stacked)[0].shape[0]
        self.seconds_per_call()  # compile and warm up

    def seconds_per_call(self) -> float:
        start = time.perf_counter()
        self.fn(self.stacked).block_until_ready()
        return (time.perf_counter() - start) / self.count


def measure(algo: str, batch_size: int, args: argparse.Namespace) -> dict[str, Any]:
    obs_dim, act_dim = args.obs_dim, args.act_dim
    config = corl_config(algo)
    methods = make_methods("sera", {"k": args.k}, obs_dim, act_dim)
    (sera,) = methods
    sera.check_batch_size(batch_size)
    vanilla_agent, sera_agent = config.create(), config.create(hooks=methods)
    vanilla_state = vanilla_agent.init(jax.random.PRNGKey(0), obs_dim, act_dim)
    state = sera_agent.init(jax.random.PRNGKey(0), obs_dim, act_dim)
    own = sera.init_state(sera_agent, state, jax.random.PRNGKey(2), Preprocess())
    sera_state = state.replace(extras={"sera": own})
    own = jax.tree.map(jnp.copy, own)  # the fused calls donate their state, extras included
    data = synthetic_transitions(args.buffer_size, obs_dim, act_dim)
    buffers = {"replay": buffer_from_transitions(data)}

    # The estimate alone (Q̂ of the frozen critic, then the kNN estimator) and the kNN
    # estimator alone (given the values), each fused like the updates: a scan over ``fused``
    # different batches, so that a time per update carries no dispatch overhead.
    rows = np.random.default_rng(0).integers(0, args.buffer_size, (args.fused, batch_size))
    batches = jax.tree.map(lambda col: jnp.asarray(col[rows]), data)
    estimate_state = jax.tree.map(jnp.copy, sera_state)
    key = jax.random.PRNGKey(3)
    values = jax.vmap(lambda b: sera.conditioning(own, sera_agent, estimate_state, b, key))(batches)

    def estimate(batch):
        return sera.estimate(own, sera_agent, estimate_state, batch, key).reward

    def knn(batch, values):
        return knn_conditional_entropy(batch.observations, values, args.k).reward

    parts = {
        "estimate_alone": (estimate, (batches,)),
        "knn_alone": (knn, (batches, values)),
    }
    flops = {
        name: xla_flops(fn, *jax.tree.map(lambda x: x[0], inputs))
        for name, (fn, inputs) in parts.items()
    }
    scans = {name: ScannedCalls(fn, inputs) for name, (fn, inputs) in parts.items()}

    vanilla = FusedCalls(vanilla_agent.update, vanilla_state, buffers, batch_size, args.fused)
    with_sera = FusedCalls(
        methods.wrap_update(sera_agent), sera_state, buffers, batch_size, args.fused
    )
    seconds: dict[str, list[float]] = {name: [] for name in ("vanilla", "sera", *parts)}
    for _ in range(args.reps):  # alternating, so load drifts hit all alike
        seconds["vanilla"].append(vanilla.seconds_per_update())
        seconds["sera"].append(with_sera.seconds_per_update())
        for name, scanned in scans.items():
            seconds[name].append(scanned.seconds_per_call())
    median_vanilla = float(np.median(seconds["vanilla"]))
    median_sera = float(np.median(seconds["sera"]))
    return {
        "algo": algo,
        "batch_size": batch_size,
        "k": args.k,
        "flops_per_update": {
            "vanilla": vanilla.flops_per_update,
            "sera": with_sera.flops_per_update,
            **flops,
        },
        "flops_share": (with_sera.flops_per_update - vanilla.flops_per_update)
        / with_sera.flops_per_update,
        "seconds_per_update": {name: spread(values) for name, values in seconds.items()},
        "wall_share": (median_sera - median_vanilla) / median_sera,
    }


COLUMNS = ("vanilla", "sera", "estimate_alone", "knn_alone")


def table(rows: list[dict[str, Any]]) -> str:
    """GFLOP and ms per update of each function, and SERA's share of the update."""
    names = " / ".join(COLUMNS)
    lines = [
        f"| algo | batch | k | GFLOP: {names} | FLOP share | ms: {names} | wall share |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        flops = " / ".join(f"{r['flops_per_update'][c] / 1e9:.4f}" for c in COLUMNS)
        ms = " / ".join(f"{r['seconds_per_update'][c]['median'] * 1e3:.3f}" for c in COLUMNS)
        lines.append(
            f"| {r['algo']} | {r['batch_size']} | {r['k']} | {flops} | {r['flops_share']:.1%} "
            f"| {ms} | {r['wall_share']:.1%} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--algos", nargs="+", default=["cql"])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[256])
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--obs-dim", type=int, default=11)  # hopper
    parser.add_argument("--act-dim", type=int, default=3)
    parser.add_argument("--buffer-size", type=int, default=10_000)
    parser.add_argument("--fused", type=int, default=100, help="updates per jitted call")
    parser.add_argument("--reps", type=int, default=20, help="timed calls of each, alternating")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    rows = [measure(algo, b, args) for algo in args.algos for b in args.batch_sizes]
    result = {
        "machine": machine_info(),
        "command": "benchmarks/sera_cost.py",
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "rows": rows,
    }
    write_results(args.out, result, table(rows))


if __name__ == "__main__":
    main()
