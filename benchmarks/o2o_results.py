"""Offline→online results for the base algorithms (issue 4) and vanilla vs SAMG (issue 5).

    .venv/bin/python benchmarks/o2o_results.py --suite base  [--offline-steps N --online-steps M --seeds 3]
    .venv/bin/python benchmarks/o2o_results.py --suite samg
    .venv/bin/python benchmarks/o2o_results.py --suite ablation
    .venv/bin/python benchmarks/o2o_results.py --summarize

A thin front end of the suite runner (``o2o bench run``): ``--suite NAME`` is
``benchmarks/suites/NAME.yaml`` with the budget flags below applied on top. Every
configuration is a run directory under ``--out`` (default benchmarks/results/o2o):
``<dataset>/<algo>/<method>``. Fine-tuning methods are paired: each starts from the offline
checkpoint of ``<dataset>/<algo>/vanilla`` (pre-training runs once). Finished runs
(summary.json) are skipped and interrupted ones resumed, so the script can be re-run after a
crash. Seeds share one process on the engine's vmapped seed axis.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from o2o.errors import O2OError
from o2o.experiment.runner import raise_for_failures, run_suite
from o2o.experiment.suite import load_suite, parse_agent_sets, validate, with_agent_overrides

SUITES_DIR = Path(__file__).resolve().parent / "suites"
SUITES = ("base", "samg", "ablation")


def suite_from_args(args: argparse.Namespace):
    suite = load_suite(SUITES_DIR / f"{args.suite}.yaml")
    methods = tuple(
        dataclasses.replace(m, options={**m.options, "cvae_steps": args.samg_cvae_steps})
        if m.name.startswith("samg")
        else m
        for m in suite.methods
    )
    suite = validate(
        dataclasses.replace(
            suite,
            methods=methods,
            offline_steps=args.offline_steps,
            online_steps=args.online_steps,
            seeds=args.seeds,
            eval_episodes=args.eval_episodes,
        )
    )
    suite = with_agent_overrides(suite, parse_agent_sets(args.agent_set or []))
    return suite.restricted(args.only_datasets, args.only_algos)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--suite", choices=SUITES)
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
    try:
        if args.summarize:
            from o2o.analysis.results import load_results
            from o2o.analysis.tables import score_table

            print(score_table(load_results(args.out)).markdown())
            return 0
        if args.suite is None:
            parser.error("--suite or --summarize is required")
        outcomes = run_suite(suite_from_args(args), args.out, progress=not args.quiet)
        raise_for_failures(outcomes)
    except O2OError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
