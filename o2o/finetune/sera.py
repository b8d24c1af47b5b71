"""SERA: reward augmentation with a Q-conditioned state entropy (Zhang et al., arXiv 2310.19805;
renamed QCSE in its v4). docs/sera.md; methods.md §3.

Online only (offline pre-training is untouched), SERA replaces the reward of the base
algorithm's critic target:

    y = r_mod + γ(1-d) · V(s'),    r_mod = r + λ · tanh(r_int)

where r_int is VCSE's KSG estimate of the state entropy conditioned on the pre-trained
critic's Q̂(s, a) = min(Q_1, Q_2)(s, a), computed per sample within the sampled batch (B rows,
the batch is both the sample and the reference set):

    D[i,j] = max(‖s_i - s_j‖₂, |Q̂_i - Q̂_j|)      (the max-norm over the pair (s, Q̂))
    ε_i    = k-th smallest of D[i, :]            (VCSE: j = i itself is among them, at 0)
    n_v(i) = #{j : |Q̂_i - Q̂_j| < ε_i}           (VCSE: counts i itself)
    r_int  = ψ(n_v(i) + 1) / d_s + log(2 ε_i + 1e-5)

Actor losses, the CQL/Cal-QL regulariser, IQL's V and every bootstrap are the base's own.

No official code exists, so what the paper leaves open is a named option here, default in
brackets: ``include_self`` [True: VCSE's self-neighbour quirk, so ε_i is the distance to the
(k-1)-th *other* point], ``raw_states`` [False: the states the agent sees, normalised],
``critic`` [frozen: a copy of the critic at the end of offline training; ``live``: the
critic being fine-tuned; ``random``: a freshly initialised one, the paper's ablation],
``condition`` [q; ``v``: VCSE's V(s), the agent's own bootstrap value evaluated at s],
``squash`` [tanh], ``k`` [10, hopper's; docs/sera.md has the per-domain table] and λ =
``intrinsic_scale`` [1].

The estimate is computed where the reward hook runs (inside the fused update, O(B²) pairwise
distances). Its diagnostics are logged by SERA's own update after the agent's: the same
estimator on the same batch, exact for the default frozen critic (where XLA computes it once)
and one gradient step later for ``critic=live`` and for ``v``'s actor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import digamma

from o2o.core.hooks import TargetInputs
from o2o.core.types import Transition
from o2o.errors import ConfigError, check, check_fields
from o2o.finetune.base import Diagnostic, Method, observation_statistics, raw_observations

LOG_OFFSET = 1e-5  # VCSE's log(2ε + 1e-5): finite where a duplicated point makes ε = 0
VALUE_KEY = 0x5E7A  # folded into the hook key for the a ~ π(·|s) of condition="v"


@dataclass(frozen=True)
class SERAConfig:
    intrinsic_scale: float = 1.0  # λ in r + λ·tanh(r_int); the paper: 1 is generally enough
    # The "state cluster size" of the kNN estimate. The paper's ablation: hopper 10, walker2d
    # 20, antmaze-large-diverse ≈ 25 (docs/sera.md has the table, halfcheetah included).
    k: int = 10
    condition: Literal["q", "v"] = "q"  # v: VCSE's V(s) (the agent's bootstrap value at s)
    critic: Literal["frozen", "live", "random"] = "frozen"  # which critic gives Q̂ (or V̂)
    squash: Literal["tanh", "none"] = "tanh"  # none: r + λ·r_int (the paper's ablation)
    include_self: bool = True  # VCSE's kNN search and n_v count include the point itself
    raw_states: bool = False  # distances on the env's raw states instead of normalised ones

    def __post_init__(self) -> None:
        check_fields(
            self,
            positive=("k",),
            non_negative=("intrinsic_scale",),
            choices={
                "condition": ("q", "v"),
                "critic": ("frozen", "live", "random"),
                "squash": ("tanh", "none"),
            },
        )
        check(isinstance(self.k, int), f"k must be an integer, got {self.k!r}")


# --- the estimator --------------------------------------------------------------------------


class EntropyEstimate(NamedTuple):
    """Per sample of a batch: the intrinsic reward r_int, the k-th neighbour distance ε_i and
    the count n_v(i) of samples whose conditioning value lies within ε_i."""

    reward: jax.Array
    eps: jax.Array
    n_v: jax.Array


def check_k(k: int, batch_size: int) -> None:
    """One line if the k-th neighbour cannot be searched within a batch of ``batch_size``."""
    check(
        0 < k < batch_size,
        f"SERA's k ({k}) must be below the batch size ({batch_size}): the k-th neighbour is "
        "searched within each batch",
    )


def kth_smallest(values: jax.Array, k: int) -> jax.Array:
    """The k-th smallest entry of each row, counting repeated values (as a sort would).

    k passes, each taking out every entry equal to the row's minimum and counting them: on
    XLA's CPU backend this is ~6x faster than ``lax.top_k`` or a sort at 256 x 256, k = 10,
    and it is exact."""

    def take_out_the_minimum(_, carry):
        remaining, seen, kth = carry
        smallest = jnp.min(remaining, axis=1)
        ties = remaining == smallest[:, None]
        now = seen + jnp.sum(ties, axis=1)
        kth = jnp.where((seen < k) & (now >= k), smallest, kth)
        return jnp.where(ties, jnp.inf, remaining), now, kth

    rows = values.shape[0]
    start = (values, jnp.zeros(rows, jnp.int32), jnp.zeros(rows, values.dtype))
    return jax.lax.fori_loop(0, k, take_out_the_minimum, start)[2]


def knn_conditional_entropy(
    states: jax.Array, values: jax.Array, k: int, include_self: bool = True
) -> EntropyEstimate:
    """VCSE's KSG estimate of H(s | v) per sample of a batch, the batch its own reference set.

    ``states``: (B, d_s); ``values``: (B,) the conditioning value (Q̂(s,a) for SERA, V(s) for
    VCSE). ``include_self``: the point itself is one of its k neighbours (at distance 0) and
    is counted in n_v, as in VCSE's code; False leaves it out of both."""
    n = states.shape[0]
    check_k(k, n)  # at trace time: batch shapes are static
    # Explicit differences, not the Gram-matrix shortcut: duplicated states must be at
    # distance exactly 0 (ε and the strict n_v count are compared across rows).
    state_dist = jnp.sqrt(jnp.sum((states[:, None, :] - states[None, :, :]) ** 2, axis=-1))
    value_dist = jnp.abs(values[:, None] - values[None, :])
    dist = jnp.maximum(state_dist, value_dist)
    if not include_self:
        self_pair = jnp.eye(n, dtype=bool)
        dist = jnp.where(self_pair, jnp.inf, dist)
        value_dist = jnp.where(self_pair, jnp.inf, value_dist)
    eps = kth_smallest(dist, k)
    n_v = jnp.sum(value_dist < eps[:, None], axis=1)
    reward = digamma(n_v + 1.0) / states.shape[-1] + jnp.log(2.0 * eps + LOG_OFFSET)
    return EntropyEstimate(reward, eps, n_v)


