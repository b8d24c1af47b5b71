"""``o2o datasets make <env>-<level>-lite``: the D4RL recipe with o2o's SAC.

One checkpointed SAC run per env (and seed and budget), then five datasets from it:

* ``random``: uniform random actions in [-1, 1];
* ``medium``: the first checkpoint whose deterministic evaluation reaches 1/3 of the run's
  best (D4RL's rule), sampled actions;
* ``medium-replay``: the run's replay buffer, env steps [0, medium step), in order;
* ``expert``: the best checkpoint, sampled actions;
* ``medium-expert``: medium followed by expert.

Reference returns stored with every file: ``ref_min`` = mean return of the uniform-random
policy, ``ref_max`` = the best checkpoint's deterministic return (``ref_episodes`` each).

Resumable: the run's state (agent, keys, counters, the host replay buffer) is one msgpack
checkpoint written atomically at every evaluation; a killed ``make`` resumes there, and the
five files are written atomically one by one and skipped when present. Deterministic given
the seed: to make a resumed run equal an uninterrupted one, the training episode running at
a checkpoint is cut there (a timeout, which bootstraps normally) in both cases, and every
episode's reset seed derives from the seed and an episode counter.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from o2o.core.progress import RunProgress
from o2o.data.dataset import Dataset, concatenate
from o2o.data.hdf5 import write_hdf5
from o2o.data.registry import LEVELS, LITE_ENVS, data_dir
from o2o.data.scores import D4RL_REFERENCE
from o2o.errors import ConfigError, check

GENERATOR_VERSION = "o2o-lite/1"


@dataclass(frozen=True)
class GeneratorConfig:
    train_steps: int = 300_000  # SAC env steps
    eval_every: int = 10_000  # env steps between checkpoints
    eval_episodes: int = 5  # deterministic episodes per checkpoint evaluation
    ref_episodes: int = 20  # episodes for ref_min (random) and ref_max (best, deterministic)
    warmup: int = 5_000  # uniform-random steps before SAC acts and updates
    transitions: int = 40_000  # rows of random / medium / expert each
    batch_size: int = 256
    update_every: int = 50  # env steps per fused update call (UTD 1)
    hidden_dims: tuple[int, ...] = (256, 256)
    medium_fraction: float = 1.0 / 3.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in (
            "train_steps",
            "eval_every",
            "eval_episodes",
            "ref_episodes",
            "transitions",
            "batch_size",
            "update_every",
        ):
            check(getattr(self, name) > 0, f"{name} must be positive, got {getattr(self, name)}")
        check(self.warmup >= 0, f"warmup must be non-negative, got {self.warmup}")
        check(
            self.eval_every % self.update_every == 0,
            f"eval_every ({self.eval_every}) must be a multiple of update_every ({self.update_every})",
        )
        check(
            self.train_steps % self.eval_every == 0,
            f"train_steps ({self.train_steps}) must be a multiple of eval_every ({self.eval_every})",
        )
        check(
            0 < self.medium_fraction < 1,
            f"medium_fraction must lie in (0, 1), got {self.medium_fraction}",
        )

    def training_key(self) -> dict[str, Any]:
        """The settings that define the SAC run (a work dir is only resumed with these)."""
        settings = asdict(self)
        for name in ("transitions", "ref_episodes", "medium_fraction"):
            settings.pop(name)
        settings["hidden_dims"] = list(self.hidden_dims)
        return settings


@dataclass
class TrainResult:
    eval_steps: list[int]
    eval_returns: list[float]
    actor_paths: dict[int, Path]
    replay: dict[str, np.ndarray]  # full host replay buffer (train_steps rows)
    train_seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def best(self) -> tuple[int, float]:
        index = int(np.argmax(self.eval_returns))  # first of equal maxima
        return self.eval_steps[index], self.eval_returns[index]

    def medium(self, fraction: float) -> tuple[int, float, float]:
        _, best_return = self.best
        if best_return > 0:
            threshold = fraction * best_return  # D4RL's rule (and the reference files')
        else:
            # Tiny budgets can end with a negative best; then "a third of the way" from the
            # worst evaluation is the only meaningful reading.
            worst = min(self.eval_returns)
            threshold = worst + fraction * (best_return - worst)
        for step, value in zip(self.eval_steps, self.eval_returns, strict=True):
            if value >= threshold:
                return step, value, threshold
        raise AssertionError("the best checkpoint always reaches the threshold")


def _episode_seed(seed: int, episode: int) -> int:
    return seed * 1_000_003 + episode


def _progress(console: Console | None, total: int, description: str, unit: str) -> RunProgress:
    """The training runs' progress (a bar on a terminal, a plain line every
    ``$O2O_PROGRESS_EVERY`` seconds in a log) for a generation step."""
    return RunProgress(total, description, console=console, unit=unit, note="")


_RUNNERS: dict[tuple, _SACRunner] = {}


class _SACRunner:
    """Jitted pieces of one SAC run: exploration, fused updates, greedy and sampled acting."""

    def __init__(self, env_id: str, config: GeneratorConfig):
        import jax
        import jax.numpy as jnp

        from o2o.agents.sac import SACConfig
        from o2o.core import buffers
        from o2o.core.engine import compile_fused
        from o2o.envs.factory import env_dims

        self.env_id, self.config = env_id, config
        self.obs_dim, self.act_dim = env_dims(env_id)
        self.agent = SACConfig(hidden_dims=tuple(config.hidden_dims)).create()
        agent = self.agent

        def explore(state, obs, key, uniform):
            key, act_key, random_key = jax.random.split(key, 3)
            policy_action = agent.act(state, obs[None], act_key, False)[0]
            random_action = jax.random.uniform(
                random_key, policy_action.shape, minval=-1.0, maxval=1.0
            )
            return jnp.where(uniform, random_action, policy_action), key

        self.explore = jax.jit(explore)
        self.greedy = jax.jit(lambda state, obs: agent.act(state, obs, jax.random.PRNGKey(0), True))
        self.sample = jax.jit(lambda state, obs, key: agent.act(state, obs[None], key, False)[0])
        self.add = jax.jit(buffers.add, donate_argnums=(0,))
        sampler = buffers.Sampler(config.batch_size, (("replay", 1.0),))
        self.fused = compile_fused(agent.update, sampler, config.update_every, seed_axis=False)
        self.buffers = buffers

    @classmethod
    def cached(cls, env_id: str, config: GeneratorConfig) -> _SACRunner:
        """One runner per (env, network, batch) in a process, so repeated makes (resume,
        tests) reuse the compiled functions instead of recompiling them."""
        key = (env_id, tuple(config.hidden_dims), config.batch_size, config.update_every)
        if key not in _RUNNERS:
            _RUNNERS[key] = cls(env_id, config)
        return _RUNNERS[key]

    def init_state(self, key):
        return self.agent.init(key, self.obs_dim, self.act_dim)

    def with_actor(self, state, actor_params):
        return state.replace(actor=state.actor.replace(params=actor_params))


def _empty_replay(
    steps: int, obs_dim: int, act_dim: int, qpos_dim: int, qvel_dim: int
) -> dict[str, np.ndarray]:
    return {
        "observations": np.zeros((steps, obs_dim), np.float32),
        "actions": np.zeros((steps, act_dim), np.float32),
        "rewards": np.zeros(steps, np.float32),
        "next_observations": np.zeros((steps, obs_dim), np.float32),
        "terminals": np.zeros(steps, np.uint8),
        "timeouts": np.zeros(steps, np.uint8),
        "qpos": np.zeros((steps, qpos_dim), np.float32),
        "qvel": np.zeros((steps, qvel_dim), np.float32),
    }


def _mujoco_state(env) -> tuple[np.ndarray, np.ndarray]:
    data = getattr(env.unwrapped, "data", None)
    if data is None:
        return np.zeros(0, np.float32), np.zeros(0, np.float32)
    return np.asarray(data.qpos, np.float32).copy(), np.asarray(data.qvel, np.float32).copy()


def _evaluate(runner: _SACRunner, state, episodes: int, seed: int) -> np.ndarray:
    from o2o.envs.evaluation import EnvGrid, evaluate

    grid = EnvGrid(runner.env_id, 1, episodes)
    try:
        obs_dim = runner.obs_dim

        def policy(observations: np.ndarray) -> np.ndarray:
            flat = np.asarray(runner.greedy(state, observations.reshape(-1, obs_dim)))
            return flat.reshape(*observations.shape[:-1], -1)

        return evaluate(grid, policy, seed=seed).returns[0]
    finally:
        grid.close()


def train_sac(
    env_id: str,
    config: GeneratorConfig,
    work_dir: Path,
    console: Console | None = None,
    stop_after_step: int | None = None,
) -> TrainResult:
    """Run (or resume) the checkpointed SAC run in ``work_dir``.

    ``stop_after_step`` stops right after the checkpoint at that step (tests simulate a
    killed run with it) and returns what is there.
    """
    import jax
    import jax.numpy as jnp

    from o2o.envs.factory import make_env
    from o2o.experiment.checkpoint import load_checkpoint, save_checkpoint

    work_dir.mkdir(parents=True, exist_ok=True)
    settings_path = work_dir / "settings.json"
    settings = {"env_id": env_id, **config.training_key()}
    if settings_path.exists():
        saved = json.loads(settings_path.read_text())
        if saved != settings:
            raise ConfigError(
                f"{work_dir}: holds a SAC run with other settings ({saved}); use another --work-dir or delete it"
            )
    else:
        settings_path.write_text(json.dumps(settings, indent=1))

    c = config
    runner = _SACRunner.cached(env_id, c)
    env = make_env(env_id, seed=c.seed)
    env.reset(seed=_episode_seed(c.seed, 0))
    qpos, qvel = _mujoco_state(env)
    num_evals = c.train_steps // c.eval_every
    root = jax.random.PRNGKey(c.seed)
    init_key, explore_key, update_key = jax.random.split(root, 3)
    carry = {
        "state": runner.init_state(init_key),
        "explore_key": explore_key,
        "update_key": update_key,
        "step": np.int64(0),
        "episode": np.int64(0),
        "train_seconds": np.float64(0.0),
        "eval_returns": np.zeros(num_evals, np.float64),
        "replay": _empty_replay(
            c.train_steps, runner.obs_dim, runner.act_dim, qpos.size, qvel.size
        ),
    }
    checkpoint_path = work_dir / "checkpoint.msgpack"
    actor_dir = work_dir / "actors"
    if checkpoint_path.exists():
        carry = load_checkpoint(checkpoint_path, carry)
        carry["state"] = jax.tree.map(jnp.asarray, carry["state"])
    step, episode = int(carry["step"]), int(carry["episode"])
    # Restored arrays are read-only views of the checkpoint bytes; the run writes into them.
    replay = {key: np.array(column) for key, column in carry["replay"].items()}
    state, explore_key, update_key = carry["state"], carry["explore_key"], carry["update_key"]
    eval_returns = np.array(carry["eval_returns"], np.float64)
    # The device buffer is a copy of the host replay rows, so it is rebuilt, not stored.
    from o2o.core.types import Transition

    def transition_rows(lo: int, hi: int) -> Transition:
        return Transition(
            jnp.asarray(replay["observations"][lo:hi]),
            jnp.asarray(replay["actions"][lo:hi]),
            jnp.asarray(replay["rewards"][lo:hi]),
            jnp.asarray(replay["next_observations"][lo:hi]),
            jnp.asarray(replay["terminals"][lo:hi].astype(np.float32)),
            jnp.zeros(hi - lo, jnp.float32),
        )

    device_buffer = runner.buffers.create_buffer(c.train_steps, runner.obs_dim, runner.act_dim)
    if step:
        device_buffer = runner.add(device_buffer, transition_rows(0, step))

    started = time.perf_counter() - float(carry["train_seconds"])
    observation = env.reset(seed=_episode_seed(c.seed, episode))[0]
    with _progress(console, c.train_steps, f"SAC {env_id}", "env steps") as progress:
        progress.note(f"eval {eval_returns[step // c.eval_every - 1]:.1f}" if step else "eval -")
        progress.advance_to(step)
        while step < c.train_steps:
            chunk_start = step
            for _ in range(c.update_every):
                qpos, qvel = _mujoco_state(env)
                action, explore_key = runner.explore(
                    state, jnp.asarray(observation, jnp.float32), explore_key, step < c.warmup
                )
                action = np.asarray(action)
                next_observation, reward, terminated, truncated, _ = env.step(action)
                replay["observations"][step] = observation
                replay["actions"][step] = action
                replay["rewards"][step] = reward
                replay["next_observations"][step] = next_observation
                replay["terminals"][step] = terminated
                replay["timeouts"][step] = truncated and not terminated
                replay["qpos"][step], replay["qvel"][step] = qpos, qvel
                step += 1
                if terminated or truncated:
                    episode += 1
                    next_observation = env.reset(seed=_episode_seed(c.seed, episode))[0]
                observation = next_observation
            device_buffer = runner.add(device_buffer, transition_rows(chunk_start, step))
            if step >= c.warmup:
                state, update_key, _ = runner.fused(state, {"replay": device_buffer}, update_key)
            progress.advance_to(step)
            if step % c.eval_every == 0:
                index = step // c.eval_every - 1
                eval_returns[index] = float(
                    _evaluate(
                        runner, state, c.eval_episodes, seed=10_000_000 + c.seed * 1000
                    ).mean()
                )
                save_checkpoint(actor_dir / f"actor_{step:09d}.msgpack", state.actor.params)
                # Cut the running episode (timeout) so a resumed run continues identically.
                if not (replay["terminals"][step - 1] or replay["timeouts"][step - 1]):
                    replay["timeouts"][step - 1] = True
                    episode += 1
                observation = env.reset(seed=_episode_seed(c.seed, episode))[0]
                save_checkpoint(
                    checkpoint_path,
                    {
                        "state": state,
                        "explore_key": explore_key,
                        "update_key": update_key,
                        "step": np.int64(step),
                        "episode": np.int64(episode),
                        "train_seconds": np.float64(time.perf_counter() - started),
                        "eval_returns": eval_returns,
                        "replay": replay,
                    },
                )
                progress.note(f"eval {eval_returns[index]:.1f}")
                if stop_after_step is not None and step >= stop_after_step:
                    break
    env.close()
    done = step // c.eval_every
    eval_steps = [(i + 1) * c.eval_every for i in range(done)]
    return TrainResult(
        eval_steps=eval_steps,
        eval_returns=[float(x) for x in eval_returns[:done]],
        actor_paths={s: actor_dir / f"actor_{s:09d}.msgpack" for s in eval_steps},
        replay=replay,
        train_seconds=float(time.perf_counter() - started),
        extra={"runner": runner, "completed": step >= c.train_steps},
    )


def _load_actor_state(runner: _SACRunner, path: Path, seed: int):
    import jax

    from o2o.experiment.checkpoint import load_checkpoint

    state = runner.init_state(jax.random.PRNGKey(seed))
    params = load_checkpoint(path, state.actor.params)
    return runner.with_actor(state, jax.tree.map(np.asarray, params))


def rollout(
    env_id: str,
    transitions: int,
    seed: int,
    act: Callable[[np.ndarray, int], np.ndarray],
    on_step: Callable[[int], None] | None = None,
) -> dict[str, np.ndarray]:
    """``transitions`` rows from ``act(observation, row)``; the last, cut episode's final row
    is marked a timeout so the data ends on an episode boundary (as the reference files)."""
    from o2o.envs.factory import make_env

    env = make_env(env_id, seed=seed)
    observation = env.reset(seed=_episode_seed(seed, 0))[0]
    qpos, qvel = _mujoco_state(env)
    rows = _empty_replay(
        transitions, observation.shape[0], env.action_space.shape[0], qpos.size, qvel.size
    )
    episode = 0
    for row in range(transitions):
        rows["qpos"][row], rows["qvel"][row] = _mujoco_state(env)
        action = np.asarray(act(observation, row), np.float32)
        next_observation, reward, terminated, truncated, _ = env.step(action)
        rows["observations"][row] = observation
        rows["actions"][row] = action
        rows["rewards"][row] = reward
        rows["next_observations"][row] = next_observation
        rows["terminals"][row] = terminated
        rows["timeouts"][row] = (truncated and not terminated) or (
            row == transitions - 1 and not terminated
        )
        if terminated or truncated:
            episode += 1
            next_observation = env.reset(seed=_episode_seed(seed, episode))[0]
        observation = next_observation
        if on_step is not None and (row + 1) % 1000 == 0:
            on_step(row + 1)
    env.close()
    return rows


def _as_dataset(rows: dict[str, np.ndarray], metadata: dict[str, Any]) -> Dataset:
    infos = {k: rows[k] for k in ("qpos", "qvel") if rows[k].shape[1] > 0}
    return Dataset(
        observations=rows["observations"],
        actions=rows["actions"],
        rewards=rows["rewards"],
        next_observations=rows["next_observations"],
        terminals=rows["terminals"].astype(bool),
        timeouts=rows["timeouts"].astype(bool),
        infos=infos,
        metadata=metadata,
    )


def make_suite(
    short: str,
    env_id: str,
    config: GeneratorConfig,
    out_dir: Path,
    work_dir: Path,
    force: bool = False,
    console: Console | None = None,
    levels: tuple[str, ...] = LEVELS,
) -> dict[str, Path]:
    """Train (or resume) the SAC run and write ``<short>-<level>-lite-v0.hdf5`` for ``levels``."""
    import jax

    c = config
    targets = {level: out_dir / f"{short}-{level}-lite-v0.hdf5" for level in levels}
    if not force and all(p.exists() for p in targets.values()):
        if console:
            console.print(f"all {short} lite files exist in {out_dir} (use --force to rebuild)")
        return targets
    wall_start = time.perf_counter()
    trained = train_sac(env_id, c, work_dir, console)
    runner: _SACRunner = trained.extra["runner"]
    best_step, best_return = trained.best
    medium_step, medium_return, threshold = trained.medium(c.medium_fraction)

    references_path = work_dir / f"references_{c.ref_episodes}.json"
    if references_path.exists():
        references = json.loads(references_path.read_text())
    else:
        best_state = _load_actor_state(runner, trained.actor_paths[best_step], c.seed)
        rng = np.random.default_rng(c.seed + 7)
        from o2o.envs.evaluation import EnvGrid, evaluate

        grid = EnvGrid(env_id, 1, c.ref_episodes)
        random_returns = evaluate(
            grid,
            lambda obs: rng.uniform(-1, 1, (*obs.shape[:-1], runner.act_dim)).astype(np.float32),
            seed=20_000_000 + c.seed,
        ).returns[0]
        grid.close()
        best_returns = _evaluate(runner, best_state, c.ref_episodes, seed=30_000_000 + c.seed)
        references = {
            "ref_min": float(random_returns.mean()),
            "ref_max": float(best_returns.mean()),
        }
        references_path.write_text(json.dumps(references))

    family = short if short in D4RL_REFERENCE else None
    common: dict[str, Any] = {
        "algorithm": "SAC",
        "env_id": env_id,
        "suite": "lite",
        "generator": f"{GENERATOR_VERSION} (o2o.data.generate, SAC from o2o.agents.sac)",
        "generator_settings": asdict(c),
        "seed": c.seed,
        "sac_total_steps": c.train_steps,
        "eval_curve": [
            [s, r] for s, r in zip(trained.eval_steps, trained.eval_returns, strict=True)
        ],
        "best_step": best_step,
        "best_eval_return": best_return,
        "medium_step": medium_step,
        "medium_eval_return": medium_return,
        "medium_threshold": threshold,
        "ref_min_score": references["ref_min"],
        "ref_max_score": references["ref_max"],
        "ref_provenance": (
            f"this run's references: ref_min = uniform-random policy, ref_max = best checkpoint "
            f"(step {best_step}) deterministic, {c.ref_episodes} episodes each"
        ),
        "train_seconds": trained.train_seconds,
        "obs_convention": "Gymnasium default observations, TimeLimit of the env's spec",
        "qpos_qvel_convention": "infos/qpos, infos/qvel = MuJoCo state at `observations`",
    }
    if family is not None:
        common["official_ref_min_score"], common["official_ref_max_score"] = D4RL_REFERENCE[family]

    def meta(level: str, policy: str, **extra: Any) -> dict[str, Any]:
        return {
            **common,
            "dataset": f"{short}-{level}-lite-v0",
            "level": level,
            "policy": policy,
            **extra,
        }

    parts: dict[str, Dataset] = {}

    def policy_rollout(level: str) -> Dataset:
        if level in parts:
            return parts[level]
        if level == "medium-replay":
            rows = {k: v[:medium_step].copy() for k, v in trained.replay.items()}
            dataset = _as_dataset(
                rows,
                meta(
                    level,
                    f"SAC replay buffer steps [0, {medium_step}) incl. {c.warmup} random warm-up",
                    policy_step=medium_step,
                ),
            )
        else:
            seed = c.seed * 100 + {"random": 1, "medium": 2, "expert": 3}[level]
            with _progress(console, c.transitions, f"{short}-{level}", "rows") as progress:
                on_step = progress.advance_to

                if level == "random":
                    rng = np.random.default_rng(seed)
                    rows = rollout(
                        env_id,
                        c.transitions,
                        seed,
                        lambda obs, row: rng.uniform(-1, 1, runner.act_dim),
                        on_step,
                    )
                    dataset = _as_dataset(rows, meta(level, "uniform random actions in [-1, 1]"))
                else:
                    step = medium_step if level == "medium" else best_step
                    value = medium_return if level == "medium" else best_return
                    state = _load_actor_state(runner, trained.actor_paths[step], c.seed)
                    keys = iter(jax.random.split(jax.random.PRNGKey(seed), c.transitions))

                    def act(observation: np.ndarray, row: int) -> np.ndarray:
                        return np.asarray(
                            runner.sample(
                                state, jax.numpy.asarray(observation, jax.numpy.float32), next(keys)
                            )
                        )

                    rows = rollout(env_id, c.transitions, seed, act, on_step)
                    dataset = _as_dataset(
                        rows,
                        meta(
                            level,
                            f"SAC checkpoint at step {step}, sampled actions",
                            policy_step=step,
                            policy_eval_return=value,
                        ),
                    )
                progress.advance_to(c.transitions)
        parts[level] = dataset
        return dataset

    written: dict[str, Path] = {}
    for level, target in targets.items():
        if target.exists() and not force:
            written[level] = target
            continue
        if level == "medium-expert":
            dataset = concatenate(
                [policy_rollout("medium"), policy_rollout("expert")],
                metadata=meta(
                    level, f"medium (step {medium_step}) then expert (step {best_step}) rollouts"
                ),
            )
        else:
            dataset = policy_rollout(level)
        metadata = {
            **dataset.metadata,
            "n_transitions": dataset.size,
            "n_episodes": dataset.num_episodes,
        }
        written[level] = write_hdf5(dataset.replace(metadata=metadata), target)
        if console:
            returns = dataset.episode_returns()
            console.print(
                f"wrote {target} ({dataset.size} transitions, {dataset.num_episodes} episodes, "
                f"mean return {returns.mean() if returns.size else float('nan'):.1f})"
            )
    if console:
        console.print(
            f"{short}: best step {best_step} ({best_return:.1f}), medium step {medium_step} "
            f"({medium_return:.1f}), total {time.perf_counter() - wall_start:.0f}s"
        )
    return written


def make_lite(
    name: str,
    config: GeneratorConfig,
    out_dir: Path | None = None,
    work_dir: Path | None = None,
    force: bool = False,
    console: Console | None = None,
) -> dict[str, Path]:
    """``<env>-<level>-lite``: train (or resume) the env's SAC run and write all five levels
    (they share the run; the other four cost a few rollouts more)."""
    short = name.lower().removesuffix("-v0").split("-")[0]
    if short not in LITE_ENVS or not name.lower().removesuffix("-v0").endswith("-lite"):
        raise ConfigError(f"cannot make {name!r}: expected <{'|'.join(LITE_ENVS)}>-<level>-lite")
    out_dir = Path(out_dir) if out_dir is not None else data_dir()
    work_dir = (
        Path(work_dir)
        if work_dir is not None
        else out_dir / ".work" / f"{short}-lite-seed{config.seed}-steps{config.train_steps}"
    )
    return make_suite(
        short, LITE_ENVS[short], config, out_dir, work_dir, force=force, console=console
    )
