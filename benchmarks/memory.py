"""Peak resident memory of fine-tuning: SAMG (online-only 50k buffer) vs vanilla (union of the
offline data and the online transitions), over offline dataset sizes.

    .venv/bin/python benchmarks/memory.py [--sizes 100000 300000 1000000] [--online-steps 2000]

Every configuration runs the real pipeline (IQL, a short offline phase, then fine-tuning) in
a fresh subprocess, which reports from /proc/self/status: the process's peak before the
online phase (VmHWM: loading, offline training and, for SAMG, the C-VAE fit), the resident
memory when the online phase starts, and the online phase's own peak (VmHWM reset there via
/proc/self/clear_refs). Datasets of a given size are hopper-medium-lite tiled to that many
rows (hopper's shapes, real episode boundaries); ``real`` is hopper-medium-lite itself.
Memory, not score: the budgets are tiny.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
from bench_common import fine_tuning_pipeline, machine_info, write_results

METHODS = ("vanilla", "samg")


def status_kib(field: str) -> int:
    """A ``/proc/self/status`` figure in KiB (VmRSS: resident now; VmHWM: peak)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def reset_peak() -> bool:
    """Restart VmHWM at the current resident size (Linux >= 4.0); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


def hopper_shaped(base: Any, rows: int | None) -> Any:
    """``base`` tiled (or cut) to ``rows`` transitions; ``None`` keeps it as it is."""
    if rows is None:
        return base
    return base.select(np.arange(rows) % base.size)


def run_once(args: argparse.Namespace, method: str, rows: int | None) -> dict[str, Any]:
    import jax

    from o2o import data as datasets
    from o2o.experiment.pipeline import PipelineConfig

    marks: dict[str, Any] = {"rss_after_imports_mib": status_kib("VmRSS") / 1024}
    dataset = hopper_shaped(datasets.load(args.dataset), rows)
    config = PipelineConfig(
        dataset=args.dataset,
        offline_steps=args.offline_steps,
        online_steps=args.online_steps,
        offline_chunk=args.offline_steps,
        offline_eval_every=args.offline_steps,
        online_eval_every=args.online_steps,
        eval_episodes=1,
        utd=1,
    )
    options = {"cvae_steps": 1000, "adaptive_every": 1000} if method == "samg" else {}
    pipeline = fine_tuning_pipeline(args.algo, dataset, config, method, options)
    marks["dataset_transitions"] = int(dataset.size)
    marks["dataset_mib"] = (
        sum(
            np.asarray(getattr(dataset, c)).nbytes
            for c in ("observations", "actions", "rewards", "next_observations")
        )
        / 2**20
    )
    del dataset  # from here on only the pipeline decides what stays referenced

    def online_start() -> None:
        gc.collect()
        marks["peak_before_online_mib"] = status_kib("VmHWM") / 1024
        marks["rss_at_online_start_mib"] = status_kib("VmRSS") / 1024
        marks["live_device_mib_at_online_start"] = sum(a.nbytes for a in jax.live_arrays()) / 2**20
        marks["peak_reset"] = reset_peak()

    pipeline.run(progress=False, on_online_start=online_start)
    marks["online_peak_mib"] = status_kib("VmHWM") / 1024
    marks["process_peak_mib"] = max(marks["online_peak_mib"], marks["peak_before_online_mib"])
    return {"method": method, "rows": rows if rows is not None else "real", **marks}


def run_in_subprocess(args: argparse.Namespace, method: str, rows: int | None) -> dict[str, Any]:
    command = [
        sys.executable,
        __file__,
        f"--child={method}:{rows if rows is not None else 'real'}",
        f"--dataset={args.dataset}",
        f"--algo={args.algo}",
        f"--offline-steps={args.offline_steps}",
        f"--online-steps={args.online_steps}",
    ]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def measure(args: argparse.Namespace) -> dict[str, Any]:
    rows = []
    for size in [*args.sizes, None] if args.real else args.sizes:
        for method in args.methods:
            row = run_in_subprocess(args, method, size)
            print(json.dumps(row), file=sys.stderr, flush=True)
            rows.append(row)
    return {
        "command": "python benchmarks/memory.py " + " ".join(sys.argv[1:]),
        "machine": machine_info(),
        "algo": args.algo,
        "dataset": args.dataset,
        "offline_steps": args.offline_steps,
        "online_steps": args.online_steps,
        "samg_buffer_capacity": 50_000,
        "rows": rows,
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "| offline transitions | fine-tuning | data MiB | peak before online MiB "
        "| RSS at online start MiB | online-phase peak MiB | device arrays at online start MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['dataset_transitions']:,}{' (real)' if row['rows'] == 'real' else ''} "
            f"| {row['method']} | {row['dataset_mib']:.0f} | {row['peak_before_online_mib']:.0f} "
            f"| {row['rss_at_online_start_mib']:.0f} | {row['online_peak_mib']:.0f} "
            f"| {row['live_device_mib_at_online_start']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[100_000, 300_000, 1_000_000])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--no-real", dest="real", action="store_false", help="skip the real data")
    parser.add_argument("--dataset", default="hopper-medium-lite")
    parser.add_argument("--algo", default="iql")
    parser.add_argument("--offline-steps", type=int, default=100)
    parser.add_argument("--online-steps", type=int, default=2000)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/memory.json"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.child:
        method, rows = args.child.split(":")
        print(json.dumps(run_once(args, method, None if rows == "real" else int(rows))))
        return {}
    result = measure(args)
    write_results(args.out, result, markdown(result))
    return result


if __name__ == "__main__":
    main()
