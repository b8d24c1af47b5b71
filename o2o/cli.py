"""The ``o2o`` command: train, demo, datasets, bench, report, analyze.

Bad input never produces a traceback: every ``O2OError`` (and argument error) prints one
line to stderr and exits with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from o2o.arguments import OneLineParser, fail, parse_pairs
from o2o.errors import ConfigError, O2OError, did_you_mean

# config.yaml's record of --from: the offline checkpoint a run fine-tunes, used on --resume.
FROM_KEY = "from"

# Quiet by default: XLA's and TF's C++ logging would otherwise flood the terminal.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """``--help`` shows each option's default, except where there is none to show."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if (
            "(default" in text
            or any(action.default is nothing for nothing in (None, False, argparse.SUPPRESS))
            or action.default == []
        ):
            return text
        return f"{text} (default: %(default)s)".lstrip()


# Options of one mode only, parsed with a None default so that "given" can be told from
# "left at its default" (a given option of the other mode is an error, never ignored); the
# defaults are filled in after that check.
DATASET_DEFAULTS: dict[str, Any] = {
    "offline_steps": 100_000,
    "online_steps": 50_000,
    "data_policy": None,
    "finetune": "vanilla",
    "method_overrides": [],
    "online_algo": None,
    "online_overrides": [],
    "offline_fraction": 0.5,
    "reward_convention": "auto",
    "no_normalize_states": False,
    "domain": None,
    "from_run": None,
    "offline_eval_every": None,  # None: fitted to the budget (budget_eval_intervals)
    "online_eval_every": None,
}
ENV_DEFAULTS: dict[str, Any] = {
    "env": "Pendulum-v1",
    "steps": 15_000,
    "random_steps": 1_000,
    "eval_every": 5_000,
}


