"""Conservative Q-Learning, CQL(H) (Kumar et al. 2020), following CORL's ``finetune/cql.py``.

One update; every loss is computed from the state at the start of the step, as CORL computes all
its losses before stepping any optimizer:
  1. actor: E[α log π(ã|s) − min_i Q_i(s, ã)], ã ~ π(·|s) reparameterised (for the first
     ``bc_steps`` updates: E[α log π(ã|s) − log π(a|s)] on the dataset's actions instead);
  2. temperature α (SAC's, target entropy −|A|) from the same log-probabilities;
  3. twin critic: TD error to y = r + γ(1−d)·V(s') through the hooks, with
     V(s') = min_i Q̄_i(s', a'), a' ~ π(·|s') (``cql_max_target_backup``: a' is the best of n
     sampled actions under min_i Q̄_i; ``backup_entropy``: minus α log π(a'|s')), plus the
     conservative term, per member i,
         α_cql · E_B[ w(s,a) · clip(τ·logsumexp_ã(Q_i(s,ã)/τ) − Q_i(s,a)) ]
     over ã in three sets of n actions each, all evaluated at s: uniform on [−1, 1]^|A|, drawn
     from π(·|s) and drawn from π(·|s'); with ``cql_importance_sample`` each Q is divided by
     its sampling density (Q − log density) and the dataset action is left out of the
     logsumexp. w is ``hooks.conservative_weights`` (SAMG's p(s,a)) or 1. Cal-QL (calql.py)
     bounds the policy-action Q-values below by the Monte-Carlo return before the logsumexp;
  4. ``cql_lagrange``: α_cql is scaled by a learned α' ∈ [0, 1e6] whose loss
     −α'·α_cql·(gap − target_action_gap) raises α' while the gap exceeds the target;
  5. Polyak-averaged target critics.
At the offline→online boundary ``for_online()`` switches α_cql to ``online_cql_alpha``.

A method that re-evaluates the bootstrap with other parameters (``value_with``: SAMG's frozen
offline critic) evaluates them at the same a', the one chosen under the agent's own target
critic, as methods.md §0.2 specifies (both critics at the same (s', a')).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

from o2o.core.agent import AgentConfig, CriticAgent, check_domain, ensemble_mse
from o2o.core.hooks import (
    NO_HOOKS,
    ActorInputs,
    Hooks,
    acting_observations,
    hook_key,
    with_policy_inputs,
)
from o2o.core.networks import CQLPolicy, TanhGaussian, Temperature, critic_ensemble
from o2o.core.train_state import TrainState, adam, copy_tree, polyak
from o2o.core.types import Transition
from o2o.errors import check, check_fields

MAX_LAGRANGE_MULTIPLIER = 1e6  # CORL clamps α' to [0, 1e6]


@dataclass(frozen=True)
class CQLConfig(AgentConfig):
    reward_conventions = {"locomotion": "none", "maze": "antmaze_cql", "adroit": "none"}
    actor_lr: float = 1e-4
    critic_lr: float = 3e-4  # also the Lagrange multiplier's learning rate, as in CORL
    temperature_lr: float | None = None  # None: actor_lr (CORL's alpha optimizer uses policy_lr)
    actor_hidden_dims: tuple[int, ...] = (256, 256, 256)
    critic_hidden_dims: tuple[int, ...] = (256, 256, 256)  # maze: 5 x 256
    critic_layer_norm: bool = False  # LayerNorm after each hidden layer (FamO2O-CQL's critic)
    num_critics: int = 2
    discount: float = 0.99
    tau: float = 5e-3
    auto_alpha: bool = True  # CORL's use_automatic_entropy_tuning; off: α = alpha_multiplier
    alpha_multiplier: float = 1.0
    target_entropy: float | None = None  # None: -|A|
    backup_entropy: bool = False
    bc_steps: int = 0
    log_std_multiplier: float = 1.0  # initial values of the actor's learned log-std scale/shift
    log_std_offset: float = -1.0
    cql_alpha: float = 10.0
    online_cql_alpha: float = 10.0
    cql_n_actions: int = 10
    cql_importance_sample: bool = True
    cql_temp: float = 1.0
    cql_lagrange: bool = False
    cql_target_action_gap: float = -1.0
    cql_alpha_prime_init: float = math.e  # CORL initialises log α' at 1.0
    cql_max_target_backup: bool = False
    cql_clip_diff_min: float = -math.inf
    cql_clip_diff_max: float = math.inf

    def __post_init__(self) -> None:
        check_fields(
            self,
            positive=(
                "actor_lr",
                "critic_lr",
                "cql_temp",
                "cql_alpha_prime_init",
                "tau",
                "num_critics",
                "cql_n_actions",
            ),
            non_negative=("cql_alpha", "online_cql_alpha", "alpha_multiplier", "bc_steps"),
            optional_positive=("temperature_lr",),
            unit_interval=("discount", "tau"),
            hidden_dims=("actor_hidden_dims", "critic_hidden_dims"),
        )
        check(
            self.cql_clip_diff_min < self.cql_clip_diff_max,
            f"cql_clip_diff_min ({self.cql_clip_diff_min}) must be below cql_clip_diff_max "
            f"({self.cql_clip_diff_max})",
        )

    @classmethod
    def for_domain(cls, domain: str = "locomotion", **overrides: Any):
        """CORL's settings: locomotion = ``finetune/cql.py``'s defaults (3x256 critics as in
        CORL's offline CQL); maze = its AntMaze configs (5x256 critics, α_cql 5 offline and
        online, Lagrange with target gap 0.8, max-target backup, gap clipped below at -200);
        adroit = its Adroit configs (``configs/finetune/{cql,cal_ql}/*/cloned_v1.yaml``:
        3x256 critics, α_cql 1 offline and online, no Lagrange, max-target backup, gap clipped
        below at -200). The maze reward convention (10r - 5) is the pipeline's; Adroit rewards
        stay raw."""
        check_domain(domain)
        preset: dict[str, Any] = {}
        if domain == "maze":
            preset = dict(
                critic_hidden_dims=(256,) * 5,
                cql_alpha=5.0,
                online_cql_alpha=5.0,
                cql_lagrange=True,
                cql_target_action_gap=0.8,
                cql_max_target_backup=True,
                cql_clip_diff_min=-200.0,
            )
        if domain == "adroit":
            preset = dict(
                cql_alpha=1.0,
                online_cql_alpha=1.0,
                cql_max_target_backup=True,
                cql_clip_diff_min=-200.0,
            )
        return cls(**{**preset, **overrides})

    def online_overrides(self) -> dict[str, Any]:
        """The config switches made at the offline→online boundary."""
        return {"cql_alpha": self.online_cql_alpha}

    def create(self, hooks: Hooks = NO_HOOKS) -> CQL:
        return CQL(self, hooks)


class CQLActionSets(NamedTuple):
    """The actions CQL's logsumexp ranges over, per batch row: ``(B, n, |A|)`` actions and
    ``(B, n)`` log-densities of the policy samples (no gradient)."""

    random: jax.Array
    current: jax.Array
    current_log_probs: jax.Array
    next: jax.Array
    next_log_probs: jax.Array


def sample_repeated(dist: TanhGaussian, key: jax.Array, num: int) -> tuple[jax.Array, jax.Array]:
    """``num`` samples per row of a batched policy: ``(B, num, |A|)`` actions, ``(B, num)``
    log-probabilities; the network runs once per row, not once per sample."""
    shape = (dist.mean.shape[0], num, dist.mean.shape[-1])
    widened = TanhGaussian(
        jnp.broadcast_to(dist.mean[:, None], shape), jnp.broadcast_to(dist.log_std[:, None], shape)
    )
    return widened.sample_and_log_prob(key)


def repeat_rows(x: jax.Array, num: int) -> jax.Array:
    """``(B, d) -> (B, num, d)``: each row repeated, to pair with ``num`` actions per row."""
    return jnp.broadcast_to(x[:, None], (x.shape[0], num, x.shape[-1]))


def conservative_gap(
    q_data: jax.Array,
    q_random: jax.Array,
    q_current: jax.Array,
    q_next: jax.Array,
    sets: CQLActionSets,
    temperature: float,
    importance_sample: bool,
    lower_bound: jax.Array | None = None,
) -> jax.Array:
    """τ·logsumexp_ã(Q(s,ã)/τ) − Q(s,a) per critic member and row (``(M, B)``), unclipped.

    ``q_data``: ``(M, B)`` at the dataset actions; ``q_random/current/next``: ``(M, B, n)`` at
    the three action sets. ``lower_bound`` (Cal-QL): ``(B,)`` values that the policy-action
    Q-values are clipped below at, before the importance weights."""
    if lower_bound is not None:
        q_current = jnp.maximum(q_current, lower_bound[None, :, None])
        q_next = jnp.maximum(q_next, lower_bound[None, :, None])
    if importance_sample:
        act_dim = sets.random.shape[-1]
        random_log_density = act_dim * math.log(0.5)  # uniform on [-1, 1]^|A|
        candidates = [
            q_random - random_log_density,
            q_next - sets.next_log_probs[None],
            q_current - sets.current_log_probs[None],
        ]
    else:
        candidates = [q_random, q_data[..., None], q_next, q_current]
    logsumexp = temperature * jax.nn.logsumexp(
        jnp.concatenate(candidates, axis=-1) / temperature, axis=-1
    )
    return logsumexp - q_data


@struct.dataclass
class CQLState:
    actor: TrainState
    critic: TrainState
    target_critic_params: dict
    temperature: TrainState
    lagrange_multiplier: TrainState  # α' (trained only with cql_lagrange)
    target_entropy: jax.Array
    step: jax.Array
    extras: Any = None  # fine-tuning method state, read by the hooks


@dataclass(frozen=True)
class CQL(CriticAgent):
    config: CQLConfig = field(default_factory=CQLConfig)
    hooks: Hooks = NO_HOOKS

    def init(self, key: jax.Array, obs_dim: int, act_dim: int) -> CQLState:
        c = self.config
        actor_key, critic_key, temp_key, lagrange_key = jax.random.split(key, 4)
        obs, act = jnp.zeros((1, obs_dim)), jnp.zeros((1, act_dim))
        policy = CQLPolicy(c.actor_hidden_dims, act_dim, c.log_std_multiplier, c.log_std_offset)
        actor_obs = jnp.zeros((1, obs_dim + self.hooks.policy_input_dim))
        actor = TrainState.create(policy, actor_key, (actor_obs,), adam(c.actor_lr))
        critic = TrainState.create(
            critic_ensemble(c.critic_hidden_dims, c.num_critics, c.critic_layer_norm),
            critic_key,
            (obs, act),
            adam(c.critic_lr),
        )
        temperature_lr = c.actor_lr if c.temperature_lr is None else c.temperature_lr
        temperature = TrainState.create(Temperature(1.0), temp_key, (), adam(temperature_lr))
        multiplier = TrainState.create(
            Temperature(c.cql_alpha_prime_init), lagrange_key, (), adam(c.critic_lr)
        )
        target_entropy = -float(act_dim) if c.target_entropy is None else c.target_entropy
        return CQLState(
            actor=actor,
            critic=critic,
            target_critic_params=copy_tree(critic.params),
            temperature=temperature,
            lagrange_multiplier=multiplier,
            target_entropy=jnp.float32(target_entropy),
            step=jnp.int32(0),
        )

    def for_online(self) -> CQL:
        return replace(self, config=replace(self.config, **self.config.online_overrides()))

    # -- pieces -------------------------------------------------------------------------------

    def alpha(self, state: CQLState) -> jax.Array:
        """The entropy temperature used in the losses (no gradient)."""
        c = self.config
        if not c.auto_alpha:
            return jnp.float32(c.alpha_multiplier)
        return jax.lax.stop_gradient(state.temperature() * c.alpha_multiplier)

    def alpha_prime(self, state: CQLState, params=None) -> jax.Array:
        return jnp.clip(state.lagrange_multiplier(params=params), 0.0, MAX_LAGRANGE_MULTIPLIER)

    def lower_bound(self, batch: Transition) -> jax.Array | None:
        """Values the policy-action Q-values are clipped below at in the logsumexp (Cal-QL)."""
        return None

    def next_value_fn(self, state: CQLState, batch: Transition, key: jax.Array):
        c = self.config
        alpha = self.alpha(state)
        dist = state.actor(batch.actor_next_observations)
        if c.cql_max_target_backup:
            # n actions per s'; a' is the best of them under the agent's own min_i Q̄_i.
            actions, log_probs = sample_repeated(dist, key, c.cql_n_actions)
            next_obs = repeat_rows(batch.next_observations, c.cql_n_actions)
            q = state.critic(next_obs, actions, params=state.target_critic_params).min(axis=0)
            best = jnp.argmax(q, axis=-1)[:, None]
            next_actions = jnp.take_along_axis(actions, best[..., None], axis=1)[:, 0]
            next_log_probs = jnp.take_along_axis(log_probs, best, axis=-1)[:, 0]
        else:
            next_actions, next_log_probs = dist.sample_and_log_prob(key)

        def value_with(params) -> jax.Array:
            q = state.critic(batch.next_observations, next_actions, params=params).min(axis=0)
            return q - alpha * next_log_probs if c.backup_entropy else q

        return value_with, next_actions, next_log_probs

    def cql_action_sets(self, state: CQLState, batch: Transition, key: jax.Array) -> CQLActionSets:
        n = self.config.cql_n_actions
        random_key, current_key, next_key = jax.random.split(key, 3)
        random = jax.random.uniform(
            random_key,
            (batch.actions.shape[0], n, batch.actions.shape[-1]),
            minval=-1.0,
            maxval=1.0,
        )
        current, current_log_probs = sample_repeated(
            state.actor(batch.actor_observations), current_key, n
        )
        following, next_log_probs = sample_repeated(
            state.actor(batch.actor_next_observations), next_key, n
        )
        sets = CQLActionSets(random, current, current_log_probs, following, next_log_probs)
        return jax.lax.stop_gradient(sets)

    def conservative_loss(
        self,
        state: CQLState,
        batch: Transition,
        q_data: jax.Array,
        sets: CQLActionSets,
        critic_params,
        hook: jax.Array,
    ) -> tuple[jax.Array, dict]:
        """The CQL term added to the critic loss, and its metrics (``cql_gap``: the mean
        weighted, clipped gap over members, which the Lagrange multiplier reads)."""
        c = self.config
        n = c.cql_n_actions
        # One critic call for all 3n actions of every row, all at s.
        actions = jnp.concatenate([sets.random, sets.current, sets.next], axis=1)
        q_all = state.critic(repeat_rows(batch.observations, 3 * n), actions, params=critic_params)
        q_random, q_current, q_next = q_all[..., :n], q_all[..., n : 2 * n], q_all[..., 2 * n :]
        lower_bound = self.lower_bound(batch)
        gap = conservative_gap(
            q_data,
            q_random,
            q_current,
            q_next,
            sets,
            c.cql_temp,
            c.cql_importance_sample,
            lower_bound,
        )
        gap = jnp.clip(gap, c.cql_clip_diff_min, c.cql_clip_diff_max)
        weights = self.hooks.conservative_weights(state.extras, batch, hook)
        if weights is not None:
            gap = gap * weights[None]
        member_gaps = gap.mean(axis=-1)  # (M,)
        if c.cql_lagrange:
            scale = jax.lax.stop_gradient(self.alpha_prime(state)) * c.cql_alpha
            loss = scale * jnp.sum(member_gaps - c.cql_target_action_gap)
        else:
            loss = c.cql_alpha * jnp.sum(member_gaps)
        metrics = {
            "cql_loss": loss,
            "cql_gap": jax.lax.stop_gradient(member_gaps.mean()),
            "cql_q_random": q_random.mean(),
            "cql_q_current": q_current.mean(),
            "cql_q_next": q_next.mean(),
        }
        if lower_bound is not None:
            below = jnp.concatenate([q_current, q_next], axis=-1) < lower_bound[None, :, None]
            metrics["calql_bound_rate"] = below.mean()
        return loss, metrics

    # -- losses -------------------------------------------------------------------------------

    def critic_loss(
        self, state: CQLState, batch: Transition, key: jax.Array, critic_params
    ) -> tuple[jax.Array, dict]:
        target_key, sets_key = jax.random.split(key)
        target = self.critic_target(state, batch, target_key)
        q = state.critic(batch.observations, batch.actions, params=critic_params)
        td_loss = ensemble_mse(q, target)
        sets = self.cql_action_sets(state, batch, sets_key)
        hook = hook_key(target_key)  # the key the target's hooks got: one per step
        conservative, cql_metrics = self.conservative_loss(
            state, batch, q, sets, critic_params, hook
        )
        penalty, metrics = self.hooks.critic_penalty(state.extras, batch, critic_params, hook)
        loss = td_loss + conservative + penalty
        return loss, {
            "critic_loss": td_loss,
            "q_mean": q.mean(),
            "target_mean": target.mean(),
            **cql_metrics,
            **metrics,
        }

    def actor_loss(
        self, state: CQLState, batch: Transition, key: jax.Array, actor_params
    ) -> tuple[jax.Array, dict]:
        c = self.config
        dist = state.actor(batch.actor_observations, params=actor_params)
        actions, log_probs = dist.sample_and_log_prob(key)
        alpha = self.alpha(state)
        q = state.critic(batch.observations, actions).min(axis=0)
        weight = self.hooks.improvement_weight(state.extras, batch)
        loss = jnp.mean(alpha * log_probs - (q if weight is None else weight * q))
        if c.bc_steps > 0:
            bc_loss = jnp.mean(alpha * log_probs - dist.log_prob(batch.actions))
            loss = jnp.where(state.step < c.bc_steps, bc_loss, loss)
        penalty, metrics = self.hooks.actor_penalty(
            state.extras, ActorInputs(batch, actions, log_probs, actor_params, state)
        )
        return loss + penalty, {"actor_loss": loss, "entropy": -log_probs.mean(), **metrics}

    def temperature_loss(
        self, state: CQLState, entropy: jax.Array, temperature_params
    ) -> tuple[jax.Array, dict]:
        log_temperature = jnp.log(state.temperature(params=temperature_params))
        loss = log_temperature * jax.lax.stop_gradient(entropy - state.target_entropy)
        return loss, {"temperature_loss": loss}

    def lagrange_loss(
        self, state: CQLState, cql_gap: jax.Array, multiplier_params
    ) -> tuple[jax.Array, dict]:
        """−α'·α_cql·(gap − target gap): gradient descent raises α' while the gap is above the
        target and lowers it below (CORL's alpha_prime_loss, the mean over the twin critics)."""
        c = self.config
        alpha_prime = self.alpha_prime(state, multiplier_params)
        loss = (
            -alpha_prime * c.cql_alpha * (jax.lax.stop_gradient(cql_gap) - c.cql_target_action_gap)
        )
        return loss, {"alpha_prime": alpha_prime, "alpha_prime_loss": loss}

    def update(self, state: CQLState, batch: Transition, key: jax.Array) -> tuple[CQLState, dict]:
        c = self.config
        batch = with_policy_inputs(self.hooks, state.extras, batch, key)
        actor_key, critic_key = jax.random.split(key)
        actor, actor_metrics = state.actor.minimize(
            lambda p: self.actor_loss(state, batch, actor_key, p)
        )
        critic, critic_metrics = state.critic.minimize(
            lambda p: self.critic_loss(state, batch, critic_key, p)
        )
        metrics = {**actor_metrics, **critic_metrics, "alpha": self.alpha(state)}
        temperature, multiplier = state.temperature, state.lagrange_multiplier
        if c.auto_alpha:
            temperature, temp_metrics = temperature.minimize(
                lambda p: self.temperature_loss(state, actor_metrics["entropy"], p)
            )
            metrics.update(temp_metrics)
        if c.cql_lagrange:
            multiplier, lagrange_metrics = multiplier.minimize(
                lambda p: self.lagrange_loss(state, critic_metrics["cql_gap"], p)
            )
            metrics.update(lagrange_metrics)
        state = state.replace(
            actor=actor,
            critic=critic,
            target_critic_params=polyak(state.target_critic_params, critic.params, c.tau),
            temperature=temperature,
            lagrange_multiplier=multiplier,
            step=state.step + 1,
        )
        return state, metrics

    def act(
        self, state: CQLState, observations: jax.Array, key: jax.Array, deterministic: bool
    ) -> jax.Array:
        dist = state.actor(
            acting_observations(self.hooks, state.extras, observations, key, deterministic)
        )
        if deterministic:
            return dist.mode()
        return dist.sample_and_log_prob(key)[0]
