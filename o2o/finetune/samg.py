"""SAMG: State-Action-Conditional Offline Model Guidance (arXiv 2410.18626).

Fine-tuning drops the offline data and freezes a copy of the offline critic Q_off (V_off for
IQL). The Bellman target mixes it in per sample:

    y = r + γ(1-d) · [(1 - p(s,a)) · Q̄(s',a') + p(s,a) · Q_off(s',a')]

where p(s,a) says how in-distribution (s,a) is for the offline data: a state-action C-VAE
(encoder q(z|s,a), decoder to s' from (z,s,a)) is fitted to the offline data (the phase
``samg_cvae``, between offline and online), a normal is fitted per latent dimension to the
encoder means of the offline pairs, and p is the mean over dimensions of a normal-CDF
probability, zeroed below a threshold ε. Q_off is evaluated at the agent's own a'
(``TargetInputs.value_with``), and CQL/Cal-QL's conservative term is weighted by p online.

What is reconstructed rather than stated by the paper (methods.md §0) is a named option here,
with the default in brackets: ``p_form`` (tail), ``window_delta`` (1.0), KL annealing shape
(linear over ``kl_anneal_fraction`` = 0.2 of C-VAE training), VAE sizes (750-750, latent
max(2|A|, 8)), ``cons_weighting`` (p), ``guidance_steps`` (whole run; after it the agent is
exactly its vanilla base, conservative term included), ``refresh_offline_critic`` (off), and
the adaptive update: "mastered" = p = 0 and a TD error (the agent's own bootstrap,
``agent.bootstrap_value``) below the median TD error of the buffer's in-distribution samples;
after refitting the C-VAE on them, the latent statistics are recomputed *under the new
encoder* from ``reference_pairs`` offline (s, a) pairs kept for this purpose (weighted as the
whole offline dataset) merged with the mastered samples — the one piece of offline data SAMG
keeps online (5,000 pairs by default, ≈ 0.2 MB on hopper).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.scipy.stats import norm

from o2o.core.engine import Phase
from o2o.core.hooks import TargetInputs
from o2o.core.networks import MLP
from o2o.core.train_state import TrainState
from o2o.core.types import Transition
from o2o.core.vae import ConditionalVAE, kl_to_standard_normal
from o2o.errors import ConfigError, O2OError, check, check_fields
from o2o.finetune.base import Diagnostic, Method, observation_statistics, raw_observations

Weight = Literal["cvae", "embedding", "even", "random", "none"]
STATS_CHUNK = 4096


@dataclass(frozen=True)
class SAMGConfig:
    # "even" (p ≡ 0.5) and "random" (p ~ U(0,1)) are the paper's ablations; "none" (p ≡ 0) is
    # the control that keeps SAMG's online-only buffer and seed transitions without guidance.
    weight: Weight = "cvae"
    p_form: Literal["tail", "window"] = "tail"
    window_delta: float = 1.0  # δ of the window form, in latent units
    threshold: float = 0.5  # ε: p < ε counts as out-of-distribution (p = 0)
    cons_weighting: Literal["p", "none", "plain"] = "p"  # CQL/Cal-QL conservative term online
    # The C-VAE, fitted on the offline data between the phases (raw, unnormalised states).
    # None: fitted to the run's offline budget (``budget_cvae_steps``), resolved by the
    # builder and recorded in config.yaml; the paper's 10,000 from 50k offline steps up.
    cvae_steps: int | None = None
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
    # Collapse: no latent dimension whose encoder mean varies across the data by more than this
    # fraction of the posterior std (the code then carries no information about (s, a)).
    collapse_snr: float = 0.1
    # The embedding weight model (paper Appendix A.2, after Never Give Up).
    embedding_dim: int = 32
    embedding_hidden_dims: tuple[int, ...] = (256, 256)
    # Online schedule.
    buffer_capacity: int = 50_000
    seed_transitions: int = 1_000  # collected by the offline policy before any update
    adaptive_every: int = 10_000  # env steps between C-VAE updates with mastered samples; 0: off
    adaptive_steps: int = 500
    reference_pairs: int = 5_000  # offline (s, a) pairs kept to recompute statistics (adaptive)
    refresh_offline_critic: bool = False
    guidance_steps: int | None = None  # after this many online steps p ≡ 0 (vanilla); None: never

    def __post_init__(self) -> None:
        check_fields(
            self,
            positive=("window_delta", "cvae_lr", "buffer_capacity", "adaptive_steps"),
            non_negative=("seed_transitions", "adaptive_every", "collapse_snr", "reference_pairs"),
            optional_positive=("latent_dim", "cvae_steps"),
            unit_interval=("threshold", "kl_anneal_fraction"),
            hidden_dims=("encoder_hidden_dims", "decoder_hidden_dims", "embedding_hidden_dims"),
            choices={
                "weight": ("cvae", "embedding", "even", "random", "none"),
                "p_form": ("tail", "window"),
                "cons_weighting": ("p", "none", "plain"),
                "kl_reduction": ("mean", "sum"),
            },
        )
        check(
            self.adaptive_every == 0 or self.reference_pairs > 0,
            "the adaptive update (adaptive_every > 0) needs reference_pairs > 0",
        )
        check(
            self.guidance_steps is None or self.guidance_steps >= 0, "guidance_steps must be >= 0"
        )

    @property
    def learned(self) -> bool:
        """Whether p comes from a fitted model (C-VAE or embedding) rather than an ablation."""
        return self.weight in ("cvae", "embedding")


CVAE_STEPS_MIN, CVAE_STEPS_MAX = 1_000, 10_000


def budget_cvae_steps(offline_steps: int) -> int:
    """[RECON] The C-VAE fit's length for a run of ``offline_steps``: a fifth of the offline
    budget, at least 1,000 steps (the fit's KL settles by then on the lite datasets) and at
    most the paper's 10,000. A fixed 10,000 made a 1,000-step smoke run spend most of its
    time fitting the weight model."""
    return min(CVAE_STEPS_MAX, max(CVAE_STEPS_MIN, offline_steps // 5))


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


def merge_statistics(count_a, mean_a, var_a, count_b, mean_b, var_b):
    """Chan et al.'s parallel merge of (count, mean, population variance)."""
    total = count_a + count_b
    delta = mean_b - mean_a
    mean = mean_a + delta * count_b / total
    m2 = var_a * count_a + var_b * count_b + delta**2 * count_a * count_b / total
    return total, mean, m2 / total


def latent_snr(latent_means: np.ndarray, latent_stds: np.ndarray) -> np.ndarray:
    """Per latent dimension: the spread of the encoder means over a set of inputs divided by
    the typical posterior std — how far the code of one input stands from another's, in units
    of the code's own noise. ≈ 0 when the encoder ignores its input (posterior collapse). SAMG
    measures it over the offline pairs and the same states with uniform-random actions, so a
    tight dataset (little spread of its own) does not pass for a collapsed encoder."""
    spread = latent_means.std(axis=0)
    noise = np.sqrt(np.mean(latent_stds**2, axis=0))
    return spread / np.maximum(noise, 1e-12)


def posterior_collapsed(latent_means: np.ndarray, latent_stds: np.ndarray, snr: float) -> bool:
    """No latent dimension distinguishes inputs (methods.md §0.3's collapse diagnostic)."""
    return bool(np.max(latent_snr(latent_means, latent_stds)) < snr)


# --- the method -----------------------------------------------------------------------------


class SAMG(Method):
    name = "samg"
    config_class = SAMGConfig
    slots = frozenset({"data_policy", "bootstrap", "critic_terms", "phases", "events"})
    diagnostics = (
        Diagnostic("online", "train/samg/p_mean", "mean p of online batches"),
        Diagnostic("online", "train/samg/p_positive", "fraction of samples with p > 0"),
        Diagnostic(
            "samg_cvae",
            "train/samg/cvae_kl",
            "C-VAE KL (offline fit)",
            log_scale=True,
            reference=(0.03, "0.03: the paper's good regime"),
        ),
    )

    def __init__(self, config: SAMGConfig | None = None, obs_dim: int = 0, act_dim: int = 0):
        super().__init__(config or SAMGConfig(), obs_dim, act_dim)
        c = self.config
        latent = c.latent_dim or max(2 * act_dim, 8)
        self.vae = ConditionalVAE(obs_dim, latent, c.encoder_hidden_dims, c.decoder_hidden_dims)
        self.predictor = SiameseActionPredictor(c.embedding_hidden_dims, c.embedding_dim, act_dim)
        self.module = self.predictor if c.weight == "embedding" else self.vae
        self.stat_dim = 1 if c.weight == "embedding" else latent

    # --- p ----------------------------------------------------------------------------------
    def statistic(self, state: dict, params: Any, batch: Transition) -> jax.Array:
        """The per-sample quantity whose offline distribution is fitted: C-VAE latent means
        (B, d), or the embedding model's action-prediction error (B, 1)."""
        s = raw_observations(state, batch.observations)
        if self.config.weight == "embedding":
            s_next = raw_observations(state, batch.next_observations)
            predicted = self.predictor.apply({"params": params}, s, s_next)
            return jnp.mean((predicted - batch.actions) ** 2, axis=-1, keepdims=True)
        x = jnp.concatenate([s, batch.actions], axis=-1)
        return self.vae.apply({"params": params}, x, method="encode")[0]

    def raw_weight(self, state: dict, batch: Transition, key: jax.Array) -> jax.Array:
        """p(s,a) before the guidance cut-off."""
        c = self.config
        n = batch.rewards.shape[0]
        if c.weight == "even":
            return jnp.full((n,), 0.5)
        if c.weight == "none":
            return jnp.zeros((n,))
        if c.weight == "random":
            return jax.random.uniform(key, (n,))
        p_int = latent_probability(
            self.statistic(state, state["model"].params, batch),
            state["stat_mean"],
            state["stat_std"],
            c.p_form,
            c.window_delta,
        )
        return thresholded(p_int, c.threshold)

    def weight(self, state: dict, batch: Transition, key: jax.Array) -> jax.Array:
        return self.raw_weight(state, batch, key) * state["guidance"]

    # --- hooks ------------------------------------------------------------------------------
    def next_value(self, state: dict, inputs: TargetInputs) -> jax.Array:
        p = self.weight(state, inputs.batch, inputs.key)
        offline_value = inputs.value_with(state["offline_params"])
        return (1.0 - p) * inputs.next_value + p * offline_value

    def conservative_weights(self, state: dict, batch: Transition, key: jax.Array):
        c = self.config
        if c.cons_weighting == "plain":
            return None
        weights = (
            self.raw_weight(state, batch, key)
            if c.cons_weighting == "p"
            else jnp.zeros_like(batch.rewards)
        )
        # After the cut-off the agent is its vanilla base: an unweighted conservative term.
        guidance = state["guidance"]
        return guidance * weights + (1.0 - guidance)

    def critic_penalty(self, state: dict, batch: Transition, critic_params: Any, key: jax.Array):
        p = self.weight(state, batch, key)
        return 0.0, {"samg/p_mean": p.mean(), "samg/p_positive": jnp.mean(p > 0)}

    # --- state and phases -------------------------------------------------------------------
    def fit_to_budget(self, offline_steps: int, online_steps: int) -> SAMG:
        """``cvae_steps`` None -> ``budget_cvae_steps(offline_steps)`` where a weight model is
        fitted; the ablations (even, random, none) fit none and keep None."""
        if self.config.cvae_steps is not None or not self.config.learned:
            return self
        config = replace(self.config, cvae_steps=budget_cvae_steps(offline_steps))
        fitted = type(self)(config, self.obs_dim, self.act_dim)
        fitted.label = self.label
        return fitted

    @property
    def cvae_steps(self) -> int:
        steps = self.config.cvae_steps
        if steps is None:
            raise O2OError(
                "SAMG's cvae_steps is fitted to the run's budget: build the method through "
                "RunSpec or Pipeline (Method.fit_to_budget), or give cvae_steps"
            )
        return steps

    def check_agent(self, algo: str, agent: Any) -> None:
        try:
            agent.bootstrap_params(jax.eval_shape(lambda: agent.init(jax.random.PRNGKey(0), 1, 1)))
        except ConfigError:
            raise ConfigError(
                f"SAMG mixes a frozen offline critic into the critic target; {algo} has no critic"
            ) from None

    def init_state(self, agent: Any, agent_state: Any, key: jax.Array, preprocess: Any) -> dict:
        c = self.config
        obs_dim = self.obs_dim
        state: dict[str, Any] = {
            "guidance": jnp.float32(1.0),
            "offline_params": jax.tree.map(jnp.copy, agent.bootstrap_params(agent_state)),
            **observation_statistics(preprocess, obs_dim),  # the weight models see raw states
        }
        if not c.learned:
            return state
        if c.weight == "embedding":
            example = (jnp.zeros((1, obs_dim)), jnp.zeros((1, obs_dim)))
        else:
            x = jnp.zeros((1, obs_dim + self.act_dim))
            example = (x, x)
        reference = c.reference_pairs if c.adaptive_every > 0 else 0
        state.update(
            model=TrainState.create(self.module, key, example, optax.adam(c.cvae_lr)),
            fit_step=jnp.int32(0),
            stat_mean=jnp.zeros(self.stat_dim),
            stat_std=jnp.ones(self.stat_dim),
            stat_var=jnp.ones(self.stat_dim),
            stat_count=jnp.float32(0.0),
            reference=Transition(
                *(
                    jnp.zeros(shape, jnp.float32)
                    for shape in (
                        (reference, obs_dim),
                        (reference, self.act_dim),
                        (reference,),
                        (reference, obs_dim),
                        (reference,),
                        (reference,),
                    )
                )
            ),
        )
        return state

    def model_loss(self, state: dict, params: Any, batch: Transition, key: jax.Array):
        c = self.config
        s = raw_observations(state, batch.observations)
        s_next = raw_observations(state, batch.next_observations)
        if c.weight == "embedding":
            loss = jnp.mean(
                (self.predictor.apply({"params": params}, s, s_next) - batch.actions) ** 2
            )
            return loss, {"samg/embedding_loss": loss}
        x = jnp.concatenate([s, batch.actions], axis=-1)
        mean, std = self.vae.apply({"params": params}, x, method="encode")
        z = mean + std * jax.random.normal(key, mean.shape)
        recon = self.vae.apply({"params": params}, x, z, method="decode")
        reconstruction = jnp.mean((recon - s_next) ** 2)
        kl = jnp.mean(kl_to_standard_normal(mean, std))
        if c.kl_reduction == "sum":
            kl = kl * mean.shape[-1]
        warmup = c.kl_anneal_fraction * self.cvae_steps
        ramp = jnp.minimum(1.0, state["fit_step"] / warmup) if warmup > 0 else 1.0
        beta = c.kl_weight * ramp
        return reconstruction + beta * kl, {
            "samg/cvae_reconstruction": reconstruction,
            "samg/cvae_kl": kl,
            "samg/cvae_kl_beta": jnp.asarray(beta, jnp.float32),
        }

    def fit_step(self, state: dict, batch: Transition, key: jax.Array) -> tuple[dict, dict]:
        """One Adam step of the weight model on ``batch``."""
        model, metrics = state["model"].minimize(lambda p: self.model_loss(state, p, batch, key))
        return {**state, "model": model, "fit_step": state["fit_step"] + 1}, metrics

    def phases(self, agent: Any) -> tuple[Phase, ...]:
        if not self.config.learned:
            return ()

        def update(agent_state, batch, key):
            own, metrics = self.fit_step(agent_state.extras[self.name], batch, key)
            return agent_state.replace(extras={**agent_state.extras, self.name: own}), metrics

        return (
            Phase("samg_cvae", self.cvae_steps, update, "before_online", finish=self.fit_stats),
        )

    def offline_statistics(self, states: Any, data: Transition) -> tuple[np.ndarray, ...]:
        """Encoder statistic and posterior std of every row of ``data`` for every seed:
        (seeds, N, d) each."""
        own = states.extras[self.name]

        def one(state, batch):
            stat = self.statistic(state, state["model"].params, batch)
            if self.config.weight == "embedding":
                return stat, jnp.ones_like(stat)
            s = raw_observations(state, batch.observations)
            x = jnp.concatenate([s, batch.actions], axis=-1)
            return stat, self.vae.apply({"params": state["model"].params}, x, method="encode")[1]

        fn = jax.jit(jax.vmap(one, in_axes=(0, None)))
        n = int(np.shape(data.rewards)[0])
        parts = [
            fn(own, jax.tree.map(lambda c, i=i: jnp.asarray(c[i : i + STATS_CHUNK]), data))
            for i in range(0, n, STATS_CHUNK)
        ]
        return tuple(np.concatenate([np.asarray(p[k]) for p in parts], axis=1) for k in (0, 1))

    def fit_stats(
        self, states: Any, data: Transition, scores: Any = None
    ) -> tuple[Any, list[dict]]:
        """After the fit: the offline latent statistics per seed, the reference pairs for the
        adaptive update, and diagnostics (collapse, p on the data and on random actions)."""
        c = self.config
        stat, stat_std = self.offline_statistics(states, data)
        own = dict(states.extras[self.name])
        own["stat_mean"] = jnp.asarray(stat.mean(axis=1), jnp.float32)
        own["stat_var"] = jnp.asarray(stat.var(axis=1), jnp.float32)
        own["stat_std"] = jnp.asarray(np.sqrt(stat.var(axis=1)) + 1e-6, jnp.float32)
        own["stat_count"] = jnp.full(stat.shape[0], stat.shape[1], jnp.float32)
        n = int(np.shape(data.rewards)[0])
        reference = own["reference"].rewards.shape[-1]
        if reference:
            rows = np.random.default_rng(0).choice(n, size=reference, replace=n < reference)
            seeds = stat.shape[0]
            own["reference"] = jax.tree.map(
                lambda col: jnp.broadcast_to(
                    jnp.asarray(np.asarray(col)[rows]), (seeds, reference, *np.shape(col)[1:])
                ),
                data._replace(policy_inputs=None, policy_aux=None),
            )
        states = states.replace(extras={**states.extras, self.name: own})
        probe = jax.tree.map(lambda col: jnp.asarray(np.asarray(col)[:STATS_CHUNK]), data)
        random_actions = jax.random.uniform(
            jax.random.PRNGKey(0), probe.actions.shape, minval=-1.0, maxval=1.0
        )
        weight = jax.jit(
            jax.vmap(lambda s, b: self.raw_weight(s, b, jax.random.PRNGKey(0)), in_axes=(0, None))
        )
        perturbed = probe._replace(actions=random_actions)
        p_data = np.asarray(weight(own, probe))
        p_random = np.asarray(weight(own, perturbed))
        probe_stat, probe_std = self.offline_statistics(states, perturbed)
        rows = []
        for s in range(stat.shape[0]):
            snr = latent_snr(
                np.concatenate([stat[s, :STATS_CHUNK], probe_stat[s]]),
                np.concatenate([stat_std[s, :STATS_CHUNK], probe_std[s]]),
            )
            row = {
                "phase": "samg_stats",
                "seed_index": s,
                "latent_mean": stat[s].mean(axis=0).tolist(),
                "latent_std": stat[s].std(axis=0).tolist(),
                "latent_snr": snr.tolist(),
                "offline_p_mean": float(p_data[s].mean()),
                "offline_p_positive": float((p_data[s] > 0).mean()),
                "random_action_p_mean": float(p_random[s].mean()),
            }
            if c.weight == "cvae":
                row["posterior_collapse"] = bool(np.max(snr) < c.collapse_snr)
                if row["posterior_collapse"]:
                    print(
                        f"warning: SAMG C-VAE of seed index {s} shows posterior collapse: its "
                        f"codes differ across inputs by {np.max(snr):.3f} of their own noise "
                        f"(< collapse_snr {c.collapse_snr}), so p rests on near-constant encoder "
                        "means; a lower kl_weight or more cvae_steps may help"
                    )
            rows.append(row)
        return states, rows

    def data_policy(self) -> str:
        return "online"

    def online_overrides(self) -> dict[str, Any]:
        return {
            "buffer_capacity": self.config.buffer_capacity,
            "warmup_steps": self.config.seed_transitions,
        }

    def summary(self, rows: list[dict]) -> dict[str, Any]:
        online = [r for r in rows if r.get("phase") == "online"]
        return {"final_p_mean": online[-1].get("train/samg/p_mean")} if online else {}

    # --- online events ----------------------------------------------------------------------
    def on_chunk(self, agent, step: int, states, buffers: dict, seed: int):
        c = self.config
        rows: list[dict] = []
        if c.guidance_steps is not None and step >= c.guidance_steps:
            own = states.extras[self.name]
            if float(np.max(np.asarray(own["guidance"]))) > 0:
                rows.append({"phase": "samg_guidance_off", "guidance_steps": c.guidance_steps})
            own = {**own, "guidance": jnp.zeros_like(own["guidance"])}
            states = states.replace(extras={**states.extras, self.name: own})
        if not c.learned or c.adaptive_every == 0 or step % c.adaptive_every != 0:
            return states, rows
        seeds = np.shape(states.extras[self.name]["guidance"])[0]
        updated = []
        for s in range(seeds):
            state = jax.tree.map(lambda x, s=s: x[s], states)
            buffer = jax.tree.map(lambda x, s=s: x[s], buffers["online"])
            state, row = self._adaptive_update(
                agent, state, buffer, jax.random.PRNGKey(seed + s + 7919 * step)
            )
            rows.append({"phase": "samg_adaptive", "seed": seed + s, **row})
            updated.append(state)
        return jax.tree.map(lambda *xs: jnp.stack(xs), *updated), rows

    def _adaptive_update(self, agent, agent_state, buffer, key):
        c = self.config
        n = int(buffer.size)
        data = jax.tree.map(lambda col: col[:n], buffer.data)
        own = agent_state.extras[self.name]
        weight_key, td_key, fit_key = jax.random.split(key, 3)
        p = np.asarray(jax.jit(self.raw_weight)(own, data, weight_key))
        td = np.asarray(
            jax.jit(lambda st, b, k: td_errors(agent, st, b, k))(agent_state, data, td_key)
        )
        in_dist = p > 0
        reference = np.median(td[in_dist]) if in_dist.any() else np.median(td)
        mastered = (~in_dist) & (td < reference)
        row = {"buffer": n, "p_positive": float(in_dist.mean()), "mastered": int(mastered.sum())}
        if c.refresh_offline_critic:
            own = {
                **own,
                "offline_params": jax.tree.map(jnp.copy, agent.bootstrap_params(agent_state)),
            }
        row["refreshed_offline_critic"] = c.refresh_offline_critic
        if mastered.sum() >= 2:
            weights = jnp.asarray(mastered, jnp.float32)
            own, metrics = jax.jit(self._weighted_fit)(own, data, weights, fit_key)
            # Both parts of the statistics under the new encoder: the kept offline pairs
            # (standing for the whole offline dataset) and the mastered samples.
            params = own["model"].params
            ref = np.asarray(jax.jit(self.statistic)(own, params, own["reference"]))
            new = np.asarray(
                jax.jit(self.statistic)(own, params, jax.tree.map(lambda x: x[mastered], data))
            )
            count, mean, var = merge_statistics(
                float(own["stat_count"]),
                ref.mean(axis=0),
                ref.var(axis=0),
                float(new.shape[0]),
                new.mean(axis=0),
                new.var(axis=0),
            )
            own = {
                **own,
                "stat_mean": jnp.asarray(mean, jnp.float32),
                "stat_var": jnp.asarray(var, jnp.float32),
                "stat_std": jnp.asarray(np.sqrt(var) + 1e-6, jnp.float32),
            }
            row.update({k: float(np.mean(v)) for k, v in metrics.items()})
        return agent_state.replace(extras={**agent_state.extras, self.name: own}), row

    def _weighted_fit(self, state: dict, data: Transition, row_weights, key):
        """``adaptive_steps`` model steps on batches drawn from the mastered rows."""
        n = data.rewards.shape[0]
        probabilities = row_weights / jnp.sum(row_weights)

        def one(carry, _):
            state, key = carry
            key, sample_key, step_key = jax.random.split(key, 3)
            rows = jax.random.choice(sample_key, n, (256,), p=probabilities)
            state, metrics = self.fit_step(state, jax.tree.map(lambda c: c[rows], data), step_key)
            return (state, key), metrics

        (state, _), metrics = jax.lax.scan(
            one, (state, key), None, length=self.config.adaptive_steps
        )
        return state, metrics


def td_errors(agent: Any, state: Any, batch: Transition, key: jax.Array) -> jax.Array:
    """|Q(s,a) - r - γ(1-d)·V(s')| with the agent's own bootstrap value V(s')."""
    next_value = agent.bootstrap_value(state, batch, key)
    target = batch.rewards + agent.config.discount * (1.0 - batch.terminals) * next_value
    return jnp.abs(agent.q_value(state, batch.observations, batch.actions) - target)
