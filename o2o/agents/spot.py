"""Supported Policy Optimization, SPOT (Wu et al. 2022), following CORL's ``finetune/spot.py``.

SPOT is TD3 whose actor is kept inside the support of the data by a density penalty from a
conditional VAE of the behaviour policy. Two phases:

0. **VAE pre-training** — the phase ``spot_vae`` (``phases()``): ``pretrain_update(state,
   batch, key)`` for ``config.vae_steps`` (CORL's 100k) updates on the offline data *before*
   the offline phase, run by the engine like every phase. It trains only the VAE (encoder q(z|s,a), decoder p(a|z,s), 750-750, latent 2|A|) on
   recon + β·KL (β = 0.5); ``update`` never changes the VAE.
1. **Actor-critic** — ``update``: twin critic on the TD3 target (target-policy smoothing,
   clipped double Q) through the hooks; every ``policy_delay`` updates the actor on
       −Q_1(s, π(s)) / mean|Q_1| + λ · E[−ELBO(s, π(s))]
   (the VAE frozen, the gradient flowing through it into π; ``iwae``: an importance-weighted
   −log-likelihood instead) and Polyak targets for actor and critics.

Online (``for_online()``): discount → ``online_discount`` (CORL: 0.995), the Adam moments of
actor and critic restart at the first online update (CORL re-creates both optimizers), and with
``lambd_cool`` λ decays as λ·max(λ_end, 1 − t/``lambd_cool_steps``) over the t-th online update
(the state records the step the online phase started; set ``lambd_cool_steps`` to the run's
online updates, CORL's ``online_iterations``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from o2o.agents.td3 import TD3, TD3Config
from o2o.core.agent import check_domain
from o2o.core.engine import Phase
from o2o.core.hooks import NO_HOOKS, ActorInputs, Hooks, acting_observations, with_policy_inputs
from o2o.core.train_state import TrainState, adam, copy_tree, polyak
from o2o.core.types import Transition
from o2o.core.vae import ConditionalVAE, elbo_terms, iwae_log_likelihood
from o2o.errors import check_fields

# CORL's AntMaze λ by maze size (``configs/finetune/spot/antmaze``); the "maze" preset uses medium.
MAZE_LAMBDA = {"umaze": 0.25, "medium": 0.05, "large": 0.025}
# CORL's Adroit (λ, λ_end) (``configs/finetune/spot/{pen,door}/cloned_v1.yaml``); the "adroit"
# preset uses pen's.
ADROIT_LAMBDA = {"pen": (0.25, 0.2), "door": (1.0, 0.5)}


@dataclass(frozen=True)
class SPOTConfig(TD3Config):
    """TD3's fields (``policy_delay`` is CORL's ``policy_freq``; ``noise_clip`` also clips the
    exploration noise, as CORL does) with CORL's SPOT learning rates, plus SPOT's own."""

    reward_conventions = {"locomotion": "none", "maze": "antmaze_minus_one", "adroit": "none"}
    actor_lr: float = 1e-4
    critic_lr: float = 3e-4
    actor_head_init: float | None = None  # output layer ~ U(-w, w) (CORL's actor_init_w)
    critic_head_init: float | None = None  # (CORL's critic_init_w)
    # Behaviour VAE
    vae_lr: float = 1e-3
    vae_hidden_dims: tuple[int, ...] = (750, 750)
    vae_latent_dim: int | None = None  # None: 2|A|
    beta: float = 0.5  # KL weight
    vae_steps: int = 100_000
    # Support constraint
    lambd: float = 1.0
    num_samples: int = 1  # latent samples per density estimate
    iwae: bool = False
    lambd_cool: bool = False
    lambd_end: float = 0.2  # floor of the cooling factor (not of λ itself)
    lambd_cool_steps: int = 1_000_000
    # Online phase
    online_discount: float = 0.995
    online_reset_optimizers: bool = True
    online_phase: bool = False  # set by for_online()

    budget_fields = {"lambd_cool_steps": "online"}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fields(
            self,
            positive=("vae_lr", "lambd_cool_steps", "num_samples"),
            non_negative=("beta", "lambd", "lambd_end", "vae_steps"),
            optional_positive=("vae_latent_dim", "actor_head_init", "critic_head_init"),
            unit_interval=("online_discount",),
            hidden_dims=("hidden_dims", "vae_hidden_dims"),
        )

    @classmethod
    def for_domain(cls, domain: str = "locomotion", **overrides: Any):
        """locomotion: CORL's ``finetune/spot.py`` defaults; maze: its AntMaze configs (λ for a
        medium maze, see ``MAZE_LAMBDA``; λ cooling; output layers initialised U(-1e-3, 1e-3)
        for the actor and U(-3e-3, 3e-3) for the critics); adroit: its Adroit configs (pen's λ
        and λ_end, see ``ADROIT_LAMBDA``; λ cooling; the same output-layer initialisation).
        The maze reward r - 1 is the pipeline's; Adroit rewards stay raw."""
        check_domain(domain)
        preset: dict[str, Any] = {}
        if domain == "maze":
            preset = dict(
                lambd=MAZE_LAMBDA["medium"],
                lambd_cool=True,
                actor_head_init=1e-3,
                critic_head_init=3e-3,
            )
        if domain == "adroit":
            lambd, lambd_end = ADROIT_LAMBDA["pen"]
            preset = dict(
                lambd=lambd,
                lambd_end=lambd_end,
                lambd_cool=True,
                actor_head_init=1e-3,
                critic_head_init=3e-3,
            )
        return cls(**{**preset, **overrides})

    def create(self, hooks: Hooks = NO_HOOKS) -> SPOT:
        return SPOT(self, hooks)


