"""SAMG: State-Action-Conditional Offline Model Guidance (arXiv 2410.18626).

Fine-tuning drops the offline data and freezes a copy of the offline critic Q_off (V_off for
IQL). The Bellman target mixes it in per sample:

    y = r + γ(1-d) · [(1 - p(s,a)) · Q̄(s',a') + p(s,a) · Q_off(s',a')]

where p(s,a) says how in-distribution (s,a) is for the offline data: a state-action C-VAE
(encoder q(z|s,a), decoder to s' from (z,s,a)) is fitted to the offline data, a normal is
fitted per latent dimension to the encoder means of the offline pairs, and p is the mean
over dimensions of a normal-CDF probability, zeroed below a threshold ε.

What is reconstructed rather than stated by the paper (methods.md §0) is a named option here,
with the default in brackets: ``p_form`` (tail), ``window_delta`` (1.0), KL annealing shape
(linear over ``kl_anneal_fraction`` = 0.2 of C-VAE training), VAE sizes (750-750, latent
max(2|A|, 8)), ``cons_weighting`` (p), the "mastered" rule of the adaptive update (TD error
below the median TD error of the buffer's in-distribution samples), the statistics merge
(stored offline count/mean/var merged with the mastered samples'), ``guidance_steps``
(whole run), ``refresh_offline_critic`` (off), and the TD error used for "mastered" (the
greedy-action one-step error |Q(s,a) - r - γ(1-d)·min Q̄(s', π(s'))|, V(s') for IQL).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.scipy.stats import norm

from o2o.core.engine import stack_seeds, unstack_seeds
from o2o.core.hooks import Hooks, TargetInputs
from o2o.core.networks import MLP
from o2o.core.train_state import TrainState
from o2o.core.types import Transition
from o2o.core.vae import ConditionalVAE, kl_to_standard_normal
from o2o.errors import check
from o2o.finetune.base import FinetuneMethod, Prepared

Weight = Literal["cvae", "embedding", "even", "random"]


@dataclass(frozen=True)
class SAMGConfig:
    weight: Weight = "cvae"  # "even" (p ≡ 0.5) and "random" (p ~ U(0,1)) are the paper's ablations
    p_form: Literal["tail", "window"] = "tail"
    window_delta: float = 1.0  # δ of the window form, in latent units
    threshold: float = 0.5  # ε: p < ε counts as out-of-distribution (p = 0)
    cons_weighting: Literal["p", "none", "plain"] = "p"  # CQL/Cal-QL conservative term online
    # The C-VAE, fitted on the offline data between the phases (raw, unnormalised states).
    cvae_steps: int = 10_000
    cvae_batch_size: int = 256
    cvae_lr: float = 1e-3
    latent_dim: int | None = None  # None: max(2·|A|, 8)
    encoder_hidden_dims: tuple[int, ...] = (750, 750)
    decoder_hidden_dims: tuple[int, ...] = (750, 750)  # the paper's simpler decoder: (750,)
    # [RECON] The paper anneals β_KL to 1 under its own (unpublished) loss scale; with o2o's
    # per-dimension means, 1.0 collapses the posterior on the lite locomotion data (KL → 0),
    # while 0.01 settles near the paper's good regime (KL ≈ 0.03-0.05 on hopper-medium-lite).
    kl_weight: float = 0.01
    kl_anneal_fraction: float = 0.2
    kl_reduction: Literal["mean", "sum"] = "mean"  # over latent dims; "mean" is BCQ's/SPOT's scale
    # The embedding weight model (paper Appendix A.2, after Never Give Up).
    embedding_dim: int = 32
    embedding_hidden_dims: tuple[int, ...] = (256, 256)
    # Online schedule.
    buffer_capacity: int = 50_000
    seed_transitions: int = 1_000  # collected by the offline policy before any update
    adaptive_every: int = 10_000  # env steps between C-VAE updates with mastered samples; 0: off
    adaptive_steps: int = 500
    refresh_offline_critic: bool = False
    guidance_steps: int | None = None  # after this many online steps p ≡ 0 (vanilla); None: never

    def __post_init__(self) -> None:
        check(
            self.weight in ("cvae", "embedding", "even", "random"),
            f"unknown SAMG weight {self.weight!r}",
        )
        check(
            self.p_form in ("tail", "window"),
            f"p_form must be 'tail' or 'window', got {self.p_form!r}",
        )
        check(
            self.cons_weighting in ("p", "none", "plain"),
            f"cons_weighting must be p, none or plain, got {self.cons_weighting!r}",
        )
        check(0.0 <= self.threshold <= 1.0, f"threshold must be in [0, 1], got {self.threshold}")
        check(self.window_delta > 0, f"window_delta must be positive, got {self.window_delta}")
        for name in ("cvae_steps", "cvae_batch_size", "buffer_capacity", "adaptive_steps"):
            check(getattr(self, name) > 0, f"{name} must be positive, got {getattr(self, name)}")
        check(self.cvae_lr > 0, f"cvae_lr must be positive, got {self.cvae_lr}")
        check(
            self.seed_transitions >= 0 and self.adaptive_every >= 0,
            "seed_transitions and adaptive_every must be >= 0",
        )
        check(0.0 <= self.kl_anneal_fraction <= 1.0, "kl_anneal_fraction must be in [0, 1]")
        check(
            self.kl_reduction in ("mean", "sum"),
            f"kl_reduction must be mean or sum, got {self.kl_reduction!r}",
        )
        check(
            self.guidance_steps is None or self.guidance_steps >= 0, "guidance_steps must be >= 0"
        )

    @classmethod
    def ablation(cls, name: str, **overrides: Any) -> SAMGConfig:
        """``samg``, ``samg-even``, ``samg-random``, ``samg-embedding``."""
        weights = {
            "samg": "cvae",
            "samg-even": "even",
            "samg-random": "random",
            "samg-embedding": "embedding",
        }
        check(name in weights, f"unknown SAMG variant {name!r}; choose from {', '.join(weights)}")
        return cls(weight=weights[name], **overrides)


# --- the weight p(s, a) ---------------------------------------------------------------------


def latent_probability(
    z: jax.Array, mean: jax.Array, std: jax.Array, form: str, delta: float
) -> jax.Array:
    """p_int = mean_j p_j with p_j from a normal CDF around the offline statistics (Eq. 3)."""
    if form == "tail":
        per_dim = 2.0 * (1.0 - norm.cdf(jnp.abs(z - mean) / std))
    else:
        per_dim = norm.cdf((z + delta - mean) / std) - norm.cdf((z - delta - mean) / std)
    return jnp.mean(per_dim, axis=-1)


def thresholded(p_int: jax.Array, threshold: float) -> jax.Array:
    return jnp.where(p_int >= threshold, p_int, 0.0)


class SiameseActionPredictor(nn.Module):
    """Embeds s and s' with one network and predicts a from the two embeddings (NGU-style)."""

    hidden_dims: tuple[int, ...]
    embedding_dim: int
    action_dim: int

    def setup(self) -> None:
        self.embed = MLP(self.hidden_dims, self.embedding_dim)
        self.head = MLP(self.hidden_dims, self.action_dim)

    def __call__(self, observations: jax.Array, next_observations: jax.Array) -> jax.Array:
        both = jnp.concatenate([self.embed(observations), self.embed(next_observations)], axis=-1)
        return self.head(nn.relu(both))


