"""Online training of any agent on a Gymnasium env, N seeds in one process.

The loop alternates ``update_every`` env steps (one batched policy call per step across
seeds) with one fused call of ``update_every × utd`` gradient steps. Transitions are staged
on the host and written to the device ring buffer once per chunk.

Resumability: at every evaluation the run writes a checkpoint (agent states, buffers, keys,
counters) and then restarts the training episodes from seeds derived from the episode
counter. An uninterrupted run does exactly the same, so a resumed run reproduces it
bit-for-bit on CPU. The cost: training episodes are cut (as time-limit truncations, which
bootstrap normally) once per evaluation interval.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from o2o.core import buffers as buf
from o2o.core.agent import Agent
from o2o.core.engine import any_nan, compile_fused, seed_keys
from o2o.core.progress import RunProgress, evaluation_steps
from o2o.core.types import Transition
from o2o.envs.evaluation import EnvGrid, EvalResult, episode_limit, evaluate
from o2o.envs.factory import make_env, success_from_info
from o2o.errors import check, check_non_negative, check_positive
from o2o.experiment.checkpoint import load_checkpoint, save_checkpoint
from o2o.experiment.divergence import DivergenceGuard
from o2o.experiment.faults import kill_point
from o2o.experiment.runs import EPISODES, FINETUNE, METRICS, RunDir, evaluation_row, plain_config
from o2o.experiment.visited import coverage_metrics, recent_rows


@dataclass(frozen=True)
class OnlineConfig:
    env: str = "Pendulum-v1"
    steps: int = 15_000
    random_steps: int = 1_000  # uniform random actions before the policy acts
    update_after: int = 1_000  # first gradient step after this many env steps
    # Env steps collected by the current policy before the budget starts (SAMG's 1,000 seed
    # transitions): no updates, no evaluations, not counted in ``steps``, so every arm of a
    # comparison makes the same ``steps × utd`` updates.
    warmup_steps: int = 0
    update_every: int = 50  # env steps between fused update calls
    utd: int = 1  # gradient steps per env step
    batch_size: int = 256
    buffer_capacity: int | None = None  # None: large enough for every step
    eval_every: int = 5_000
    eval_episodes: int = 10
    seed: int = 0
    seeds: int = 1  # independent seeds trained together on a vmapped axis

    def __post_init__(self) -> None:
        check_positive(
            self,
            "steps",
            "update_every",
            "utd",
            "batch_size",
            "eval_every",
            "eval_episodes",
            "seeds",
        )
        check_non_negative(self, "random_steps", "update_after", "warmup_steps", "seed")
        check(
            self.warmup_steps % self.update_every == 0,
            f"warmup_steps ({self.warmup_steps}) must be a multiple of update_every ({self.update_every})",
        )
        check(
            self.buffer_capacity is None or self.buffer_capacity > 0,
            "buffer_capacity must be positive",
        )


@dataclass
class OnlineResult:
    states: Any  # agent states with a leading seed axis
    rows: list[dict] = field(default_factory=list)
    # Wall seconds of this process's online loop per section (see ``LoopClock``).
    section_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def final_returns(self) -> np.ndarray:
        return np.asarray(self.rows[-1]["seed_returns"])


EvalCallback = Callable[[dict], None]


class LoopClock:
    """Where the online loop's wall time goes: ``lap(section)`` charges the time since the
    previous lap to ``section``, so the sections add up to the whole loop. Sections:
    ``updates`` (fused gradient steps, waited for), ``act`` (policy actions), ``env``
    (env steps and episode bookkeeping), ``buffer`` (staging and device writes), ``method``
    (fine-tuning method events), ``eval``, ``checkpoint``, ``other``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, section: str) -> None:
        now = time.perf_counter()
        self.seconds[section] = self.seconds.get(section, 0.0) + now - self._last
        self._last = now


