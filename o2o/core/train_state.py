"""A network's parameters with its optimizer, as one pytree."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import optax
from flax import struct


@struct.dataclass
class TrainState:
    """Parameters + optimizer state of one module; the module and optimizer are static.

    Calling the state applies the module: ``state(obs)`` or ``state(obs, params=other)``.
    """

    params: Any
    opt_state: Any
    apply_fn: Callable[..., Any] = struct.field(pytree_node=False)
    tx: optax.GradientTransformation = struct.field(pytree_node=False)

    @classmethod
    def create(
        cls,
        module: nn.Module,
        key: jax.Array,
        example_inputs: tuple,
        tx: optax.GradientTransformation,
    ) -> TrainState:
        params = module.init(key, *example_inputs)["params"]
        return cls(params=params, opt_state=tx.init(params), apply_fn=module.apply, tx=tx)

    def __call__(self, *args: Any, params: Any = None, **kwargs: Any) -> Any:
        return self.apply_fn({"params": self.params if params is None else params}, *args, **kwargs)

    def apply_gradients(self, grads: Any) -> TrainState:
        updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
        return self.replace(params=optax.apply_updates(self.params, updates), opt_state=opt_state)

    def minimize(self, loss_fn: Callable[[Any], tuple[jax.Array, dict]]) -> tuple[TrainState, dict]:
        """One optimizer step on ``loss_fn(params) -> (loss, metrics)``."""
        grads, metrics = jax.grad(loss_fn, has_aux=True)(self.params)
        return self.apply_gradients(grads), metrics


def copy_tree(tree: Any) -> Any:
    """A copy with fresh buffers, so a target network never aliases (and is never donated
    together with) the network it tracks."""
    return jax.tree.map(lambda x: x.copy(), tree)


def polyak(target_params: Any, online_params: Any, tau: float) -> Any:
    return jax.tree.map(lambda t, o: (1.0 - tau) * t + tau * o, target_params, online_params)


def adam(
    learning_rate: float | optax.Schedule, grad_clip: float | None = None, eps: float = 1e-8
) -> optax.GradientTransformation:
    if grad_clip is None:
        return optax.adam(learning_rate, eps=eps)
    return optax.chain(optax.clip_by_global_norm(grad_clip), optax.adam(learning_rate, eps=eps))