def raw_observations(extras: dict, observations: jax.Array) -> jax.Array:
    """Undo the agent's state normalisation: the weight models see raw states."""
    return observations * extras["obs_std"] + extras["obs_mean"]


@dataclass(frozen=True, eq=False)
class SAMGHooks(Hooks):
    config: SAMGConfig
    vae: ConditionalVAE | None = None
    predictor: SiameseActionPredictor | None = None

    def __hash__(self) -> int:
        return hash((type(self), self.config))

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.config == other.config  # type: ignore[attr-defined]

    def statistic(self, extras: dict, batch: Transition) -> jax.Array:
        """The per-sample quantity whose offline distribution was fitted: C-VAE latent means
        (B, d), or the embedding model's action-prediction error (B, 1)."""
        s = raw_observations(extras, batch.observations)
        if self.config.weight == "embedding":
            s_next = raw_observations(extras, batch.next_observations)
            predicted = self.predictor.apply({"params": extras["model_params"]}, s, s_next)
            return jnp.mean((predicted - batch.actions) ** 2, axis=-1, keepdims=True)
        x = jnp.concatenate([s, batch.actions], axis=-1)
        return self.vae.apply({"params": extras["model_params"]}, x, method="encode")[0]

    def raw_weight(self, extras: dict, batch: Transition) -> jax.Array:
        """p(s,a) before the guidance switch."""
        c = self.config
        n = batch.rewards.shape[0]
        if c.weight == "even":
            return jnp.full((n,), 0.5)
        if c.weight == "random":
            # Hooks get no key; a key from the batch's bits keeps the ablation pure and seeded.
            bits = jax.lax.bitcast_convert_type(jnp.sum(batch.observations), jnp.uint32)
            return jax.random.uniform(jax.random.PRNGKey(bits), (n,))
        p_int = latent_probability(
            self.statistic(extras, batch),
            extras["stat_mean"],
            extras["stat_std"],
            c.p_form,
            c.window_delta,
        )
        return thresholded(p_int, c.threshold)

    def weight(self, extras: dict, batch: Transition) -> jax.Array:
        return self.raw_weight(extras, batch) * extras["guidance"]

    def next_value(self, extras: Any, inputs: TargetInputs) -> jax.Array:
        if extras is None:  # offline phase: the base algorithm
            return inputs.next_value
        p = self.weight(extras, inputs.batch)
        offline_value = inputs.value_with(extras["offline_params"])
        return (1.0 - p) * inputs.next_value + p * offline_value

    def conservative_weights(self, extras: Any, batch: Transition) -> jax.Array | None:
        if extras is None or self.config.cons_weighting == "plain":
            return None
        if self.config.cons_weighting == "none":
            return jnp.zeros_like(batch.rewards)
        return self.weight(extras, batch)

    def critic_penalty(
        self, extras: Any, batch: Transition, critic_params: Any
    ) -> tuple[jax.Array, dict]:
        if extras is None:
            return 0.0, {}
        p = self.weight(extras, batch)
        return 0.0, {"samg/p_mean": p.mean(), "samg/p_positive": jnp.mean(p > 0)}


