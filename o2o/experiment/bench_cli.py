"""``o2o bench run SUITE``: run a suite here, or on a Ray cluster with ``--ray``."""

from __future__ import annotations

import argparse
from pathlib import Path

from o2o.errors import O2OError

PUBLISHED_SUITES = Path("benchmarks") / "suites"


def _parser() -> argparse.ArgumentParser:
    from o2o.arguments import OneLineParser

    parser = OneLineParser(prog="o2o bench", description="Suites of offline→online runs.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    run = sub.add_parser(
        "run",
        help="run what has no finished result yet; resume what was interrupted",
        description="Run a suite: finished configurations are skipped, interrupted ones resumed.",
    )
    run.add_argument("suite", help=f"suite YAML file, or the name of one in {PUBLISHED_SUITES}/")
    run.add_argument(
        "--out", type=Path, default=None, help="results directory (default runs/<suite name>)"
    )
    run.add_argument(
        "--ray",
        default=None,
        metavar="ADDRESS|auto|local",
        help="one Ray task per configuration: auto = the running cluster or else a local instance",
    )
    run.add_argument("--ray-cpus", type=int, default=None, help="CPUs of a local Ray instance")
    run.add_argument("--cpus-per-task", type=float, default=1.0, help="Ray CPUs per configuration")
    run.add_argument("--only-datasets", nargs="+", default=None)
    run.add_argument("--only-algos", nargs="+", default=None)
    run.add_argument(
        "--only-methods",
        nargs="+",
        default=None,
        metavar="LABEL",
        help="method labels as in the run directories (e.g. famo2o-fixed); two processes with "
        "different labels can share one --out",
    )
    run.add_argument(
        "--agent-set",
        nargs="+",
        default=[],
        metavar="ALGO.NAME=VALUE",
        help="per-algorithm agent override on top of the suite's, e.g. cql.cql_n_actions=2",
    )
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="list the configurations with their state (finished with scores, running or "
        "interrupted with phase and step, missing) and stop",
    )
    run.add_argument("--quiet", action="store_true", help="no per-run progress bars")
    return parser


def resolve_suite_path(text: str) -> Path:
    path = Path(text)
    if path.is_file():
        return path
    published = PUBLISHED_SUITES / f"{text}.yaml"
    if published.is_file():
        return published
    raise O2OError(f"suite {text}: no such file (nor {published})")


def main(argv: list[str]) -> int:
    from o2o.experiment.runner import describe_status, plan_line, raise_for_failures, run_suite
    from o2o.experiment.suite import load_suite, parse_agent_sets, with_agent_overrides

    args = _parser().parse_args(argv)
    suite = load_suite(resolve_suite_path(args.suite))
    if args.agent_set:
        suite = with_agent_overrides(suite, parse_agent_sets(args.agent_set))
    suite = suite.restricted(args.only_datasets, args.only_algos, args.only_methods)
    out = args.out or Path("runs") / suite.name
    if args.dry_run:
        print(plan_line(suite, out))
        for config in suite.configurations():
            print(f"  {config.relpath}  [{describe_status(out, config)}]")
        return 0
    if args.ray is not None:
        from o2o.experiment.ray_runner import run_suite_on_ray

        outcomes = run_suite_on_ray(
            suite, out, args.ray, num_cpus=args.ray_cpus, cpus_per_task=args.cpus_per_task
        )
    else:
        outcomes = run_suite(suite, out, progress=not args.quiet)
    raise_for_failures(outcomes)
    print(f"results in {out}; report with: o2o report {out}")
    return 0
