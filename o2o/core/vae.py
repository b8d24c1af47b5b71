"""A conditional VAE with separate encoder inputs, decoder conditions and targets.

    encoder  q(z | x)      x: what the posterior sees
    decoder  p(y | z, c)   c: what the decoder is conditioned on, y: what it reconstructs

One module serves both users in o2o:
* SPOT's behaviour density (BCQ's VAE): x = (s, a), c = s, y = a, ``squash_output=True``
  (tanh: actions live in [-1, 1]); 750-750 encoder and decoder, latent 2|A|.
* SAMG's state-action C-VAE: x = (s, a), c = (s, a), y = s', no squashing.

Parameters are called as methods of one module: ``vae(x, method="encode")`` and
``vae(c, z, method="decode")`` on a ``TrainState.create(ConditionalVAE(...), key, (x, c), tx)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from o2o.core.networks import MLP
from o2o.core.train_state import TrainState


class ConditionalVAE(nn.Module):
    output_dim: int
    latent_dim: int
    encoder_hidden_dims: Sequence[int] = (750, 750)
    decoder_hidden_dims: Sequence[int] = (750, 750)
    squash_output: bool = False
    # BCQ/CORL clamp the encoder's log-std to [-4, 15] for numerical stability.
    log_std_min: float = -4.0
    log_std_max: float = 15.0

    def setup(self) -> None:
        self.encoder = MLP(self.encoder_hidden_dims)
        self.mean_head = nn.Dense(self.latent_dim)
        self.log_std_head = nn.Dense(self.latent_dim)
        self.decoder = MLP(self.decoder_hidden_dims, self.output_dim)

    def encode(self, encoder_inputs: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Mean and standard deviation of q(z | x)."""
        h = self.encoder(encoder_inputs)
        log_std = jnp.clip(self.log_std_head(h), self.log_std_min, self.log_std_max)
        return self.mean_head(h), jnp.exp(log_std)

    def decode(self, conditions: jax.Array, latents: jax.Array) -> jax.Array:
        """The mean of p(y | z, c); the decoder sees concat(c, z) as BCQ's does."""
        out = self.decoder(jnp.concatenate([conditions, latents], axis=-1))
        return jnp.tanh(out) if self.squash_output else out

    def __call__(self, encoder_inputs: jax.Array, conditions: jax.Array) -> jax.Array:
        """Reconstruction from the posterior mean (used for initialisation and previews)."""
        mean, _ = self.encode(encoder_inputs)
        return self.decode(conditions, mean)


def kl_to_standard_normal(mean: jax.Array, std: jax.Array) -> jax.Array:
    """KL(N(mean, std²) ‖ N(0, I)) per sample, averaged (not summed) over latent dimensions, as
    CORL's SPOT does: -0.5 · mean_j(1 + log std_j² - mean_j² - std_j²)."""
    return -0.5 * jnp.mean(1.0 + 2.0 * jnp.log(std) - mean**2 - std**2, axis=-1)


def elbo_terms(
    vae: TrainState,
    encoder_inputs: jax.Array,
    conditions: jax.Array,
    targets: jax.Array,
    key: jax.Array,
    num_samples: int = 1,
    params=None,
) -> tuple[jax.Array, jax.Array]:
    """Per-sample reconstruction error and KL, with ``num_samples`` reparameterised latents per
    input: the error is the mean over samples and output dimensions of (y_hat - y)², the KL is
    ``kl_to_standard_normal``. Gradients flow to the inputs, so an actor can be penalised
    through a frozen VAE."""
    mean, std = vae(encoder_inputs, params=params, method="encode")
    noise = jax.random.normal(key, (num_samples, *mean.shape), mean.dtype)
    latents = mean[None] + std[None] * noise
    conditions = jnp.broadcast_to(conditions[None], (num_samples, *conditions.shape))
    recon = vae(conditions, latents, params=params, method="decode")
    recon_error = jnp.mean((recon - targets[None]) ** 2, axis=(0, -1))
    return recon_error, kl_to_standard_normal(mean, std)


def _normal_log_density(x: jax.Array, mean: jax.Array, std: jax.Array) -> jax.Array:
    return jnp.sum(
        -0.5 * ((x - mean) / std) ** 2 - jnp.log(std) - 0.5 * jnp.log(2 * jnp.pi), axis=-1
    )


def iwae_log_likelihood(
    vae: TrainState,
    encoder_inputs: jax.Array,
    conditions: jax.Array,
    targets: jax.Array,
    key: jax.Array,
    decoder_std: float,
    num_samples: int,
    params=None,
) -> jax.Array:
    """Importance-weighted estimate of log p(y | c) per sample (SPOT's ``iwae`` option):
    logsumexp_l [log p(y|z_l,c) + log p(z_l) - log q(z_l|x)] - log L, with z_l ~ q(z|x) and a
    Gaussian decoder of fixed std (SPOT: sqrt(beta / 4))."""
    mean, std = vae(encoder_inputs, params=params, method="encode")
    latents = mean[None] + std[None] * jax.random.normal(
        key, (num_samples, *mean.shape), mean.dtype
    )
    conditions = jnp.broadcast_to(conditions[None], (num_samples, *conditions.shape))
    recon = vae(conditions, latents, params=params, method="decode")
    log_weights = (
        _normal_log_density(targets[None], recon, jnp.full_like(recon, decoder_std))
        + _normal_log_density(latents, jnp.zeros_like(latents), jnp.ones_like(latents))
        - _normal_log_density(latents, mean[None], std[None])
    )
    return jax.nn.logsumexp(log_weights, axis=0) - jnp.log(num_samples)