def _train_parser() -> OneLineParser:
    from o2o.experiment.divergence import DEFAULT_MAX_LOSS

    p = OneLineParser(
        prog="o2o train",
        description="Offline pre-training then online fine-tuning on --dataset, or online "
        "training from scratch on --env. An option of the other mode is an error.",
        formatter_class=DefaultsHelpFormatter,
    )
    dataset = p.add_argument_group("offline-to-online (with --dataset)")
    env = p.add_argument_group("online from scratch (with --env, the default mode)")

    def option(group, flag: str, defaults: dict, help: str, **kwargs) -> None:
        dest = kwargs.pop("dest", flag.lstrip("-").replace("-", "_"))
        shown = defaults[dest]
        shown = f" (default: {shown})" if shown not in (None, False, []) else ""
        group.add_argument(flag, dest=dest, default=None, help=help + shown, **kwargs)

    dataset.add_argument(
        "--dataset",
        default=None,
        help="offline dataset: registered name, .hdf5 file or Minari directory",
    )
    option(dataset, "--offline-steps", DATASET_DEFAULTS, "offline gradient steps", type=int)
    option(dataset, "--online-steps", DATASET_DEFAULTS, "online env steps", type=int)
    option(
        dataset,
        "--data-policy",
        DATASET_DEFAULTS,
        "online data: offline∪online, a fixed mix, or online only (default: the algorithm's "
        "CORL choice, or the fine-tuning method's)",
        choices=["union", "mixed", "online"],
    )
    option(
        dataset,
        "--finetune",
        DATASET_DEFAULTS,
        "fine-tuning method: "
        + ", ".join(_method_labels())
        + "; join several with + (e.g. samg+sera)",
    )
    option(
        dataset,
        "--method-set",
        DATASET_DEFAULTS,
        "fine-tuning method option, e.g. --method-set threshold=0.4, or LABEL.NAME=VALUE "
        "with several methods (repeatable)",
        dest="method_overrides",
        action="append",
        metavar="NAME=VALUE",
    )
    option(
        dataset,
        "--online-algo",
        DATASET_DEFAULTS,
        "fine-tune with this algorithm from the offline actor (e.g. --algo iql --online-algo "
        "ppo); default: the method's own (o2ppo: ppo, o2sac: sac, o2td3: td3), else --algo",
    )
    option(
        dataset,
        "--online-set",
        DATASET_DEFAULTS,
        "config override of the --online-algo agent (repeatable)",
        dest="online_overrides",
        action="append",
        metavar="NAME=VALUE",
    )
    option(
        dataset,
        "--offline-fraction",
        DATASET_DEFAULTS,
        "offline share of each batch under --data-policy mixed",
        type=float,
    )
    option(
        dataset,
        "--reward-convention",
        DATASET_DEFAULTS,
        "auto (the algorithm's for the domain), none, iql_locomotion, antmaze_minus_one "
        "(r - 1), antmaze_cql (10r - 5), adroit_binary (Cal-QL's binary Adroit reward, 10(g - 1) + 5)",
    )
    option(
        dataset,
        "--no-normalize-states",
        DATASET_DEFAULTS,
        "keep raw states (default: normalised with the dataset's statistics)",
        action="store_const",
        const=True,
    )
    option(
        dataset,
        "--domain",
        DATASET_DEFAULTS,
        "hyperparameter preset (default: from the dataset)",
        choices=["locomotion", "maze", "adroit"],
    )
    option(
        dataset,
        "--from",
        DATASET_DEFAULTS,
        "fine-tune the offline checkpoint of this run directory (or offline.msgpack file) "
        "instead of pre-training; use with --offline-steps 0",
        dest="from_run",
        type=Path,
    )
    option(
        dataset,
        "--offline-eval-every",
        DATASET_DEFAULTS,
        "offline steps between evaluations, each with its checkpoint (default: about 10 per "
        "phase, a multiple of 1000, at most 25000)",
        type=int,
    )
    option(
        dataset,
        "--online-eval-every",
        DATASET_DEFAULTS,
        "online env steps between evaluations (default: about 10 per phase, at most 10000)",
        type=int,
    )
    option(env, "--env", ENV_DEFAULTS, "Gymnasium env id with continuous actions")
    option(env, "--steps", ENV_DEFAULTS, "environment steps per seed", type=int)
    option(env, "--random-steps", ENV_DEFAULTS, "uniform random actions at the start", type=int)
    option(env, "--eval-every", ENV_DEFAULTS, "env steps between evaluations", type=int)
    p.add_argument(
        "--algo",
        default="sac",
        help="algorithm (o2o train --algo list: which are offline, which online)",
    )
    p.add_argument(
        "--seeds", type=int, default=1, help="independent seeds, trained together on a vmapped axis"
    )
    p.add_argument("--seed", type=int, default=0, help="first seed")
    p.add_argument("--utd", type=int, default=1, help="gradient updates per environment step")
    p.add_argument("--batch-size", type=int, default=256, help="transitions per gradient step")
    p.add_argument(
        "--update-every", type=int, default=50, help="env steps between fused update calls"
    )
    p.add_argument("--eval-episodes", type=int, default=10, help="episodes per seed per evaluation")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="agent config override, e.g. --set actor_lr=1e-4 (repeatable)",
    )
    p.add_argument(
        "--log",
        default=None,
        metavar="SINKS",
        help="logging sinks beside metrics.jsonl, comma-separated: csv, tensorboard, wandb "
        "(W&B offline; the last two need o2o-rl[tensorboard] / o2o-rl[wandb])",
    )
    p.add_argument("--runs-dir", type=Path, default=Path("runs"), help="where run directories go")
    p.add_argument("--name", default=None, help="run name (default: algo-env-timestamp)")
    p.add_argument(
        "--resume", action="store_true", help="continue the run --name from its last checkpoint"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--max-loss",
        type=float,
        default=DEFAULT_MAX_LOSS,
        help="divergence guard: stop the run when a loss passes this magnitude (or the "
        "parameters stop being finite); not stored, so --resume may change it",
    )
    return p


def _check_mode_options(args: argparse.Namespace) -> None:
    """A given option of the other mode is an error (one line, exit 2), then the mode's
    defaults fill the options left out."""
    on_dataset = args.dataset is not None
    other = ENV_DEFAULTS if on_dataset else DATASET_DEFAULTS
    # A resumed run reads its options from config.yaml (issue 19 checks what is given).
    given = [] if args.resume else [d for d in other if getattr(args, d) is not None]
    if given:
        flags = ", ".join("--" + ("from" if d == "from_run" else _flag(d)) for d in given)
        raise ConfigError(
            f"{flags} {'applies' if len(given) == 1 else 'apply'} to "
            + (
                "online training from scratch (--env), not to a --dataset run; drop "
                + ("it" if len(given) == 1 else "them")
                + " (online budget: --online-steps, evaluations: --online-eval-every)"
                if on_dataset
                else "--dataset runs, not to online training from scratch; add --dataset "
                "or drop " + ("it" if len(given) == 1 else "them")
            )
        )
    for dest, default in {**DATASET_DEFAULTS, **ENV_DEFAULTS}.items():
        if getattr(args, dest) is None:
            setattr(args, dest, list(default) if isinstance(default, list) else default)


def _flag(dest: str) -> str:
    return {"method_overrides": "method-set", "online_overrides": "online-set"}.get(
        dest, dest.replace("_", "-")
    )


