"""Online loop overhead: the share of fine-tuning wall time spent outside gradient updates
(env steps, action selection, buffer writes, evaluation, checkpoints) at UTD 1.

    .venv/bin/python benchmarks/online_overhead.py [--algos iql] [--online-steps 10000] [--reps 2]

Each run is the real pipeline (``Pipeline.run``, as ``o2o train --dataset`` builds it: a short
offline phase, then fine-tuning with the default evaluation schedule) in a fresh subprocess.
The online loop times itself per section (``o2o.experiment.online.LoopClock``; the updates
are waited for, so their time is theirs). The first run of each algorithm starts with an
empty persistent compilation cache ("cold": XLA compiles inside the loop); the following
``--reps`` runs reuse it ("warm", as every later ``o2o train`` on the same machine does).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from bench_common import fine_tuning_pipeline, machine_info, write_results

GOAL = 0.15


def overhead_share(section_seconds: dict[str, float]) -> float:
    """Fraction of the loop's wall time outside the gradient updates."""
    total = sum(section_seconds.values())
    return (total - section_seconds.get("updates", 0.0)) / total if total > 0 else 0.0


def run_once(args: argparse.Namespace, algo: str) -> dict[str, Any]:
    """One pipeline run in this process; the online loop's sections and overhead share."""
    from o2o import data as datasets
    from o2o.core import compile_cache
    from o2o.experiment.pipeline import PipelineConfig

    compile_cache.enable()
    dataset = datasets.load(args.dataset)
    config = PipelineConfig(
        dataset=args.dataset,
        offline_steps=args.offline_steps,
        online_steps=args.online_steps,
        offline_chunk=args.offline_steps,
        offline_eval_every=args.offline_steps,
        utd=1,
        eval_episodes=args.eval_episodes,
        online_eval_every=args.online_eval_every,
    )
    result = fine_tuning_pipeline(algo, dataset, config).run(progress=False)
    seconds = result.online_section_seconds
    return {
        "algo": algo,
        "section_seconds": seconds,
        "online_seconds": sum(seconds.values()),
        "overhead_share": overhead_share(seconds),
        "updates_per_s_in_loop": args.online_steps / seconds["updates"],
        "env_steps_per_s": args.online_steps / sum(seconds.values()),
    }


def run_in_subprocess(args: argparse.Namespace, algo: str, cache: Path) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", algo, *child_flags(args)]
    env = {**os.environ, "O2O_JAX_CACHE": str(cache)}
    out = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def child_flags(args: argparse.Namespace) -> list[str]:
    return [
        f"--dataset={args.dataset}",
        f"--offline-steps={args.offline_steps}",
        f"--online-steps={args.online_steps}",
        f"--online-eval-every={args.online_eval_every}",
        f"--eval-episodes={args.eval_episodes}",
    ]


def measure(args: argparse.Namespace) -> dict[str, Any]:
    rows = []
    for algo in args.algos:
        with tempfile.TemporaryDirectory(prefix="o2o-jax-cache-") as cache:
            runs = [run_in_subprocess(args, algo, Path(cache)) for _ in range(1 + args.reps)]
        for i, run in enumerate(runs):
            run["cache"] = "cold" if i == 0 else "warm"
            print(json.dumps(run), file=sys.stderr, flush=True)
        warm = [r["overhead_share"] for r in runs[1:]]
        rows.append(
            {
                "algo": algo,
                "runs": runs,
                "warm_overhead_share_median": float(np.median(warm)) if warm else None,
                "cold_overhead_share": runs[0]["overhead_share"],
            }
        )
    return {
        "command": "python benchmarks/online_overhead.py " + " ".join(sys.argv[1:]),
        "machine": machine_info(),
        "dataset": args.dataset,
        "offline_steps": args.offline_steps,
        "online_steps": args.online_steps,
        "utd": 1,
        "update_every": 50,
        "online_eval_every": args.online_eval_every,
        "eval_episodes": args.eval_episodes,
        "goal_overhead_share": GOAL,
        "rows": rows,
    }


SECTIONS = ("updates", "act", "env", "buffer", "eval", "checkpoint", "method", "other")


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "| algorithm | run | online s | " + " | ".join(SECTIONS) + " | outside updates |",
        "|---|---|---|" + "---|" * len(SECTIONS) + "---|",
    ]
    for row in result["rows"]:
        for run in row["runs"]:
            seconds = run["section_seconds"]
            total = run["online_seconds"]
            shares = " | ".join(
                f"{100 * seconds.get(s, 0.0) / total:.1f}%" if s in seconds else "—"
                for s in SECTIONS
            )
            lines.append(
                f"| {run['algo']} | {run['cache']} | {total:.1f} | {shares} "
                f"| **{100 * run['overhead_share']:.1f}%** |"
            )
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--algos", nargs="+", default=["iql"])
    parser.add_argument("--dataset", default="hopper-medium-lite")
    parser.add_argument("--offline-steps", type=int, default=1000)
    parser.add_argument("--online-steps", type=int, default=10_000)
    parser.add_argument("--online-eval-every", type=int, default=10_000, help="pipeline default")
    parser.add_argument("--eval-episodes", type=int, default=10, help="pipeline default")
    parser.add_argument("--reps", type=int, default=2, help="warm runs after the cold one")
    parser.add_argument("--child", metavar="ALGO", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/online_overhead.json"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(run_once(args, args.child)))
        return {}
    result = measure(args)
    write_results(args.out, result, markdown(result))
    return result


if __name__ == "__main__":
    main()