@struct.dataclass
class SPOTState:
    actor: TrainState
    critic: TrainState
    target_actor_params: dict
    target_critic_params: dict
    vae: TrainState
    step: jax.Array  # actor-critic updates (VAE pre-training does not count)
    online_start_step: jax.Array  # step of the first online update; -1 before it
    extras: Any = None  # fine-tuning method state, read by the hooks


def uniform_output_layer(params: dict, key: jax.Array, scale: float) -> dict:
    """CORL's ``weights_init`` of a head: the last Dense layer of the MLP in ``params`` (found by
    descending through single submodules such as ``VmapStateActionValue_0``) gets kernel and
    bias ~ U(−scale, scale), every ensemble member its own draw."""
    dense = [name for name in params if name.startswith("Dense_")]
    if not dense:
        name = next(iter(params))
        return {**params, name: uniform_output_layer(params[name], key, scale)}
    last = max(dense, key=lambda name: int(name.split("_")[1]))
    kernel_key, bias_key = jax.random.split(key)
    head = params[last]
    return {
        **params,
        last: {
            "kernel": jax.random.uniform(
                kernel_key, head["kernel"].shape, head["kernel"].dtype, -scale, scale
            ),
            "bias": jax.random.uniform(
                bias_key, head["bias"].shape, head["bias"].dtype, -scale, scale
            ),
        },
    }


def restart_optimizer(train_state: TrainState, restart: jax.Array) -> TrainState:
    """Fresh optimizer moments where ``restart`` is true (a traced bool), the old ones elsewhere."""
    fresh = train_state.tx.init(train_state.params)
    opt_state = jax.tree.map(
        lambda new, old: jnp.where(restart, new, old), fresh, train_state.opt_state
    )
    return train_state.replace(opt_state=opt_state)


