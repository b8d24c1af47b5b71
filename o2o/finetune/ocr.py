"""OCR-CFT's shared machinery (Luo et al., NeurIPS 2024; methods.md §2; docs/ocr.md).

O2SAC (o2sac.py) and O2TD3 (o2td3.py) differ in their divergence and in the targets of
their re-evaluation and alignment phases; everything else is here, in ``ConstrainedMethod``:

* **Phase A, policy re-evaluation** (``<name>_reevaluation``): FQE of the frozen offline
  actor π_off with the online agent's fresh critic, Polyak targets; the subclass gives the
  bootstrap value V(s') under π_off.
* **Phase B, value alignment** (``<name>_alignment``): the subclass's update; the target
  critics stay frozen during it and are copied from the critics after it.
* **Phase C, constrained fine-tuning** (online): a divergence D to a reference policy π_ref
  is subtracted, times λ, from the critic target's bootstrap value and added to the actor
  loss. λ = exp(log λ) is method-owned state, trained by Adam (lr 5e-5) on

      L_λ = λ · mean(|τ − 1(u > 0)| · u),   u = ε_t − D,   τ = 0.7

  (an asymmetric *linear* loss, detached: λ grows while D > ε_t), once per env step, with
  ε_t = min(ε_end, ε_0 + (ε_end − ε_0)·t/T) over the online steps. Online batches are
  "half" replay (the ``mixed`` data policy: offline and online buffers, half of each batch
  from each). π_ref starts as π_off and becomes π on a new best evaluation
  (``reference_update="best"``) or every ``reference_interval`` evaluations ("interval",
  where ε_end is divided by 4 as in the official alternative mode).

Presets per dataset level (medium / medium-replay vs expert / medium-expert) come from the
dataset's name (``dataset_level``); the official code's substring test that takes
hopper-*medium*-expert for hopper-expert (§2.6) is corrected, and reproduced with
``official_substring_match``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax

from o2o.core.agent import ensemble_mse
from o2o.core.engine import Phase, ScoreFn
from o2o.core.train_state import copy_tree, polyak
from o2o.core.types import Transition
from o2o.errors import ConfigError, check, check_fields
from o2o.finetune.base import Diagnostic, Method

Level = Literal["medium", "expert", "antmaze"]
# States of the offline data the post-alignment ranking diagnostic looks at, and the
# actions sampled per state.
RANKING_STATES = 256
RANKING_ACTIONS = 16


# --- presets ----------------------------------------------------------------------------------
def _tokens(name: str) -> list[str]:
    return [t for t in re.split(r"[-_/.\s]+", str(name).lower()) if t]


def dataset_level(name: str) -> Level:
    """``antmaze`` for AntMaze datasets, ``expert`` for expert and medium-expert ones,
    ``medium`` for every other one (medium, medium-replay, random, PointMaze): the columns
    of methods.md §2.4."""
    tokens = _tokens(name)
    if "antmaze" in tokens:
        return "antmaze"
    return "expert" if "expert" in tokens else "medium"


def config_level(config: Any) -> Level:
    """The level a method config's presets follow: its ``level``, or its dataset's."""
    return dataset_level(config.dataset) if config.level == "auto" else config.level


def is_larger_antmaze(config: Any) -> bool:
    """AntMaze medium or large (any maze but umaze): the official λ 2 and O2SAC's α 0.5."""
    return config_level(config) == "antmaze" and "umaze" not in _tokens(config.dataset)


def is_hopper_expert(name: str, official_substring_match: bool = False) -> bool:
    """Whether the hopper-expert settings of the alternative mode apply. The official code
    tests ``'hopper' in env and 'expert' in env``, which also matches hopper-medium-expert
    (§2.6); corrected, only hopper-expert itself."""
    if official_substring_match:
        lower = str(name).lower()
        return "hopper" in lower and "expert" in lower
    tokens = _tokens(name)
    return "hopper" in tokens and "expert" in tokens and "medium" not in tokens


# --- the constraint ---------------------------------------------------------------------------
def epsilon_at(step: jax.Array, start: float, end: float, steps: int) -> jax.Array:
    """ε_t = min(ε_end, ε_0 + (ε_end − ε_0)·t/T): linear from ε_0, then held at ε_end."""
    return jnp.minimum(end, start + (end - start) * step / steps)


