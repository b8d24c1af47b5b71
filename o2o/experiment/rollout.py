"""Online training of an on-policy agent (PPO, O2PPO): rollouts instead of a replay buffer.

Each chunk collects a rollout of ``rollout_spec.length`` env steps per seed (one batched
``act_with_info`` call per step across seeds; actions clipped to [-1, 1] for the env only),
moves it to the device once, and runs one jitted call that does GAE and every epoch ×
minibatch update (``o2o.core.rollout``): no host synchronisation per gradient step.

Evaluation, metrics rows, checkpoints and resume are the replay loop's (``online.EnvLoop``):
at every evaluation the run checkpoints and restarts its training episodes from seeds
derived from the episode counter, so a resumed run equals an uninterrupted one bit for bit
on CPU. ``eval_every`` must be a multiple of the rollout length, so a checkpoint always falls
between two rollouts and no partial rollout needs saving. The replay-only fields of
``OnlineConfig`` (``random_steps``, ``update_after``, ``update_every``, ``utd``,
``batch_size``, ``buffer_capacity``) are not used.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from o2o.core.engine import seed_keys
from o2o.core.rollout import OnPolicyAgent, Rollout, compile_rollout_update
from o2o.errors import check
from o2o.experiment.divergence import DivergenceGuard
from o2o.experiment.online import (
    EnvLoop,
    EnvStep,
    LoopClock,
    OnlineConfig,
    OnlineData,
    Preprocess,
    _Staging,
)
from o2o.experiment.runs import RunDir


def eval_interval(agent_config: Any, requested: int) -> int:
    """``requested`` env steps between evaluations, rounded up to whole rollouts for an
    on-policy agent (a checkpoint falls between two rollouts); unchanged for the others."""
    spec = getattr(agent_config, "rollout_spec", None)
    if spec is None or requested <= 0:
        return requested
    return -(-requested // spec.length) * spec.length


class RolloutTrainer(EnvLoop):
    """The on-policy loop; constructed and run like ``OnlineTrainer``."""

    def __init__(
        self,
        agent: OnPolicyAgent,
        config: OnlineConfig,
        score_fn: Callable[[np.ndarray], np.ndarray] | None = None,
        preprocess: Preprocess | None = None,
        data: OnlineData | None = None,
        initial_states: Any = None,
        step_offset: int = 0,
        on_chunk: Callable[[int, Any, Rollout], tuple[Any, list[dict]]] | None = None,
        guard: DivergenceGuard | None = None,
    ):
        """As ``OnlineTrainer``; ``data`` must be None (an on-policy agent learns from its own
        rollouts only), and ``on_chunk`` receives the rollout just learned from (device
        arrays, seed axis first) as its data."""
        check(
            getattr(agent, "on_policy", False),
            f"{type(agent).__name__} is not an on-policy agent (on_policy = True)",
        )
        check(
            data is None, "an on-policy agent learns from its own rollouts; it takes no replay data"
        )
        check(
            config.warmup_steps == 0,
            "warmup_steps is a replay-buffer setting; an on-policy agent collects its own rollouts",
        )
        self.spec = agent.rollout_spec
        check(
            config.eval_every % self.spec.length == 0,
            f"eval_every ({config.eval_every}) must be a multiple of the rollout length ({self.spec.length})",
        )
        super().__init__(
            agent, config, score_fn, preprocess, initial_states, step_offset, on_chunk, guard
        )

        def act(states, observations, keys):
            def one(state, obs, key):
                key, act_key = jax.random.split(key)
                actions, log_probs, values = agent.act_with_info(state, obs[None], act_key)
                return actions[0], log_probs[0], values[0], key

            return jax.vmap(one)(states, observations, keys)

        self._act = jax.jit(act)
        self._update = compile_rollout_update(agent, nan_flag=True)

    def updates_at(self, step: int) -> int:
        """Gradient updates made by env step ``step`` (every rollout ends in its updates)."""
        return step // self.spec.length * self.spec.updates_per_rollout

    def initial(self) -> dict[str, Any]:
        c = self.config
        split = jax.vmap(lambda k: jax.random.split(k, 3))(seed_keys(c.seed, c.seeds))
        return {
            "states": self._initial_states(split[:, 0]),
            "act_keys": split[:, 1],
            "update_keys": split[:, 2],
            **self._counters(),
        }

    def _chunk(
        self, carry: dict[str, Any], run: RunDir | None, clock: LoopClock
    ) -> tuple[dict[str, Any], dict, int]:
        step, states, act_keys = carry["step"], carry["states"], carry["act_keys"]
        staged = _RolloutStaging(self.config.seeds, self.spec.length, self.obs_dim, self.act_dim)
        for t in range(self.spec.length):
            observations = jnp.asarray(self.preprocess.observations(self.envs.observations))
            actions, log_probs, values, act_keys = self._act(states, observations, act_keys)
            actions = np.asarray(actions)
            clock.lap("act")
            env_step = self.envs.step(np.clip(actions, -1.0, 1.0), self.step_offset + step + 1, run)
            staged.put(t, actions, env_step, np.asarray(log_probs), np.asarray(values))
            step += 1
            clock.lap("env")
        rollout = staged.as_rollout(self.preprocess)
        clock.lap("buffer")
        states, update_keys, metrics, nan = self._update(states, rollout, carry["update_keys"])
        jax.block_until_ready(states)  # the next action needs them; charges the time here
        self._check(nan, metrics, step, run)
        clock.lap("updates")
        if self.on_chunk is not None:
            states = self._method_events(step, states, rollout, run)
            clock.lap("method")
        carry = {
            **carry,
            "states": states,
            "act_keys": act_keys,
            "update_keys": update_keys,
            "step": step,
        }
        return carry, metrics, self.spec.updates_per_rollout


class _RolloutStaging(_Staging):
    """The replay loop's staging (observations and rewards raw until preprocessed in one go)
    plus what collection adds: truncations, log-probabilities and values."""

    def __init__(self, seeds: int, length: int, obs_dim: int, act_dim: int):
        super().__init__(seeds, length, obs_dim, act_dim)
        self.trunc = np.zeros((seeds, length), np.float32)
        self.log_probs = np.zeros((seeds, length), np.float32)
        self.values = np.zeros((seeds, length), np.float32)

    def put(
        self, t: int, actions: np.ndarray, step: EnvStep, log_probs: np.ndarray, values: np.ndarray
    ) -> None:
        super().put(t, actions, step)
        # A step that both terminates and hits the time limit is a terminal: no bootstrap.
        self.trunc[:, t] = step.truncated & ~step.terminated
        self.log_probs[:, t], self.values[:, t] = log_probs, values

    def as_rollout(self, preprocess: Preprocess) -> Rollout:
        transitions = self.as_transition(preprocess)
        return Rollout(
            observations=transitions.observations,
            actions=transitions.actions,
            rewards=transitions.rewards,
            next_observations=transitions.next_observations,
            terminals=transitions.terminals,
            truncations=jnp.asarray(self.trunc),
            log_probs=jnp.asarray(self.log_probs),
            values=jnp.asarray(self.values),
        )
