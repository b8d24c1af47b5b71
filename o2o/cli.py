"""The ``o2o`` command: train, demo, datasets.

Bad input never produces a traceback: every ``O2OError`` (and argument error) prints one
line to stderr and exits with status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from o2o.errors import ConfigError, O2OError

# Quiet by default: XLA's and TF's C++ logging would otherwise flood the terminal.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, status 2, like every other bad input
        raise SystemExit(_fail(f"{self.prog}: {message}"))


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def parse_overrides(pairs: list[str], config_cls: type) -> dict[str, Any]:
    """``["actor_lr=1e-4", "hidden_dims=[64,64]"]`` -> typed field overrides of ``config_cls``."""
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    overrides: dict[str, Any] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        name = name.strip().replace("-", "_")
        if not sep:
            raise ConfigError(f"--set expects NAME=VALUE, got '{pair}'")
        if name not in fields:
            raise ConfigError(f"{config_cls.__name__} has no option '{name}'; options: {', '.join(sorted(fields))}")
        value = yaml.safe_load(text)
        default = fields[name].default
        if isinstance(default, tuple) and isinstance(value, list):
            value = tuple(value)
        elif isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif isinstance(default, float) and isinstance(value, str):
            raise ConfigError(f"option '{name}' expects a number, got '{text}'")
        overrides[name] = value
    return overrides


def _train_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="o2o train", description="Train an agent online on a Gymnasium env (offline-to-online arrives with datasets).")
    p.add_argument("--env", default="Pendulum-v1", help="Gymnasium env id with continuous actions")
    p.add_argument("--algo", default="sac", help="algorithm: sac, td3")
    p.add_argument("--steps", type=int, default=15_000, help="environment steps per seed")
    p.add_argument("--seeds", type=int, default=1, help="independent seeds, trained together on a vmapped axis")
    p.add_argument("--seed", type=int, default=0, help="first seed")
    p.add_argument("--utd", type=int, default=1, help="gradient updates per environment step")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--update-every", type=int, default=50, help="env steps between fused update calls")
    p.add_argument("--random-steps", type=int, default=1_000, help="uniform random actions at the start")
    p.add_argument("--eval-every", type=int, default=5_000)
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE", help="agent config override, e.g. --set actor_lr=1e-4 (repeatable)")
    p.add_argument("--runs-dir", type=Path, default=Path("runs"))
    p.add_argument("--name", default=None, help="run name (default: algo-env-timestamp)")
    p.add_argument("--resume", action="store_true", help="continue the run --name from its last checkpoint")
    p.add_argument("--no-progress", action="store_true")
    return p


def cmd_train(argv: list[str]) -> int:
    from o2o.agents import CONFIGS
    from o2o.experiment.online import OnlineConfig, OnlineTrainer, config_dict
    from o2o.experiment.runs import RunDir, default_run_name

    args = _train_parser().parse_args(argv)
    if args.resume:
        if args.name is None:
            raise ConfigError("--resume needs --name of the run to continue")
        run = RunDir.create(args.runs_dir / args.name, {}, resume=True)
        stored = run.config()
        algo = stored["algo"]
        agent_config = CONFIGS[algo](**_tuples(stored["agent"]))
        online = OnlineConfig(**stored["online"])
    else:
        algo = args.algo.lower()
        if algo not in CONFIGS:
            raise ConfigError(f"unknown algorithm '{args.algo}'; choose from {', '.join(sorted(CONFIGS))}")
        agent_config = CONFIGS[algo](**parse_overrides(args.overrides, CONFIGS[algo]))
        online = OnlineConfig(
            env=args.env,
            steps=args.steps,
            random_steps=args.random_steps,
            update_after=args.random_steps,
            update_every=args.update_every,
            utd=args.utd,
            batch_size=args.batch_size,
            eval_every=min(args.eval_every, args.steps) if args.eval_every > 0 else args.eval_every,
            eval_episodes=args.eval_episodes,
            seed=args.seed,
            seeds=args.seeds,
        )
        _check_env(online.env)
        name = args.name or default_run_name(algo, online.env)
        run = RunDir.create(args.runs_dir / name, config_dict(algo, agent_config, online))
    trainer = OnlineTrainer(agent_config.create(), online)
    try:
        result = trainer.run(run, resume=args.resume, progress=not args.no_progress)
    finally:
        trainer.close()
    final = result.rows[-1]
    run.write_summary({"algo": algo, "env": online.env, "final": final})
    print(f"{algo} on {online.env}: final return {final['return']:.1f} ± {final['return_std']:.1f} over {online.seeds} seed(s); run saved to {run.path}")
    return 0


def _tuples(config: dict[str, Any]) -> dict[str, Any]:
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


COMMANDS = {"train": cmd_train, "demo": cmd_demo, "datasets": cmd_datasets}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: o2o {" + ",".join(COMMANDS) + "} ...\n\n"
              "  train     train an agent (o2o train --help)\n"
              "  demo      the quick end-to-end demo\n"
              "  datasets  list, inspect and make offline datasets")
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        return _fail(f"unknown command '{command}'; choose from {', '.join(COMMANDS)}")
    try:
        return COMMANDS[command](rest)
    except O2OError as error:
        return _fail(str(error))
    except KeyboardInterrupt:
        return _fail("interrupted; continue with --resume")


if __name__ == "__main__":
    sys.exit(main())