# --- fitting the weight models --------------------------------------------------------------


def _kl_beta(config: SAMGConfig, step: jax.Array) -> jax.Array:
    warmup = config.kl_anneal_fraction * config.cvae_steps
    ramp = jnp.minimum(1.0, step / warmup) if warmup > 0 else 1.0
    return config.kl_weight * ramp


def cvae_losses(
    vae: ConditionalVAE,
    params: Any,
    batch: Transition,
    key: jax.Array,
    obs_mean,
    obs_std,
    kl_reduction: str = "mean",
):
    """(reconstruction MSE of s' averaged over its dims, KL averaged or summed over latent
    dims), batch means."""
    s = batch.observations * obs_std + obs_mean
    s_next = batch.next_observations * obs_std + obs_mean
    x = jnp.concatenate([s, batch.actions], axis=-1)
    mean, std = vae.apply({"params": params}, x, method="encode")
    z = mean + std * jax.random.normal(key, mean.shape)
    recon = vae.apply({"params": params}, x, z, method="decode")
    reconstruction = jnp.mean((recon - s_next) ** 2)
    kl = jnp.mean(kl_to_standard_normal(mean, std))
    return reconstruction, kl * mean.shape[-1] if kl_reduction == "sum" else kl


def embedding_loss(
    predictor: SiameseActionPredictor, params: Any, batch: Transition, obs_mean, obs_std
) -> jax.Array:
    s = batch.observations * obs_std + obs_mean
    s_next = batch.next_observations * obs_std + obs_mean
    return jnp.mean((predictor.apply({"params": params}, s, s_next) - batch.actions) ** 2)


def _sample_rows(
    data: Transition, key: jax.Array, batch_size: int, row_weights: jax.Array | None = None
) -> Transition:
    n = data.rewards.shape[0]
    if row_weights is None:
        rows = jax.random.randint(key, (batch_size,), 0, n)
    else:
        rows = jax.random.choice(key, n, (batch_size,), p=row_weights / jnp.sum(row_weights))
    return jax.tree.map(lambda c: c[rows], data)


