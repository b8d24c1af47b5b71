"""The fine-tuning method seam: registry, composition and its refusals, method-owned state
in the fused update, policy inputs, phases — shown with the one-file toy method
(tests/toy_method.py), composed with SAMG, end to end through ``o2o train`` with a kill."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tests.toy_method  # noqa: F401  (registers "toy")
from o2o.agents import IQLConfig, TD3Config
from o2o.core.buffers import Sampler, buffer_from_transitions
from o2o.core.engine import compile_fused
from o2o.errors import ConfigError
from o2o.experiment.online import Preprocess
from o2o.finetune import REGISTRY, Method, coerce_method_options, make_methods, register
from tests.helpers import tiny_batch

OBS, ACT = 3, 2
ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class NoOptions:
    pass


class OtherBuffer(Method):
    name = "other-buffer"
    config_class = NoOptions
    slots = frozenset({"data_policy"})


def test_compositions_are_built_in_order_and_options_routed():
    methods = make_methods("toy+samg", {"toy.bonus": 0.5, "samg.threshold": 0.3}, OBS, ACT)
    assert [m.label for m in methods] == ["toy", "samg"] and methods.label == "toy+samg"
    toy, samg = methods
    assert toy.config.bonus == 0.5 and samg.config.threshold == 0.3
    assert methods.policy_input_dim == 2 and methods.trains_offline
    assert make_methods("samg-even", {}, OBS, ACT).label == "samg-even"
    assert len(make_methods("vanilla", {}, OBS, ACT)) == 0
    typed = coerce_method_options("toy+samg", {"samg.cvae_steps": 7, "toy.bonus": 1})
    assert typed == {"samg.cvae_steps": 7, "toy.bonus": 1.0}


@pytest.mark.parametrize(
    "name, options, message",
    [
        ("samg+samg-even", {}, "named twice"),
        ("toy+nope", {}, "unknown fine-tuning method 'nope'"),
        ("toy+samg", {"bonus": 1.0}, "ambiguous"),
        ("toy+samg", {"sera.k": 1}, "names 'sera'"),
        ("vanilla", {"threshold": 0.4}, "vanilla fine-tuning takes no method options"),
        ("toy", {"bonus2": 1.0}, "has no option 'bonus2'"),
    ],
)
def test_bad_compositions_are_one_line_errors(name, options, message):
    with pytest.raises(ConfigError, match=message):
        make_methods(name, options, OBS, ACT)


def test_two_methods_claiming_an_exclusive_slot_are_refused():
    register(OtherBuffer)
    try:
        with pytest.raises(
            ConfigError,
            match="other-buffer and samg cannot be combined: both set the data_policy slot",
        ):
            make_methods("other-buffer+samg", {}, OBS, ACT)
    finally:
        del REGISTRY["other-buffer"]


def test_method_state_trains_inside_the_fused_update_and_the_policy_is_conditioned():
    methods = make_methods("toy", {}, OBS, ACT)
    agent = TD3Config(hidden_dims=(8,)).create(hooks=methods)
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    states = jax.vmap(lambda k: agent.init(k, OBS, ACT))(keys)
    states = methods.init_states(agent, states, keys, Preprocess(), offline=True)
    actor_in = jax.tree.leaves(states.actor.params["MLP_0"]["Dense_0"]["kernel"])[0]
    assert actor_in.shape[-2] == OBS + 2  # the actor sees s and the method's 2 inputs
    batch = tiny_batch(np.random.default_rng(0), 64, OBS, ACT)
    buffers = {"replay": jax.tree.map(lambda x: jnp.stack([x, x]), buffer_from_transitions(batch))}
    before = jax.tree.map(np.asarray, states.extras["toy"]["model"].params)
    fused = compile_fused(methods.wrap_update(agent), Sampler(16), 5)
    states, _, metrics = fused(states, buffers, keys)
    assert np.asarray(states.extras["toy"]["steps"]).tolist() == [5, 5]
    assert "toy/model_loss" in metrics
    after = jax.tree.leaves(states.extras["toy"]["model"].params)
    assert any(
        not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before), after, strict=True)
    )
    actions = jax.vmap(lambda s, o: agent.act(s, o, jax.random.PRNGKey(0), True))(
        states, jnp.zeros((2, 4, OBS))
    )
    assert actions.shape == (2, 4, ACT)


def test_the_reward_hook_sees_the_whole_batch_once_per_step():
    calls = []

    class Counting(Method):
        name = "counting"
        config_class = NoOptions
        slots = frozenset({"reward"})
        trains_offline = True

        def reward(self, state, inputs):
            rewards = inputs.batch.rewards
            jax.debug.callback(lambda n: calls.append(int(n)), rewards.shape[0])
            return rewards

    methods = make_methods("vanilla", {}, OBS, ACT)
    methods = type(methods)((Counting(NoOptions(), OBS, ACT),))
    agent = IQLConfig(hidden_dims=(8,)).create(hooks=methods)
    state = agent.init(jax.random.PRNGKey(0), OBS, ACT).replace(extras={"counting": {}})
    batch = jax.tree.map(jnp.asarray, tiny_batch(np.random.default_rng(1), 32, OBS, ACT))
    jax.jit(agent.update)(state, batch, jax.random.PRNGKey(1))
    jax.effects_barrier()
    assert calls == [32]


def _train(args, runs):
    code = "import sys, tests.toy_method; from o2o.cli import main; sys.exit(main(sys.argv[1:]))"
    return [sys.executable, "-c", code, "train", *args, "--runs-dir", str(runs), "--no-progress"]


@pytest.mark.slow
def test_toy_method_composed_with_samg_runs_and_resumes_after_a_kill(tmp_path):
    """``o2o train --finetune toy+samg``: killed (SIGKILL) once the toy's phase has written a
    checkpoint, resumed with --resume, its rows equal an uninterrupted run's."""
    args = [
        "--dataset", "hopper-medium-lite", "--algo", "td3", "--finetune", "toy+samg",
        "--method-set", "toy.phase_steps=20000", "--method-set", "samg.cvae_steps=100",
        "--method-set", "samg.encoder_hidden_dims=[16]", "--method-set", "samg.decoder_hidden_dims=[16]",
        "--method-set", "samg.seed_transitions=50", "--method-set", "samg.adaptive_every=100",
        "--offline-steps", "200", "--online-steps", "100", "--offline-eval-every", "100",
        "--online-eval-every", "50", "--eval-episodes", "1", "--batch-size", "32",
        "--set", "hidden_dims=[16]", "--seeds", "2",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run(_train([*args, "--name", "full"], tmp_path), check=True, cwd=ROOT, env=env)
    killed = subprocess.Popen(_train([*args, "--name", "killed"], tmp_path), cwd=ROOT, env=env)
    phase = tmp_path / "killed" / "phase.json"
    deadline = time.time() + 300
    while time.time() < deadline and killed.poll() is None:
        if phase.exists() and json.loads(phase.read_text())["phase"] == "toy_fit":
            break
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert json.loads(phase.read_text())["phase"] == "toy_fit", "killed too late to test resume"
    subprocess.run(
        _train(["--resume", "--name", "killed"], tmp_path), check=True, cwd=ROOT, env=env
    )

    def rows(name, filename="metrics.jsonl"):
        lines = (tmp_path / name / filename).read_text().splitlines()
        return [{k: v for k, v in json.loads(x).items() if k != "wall_time"} for x in lines]

    full = rows("full")
    assert rows("killed") == full
    assert rows("killed", "finetune.jsonl") == rows("full", "finetune.jsonl")
    phases = [r["phase"] for r in full]
    assert phases.count("toy_fit") >= 2 and phases.count("samg_cvae") == 1
    online = [r for r in full if r["phase"] == "online"]
    assert [r["updates"] for r in online] == [50, 100]
    assert "train/toy/model_loss" in online[-1] and "train/samg/p_mean" in online[-1]
    summary = json.loads((tmp_path / "killed" / "summary.json").read_text())
    assert summary["finetune"] == "toy+samg" and summary["online_updates"] == 100


class BestScore(Method):
    """Keeps each seed's best online evaluation score in its state (an evaluation event)."""

    name = "best-score"
    config_class = NoOptions
    slots = frozenset({"events"})

    def init_state(self, agent, agent_state, key, preprocess):
        return {"best": jnp.float32(-jnp.inf)}

    def on_evaluation(self, agent, step, states, row, seed):
        scores = jnp.asarray(row["seed_normalized_scores"], jnp.float32)
        best = jnp.maximum(states.extras[self.name]["best"], scores)
        extras = {**states.extras, self.name: {"best": best}}
        return states.replace(extras=extras), [{"phase": "best", "best": best.tolist()}]


def test_evaluation_events_change_the_states_before_their_checkpoint(tmp_path):
    from o2o import data as datasets
    from o2o.experiment.checkpoint import load_checkpoint
    from o2o.experiment.pipeline import Pipeline, PipelineConfig
    from o2o.experiment.runs import RunDir

    register(BestScore)
    try:
        dataset = datasets.load("hopper-medium-lite").select(slice(0, 500))
        config = PipelineConfig(
            offline_steps=50,
            online_steps=100,
            offline_chunk=50,
            offline_eval_every=50,
            online_eval_every=50,
            eval_episodes=1,
            batch_size=16,
            seeds=2,
        )
        methods = make_methods("best-score", {}, dataset.obs_dim, dataset.act_dim)
        run = RunDir.create(tmp_path / "r", {})
        result = Pipeline("td3", TD3Config(hidden_dims=(8,)), config, dataset, methods).run(
            run, progress=False
        )
    finally:
        del REGISTRY["best-score"]
    online = [r["seed_normalized_scores"] for r in result.rows if r["phase"] == "online"]
    expected = np.max(np.asarray(online), axis=0)
    np.testing.assert_allclose(result.states.extras["best-score"]["best"], expected, rtol=1e-6)
    saved = load_checkpoint(run.checkpoint_path, {"states": result.states})["states"]
    np.testing.assert_allclose(saved.extras["best-score"]["best"], expected, rtol=1e-6)
    assert [r["phase"] for r in run.rows("finetune.jsonl")] == ["best", "best"]


class BetaFamily(Method):
    """Per-sample β ~ U[0.5, 1.5]: an actor input and the improvement coefficient (FamO2O's
    pattern: the same draw conditions the policy and weights its improvement term)."""

    name = "beta-family"
    config_class = NoOptions
    slots = frozenset({"policy_inputs"})
    trains_offline = True
    policy_input_dim = 1

    def policy_inputs(self, state, batch, key):
        beta = jax.random.uniform(key, batch.rewards.shape, minval=0.5, maxval=1.5)
        return beta[:, None], beta

    def acting_inputs(self, state, observations, key, deterministic):
        return jnp.ones((*observations.shape[:-1], 1))

    def improvement_weight(self, state, batch):
        return batch.policy_aux


@pytest.mark.parametrize("algo", ["iql", "awac", "cql"])
def test_the_improvement_term_takes_the_methods_per_sample_coefficient(algo):
    from o2o.agents import AWACConfig, CQLConfig
    from o2o.core.hooks import with_policy_inputs

    config = {
        "iql": IQLConfig(hidden_dims=(8,)),
        "awac": AWACConfig(hidden_dims=(8,)),
        "cql": CQLConfig(actor_hidden_dims=(8,), critic_hidden_dims=(8,)),
    }[algo]
    methods = type(make_methods("vanilla", {}, OBS, ACT))((BetaFamily(NoOptions(), OBS, ACT),))
    agent = config.create(hooks=methods)
    state = agent.init(jax.random.PRNGKey(0), OBS, ACT).replace(extras={"beta-family": {}})
    batch = jax.tree.map(jnp.asarray, tiny_batch(np.random.default_rng(3), 16, OBS, ACT))
    key = jax.random.PRNGKey(4)
    batch = with_policy_inputs(methods, state.extras, batch, key)
    beta = np.asarray(batch.policy_aux)
    assert beta.shape == (16,) and beta.std() > 0.1
    np.testing.assert_array_equal(np.asarray(batch.policy_inputs)[:, 0], beta)
    loss, metrics = agent.actor_loss(state, batch, key, state.actor.params)
    dist = state.actor(batch.actor_observations)
    if algo == "cql":
        actions, log_probs = dist.sample_and_log_prob(key)
        q = np.asarray(state.critic(batch.observations, actions).min(axis=0))
        alpha = float(agent.alpha(state))
        expected = np.mean(alpha * np.asarray(log_probs) - beta * q)
        np.testing.assert_allclose(float(metrics["actor_loss"]), expected, rtol=1e-5)
        return
    if algo == "iql":
        adv = np.asarray(agent.advantages(state, batch)[0])
    else:
        from o2o.agents.awac import clipped_sample

        v_actions, _ = clipped_sample(dist, key)
        adv = np.asarray(
            state.critic(batch.observations, batch.actions).min(0)
            - state.critic(batch.observations, v_actions).min(0)
        )
    weights = np.minimum(np.exp(beta * adv), 100.0)
    expected = -np.mean(weights * np.asarray(dist.log_prob(batch.actions)))
    np.testing.assert_allclose(float(metrics["actor_loss"]), expected, rtol=1e-4)
