"""Offline→online results for the base algorithms (issue 4) and vanilla vs SAMG (issue 5).

    .venv/bin/python benchmarks/o2o_results.py --suite base  [--offline-steps N --online-steps M --seeds 3]
    .venv/bin/python benchmarks/o2o_results.py --suite samg
    .venv/bin/python benchmarks/o2o_results.py --suite ablation
    .venv/bin/python benchmarks/o2o_results.py --summarize

Every configuration is a run directory under ``--out`` (default benchmarks/results/o2o):
``<dataset>/<algo>/<method>``. Fine-tuning methods are paired: each starts from the offline
checkpoint of ``<dataset>/<algo>/vanilla`` (pre-training runs once). Finished runs
(summary.json) are skipped and interrupted ones resumed, so the script can be re-run after a
crash. Seeds share one process on the engine's vmapped seed axis.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import jax
import numpy as np

from o2o import data as datasets
from o2o.agents import CONFIGS
from o2o.cli import parse_overrides
from o2o.experiment.checkpoint import load_checkpoint
from o2o.experiment.pipeline import (
    OFFLINE_CHECKPOINT,
    Pipeline,
    PipelineConfig,
    fit_to_budget,
    pipeline_config_dict,
)
from o2o.experiment.runs import RunDir
from o2o.finetune import make_method

SUITES = {
    "base": {
        "datasets": ["hopper-medium-lite", "halfcheetah-medium-lite"],
        "algos": ["bc", "td3bc", "awac", "iql", "cql", "calql", "spot"],
        "methods": ["vanilla"],
    },
    "samg": {
        "datasets": [
            f"{env}-{level}-lite"
            for env in ("hopper", "halfcheetah")
            for level in ("medium", "medium-replay", "medium-expert")
        ],
        "algos": ["cql", "awac", "iql", "calql"],
        "methods": ["vanilla", "samg"],
    },
    "ablation": {
        "datasets": ["halfcheetah-medium-lite"],
        "algos": ["cql"],
        "methods": ["vanilla", "samg", "samg-even", "samg-random"],
    },
}


def run_one(
    out: Path,
    dataset_name: str,
    algo: str,
    method_name: str,
    args: argparse.Namespace,
    samg_options: dict,
) -> dict:
    path = out / dataset_name / algo / method_name
    if (path / "summary.json").exists():
        return json.loads((path / "summary.json").read_text())
    dataset = datasets.load(dataset_name)
    agent_config = (
        CONFIGS[algo].for_domain("locomotion")
        if hasattr(CONFIGS[algo], "for_domain")
        else CONFIGS[algo]()
    )
    agent_config = dataclasses.replace(
        agent_config, **parse_overrides(agent_sets(args, algo), CONFIGS[algo])
    )
    config = PipelineConfig(
        dataset=dataset_name,
        offline_steps=args.offline_steps,
        online_steps=args.online_steps,
        offline_eval_every=args.offline_steps,
        online_eval_every=max(args.online_steps // 4, 1000),
        eval_episodes=args.eval_episodes,
        seeds=args.seeds,
    )
    agent_config = fit_to_budget(
        agent_config, config.offline_steps, config.online_steps * config.utd
    )
    options = samg_options if method_name.startswith("samg") else {}
    method = make_method(method_name, options, dataset.obs_dim, dataset.act_dim)
    agent = agent_config.create(hooks=method.hooks(algo))
    resume = (path / "config.yaml").exists()
    run = RunDir.create(
        path,
        {
            **pipeline_config_dict(algo, agent_config, config),
            "finetune": {"name": method_name, "options": options},
        },
        resume=resume,
    )
    pipeline = Pipeline(
        algo, agent, config, dataset=dataset, agent_config=agent_config, method=method
    )
    offline_states = None
    if method_name != "vanilla":
        source = out / dataset_name / algo / "vanilla" / OFFLINE_CHECKPOINT
        if not source.exists():
            run_one(out, dataset_name, algo, "vanilla", args, samg_options)
        template = jax.vmap(lambda k: agent.init(k, pipeline.obs_dim, pipeline.act_dim))(
            jax.random.split(jax.random.PRNGKey(0), args.seeds)
        )
        offline_states = jax.tree.map(
            jax.numpy.asarray, load_checkpoint(source, {"states": template})["states"]
        )
        # The offline rows of the paired run, for the report.
        if not (path / "metrics.jsonl").exists():
            for row in RunDir(source.parent).rows():
                if row.get("phase") == "offline":
                    run.append("metrics.jsonl", row)
    start = time.perf_counter()
    del dataset
    result = pipeline.run(
        run, resume=resume, progress=not args.quiet, offline_states=offline_states
    )
    summary = {
        "dataset": dataset_name,
        "algo": algo,
        "method": method_name,
        "seconds": time.perf_counter() - start,
        **pipeline.describe(),
    }
    for phase in ("offline", "online"):
        rows = [r for r in result.rows if r.get("phase") == phase]
        if rows:
            summary[f"{phase}_scores"] = rows[-1]["seed_normalized_scores"]
    if method_name.startswith("samg"):
        summary["final_p_mean"] = result.rows[-1].get("train/samg/p_mean")
    run.write_summary(summary)
    return summary


def agent_sets(args: argparse.Namespace, algo: str) -> list[str]:
    """``--agent-set cql.cql_n_actions=2`` -> ``["cql_n_actions=2"]`` for algo ``cql``."""
    chosen = []
    for item in args.agent_set or []:
        prefix, _, pair = item.partition(".")
        if not pair or prefix not in CONFIGS:
            raise SystemExit(f"error: --agent-set expects ALGO.NAME=VALUE, got '{item}'")
        if prefix == algo:
            chosen.append(pair)
    return chosen


def summarize(out: Path) -> str:
    rows = [json.loads(p.read_text()) for p in sorted(out.glob("*/*/*/summary.json"))]
    lines = [
        "| dataset | algo | method | after offline | after online | Δ online−offline | wall s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        off = np.asarray(r.get("offline_scores", [np.nan]))
        on = np.asarray(r.get("online_scores", [np.nan]))
        lines.append(
            f"| {r['dataset']} | {r['algo']} | {r['method']} | {off.mean():.1f} ± {off.std():.1f} | {on.mean():.1f} ± {on.std():.1f} "
            f"| {on.mean() - off.mean():+.1f} | {r['seconds']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--suite", choices=sorted(SUITES))
    parser.add_argument("--only-datasets", nargs="*")
    parser.add_argument("--only-algos", nargs="*")
    parser.add_argument("--offline-steps", type=int, default=20_000)
    parser.add_argument("--online-steps", type=int, default=10_000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument("--samg-cvae-steps", type=int, default=3_000)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/o2o"))
    parser.add_argument(
        "--agent-set",
        nargs="*",
        metavar="ALGO.NAME=VALUE",
        help="agent config override for one algorithm, e.g. cql.cql_n_actions=2 (stored in config.yaml)",
    )
    parser.add_argument("--summarize", action="store_true")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    if args.summarize:
        print(summarize(args.out))
        return
    suite = SUITES[args.suite]
    samg_options = {"cvae_steps": args.samg_cvae_steps}
    for dataset_name in args.only_datasets or suite["datasets"]:
        for algo in args.only_algos or suite["algos"]:
            for method_name in suite["methods"]:
                summary = run_one(args.out, dataset_name, algo, method_name, args, samg_options)
                off, on = (
                    np.mean(summary.get("offline_scores", [np.nan])),
                    np.mean(summary.get("online_scores", [np.nan])),
                )
                print(
                    f"{dataset_name} {algo} {method_name}: offline {off:.1f} -> online {on:.1f} ({summary['seconds']:.0f}s)",
                    flush=True,
                )


if __name__ == "__main__":
    main()
