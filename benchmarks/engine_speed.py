"""Engine throughput: SAC and TD3 updates/s at batch 256 with 2x256 networks, XLA-counted
FLOPs per update, achieved FLOP/s, and the ratio to this machine's dense matmul FLOP/s.

    .venv/bin/python benchmarks/engine_speed.py [--reps 5] [--out benchmarks/results/engine_speed.json]

Contenders are alternated within one process and each figure is the median of ``--reps``
repetitions (spread = min..max). Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from bench_common import BATCH, machine_info, matmul_flops, o2o_timer, synthetic_transitions

from o2o.core import buffers as buf

OBS_DIM, ACT_DIM, DATA_SIZE = 11, 3, 100_000  # hopper's dimensions


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

    data = {
        "replay": buf.buffer_from_transitions(synthetic_transitions(DATA_SIZE, OBS_DIM, ACT_DIM))
    }
    contenders = {
        f"{a} (K={k})": o2o_timer(a, OBS_DIM, ACT_DIM, data, k, args.corl_defaults)
        for a in args.algos
        for k in args.fused
    }
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    matmul: list[float] = []
    for _ in range(args.reps):  # alternate the contenders so drift hits all alike
        matmul += matmul_flops(2048, 1)
        for name, c in contenders.items():
            rates[name].append(c.rate(max(1, args.updates // c.fused)))
    peak = float(np.median(matmul))
    rows = []
    for name, c in contenders.items():
        r = np.array(rates[name])
        achieved = float(np.median(r)) * c.flops_per_update
        rows.append(
            {
                "contender": name,
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
        "machine": machine_info(),
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