@dataclass(frozen=True)
class SPOT(TD3):
    """TD3 (its critic loss and target-policy smoothing are inherited) with SPOT's actor."""

    config: SPOTConfig = field(default_factory=SPOTConfig)
    hooks: Hooks = NO_HOOKS

    def init(self, key: jax.Array, obs_dim: int, act_dim: int) -> SPOTState:
        c = self.config
        td3_key, vae_key, actor_head_key, critic_head_key = jax.random.split(key, 4)
        td3 = super().init(td3_key, obs_dim, act_dim)  # TD3's actor and twin critic
        actor, critic = td3.actor, td3.critic
        if c.actor_head_init is not None:
            actor = actor.replace(
                params=uniform_output_layer(actor.params, actor_head_key, c.actor_head_init)
            )
        if c.critic_head_init is not None:
            critic = critic.replace(
                params=uniform_output_layer(critic.params, critic_head_key, c.critic_head_init)
            )
        latent_dim = 2 * act_dim if c.vae_latent_dim is None else c.vae_latent_dim
        vae_module = ConditionalVAE(
            act_dim, latent_dim, c.vae_hidden_dims, c.vae_hidden_dims, squash_output=True
        )
        vae = TrainState.create(
            vae_module,
            vae_key,
            (jnp.zeros((1, obs_dim + act_dim)), jnp.zeros((1, obs_dim))),
            adam(c.vae_lr),
        )
        return SPOTState(
            actor=actor,
            critic=critic,
            target_actor_params=copy_tree(actor.params),
            target_critic_params=copy_tree(critic.params),
            vae=vae,
            step=jnp.int32(0),
            online_start_step=jnp.int32(-1),
        )

    def for_online(self) -> SPOT:
        c = self.config
        return replace(self, config=replace(c, discount=c.online_discount, online_phase=True))

    # -- VAE pre-training ---------------------------------------------------------------------

    def phases(self) -> tuple[Phase, ...]:
        if self.config.vae_steps == 0:
            return ()
        return (Phase("spot_vae", self.config.vae_steps, self.pretrain_update),)

    def vae_loss(
        self, state: SPOTState, batch: Transition, key: jax.Array, vae_params
    ) -> tuple[jax.Array, dict]:
        inputs = jnp.concatenate([batch.observations, batch.actions], axis=-1)
        recon, kl = elbo_terms(
            state.vae, inputs, batch.observations, batch.actions, key, 1, vae_params
        )
        loss = jnp.mean(recon + self.config.beta * kl)
        return loss, {"vae_loss": loss, "vae_recon": recon.mean(), "vae_kl": kl.mean()}

    def pretrain_update(
        self, state: SPOTState, batch: Transition, key: jax.Array
    ) -> tuple[SPOTState, dict]:
        vae, metrics = state.vae.minimize(lambda p: self.vae_loss(state, batch, key, p))
        return state.replace(vae=vae), metrics

    # -- actor-critic -------------------------------------------------------------------------

    def density_penalty(
        self, state: SPOTState, observations: jax.Array, actions: jax.Array, key: jax.Array
    ) -> jax.Array:
        """Per-sample −log π_β(a|s) estimate of the frozen VAE: −ELBO (recon + β·KL), or with
        ``iwae`` the importance-weighted −log-likelihood (decoder std √(β/4), as SPOT)."""
        c = self.config
        inputs = jnp.concatenate([observations, actions], axis=-1)
        if c.iwae:
            decoder_std = math.sqrt(c.beta / 4.0)
            return -iwae_log_likelihood(
                state.vae, inputs, observations, actions, key, decoder_std, c.num_samples
            )
        recon, kl = elbo_terms(state.vae, inputs, observations, actions, key, c.num_samples)
        return recon + c.beta * kl

    def constraint_weight(self, state: SPOTState) -> jax.Array:
        """λ, cooled over the online updates when ``lambd_cool`` (CORL counts the current one)."""
        c = self.config
        if not (c.online_phase and c.lambd_cool):
            return jnp.float32(c.lambd)
        online_updates = (state.step - state.online_start_step + 1).astype(jnp.float32)
        return c.lambd * jnp.maximum(c.lambd_end, 1.0 - online_updates / c.lambd_cool_steps)

    def actor_loss(
        self, state: SPOTState, batch: Transition, key: jax.Array, lambd: jax.Array, actor_params
    ) -> tuple[jax.Array, dict]:
        actions = state.actor(batch.actor_observations, params=actor_params)
        q = state.critic(batch.observations, actions)[0]
        density = self.density_penalty(state, batch.observations, actions, key)
        q_scale = jax.lax.stop_gradient(1.0 / jnp.abs(q).mean())
        loss = -q_scale * q.mean() + lambd * density.mean()
        penalty, metrics = self.hooks.actor_penalty(
            state.extras, ActorInputs(batch, actions, None, actor_params, state)
        )
        return loss + penalty, {
            "actor_loss": loss,
            "neg_log_beta": density.mean(),
            "neg_log_beta_max": density.max(),
            "lambd": lambd,
            **metrics,
        }

    def update(self, state: SPOTState, batch: Transition, key: jax.Array) -> tuple[SPOTState, dict]:
        c = self.config
        batch = with_policy_inputs(self.hooks, state.extras, batch, key)
        if c.online_phase:
            first_online = state.online_start_step < 0
            state = state.replace(
                online_start_step=jnp.where(first_online, state.step, state.online_start_step)
            )
            if c.online_reset_optimizers:
                state = state.replace(
                    actor=restart_optimizer(state.actor, first_online),
                    critic=restart_optimizer(state.critic, first_online),
                )
        critic_key, actor_key = jax.random.split(key)
        lambd = self.constraint_weight(state)
        critic, metrics = state.critic.minimize(
            lambda p: self.critic_loss(state, batch, critic_key, p)
        )
        state = state.replace(critic=critic, step=state.step + 1)

        def delayed_actor_update(state: SPOTState) -> tuple[SPOTState, dict]:
            actor, actor_metrics = state.actor.minimize(
                lambda p: self.actor_loss(state, batch, actor_key, lambd, p)
            )
            return state.replace(
                actor=actor,
                target_actor_params=polyak(state.target_actor_params, actor.params, c.tau),
                target_critic_params=polyak(state.target_critic_params, state.critic.params, c.tau),
            ), actor_metrics

        def skip(state: SPOTState) -> tuple[SPOTState, dict]:
            shapes = jax.eval_shape(lambda s: delayed_actor_update(s)[1], state)
            return state, jax.tree.map(lambda s: jnp.full(s.shape, jnp.nan, s.dtype), shapes)

        state, actor_metrics = jax.lax.cond(
            state.step % c.policy_delay == 0, delayed_actor_update, skip, state
        )
        return state, {**metrics, **actor_metrics}

    def act(
        self, state: SPOTState, observations: jax.Array, key: jax.Array, deterministic: bool
    ) -> jax.Array:
        c = self.config
        actions = state.actor(
            acting_observations(self.hooks, state.extras, observations, key, deterministic)
        )
        if deterministic:
            return actions
        noise = jnp.clip(
            c.exploration_noise * jax.random.normal(key, actions.shape), -c.noise_clip, c.noise_clip
        )
        return jnp.clip(actions + noise, -1.0, 1.0)