def lambda_loss_weight(u: jax.Array, tau: float) -> jax.Array:
    """mean(|τ − 1(u > 0)| · u): negative (λ grows, weight τ) where the divergence exceeds ε,
    positive (λ shrinks, weight 1 − τ) where it is below."""
    return jnp.mean(jnp.abs(tau - (u > 0).astype(u.dtype)) * u)


def lambda_loss(log_lambda: jax.Array, u: jax.Array, tau: float) -> jax.Array:
    """L_λ = λ·w with w = ``lambda_loss_weight(u)`` held constant."""
    return jnp.exp(log_lambda) * jax.lax.stop_gradient(lambda_loss_weight(u, tau))


# --- the reference policy ---------------------------------------------------------------------
def per_seed_where(mask: Any, new: Any, old: Any) -> Any:
    """``new`` on the seeds where ``mask`` (one bool per seed) holds, ``old`` elsewhere."""

    def chosen(a, b):
        return jnp.where(jnp.asarray(mask).reshape((-1,) + (1,) * (a.ndim - 1)), a, b)

    return jax.tree.map(chosen, new, old)


def replace_reference(
    name: str,
    states: Any,
    row: dict,
    mode: str,
    interval: int,
    event_phase: str,
) -> tuple[Any, list[dict]]:
    """After an evaluation (``row``, per seed): π_ref ← π where the normalised score beats
    the best so far (``mode="best"``) or every ``interval`` evaluations (``"interval"``);
    the method state ``states.extras[name]`` holds ``reference``, ``best_score`` and
    ``evaluations``. Returns the states and the event row."""
    own = states.extras[name]
    scores = np.asarray(row.get("seed_normalized_scores") or row["seed_returns"], np.float32)
    evaluations = np.asarray(own["evaluations"]) + 1
    if mode == "best":
        replaced = scores > np.asarray(own["best_score"])
    else:
        replaced = evaluations % interval == 0
    best = np.maximum(np.asarray(own["best_score"]), scores)

    own = {
        **own,
        "reference": per_seed_where(replaced, states.actor.params, own["reference"]),
        "best_score": jnp.asarray(best),
        "evaluations": jnp.asarray(evaluations, jnp.int32),
    }
    states = states.replace(extras={**states.extras, name: own})
    event = {"phase": event_phase, "replaced": replaced.tolist(), "best_score": best.tolist()}
    return states, [event]


def phase_diagnostics(name: str, divergence: str) -> tuple[Diagnostic, ...]:
    """What the report plots of an OCR-CFT method ``name`` across its phases; ``divergence``
    titles its D panel."""
    return (
        Diagnostic(f"{name}_reevaluation", f"train/{name}/fqe_loss", "FQE loss", True),
        Diagnostic(f"{name}_reevaluation", f"train/{name}/q_data", "Q(s, a_data), re-evaluation"),
        Diagnostic(f"{name}_alignment", f"train/{name}/q_pi", "Q(s, π(s)), alignment"),
        Diagnostic(f"{name}_alignment", f"train/{name}/retain_loss", "retain loss", True),
        Diagnostic("online", f"train/{name}/q_pi", "Q(s, π(s)), fine-tuning"),
        Diagnostic("online", f"train/{name}/lambda", "λ", True),
        Diagnostic("online", f"train/{name}/divergence", divergence),
    )


