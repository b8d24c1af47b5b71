"""The Python API: train offline→online with methods composed, then load a run and act.

    import o2o

    result = o2o.fit("hopper-medium-lite", algo="iql", methods="samg+sera",
                     offline_steps=50_000, online_steps=20_000, seeds=3, run_dir="runs/x")
    result.rows[-1]["normalized_score"]
    policy = o2o.load("runs/x")
    policy.act(obs)                       # one observation or a batch, deterministic
    policy.evaluate(episodes=10)          # the pipeline's own evaluation of the final agent

``fit`` goes through the same builder as ``o2o train`` (``RunSpec.create`` then ``execute``):
the same presets, budget fitting (IQL's cosine actor schedule, SPOT's λ cooling) and rows for
the same seed and budget.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from o2o.errors import ConfigError, O2OError, did_you_mean


@dataclass(frozen=True)
class FitResult:
    """What ``fit`` returns: the metrics rows (both phases, as metrics.jsonl holds them), the
    summary (what summary.json holds) and the run directory (None when nothing was saved)."""

    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    run_dir: Path | None

    def final(self, phase: str = "online") -> dict[str, Any]:
        """The last row of ``phase`` (offline or online)."""
        rows = [r for r in self.rows if r.get("phase") == phase]
        if not rows:
            raise ConfigError(f"no {phase} rows in this run")
        return rows[-1]


def method_label(methods: str | Sequence[str] | None) -> str:
    """``"samg+sera"``, ``["samg", "sera"]`` or None (vanilla) as the ``--finetune`` label."""
    if methods is None:
        return "vanilla"
    if isinstance(methods, str):
        return methods
    return "+".join(methods) if methods else "vanilla"


def fit(
    dataset: str,
    algo: str = "iql",
    methods: str | Sequence[str] | None = "vanilla",
    offline_steps: int = 100_000,
    online_steps: int = 50_000,
    seeds: int = 1,
    run_dir: str | Path | None = None,
    *,
    agent_options: dict[str, Any] | None = None,
    method_options: dict[str, Any] | None = None,
    domain: str | None = None,
    progress: bool = False,
    log: str | Sequence[str] | None = None,
    **options: Any,
) -> FitResult:
    """Pre-train ``algo`` on ``dataset`` (a registered name, .hdf5 file or Minari directory)
    for ``offline_steps``, then fine-tune online for ``online_steps`` env steps with
    ``methods`` (a label like ``"samg+sera"`` or a list of labels), ``seeds`` seeds on a
    vmapped axis. ``options`` are PipelineConfig fields (``seed``, ``eval_episodes``,
    ``offline_eval_every``, ``data_policy``, ``batch_size``, ...; the evaluation intervals default
    to about ten per phase, as the CLI's); ``agent_options`` are
    ``--set`` overrides, ``method_options`` ``--method-set`` ones. With ``run_dir`` the run is
    saved there (a new directory, as ``o2o train`` writes it); without, nothing is written.
    ``log``: sinks beside metrics.jsonl (``"csv,tensorboard,wandb"``; needs ``run_dir``)."""
    from o2o import data as datasets
    from o2o.experiment.builder import RunSpec, execute
    from o2o.experiment.pipeline import PipelineConfig, budget_eval_intervals
    from o2o.experiment.runs import RunDir
    from o2o.experiment.sinks import Sinks, parse_sinks

    sinks = parse_sinks(log)
    if sinks and run_dir is None:
        raise ConfigError("log= writes into the run directory: give run_dir too")
    fields = {f.name for f in dataclasses.fields(PipelineConfig)} - {"dataset"}
    for name in options:
        if name not in fields:
            raise ConfigError(f"fit() got an unknown option '{name}'{did_you_mean(name, fields)}")
    offline_every, online_every = budget_eval_intervals(offline_steps, online_steps)
    config = PipelineConfig(
        dataset=str(dataset),
        offline_steps=offline_steps,
        online_steps=online_steps,
        seeds=seeds,
        **{"offline_eval_every": offline_every, "online_eval_every": online_every, **options},
    )
    data = datasets.load(str(dataset))
    spec = RunSpec.create(
        algo,
        config,
        method_label(methods),
        method_options or {},
        agent_options or {},
        domain,
        data,
    )
    run = RunDir.create(Path(run_dir), spec.stored()) if run_dir is not None else None
    on_eval = Sinks(sinks, run)
    try:
        result, summary = execute(spec, run, progress=progress, dataset=data, on_eval=on_eval)
    finally:
        on_eval.close()
    return FitResult(result.rows, summary, run.path if run is not None else None)


class Policy:
    """The final agent of a run directory: ``act`` on observations of its env, ``evaluate``
    as the pipeline evaluates (same env seeds, so the last row's score is reproduced). Its
    states come from the online checkpoint once the online phase has one, else from the
    offline checkpoint."""

    def __init__(self, run_dir: str | Path):
        from o2o.experiment.builder import RunSpec
        from o2o.experiment.checkpoint import load_checkpoint
        from o2o.experiment.pipeline import OFFLINE_CHECKPOINT, _named_keys, _phase
        from o2o.experiment.runs import CONFIG, RunDir

        run = RunDir(Path(run_dir))
        if not (run.path / CONFIG).exists():
            raise O2OError(f"{run.path} is not a run directory (no {CONFIG})")
        stored = run.config()
        if "pipeline" not in stored:
            raise O2OError(f"{run.path} is an online-from-scratch run; load reads dataset runs")
        self.run_dir = run.path
        self.spec = RunSpec.from_stored(stored)
        pipeline = self.spec.build()
        self.env_id, self.preprocess, self.score = (
            pipeline.env_id,
            pipeline.preprocess,
            pipeline.score,
        )
        config = self.spec.pipeline
        self.seeds = tuple(range(config.seed, config.seed + config.seeds))
        self.eval_episodes = config.eval_episodes
        offline_template = pipeline.initial_states()[0]
        online = _phase(run) == "online" and run.has_checkpoint()
        if online:
            template = pipeline.methods.init_states(
                pipeline.agent,
                offline_template,
                _named_keys(config, "init"),
                pipeline.preprocess,
                offline=False,
            )
            path, self.agent = run.checkpoint_path, pipeline.agent.for_online()
        else:
            template, path, self.agent = (
                offline_template,
                run.path / OFFLINE_CHECKPOINT,
                pipeline.agent,
            )
            if not path.exists():
                raise O2OError(f"{run.path} has no checkpoint yet (the run has not evaluated once)")
        self.phase = "online" if online else "offline"
        self.states = jax.tree.map(
            jnp.asarray, load_checkpoint(path, {"states": template})["states"]
        )
        del pipeline
        agent = self.agent
        self._act = jax.jit(agent.act, static_argnums=3)
        self._greedy_all = jax.jit(
            jax.vmap(lambda s, o: agent.act(s, o, jax.random.PRNGKey(0), True))
        )
        self._key = jax.random.PRNGKey(0)

    def _seed_index(self, seed: int | None) -> int:
        if seed is None:
            return 0
        if seed not in self.seeds:
            raise ConfigError(
                f"seed {seed} is not a seed of this run; its seeds are "
                f"{', '.join(map(str, self.seeds))}"
            )
        return self.seeds.index(seed)

    def act(
        self, observations: Any, deterministic: bool = True, seed: int | None = None
    ) -> np.ndarray:
        """Actions for one observation (obs_dim,) or a batch (N, obs_dim), in the env's
        action space; ``seed``: which of the run's seeds acts (default its first)."""
        obs = np.asarray(observations, np.float32)
        single = obs.ndim == 1
        batch = self.preprocess.observations(obs[None] if single else obs)
        index = self._seed_index(seed)
        state = jax.tree.map(lambda x: x[index], self.states)
        self._key, key = jax.random.split(self._key)
        actions = np.asarray(self._act(state, jnp.asarray(batch), key, deterministic))
        return actions[0] if single else actions

    def evaluate(
        self, episodes: int | None = None, seed: int | None = None, progress: bool = False
    ) -> dict[str, Any]:
        """Deterministic episodes of each seed (or of ``seed``) on the env, from the reset
        seeds the pipeline evaluates with: the normalized score (mean over the seeds), the
        return, and per-seed values. ``episodes`` None: the run's own ``eval_episodes``;
        ``progress``: a bar over the episodes' env steps (``o2o eval``)."""
        from o2o.core.progress import RunProgress
        from o2o.envs.evaluation import EnvGrid, episode_limit, evaluate
        from o2o.experiment.online import _eval_seed

        episodes = self.eval_episodes if episodes is None else int(episodes)
        if episodes < 1:
            raise ConfigError(f"episodes must be positive, got {episodes}")
        indices = list(range(len(self.seeds))) if seed is None else [self._seed_index(seed)]
        states = jax.tree.map(lambda x: x[np.asarray(indices)], self.states)
        grid = EnvGrid(self.env_id, len(indices), episodes)
        limit = episode_limit(grid)
        bar = RunProgress(
            limit or 0,
            f"evaluate {self.env_id} ({len(indices)} seed(s) × {episodes} episodes)",
            enabled=progress,
            unit="env steps",
            note="",
        )
        try:
            with bar:
                result = evaluate(
                    grid,
                    lambda obs: self._greedy_all(
                        states, jnp.asarray(self.preprocess.observations(obs))
                    ),
                    seed=[_eval_seed(self.seeds[i]) for i in indices],
                    on_step=bar.advance_to,
                )
        finally:
            grid.close()
        returns = result.mean_return
        scores = np.asarray(self.score.normalize(returns), float)
        return {
            "normalized_score": float(scores.mean()),
            "return": float(returns.mean()),
            "seeds": [self.seeds[i] for i in indices],
            "seed_normalized_scores": [float(s) for s in scores],
            "seed_returns": [float(r) for r in returns],
            "episodes": episodes,
        }


def load(run_dir: str | Path) -> Policy:
    """The final agent of the run in ``run_dir`` (see ``Policy``)."""
    return Policy(run_dir)
