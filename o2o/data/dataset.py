"""The one offline-dataset type: column-wise numpy arrays in the D4RL layout plus metadata."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from o2o.core.types import Transition

# Columns every dataset has, in the order D4RL files list them.
COLUMNS = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")


@dataclass(frozen=True, eq=False)
class Dataset:
    """Transitions in the D4RL layout.

    ``terminals`` marks true MDP termination (no bootstrap), ``timeouts`` a time-limit cut
    (bootstrap). An episode ends at either flag; a final segment with neither flag (a replay
    buffer cut mid-episode) is *incomplete*: it is kept for training but left out of episode
    statistics, as in D4RL.

    ``infos`` holds optional per-transition extras (``infos/qpos`` ...), ``metadata`` the
    file's metadata (env id, reference returns and their provenance, generator settings).
    """

    observations: np.ndarray  # (N, obs_dim) float32
    actions: np.ndarray  # (N, act_dim) float32
    rewards: np.ndarray  # (N,) float32
    next_observations: np.ndarray  # (N, obs_dim) float32
    terminals: np.ndarray  # (N,) bool
    timeouts: np.ndarray  # (N,) bool
    infos: Mapping[str, np.ndarray] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, transitions={self.size}, episodes={self.num_episodes}, "
            f"obs_dim={self.obs_dim}, act_dim={self.act_dim}, env_id={self.env_id!r})"
        )

    # --- shape -----------------------------------------------------------------------------
    @property
    def size(self) -> int:
        return int(self.rewards.shape[0])

    def __len__(self) -> int:
        return self.size

    @property
    def obs_dim(self) -> int:
        return int(self.observations.shape[1])

    @property
    def act_dim(self) -> int:
        return int(self.actions.shape[1])

    @property
    def name(self) -> str:
        return str(self.metadata.get("dataset", self.metadata.get("source", "<dataset>")))

    @property
    def env_id(self) -> str | None:
        env_id = self.metadata.get("env_id")
        return None if env_id is None else str(env_id)

    # --- episodes ---------------------------------------------------------------------------
    @cached_property
    def episode_ends(self) -> np.ndarray:
        """Exclusive end row of every episode segment, the last one possibly incomplete."""
        ends = np.flatnonzero(self.terminals | self.timeouts) + 1
        if ends.size == 0 or ends[-1] != self.size:
            ends = np.append(ends, self.size)
        return ends.astype(np.int64)

    @cached_property
    def episode_starts(self) -> np.ndarray:
        return np.concatenate([[0], self.episode_ends[:-1]]).astype(np.int64)

    @cached_property
    def episode_complete(self) -> np.ndarray:
        """True for segments that end in a terminal or a timeout."""
        last_rows = self.episode_ends - 1
        return self.terminals[last_rows] | self.timeouts[last_rows]

    @property
    def num_episodes(self) -> int:
        """Complete episodes only (the count D4RL-style statistics use)."""
        return int(self.episode_complete.sum())

    def episode_lengths(self, include_incomplete: bool = False) -> np.ndarray:
        lengths = self.episode_ends - self.episode_starts
        return lengths if include_incomplete else lengths[self.episode_complete]

    def episode_returns(self, include_incomplete: bool = False) -> np.ndarray:
        """Undiscounted return of every complete episode (float64 sums)."""
        sums = np.add.reduceat(self.rewards.astype(np.float64), self.episode_starts)
        return sums if include_incomplete else sums[self.episode_complete]

    def mc_returns(self, discount: float, sparse_failure_reward: float | None = None) -> np.ndarray:
        """Discounted Monte-Carlo returns-to-go per transition, Cal-QL's convention.

        Within each episode segment G_t = r_t + discount * G_{t+1} * (1 - terminal_t), with
        G = 0 after the segment's last row (a timeout or a cut replay buffer is not
        bootstrapped: the Monte-Carlo return only sees the rewards recorded). With
        ``sparse_failure_reward`` set (sparse tasks, e.g. AntMaze's r - 1), a segment whose
        every reward equals it never succeeded and gets the infinite-horizon value
        r / (1 - discount) at every step, as Cal-QL does.
        """
        if not 0.0 <= discount <= 1.0:
            raise ValueError(f"discount must lie in [0, 1], got {discount}")
        rewards = self.rewards.astype(np.float64)
        continues = 1.0 - self.terminals.astype(np.float64)
        returns = np.zeros(self.size, np.float64)
        for start, end in zip(self.episode_starts, self.episode_ends, strict=True):
            segment = rewards[start:end]
            if sparse_failure_reward is not None and np.all(segment == sparse_failure_reward):
                if discount < 1.0:
                    returns[start:end] = sparse_failure_reward / (1.0 - discount)
                else:
                    returns[start:end] = sparse_failure_reward * segment.size
                continue
            running = 0.0
            for row in range(end - 1, start - 1, -1):
                running = rewards[row] + discount * running * continues[row]
                returns[row] = running
        return returns.astype(np.float32)

    # --- conversion -------------------------------------------------------------------------
    def to_transition(
        self, discount: float | None = None, sparse_failure_reward: float | None = None
    ) -> Transition:
        """Host (numpy, float32) columns for the engine; ``mc_returns`` is zero unless a
        discount is given."""
        mc = (
            np.zeros(self.size, np.float32)
            if discount is None
            else self.mc_returns(discount, sparse_failure_reward)
        )
        return Transition(
            observations=np.asarray(self.observations, np.float32),
            actions=np.asarray(self.actions, np.float32),
            rewards=np.asarray(self.rewards, np.float32),
            next_observations=np.asarray(self.next_observations, np.float32),
            terminals=self.terminals.astype(np.float32),
            mc_returns=mc,
        )

    def replace(self, **changes: Any) -> Dataset:
        """A copy with some fields replaced (e.g. transformed rewards)."""
        return dataclasses.replace(self, **changes)

    def select(self, rows: slice | np.ndarray) -> Dataset:
        """A subset of rows (a slice keeps episode order)."""
        return self.replace(
            **{c: getattr(self, c)[rows] for c in COLUMNS},
            infos={k: v[rows] for k, v in self.infos.items()},
        )

    def statistics(self) -> dict[str, Any]:
        """Summary numbers as in the reference README's tables."""
        returns = self.episode_returns()
        stats: dict[str, Any] = {
            "transitions": self.size,
            "episodes": self.num_episodes,
            "incomplete_episodes": int((~self.episode_complete).sum()),
            "terminals": int(self.terminals.sum()),
            "timeouts": int(self.timeouts.sum()),
            "obs_dim": self.obs_dim,
            "act_dim": self.act_dim,
        }
        if returns.size:
            stats.update(
                return_mean=float(returns.mean()),
                return_std=float(returns.std()),
                return_min=float(returns.min()),
                return_max=float(returns.max()),
            )
        return stats


def concatenate(datasets: Sequence[Dataset], metadata: Mapping[str, Any] | None = None) -> Dataset:
    """Rows of ``datasets`` one after another (D4RL's medium-expert = medium then expert).

    Only infos keys present in all parts are kept. An incomplete trailing episode of a
    non-final part is closed with a timeout so it does not run into the next part.
    """
    if not datasets:
        raise ValueError("concatenate needs at least one dataset")
    timeouts = []
    for i, part in enumerate(datasets):
        part_timeouts = part.timeouts.copy()
        if i < len(datasets) - 1 and part.size and not (part.terminals[-1] or part_timeouts[-1]):
            part_timeouts[-1] = True
        timeouts.append(part_timeouts)
    common_infos = set.intersection(*(set(d.infos) for d in datasets))
    return Dataset(
        observations=np.concatenate([d.observations for d in datasets]),
        actions=np.concatenate([d.actions for d in datasets]),
        rewards=np.concatenate([d.rewards for d in datasets]),
        next_observations=np.concatenate([d.next_observations for d in datasets]),
        terminals=np.concatenate([d.terminals for d in datasets]),
        timeouts=np.concatenate(timeouts),
        infos={k: np.concatenate([d.infos[k] for d in datasets]) for k in sorted(common_infos)},
        metadata=dict(metadata if metadata is not None else datasets[0].metadata),
    )
