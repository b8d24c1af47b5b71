"""What a fine-tuning method provides to the pipeline (DESIGN.md, "How fine-tuning methods
plug in"). ``Vanilla`` is the base algorithm's own fine-tuning."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from o2o.core.hooks import NO_HOOKS, Hooks


@dataclass(frozen=True)
class Prepared:
    """The online start: agent states (seed axis) with the method's ``extras`` filled in."""

    states: Any
    diagnostics: list[dict]


class FinetuneMethod:
    """Identity method (vanilla fine-tuning). Subclasses override what they change."""

    name = "vanilla"

    def hooks(self, algo: str) -> Hooks:
        """Hooks the agent is created with; they must be no-ops while ``extras`` is None
        (the offline phase)."""
        return NO_HOOKS

    def data_policy(self) -> str | None:
        """Online data policy override (None: the algorithm's default)."""
        return None

    def online_overrides(self) -> dict[str, Any]:
        """OnlineConfig fields the method fixes (buffer capacity, warm-up transitions)."""
        return {}

    def prepare(
        self, agent: Any, states: Any, offline: Any, preprocess: Any, seed: int, progress: bool
    ) -> Prepared:
        """Between the phases: e.g. fit a C-VAE on the offline transitions ``offline``
        (a host ``Transition`` in the agent's preprocessed convention)."""
        return Prepared(states, [])

    def on_chunk(
        self, agent: Any, step: int, states: Any, buffers: dict, seed: int
    ) -> tuple[Any, list[dict]]:
        """Called after every fused online update call at env step ``step``; returns new
        states and diagnostic rows. Must be deterministic in its inputs (resume)."""
        return states, []


class Vanilla(FinetuneMethod):
    pass


def to_numpy_tree(tree: Any) -> Any:
    import jax

    return jax.tree.map(np.asarray, tree)