@dataclass
class WeightModel:
    """Builds, fits and summarises the weight model of one SAMG config."""

    config: SAMGConfig
    obs_dim: int
    act_dim: int
    vae: ConditionalVAE = field(init=False)
    predictor: SiameseActionPredictor = field(init=False)

    def __post_init__(self) -> None:
        c = self.config
        latent = c.latent_dim or max(2 * self.act_dim, 8)
        self.vae = ConditionalVAE(
            self.obs_dim, latent, c.encoder_hidden_dims, c.decoder_hidden_dims
        )
        self.predictor = SiameseActionPredictor(
            c.embedding_hidden_dims, c.embedding_dim, self.act_dim
        )

    def hooks(self) -> SAMGHooks:
        return SAMGHooks(self.config, self.vae, self.predictor)

    def init(self, key: jax.Array) -> TrainState:
        tx = optax.adam(self.config.cvae_lr)
        if self.config.weight == "embedding":
            obs = jnp.zeros((1, self.obs_dim))
            return TrainState.create(self.predictor, key, (obs, obs), tx)
        x = jnp.zeros((1, self.obs_dim + self.act_dim))
        return TrainState.create(self.vae, key, (x, x), tx)

    def loss(self, params, batch, key, step, obs_mean, obs_std):
        if self.config.weight == "embedding":
            loss = embedding_loss(self.predictor, params, batch, obs_mean, obs_std)
            return loss, {"embedding_loss": loss}
        reconstruction, kl = cvae_losses(
            self.vae, params, batch, key, obs_mean, obs_std, self.config.kl_reduction
        )
        beta = _kl_beta(self.config, step)
        return reconstruction + beta * kl, {
            "reconstruction": reconstruction,
            "kl": kl,
            "kl_beta": jnp.asarray(beta, jnp.float32),
        }

    def fit(
        self,
        model: TrainState,
        data: Transition,
        key: jax.Array,
        steps: int,
        first_step: int,
        obs_mean,
        obs_std,
        row_weights=None,
    ):
        """``steps`` Adam steps on batches of ``data`` (optionally weighted rows); returns the
        model and the metrics averaged over each block of steps."""
        batch_size = self.config.cvae_batch_size

        def one(carry, step):
            model, key = carry
            key, sample_key, noise_key = jax.random.split(key, 3)
            batch = _sample_rows(data, sample_key, batch_size, row_weights)
            model, metrics = model.minimize(
                lambda p: self.loss(p, batch, noise_key, step, obs_mean, obs_std)
            )
            return (model, key), metrics

        (model, _), metrics = jax.lax.scan(one, (model, key), first_step + jnp.arange(steps))
        return model, metrics

    def statistic(
        self, params: Any, data: Transition, obs_mean, obs_std, chunk: int = 4096
    ) -> np.ndarray:
        hooks = self.hooks()
        extras = {"model_params": params, "obs_mean": obs_mean, "obs_std": obs_std}
        f = jax.jit(lambda batch: hooks.statistic(extras, batch))
        n = int(np.shape(data.rewards)[0])
        parts = [
            np.asarray(f(jax.tree.map(lambda c, i=i: jnp.asarray(c[i : i + chunk]), data)))
            for i in range(0, n, chunk)
        ]
        return np.concatenate(parts)


def merge_statistics(count_a, mean_a, var_a, count_b, mean_b, var_b):
    """Chan et al.'s parallel merge of (count, mean, population variance)."""
    total = count_a + count_b
    delta = mean_b - mean_a
    mean = mean_a + delta * count_b / total
    m2 = var_a * count_a + var_b * count_b + delta**2 * count_a * count_b / total
    return total, mean, m2 / total


def posterior_collapsed(latent_means: np.ndarray, kl: float) -> bool:
    """KL ≈ 0 and encoder means that no longer depend on the input (methods.md §0.3)."""
    return bool(kl < 1e-2 and float(np.max(latent_means.std(axis=0))) < 0.05)


def offline_bootstrap_params(state: Any) -> Any:
    """The parameters ``TargetInputs.value_with`` expects: V for IQL, the critic otherwise."""
    return state.value.params if hasattr(state, "value") else state.critic.params


