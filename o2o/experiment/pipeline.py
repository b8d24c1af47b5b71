"""Offline pre-training, then online fine-tuning, in one resumable run.

    dataset -> preprocess (state normalisation, reward convention) -> offline phase (fused
    updates on the device-resident dataset, periodic evaluation) -> boundary (the agent's
    ``for_online()`` switches; buffers per data policy) -> online phase (OnlineTrainer)

Data policies online:
* ``union``: online transitions are appended to the offline data, sampled uniformly
  together (CORL's AWAC/CQL/IQL/SPOT);
* ``mixed``: offline and online data in separate buffers, a fixed offline fraction per batch
  (CORL's Cal-QL, 50/50);
* ``online``: online data only (SAMG); the offline data is not kept.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import time
import zlib
from dataclasses import dataclass, field, replace
from typing import Any, Literal, get_args

import jax
import jax.numpy as jnp
import numpy as np

from o2o.core import buffers as buf
from o2o.core.engine import Phase, any_nan, chunk_sizes, compile_fused, seed_keys
from o2o.core.progress import RunProgress, evaluation_steps
from o2o.envs.evaluation import EnvGrid, episode_limit, evaluate
from o2o.errors import ConfigError, check, check_non_negative, check_positive
from o2o.experiment.checkpoint import (
    atomic_write_bytes,
    checkpoint_phase,
    load_checkpoint,
    save_checkpoint,
)
from o2o.experiment.divergence import DivergenceGuard
from o2o.experiment.faults import kill_point
from o2o.experiment.online import OnlineConfig, OnlineData, OnlineTrainer, Preprocess, _eval_seed
from o2o.experiment.rollout import RolloutTrainer, eval_interval
from o2o.experiment.runs import (
    FINETUNE,
    METRICS,
    RunDir,
    evaluation_row,
    train_metrics,
)
from o2o.finetune.base import VANILLA, Methods

DataPolicy = Literal["union", "mixed", "online"]
RewardConvention = Literal[
    "auto", "none", "iql_locomotion", "antmaze_minus_one", "antmaze_cql", "adroit_binary"
]
REWARD_CONVENTIONS = get_args(RewardConvention)

OFFLINE_CHECKPOINT = "offline.msgpack"
PREPARED_CHECKPOINT = "finetune_start.msgpack"  # offline states + the method's extras
PHASE_FILE = "phase.json"
OFFLINE = "offline"
ONLINE = "online"


@dataclass(frozen=True)
class PipelineConfig:
    dataset: str = "hopper-medium-lite"
    offline_steps: int = 100_000
    online_steps: int = 50_000
    data_policy: DataPolicy | None = None  # None: the algorithm's CORL default
    offline_fraction: float = 0.5  # share of each batch from offline data under "mixed"
    online_buffer_capacity: int | None = None  # None: every online step fits
    batch_size: int = 256
    utd: int = 1
    update_every: int = 50  # online env steps between fused update calls
    offline_chunk: int = 1_000  # offline updates per fused call
    offline_eval_every: int = 25_000
    online_eval_every: int = 10_000
    eval_episodes: int = 10
    normalize_states: bool = True
    reward_convention: RewardConvention = "auto"
    discount_for_mc_returns: float = 0.99
    seed: int = 0
    seeds: int = 1

    def __post_init__(self) -> None:
        check_positive(
            self,
            "batch_size",
            "utd",
            "update_every",
            "offline_chunk",
            "offline_eval_every",
            "online_eval_every",
            "eval_episodes",
            "seeds",
        )
        check_non_negative(self, "offline_steps", "online_steps", "seed")
        check(
            self.data_policy in (None, "union", "mixed", "online"),
            f"data_policy must be union, mixed or online, got {self.data_policy!r}",
        )
        check(
            0.0 <= self.offline_fraction <= 1.0,
            f"offline_fraction must be in [0, 1], got {self.offline_fraction}",
        )
        check(
            self.reward_convention in REWARD_CONVENTIONS,
            f"unknown reward_convention {self.reward_convention!r}; choose from "
            f"{', '.join(REWARD_CONVENTIONS)}",
        )
        check(
            self.offline_eval_every % self.offline_chunk == 0
            or self.offline_eval_every < self.offline_chunk,
            f"offline_eval_every ({self.offline_eval_every}) must be a multiple of offline_chunk "
            f"({self.offline_chunk}) or smaller than it (a shorter interval shortens the fused call)",
        )


def budget_eval_intervals(offline_steps: int, online_steps: int) -> tuple[int, int]:
    """Evaluation intervals fitted to a budget, the CLI's and ``o2o.fit``'s defaults: about
    ten evaluations per phase (offline a multiple of the 1,000-step chunk), at most every 25k
    offline / 10k online steps as on long runs; a fixed 25k / 10k gave small budgets curves
    of one or two points."""
    offline = min(25_000, max(1_000, offline_steps // 10 // 1_000 * 1_000))
    online = min(10_000, max(500, online_steps // 10 // 50 * 50))
    return offline, online


def domain_of(*names: str) -> str:
    """``adroit`` for an Adroit env or dataset name, ``maze`` for a sparse maze, else
    ``locomotion``."""
    from o2o.data.scores import d4rl_family
    from o2o.envs.adroit import TASKS, is_adroit

    if any(is_adroit(name) or d4rl_family(name) in TASKS for name in names if name):
        return "adroit"
    return "maze" if any("maze" in name.lower() for name in names) else "locomotion"


def dataset_domain(dataset: Any) -> str:
    return domain_of(str(dataset.env_id or ""), str(dataset.name))


def reward_convention_for(
    agent_config: Any, dataset: Any, config: PipelineConfig, methods: Any = None
) -> str:
    """The configured convention; under ``auto`` the fine-tuning methods' for the dataset's
    domain (``methods``, online only), else the agent's."""
    if config.reward_convention != "auto":
        return config.reward_convention
    domain = dataset_domain(dataset)
    chosen = methods.online_reward_convention(domain) if methods is not None else None
    return chosen or agent_config.reward_conventions[domain]