@dataclass(frozen=True)
class Preprocess:
    """Host-side transforms between the env and the agent: state normalisation with the
    offline data's statistics, and the reward convention of the algorithm/domain. Returns
    and scores are always reported on the env's raw rewards."""

    obs_mean: np.ndarray | None = None
    obs_std: np.ndarray | None = None
    reward_scale: float = 1.0
    reward_shift: float = 0.0

    def observations(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs, np.float32)
        if self.obs_mean is None:
            return obs
        return ((obs - self.obs_mean) / self.obs_std).astype(np.float32)

    def rewards(self, rewards: np.ndarray) -> np.ndarray:
        return (np.asarray(rewards, np.float32) * self.reward_scale + self.reward_shift).astype(
            np.float32
        )


@dataclass
class OnlineData:
    """Where online transitions go and what the updates sample: ``buffers`` by name, the
    buffer online transitions are appended to, and the sampler over the buffers."""

    buffers: dict[str, buf.ReplayBuffer]  # each with a leading seed axis
    write_to: str
    sampler: buf.Sampler


def _episode_seed(seed: int, seed_index: int, episode: int) -> int:
    return (seed + seed_index) * 1_000_003 + episode


def _eval_seed(seed: int) -> int:
    return 10_000_000 + 1000 * seed


class EnvStep(NamedTuple):
    """One step of every seed's training env, (seeds, ...) arrays. ``next_observations`` are
    the states the actions led to, before any reset; ``SeedEnvs.observations`` already holds
    the reset states of the episodes that ended."""

    observations: np.ndarray
    rewards: np.ndarray  # raw env rewards
    next_observations: np.ndarray
    terminated: np.ndarray  # bool
    truncated: np.ndarray  # bool


class SeedEnvs:
    """One training env per seed and its episode bookkeeping: returns and success of the
    running episodes, a row in ``episodes.jsonl`` per finished episode, and resets seeded by
    the per-seed episode counter (so a resumed run restarts exactly like an uninterrupted one)."""

    def __init__(self, env_id: str, seed: int, seeds: int):
        self.seed = seed
        self.envs = [make_env(env_id, seed=seed + i) for i in range(seeds)]
        self.obs_dim = int(self.envs[0].observation_space.shape[0])
        self.act_dim = int(self.envs[0].action_space.shape[0])
        self.episodes = np.zeros(seeds, np.int64)
        self.observations = np.zeros((seeds, self.obs_dim), np.float32)
        self.returns = np.zeros(seeds)
        self.success = np.zeros(seeds)

    def restart(self, episodes: np.ndarray | None = None) -> None:
        """Start a new episode in every env (after setting the counters to ``episodes``)."""
        if episodes is not None:
            self.episodes = np.array(episodes, np.int64)
        self.observations = np.stack(
            [
                env.reset(seed=_episode_seed(self.seed, s, int(self.episodes[s])))[0]
                for s, env in enumerate(self.envs)
            ]
        ).astype(np.float32)
        self.returns[:] = self.success[:] = 0.0

    def step(self, actions: np.ndarray, log_step: int, run: RunDir | None) -> EnvStep:
        """Step every env with its row of ``actions``; finished episodes are logged at
        ``log_step`` and reset."""
        n = len(self.envs)
        observations = self.observations.copy()
        next_observations = np.zeros_like(observations)
        rewards = np.zeros(n)
        terminated, truncated = np.zeros(n, bool), np.zeros(n, bool)
        for s, env in enumerate(self.envs):
            next_obs, reward, term, trunc, info = env.step(actions[s])
            next_observations[s], rewards[s] = next_obs, reward
            terminated[s], truncated[s] = term, trunc
            self.returns[s] += reward
            success = success_from_info(info)
            if success is not None:
                self.success[s] = max(self.success[s], success)
            if term or trunc:
                if run is not None:
                    row = {
                        "step": log_step,
                        "seed": self.seed + s,
                        "return": float(self.returns[s]),
                    }
                    if success is not None:
                        row["success"] = float(self.success[s])
                    run.append(EPISODES, row)
                self.returns[s] = self.success[s] = 0.0
                self.episodes[s] += 1
                next_obs = env.reset(seed=_episode_seed(self.seed, s, int(self.episodes[s])))[0]
            self.observations[s] = next_obs
        return EnvStep(observations, rewards, next_observations, terminated, truncated)

    def close(self) -> None:
        for env in self.envs:
            env.close()