def td_errors(agent: Any, state: Any, batch: Transition, key: jax.Array) -> jax.Array:
    """|Q(s,a) - r - γ(1-d)·V(s')| with V(s') = V for IQL, min Q̄(s', π(s')) otherwise."""
    discount = agent.config.discount
    if hasattr(state, "value"):
        next_value = state.value(batch.next_observations)
    else:
        next_actions = agent.act(state, batch.next_observations, key, True)
        next_value = state.critic(
            batch.next_observations, next_actions, params=state.target_critic_params
        ).min(axis=0)
    target = batch.rewards + discount * (1.0 - batch.terminals) * next_value
    return jnp.abs(state.critic(batch.observations, batch.actions).min(axis=0) - target)


# --- the method -----------------------------------------------------------------------------


class SAMG(FinetuneMethod):
    name = "samg"

    def __init__(self, config: SAMGConfig | None = None, obs_dim: int = 0, act_dim: int = 0):
        self.config = config or SAMGConfig()
        self.model = WeightModel(self.config, obs_dim, act_dim)

    def describe(self) -> dict[str, Any]:
        return {"method": self.name, **asdict(self.config)}

    def hooks(self, algo: str) -> SAMGHooks:
        return self.model.hooks()

    def data_policy(self) -> str:
        return "online"

    def online_overrides(self) -> dict[str, Any]:
        return {
            "buffer_capacity": self.config.buffer_capacity,
            "update_after": self.config.seed_transitions,
        }

    def prepare_template(self, agent, states, offline: Transition, preprocess, seed: int) -> Any:
        """States with extras of the right structure (no fitting), to load a saved start into."""
        return self.prepare(
            agent, states, offline, preprocess, seed, progress=False, fit=False
        ).states

    def prepare(
        self,
        agent,
        states,
        offline: Transition,
        preprocess,
        seed: int,
        progress: bool,
        fit: bool = True,
    ) -> Prepared:
        c = self.config
        obs_mean = jnp.asarray(
            preprocess.obs_mean
            if preprocess.obs_mean is not None
            else np.zeros(self.model.obs_dim),
            jnp.float32,
        )
        obs_std = jnp.asarray(
            preprocess.obs_std if preprocess.obs_std is not None else np.ones(self.model.obs_dim),
            jnp.float32,
        )
        data = jax.tree.map(jnp.asarray, offline)
        diagnostics: list[dict] = []
        extras_per_seed = []
        needs_model = c.weight in ("cvae", "embedding")
        for s, state in enumerate(unstack_seeds(states)):
            key = jax.random.fold_in(jax.random.PRNGKey(seed + s), 0x5A36)
            extras: dict[str, Any] = {
                "guidance": jnp.float32(1.0),
                "offline_params": jax.tree.map(lambda x: x.copy(), offline_bootstrap_params(state)),
                "obs_mean": obs_mean,
                "obs_std": obs_std,
            }
            if needs_model:
                init_key, fit_key = jax.random.split(key)
                model = self.model.init(init_key)
                fit = jax.jit(
                    lambda m, k, first: self.model.fit(m, data, k, 1000, first, obs_mean, obs_std)
                )
                done = 0
                while fit and done < c.cvae_steps:
                    model, metrics = fit(model, jax.random.fold_in(fit_key, done), done)
                    done += 1000
                    row = {
                        "phase": "samg_fit",
                        "seed": seed + s,
                        "cvae_step": done,
                        **{k: float(np.mean(v)) for k, v in metrics.items()},
                    }
                    diagnostics.append(row)
                stat = self.model.statistic(
                    model.params,
                    offline if fit else jax.tree.map(lambda x: x[:2], offline),
                    obs_mean,
                    obs_std,
                )
                stat_mean, stat_var = stat.mean(axis=0), stat.var(axis=0)
                extras.update(
                    model_params=model.params,
                    model_opt_state=model.opt_state,
                    stat_mean=jnp.asarray(stat_mean, jnp.float32),
                    stat_std=jnp.asarray(np.sqrt(stat_var) + 1e-6, jnp.float32),
                    stat_var=jnp.asarray(stat_var, jnp.float32),
                    stat_count=jnp.float32(stat.shape[0]),
                )
                summary = {
                    "phase": "samg_stats",
                    "seed": seed + s,
                    "latent_mean": stat_mean.tolist(),
                    "latent_std": np.sqrt(stat_var).tolist(),
                }
                if not fit:
                    extras_per_seed.append(extras)
                    continue
                if c.weight == "cvae":
                    summary["posterior_collapse"] = posterior_collapsed(stat, diagnostics[-1]["kl"])
                    if summary["posterior_collapse"]:
                        print(
                            f"warning: SAMG C-VAE of seed {seed + s} shows posterior collapse (KL {diagnostics[-1]['kl']:.4f}, encoder means constant); p carries no information"
                        )
                hooks = self.model.hooks()
                p = np.asarray(
                    jax.jit(lambda b, e=extras, h=hooks: h.weight(e, b))(
                        jax.tree.map(lambda x: x[:4096], data)
                    )
                )
                summary["offline_p_mean"] = float(p.mean())
                summary["offline_p_positive"] = float((p > 0).mean())
                diagnostics.append(summary)
            extras_per_seed.append(extras)
        states = stack_seeds(
            [
                st.replace(extras=ex)
                for st, ex in zip(unstack_seeds(states), extras_per_seed, strict=True)
            ]
        )
        return Prepared(states, diagnostics)

    def on_chunk(self, agent, step: int, states, buffers: dict, seed: int):
        c = self.config
        rows: list[dict] = []
        if c.guidance_steps is not None and step >= c.guidance_steps:
            states = states.replace(
                extras={**states.extras, "guidance": jnp.zeros_like(states.extras["guidance"])}
            )
        if (
            c.weight not in ("cvae", "embedding")
            or c.adaptive_every == 0
            or step % c.adaptive_every != 0
        ):
            return states, rows
        updated = []
        for s, state in enumerate(unstack_seeds(states)):
            buffer = jax.tree.map(lambda x, s=s: x[s], buffers["online"])
            state, row = self._adaptive_update(
                agent, state, buffer, jax.random.PRNGKey(seed + s + 7919 * step)
            )
            rows.append({"phase": "samg_adaptive", "step": step, "seed": seed + s, **row})
            updated.append(state)
        return stack_seeds(updated), rows

    def _adaptive_update(self, agent, state, buffer, key):
        c = self.config
        n = int(buffer.size)
        data = jax.tree.map(lambda col: col[:n], buffer.data)
        extras = state.extras
        hooks = self.model.hooks()
        p = np.asarray(jax.jit(hooks.raw_weight)(extras, data))
        td = np.asarray(jax.jit(lambda st, b, k: td_errors(agent, st, b, k))(state, data, key))
        in_dist = p > 0
        reference = np.median(td[in_dist]) if in_dist.any() else np.median(td)
        mastered = (~in_dist) & (td < reference)
        row = {"buffer": n, "p_positive": float(in_dist.mean()), "mastered": int(mastered.sum())}
        if refresh := c.refresh_offline_critic:
            extras = {
                **extras,
                "offline_params": jax.tree.map(lambda x: x.copy(), offline_bootstrap_params(state)),
            }
        row["refreshed_offline_critic"] = bool(refresh)
        if mastered.sum() >= 2:
            model = TrainState(
                extras["model_params"],
                extras["model_opt_state"],
                self.model.vae.apply if c.weight == "cvae" else self.model.predictor.apply,
                optax.adam(c.cvae_lr),
            )
            weights = jnp.asarray(mastered, jnp.float32)
            model, metrics = jax.jit(
                lambda m, k: self.model.fit(
                    m,
                    data,
                    k,
                    c.adaptive_steps,
                    c.cvae_steps,
                    extras["obs_mean"],
                    extras["obs_std"],
                    weights,
                )
            )(model, key)
            new = self.model.statistic(
                model.params,
                jax.tree.map(lambda x: np.asarray(x)[mastered], data),
                extras["obs_mean"],
                extras["obs_std"],
            )
            count, mean, var = merge_statistics(
                float(extras["stat_count"]),
                np.asarray(extras["stat_mean"]),
                np.asarray(extras["stat_var"]),
                float(new.shape[0]),
                new.mean(axis=0),
                new.var(axis=0),
            )
            extras = {
                **extras,
                "model_params": model.params,
                "model_opt_state": model.opt_state,
                "stat_mean": jnp.asarray(mean, jnp.float32),
                "stat_var": jnp.asarray(var, jnp.float32),
                "stat_std": jnp.asarray(np.sqrt(var) + 1e-6, jnp.float32),
                "stat_count": jnp.float32(count),
            }
            row.update({k: float(np.mean(v)) for k, v in metrics.items()})
        return state.replace(extras=extras), row
