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
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from o2o.core import buffers as buf
from o2o.core.engine import compile_fused, seed_keys
from o2o.envs.evaluation import EnvGrid, evaluate
from o2o.errors import ConfigError, check, check_non_negative, check_positive
from o2o.experiment.checkpoint import atomic_write_bytes, load_checkpoint, save_checkpoint
from o2o.experiment.online import OnlineConfig, OnlineData, OnlineTrainer, Preprocess, _eval_seed
from o2o.experiment.progress import RunProgress
from o2o.experiment.runs import FINETUNE, METRICS, RunDir, plain_config
from o2o.finetune.base import FinetuneMethod, Vanilla

DataPolicy = Literal["union", "mixed", "online"]
RewardConvention = Literal["auto", "none", "iql_locomotion", "antmaze_minus_one", "antmaze_cql"]

OFFLINE_CHECKPOINT = "offline.msgpack"
PREPARED_CHECKPOINT = "finetune_start.msgpack"  # offline states + the method's extras
PHASE_FILE = "phase.json"


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
            self.reward_convention
            in ("auto", "none", "iql_locomotion", "antmaze_minus_one", "antmaze_cql"),
            f"unknown reward_convention {self.reward_convention!r}",
        )
        check(
            self.offline_eval_every % self.offline_chunk == 0
            or self.offline_eval_every < self.offline_chunk,
            f"offline_eval_every ({self.offline_eval_every}) must be a multiple of offline_chunk ({self.offline_chunk})",
        )


# CORL's online data policy and reward convention per algorithm.
DEFAULT_DATA_POLICY: dict[str, DataPolicy] = {"calql": "mixed"}
MAZE_REWARD: dict[str, RewardConvention] = {
    "cql": "antmaze_cql",
    "calql": "antmaze_cql",
    "iql": "antmaze_minus_one",
    "awac": "antmaze_minus_one",
    "td3bc": "antmaze_minus_one",
    "spot": "antmaze_minus_one",
}


# Agent config fields that are schedules over the run's budget (IQL's cosine actor lr over the
# offline steps, SPOT's λ cooling over the online updates).
BUDGET_FIELDS = {"offline_steps": "offline", "lambd_cool_steps": "online"}


def fit_to_budget(
    agent_config: Any, offline_steps: int, online_updates: int, keep: tuple[str, ...] = ()
) -> Any:
    """``agent_config`` with its budget-dependent schedules set to this run's budget (fields
    named in ``keep`` were set by the user and stay)."""
    changes = {}
    for name, phase in BUDGET_FIELDS.items():
        if hasattr(agent_config, name) and name not in keep:
            changes[name] = max(1, offline_steps if phase == "offline" else online_updates)
    return replace(agent_config, **changes) if changes else agent_config


def is_sparse_maze(dataset: Any) -> bool:
    env_id = str(dataset.env_id or "").lower()
    name = str(dataset.name).lower()
    return "maze" in env_id or "maze" in name


