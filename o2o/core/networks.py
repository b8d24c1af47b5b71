"""Networks shared by every agent: MLPs, vmapped critic ensembles, policies."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Activation = Callable[[jnp.ndarray], jnp.ndarray]

# A log-prob correction that keeps tanh's Jacobian finite when the pre-squash sample is large.
_LOG2 = jnp.log(2.0)


def default_init(scale: float = 2.0**0.5) -> nn.initializers.Initializer:
    return nn.initializers.orthogonal(scale)


class MLP(nn.Module):
    hidden_dims: Sequence[int]
    output_dim: int | None = None
    activation: Activation = nn.relu
    layer_norm: bool = False
    final_scale: float = 1.0

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        for width in self.hidden_dims:
            x = nn.Dense(width, kernel_init=default_init())(x)
            if self.layer_norm:
                x = nn.LayerNorm()(x)
            x = self.activation(x)
        if self.output_dim is not None:
            x = nn.Dense(self.output_dim, kernel_init=default_init(self.final_scale))(x)
        return x


class StateActionValue(nn.Module):
    """Q(s, a) -> scalar."""

    hidden_dims: Sequence[int]
    layer_norm: bool = False

    @nn.compact
    def __call__(self, observations: jnp.ndarray, actions: jnp.ndarray) -> jnp.ndarray:
        x = jnp.concatenate([observations, actions], axis=-1)
        return MLP(self.hidden_dims, 1, layer_norm=self.layer_norm)(x)[..., 0]


class StateValue(nn.Module):
    """V(s) -> scalar."""

    hidden_dims: Sequence[int]
    layer_norm: bool = False
    activation: Activation = nn.relu

    @nn.compact
    def __call__(self, observations: jnp.ndarray) -> jnp.ndarray:
        mlp = MLP(self.hidden_dims, 1, self.activation, layer_norm=self.layer_norm)
        return mlp(observations)[..., 0]


class Ensemble(nn.Module):
    """``num`` independent copies of a module as one vmapped module: outputs have a leading
    ensemble axis, parameters a leading axis of size ``num``."""

    net: type[nn.Module]
    num: int = 2
    net_kwargs: dict | None = None

    @nn.compact
    def __call__(self, *args: jnp.ndarray) -> jnp.ndarray:
        vmapped = nn.vmap(
            self.net,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=None,
            out_axes=0,
            axis_size=self.num,
        )
        return vmapped(**(self.net_kwargs or {}))(*args)


def critic_ensemble(hidden_dims: Sequence[int], num: int = 2, layer_norm: bool = False) -> Ensemble:
    return Ensemble(
        StateActionValue, num, {"hidden_dims": tuple(hidden_dims), "layer_norm": layer_norm}
    )


class TanhGaussian:
    """A Gaussian squashed by tanh, with sampling and exact log-densities (SAC's policy)."""

    def __init__(self, mean: jnp.ndarray, log_std: jnp.ndarray):
        self.mean = mean
        self.log_std = log_std

    def sample_and_log_prob(self, key: jax.Array) -> tuple[jnp.ndarray, jnp.ndarray]:
        pre_tanh = self.mean + jnp.exp(self.log_std) * jax.random.normal(key, self.mean.shape)
        return jnp.tanh(pre_tanh), self._log_prob_pre_tanh(pre_tanh)

    def log_prob(self, actions: jnp.ndarray, eps: float = 1e-6) -> jnp.ndarray:
        clipped = jnp.clip(actions, -1.0 + eps, 1.0 - eps)
        return self._log_prob_pre_tanh(jnp.arctanh(clipped))

    def mode(self) -> jnp.ndarray:
        return jnp.tanh(self.mean)

    def _log_prob_pre_tanh(self, pre_tanh: jnp.ndarray) -> jnp.ndarray:
        std = jnp.exp(self.log_std)
        gaussian = -0.5 * (
            ((pre_tanh - self.mean) / std) ** 2 + 2 * self.log_std + jnp.log(2 * jnp.pi)
        )
        # log|d tanh(u)/du| = 2 (log 2 - u - softplus(-2u)), numerically stable for large |u|.
        log_det = 2.0 * (_LOG2 - pre_tanh - jax.nn.softplus(-2.0 * pre_tanh))
        return jnp.sum(gaussian - log_det, axis=-1)


class TanhGaussianPolicy(nn.Module):
    """pi(a|s): state-dependent mean and log-std, tanh-squashed (SAC, CQL, Cal-QL)."""

    hidden_dims: Sequence[int]
    action_dim: int
    log_std_min: float = -20.0
    log_std_max: float = 2.0

    @nn.compact
    def __call__(self, observations: jnp.ndarray) -> TanhGaussian:
        h = MLP(self.hidden_dims)(observations)
        mean = nn.Dense(self.action_dim, kernel_init=default_init(1e-2))(h)
        log_std = nn.Dense(self.action_dim, kernel_init=default_init(1e-2))(h)
        return TanhGaussian(mean, jnp.clip(log_std, self.log_std_min, self.log_std_max))


class CQLPolicy(nn.Module):
    """CORL's CQL actor: an MLP with 2|A| outputs (mean, raw log-std), every layer orthogonally
    initialised with gain √2, and two learned scalars: log-std = m·raw + o, clipped to [−20, 2]."""

    hidden_dims: tuple[int, ...]
    action_dim: int
    log_std_multiplier: float = 1.0
    log_std_offset: float = -1.0

    @nn.compact
    def __call__(self, observations: jax.Array) -> TanhGaussian:
        out = MLP(self.hidden_dims, 2 * self.action_dim, final_scale=2.0**0.5)(observations)
        mean, raw_log_std = jnp.split(out, 2, axis=-1)
        multiplier = self.param(
            "log_std_multiplier", nn.initializers.constant(self.log_std_multiplier), ()
        )
        offset = self.param("log_std_offset", nn.initializers.constant(self.log_std_offset), ())
        return TanhGaussian(mean, jnp.clip(multiplier * raw_log_std + offset, -20.0, 2.0))


class DeterministicPolicy(nn.Module):
    """a = max_action * tanh(f(s)) (TD3, TD3+BC)."""

    hidden_dims: Sequence[int]
    action_dim: int

    @nn.compact
    def __call__(self, observations: jnp.ndarray) -> jnp.ndarray:
        return jnp.tanh(MLP(self.hidden_dims, self.action_dim)(observations))


class Temperature(nn.Module):
    """A learnable positive scalar stored as its log (SAC's alpha, Lagrange multipliers)."""

    initial_value: float = 1.0

    @nn.compact
    def __call__(self) -> jnp.ndarray:
        log_value = self.param(
            "log_value", lambda _: jnp.log(jnp.asarray(self.initial_value, jnp.float32))
        )
        return jnp.exp(log_value)


class Gaussian:
    """A diagonal Gaussian with no squashing (CORL's IQL and AWAC policies): log-densities of
    dataset actions are exact, so AWR-style losses need no arctanh of actions at the bounds."""

    def __init__(self, mean: jnp.ndarray, log_std: jnp.ndarray):
        self.mean = mean
        self.log_std = log_std

    def sample(self, key: jax.Array) -> jnp.ndarray:
        """A reparameterised sample: gradients flow to the mean and log-std."""
        return self.mean + jnp.exp(self.log_std) * jax.random.normal(key, self.mean.shape)

    def log_prob(self, actions: jnp.ndarray) -> jnp.ndarray:
        z = (actions - self.mean) / jnp.exp(self.log_std)
        return jnp.sum(-0.5 * z**2 - self.log_std - 0.5 * jnp.log(2 * jnp.pi), axis=-1)

    def sample_and_log_prob(self, key: jax.Array) -> tuple[jnp.ndarray, jnp.ndarray]:
        actions = self.sample(key)
        return actions, self.log_prob(actions)

    def mode(self) -> jnp.ndarray:
        return self.mean

    def entropy(self) -> jnp.ndarray:
        return jnp.sum(self.log_std + 0.5 * jnp.log(2 * jnp.pi * jnp.e), axis=-1)


class GaussianPolicy(nn.Module):
    """pi(a|s) = N(mu(s), diag(sigma^2)) with a state-independent, learned log-std (initialised at
    0 and clipped), as CORL's IQL ``GaussianPolicy`` (``tanh_mean=True``: mu = tanh(f(s))) and
    CORL's AWAC ``Actor`` (``tanh_mean=False``). Samples are not squashed; agents clip them.
    ``activation`` and ``final_scale`` (the last layer's orthogonal gain) change no parameter
    shape, so PPO's tanh actor with CleanRL's 0.01 gain loads an IQL actor's parameters."""

    hidden_dims: Sequence[int]
    action_dim: int
    tanh_mean: bool = True
    log_std_min: float = -20.0
    log_std_max: float = 2.0
    activation: Activation = nn.relu
    final_scale: float = 1.0

    @nn.compact
    def __call__(self, observations: jnp.ndarray) -> Gaussian:
        mlp = MLP(self.hidden_dims, self.action_dim, self.activation, final_scale=self.final_scale)
        mean = mlp(observations)
        if self.tanh_mean:
            mean = jnp.tanh(mean)
        log_std = self.param("log_std", nn.initializers.zeros, (self.action_dim,))
        log_std = jnp.clip(log_std, self.log_std_min, self.log_std_max)
        return Gaussian(mean, jnp.broadcast_to(log_std, mean.shape))
