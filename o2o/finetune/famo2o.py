"""FamO2O: a family of policies with state-adaptive balance coefficients (Wang et al., NeurIPS
2023; official code LeapLabTHU/FamO2O). docs/famo2o.md; methods.md §1.

A universal policy π_u(a | s, β) sees the state with a sinusoidal encoding of a balance
coefficient β (d = 6, n = 10000, sin and cos interleaved, raw β):

    enc(β)[2i] = sin(β / n^{2i/d}),   enc(β)[2i+1] = cos(β / n^{2i/d}),   i < d/2

and β replaces the base algorithm's improvement coefficient (``improvement_weight``):

    AWR form (IQL, AWAC): L_u = -E[min(exp(β·A), 100) · log π_u(a | s, enc(β))]
    CQL form:             L_u =  E[α·log π_u(ã | s, enc(β)) - β·min Q(s, ã)]

A balance model π_b(β | s), a one-dimensional tanh-Gaussian u with β = (u+1)/2·(hi-lo) + lo,
is trained from the first offline step to pick the β whose action the critic values most:

    AWR form: L_b = E[α_b·log π_b(u|s) - min Q̄(s, a)],   a ~ π_u(·|s, enc(β)),  β ~ π_b(·|s)
              L_α = α_b·(H_b - H_target),  H_b = -E[log π_b(u|s)],  H_target = -0.5
    CQL form: L_b = -E[min Q(s, a)]  (no entropy term)

with gradients through β and the reparameterised a into π_b only (π_u and the critic are those
the step started from: ``update_from_step_start``). The actor's training β is U[lo, hi] per
sample offline and a stochastic balance sample online (stop-gradient, from the balance model
before this step's update); acting and evaluating use the balance model's deterministic β.
A bootstrap that samples the actor at s' (CQL, AWAC) conditions it on a balance sample at s,
offline too (the official CQL code).

Variants: ``beta_source=fixed`` (``famo2o-fixed``, β = ``beta`` online and when acting) and
``random`` (``famo2o-random``, β ~ U[lo, hi] online and when acting); offline training is the
same in all three.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from o2o.agents.awac import AWAC
from o2o.agents.cql import CQL, CQLPolicy
from o2o.agents.iql import IQL
from o2o.core.hooks import PolicyInputs
from o2o.core.networks import MLP, TanhGaussian, Temperature
from o2o.core.train_state import TrainState, adam
from o2o.core.types import Transition, conditioned
from o2o.errors import ConfigError, check, check_fields
from o2o.finetune.base import Diagnostic, Method

BETA_SOURCES = ("balance", "fixed", "random")
# FamO2O's code has no Adroit configuration: Adroit runs take the locomotion settings.
DOMAINS = ("locomotion", "maze", "adroit")
HISTOGRAM_BINS = 20
HISTOGRAM_PHASE = "famo2o_beta"  # finetune.jsonl rows of the visited states' β histogram
NEXT_KEY = 0x4E58  # folded into the policy-input key for the β of the bootstrap at s'


@dataclass(frozen=True)
class FamO2OConfig:
    beta_source: Literal["balance", "fixed", "random"] = "balance"  # online and acting β
    beta: float | None = None  # beta_source=fixed: the β; None: the middle of the range
    domain: Literal["locomotion", "maze", "adroit"] = "locomotion"  # the range and update period
    # β range [lo, hi]; None: §1.4 per form and domain (IQL/AWAC locomotion [1, 5], maze
    # [8, 14]; CQL [0.5, 1.5]). AWAC's ranges are reconstructed: the AWAC+FamO2O code is not
    # released; they are IQL's, centred on AWAC's own inverse temperature (3 and 10).
    beta_min: float | None = None
    beta_max: float | None = None
    encoding_dim: int = 6  # d
    encoding_base: float = 10000.0  # n
    balance_hidden_dims: tuple[int, ...] = (256, 256)
    balance_lr: float = 3e-4
    # Balance-model updates every k gradient steps; None: §1.4 (IQL/AWAC locomotion 5, the
    # two independent ports; maze and CQL 1, the official code).
    balance_update_every: int | None = None
    balance_entropy: bool | None = None  # None: on for the AWR form, off for CQL (official)
    temperature_init: float = 1.0  # α_b, trained as exp(log α_b) with the loss on α_b itself
    temperature_lr: float = 3e-4
    target_entropy: float = -0.5
    # The official CQL code's HierarchicalPolicy maps u to u·(hi-lo) + lo, so its balance β
    # spans (2lo-hi, hi) while offline β is U[lo, hi]; off: the IQL code's (u+1)/2 map.
    cql_range_quirk: bool = False
    # The official IQL balance update draws β and the action with one key (correlated noise).
    shared_balance_key: bool = False
    histogram_every: int = 2000  # env steps between β histograms over the visited states
    # Set the base agent's options to FamO2O's (``FamO2O.agent_defaults``; --set wins).
    agent_defaults: bool = True

    def __post_init__(self) -> None:
        check_fields(
            self,
            positive=(
                "encoding_dim",
                "encoding_base",
                "balance_lr",
                "temperature_init",
                "temperature_lr",
                "histogram_every",
            ),
            optional_positive=("balance_update_every",),
            hidden_dims=("balance_hidden_dims",),
            choices={"beta_source": BETA_SOURCES, "domain": DOMAINS},
        )
        check(
            self.encoding_dim % 2 == 0,
            f"encoding_dim must be even (sin/cos pairs), got {self.encoding_dim}",
        )
        if self.beta_min is not None and self.beta_max is not None:
            check(
                self.beta_min < self.beta_max,
                f"beta_min ({self.beta_min}) must be below beta_max ({self.beta_max})",
            )
        check(
            self.beta is None or self.beta_source == "fixed",
            "beta sets the fixed β of famo2o-fixed; use beta_source=fixed (or famo2o-fixed)",
        )


# --- pieces ---------------------------------------------------------------------------------


def encode_beta(beta: jax.Array, dim: int = 6, base: float = 10000.0) -> jax.Array:
    """(..., dim) sinusoidal encoding of raw β: sin and cos of β / base^{2i/dim}, interleaved."""
    frequencies = base ** (-2.0 * jnp.arange(dim // 2) / dim)
    angles = beta[..., None] * frequencies
    return jnp.stack([jnp.sin(angles), jnp.cos(angles)], axis=-1).reshape(*beta.shape, dim)


def beta_from_unit(u: jax.Array, low: jax.Array, high: jax.Array, quirk: bool = False) -> jax.Array:
    """β from the balance model's tanh output u ∈ (-1, 1): (u+1)/2·(hi-lo) + lo, or the
    official CQL code's u·(hi-lo) + lo with ``quirk``."""
    unit = u if quirk else (u + 1.0) / 2.0
    return unit * (high - low) + low


