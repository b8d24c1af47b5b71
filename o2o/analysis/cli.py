"""``o2o report RESULTS_DIR`` and ``o2o analyze coverage ENV``."""

from __future__ import annotations

import argparse
from pathlib import Path


def _report_parser() -> argparse.ArgumentParser:
    from o2o.arguments import OneLineParser

    parser = OneLineParser(
        prog="o2o report",
        description="Tables, rliable statistics, learning curves, regret and SAMG diagnostics "
        "of every offline→online run below RESULTS_DIR.",
    )
    parser.add_argument("results_dir", type=Path)
    parser.add_argument(
        "--out", type=Path, default=None, help="report directory (default RESULTS_DIR/report)"
    )
    parser.add_argument("--html", action="store_true", help="also write report.html")
    parser.add_argument("--reps", type=int, default=2000, help="bootstrap resamples for the CIs")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    parser.add_argument("--title", default=None)
    from o2o.analysis.curves import add_band_argument

    add_band_argument(parser)
    return parser


def report_main(argv: list[str]) -> int:
    from o2o.analysis.report import write_report
    from o2o.errors import ConfigError

    args = _report_parser().parse_args(argv)
    if args.reps < 1:
        raise ConfigError(f"--reps must be positive, got {args.reps}")
    for path in write_report(
        args.results_dir, args.out, args.html, args.reps, args.seed, args.title, args.band
    ):
        print(f"wrote {path}")
    return 0


def _analyze_parser() -> argparse.ArgumentParser:
    from o2o.analysis.coverage import CoverageConfig
    from o2o.arguments import OneLineParser

    defaults = CoverageConfig()
    parser = OneLineParser(prog="o2o analyze", description="Analyses of offline datasets.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    coverage = sub.add_parser(
        "coverage",
        help="t-SNE + hierarchical clustering coverage of an environment's dataset levels",
        description="Pool the levels of ENV's datasets, subsample, embed states and actions "
        "separately with t-SNE, cluster hierarchically, and count the cluster centres each "
        "level covers; repeated over seeds (SAMG paper, Appendix C.7).",
    )
    coverage.add_argument("env", help="environment prefix, e.g. hopper (pools hopper-*-lite)")
    coverage.add_argument(
        "--datasets",
        nargs="+",
        default=None,
        help="dataset names or files to pool instead of ENV's registered levels",
    )
    coverage.add_argument(
        "--suffix",
        default=defaults.suffix,
        help="level name suffix (-lite; '' for D4RL -v2 names use --datasets)",
    )
    coverage.add_argument(
        "--fraction", type=float, default=defaults.fraction, help="uniform subsample of the pool"
    )
    coverage.add_argument(
        "--max-points",
        type=int,
        default=defaults.max_points,
        help="cap on the subsample (t-SNE is O(n log n) but slow on 2 cores)",
    )
    coverage.add_argument(
        "--clusters",
        type=int,
        default=defaults.clusters,
        help="clusters of the hierarchical clustering",
    )
    coverage.add_argument(
        "--min-samples",
        type=int,
        default=None,
        help="samples of a level a cluster needs for the level to have it (default: the paper's 50, scaled by subsample size / 50,000, at least 3)",
    )
    coverage.add_argument(
        "--seeds", type=int, default=defaults.seeds, help="repetitions with different subsamples"
    )
    coverage.add_argument("--perplexity", type=float, default=defaults.perplexity)
    coverage.add_argument("--iterations", type=int, default=defaults.iterations, help="t-SNE steps")
    coverage.add_argument(
        "--threads",
        type=int,
        default=defaults.threads,
        help="t-SNE threads (1: best on busy cores)",
    )
    coverage.add_argument(
        "--out", type=Path, default=None, help="output directory (default runs/coverage-ENV)"
    )
    coverage.add_argument("--no-progress", action="store_true")
    return parser


def analyze_main(argv: list[str]) -> int:
    from o2o.analysis.coverage import CoverageConfig, write_coverage_report

    args = _analyze_parser().parse_args(argv)
    config = CoverageConfig(
        fraction=args.fraction,
        max_points=args.max_points,
        clusters=args.clusters,
        min_samples=args.min_samples,
        seeds=args.seeds,
        perplexity=args.perplexity,
        iterations=args.iterations,
        threads=args.threads,
        suffix=args.suffix,
    )
    out = args.out or Path("runs") / f"coverage-{args.env}"
    for path in write_coverage_report(
        args.env, config, out, datasets=args.datasets, progress=not args.no_progress
    ):
        print(f"wrote {path}")
    return 0
