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
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from o2o.core import buffers as buf
from o2o.core.agent import Agent
from o2o.core.engine import compile_fused, seed_keys
from o2o.core.types import Transition
from o2o.envs.evaluation import EnvGrid, EvalResult, evaluate
from o2o.envs.factory import make_env, success_from_info
from o2o.errors import check, check_non_negative, check_positive
from o2o.experiment.checkpoint import load_checkpoint, save_checkpoint
from o2o.experiment.progress import RunProgress
from o2o.experiment.runs import EPISODES, FINETUNE, METRICS, RunDir, plain_config


@dataclass(frozen=True)
class OnlineConfig:
    env: str = "Pendulum-v1"
    steps: int = 15_000
    random_steps: int = 1_000  # uniform random actions before the policy acts
    update_after: int = 1_000  # first gradient step after this many env steps
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
        check_non_negative(self, "random_steps", "update_after", "seed")
        check(
            self.eval_every % self.update_every == 0,
            f"eval_every ({self.eval_every}) must be a multiple of update_every ({self.update_every})",
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


class OnlineTrainer:
    """Owns the envs, jitted functions and device data of one online run."""

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
    ):
        """``data`` and ``initial_states`` continue from an offline phase (with a leading seed
        axis); without them the run starts from scratch with one replay buffer. Rows are
        logged at ``step_offset + env step``."""
        self.agent, self.config, self.score_fn = agent, config, score_fn
        self.preprocess = preprocess or Preprocess()
        self.data, self.initial_states, self.step_offset = data, initial_states, step_offset
        # Periodic events of a fine-tuning method: (env step, states, buffers) -> (states, rows).
        self.on_chunk = on_chunk
        c = config
        self.envs = [make_env(c.env, seed=c.seed + i) for i in range(c.seeds)]
        self.obs_dim = int(self.envs[0].observation_space.shape[0])
        self.act_dim = int(self.envs[0].action_space.shape[0])
        self.eval_grid = EnvGrid(c.env, c.seeds, c.eval_episodes)
        capacity = c.buffer_capacity or c.steps
        self.capacity = capacity

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
        self._greedy = jax.jit(
            jax.vmap(lambda state, obs: agent.act(state, obs, jax.random.PRNGKey(0), True))
        )
        self._add = jax.jit(jax.vmap(buf.add), donate_argnums=(0,))
        sampler = (
            data.sampler if data is not None else buf.Sampler(c.batch_size, (("replay", 1.0),))
        )
        self.write_to = data.write_to if data is not None else "replay"
        self._fused = compile_fused(agent.update, sampler, c.update_every * c.utd)

    def initial(self) -> dict[str, Any]:
        c = self.config
        roots = seed_keys(c.seed, c.seeds)
        split = jax.vmap(lambda k: jax.random.split(k, 3))(roots)
        if self.initial_states is not None:
            states = jax.tree.map(lambda x: jnp.asarray(x).copy(), self.initial_states)
        else:
            states = jax.vmap(lambda k: self.agent.init(k, self.obs_dim, self.act_dim))(split[:, 0])
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
            "step": np.int64(0),
            "episodes": np.zeros(c.seeds, np.int64),
            "wall_time": np.float64(0.0),
        }

    def evaluate(self, states) -> EvalResult:
        return evaluate(
            self.eval_grid,
            lambda obs: self._greedy(states, jnp.asarray(self.preprocess.observations(obs))),
            seed=[_eval_seed(self.config.seed + s) for s in range(self.config.seeds)],
        )

    def close(self) -> None:
        for env in self.envs:
            env.close()
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
        if resume and run is not None and run.has_checkpoint():
            carry = jax.tree.map(jnp.asarray, load_checkpoint(run.checkpoint_path, carry))
            carry["step"], carry["wall_time"] = int(carry["step"]), float(carry["wall_time"])
            carry["episodes"] = np.asarray(carry["episodes"])
            run.truncate_after(self.step_offset + carry["step"])
        rows = run.rows(METRICS) if run is not None else []
        step = int(carry["step"])
        episodes = np.array(carry["episodes"])
        observations = self._reset_all(episodes)
        staged = _Staging(c.seeds, c.update_every, self.obs_dim, self.act_dim)
        episode_returns = np.zeros(c.seeds)
        episode_success = np.zeros(c.seeds)
        start_wall = time.perf_counter() - float(carry["wall_time"])
        metrics: dict[str, Any] = {}
        states, buffers = carry["states"], carry["buffers"]
        explore_keys, update_keys = carry["explore_keys"], carry["update_keys"]
        updates_done_at_start, updates = 0, 0
        bar = RunProgress(c.steps, f"{c.env}", enabled=progress)
        bar.advance_to(step)
        clock = LoopClock()
        with bar:
            while step < c.steps:
                for i in range(c.update_every):
                    actions, explore_keys = self._explore(
                        states,
                        jnp.asarray(self.preprocess.observations(observations)),
                        explore_keys,
                        step < c.random_steps,
                    )
                    actions = np.asarray(actions)
                    clock.lap("act")
                    for s, env in enumerate(self.envs):
                        next_obs, reward, terminated, truncated, info = env.step(actions[s])
                        staged.put(
                            s, i, observations[s], actions[s], reward, next_obs, terminated
                        )  # raw; transformed per chunk
                        episode_returns[s] += reward
                        success = success_from_info(info)
                        if success is not None:
                            episode_success[s] = max(episode_success[s], success)
                        if terminated or truncated:
                            if run is not None:
                                row = {
                                    "step": self.step_offset + step + 1,
                                    "seed": c.seed + s,
                                    "return": float(episode_returns[s]),
                                }
                                if success is not None:
                                    row["success"] = float(episode_success[s])
                                run.append(EPISODES, row)
                            episode_returns[s] = episode_success[s] = 0.0
                            episodes[s] += 1
                            next_obs = env.reset(seed=_episode_seed(c.seed, s, int(episodes[s])))[0]
                        observations[s] = next_obs
                    step += 1
                    clock.lap("env")
                chunk = staged.as_transition(self.preprocess)
                buffers = {**buffers, self.write_to: self._add(buffers[self.write_to], chunk)}
                clock.lap("buffer")
                if step >= c.update_after:
                    states, update_keys, metrics = self._fused(states, buffers, update_keys)
                    updates += c.update_every * c.utd
                    # Waiting here costs nothing (the next action needs these states) and
                    # charges the updates' time to them rather than to the next section.
                    jax.block_until_ready(states)
                    clock.lap("updates")
                if self.on_chunk is not None:
                    states, event_rows = self.on_chunk(step, states, buffers)
                    if run is not None:
                        for event in event_rows:
                            run.append(FINETUNE, {**event, "step": self.step_offset + step})
                    clock.lap("method")
                bar.advance_to(step, updates=updates - updates_done_at_start)
                clock.lap("other")
                if step % c.eval_every == 0 or step >= c.steps:
                    result = self.evaluate(states)
                    row = self._row(
                        self.step_offset + step, time.perf_counter() - start_wall, result, metrics
                    )
                    row["phase"] = "online"
                    rows.append(row)
                    bar.report(row)
                    clock.lap("eval")
                    if run is not None:
                        run.append(METRICS, row)
                        # Episodes restart after every checkpoint, in resumed and uninterrupted runs alike.
                        episodes += 1
                        save_checkpoint(
                            run.checkpoint_path,
                            {
                                "states": states,
                                "buffers": buffers,
                                "explore_keys": explore_keys,
                                "update_keys": update_keys,
                                "step": np.int64(step),
                                "episodes": episodes,
                                "wall_time": np.float64(row["wall_time"]),
                            },
                        )
                    else:
                        episodes += 1
                    clock.lap("checkpoint")
                    observations = self._reset_all(episodes)
                    episode_returns[:] = episode_success[:] = 0.0
                    if on_eval is not None:
                        on_eval(row)
                    clock.lap("other")
        return OnlineResult(states=states, rows=rows, section_seconds=clock.seconds)

    def _reset_all(self, episodes: np.ndarray) -> np.ndarray:
        return np.stack(
            [
                env.reset(seed=_episode_seed(self.config.seed, s, int(episodes[s])))[0]
                for s, env in enumerate(self.envs)
            ]
        ).astype(np.float32)

    def _row(self, step: int, wall_time: float, result: EvalResult, metrics: dict) -> dict:
        returns = result.mean_return
        row: dict[str, Any] = {
            "step": step,
            "wall_time": round(wall_time, 3),
            "return": float(returns.mean()),
            "return_std": float(returns.std()),
            "seed_returns": [float(r) for r in returns],
        }
        if self.score_fn is not None:
            scores = self.score_fn(returns)
            row["normalized_score"] = float(np.mean(scores))
            row["seed_normalized_scores"] = [float(x) for x in scores]
        if result.success_rate is not None:
            row["success_rate"] = float(result.success_rate.mean())
        for name, value in metrics.items():
            row[f"train/{name}"] = float(np.mean(np.asarray(value)))
        return row


class _Staging:
    """Host arrays for one chunk of transitions, (seeds, chunk, ...)."""

    def __init__(self, seeds: int, chunk: int, obs_dim: int, act_dim: int):
        self.obs = np.zeros((seeds, chunk, obs_dim), np.float32)
        self.act = np.zeros((seeds, chunk, act_dim), np.float32)
        self.rew = np.zeros((seeds, chunk), np.float32)
        self.next_obs = np.zeros((seeds, chunk, obs_dim), np.float32)
        self.term = np.zeros((seeds, chunk), np.float32)

    def put(self, s: int, i: int, obs, act, rew, next_obs, terminated) -> None:
        self.obs[s, i], self.act[s, i], self.rew[s, i] = obs, act, rew
        self.next_obs[s, i], self.term[s, i] = next_obs, float(terminated)

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
