"""The ``o2o`` command: train, demo, datasets, bench, report, analyze.

Bad input never produces a traceback: every ``O2OError`` (and argument error) prints one
line to stderr and exits with status 2.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from o2o.arguments import OneLineParser, fail, parse_pairs
from o2o.errors import ConfigError, O2OError

# Quiet by default: XLA's and TF's C++ logging would otherwise flood the terminal.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _train_parser() -> OneLineParser:
    p = OneLineParser(
        prog="o2o train",
        description="Offline pre-training then online fine-tuning on --dataset, or online training from scratch on --env.",
    )
    p.add_argument(
        "--dataset",
        default=None,
        help="offline dataset: registered name, .hdf5 file or Minari directory",
    )
    p.add_argument(
        "--offline-steps", type=int, default=100_000, help="offline gradient steps (with --dataset)"
    )
    p.add_argument(
        "--online-steps", type=int, default=50_000, help="online env steps (with --dataset)"
    )
    p.add_argument(
        "--data-policy",
        default=None,
        choices=["union", "mixed", "online"],
        help="online data: offline∪online, a fixed mix, or online only (default: the algorithm's CORL choice)",
    )
    p.add_argument(
        "--finetune",
        default="vanilla",
        help="fine-tuning method: "
        + ", ".join(_method_labels())
        + "; join several with + (e.g. samg+sera)",
    )
    p.add_argument(
        "--method-set",
        dest="method_overrides",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="fine-tuning method option, e.g. --method-set threshold=0.4, or LABEL.NAME=VALUE "
        "with several methods (repeatable)",
    )
    p.add_argument(
        "--online-algo",
        default=None,
        help="fine-tune with this algorithm from the offline actor (e.g. --algo iql "
        "--online-algo ppo: OCR-CFT's O2PPO setting); default: --algo itself",
    )
    p.add_argument(
        "--online-set",
        dest="online_overrides",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="config override of the --online-algo agent (repeatable)",
    )
    p.add_argument(
        "--offline-fraction",
        type=float,
        default=0.5,
        help="offline share of each batch under --data-policy mixed",
    )
    p.add_argument(
        "--reward-convention",
        default="auto",
        help="auto, none, iql_locomotion, antmaze_minus_one, antmaze_cql",
    )
    p.add_argument("--no-normalize-states", action="store_true")
    p.add_argument(
        "--domain",
        default=None,
        choices=["locomotion", "maze"],
        help="hyperparameter preset (default: from the dataset)",
    )
    p.add_argument(
        "--from",
        dest="from_run",
        type=Path,
        default=None,
        help="fine-tune the offline checkpoint of this run directory (or offline.msgpack file) instead of pre-training; use with --offline-steps 0",
    )
    p.add_argument(
        "--offline-eval-every",
        type=int,
        default=25_000,
        help="offline steps between evaluations (each with its checkpoint)",
    )
    p.add_argument("--online-eval-every", type=int, default=10_000)
    p.add_argument(
        "--env",
        default="Pendulum-v1",
        help="Gymnasium env id with continuous actions (without --dataset)",
    )
    p.add_argument("--algo", default="sac", help="algorithm (o2o train --algo list to see them)")
    p.add_argument(
        "--steps", type=int, default=15_000, help="environment steps per seed (without --dataset)"
    )
    p.add_argument(
        "--seeds", type=int, default=1, help="independent seeds, trained together on a vmapped axis"
    )
    p.add_argument("--seed", type=int, default=0, help="first seed")
    p.add_argument("--utd", type=int, default=1, help="gradient updates per environment step")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument(
        "--update-every", type=int, default=50, help="env steps between fused update calls"
    )
    p.add_argument(
        "--random-steps", type=int, default=1_000, help="uniform random actions at the start"
    )
    p.add_argument("--eval-every", type=int, default=5_000)
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="agent config override, e.g. --set actor_lr=1e-4 (repeatable)",
    )
    p.add_argument("--runs-dir", type=Path, default=Path("runs"))
    p.add_argument("--name", default=None, help="run name (default: algo-env-timestamp)")
    p.add_argument(
        "--resume", action="store_true", help="continue the run --name from its last checkpoint"
    )
    p.add_argument("--no-progress", action="store_true")
    return p


def _method_labels() -> list[str]:
    from o2o.finetune import method_labels

    return method_labels()


def cmd_train(argv: list[str]) -> int:
    from o2o.agents import CONFIGS
    from o2o.experiment.builder import agent_config_for
    from o2o.experiment.online import OnlineConfig, OnlineTrainer, config_dict
    from o2o.experiment.rollout import RolloutTrainer, eval_interval
    from o2o.experiment.runs import RunDir, check_run_name, default_run_name, number

    args = _train_parser().parse_args(argv)
    if args.name is not None:
        check_run_name(args.name)  # a run stays inside --runs-dir
    if args.algo == "list":
        print(", ".join(sorted(CONFIGS)))
        return 0
    if args.dataset is not None or (
        args.resume and args.name and _is_pipeline_run(args.runs_dir / args.name)
    ):
        return cmd_train_dataset(args)
    if args.resume:
        run = _resumed_run(args)
        stored = run.config()
        algo = stored["algo"]
        agent_config = CONFIGS[algo](**_tuples(stored["agent"]))
        online = OnlineConfig(**stored["online"])
    else:
        algo = args.algo.lower()
        # From scratch: the online schedules (PPO's rate annealing) follow --steps; offline
        # ones have no budget here and keep their defaults.
        agent_config = agent_config_for(
            algo, None, parse_pairs(args.overrides), (None, args.steps * args.utd)
        )
        online = OnlineConfig(
            env=args.env,
            steps=args.steps,
            random_steps=args.random_steps,
            update_after=args.random_steps,
            update_every=args.update_every,
            utd=args.utd,
            batch_size=args.batch_size,
            eval_every=eval_interval(
                agent_config,
                min(args.eval_every, args.steps) if args.eval_every > 0 else args.eval_every,
            ),
            eval_episodes=args.eval_episodes,
            seed=args.seed,
            seeds=args.seeds,
        )
        _check_env(online.env)
    agent = agent_config.create()
    trainer_class = RolloutTrainer if agent.on_policy else OnlineTrainer
    trainer = trainer_class(agent, online)  # validated before anything is written
    try:
        if not args.resume:
            name = args.name or default_run_name(algo, online.env)
            run = RunDir.create(args.runs_dir / name, config_dict(algo, agent_config, online))
        result = trainer.run(run, resume=args.resume, progress=not args.no_progress)
    finally:
        trainer.close()
    final = result.rows[-1]
    run.write_summary({"algo": algo, "env": online.env, "final": final})
    print(
        f"{algo} on {online.env}: final return {number(final['return']):.1f} ± "
        f"{number(final['return_std']):.1f} over {online.seeds} seed(s); run saved to {run.path}"
    )
    return 0


def _resumed_run(args):
    """The run ``--name`` that ``--resume`` continues."""
    from o2o.experiment.runs import RunDir

    if args.name is None:
        raise ConfigError("--resume needs --name of the run to continue")
    return RunDir.create(args.runs_dir / args.name, {}, resume=True)


def _is_pipeline_run(path: Path) -> bool:
    from o2o.experiment.runs import CONFIG, RunDir

    return path.is_dir() and (path / CONFIG).exists() and "pipeline" in RunDir(path).config()


def cmd_train_dataset(args) -> int:
    """Offline pre-training and online fine-tuning on a dataset."""
    from o2o import data as datasets
    from o2o.experiment.builder import RunSpec, execute, score_line
    from o2o.experiment.pipeline import PipelineConfig
    from o2o.experiment.runs import RunDir, default_run_name

    if args.resume:
        run = _resumed_run(args)
        spec = RunSpec.from_stored(run.config())
    else:
        dataset = datasets.load(args.dataset)
        config = PipelineConfig(
            dataset=args.dataset,
            offline_steps=args.offline_steps,
            online_steps=args.online_steps,
            data_policy=args.data_policy,
            offline_fraction=args.offline_fraction,
            batch_size=args.batch_size,
            utd=args.utd,
            update_every=args.update_every,
            offline_eval_every=args.offline_eval_every,
            online_eval_every=args.online_eval_every,
            eval_episodes=args.eval_episodes,
            normalize_states=not args.no_normalize_states,
            reward_convention=args.reward_convention,
            seed=args.seed,
            seeds=args.seeds,
        )
        if args.from_run is not None and config.offline_steps != 0:
            raise ConfigError(
                "--from fine-tunes an existing offline checkpoint: pass --offline-steps 0 with it"
            )
        spec = RunSpec.create(
            args.algo,
            config,
            args.finetune,
            parse_pairs(args.method_overrides, "--method-set"),
            parse_pairs(args.overrides),
            args.domain,
            dataset,
            args.online_algo,
            parse_pairs(args.online_overrides, "--online-set"),
        )
        name = args.name or default_run_name(spec.algo, args.finetune, Path(str(args.dataset)).stem)
        run = RunDir.create(args.runs_dir / name, spec.stored())
        del dataset  # the pipeline loads its own, to drop it when fine-tuning starts (SAMG)

    def announce(pipeline) -> None:
        info = pipeline.describe()
        online = f" with {info['online_algo']}" if "online_algo" in info else ""
        print(
            f"{spec.algo} on {spec.pipeline.dataset} ({info['dataset_transitions']} transitions, "
            f"env {info['env_id']}): fine-tuning {info['finetune']}{online}, data policy "
            f"{info['data_policy']}, reward convention {info['reward_convention']}; "
            f"normalized score uses {info['score_reference']}"
        )

    _, summary = execute(
        spec,
        run,
        resume=args.resume,
        progress=not args.no_progress,
        offline_from=args.from_run,
        announce=announce,
    )
    for phase in ("offline", "online"):
        if f"final_{phase}" in summary:
            print(f"after {phase}: {score_line(summary[f'final_{phase}'], spec.pipeline.seeds)}")
    print(f"run saved to {run.path}")
    return 0


def _tuples(config: dict) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}


def _check_env(env_id: str) -> None:
    from o2o.envs.factory import make_env

    make_env(env_id).close()


def cmd_demo(argv: list[str]) -> int:
    from o2o.demo import main as demo_main

    return demo_main(argv)


def cmd_datasets(argv: list[str]) -> int:
    from o2o.data.cli import main as datasets_main

    return datasets_main(argv)


def cmd_bench(argv: list[str]) -> int:
    from o2o.experiment.bench_cli import main as bench_main

    return bench_main(argv)


def cmd_report(argv: list[str]) -> int:
    from o2o.analysis.cli import report_main

    return report_main(argv)


def cmd_analyze(argv: list[str]) -> int:
    from o2o.analysis.cli import analyze_main

    return analyze_main(argv)


COMMANDS = {
    "train": cmd_train,
    "demo": cmd_demo,
    "datasets": cmd_datasets,
    "bench": cmd_bench,
    "report": cmd_report,
    "analyze": cmd_analyze,
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(
            "usage: o2o {" + ",".join(COMMANDS) + "} ...\n\n"
            "  train     train an agent (o2o train --help)\n"
            "  demo      the quick end-to-end demo\n"
            "  datasets  list, inspect and make offline datasets\n"
            "  bench     run a suite of runs, resumably, here or on Ray (o2o bench run --help)\n"
            "  report    tables, statistics and figures of a results directory\n"
            "  analyze   data-coverage analysis of an environment's datasets"
        )
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        return fail(f"unknown command '{command}'; choose from {', '.join(COMMANDS)}")
    from o2o.core import compile_cache

    compile_cache.enable()
    try:
        return COMMANDS[command](rest)
    except O2OError as error:
        return fail(str(error))
    except KeyboardInterrupt:
        return fail("interrupted; continue with --resume")


if __name__ == "__main__":
    sys.exit(main())
