"""Calibrated Q-Learning, Cal-QL (Nakamoto et al. 2023), following CORL's ``finetune/cal_ql.py``.

Cal-QL is CQL (cql.py) with one change in the conservative term: the Q-values of the policy's
actions (the ã drawn from π(·|s) and π(·|s')) are clipped *below* at the Monte-Carlo return of
the dataset transition, ``batch.mc_returns``, before the logsumexp:

    Q(s, ã) ← max(Q(s, ã), G(s, a)),   G = discounted return-to-go of the data's trajectory,

so CQL never pushes a policy action's value under what the behaviour policy achieved and the
learned Q stays calibrated (values on the scale of real returns), which is what prevents the
initial dip at the start of fine-tuning. Uniform-random actions are not clipped.

Switches (``calibrated``, ``online_calibrated``): CORL calibrates in the offline phase and turns
calibration off at the boundary (its online transitions carry MC return 0), so
``for_online()`` sets ``calibrated = online_calibrated`` (default False) besides CQL's online α.
Computing MC returns (rewards in the agent's convention, sparse-reward episodes) and mixing
offline and online data 50/50 online are the pipeline's job.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import jax

from o2o.agents.cql import CQL, CQLConfig
from o2o.core.hooks import NO_HOOKS, Hooks
from o2o.core.types import Transition


@dataclass(frozen=True)
class CalQLConfig(CQLConfig):
    calibrated: bool = True  # clip policy-action Q-values below at batch.mc_returns
    online_calibrated: bool = False  # CORL switches calibration off online

    online_data_policy = "mixed"  # CORL's Cal-QL samples offline and online data 50/50

    def online_overrides(self) -> dict[str, Any]:
        return {**super().online_overrides(), "calibrated": self.online_calibrated}

    def create(self, hooks: Hooks = NO_HOOKS) -> CalQL:
        return CalQL(self, hooks)


@dataclass(frozen=True)
class CalQL(CQL):
    """CQL with the Monte-Carlo lower bound; state, update and act are CQL's."""

    config: CalQLConfig = field(default_factory=CalQLConfig)

    def lower_bound(self, batch: Transition) -> jax.Array | None:
        return batch.mc_returns if self.config.calibrated else None