# --- the method -----------------------------------------------------------------------------


class SERA(Method):
    name = "sera"
    config_class = SERAConfig
    # state_update: SERA owns no network; its update only logs the estimator's diagnostics.
    slots = frozenset({"reward", "state_update"})
    diagnostics = (
        Diagnostic("online", "train/sera/r_int_mean", "mean intrinsic reward r_int"),
        Diagnostic("online", "train/sera/r_int_std", "std of r_int within a batch"),
        Diagnostic(
            "online",
            "train/sera/bonus_share",
            "share of the reward from SERA: mean|λ·tanh r_int| / (mean|r| + mean|λ·tanh r_int|)",
        ),
        Diagnostic(
            "online", "train/sera/eps_mean", "mean k-th neighbour distance ε", log_scale=True
        ),
        Diagnostic("online", "train/sera/n_v_mean", "mean n_v (samples with |ΔQ̂| < ε)"),
    )

    def __init__(self, config: SERAConfig | None = None, obs_dim: int = 0, act_dim: int = 0):
        super().__init__(config or SERAConfig(), obs_dim, act_dim)

    # --- the conditioning value -------------------------------------------------------------
    def conditioner_params(self, agent: Any, agent_state: Any) -> Any:
        """The parameters Q̂ (the critic ensemble) or V̂ (what the agent bootstraps from: the
        critic, V for IQL) are evaluated with."""
        if self.config.condition == "q":
            return agent.q_params(agent_state)
        return agent.bootstrap_params(agent_state)

    def conditioning(
        self, state: dict, agent: Any, agent_state: Any, batch: Transition, key: jax.Array
    ) -> jax.Array:
        """(B,) Q̂(s, a) = min_i Q_i(s, a), or V̂(s): the agent's own bootstrap value at s
        (IQL: its V network; CQL, Cal-QL, SAC, AWAC: min_i Q_i(s, a'), a' ~ π(·|s), with the
        entropy term where the agent's target has one; TD3+BC: at its smoothed target action)."""
        params = state.get("critic_params")  # None: the live critic
        if self.config.condition == "q":
            return agent.q_value(agent_state, batch.observations, batch.actions, params)
        if params is None:
            params = agent.bootstrap_params(agent_state)
        at_s = batch._replace(next_observations=batch.observations)
        return agent.bootstrap_value(agent_state, at_s, jax.random.fold_in(key, VALUE_KEY), params)

    def estimate(
        self, state: dict, agent: Any, agent_state: Any, batch: Transition, key: jax.Array
    ) -> EntropyEstimate:
        c = self.config
        states = raw_observations(state, batch.observations) if c.raw_states else batch.observations
        values = self.conditioning(state, agent, agent_state, batch, key)
        return knn_conditional_entropy(
            jax.lax.stop_gradient(states), jax.lax.stop_gradient(values), c.k, c.include_self
        )

    def bonus(self, intrinsic: jax.Array) -> jax.Array:
        """λ·tanh(r_int) (λ·r_int without the squash)."""
        squashed = jnp.tanh(intrinsic) if self.config.squash == "tanh" else intrinsic
        return self.config.intrinsic_scale * squashed

    # --- hooks ------------------------------------------------------------------------------
    def reward(self, state: dict, inputs: TargetInputs) -> jax.Array:
        if inputs.agent is None:
            raise ConfigError("SERA conditions on the agent's critic, but the target has no agent")
        batch = inputs.batch
        estimate = self.estimate(state, inputs.agent, inputs.agent_state, batch, inputs.key)
        return batch.rewards + self.bonus(estimate.reward)

    def update(
        self, state: dict, agent: Any, agent_state: Any, batch: Transition, key: jax.Array
    ) -> tuple[dict, dict]:
        """No network to train: the estimator's statistics on this step's batch (``key`` is
        not the target's, so ``condition=v`` draws its a' ~ π(·|s) afresh)."""
        estimate = self.estimate(state, agent, agent_state, batch, key)
        return state, self.metrics(estimate, batch.rewards)

    def metrics(self, estimate: EntropyEstimate, rewards: jax.Array) -> dict[str, jax.Array]:
        """Per-batch statistics: r_int, the bonus and its share of the reward's magnitude
        (mean|bonus| / (mean|r| + mean|bonus|), in [0, 1]: 0.5 = the bonus weighs as much as
        the env reward), ε and n_v."""
        bonus = self.bonus(estimate.reward)
        bonus_size = jnp.mean(jnp.abs(bonus))
        n_v = estimate.n_v.astype(jnp.float32)
        return {
            "sera/r_int_mean": estimate.reward.mean(),
            "sera/r_int_std": estimate.reward.std(),
            "sera/r_int_min": estimate.reward.min(),
            "sera/r_int_max": estimate.reward.max(),
            "sera/bonus_mean": bonus.mean(),
            "sera/bonus_share": bonus_size / (jnp.mean(jnp.abs(rewards)) + bonus_size + 1e-12),
            "sera/eps_mean": estimate.eps.mean(),
            "sera/eps_min": estimate.eps.min(),
            "sera/eps_max": estimate.eps.max(),
            "sera/n_v_mean": n_v.mean(),
            "sera/n_v_min": n_v.min(),
            "sera/n_v_max": n_v.max(),
        }

    # --- on the host ------------------------------------------------------------------------
    def check_agent(self, algo: str, agent: Any) -> None:
        try:
            jax.eval_shape(
                lambda: self.conditioner_params(agent, agent.init(jax.random.PRNGKey(0), 1, 1))
            )
        except ConfigError:
            raise ConfigError(
                f"SERA conditions its reward on a critic's value; {algo} has no critic"
            ) from None

    def check_batch_size(self, batch_size: int) -> None:
        check_k(self.config.k, batch_size)

    def init_state(self, agent: Any, agent_state: Any, key: jax.Array, preprocess: Any) -> dict:
        c = self.config
        state: dict[str, Any] = (
            observation_statistics(preprocess, self.obs_dim) if c.raw_states else {}
        )
        if c.critic == "frozen":
            params = self.conditioner_params(agent, agent_state)
            state["critic_params"] = jax.tree.map(jnp.copy, params)
        elif c.critic == "random":
            fresh = agent.init(key, self.obs_dim, self.act_dim)
            state["critic_params"] = self.conditioner_params(agent, fresh)
        return state

    def summary(self, rows: list[dict]) -> dict[str, Any]:
        online = [r for r in rows if r.get("phase") == "online"]
        if not online:
            return {}
        return {"final_bonus_share": online[-1].get("train/sera/bonus_share")}
