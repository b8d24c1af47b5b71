"""Plain-numpy forward passes of o2o's networks, for checking losses by hand."""

import numpy as np


def mlp_forward(mlp_params: dict, x: np.ndarray) -> np.ndarray:
    """ReLU MLP over Dense_0..Dense_n (no layer norm); the last layer is linear."""
    x = np.asarray(x, np.float64)
    names = sorted(mlp_params, key=lambda n: int(n.split("_")[1]))
    for i, name in enumerate(names):
        x = x @ np.asarray(mlp_params[name]["kernel"], np.float64) + np.asarray(mlp_params[name]["bias"], np.float64)
        if i < len(names) - 1:
            x = np.maximum(x, 0.0)
    return x


def critic_member(ensemble_params: dict, i: int) -> dict:
    inner = ensemble_params["VmapStateActionValue_0"]["MLP_0"]
    return {name: {k: np.asarray(v)[i] for k, v in layer.items()} for name, layer in inner.items()}


def q_values(ensemble_params: dict, obs: np.ndarray, act: np.ndarray) -> np.ndarray:
    """(members, batch) Q-values computed in float64 numpy."""
    n = np.asarray(ensemble_params["VmapStateActionValue_0"]["MLP_0"]["Dense_0"]["bias"]).shape[0]
    x = np.concatenate([obs, act], axis=-1)
    return np.stack([mlp_forward(critic_member(ensemble_params, i), x)[..., 0] for i in range(n)])


def tiny_batch(rng: np.random.Generator, n: int, obs_dim: int, act_dim: int):
    from o2o.core.types import Transition

    return Transition(
        observations=rng.normal(size=(n, obs_dim)).astype(np.float32),
        actions=rng.uniform(-1, 1, (n, act_dim)).astype(np.float32),
        rewards=rng.normal(size=n).astype(np.float32),
        next_observations=rng.normal(size=(n, obs_dim)).astype(np.float32),
        terminals=np.array([0, 1, 0, 0][:n] + [0] * max(0, n - 4), np.float32),
        mc_returns=np.zeros(n, np.float32),
    )
