"""``o2o demo``: a few minutes of training on a laptop CPU, a table at the end.

For now the demo trains SAC and TD3 online on Pendulum-v1 with two seeds each (the seeds
share one process on a vmapped axis).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from o2o.agents import CONFIGS
from o2o.experiment.online import OnlineConfig, OnlineTrainer, config_dict
from o2o.experiment.runs import RunDir, default_run_name


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="o2o demo")
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"))
    args = parser.parse_args(argv)
    console = Console()
    table = Table(
        title=f"o2o demo: online training on Pendulum-v1 ({args.steps} env steps, {args.seeds} seeds, CPU)"
    )
    for column in ("algorithm", "final return (mean ± std)", "per seed", "wall time"):
        table.add_column(column)
    for algo in ("sac", "td3"):
        online = OnlineConfig(
            env="Pendulum-v1", steps=args.steps, eval_every=args.steps // 2, seeds=args.seeds
        )
        agent_config = CONFIGS[algo]()
        run = RunDir.create(
            args.runs_dir / default_run_name("demo", algo), config_dict(algo, agent_config, online)
        )
        console.print(f"[bold]{algo.upper()}[/bold] -> {run.path}")
        trainer = OnlineTrainer(agent_config.create(), online)
        start = time.perf_counter()
        result = trainer.run(run)
        trainer.close()
        final = result.rows[-1]
        table.add_row(
            algo.upper(),
            f"{final['return']:.1f} ± {final['return_std']:.1f}",
            ", ".join(f"{r:.0f}" for r in final["seed_returns"]),
            f"{time.perf_counter() - start:.0f} s",
        )
    console.print(table)
    console.print("Pendulum-v1 returns range from about -1600 (random) to about -150 (solved).")
    return 0