# What --resume takes from the command line; every other setting comes from config.yaml.
RESUME_FLAGS = {"resume", "name", "runs_dir", "no_progress", "max_loss", "log"}
PIPELINE_FLAGS = {
    "dataset", "offline_steps", "online_steps", "data_policy", "offline_fraction",
    "batch_size", "utd", "update_every", "offline_eval_every", "online_eval_every",
    "eval_episodes", "reward_convention", "seed", "seeds",
}  # fmt: skip
ONLINE_FLAGS = {
    "env", "steps", "random_steps", "update_every", "utd", "batch_size", "eval_every",
    "eval_episodes", "seed", "seeds",
}  # fmt: skip


def check_resume_flags(argv: list[str], stored: dict, path: Path) -> None:
    """Flags given with --resume must repeat what the run started with: one line naming the
    first that differs (a resumed run never silently ignores a changed setting)."""
    from o2o.agents import CONFIGS
    from o2o.core.overrides import coerce_overrides
    from o2o.experiment.runs import plain_config
    from o2o.finetune import coerce_method_options

    parser = _train_parser()
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    given = vars(parser.parse_args(argv))
    pipeline = "pipeline" in stored
    for dest, value in given.items():
        if dest in RESUME_FLAGS:
            continue
        if dest == "algo":
            pairs = {"algo": (stored["algo"], value.lower())}
        elif dest in PIPELINE_FLAGS and pipeline:
            pairs = {dest: (stored["pipeline"].get(dest), value)}
        elif dest in ONLINE_FLAGS and not pipeline:
            pairs = {dest: (stored["online"].get(dest), value)}
        elif dest == "no_normalize_states" and pipeline:
            pairs = {dest: (not stored["pipeline"]["normalize_states"], value)}
        elif dest == "finetune" and pipeline:
            pairs = {dest: (stored["finetune"]["name"], value)}
        elif dest == "method_overrides" and pipeline:
            finetune = stored["finetune"]
            typed = coerce_method_options(finetune["name"], parse_pairs(value, "--method-set"))
            pairs = {k: (finetune["options"].get(k), plain_config(v)) for k, v in typed.items()}
        elif dest == "overrides":
            typed = coerce_overrides(parse_pairs(value), CONFIGS[stored["algo"]])
            pairs = {k: (stored["agent"].get(k), plain_config(v)) for k, v in typed.items()}
        elif dest == "from_run" and pipeline:
            pairs = {dest: (stored.get(FROM_KEY), str(value.resolve()))}
        else:
            raise ConfigError(
                f"--{dest.replace('_', '-')} cannot be given with --resume: {path} continues "
                "with the settings of its config.yaml"
            )
        for name, (there, now) in pairs.items():
            if there != now:
                raise ConfigError(
                    f"--resume continues {path} with the settings it started with: {name} is "
                    f"{there!r} in its config.yaml, {now!r} on this command line; drop the "
                    "flag or start a new run"
                )


def _method_labels() -> list[str]:
    from o2o.finetune import method_labels

    return method_labels()


def cmd_train(argv: list[str]) -> int:
    from o2o.agents import CONFIGS
    from o2o.experiment.builder import agent_config_for
    from o2o.experiment.divergence import DivergenceGuard
    from o2o.experiment.online import OnlineConfig, OnlineTrainer, config_dict
    from o2o.experiment.rollout import RolloutTrainer, eval_interval
    from o2o.experiment.runs import RunDir, check_run_name, default_run_name, number
    from o2o.experiment.sinks import Sinks

    args = _train_parser().parse_args(argv)
    if args.name is not None:
        check_run_name(args.name)  # a run stays inside --runs-dir
    if args.algo == "list":
        from o2o.agents import ONLINE_ALGORITHMS

        offline = sorted(set(CONFIGS) - set(ONLINE_ALGORITHMS))
        print(f"offline (pre-train on --dataset, then fine-tune): {', '.join(offline)}")
        print(
            f"online (from scratch on --env; also fine-tune from a --dataset): "
            f"{', '.join(ONLINE_ALGORITHMS)}"
        )
        return 0
    _check_mode_options(args)
    sinks = _sink_names(args)
    if args.dataset is not None or (
        args.resume and args.name and _is_pipeline_run(args.runs_dir / args.name)
    ):
        return cmd_train_dataset(args, argv, sinks)
    if args.resume:
        run = _resumed_run(args)
        stored = run.config()
        check_resume_flags(argv, stored, run.path)
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
    # Validated before anything is written.
    trainer = trainer_class(agent, online, guard=DivergenceGuard(args.max_loss))
    log = None
    try:
        if not args.resume:
            name = args.name or default_run_name(algo, online.env)
            run = RunDir.create(args.runs_dir / name, config_dict(algo, agent_config, online))
        log = Sinks(sinks, run)
        result = trainer.run(run, resume=args.resume, progress=not args.no_progress, on_eval=log)
    finally:
        trainer.close()
        if log is not None:
            log.close()
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