def adroit_binary(dataset: Any) -> tuple[Any, str]:
    """Cal-QL's binary Adroit task (``pen-binary-v0`` ...): reward goal_achieved − 1 per step
    (0 at the goal, −1 elsewhere), from the data's ``infos/goal_achieved`` and, online, from
    o2o's binary Adroit env. Returns the relabelled dataset and that env's id."""
    from o2o.data import env_id_for
    from o2o.envs.adroit import adroit_binary_env_id, adroit_task_of

    env_id = env_id_for(dataset)
    task = adroit_task_of(env_id)
    if task is None:
        raise ConfigError(
            f"reward convention adroit_binary needs an Adroit dataset, {dataset.name} evaluates "
            f"on {env_id}"
        )
    if "goal_achieved" not in dataset.infos:
        raise ConfigError(
            f"reward convention adroit_binary needs per-step goal_achieved (D4RL's "
            f"infos/goal_achieved, Minari's success info); {dataset.name} has none"
        )
    rewards = np.asarray(dataset.infos["goal_achieved"], np.float32) - 1.0
    return dataset.replace(rewards=rewards), adroit_binary_env_id(task)


def preprocess_for(
    agent_config: Any, dataset: Any, config: PipelineConfig, methods: Any = None
) -> tuple[Preprocess, str]:
    """State statistics and reward transform (r' = scale·r + shift) and a description; the
    convention as ``reward_convention_for`` chooses it."""
    convention = reward_convention_for(agent_config, dataset, config, methods)
    scale, shift = 1.0, 0.0
    if convention == "iql_locomotion":
        returns = dataset.episode_returns(include_incomplete=True)
        spread = float(returns.max() - returns.min()) if returns.size > 1 else 0.0
        scale = 1000.0 / spread if spread > 0 else 1.0
    elif convention == "antmaze_minus_one":
        shift = -1.0
    elif convention == "antmaze_cql":
        scale, shift = 10.0, -5.0
    elif convention == "adroit_binary":
        # Cal-QL's reward_scale 10, reward_bias 5 on its binary Adroit tasks: -5 / +5.
        scale, shift = 10.0, 5.0
    mean = std = None
    if config.normalize_states:
        mean = dataset.observations.mean(axis=0).astype(np.float32)
        std = (dataset.observations.std(axis=0) + 1e-3).astype(np.float32)
    return Preprocess(mean, std, scale, shift), convention


