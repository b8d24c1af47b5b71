"""Engine throughput: SAC and TD3 updates/s at batch 256 with 2x256 networks, XLA-counted
FLOPs per update, achieved FLOP/s, and the ratio to this machine's dense matmul FLOP/s.

    .venv/bin/python benchmarks/engine_speed.py [--reps 5] [--out benchmarks/results/engine_speed.json]

Contenders are alternated within one process and each figure is the median of ``--reps``
repetitions (spread = min..max). Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from o2o.agents import CONFIGS, make_agent
from o2o.core import buffers as buf
from o2o.core.engine import compile_fused
from o2o.core.types import Transition

OBS_DIM, ACT_DIM, DATA_SIZE, BATCH = 11, 3, 100_000, 256  # hopper's dimensions


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def matmul_flops(size: int, reps: int) -> list[float]:
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


def synthetic_data() -> dict[str, buf.ReplayBuffer]:
    rng = np.random.default_rng(0)
    t = Transition(
        rng.normal(size=(DATA_SIZE, OBS_DIM)).astype(np.float32),
        rng.uniform(-1, 1, (DATA_SIZE, ACT_DIM)).astype(np.float32),
        rng.normal(size=DATA_SIZE).astype(np.float32),
        rng.normal(size=(DATA_SIZE, OBS_DIM)).astype(np.float32),
        np.zeros(DATA_SIZE, np.float32),
        np.zeros(DATA_SIZE, np.float32),
    )
    return {"replay": buf.buffer_from_transitions(t)}


class Contender:
    def __init__(self, algo: str, fused: int, data, corl_defaults: bool = False):
        self.name = f"{algo} (K={fused})"
        self.algo, self.fused, self.data = algo, fused, data
        if corl_defaults:
            config_cls = CONFIGS[algo]
            config = (
                config_cls.for_domain("locomotion")
                if hasattr(config_cls, "for_domain")
                else config_cls()
            )
            agent = config.create()
        else:
            agent = make_agent(algo, hidden_dims=(256, 256))
        self.state = agent.init(jax.random.PRNGKey(0), OBS_DIM, ACT_DIM)
        self.key = jax.random.PRNGKey(1)
        self.fn = compile_fused(agent.update, buf.Sampler(BATCH), fused, seed_axis=False)
        one_step = jax.jit(
            compile_fused(agent.update, buf.Sampler(BATCH), 1, seed_axis=False).__wrapped__
        )
        cost = one_step.lower(self.state, data, self.key).compile().cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        self.flops_per_update = float(cost["flops"])
        self._step()  # compile and warm up

    def _step(self):
        self.state, self.key, metrics = self.fn(self.state, self.data, self.key)
        return metrics

    def rate(self, updates: int) -> float:
        calls = max(1, updates // self.fused)
        jax.block_until_ready(self.state)
        t0 = time.perf_counter()
        for _ in range(calls):
            self._step()
        jax.block_until_ready(self.state)
        return calls * self.fused / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--updates", type=int, default=2000, help="updates per repetition")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/engine_speed.json"))
    parser.add_argument("--algos", nargs="+", default=["sac", "td3"])
    parser.add_argument("--fused", type=int, nargs="+", default=[1, 100], help="K values")
    parser.add_argument(
        "--corl-defaults",
        action="store_true",
        help="each algorithm's own locomotion network sizes instead of 2x256 everywhere",
    )
    args = parser.parse_args()

    data = synthetic_data()
    contenders = [Contender(a, k, data, args.corl_defaults) for a in args.algos for k in args.fused]
    rates: dict[str, list[float]] = {c.name: [] for c in contenders}
    matmul: list[float] = []
    for _ in range(args.reps):  # alternate the contenders so drift hits all alike
        matmul += matmul_flops(2048, 1)
        for c in contenders:
            rates[c.name].append(c.rate(args.updates))
    peak = float(np.median(matmul))
    rows = []
    for c in contenders:
        r = np.array(rates[c.name])
        achieved = float(np.median(r)) * c.flops_per_update
        rows.append(
            {
                "contender": c.name,
                "updates_per_s_median": float(np.median(r)),
                "updates_per_s_min": float(r.min()),
                "updates_per_s_max": float(r.max()),
                "flops_per_update": c.flops_per_update,
                "achieved_flops_per_s": achieved,
                "fraction_of_matmul": achieved / peak,
            }
        )
    result = {
        "command": "python benchmarks/engine_speed.py "
        + " ".join(f"--{k} {v}" for k, v in vars(args).items() if k != "out"),
        "machine": {
            "processor": _cpu_model(),
            "cores": os.cpu_count(),
            "backend": jax.default_backend(),
            "jax": jax.__version__,
        },
        "batch_size": BATCH,
        "hidden_dims": "each algorithm's CORL locomotion sizes"
        if args.corl_defaults
        else [256, 256],
        "obs_dim": OBS_DIM,
        "act_dim": ACT_DIM,
        "matmul_2048_flops_per_s_median": peak,
        "matmul_2048_flops_per_s_all": matmul,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"dense f32 matmul 2048^3: {peak / 1e9:.1f} GFLOP/s (median of {len(matmul)})")
    print("| update | updates/s (median, min-max) | MFLOP/update | achieved GFLOP/s | of matmul |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['contender']} | {row['updates_per_s_median']:.0f} ({row['updates_per_s_min']:.0f}-{row['updates_per_s_max']:.0f}) "
            f"| {row['flops_per_update'] / 1e6:.0f} | {row['achieved_flops_per_s'] / 1e9:.1f} | {100 * row['fraction_of_matmul']:.0f}% |"
        )


if __name__ == "__main__":
    main()