class EnvLoop:
    """What every online loop shares, whatever the agent learns from: the training envs, the
    batched evaluation and its metrics row, the checkpoint and episode restart at every
    evaluation, resume, the progress bar and the loop clock. A subclass provides
    ``initial()`` (its device state: states, keys, data) and ``_chunk()`` (env steps and the
    updates between two possible evaluations)."""

    def __init__(
        self,
        agent: Any,
        config: OnlineConfig,
        score_fn: Callable[[np.ndarray], np.ndarray] | None,
        preprocess: Preprocess | None,
        initial_states: Any,
        step_offset: int,
        on_chunk: Callable[[int, Any, Any], tuple[Any, list[dict]]] | None,
        guard: DivergenceGuard | None,
    ):
        self.agent, self.config, self.score_fn = agent, config, score_fn
        self.guard = guard or DivergenceGuard()
        self.preprocess = preprocess or Preprocess()
        self.initial_states, self.step_offset = initial_states, step_offset
        # Periodic events of a fine-tuning method: (env step, states, data) -> (states, rows),
        # and after every evaluation: (env step, states, row) -> (states, rows), applied before
        # the checkpoint (OCR's reference policy on a new best evaluation).
        self.on_chunk = on_chunk
        self.on_evaluation: Callable[[int, Any, dict], tuple[Any, list[dict]]] | None = None
        c = config
        self.envs = SeedEnvs(c.env, c.seed, c.seeds)
        self.obs_dim, self.act_dim = self.envs.obs_dim, self.envs.act_dim
        self.eval_grid = EnvGrid(c.env, c.seeds, c.eval_episodes)
        self._greedy = jax.jit(
            jax.vmap(lambda state, obs: agent.act(state, obs, jax.random.PRNGKey(0), True))
        )

    def initial(self) -> dict[str, Any]:
        """The checkpointed carry: ``states``, the subclass's keys and data, and the loop's
        counters (``_counters``)."""
        raise NotImplementedError

    def _chunk(
        self, carry: dict[str, Any], run: RunDir | None, clock: LoopClock
    ) -> tuple[dict[str, Any], dict | None, int]:
        """Advance ``carry`` (its ``step`` included) by one chunk of env steps and updates;
        returns (carry, the updates' metrics or None if none ran, updates done)."""
        raise NotImplementedError

    def _initial_states(self, init_keys: jax.Array) -> Any:
        if self.initial_states is not None:
            return jax.tree.map(lambda x: jnp.asarray(x).copy(), self.initial_states)
        return jax.vmap(lambda k: self.agent.init(k, self.obs_dim, self.act_dim))(init_keys)

    def _counters(self) -> dict[str, Any]:
        # Warm-up steps run before the budget's step 0 (see OnlineConfig.warmup_steps).
        return {
            "step": np.int64(-self.config.warmup_steps),
            "episodes": np.zeros(self.config.seeds, np.int64),
            "wall_time": np.float64(0.0),
        }

    def _check(self, nan: Any, metrics: dict, step: int, run: RunDir | None) -> None:
        """The divergence guard after an update call at env step ``step``."""
        self.guard.check(nan, metrics, "online", self.step_offset + step, run and run.path)
        kill_point("chunk:online")

    def _method_events(self, step: int, states: Any, data: Any, run: RunDir | None) -> Any:
        if self.on_chunk is None:
            return states
        states, event_rows = self.on_chunk(step, states, data)
        self._log_events(step, event_rows, run)
        return states

    def _log_events(self, step: int, event_rows: list[dict], run: RunDir | None) -> None:
        if run is not None:
            for event in event_rows:
                run.append(FINETUNE, {**event, "step": self.step_offset + step})

    def evaluate(self, states, on_step: Callable[[int], None] | None = None) -> EvalResult:
        kill_point("evaluate")
        return evaluate(
            self.eval_grid,
            lambda obs: self._greedy(states, jnp.asarray(self.preprocess.observations(obs))),
            seed=[_eval_seed(self.config.seed + s) for s in range(self.config.seeds)],
            on_step=on_step,
        )

    def close(self) -> None:
        self.envs.close()
        self.eval_grid.close()

    def run(
        self,
        run: RunDir | None = None,
        resume: bool = False,
        on_eval: EvalCallback | None = None,
        progress: bool = True,
    ) -> OnlineResult:
        c = self.config
        carry = self.initial()
        if resume and run is not None:
            if run.has_checkpoint():
                carry = jax.tree.map(jnp.asarray, load_checkpoint(run.checkpoint_path, carry))
                carry["step"], carry["wall_time"] = int(carry["step"]), float(carry["wall_time"])
                carry["episodes"] = np.asarray(carry["episodes"])
            # Rows written after the checkpoint (or, killed before the first one, every row of
            # this phase, warm-up episodes included) are written again by the resumed run.
            run.truncate_after(self.step_offset + int(carry["step"]))
        carry["step"] = int(carry["step"])
        rows = run.rows(METRICS) if run is not None else []
        self.envs.restart(carry["episodes"])
        start_wall = time.perf_counter() - float(carry["wall_time"])
        metrics: dict[str, Any] = {}
        updates = 0
        bar = RunProgress(c.steps, f"{c.env}", enabled=progress)
        bar.advance_to(max(0, carry["step"]))
        clock = LoopClock()
        warming = False
        with bar:
            while carry["step"] < c.steps:
                carry, chunk_metrics, chunk_updates = self._chunk(carry, run, clock)
                step = carry["step"]
                if chunk_metrics is not None:
                    metrics, updates = chunk_metrics, updates + chunk_updates
                bar.advance_to(max(0, step), updates=updates)
                if step < 0 or warming:
                    # Seed transitions (SAMG's warm-up) come before the budget's step 0: the
                    # bar stands at 0 and no update runs yet, so say what is happening.
                    warming = step < 0
                    bar.note(
                        f"seed transitions {c.warmup_steps + step}/{c.warmup_steps} by the "
                        "offline policy (before the budget, no updates)"
                        if warming
                        else "eval: -"
                    )
                clock.lap("other")
                if step > 0 and (step % c.eval_every == 0 or step >= c.steps):
                    result = self.evaluate(
                        carry["states"], evaluation_steps(bar, episode_limit(self.eval_grid))
                    )
                    row = evaluation_row(
                        "online",
                        self.step_offset + step,
                        time.perf_counter() - start_wall,
                        result.mean_return,
                        result.success_rate,
                        metrics,
                        self.score_fn,
                        updates=self.updates_at(step),
                    )
                    row.update(self.coverage(carry))
                    rows.append(row)
                    bar.report(row)
                    if self.on_evaluation is not None:
                        states, event_rows = self.on_evaluation(step, carry["states"], row)
                        carry = {**carry, "states": states}
                        self._log_events(step, event_rows, run)
                    clock.lap("eval")
                    # Episodes restart after every evaluation (and its checkpoint), in resumed
                    # and uninterrupted runs alike.
                    self.envs.episodes += 1
                    if run is not None:
                        if self.on_chunk is not None or self.on_evaluation is not None:
                            # Method events change the states outside the checked update call.
                            nan = jax.vmap(any_nan)(carry["states"])
                            self.guard.check(nan, {}, "online", self.step_offset + step, run.path)
                        run.append(METRICS, row)
                        save_checkpoint(
                            run.checkpoint_path,
                            {
                                **carry,
                                "step": np.int64(step),
                                "episodes": self.envs.episodes,
                                "wall_time": np.float64(row["wall_time"]),
                            },
                            phase="online",
                        )
                    clock.lap("checkpoint")
                    self.envs.restart()
                    if on_eval is not None:
                        on_eval(row)
                    clock.lap("other")
        return OnlineResult(states=carry["states"], rows=rows, section_seconds=clock.seconds)

    def updates_at(self, step: int) -> int | None:
        """Gradient updates made by budget step ``step`` (recorded in every row, so arms of a
        comparison can be checked for equal update counts); None where a loop does not say."""
        return None

    def coverage(self, carry: dict[str, Any]) -> dict[str, Any]:
        """Coverage fields of the evaluation row (o2o.experiment.visited); none where a loop
        does not keep the states it visited."""
        return {}


