"""``o2o datasets list | info NAME|PATH | make NAME [options] | make-standin NAME [options]``.

``main(argv)`` takes what follows the word ``datasets`` and returns the exit status; an
O2OError or an argument error prints as one ``error: ...`` line and gives status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from o2o.arguments import OneLineParser, fail
from o2o.core.progress import RunProgress
from o2o.errors import ConfigError, O2OError


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="o2o datasets", description="Offline datasets: list, inspect, make."
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    listing = sub.add_parser("list", help="named datasets, whether present, and where")
    listing.add_argument(
        "--paths", action="store_true", help="a row per dataset with its env and full path"
    )
    info = sub.add_parser("info", help="statistics of a named dataset or a file/directory")
    info.add_argument("name", help="registered name, .hdf5 path or Minari dataset directory")
    info.add_argument("--no-env-check", action="store_true", help="skip the checks against the env")
    make = sub.add_parser(
        "make",
        help="make a dataset: <env>-<level>-lite (SAC, D4RL recipe) or pointmaze-<maze>-<play|diverse>",
    )
    make.add_argument("name")
    make.add_argument("--seed", type=int, default=0)
    make.add_argument(
        "--out-dir", type=Path, default=None, help="default: $O2O_DATA_DIR or ~/.cache/o2o/datasets"
    )
    make.add_argument("--force", action="store_true", help="rebuild the file even if it exists")
    make.add_argument(
        "--transitions",
        type=int,
        default=None,
        help="rows per rollout level (random/medium/expert); maze: rows",
    )
    # SAC generator budget (ignored for mazes)
    make.add_argument(
        "--train-steps", type=int, default=None, help="SAC env steps (default 300000)"
    )
    make.add_argument(
        "--eval-every", type=int, default=None, help="env steps between checkpoints (default 10000)"
    )
    make.add_argument(
        "--eval-episodes",
        type=int,
        default=None,
        help="deterministic episodes per checkpoint (default 5)",
    )
    make.add_argument(
        "--ref-episodes",
        type=int,
        default=None,
        help="episodes for the reference returns (default 20)",
    )
    make.add_argument(
        "--warmup", type=int, default=None, help="uniform-random SAC warm-up steps (default 5000)"
    )
    make.add_argument(
        "--work-dir", type=Path, default=None, help="checkpoints of the SAC run (resume state)"
    )
    make.add_argument("--noise-std", type=float, default=0.3, help="maze controller action noise")
    standin = sub.add_parser(
        "make-standin",
        help="a small random-policy stand-in for a D4RL/Minari Adroit or AntMaze dataset, "
        "in the real layout (CI, machines without the real files)",
    )
    standin.add_argument(
        "name",
        help="D4RL name (pen-human-v1, antmaze-umaze-v2: HDF5 <name>-standin.hdf5) or Minari id "
        "(D4RL/pen/human-v2: Minari directory o2o-standin/pen/human-v2)",
    )
    standin.add_argument("--episodes", type=int, default=3)
    standin.add_argument(
        "--max-steps", type=int, default=None, help="cut episodes here (default: D4RL's limit)"
    )
    standin.add_argument("--seed", type=int, default=0)
    standin.add_argument(
        "--out-dir",
        type=Path,
        default=None,
        help="HDF5: default $O2O_DATA_DIR; Minari: the Minari root (default $MINARI_DATASETS_PATH)",
    )
    standin.add_argument("--force", action="store_true", help="replace an existing stand-in")
    return parser


def _where(entry, path) -> str:
    """Which known directory holds ``path`` (short names, listed under the table)."""
    from o2o.data.registry import data_dir, minari_root, reference_dir

    if path is None:
        return "make" if entry.makeable else "missing"
    for label, root in (
        ("reference", reference_dir()),
        ("data", data_dir()),
        ("minari", minari_root()),
    ):
        if root is not None and Path(root) in Path(path).parents:
            return label
    return "d4rl" if entry.suite == "d4rl" else str(path)


def _list(console: Console, paths: bool = False) -> int:
    """One short row per dataset (fits 80 columns); ``paths``: its env and full path too."""
    from o2o.data.registry import data_dir, entries_with_locations, minari_root, reference_dir

    table = Table(title="o2o datasets")
    table.add_column("name", no_wrap=True)
    table.add_column("suite", no_wrap=True)
    table.add_column("where", no_wrap=not paths, overflow="fold")
    if paths:
        table.add_column("env", no_wrap=True)
    for entry, path in entries_with_locations():
        where = _where(entry, path)
        if paths:
            where = str(path) if path else f"put at {entry.candidates()[0]}"
            copies = entry.find_all()
            if len(copies) > 1:  # e.g. a made lite file shadowed by the shared reference file
                where += " (also: " + ", ".join(str(p) for p in copies[1:]) + ")"
        row = [entry.name, entry.suite, where]
        table.add_row(*row, *([entry.env_id.split(":")[-1]] if paths else []))
    console.print(table)
    console.print(
        "where: reference = the shared reference dir, data = the data dir, minari = the Minari "
        "root, d4rl = D4RL's download dir; make = `o2o datasets make NAME` builds it; missing = "
        "bring the file (`o2o datasets list --paths` shows where it goes)."
    )
    console.print(f"data dir: {data_dir()}  (set O2O_DATA_DIR to change)")
    console.print(f"reference dir: {reference_dir() or 'not found'}")
    console.print(f"Minari root: {minari_root()}  (set MINARI_DATASETS_PATH to change)")
    console.print(
        "D4RL files (hopper-medium-v2, antmaze-*-v2, pen-human-v1 ...): copy <name>.hdf5 into "
        "the data dir or $D4RL_DATASET_DIR (~/.d4rl/datasets). Minari ids: "
        "`minari download D4RL/pen/human-v2`. Without them: `o2o datasets make-standin NAME`. "
        "See docs/datasets.md."
    )
    return 0


def _info(console: Console, name: str, check_env: bool) -> int:
    from o2o.data.loader import env_id_for, load
    from o2o.data.scores import score_reference

    dataset = load(name, check_env=check_env)
    stats = dataset.statistics()
    table = Table(title=dataset.name, show_header=False)
    table.add_column("key")
    table.add_column("value")
    table.add_row("source", str(dataset.metadata.get("source")))
    try:
        table.add_row("env", env_id_for(dataset))
    except O2OError:
        table.add_row("env", "unknown")
    table.add_row(
        "env check",
        {True: "passed", False: "skipped (env not available)"}.get(
            dataset.metadata.get("env_checked"), "skipped"
        ),
    )
    table.add_row("transitions", f"{stats['transitions']}")
    table.add_row(
        "episodes", f"{stats['episodes']} complete, {stats['incomplete_episodes']} incomplete"
    )
    table.add_row("terminals / timeouts", f"{stats['terminals']} / {stats['timeouts']}")
    table.add_row("obs / act dim", f"{stats['obs_dim']} / {stats['act_dim']}")
    if "return_mean" in stats:
        table.add_row(
            "episode return",
            f"mean {stats['return_mean']:.1f} ± {stats['return_std']:.1f}, "
            f"min {stats['return_min']:.1f}, max {stats['return_max']:.1f}",
        )
        try:
            reference = score_reference(dataset)
            norm = reference.normalize
            table.add_row(
                "normalized score",
                f"mean {norm(stats['return_mean']):.1f}, range [{norm(stats['return_min']):.1f}, "
                f"{norm(stats['return_max']):.1f}]",
            )
            table.add_row("reference", reference.describe())
        except ConfigError as error:
            table.add_row("normalized score", f"n/a ({error})")
    for key in (
        "level",
        "policy",
        "controller_success_rate",
        "data_episode_success_rate",
        "generator",
        "standin",
        "minari_env_id",
        "minari_max_episode_steps",
    ):
        if key in dataset.metadata:
            table.add_row(key, str(dataset.metadata[key])[:200])
    console.print(table)
    return 0


def _make(console: Console, args: argparse.Namespace) -> int:
    from o2o.data.hdf5 import write_hdf5
    from o2o.data.registry import data_dir, lookup

    entry = lookup(args.name)
    if entry is None or not entry.makeable:
        raise ConfigError(
            f"cannot make {args.name!r}: expected <hopper|halfcheetah|walker2d>-<level>-lite or "
            "pointmaze-<umaze|medium|large>-<play|diverse> (see `o2o datasets list`)"
        )
    out_dir = args.out_dir or data_dir()
    if entry.suite == "maze":
        from o2o.data.maze_data import DEFAULT_MAZE_TRANSITIONS, make_maze_dataset

        target = out_dir / entry.filename
        if target.exists() and not args.force:
            console.print(f"{target} exists (use --force to rebuild)")
            return 0
        total = args.transitions or DEFAULT_MAZE_TRANSITIONS
        bar = RunProgress(total, f"collect {entry.name}", console=console, unit="rows", note="")
        with bar:
            dataset = make_maze_dataset(
                entry.name, total, seed=args.seed, noise_std=args.noise_std, progress=bar.advance_to
            )
        write_hdf5(dataset, target)
        console.print(
            f"wrote {target}: {dataset.size} transitions, {dataset.num_episodes} episodes, "
            f"data success rate {dataset.metadata['data_episode_success_rate']:.2f}"
        )
        return 0

    from o2o.data.generate import GeneratorConfig, make_lite

    overrides = {
        key: getattr(args, key)
        for key in (
            "train_steps",
            "eval_every",
            "eval_episodes",
            "ref_episodes",
            "warmup",
            "transitions",
        )
        if getattr(args, key) is not None
    }
    config = GeneratorConfig(seed=args.seed, **overrides)
    make_lite(
        entry.name,
        config,
        out_dir=out_dir,
        work_dir=args.work_dir,
        force=args.force,
        console=console,
    )
    return 0


def _make_standin(console: Console, args: argparse.Namespace) -> int:
    from o2o.data.registry import data_dir
    from o2o.data.standin import parse_target, write_d4rl_standin, write_minari_standin

    if args.episodes < 1 or (args.max_steps is not None and args.max_steps < 1):
        raise ConfigError("--episodes and --max-steps must be positive")
    target = parse_target(args.name)
    bar = RunProgress(
        args.episodes, f"stand-in {args.name}", console=console, unit="episodes", note=""
    )
    options = dict(
        episodes=args.episodes, max_steps=args.max_steps, seed=args.seed, on_episode=bar.advance_to
    )
    with bar:
        if target.layout == "d4rl":
            out = args.out_dir or data_dir()
            path = write_d4rl_standin(target, out, force=args.force, **options)
            use = str(path)
        else:
            path = write_minari_standin(target, args.out_dir, force=args.force, **options)
            use = target.minari_id if args.out_dir is None else str(path)
    console.print(f"wrote {path} ({target.layout} layout); train on it: o2o train --dataset {use}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    console = Console()
    try:
        if args.command == "list":
            return _list(console, args.paths)
        if args.command == "info":
            return _info(console, args.name, check_env=not args.no_env_check)
        if args.command == "make-standin":
            return _make_standin(console, args)
        return _make(console, args)
    except O2OError as error:
        return fail(str(error).replace("\n", " "))


if __name__ == "__main__":
    sys.exit(main())