def binary_score(env_id: str) -> Any:
    """Returns of the binary Adroit task run from −T (never at the goal) to 0 (at the goal on
    every step of the T-step episode); D4RL's dense-reward constants do not apply."""
    from o2o.data.scores import ScoreInfo
    from o2o.envs.adroit import MAX_EPISODE_STEPS, adroit_task_of

    steps = MAX_EPISODE_STEPS[adroit_task_of(env_id)]
    return ScoreInfo(-float(steps), 0.0, "dataset", "adroit_binary: share of steps at the goal")


def _stack(tree: Any, seeds: int) -> Any:
    return jax.tree.map(lambda x: jnp.broadcast_to(x, (seeds, *np.shape(x))).copy(), tree)


@dataclass
class PipelineResult:
    offline_states: Any
    states: Any
    rows: list[dict]
    # The online loop's wall seconds per section (``online.LoopClock``); empty without one.
    online_section_seconds: dict[str, float] = field(default_factory=dict)

    def final(self, phase: str) -> dict:
        return [r for r in self.rows if r.get("phase") == phase][-1]


class Pipeline:
    def __init__(
        self,
        algo: str,
        agent_config: Any,
        config: PipelineConfig,
        dataset: Any = None,
        methods: Methods | None = None,
        online: tuple[str, Any] | None = None,
        guard: DivergenceGuard | None = None,
    ):
        """One run: ``agent_config`` (its ``create(hooks)`` builds the agent) pre-trained on
        ``dataset`` then fine-tuned with ``methods`` (vanilla when None). ``online`` =
        (algorithm, config): fine-tune with another algorithm, whose agent starts from the
        offline actor with its other networks fresh (OCR-CFT's O2PPO: IQL → PPO); its reward
        convention and online data policy apply from the end of offline training. ``guard``
        stops the run if it diverges (the default bound when None)."""
        from o2o import data as datasets

        self.algo, self.agent_config, self.config = algo, agent_config, config
        self.guard = guard or DivergenceGuard()
        self.unsaved_rows: list[dict] = []  # the metrics rows of a run without a run directory
        # Options a method leaves to the budget (SAMG's cvae_steps); a RunSpec resolved
        # them already (and recorded them), a Pipeline built by hand gets the same values.
        self.methods = (methods if methods is not None else VANILLA).fit_to_budget(
            config.offline_steps, config.online_steps
        )
        self.agent = agent_config.create(hooks=self.methods)
        check(
            not (self.agent.on_policy and config.offline_steps > 0),
            f"{algo} is on-policy and learns from its own rollouts only: it has no offline "
            "phase (use --offline-steps 0, or pre-train another algorithm and --online-algo)",
        )
        self.switches_agent = online is not None
        self.online_algo, self.online_agent_config = online or (algo, agent_config)
        # The agent fine-tuning (and the methods' phases before it) works on.
        self.finetune_agent = (
            self.online_agent_config.create(hooks=self.methods)
            if self.switches_agent
            else self.agent
        )
        for method in self.methods:
            method.check_agent(self.online_algo, self.finetune_agent)
            method.check_batch_size(config.batch_size)
        self.dataset = dataset if dataset is not None else datasets.load(config.dataset)
        self.env_id = datasets.env_id_for(self.dataset)
        self.score = datasets.score_reference(self.dataset)
        if reward_convention_for(agent_config, self.dataset, config) == "adroit_binary":
            self.dataset, self.env_id = adroit_binary(self.dataset)
            self.score = binary_score(self.env_id)
        self.dataset_size = int(self.dataset.size)  # kept: SAMG drops the dataset itself
        self.preprocess, self.reward_convention = preprocess_for(agent_config, self.dataset, config)
        self.online_preprocess, self.online_reward_convention = preprocess_for(
            self.online_agent_config, self.dataset, config, self.methods
        )
        method_policy = self.methods.data_policy()
        if method_policy and config.data_policy and config.data_policy != method_policy:
            raise ConfigError(
                f"{self.methods.label} fine-tunes with the '{method_policy}' data policy; "
                f"--data-policy {config.data_policy} would change the method, drop it"
            )
        fixed_utd = self.methods.online_overrides().get("utd")
        if fixed_utd is not None and config.utd not in (1, fixed_utd):
            # The method's UTD is its own option: a --utd that silently lost would mislead.
            raise ConfigError(
                f"{self.methods.label} fine-tunes at {fixed_utd} updates per env step; change "
                f"it with --method-set utd=N, not --utd {config.utd}"
            )
        self.policy = (
            config.data_policy or method_policy or self.online_agent_config.online_data_policy
        )
        self.offline = self.offline_transitions(self.preprocess, self.reward_convention)
        # What fine-tuning sees of the offline data (its phases, union/mixed buffers): the
        # same transitions unless the online agent's reward convention differs.
        self.finetune_offline = (
            self.offline
            if self.online_reward_convention == self.reward_convention
            else self.offline_transitions(self.online_preprocess, self.online_reward_convention)
        )
        self.finetune_offline = self.methods.finetune_data(
            self.dataset, self.finetune_offline, config.discount_for_mc_returns
        )
        self.obs_dim, self.act_dim = self.dataset.obs_dim, self.dataset.act_dim
        before_offline = (*self.agent.phases(), *self.methods.phases(self.agent))
        before_online = (*self.finetune_agent.phases(), *self.methods.phases(self.finetune_agent))
        self.phases_before_offline = tuple(p for p in before_offline if p.when == "before_offline")
        self.phases_before_online = tuple(p for p in before_online if p.when == "before_online")

    def offline_transitions(self, preprocess: Preprocess, convention: str) -> Any:
        """The dataset's transitions with rewards and Monte-Carlo returns in ``convention``
        and states normalised."""
        c = self.config
        # The failure reward of sparse tasks (Cal-QL's reward_neg, in the agent's convention).
        sparse = {"antmaze_minus_one": -1.0, "antmaze_cql": -5.0, "adroit_binary": -5.0}.get(
            convention
        )
        transitions = self.dataset.to_transition(discount=c.discount_for_mc_returns)
        rewards = preprocess.rewards(transitions.rewards)
        mc = self.dataset.replace(rewards=rewards).mc_returns(c.discount_for_mc_returns, sparse)
        return transitions._replace(
            observations=preprocess.observations(transitions.observations),
            next_observations=preprocess.observations(transitions.next_observations),
            rewards=rewards,
            mc_returns=mc,
        )

    def describe(self) -> dict[str, Any]:
        described = {
            "env_id": self.env_id,
            "finetune": self.methods.label,
            "data_policy": self.policy,
            "reward_convention": self.reward_convention,
            "score_reference": self.score.describe(),
            "score_provenance": self.score.provenance,
            "dataset_transitions": self.dataset_size,
        }
        if self.switches_agent:
            described["online_algo"] = self.online_algo
            described["online_reward_convention"] = self.online_reward_convention
        return described

    def initial_states(self) -> tuple[Any, Any]:
        """(agent states, train keys) of every seed, with the state of methods that train
        from the start of offline training."""
        c = self.config
        split = jax.vmap(jax.random.split)(seed_keys(c.seed, c.seeds))
        init_keys, train_keys = split[:, 0], split[:, 1]
        states = jax.vmap(lambda k: self.agent.init(k, self.obs_dim, self.act_dim))(init_keys)
        states = self.methods.init_states(
            self.agent, states, _named_keys(c, "init"), self.preprocess, offline=True
        )
        return states, train_keys

    def _greedy(self, agent: Any) -> Any:
        greedy = jax.jit(jax.vmap(lambda s, o: agent.act(s, o, jax.random.PRNGKey(0), True)))

        def act(states: Any, obs: np.ndarray) -> Any:
            return greedy(states, jnp.asarray(self.preprocess.observations(obs)))

        return act

    def evaluate(self, grid: EnvGrid, act: Any, states: Any, on_step: Any = None) -> Any:
        c = self.config
        kill_point("evaluate")
        return evaluate(
            grid,
            lambda obs: act(states, obs),
            seed=[_eval_seed(c.seed + s) for s in range(c.seeds)],
            on_step=on_step,
        )

    def seed_scores(self, agent: Any, states: Any) -> np.ndarray:
        """Per seed, the normalized score of ``agent``'s greedy policy in ``states`` over
        ``eval_episodes`` episodes (the evaluation seeds of every evaluation)."""
        grid = EnvGrid(self.env_id, self.config.seeds, self.config.eval_episodes)
        try:
            result = self.evaluate(grid, self._greedy(agent), states)
        finally:
            grid.close()
        return np.atleast_1d(self.score.normalize(np.asarray(result.mean_return)))

    # --- phases run by the engine on the offline data ----------------------------------------
    def run_phase(
        self,
        phase: Any,
        states: Any,
        keys: Any,
        run: RunDir | None,
        resume: bool,
        progress: bool,
        on_eval: Any = None,
        agent: Any = None,
        offline: Any = None,
    ) -> tuple[Any, Any]:
        """``phase.steps`` updates of ``phase.update`` (or the agent's, for ``offline``), fused
        in chunks, seeds vmapped; a row (evaluated where the policy changes) at every
        interval, each with its checkpoint, so a killed run resumes inside the phase.
        ``agent`` and ``offline`` (default: the offline agent and data) are what the phase
        works on."""
        agent = self.agent if agent is None else agent
        offline = self.offline if offline is None else offline
        name, total = phase.name, phase.steps
        carry = {"states": states, "keys": keys, "step": np.int64(0)}
        if resume and run is not None and _phase(run) == name and run.has_checkpoint():
            carry = jax.tree.map(jnp.asarray, load_checkpoint(run.checkpoint_path, carry))
            run.truncate_after(int(carry["step"]), phase=name)
        elif run is not None:
            # A fresh start (also after a kill before this phase's first checkpoint): rows a
            # killed attempt logged must not stay twice.
            run.truncate_after(0, phase=name)
        step = int(carry["step"])
        states, keys = carry["states"], carry["keys"]
        if step < total:
            states, keys = self._train_phase(
                phase, states, keys, step, run, progress, on_eval, agent, offline
            )
        if phase.finish is not None:
            states, rows = phase.finish(states, offline, lambda s: self.seed_scores(agent, s))
            # The finish (SAMG's statistics) ran after the guard's last check.
            self.guard.check(jax.vmap(any_nan)(states), {}, name, total, run and run.path)
            if run is not None:
                # Written after the phase's last checkpoint, so a run killed after them
                # redoes the finish: its rows of an earlier attempt go first.
                run.drop_rows(FINETUNE, during=name)
                for row in rows:
                    run.append(FINETUNE, {**row, "during": name, "step": total})
        return states, keys

    def _train_phase(
        self,
        phase: Any,
        states: Any,
        keys: Any,
        step: int,
        run: RunDir | None,
        progress: bool,
        on_eval: Any,
        agent: Any,
        offline: Any,
    ) -> tuple[Any, Any]:
        """``run_phase``'s updates from ``step`` to the end of the phase."""
        c = self.config
        name, total, first = phase.name, phase.steps, step
        chunk = min(c.offline_chunk, total)
        if name == OFFLINE:
            # An interval shorter than a fused call shortens the call: rows come exactly
            # every offline_eval_every steps, never rounded up to the chunk.
            chunk = min(chunk, c.offline_eval_every)
            every = c.offline_eval_every
        else:
            every = _row_interval(total, chunk)
        data = {"replay": _stack(buf.buffer_from_transitions(offline), c.seeds)}
        compiled: dict[int, Any] = {}
        grid = EnvGrid(self.env_id, c.seeds, c.eval_episodes) if phase.evaluate else None
        act = self._greedy(agent)
        start = time.perf_counter()
        bar = RunProgress(total, f"{name} {self.algo}", enabled=progress)
        bar.advance_to(step)
        try:
            with bar:
                for size in chunk_sizes(step, total, chunk):
                    if size not in compiled:
                        sampler = buf.Sampler(c.batch_size)
                        compiled[size] = compile_fused(phase.update, sampler, size, nan_flag=True)
                    states, keys, metrics, nan = compiled[size](states, data, keys)
                    step += size
                    self.guard.check(nan, metrics, name, step, run and run.path)
                    kill_point(f"chunk:{name}")
                    bar.advance_to(step, updates=step - first)
                    if step % every != 0 and step < total:
                        continue
                    wall = time.perf_counter() - start
                    if grid is not None:
                        on_step = evaluation_steps(bar, episode_limit(grid))
                        result = self.evaluate(grid, act, states, on_step)
                        row = evaluation_row(
                            name,
                            step,
                            wall,
                            result.mean_return,
                            result.success_rate,
                            metrics,
                            self.score.normalize,
                            updates=step,
                        )
                    else:
                        row = {"phase": name, "step": step, "updates": step}
                        row.update(wall_time=round(wall, 3), **train_metrics(metrics))
                    bar.report(row)
                    if run is None:
                        self.unsaved_rows.append(row)
                    else:
                        run.append(METRICS, row)
                        save_checkpoint(
                            run.checkpoint_path,
                            {"states": states, "keys": keys, "step": np.int64(step)},
                            phase=name,
                        )
                        kill_point("checkpoint-saved")
                        _set_phase(run, name, step)
                    if on_eval is not None and grid is not None:
                        on_eval(row)
        finally:
            if grid is not None:
                grid.close()
        return states, keys

    # --- offline -----------------------------------------------------------------------------
    def offline_phase(self) -> Phase:
        update = self.methods.wrap_update(self.agent)  # methods that train from the start
        return Phase(OFFLINE, self.config.offline_steps, update, evaluate=True)

    def run_offline(
        self, run: RunDir | None, resume: bool, progress: bool, on_eval: Any = None
    ) -> Any:
        """The agent's (and methods') phases before offline, then offline pre-training;
        ``offline.msgpack`` holds the result."""
        states, keys = self.initial_states()
        if run is not None and (run.path / OFFLINE_CHECKPOINT).exists():
            return jax.tree.map(
                jnp.asarray,
                load_checkpoint(run.path / OFFLINE_CHECKPOINT, {"states": states})["states"],
            )
        current = _phase(run) if resume and run is not None else None
        order = [p.name for p in self.phases_before_offline] + [OFFLINE]
        done = order.index(current) if current in order else 0
        for phase in (*self.phases_before_offline, self.offline_phase())[done:]:
            states, keys = self.run_phase(
                phase, states, keys, run, resume and phase.name == current, progress, on_eval
            )
        if run is not None:
            save_checkpoint(run.path / OFFLINE_CHECKPOINT, {"states": states}, phase=OFFLINE)
        return states

    # --- online ------------------------------------------------------------------------------
    def online_data(self, capacity: int) -> OnlineData:
        c = self.config
        s = c.seeds
        if self.policy == "union":
            buffers = {
                "replay": _stack(
                    buf.buffer_from_transitions(
                        self.finetune_offline, self.dataset.size + capacity
                    ),
                    s,
                )
            }
            return OnlineData(buffers, "replay", buf.Sampler(c.batch_size))
        online = _stack(buf.create_buffer(capacity, self.obs_dim, self.act_dim), s)
        if self.policy == "mixed":
            offline = _stack(buf.buffer_from_transitions(self.finetune_offline), s)
            sampler = buf.Sampler.from_fractions(
                c.batch_size, offline=c.offline_fraction, online=1.0 - c.offline_fraction
            )
            return OnlineData({"offline": offline, "online": online}, "online", sampler)
        return OnlineData(
            {"online": online}, "online", buf.Sampler.from_fractions(c.batch_size, online=1.0)
        )

    def online_config(self) -> OnlineConfig:
        c = self.config
        config = OnlineConfig(
            env=self.env_id,
            steps=c.online_steps,
            random_steps=0,
            update_after=0,
            update_every=c.update_every,
            utd=c.utd,
            batch_size=c.batch_size,
            buffer_capacity=c.online_buffer_capacity,
            eval_every=eval_interval(
                self.online_agent_config,
                min(c.online_eval_every, max(c.online_steps, c.update_every)),
            ),
            eval_episodes=c.eval_episodes,
            seed=c.seed,
            seeds=c.seeds,
        )
        return replace(config, **self.methods.online_overrides())

    def prepare_finetuning(
        self, offline_states: Any, run: RunDir | None, resume: bool, progress: bool
    ) -> Any:
        """Between the phases: the state of methods that start online, then their phases
        (SAMG's C-VAE fit); the result is cached in the run directory (``prepared``)."""
        c = self.config
        states = self.online_start(offline_states) if self.switches_agent else offline_states
        states = self.methods.init_states(
            self.finetune_agent, states, _named_keys(c, "init"), self.online_preprocess, False
        )
        if not self.phases_before_online:
            return states
        path = run.path / PREPARED_CHECKPOINT if run is not None else None
        if path is not None and path.exists():
            return jax.tree.map(jnp.asarray, load_checkpoint(path, {"states": states})["states"])
        current = _phase(run) if resume and run is not None else None
        # A run killed inside a later phase resumes there: the earlier phases' results are
        # in that phase's checkpoint (states carry everything), so they are not run again.
        order = [p.name for p in self.phases_before_online]
        done = order.index(current) if current in order else 0
        for phase in self.phases_before_online[done:]:
            states, _ = self.run_phase(
                phase,
                states,
                _named_keys(c, phase.name),
                run,
                resume and phase.name == current,
                progress,
                agent=self.finetune_agent,
                offline=self.finetune_offline,
            )
        if path is not None:
            save_checkpoint(path, {"states": states}, phase=self.phases_before_online[-1].name)
        return states

    def online_start(self, offline_states: Any) -> Any:
        """The online agent's states when it differs from the offline one: freshly
        initialised (keys of their own) with the offline actor's parameters, the only network
        OCR-CFT keeps; the actor's optimizer starts fresh."""
        keys = _named_keys(self.config, "online_init")
        fresh = jax.vmap(lambda k: self.finetune_agent.init(k, self.obs_dim, self.act_dim))(keys)
        offline_actor = getattr(getattr(offline_states, "actor", None), "params", None)
        online_actor = getattr(getattr(fresh, "actor", None), "params", None)
        layout = lambda tree: jax.tree.map(np.shape, tree)  # noqa: E731
        check(
            offline_actor is not None
            and online_actor is not None
            and layout(offline_actor) == layout(online_actor),
            f"the offline {self.algo} actor does not fit {self.online_algo}'s actor; give both "
            "the same network layout (hidden sizes, a Gaussian policy)",
        )
        actor = fresh.actor.replace(params=jax.tree.map(jnp.copy, offline_actor))
        fresh = fresh.replace(actor=actor)
        if hasattr(fresh, "target_actor_params"):
            # An agent with a target actor (TD3) starts it at the actor it takes over, not
            # at its own random initialisation.
            fresh = fresh.replace(target_actor_params=jax.tree.map(jnp.copy, offline_actor))
        return fresh

    def run(
        self,
        run: RunDir | None = None,
        resume: bool = False,
        progress: bool = True,
        offline_states: Any = None,
        on_eval: Any = None,
        on_online_start: Any = None,
    ) -> PipelineResult:
        """Both phases; ``offline_states`` (seed axis) skips pre-training (``--from``).
        ``on_eval(row)`` is called after every evaluation (and its checkpoint);
        ``on_online_start()`` once the online data is built and the pipeline's own offline
        arrays released (where memory benchmarks reset their peak)."""
        c = self.config
        self.unsaved_rows = []
        if offline_states is None:
            offline_states = self.run_offline(run, resume, progress, on_eval)
        elif run is not None and not (run.path / OFFLINE_CHECKPOINT).exists():
            save_checkpoint(
                run.path / OFFLINE_CHECKPOINT, {"states": offline_states}, phase=OFFLINE
            )
        states = offline_states
        section_seconds: dict[str, float] = {}
        if c.online_steps > 0:
            start_states = self.prepare_finetuning(offline_states, run, resume, progress)
            online = self.online_config()
            capacity = online.buffer_capacity or c.online_steps
            # An on-policy agent learns from its own rollouts: no replay data to build.
            data = None if self.finetune_agent.on_policy else self.online_data(capacity)
            # The online data holds what fine-tuning samples (under union/mixed, its own copy
            # of the offline transitions); under the online-only policy nothing of the offline
            # data stays in memory once fine-tuning starts.
            self.offline = self.finetune_offline = None
            self.dataset = None
            release_freed_memory()
            if on_online_start is not None:
                on_online_start()
            online_agent = self.finetune_agent.for_online()
            methods = self.methods

            def on_chunk(step: int, states: Any, buffers: dict) -> tuple[Any, list[dict]]:
                return methods.on_chunk(online_agent, step, states, buffers, c.seed)

            common = dict(
                score_fn=self.score.normalize,
                preprocess=self.online_preprocess,
                data=data,
                initial_states=start_states,
                step_offset=c.offline_steps,
                on_chunk=on_chunk if methods.has_events() else None,
            )
            if self.finetune_agent.on_policy:
                check(
                    methods.wrap_update(online_agent) == online_agent.update,
                    f"{methods.label} trains networks of its own in the replay update; "
                    "on-policy agents do not run it",
                )
                trainer = RolloutTrainer(online_agent, online, guard=self.guard, **common)
            else:
                update = methods.wrap_update(online_agent)
                trainer = OnlineTrainer(
                    online_agent, online, update=update, guard=self.guard, **common
                )
            if methods.has_events():
                trainer.on_evaluation = lambda step, states, row: methods.on_evaluation(
                    online_agent, step, states, row, c.seed
                )
            del data  # the trainer owns the buffers now (a union buffer is the largest array)
            try:
                if run is not None:
                    # An earlier phase's checkpoint goes first: a resumed run then starts
                    # online from the start (its rows of a killed attempt dropped) instead of
                    # reading that checkpoint as an online one.
                    if run.has_checkpoint() and _phase(run) != ONLINE:
                        run.checkpoint_path.unlink()
                    _set_phase(run, ONLINE, c.offline_steps)
                kill_point("online-start")
                online_result = trainer.run(
                    run, resume=resume and run is not None, progress=progress, on_eval=on_eval
                )
                states, section_seconds = online_result.states, online_result.section_seconds
                if run is None:
                    self.unsaved_rows += online_result.rows
            finally:
                trainer.close()
        rows = run.rows(METRICS) if run is not None else self.unsaved_rows
        return PipelineResult(offline_states, states, rows, section_seconds)