# --- the method -------------------------------------------------------------------------------
@dataclass(frozen=True)
class ConstrainedConfig:
    """Options shared by O2SAC and O2TD3; None: the dataset level's preset or the run's
    budget (``fit_to_budget``; see docs/ocr.md). ``dataset`` is filled in by the run."""

    dataset: str = ""  # the run's dataset name, for the level presets (filled in by the run)
    level: Literal["auto", "medium", "expert", "antmaze"] = "auto"
    official_substring_match: bool = False
    reevaluate: bool = True  # phase A (PR)
    align: bool = True  # phase B (VA)
    constrain: bool = True  # phase C's constraint (CF); off: λ = 0 and never trained
    reevaluation_steps: int | None = None  # None: offline steps / 2
    alignment_steps: int | None = None  # None: offline steps / 2
    warmup_steps: int | None = None  # online env steps before the first update; None: 1%
    schedule_steps: int | None = None  # T of the ε schedule in env steps; None: online steps
    epsilon_start: float | None = None
    epsilon_end: float | None = None
    lambda_init: float | None = None  # None: 1 (2 on AntMaze medium and large)
    lambda_lr: float = 5e-5
    loss_tau: float = 0.7
    # π_ref at the start of phase C: "official", the aligned actor where it evaluates better
    # than π_off, else π_off, with the better score as the best so far; "offline", π_off with
    # no score (the first online evaluation makes π the reference).
    initial_reference: Literal["official", "offline"] = "official"
    reference_update: Literal["best", "interval"] = "best"
    reference_interval: int | None = None  # None: 4 (10 on hopper-expert)

    def __post_init__(self) -> None:
        check_fields(
            self,
            positive=("lambda_lr",),
            unit_interval=("loss_tau",),
            optional_positive=(
                "reevaluation_steps",
                "alignment_steps",
                "schedule_steps",
                "epsilon_start",
                "epsilon_end",
                "reference_interval",
                "lambda_init",
            ),
            choices={
                "level": ("auto", "medium", "expert", "antmaze"),
                "reference_update": ("best", "interval"),
                "initial_reference": ("official", "offline"),
            },
        )
        check(
            self.warmup_steps is None or self.warmup_steps >= 0,
            f"warmup_steps must be non-negative, got {self.warmup_steps}",
        )