class OnlineTrainer(EnvLoop):
    """The replay loop: owns the envs, jitted functions and device data of one online run."""

    def __init__(
        self,
        agent: Agent,
        config: OnlineConfig,
        score_fn: Callable[[np.ndarray], np.ndarray] | None = None,
        preprocess: Preprocess | None = None,
        data: OnlineData | None = None,
        initial_states: Any = None,
        step_offset: int = 0,
        on_chunk: Callable[[int, Any, dict], tuple[Any, list[dict]]] | None = None,
        update: Callable | None = None,
        guard: DivergenceGuard | None = None,
    ):
        """``data`` and ``initial_states`` continue from an offline phase (with a leading seed
        axis); without them the run starts from scratch with one replay buffer. Rows are
        logged at ``step_offset + env step``. ``on_chunk`` gets the buffers as its data.
        ``update`` replaces ``agent.update`` (the fine-tuning methods' wrapped update);
        ``guard`` stops a diverging run (the default bound when None)."""
        c = config
        check(
            c.eval_every % c.update_every == 0,
            f"eval_every ({c.eval_every}) must be a multiple of update_every ({c.update_every})",
        )
        super().__init__(
            agent, config, score_fn, preprocess, initial_states, step_offset, on_chunk, guard
        )
        self.data = data
        self.capacity = c.buffer_capacity or c.steps

        def explore(states, observations, keys, uniform):
            def one(state, obs, key):
                key, act_key, random_key = jax.random.split(key, 3)
                policy_action = agent.act(state, obs[None], act_key, False)[0]
                random_action = jax.random.uniform(
                    random_key, policy_action.shape, minval=-1.0, maxval=1.0
                )
                return jnp.where(uniform, random_action, policy_action), key

            return jax.vmap(one)(states, observations, keys)

        self._explore = jax.jit(explore)
        self._add = jax.jit(jax.vmap(buf.add), donate_argnums=(0,))
        sampler = (
            data.sampler if data is not None else buf.Sampler(c.batch_size, (("replay", 1.0),))
        )
        self.write_to = data.write_to if data is not None else "replay"
        self._fused = compile_fused(
            update or agent.update, sampler, c.update_every * c.utd, nan_flag=True
        )

    def updates_at(self, step: int) -> int:
        c = self.config
        first_chunk = max(1, -(-c.update_after // c.update_every))
        return max(0, step // c.update_every - first_chunk + 1) * c.update_every * c.utd

    def coverage(self, carry: dict[str, Any]) -> dict[str, Any]:
        buffer = carry["buffers"][self.write_to]
        visited = carry["step"] + self.config.warmup_steps
        sizes, pointers = np.asarray(buffer.size), np.asarray(buffer.pointer)
        # Only the visited rows leave the device (a union buffer also holds the dataset).
        return coverage_metrics(
            [
                np.asarray(
                    buffer.data.observations[
                        s, recent_rows(int(sizes[s]), int(pointers[s]), buffer.capacity, visited)
                    ]
                )
                for s in range(len(sizes))
            ]
        )

    def initial(self) -> dict[str, Any]:
        c = self.config
        roots = seed_keys(c.seed, c.seeds)
        split = jax.vmap(lambda k: jax.random.split(k, 3))(roots)
        states = self._initial_states(split[:, 0])
        if self.data is not None:
            # Handed over, not copied: a union buffer holds the whole offline dataset per seed,
            # and a second copy would double the run's largest allocation.
            buffers = {name: jax.tree.map(jnp.asarray, b) for name, b in self.data.buffers.items()}
            self.data = replace(self.data, buffers={})
        else:
            one = buf.create_buffer(self.capacity, self.obs_dim, self.act_dim)
            buffers = {
                "replay": jax.tree.map(
                    lambda x: jnp.broadcast_to(x, (c.seeds, *x.shape)).copy(), one
                )
            }
        return {
            "states": states,
            "buffers": buffers,
            "explore_keys": split[:, 1],
            "update_keys": split[:, 2],
            **self._counters(),
        }

    def _chunk(
        self, carry: dict[str, Any], run: RunDir | None, clock: LoopClock
    ) -> tuple[dict[str, Any], dict | None, int]:
        c = self.config
        step, states, buffers = carry["step"], carry["states"], carry["buffers"]
        explore_keys = carry["explore_keys"]
        staged = _Staging(c.seeds, c.update_every, self.obs_dim, self.act_dim)
        for i in range(c.update_every):
            actions, explore_keys = self._explore(
                states,
                jnp.asarray(self.preprocess.observations(self.envs.observations)),
                explore_keys,
                # Warm-up steps (step < 0) are the current policy's, never uniform.
                0 <= step < c.random_steps,
            )
            actions = np.asarray(actions)
            clock.lap("act")
            # Raw observations and rewards; transformed once per chunk.
            staged.put(i, actions, self.envs.step(actions, self.step_offset + step + 1, run))
            step += 1
            clock.lap("env")
        chunk = staged.as_transition(self.preprocess)
        buffers = {**buffers, self.write_to: self._add(buffers[self.write_to], chunk)}
        clock.lap("buffer")
        metrics, updates = None, 0
        update_keys = carry["update_keys"]
        if step > 0 and step >= c.update_after:
            states, update_keys, metrics, nan = self._fused(states, buffers, update_keys)
            self._check(nan, metrics, step, run)
            updates = c.update_every * c.utd
            # Waiting here costs nothing (the next action needs these states) and
            # charges the updates' time to them rather than to the next section.
            jax.block_until_ready(states)
            clock.lap("updates")
        if self.on_chunk is not None:
            states = self._method_events(step, states, buffers, run)
            clock.lap("method")
        carry = {
            **carry,
            "states": states,
            "buffers": buffers,
            "explore_keys": explore_keys,
            "update_keys": update_keys,
            "step": step,
        }
        return carry, metrics, updates


class _Staging:
    """Host arrays for one chunk of transitions, (seeds, chunk, ...)."""

    def __init__(self, seeds: int, chunk: int, obs_dim: int, act_dim: int):
        self.obs = np.zeros((seeds, chunk, obs_dim), np.float32)
        self.act = np.zeros((seeds, chunk, act_dim), np.float32)
        self.rew = np.zeros((seeds, chunk), np.float32)
        self.next_obs = np.zeros((seeds, chunk, obs_dim), np.float32)
        self.term = np.zeros((seeds, chunk), np.float32)

    def put(self, i: int, actions: np.ndarray, step: EnvStep) -> None:
        self.obs[:, i], self.act[:, i], self.rew[:, i] = step.observations, actions, step.rewards
        self.next_obs[:, i], self.term[:, i] = step.next_observations, step.terminated

    def as_transition(self, preprocess: Preprocess) -> Transition:
        # Online transitions carry no Monte-Carlo return (Cal-QL's convention: 0).
        return Transition(
            jnp.asarray(preprocess.observations(self.obs)),
            jnp.asarray(self.act),
            jnp.asarray(preprocess.rewards(self.rew)),
            jnp.asarray(preprocess.observations(self.next_obs)),
            jnp.asarray(self.term),
            jnp.zeros_like(jnp.asarray(self.rew)),
        )


def config_dict(algo: str, agent_config: Any, online: OnlineConfig) -> dict[str, Any]:
    return {
        "algo": algo,
        "agent": plain_config(asdict(agent_config)),
        "online": plain_config(asdict(online)),
    }