def _row_interval(total: int, chunk: int, rows: int = 20) -> int:
    """A row interval (a multiple of ``chunk``) giving about ``rows`` rows over ``total``."""
    return chunk * max(1, -(-total // (chunk * rows)))


def _named_keys(config: PipelineConfig, name: str) -> Any:
    """Per-seed keys for a named piece of the run (a method's init or phase), independent of
    the training keys and of each other, and the same in a resumed or paired run."""
    salt = zlib.crc32(name.encode())
    return jax.vmap(lambda k: jax.random.fold_in(k, salt))(seed_keys(config.seed, config.seeds))


def release_freed_memory() -> None:
    """Collect garbage and hand the freed heap back to the OS. glibc keeps freed pages of
    its heap (the offline arrays and their copies) mapped, so without ``malloc_trim`` the
    resident size of the online phase would still grow with the dropped dataset's size
    (measured: ~200 MiB kept at 100k-1M transitions, benchmarks/memory.py)."""
    gc.collect()
    # The process's own symbols include libc's; only glibc has malloc_trim (not macOS, musl).
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)


def _phase(run: RunDir) -> str | None:
    """The phase the run's checkpoint belongs to (the checkpoint is the commit point; the
    phase.json of checkpoints that record no phase, written before they did)."""
    if run.has_checkpoint():
        recorded = checkpoint_phase(run.checkpoint_path)
        if recorded is not None:
            return recorded
    path = run.path / PHASE_FILE
    return json.loads(path.read_text())["phase"] if path.exists() else None


def _set_phase(run: RunDir, phase: str, step: int) -> None:
    atomic_write_bytes(run.path / PHASE_FILE, json.dumps({"phase": phase, "step": step}).encode())