class ConstrainedMethod(Method):
    """OCR-CFT's three phases over an off-policy online agent; subclasses define
    ``fqe_next_value``, ``alignment_update``, ``divergence``, the two penalties and the
    presets (``online_algo``, ``epsilons``)."""

    slots = frozenset(
        {"data_policy", "bootstrap", "actor_terms", "state_update", "phases", "events"}
    )
    epsilons: ClassVar[dict[str, tuple[float, float]]] = {}  # level -> (ε_0, ε_end)
    # Online env steps before the first update, in thousandths of the online steps: the
    # official 1k of 100k (5k of 200k for O2SAC on AntMaze).
    warmup_per_mille: ClassVar[dict[str, int]] = {"medium": 10, "expert": 10, "antmaze": 10}
    # Fallbacks where the run gives no budget (a Pipeline built by hand, not through RunSpec).
    fallback_phase_steps: ClassVar[int] = 1_000
    fallback_warmup: ClassVar[int] = 1_000
    fallback_schedule: ClassVar[int] = 100_000

    def align_critic(
        self,
        agent_state: Any,
        observations: jax.Array,
        actions: jax.Array,
        targets: jax.Array,
        anchor: jax.Array,
        q_anchor: jax.Array,
    ) -> tuple[Any, dict]:
        """One critic step of value alignment: Q(s, ``actions``) towards ``targets`` (one per
        sample, or one per critic and sample) plus the retain loss holding Q(s, ``anchor``) at
        ``q_anchor``; both summed over the ensemble (CORL's convention)."""
        targets, q_anchor = jax.lax.stop_gradient(targets), jax.lax.stop_gradient(q_anchor)

        def critic_loss(params):
            q = agent_state.critic(observations, actions, params=params)
            align = jnp.sum(jnp.mean((q - targets) ** 2, axis=-1))
            retain = ensemble_mse(agent_state.critic(observations, anchor, params=params), q_anchor)
            return align + retain, {
                f"{self.name}/alignment_loss": align,
                f"{self.name}/retain_loss": retain,
            }

        critic, metrics = agent_state.critic.minimize(critic_loss)
        return agent_state.replace(critic=critic), metrics

    # --- presets -------------------------------------------------------------------------
    @property
    def level(self) -> Level:
        return config_level(self.config)

    @property
    def initial_lambda(self) -> float:
        if self.config.lambda_init is not None:
            return self.config.lambda_init
        return 2.0 if is_larger_antmaze(self.config) else 1.0

    def epsilon_range(self) -> tuple[float, float]:
        c = self.config
        start, end = self.epsilons[self.level]
        start = start if c.epsilon_start is None else c.epsilon_start
        end = end if c.epsilon_end is None else c.epsilon_end
        if c.reference_update == "interval" and c.epsilon_end is None:
            end = end / 4.0  # the official alternative mode's end_threshold / 4
        return start, end

    @property
    def reference_interval(self) -> int:
        c = self.config
        if c.reference_interval is not None:
            return c.reference_interval
        return 10 if is_hopper_expert(c.dataset, c.official_substring_match) else 4

    @property
    def warmup(self) -> int:
        w = self.config.warmup_steps
        return self.fallback_warmup if w is None else w

    @property
    def schedule_steps(self) -> int:
        return self.config.schedule_steps or self.fallback_schedule

    def fit_to_budget(self, offline_steps: int, online_steps: int) -> ConstrainedMethod:
        """Options left None: re-evaluation and alignment share the offline steps (the
        source run's under ``--from``; the online steps without any), half each, a third
        and two thirds on AntMaze (the official 500k + 1M); the warm-up is the level's share
        of the online steps, the ε schedule runs over them; λ's preset."""
        c = self.config
        total = offline_steps or online_steps
        share = 3 if self.level == "antmaze" else 2
        reevaluation = max(1, total // share)
        resolved = {
            "reevaluation_steps": reevaluation,
            "alignment_steps": max(1, total // share * (share - 1)),
            "warmup_steps": online_steps * self.warmup_per_mille[self.level] // 1000,
            "schedule_steps": max(1, online_steps),
            "lambda_init": self.initial_lambda,
        }
        changes = {k: v for k, v in resolved.items() if getattr(c, k) is None}
        if not changes:
            return self
        fitted = type(self)(replace(c, **changes), self.obs_dim, self.act_dim)
        fitted.label = self.label
        return fitted

    @classmethod
    def online_agent_defaults(cls, config: Any, algo: str) -> dict[str, Any]:
        """The official alternative mode on hopper-expert also clips the actor's gradient
        at 0.25 (where ``is_hopper_expert`` says so: the quirk applies here too)."""
        if config.reference_update == "interval" and is_hopper_expert(
            config.dataset, config.official_substring_match
        ):
            return {"actor_grad_clip": 0.25}
        return {}

    def check_agent(self, algo: str, agent: Any) -> None:
        if algo != self.online_algo:
            raise ConfigError(f"{self.label} fine-tunes with {self.online_algo}, not {algo}")

    def data_policy(self) -> str | None:
        return "mixed"

    def online_overrides(self) -> dict[str, Any]:
        return {"update_after": self.warmup}

    # --- state ---------------------------------------------------------------------------
    def init_state(self, agent: Any, agent_state: Any, key: jax.Array, preprocess: Any) -> dict:
        log_lambda = jnp.log(jnp.float32(self.initial_lambda))
        return {
            "reference": copy_tree(agent_state.actor.params),  # π_off, then the best π
            "log_lambda": log_lambda,
            "lambda_opt": self.lambda_optimizer().init(log_lambda),
            "updates": jnp.int32(0),
            "best_score": jnp.float32(-jnp.inf),
            "evaluations": jnp.int32(0),
        }

    def lambda_optimizer(self) -> optax.GradientTransformation:
        return optax.adam(self.config.lambda_lr)

    def multiplier(self, state: dict) -> jax.Array:
        """λ in the losses: 0 without the constraint; never differentiated there."""
        if not self.config.constrain:
            return jnp.float32(0.0)
        return jax.lax.stop_gradient(jnp.exp(state["log_lambda"]))

    def epsilon(self, state: dict, agent: Any) -> jax.Array:
        """ε at the env step of this update: the warm-up, then one env step per
        ``updates_per_env_step`` updates."""
        env_step = self.warmup + state["updates"] // self.updates_per_env_step(agent)
        start, end = self.epsilon_range()
        return epsilon_at(env_step.astype(jnp.float32), start, end, self.schedule_steps)

    # --- subclass pieces -----------------------------------------------------------------
    def updates_per_env_step(self, agent: Any) -> int:
        return 1

    def lambda_every(self, agent: Any) -> int:
        """Updates between λ steps: λ moves once per env step (or per delayed actor step)."""
        return 1

    def fqe_next_value(
        self, agent: Any, agent_state: Any, own: dict, batch: Transition, key: jax.Array
    ) -> jax.Array:
        raise NotImplementedError

    def alignment_update(
        self, agent: Any, agent_state: Any, batch: Transition, key: jax.Array
    ) -> tuple[Any, dict]:
        raise NotImplementedError

    def divergence(
        self, agent_state: Any, reference: Any, observations: jax.Array, key: jax.Array
    ) -> jax.Array:
        """D per sample (the quantity ε bounds), under the agent's current actor."""
        raise NotImplementedError

    # --- phases A and B ------------------------------------------------------------------
    def q_diagnostics(self, agent: Any, agent_state: Any, batch: Transition) -> dict:
        """Q on the dataset's actions and on π's greedy actions (the claim: no jump across
        the phase boundaries)."""
        obs = batch.observations
        greedy = agent.act(agent_state, batch.actor_observations, jax.random.PRNGKey(0), True)
        return {
            f"{self.name}/q_data": agent.q_value(agent_state, obs, batch.actions).mean(),
            f"{self.name}/q_pi": agent.q_value(agent_state, obs, greedy).mean(),
        }

    def fqe_target(
        self, agent: Any, agent_state: Any, batch: Transition, key: jax.Array
    ) -> jax.Array:
        """y = r + γ(1 − d)·V_off(s'), V_off the subclass's bootstrap value under π_off."""
        own = agent_state.extras[self.name]
        next_value = self.fqe_next_value(agent, agent_state, own, batch, key)
        discount = agent.config.discount
        return jax.lax.stop_gradient(
            batch.rewards + discount * (1.0 - batch.terminals) * next_value
        )

    def phases(self, agent: Any) -> tuple[Phase, ...]:
        c = self.config
        phases = []
        if c.reevaluate:
            steps = c.reevaluation_steps or self.fallback_phase_steps

            def reevaluate(agent_state: Any, batch: Transition, key: jax.Array):
                target = self.fqe_target(agent, agent_state, batch, key)

                def loss_fn(params):
                    q = agent_state.critic(batch.observations, batch.actions, params=params)
                    return ensemble_mse(q, target), {}

                critic, _ = agent_state.critic.minimize(loss_fn)
                state = agent_state.replace(
                    critic=critic,
                    target_critic_params=polyak(
                        agent_state.target_critic_params, critic.params, agent.config.tau
                    ),
                )
                q = agent_state.critic(batch.observations, batch.actions)
                metrics = {f"{self.name}/fqe_loss": ensemble_mse(q, target)}
                return state, {**metrics, **self.q_diagnostics(agent, state, batch)}

            phases.append(Phase(f"{self.name}_reevaluation", steps, reevaluate, "before_online"))
        if c.align:
            steps = c.alignment_steps or self.fallback_phase_steps

            def align(agent_state: Any, batch: Transition, key: jax.Array):
                state, metrics = self.alignment_update(agent, agent_state, batch, key)
                return state, {**metrics, **self.q_diagnostics(agent, state, batch)}

            def finish(states: Any, offline: Transition, scores: ScoreFn) -> tuple[Any, list[dict]]:
                states = states.replace(target_critic_params=copy_tree(states.critic.params))
                return states, [self.ranking_row(agent, states, offline)]

            phases.append(
                Phase(
                    f"{self.name}_alignment",
                    steps,
                    align,
                    "before_online",
                    evaluate=True,
                    finish=finish,
                )
            )
        if phases and c.initial_reference == "official":
            last = phases[-1]

            def finish_with_reference(states, offline, scores, earlier=last.finish):
                rows = []
                if earlier is not None:
                    states, rows = earlier(states, offline, scores)
                states, more = self.choose_initial_reference(states, scores)
                return states, rows + more

            phases[-1] = replace(last, finish=finish_with_reference)
        return tuple(phases)

    def choose_initial_reference(self, states: Any, scores: ScoreFn) -> tuple[Any, list[dict]]:
        """The official start of phase C (methods.md §2.1), per seed: π_ref is the aligned
        actor where it evaluates better than π_off, else π_off, and the better score is the
        best so far, so only an online policy beating both replaces it."""
        own = states.extras[self.name]
        aligned = np.asarray(scores(states), np.float64)
        if self.config.align:
            offline_actor = states.actor.replace(params=own["reference"])
            offline = np.asarray(scores(states.replace(actor=offline_actor)), np.float64)
        else:
            offline = aligned  # without alignment the actor is still π_off
        chosen = aligned > offline
        best = np.maximum(aligned, offline)
        own = {
            **own,
            "reference": per_seed_where(chosen, states.actor.params, own["reference"]),
            "best_score": jnp.asarray(best, jnp.float32),
        }
        row = {
            "phase": f"{self.name}_initial_reference",
            "aligned_score": aligned.tolist(),
            "offline_score": offline.tolist(),
            "aligned_chosen": chosen.tolist(),
            "best_score": best.tolist(),
        }
        return states.replace(extras={**states.extras, self.name: own}), [row]

    def ranking_row(self, agent: Any, states: Any, offline: Transition) -> dict:
        """After alignment, per seed: over actions sampled around π at evenly spaced dataset
        states, the Spearman correlation between Q and π's preference (log π, or closeness
        to π's action for a deterministic actor), and how often Q's best sampled action is
        π's greedy one."""
        size = int(offline.observations.shape[0])
        index = np.linspace(0, size - 1, min(RANKING_STATES, size)).astype(np.int64)
        obs = jnp.asarray(np.asarray(offline.observations)[index])

        def one(state):
            preference, actions = self.action_preferences(agent, state, obs)
            n = actions.shape[1]
            flat_obs = jnp.repeat(obs, n, axis=0)
            q = agent.q_value(state, flat_obs, actions.reshape(-1, actions.shape[-1]))
            q = q.reshape(obs.shape[0], n)
            rank = lambda x: jnp.argsort(jnp.argsort(x, axis=1), axis=1).astype(jnp.float32)  # noqa: E731
            rq, rp = rank(q), rank(preference)
            rq, rp = rq - rq.mean(1, keepdims=True), rp - rp.mean(1, keepdims=True)
            spearman = (rq * rp).sum(1) / jnp.sqrt((rq**2).sum(1) * (rp**2).sum(1))
            argmax = jnp.argmax(q, axis=1) == jnp.argmax(preference, axis=1)
            return jnp.nanmean(spearman), argmax.mean()

        spearman, argmax = jax.jit(jax.vmap(one))(states)
        return {
            "phase": f"{self.name}_ranking",
            "spearman_q_pi": np.asarray(spearman).tolist(),
            "argmax_agreement": np.asarray(argmax).tolist(),
        }

    def action_preferences(
        self, agent: Any, state: Any, observations: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        """(N, K) preferences of π over (N, K, |A|) actions near it, π's greedy one first."""
        raise NotImplementedError

    # --- phase C -------------------------------------------------------------------------
    def update(
        self, state: dict, agent: Any, agent_state: Any, batch: Transition, key: jax.Array
    ) -> tuple[dict, dict]:
        c = self.config
        divergence = self.divergence(agent_state, state["reference"], batch.observations, key)
        epsilon = self.epsilon(state, agent)
        u = epsilon - divergence
        metrics = {
            f"{self.name}/lambda": jnp.exp(state["log_lambda"]),
            f"{self.name}/divergence": divergence.mean(),
            f"{self.name}/epsilon": epsilon,
            **self.q_diagnostics(agent, agent_state, batch),
        }
        if c.constrain:
            grad = jax.grad(lambda x: lambda_loss(x, u, c.loss_tau))(state["log_lambda"])
            updates, opt = self.lambda_optimizer().update(grad, state["lambda_opt"])
            stepped = {
                **state,
                "log_lambda": optax.apply_updates(state["log_lambda"], updates),
                "lambda_opt": opt,
            }
            due = state["updates"] % self.lambda_every(agent) == 0
            state = jax.tree.map(lambda a, b: jnp.where(due, a, b), stepped, state)
        return {**state, "updates": state["updates"] + 1}, metrics

    def on_evaluation(
        self, agent: Any, step: int, states: Any, row: dict, seed: int
    ) -> tuple[Any, list[dict]]:
        return replace_reference(
            self.name,
            states,
            row,
            self.config.reference_update,
            self.reference_interval,
            f"{self.name}_reference",
        )
