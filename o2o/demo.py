"""``o2o demo``: the offline-to-online story in minutes on a laptop CPU.

1. find the small ``halfcheetah-medium-replay-lite`` dataset (or make it with the D4RL recipe
   at a reduced budget and cache it);
2. pre-train IQL offline (two seeds on a vmapped axis);
3. from that same checkpoint, fine-tune online twice: vanilla IQL (offline ∪ online buffer)
   and IQL + SAMG (frozen offline critic, C-VAE weight, online data only), with equal numbers
   of gradient updates;
4. print a table (per seed, paired: both arms of a seed share its offline agent), write a
   learning-curve plot, and say what the full claims suite found (docs/claims.md).

Why this dataset: at a budget that fits in minutes, offline IQL on the medium-replay data is far
from its final level and online fine-tuning visibly lifts it; on halfcheetah-medium the same
budget moves the score by a few points (measured: BENCHMARKS.md, "The demo").
The demo's budget is below the offline critic's trained budget (the budget study), so it shows
the mechanics and the offline→online gain, not SAMG's claim: that is the claims suite's job.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from o2o import data as datasets
from o2o.analysis.curves import plot_learning_curves
from o2o.errors import DatasetError
from o2o.experiment.builder import RunSpec, execute
from o2o.experiment.pipeline import PipelineConfig
from o2o.experiment.runs import RunDir, default_run_name

DATASET = "halfcheetah-medium-replay-lite"
CLAIMS = Path(__file__).resolve().parents[1] / "benchmarks" / "reports" / "claims" / "claims.json"


def find_or_make_dataset(console: Console, train_steps: int) -> datasets.Dataset:
    try:
        return datasets.load(DATASET)
    except DatasetError:
        pass
    from o2o.data.generate import GeneratorConfig, make_lite

    console.print(
        f"[bold]{DATASET}[/bold] not found: making it (SAC, D4RL recipe, {train_steps} env steps)"
    )
    config = GeneratorConfig(
        train_steps=train_steps, eval_every=10_000, warmup=5_000, transitions=20_000, ref_episodes=5
    )
    make_lite(DATASET, config, console=console)
    return datasets.load(DATASET)


def claims_line(path: Path = CLAIMS) -> str:
    """One line on what the claims suite found for SAMG vs vanilla, from its committed
    analysis (benchmarks/claims.py), or where to look when it is not at hand."""
    if not path.exists():
        return "what the full claims suite found: docs/claims.md"
    rows = json.loads(path.read_text())["rows"]
    found = [
        r
        for r in rows
        if (r["method"], r["reference"], r["metric"], r["domain"])
        == ("samg", "vanilla", "score", "locomotion")
        and r["final"] is not None
    ]
    if not found:
        return "the claims suite has no finished SAMG-vs-vanilla pair yet: docs/claims.md"
    parts = []
    for r in found:
        d = r["final"]["difference"]
        parts.append(
            f"{r['algo'].upper()} on {len(r['tasks'])} task(s) at {r['budget']}: "
            f"{d['point']:+.1f} [{d['low']:+.1f}, {d['high']:+.1f}] points, {r['verdict']}"
        )
    return (
        "claims suite, SAMG − vanilla (final score, paired 95% CI): "
        + "; ".join(parts)
        + (" — docs/claims.md")
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="o2o demo", description=__doc__.splitlines()[0])
    parser.add_argument("--offline-steps", type=int, default=5_000)
    parser.add_argument("--online-steps", type=int, default=5_000)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument(
        "--dataset-train-steps",
        type=int,
        default=60_000,
        help="SAC budget if the dataset must be made",
    )
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"))
    args = parser.parse_args(argv)
    console = Console()
    start = time.perf_counter()
    dataset = find_or_make_dataset(console, args.dataset_train_steps)
    root = args.runs_dir / default_run_name("demo")
    config = PipelineConfig(
        dataset=DATASET,
        offline_steps=args.offline_steps,
        online_steps=args.online_steps,
        offline_eval_every=max(
            1000, args.offline_steps // 2 // 1000 * 1000
        ),  # a multiple of the 1000-step chunk
        online_eval_every=max(args.online_steps // 5, 1000),
        eval_episodes=5,
        seeds=args.seeds,
    )
    vanilla_spec = RunSpec.create("iql", config, "vanilla", domain="locomotion")
    samg_spec = RunSpec.create(
        "iql",
        config,
        "samg",
        {"cvae_steps": 2_000, "encoder_hidden_dims": [256, 256], "decoder_hidden_dims": [256]},
        domain="locomotion",
    )
    console.print(
        f"[bold]1/3[/bold] IQL offline on {DATASET} ({dataset.size} transitions), {args.offline_steps} steps × {args.seeds} seeds,"
        f" then vanilla IQL fine-tuning, {args.online_steps} env steps"
    )
    del dataset  # each run loads its own and drops it when fine-tuning starts
    vanilla_run = RunDir.create(root / "offline+vanilla", vanilla_spec.stored())
    vanilla_result, vanilla_summary = execute(vanilla_spec, vanilla_run, progress=True)
    console.print(
        f"[bold]2/3[/bold] IQL + SAMG fine-tuning from the same offline checkpoint, {args.online_steps} env steps"
    )
    samg_run = RunDir.create(root / "samg", samg_spec.stored())
    samg_result, _ = execute(samg_spec, samg_run, progress=True, offline_from=vanilla_run.path)
    console.print("[bold]3/3[/bold] table and learning curves")

    offline_rows = [r for r in vanilla_result.rows if r["phase"] == "offline"]
    curves = {
        "IQL (vanilla fine-tuning)": offline_rows
        + [r for r in vanilla_result.rows if r["phase"] == "online"],
        "IQL + SAMG": offline_rows[-1:] + [r for r in samg_result.rows if r["phase"] == "online"],
    }
    plot = plot_learning_curves(
        curves,
        root / "learning_curves.png",
        f"{DATASET}: IQL, {args.offline_steps} offline + {args.online_steps} online steps, "
        f"{args.seeds} seeds",
        boundary=args.offline_steps,
    )

    def fmt(row: dict) -> str:
        scores = np.asarray(row["seed_normalized_scores"])
        return f"{scores.mean():.1f} ± {scores.std():.1f}"

    samg_final = samg_result.rows[-1]
    table = Table(
        title=f"o2o demo — {DATASET}, {args.seeds} seeds, CPU budget (offline {args.offline_steps} / online {args.online_steps} steps)"
    )
    table.add_column("method")
    table.add_column("after offline")
    table.add_column("after online")
    table.add_column("mean p (SAMG)")
    table.add_row(
        "IQL vanilla (offline ∪ online data)",
        fmt(offline_rows[-1]),
        fmt(vanilla_result.rows[-1]),
        "-",
    )
    table.add_row(
        "IQL + SAMG (online data only)",
        fmt(offline_rows[-1]),
        fmt(samg_final),
        f"{samg_final.get('train/samg/p_mean', float('nan')):.2f}",
    )
    console.print(table)
    difference = np.asarray(samg_final["seed_normalized_scores"]) - np.asarray(
        vanilla_result.rows[-1]["seed_normalized_scores"]
    )
    console.print(
        "SAMG − vanilla after online, per seed (same offline agent, same number of updates): "
        + ", ".join(f"{d:+.1f}" for d in difference)
    )
    console.print(f"normalized score: {vanilla_summary['score_reference']}")
    console.print(claims_line())
    console.print(
        f"learning curves: {plot}   runs: {root}   total {time.perf_counter() - start:.0f} s"
    )
    return 0