def preprocess_for(algo: str, dataset: Any, config: PipelineConfig) -> tuple[Preprocess, str]:
    """State statistics and reward transform (r' = scale·r + shift) and a description."""
    convention = config.reward_convention
    if convention == "auto":
        if is_sparse_maze(dataset):
            convention = MAZE_REWARD.get(algo, "none")
        else:
            convention = "iql_locomotion" if algo == "iql" else "none"
    scale, shift = 1.0, 0.0
    if convention == "iql_locomotion":
        returns = dataset.episode_returns(include_incomplete=True)
        spread = float(returns.max() - returns.min()) if returns.size > 1 else 0.0
        scale = 1000.0 / spread if spread > 0 else 1.0
    elif convention == "antmaze_minus_one":
        shift = -1.0
    elif convention == "antmaze_cql":
        scale, shift = 10.0, -5.0
    mean = std = None
    if config.normalize_states:
        mean = dataset.observations.mean(axis=0).astype(np.float32)
        std = (dataset.observations.std(axis=0) + 1e-3).astype(np.float32)
    return Preprocess(mean, std, scale, shift), convention


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
        agent: Any,
        config: PipelineConfig,
        dataset: Any = None,
        agent_config: Any = None,
        method: FinetuneMethod | None = None,
    ):
        """``agent`` must have been created with ``method.hooks(algo)`` when a method is on."""
        from o2o import data as datasets

        self.algo, self.agent, self.config = algo, agent, config
        self.agent_config = agent_config
        self.method = method or Vanilla()
        self.dataset = dataset if dataset is not None else datasets.load(config.dataset)
        self.env_id = datasets.env_id_for(self.dataset)
        self.dataset_size = int(self.dataset.size)  # kept: SAMG drops the dataset itself
        self.score = datasets.score_reference(self.dataset)
        self.preprocess, self.reward_convention = preprocess_for(algo, self.dataset, config)
        self.policy = (
            config.data_policy
            or self.method.data_policy()
            or DEFAULT_DATA_POLICY.get(algo, "union")
        )
        sparse = (
            -1.0
            if self.reward_convention == "antmaze_minus_one"
            else (-5.0 if self.reward_convention == "antmaze_cql" else None)
        )
        transitions = self.dataset.to_transition(discount=config.discount_for_mc_returns)
        # Rewards and MC returns in the agent's convention; states normalised.
        rewards = self.preprocess.rewards(transitions.rewards)
        mc = self.dataset.replace(rewards=rewards).mc_returns(
            config.discount_for_mc_returns, sparse
        )
        self.offline = transitions._replace(
            observations=self.preprocess.observations(transitions.observations),
            next_observations=self.preprocess.observations(transitions.next_observations),
            rewards=rewards,
            mc_returns=mc,
        )
        self.obs_dim, self.act_dim = self.dataset.obs_dim, self.dataset.act_dim

    def describe(self) -> dict[str, Any]:
        return {
            "env_id": self.env_id,
            "finetune": self.method.name,
            "data_policy": self.policy,
            "reward_convention": self.reward_convention,
            "score_reference": self.score.describe(),
            "score_provenance": self.score.provenance,
            "dataset_transitions": self.dataset_size,
        }

    # --- offline -----------------------------------------------------------------------------
    def run_offline(
        self, run: RunDir | None, resume: bool, progress: bool, on_eval: Any = None
    ) -> Any:
        c = self.config
        roots = seed_keys(c.seed, c.seeds)
        split = jax.vmap(jax.random.split)(roots)
        init_keys, train_keys = split[:, 0], split[:, 1]
        states = jax.vmap(lambda k: self.agent.init(k, self.obs_dim, self.act_dim))(init_keys)
        carry = {"states": states, "keys": train_keys, "step": np.int64(0)}
        if run is not None and (run.path / OFFLINE_CHECKPOINT).exists():
            return jax.tree.map(
                jnp.asarray,
                load_checkpoint(run.path / OFFLINE_CHECKPOINT, {"states": states})["states"],
            )
        if resume and run is not None and _phase(run) == "offline" and run.has_checkpoint():
            carry = jax.tree.map(jnp.asarray, load_checkpoint(run.checkpoint_path, carry))
            run.truncate_after(int(carry["step"]))
        step = int(carry["step"])
        states, keys = carry["states"], carry["keys"]
        if c.offline_steps == 0:
            return states
        data = {"replay": _stack(buf.buffer_from_transitions(self.offline), c.seeds)}
        chunk = min(c.offline_chunk, c.offline_steps)
        if step == 0 and hasattr(self.agent, "pretrain_update"):
            states, keys = self._pretrain(states, data, keys, progress)
        fused = compile_fused(self.agent.update, buf.Sampler(c.batch_size), chunk)
        grid = EnvGrid(self.env_id, c.seeds, c.eval_episodes)
        greedy = jax.jit(jax.vmap(lambda s, o: self.agent.act(s, o, jax.random.PRNGKey(0), True)))
        start = time.perf_counter()
        metrics: dict[str, Any] = {}
        bar = RunProgress(c.offline_steps, f"offline {self.algo}", enabled=progress)
        bar.advance_to(step)
        with bar:
            while step < c.offline_steps:
                states, keys, metrics = fused(states, data, keys)
                step += chunk
                bar.advance_to(step, updates=step - int(carry["step"]))
                if step % c.offline_eval_every == 0 or step >= c.offline_steps:
                    result = evaluate(
                        grid,
                        lambda obs, states=states: greedy(
                            states, jnp.asarray(self.preprocess.observations(obs))
                        ),
                        seed=[_eval_seed(c.seed + s) for s in range(c.seeds)],
                    )
                    row = self._row(
                        "offline",
                        step,
                        time.perf_counter() - start,
                        result.mean_return,
                        result.success_rate,
                        metrics,
                    )
                    bar.report(row)
                    if run is not None:
                        run.append(METRICS, row)
                        save_checkpoint(
                            run.checkpoint_path,
                            {"states": states, "keys": keys, "step": np.int64(step)},
                        )
                        _set_phase(run, "offline", step)
                    if on_eval is not None:
                        on_eval(row)
        grid.close()
        if run is not None:
            save_checkpoint(run.path / OFFLINE_CHECKPOINT, {"states": states})
        return states

    def _pretrain(self, states: Any, data: dict, keys: Any, progress: bool) -> tuple[Any, Any]:
        """Agents with a model fitted before the actor-critic (SPOT's behaviour VAE) train it
        here, through the same fused engine. A crash before the first offline checkpoint
        repeats it (deterministically)."""
        total = int(self.agent.pretrain_steps)
        chunk = min(self.config.offline_chunk, total)
        fused = compile_fused(
            self.agent.pretrain_update, buf.Sampler(self.config.batch_size), chunk
        )
        done = 0
        with RunProgress(total, f"pretrain {self.algo}", enabled=progress) as bar:
            while done < total:
                states, keys, _ = fused(states, data, keys)
                done += chunk
                bar.advance_to(done, updates=done)
        return states, keys

    # --- online ------------------------------------------------------------------------------
    def online_data(self, capacity: int) -> OnlineData:
        c = self.config
        s = c.seeds
        if self.policy == "union":
            buffers = {
                "replay": _stack(
                    buf.buffer_from_transitions(self.offline, self.dataset.size + capacity), s
                )
            }
            return OnlineData(buffers, "replay", buf.Sampler(c.batch_size))
        online = _stack(buf.create_buffer(capacity, self.obs_dim, self.act_dim), s)
        if self.policy == "mixed":
            offline = _stack(buf.buffer_from_transitions(self.offline), s)
            sampler = buf.Sampler.from_fractions(
                c.batch_size, offline=c.offline_fraction, online=1.0 - c.offline_fraction
            )
            return OnlineData({"offline": offline, "online": online}, "online", sampler)
        return OnlineData(
            {"online": online}, "online", buf.Sampler.from_fractions(c.batch_size, online=1.0)
        )

    def online_config(self) -> OnlineConfig:
        c = self.config
        overrides = self.method.online_overrides()
        config = OnlineConfig(
            env=self.env_id,
            steps=c.online_steps,
            random_steps=0,
            update_after=0,
            update_every=c.update_every,
            utd=c.utd,
            batch_size=c.batch_size,
            buffer_capacity=c.online_buffer_capacity,
            eval_every=min(c.online_eval_every, max(c.online_steps, c.update_every)),
            eval_episodes=c.eval_episodes,
            seed=c.seed,
            seeds=c.seeds,
        )
        return replace(config, **overrides)

    def prepare_finetuning(self, offline_states: Any, run: RunDir | None, progress: bool) -> Any:
        """The method's step between the phases, cached in the run directory (``prepared``)."""
        if type(self.method) is Vanilla:
            return offline_states
        template = None
        path = run.path / PREPARED_CHECKPOINT if run is not None else None
        prepared = (
            self.method.prepare(
                self.agent,
                offline_states,
                self.offline,
                self.preprocess,
                self.config.seed,
                progress,
            )
            if path is None or not path.exists()
            else None
        )
        if prepared is not None:
            if run is not None:
                for row in prepared.diagnostics:
                    run.append(FINETUNE, {**row, "step": self.config.offline_steps})
                save_checkpoint(path, {"states": prepared.states})
            return prepared.states
        # Resuming: rebuild the structure (cheaply, with zero C-VAE steps) and load the saved states.
        template = self.method.prepare_template(
            self.agent, offline_states, self.offline, self.preprocess, self.config.seed
        )
        return jax.tree.map(jnp.asarray, load_checkpoint(path, {"states": template})["states"])

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
        if offline_states is None:
            offline_states = self.run_offline(run, resume, progress, on_eval)
        elif run is not None and not (run.path / OFFLINE_CHECKPOINT).exists():
            save_checkpoint(run.path / OFFLINE_CHECKPOINT, {"states": offline_states})
        states = offline_states
        section_seconds: dict[str, float] = {}
        if c.online_steps > 0:
            start_states = self.prepare_finetuning(offline_states, run, progress)
            online = self.online_config()
            capacity = online.buffer_capacity or c.online_steps
            data = self.online_data(capacity)
            # The online data holds what fine-tuning samples (under union/mixed, its own copy
            # of the offline transitions); under the online-only policy nothing of the offline
            # data stays in memory once fine-tuning starts.
            self.offline = None
            self.dataset = None
            release_freed_memory()
            if on_online_start is not None:
                on_online_start()
            online_agent = self.agent.for_online()
            method = self.method

            def on_chunk(step: int, states: Any, buffers: dict) -> tuple[Any, list[dict]]:
                return method.on_chunk(online_agent, step, states, buffers, c.seed)

            trainer = OnlineTrainer(
                online_agent,
                online,
                score_fn=self.score.normalize,
                preprocess=self.preprocess,
                data=data,
                initial_states=start_states,
                step_offset=c.offline_steps,
                on_chunk=None if type(method) is Vanilla else on_chunk,
            )
            del data  # the trainer owns the buffers now (a union buffer is the largest array)
            try:
                resume_online = resume and run is not None and _phase(run) == "online"
                if run is not None:
                    _set_phase(run, "online", c.offline_steps)
                    if not resume_online and run.has_checkpoint():
                        run.checkpoint_path.unlink()  # the offline phase's; the online one replaces it
                online_result = trainer.run(
                    run, resume=resume_online, progress=progress, on_eval=on_eval
                )
                states, section_seconds = online_result.states, online_result.section_seconds
            finally:
                trainer.close()
        rows = run.rows(METRICS) if run is not None else []
        return PipelineResult(offline_states, states, rows, section_seconds)

    def _row(
        self,
        phase: str,
        step: int,
        wall: float,
        returns: np.ndarray,
        success: np.ndarray | None,
        metrics: dict,
    ) -> dict:
        scores = self.score.normalize(returns)
        row: dict[str, Any] = {
            "phase": phase,
            "step": int(step),
            "wall_time": round(wall, 3),
            "return": float(np.mean(returns)),
            "return_std": float(np.std(returns)),
            "seed_returns": [float(x) for x in returns],
            "normalized_score": float(np.mean(scores)),
            "seed_normalized_scores": [float(x) for x in np.atleast_1d(scores)],
        }
        if success is not None:
            row["success_rate"] = float(np.mean(success))
        for name, value in metrics.items():
            row[f"train/{name}"] = float(np.nanmean(np.asarray(value)))
        return row


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
    path = run.path / PHASE_FILE
    return json.loads(path.read_text())["phase"] if path.exists() else None


def _set_phase(run: RunDir, phase: str, step: int) -> None:
    atomic_write_bytes(run.path / PHASE_FILE, json.dumps({"phase": phase, "step": step}).encode())


def pipeline_config_dict(algo: str, agent_config: Any, config: PipelineConfig) -> dict[str, Any]:
    return {
        "algo": algo,
        "agent": plain_config(asdict(agent_config)),
        "pipeline": plain_config(asdict(config)),
    }


def with_overrides(config: PipelineConfig, **changes: Any) -> PipelineConfig:
    try:
        return replace(config, **changes)
    except TypeError as error:
        raise ConfigError(str(error)) from None