def _sink_names(args: argparse.Namespace) -> tuple[str, ...]:
    from o2o.experiment.sinks import parse_sinks

    return parse_sinks(args.log)


def cmd_train_dataset(
    args: argparse.Namespace, argv: list[str], sinks: tuple[str, ...] = ()
) -> int:
    """Offline pre-training and online fine-tuning on a dataset."""
    from o2o import data as datasets
    from o2o.experiment.builder import RunSpec, execute, score_line, source_offline_steps
    from o2o.experiment.divergence import DivergenceGuard
    from o2o.experiment.pipeline import PipelineConfig, budget_eval_intervals
    from o2o.experiment.runs import RunDir, default_run_name
    from o2o.experiment.sinks import Sinks

    if args.resume:
        run = _resumed_run(args)
        stored = run.config()
        check_resume_flags(argv, stored, run.path)
        spec = RunSpec.from_stored(stored)
        offline_from = Path(stored[FROM_KEY]) if stored.get(FROM_KEY) else None
    else:
        dataset = datasets.load(args.dataset)
        offline_every, online_every = budget_eval_intervals(args.offline_steps, args.online_steps)
        config = PipelineConfig(
            dataset=args.dataset,
            offline_steps=args.offline_steps,
            online_steps=args.online_steps,
            data_policy=args.data_policy,
            offline_fraction=args.offline_fraction,
            batch_size=args.batch_size,
            utd=args.utd,
            update_every=args.update_every,
            offline_eval_every=offline_every
            if args.offline_eval_every is None
            else args.offline_eval_every,
            online_eval_every=online_every
            if args.online_eval_every is None
            else args.online_eval_every,
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
            source_offline_steps(args.from_run) if args.from_run is not None else None,
        )
        name = args.name or default_run_name(spec.algo, args.finetune, Path(str(args.dataset)).stem)
        offline_from = args.from_run.resolve() if args.from_run is not None else None
        stored = spec.stored()
        if offline_from is not None:
            stored[FROM_KEY] = str(offline_from)
        run = RunDir.create(args.runs_dir / name, stored)
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

    log = Sinks(sinks, run)
    try:
        _, summary = execute(
            spec,
            run,
            resume=args.resume,
            progress=not args.no_progress,
            offline_from=offline_from,
            announce=announce,
            on_eval=log,
            guard=DivergenceGuard(args.max_loss),
        )
    finally:
        log.close()
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


def _lazy(module: str, function: str) -> Callable[[list[str]], int]:
    """A command whose module is imported only when it runs (``o2o --help`` stays fast)."""

    def command(argv: list[str]) -> int:
        return getattr(importlib.import_module(module), function)(argv)

    return command


COMMANDS = {
    "train": cmd_train,
    "eval": _lazy("o2o.run_commands", "eval_main"),
    "record": _lazy("o2o.run_commands", "record_main"),
    "runs": _lazy("o2o.run_commands", "runs_main"),
    "plot": _lazy("o2o.run_commands", "plot_main"),
    "demo": _lazy("o2o.demo", "main"),
    "datasets": _lazy("o2o.data.cli", "main"),
    "bench": _lazy("o2o.experiment.bench_cli", "main"),
    "report": _lazy("o2o.analysis.cli", "report_main"),
    "analyze": _lazy("o2o.analysis.cli", "analyze_main"),
}


def main(argv: list[str] | None = None) -> int:
    try:
        return _dispatch(sys.argv[1:] if argv is None else argv)
    except BrokenPipeError:
        # The reader went away (o2o runs list | head): stop quietly, as other tools do, and
        # keep Python from reporting the pipe again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _dispatch(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(
            "usage: o2o {" + ",".join(COMMANDS) + "} ...\n\n"
            "  train     train an agent (o2o train --help)\n"
            "  eval      evaluate a run's final agent (o2o eval RUN --episodes 10)\n"
            "  record    render an episode of a run's agent to .mp4/.gif\n"
            "  runs      list runs: o2o runs list [DIR]\n"
            "  plot      learning curves of any runs: o2o plot RUN... --out f.png\n"
            "  demo      the quick end-to-end demo\n"
            "  datasets  list, inspect and make offline datasets\n"
            "  bench     run a suite of runs, resumably, here or on Ray (o2o bench run --help)\n"
            "  report    tables, statistics and figures of a results directory\n"
            "  analyze   data-coverage analysis of an environment's datasets"
        )
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        return fail(
            f"unknown command '{command}'{did_you_mean(command, COMMANDS)}; choose from {', '.join(COMMANDS)}"
        )
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