class BalancePolicy(nn.Module):
    """π_b(u|s) of the AWR form (official ``NormalTanhPolicy``): an MLP mean, a state-independent
    log-std initialised at 0 and clipped to [-10, 2], tanh-squashed."""

    hidden_dims: tuple[int, ...]

    @nn.compact
    def __call__(self, observations: jax.Array) -> TanhGaussian:
        mean = MLP(self.hidden_dims, 1)(observations)
        log_std = jnp.clip(self.param("log_std", nn.initializers.zeros, (1,)), -10.0, 2.0)
        return TanhGaussian(mean, jnp.broadcast_to(log_std, mean.shape))


def agent_form(agent: Any) -> str:
    """``awr`` (β is the inverse temperature of exp(β·A)) or ``q`` (β multiplies Q)."""
    return "q" if isinstance(agent, CQL) else "awr"


# --- the method -----------------------------------------------------------------------------


class FamO2O(Method):
    name = "famo2o"
    config_class = FamO2OConfig
    slots = frozenset({"policy_inputs", "state_update", "events"})
    trains_offline = True
    # β's source and the fixed β act only online and when acting (offline training draws β
    # uniformly in every variant): famo2o-fixed and famo2o-random share famo2o's offline phase.
    online_variant_options = frozenset({"beta_source", "beta"})
    update_from_step_start = True
    diagnostics = (
        Diagnostic("online", "train/famo2o/beta_mean", "mean balance β (deterministic) on a batch"),
        Diagnostic("online", "train/famo2o/beta_std", "std of the balance β within a batch"),
        Diagnostic(
            "online",
            "train/famo2o/beta_q_corr",
            "correlation of the balance β with min Q(s, a) on a batch",
        ),
        Diagnostic("online", "train/famo2o/temperature", "balance temperature α_b", log_scale=True),
        Diagnostic("online", "train/famo2o/balance_entropy", "balance-model entropy (tanh space)"),
    )

    def __init__(self, config: FamO2OConfig | None = None, obs_dim: int = 0, act_dim: int = 0):
        super().__init__(config or FamO2OConfig(), obs_dim, act_dim)
        self.policy_input_dim = self.config.encoding_dim

    # --- β --------------------------------------------------------------------------------
    def encode(self, beta: jax.Array) -> jax.Array:
        return encode_beta(beta, self.config.encoding_dim, self.config.encoding_base)

    def balance_beta(
        self, state: dict, observations: jax.Array, key: jax.Array | None, params: Any = None
    ) -> tuple[jax.Array, jax.Array | None]:
        """(β, log π_b(u|s)): a reparameterised sample, or the deterministic β = map(tanh μ)
        (log-prob None) without ``key``."""
        dist = state["balance"](observations, params=params)
        if key is None:
            u, log_prob = dist.mode(), None
        else:
            u, log_prob = dist.sample_and_log_prob(key)
        beta = beta_from_unit(u[..., 0], state["low"], state["high"], self.config.cql_range_quirk)
        return beta, log_prob

    def fixed_beta(self, state: dict) -> jax.Array:
        beta = self.config.beta
        return (state["low"] + state["high"]) / 2.0 if beta is None else jnp.float32(beta)

    def uniform_beta(self, state: dict, key: jax.Array, rows: int) -> jax.Array:
        return jax.random.uniform(key, (rows,), minval=state["low"], maxval=state["high"])

    def online_beta(self, state: dict, balance: jax.Array, uniform: jax.Array) -> jax.Array:
        """The online β of the chosen source, given a balance sample and a uniform draw."""
        source = self.config.beta_source
        if source == "fixed":
            return jnp.broadcast_to(self.fixed_beta(state), balance.shape)
        return uniform if source == "random" else balance

    # --- hooks ----------------------------------------------------------------------------
    def policy_inputs(self, state: dict, batch: Transition, key: jax.Array) -> PolicyInputs:
        uniform_key, balance_key = jax.random.split(key)
        rows = batch.rewards.shape[0]
        uniform = self.uniform_beta(state, uniform_key, rows)
        balance = jax.lax.stop_gradient(
            self.balance_beta(state, batch.observations, balance_key)[0]
        )
        online = self.online_beta(state, balance, uniform)
        train_beta = jnp.where(state["online"], online, uniform)
        next_beta = jnp.where(state["online"], online, balance)
        return PolicyInputs(self.encode(train_beta), train_beta, self.encode(next_beta))

    def improvement_weight(self, state: dict, batch: Transition) -> jax.Array:
        return batch.policy_aux

    def acting_beta(self, state: dict, observations: jax.Array, key: jax.Array) -> jax.Array:
        balance = self.balance_beta(state, observations, None)[0]
        uniform = self.uniform_beta(state, key, observations.shape[0])
        return self.online_beta(state, balance, uniform)

    def acting_inputs(
        self, state: dict, observations: jax.Array, key: jax.Array, deterministic: bool
    ) -> jax.Array:
        return self.encode(self.acting_beta(state, observations, key))

    # --- the balance model's update -------------------------------------------------------
    def balance_loss(
        self, state: dict, agent: Any, agent_state: Any, batch: Transition, key: jax.Array, params
    ) -> tuple[jax.Array, dict]:
        c = self.config
        beta_key, action_key = jax.random.split(key)
        if c.shared_balance_key:
            action_key = beta_key
        obs = batch.observations
        beta, log_prob = self.balance_beta(state, obs, beta_key, params)
        # π_u and the critic are the step's starting ones; only π_b's parameters are trained.
        dist = agent_state.actor(conditioned(obs, self.encode(beta)))
        actions = dist.sample_and_log_prob(action_key)[0]
        # The AWR form values actions with the target critic (the official IQL code), the CQL
        # form with the critic itself (the official CQL code).
        settings = self.resolved(agent)
        if settings["form"] == "awr":
            critic_params = agent_state.target_critic_params
        else:
            critic_params = agent.q_params(agent_state)
        q = agent.q_value(agent_state, obs, actions, critic_params)
        loss = -q.mean()
        if settings["entropy"]:
            loss = loss + jnp.mean(jax.lax.stop_gradient(state["temperature"]()) * log_prob)
        return loss, {"balance_loss": loss, "balance_entropy": -log_prob.mean()}

    def update(
        self, state: dict, agent: Any, agent_state: Any, batch: Transition, key: jax.Array
    ) -> tuple[dict, dict]:
        c = self.config
        balance, metrics = state["balance"].minimize(
            lambda p: self.balance_loss(state, agent, agent_state, batch, key, p)
        )
        settings = self.resolved(agent)
        temperature = state["temperature"]
        if settings["entropy"]:
            entropy = jax.lax.stop_gradient(metrics["balance_entropy"])

            def temperature_loss(params):
                loss = state["temperature"](params=params) * (entropy - c.target_entropy)
                return loss, {"temperature_loss": loss}

            temperature, more = temperature.minimize(temperature_loss)
            metrics.update(more)
        due = state["steps"] % settings["period"] == 0
        chosen = jax.tree.map(
            lambda new, old: jnp.where(due, new, old),
            (balance, temperature),
            (state["balance"], state["temperature"]),
        )
        new = {**state, "balance": chosen[0], "temperature": chosen[1], "steps": state["steps"] + 1}
        metrics.update(self.beta_statistics(new, agent, agent_state, batch))
        metrics["temperature"] = new["temperature"]()
        return new, {f"famo2o/{k}": v for k, v in metrics.items()}

    def beta_statistics(
        self, state: dict, agent: Any, agent_state: Any, batch: Transition
    ) -> dict[str, jax.Array]:
        """The deterministic balance β on the batch's states, and its correlation with
        min Q(s, a) at the batch's actions."""
        beta = self.balance_beta(state, batch.observations, None)[0]
        q = agent.q_value(agent_state, batch.observations, batch.actions)
        centred_beta, centred_q = beta - beta.mean(), q - q.mean()
        corr = jnp.mean(centred_beta * centred_q) / (beta.std() * q.std() + 1e-8)
        return {
            "beta_mean": beta.mean(),
            "beta_std": beta.std(),
            "beta_min": beta.min(),
            "beta_max": beta.max(),
            "beta_q_corr": corr,
        }

    # --- on the host ----------------------------------------------------------------------
    @classmethod
    def agent_defaults(cls, config: FamO2OConfig, algo: str) -> dict[str, Any]:
        """IQL: a constant actor rate (methods.md §1.6: the official code's rate is 0 online;
        no decay is the AntMaze config's and our locomotion choice). CQL on locomotion: the
        official FamO2O-CQL networks (2 x 256, a LayerNorm critic) and min_q_weight 1."""
        if not config.agent_defaults:
            return {}
        if algo == "iql":
            return {"actor_lr_schedule": "constant"}
        if algo == "cql" and config.domain == "locomotion":
            return {
                "actor_hidden_dims": (256, 256),
                "critic_hidden_dims": (256, 256),
                "critic_layer_norm": True,
                "cql_alpha": 1.0,
                "online_cql_alpha": 1.0,
            }
        return {}

    def check_agent(self, algo: str, agent: Any) -> None:
        if not isinstance(agent, (IQL, AWAC, CQL)):
            raise ConfigError(
                f"famo2o conditions an AWR (iql, awac) or CQL actor on β; {algo} is neither"
            )
        if isinstance(agent, IQL) and agent.config.deterministic_actor:
            raise ConfigError(
                "famo2o samples the universal policy's actions; IQL's deterministic_actor "
                "has none to sample"
            )

    def resolved(self, agent: Any) -> dict[str, Any]:
        """Range, update period and entropy for the agent's form and the domain (§1.4)."""
        c = self.config
        form = agent_form(agent)
        if form == "q":
            low, high, period = 0.5, 1.5, 1
        elif c.domain == "maze":
            low, high, period = 8.0, 14.0, 1
        else:
            low, high, period = 1.0, 5.0, 5
        low = low if c.beta_min is None else c.beta_min
        high = high if c.beta_max is None else c.beta_max
        if low >= high:
            raise ConfigError(f"famo2o's β range [{low}, {high}] is empty: set beta_min < beta_max")
        return {
            "low": low,
            "high": high,
            "period": period if c.balance_update_every is None else c.balance_update_every,
            "entropy": form == "awr" if c.balance_entropy is None else c.balance_entropy,
            "form": form,
        }

    def init_state(self, agent: Any, agent_state: Any, key: jax.Array, preprocess: Any) -> dict:
        c = self.config
        settings = self.resolved(agent)
        obs = jnp.zeros((1, self.obs_dim))
        if settings["form"] == "q":  # the CQL code's balance model: its policy network
            module: nn.Module = CQLPolicy(c.balance_hidden_dims, 1)
        else:
            module = BalancePolicy(c.balance_hidden_dims)
        balance_key, temperature_key = jax.random.split(key)
        return {
            "balance": TrainState.create(module, balance_key, (obs,), adam(c.balance_lr)),
            "temperature": TrainState.create(
                Temperature(c.temperature_init), temperature_key, (), adam(c.temperature_lr)
            ),
            "low": jnp.float32(settings["low"]),
            "high": jnp.float32(settings["high"]),
            "steps": jnp.int32(0),
            "online": jnp.bool_(False),
        }

    def start_online(self, state: dict) -> dict:
        return {**state, "online": jnp.ones_like(state["online"])}

    def on_chunk(self, agent, step: int, states, buffers: dict, seed: int):
        """Every ``histogram_every`` env steps: per seed, the histogram of the acting β over the
        states visited since the last one, and the mean min Q(s, a) per β bin."""
        every = self.config.histogram_every
        if step <= 0 or step % every != 0:
            return states, []
        buffer = buffers["online"] if "online" in buffers else buffers["replay"]
        own = states.extras[self.name]
        rows = []
        for s in range(np.shape(own["low"])[0]):
            state = jax.tree.map(lambda x, s=s: x[s], states)
            data = jax.tree.map(lambda x, s=s: x[s], buffer.data)
            pointer, capacity = int(buffer.pointer[s]), int(data.rewards.shape[0])
            recent = (pointer - 1 - np.arange(min(every, int(buffer.size[s])))) % capacity
            obs, actions = data.observations[recent], data.actions[recent]
            beta, q = jax.jit(self._beta_and_q, static_argnums=0)(
                agent, state, obs, actions, jax.random.PRNGKey(seed + s)
            )
            low, high = float(own["low"][s]), float(own["high"][s])
            rows.append(
                {
                    "phase": "famo2o_beta",
                    "seed": seed + s,
                    **beta_histogram(np.asarray(beta), np.asarray(q), low, high),
                }
            )
        return states, rows

    def _beta_and_q(self, agent, agent_state, observations, actions, key):
        own = agent_state.extras[self.name]
        beta = self.acting_beta(own, observations, key)
        return beta, agent.q_value(agent_state, observations, actions)

    def summary(self, rows: list[dict]) -> dict[str, Any]:
        online = [r for r in rows if r.get("phase") == "online"]
        return {"final_beta_mean": online[-1].get("train/famo2o/beta_mean")} if online else {}

    @classmethod
    def report_figure(cls, runs: list[Any], path: Path, dataset: str) -> Path | None:
        """Per run: the acting β over the states visited before its last histogram (seeds
        pooled), and the mean min Q(s, a) of each β bin (β against value)."""
        pooled = {}
        for run in runs:
            rows = [r for r in run.finetune if r.get("phase") == HISTOGRAM_PHASE]
            if rows:
                last = max(r["step"] for r in rows)
                pooled[f"{run.algo}/{run.method}"] = pool_histograms(
                    [r for r in rows if r["step"] == last]
                ) + (last,)
        if not pooled:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=110)
        for label, (edges, share, q_mean, step) in pooled.items():
            centres = (edges[:-1] + edges[1:]) / 2
            (line,) = left.step(centres, share, where="mid", label=f"{label} (step {step})")
            right.plot(centres, q_mean, marker="o", ms=3, color=line.get_color())
        left.set(title="acting β over visited states", xlabel="β", ylabel="share of states")
        right.set(title="mean min Q(s, a) per β bin", xlabel="β", ylabel="Q")
        for ax in (left, right):
            ax.grid(alpha=0.3)
        left.legend(fontsize=7)
        fig.suptitle(f"famo2o β histogram — {dataset}", fontsize=10)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
        plt.close(fig)
        return path


def pool_histograms(rows: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(edges, share of states per bin, mean Q per bin — NaN where empty) of histogram rows
    (``beta_histogram``) with the same edges, pooled over seeds."""
    edges = np.asarray(rows[0]["edges"], float)
    counts = np.sum([r["counts"] for r in rows], axis=0).astype(float)
    q_sums = np.sum(
        [[(q or 0.0) * n for q, n in zip(r["q_mean"], r["counts"], strict=True)] for r in rows],
        axis=0,
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        q_mean = np.where(counts > 0, q_sums / np.maximum(counts, 1), np.nan)
    return edges, counts / max(counts.sum(), 1.0), q_mean


def beta_histogram(
    beta: np.ndarray, q: np.ndarray, low: float, high: float, bins: int = HISTOGRAM_BINS
) -> dict[str, Any]:
    """Counts of β in ``bins`` equal bins over [low, high] (values outside land in the end
    bins), and the mean Q of each bin (None where empty)."""
    edges = np.linspace(low, high, bins + 1)
    index = np.clip(np.searchsorted(edges, beta, side="right") - 1, 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    q_sums = np.bincount(index, weights=q, minlength=bins)
    return {
        "states": int(beta.size),
        "edges": [round(float(e), 6) for e in edges],
        "counts": [int(n) for n in counts],
        "q_mean": [float(s / n) if n else None for s, n in zip(q_sums, counts, strict=True)],
        "beta_mean": float(beta.mean()) if beta.size else None,
    }
