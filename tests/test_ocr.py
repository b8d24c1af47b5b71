"""OCR-CFT's shared pieces (o2o/finetune/ocr.py): the ε schedule, the λ loss and its
direction, the dataset-level presets and the official substring quirk, the declared online
algorithm, the method's UTD against --utd, and the resume fixes found with it."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from o2o.errors import ConfigError
from o2o.experiment.builder import RunSpec
from o2o.experiment.checkpoint import checkpoint_phase, save_checkpoint
from o2o.experiment.pipeline import PipelineConfig
from o2o.finetune import declared_online_algo, make_methods
from o2o.finetune.ocr import (
    dataset_level,
    epsilon_at,
    is_hopper_expert,
    lambda_loss,
    lambda_loss_weight,
)


# --- the ε schedule ---------------------------------------------------------------------------
@pytest.mark.parametrize("start,end", [(0.125, 2.0), (0.0025, 0.04)])
def test_epsilon_schedule_is_linear_then_held(start, end):
    steps = 1000
    t = np.array([0, 1, 250, 500, 999, 1000, 1500, 10_000], np.float64)
    expected = [start + (end - start) * min(x, steps) / steps for x in t]
    got = np.asarray(epsilon_at(jnp.asarray(t, jnp.float32), start, end, steps), np.float64)
    np.testing.assert_allclose(got, expected, rtol=1e-6)


# --- the λ loss -------------------------------------------------------------------------------
def test_lambda_loss_weight_by_hand():
    # u = ε − D: −1 (D above ε: weight τ = 0.7), 2 (below: weight 0.3), 0 (weight 0.7 · 0).
    u = jnp.array([-1.0, 2.0, 0.0])
    # mean(0.7·(−1), 0.3·2, 0) = (−0.7 + 0.6) / 3
    np.testing.assert_allclose(float(lambda_loss_weight(u, 0.7)), -0.1 / 3, rtol=1e-6)
    # L = λ·w, w held constant: dL/dlog λ = λ·w.
    log_lambda = jnp.log(jnp.float32(2.0))
    grad = jax.grad(lambda x: lambda_loss(x, u, 0.7))(log_lambda)
    np.testing.assert_allclose(float(grad), 2.0 * (-0.1 / 3), rtol=1e-5)
    # The weight carries no gradient to u (the divergence): detached.
    assert float(jax.grad(lambda v: lambda_loss(log_lambda, v, 0.7))(u).sum()) == 0.0


def _method_state(method, log_lambda=0.0, updates=0):
    opt = method.lambda_optimizer().init(jnp.float32(log_lambda))
    return {
        "log_lambda": jnp.float32(log_lambda),
        "lambda_opt": opt,
        "updates": jnp.int32(updates),
        "reference": None,
    }


class _FixedDivergence:
    """A method whose divergence is a constant, to see where λ moves."""

    def __init__(self, method, value):
        self.method, self.value = method, value

    def __call__(self, agent_state, reference, observations, key):
        return jnp.full((observations.shape[0],), self.value)


@pytest.mark.parametrize("name", ["o2sac", "o2td3"])
def test_lambda_grows_above_epsilon_shrinks_below_and_steps_once_per_env_step(name, monkeypatch):
    method = make_methods(name, {"dataset": "hopper-medium-lite"}, 3, 2).methods[0]
    every = method.config.utd if name == "o2sac" else 2

    class Agent:
        class config:
            policy_delay = 2

    monkeypatch.setattr(method, "q_diagnostics", lambda agent, state, batch: {})
    batch = type("B", (), {"observations": jnp.zeros((4, 3))})()
    eps_end = method.epsilon_range()[1]
    for value, sign in ((eps_end + 10.0, 1), (0.0, -1)):
        monkeypatch.setattr(method, "divergence", _FixedDivergence(method, value))
        state = _method_state(method)
        moved = []
        for _ in range(2 * every):
            new, metrics = method.update(state, Agent(), None, batch, jax.random.PRNGKey(0))
            moved.append(float(new["log_lambda"]) != float(state["log_lambda"]))
            if moved[-1]:
                assert sign * (float(new["log_lambda"]) - float(state["log_lambda"])) > 0
            state = new
        # λ steps on the first update of each env step (O2SAC, UTD 10) or with the delayed
        # actor (O2TD3, every 2nd update).
        assert moved == [i % every == 0 for i in range(2 * every)]
        assert int(state["updates"]) == 2 * every
    # Without the constraint λ stays put and the penalties vanish.
    off = make_methods(f"{name}-no-cf", {"dataset": "x"}, 3, 2).methods[0]
    monkeypatch.setattr(off, "divergence", _FixedDivergence(off, 100.0))
    monkeypatch.setattr(off, "q_diagnostics", lambda agent, state, batch: {})
    new, _ = off.update(_method_state(off), Agent(), None, batch, jax.random.PRNGKey(0))
    assert float(new["log_lambda"]) == 0.0 and float(off.multiplier(new)) == 0.0


# --- presets ----------------------------------------------------------------------------------
def test_dataset_level_and_the_hopper_expert_quirk():
    assert dataset_level("hopper-medium-lite") == "medium"
    assert dataset_level("halfcheetah-medium-replay-v2") == "medium"
    assert dataset_level("mujoco/hopper/expert-v0") == "expert"
    assert dataset_level("hopper-medium-expert-v2") == "expert"
    assert dataset_level("pointmaze-medium-diverse") == "medium"
    assert is_hopper_expert("hopper-expert-v2") and is_hopper_expert("mujoco/hopper/expert-v0")
    assert not is_hopper_expert("hopper-medium-expert-v2")  # corrected
    assert is_hopper_expert("hopper-medium-expert-v2", official_substring_match=True)  # official
    assert not is_hopper_expert("walker2d-expert-v2", official_substring_match=True)


def test_presets_per_level_and_mode():
    def method(name, **options):
        return make_methods(name, options, 3, 2).methods[0]

    assert method("o2sac", dataset="hopper-medium-v2").epsilon_range() == (0.125, 2.0)
    assert method("o2sac", dataset="hopper-medium-expert-v2").epsilon_range() == (0.005, 0.125)
    assert method("o2td3", dataset="hopper-medium-v2").epsilon_range() == (0.0025, 0.04)
    assert method("o2td3", dataset="walker2d-expert-v2").epsilon_range() == (2.5e-5, 6.25e-4)
    # The alternative (interval) mode divides ε_end by 4 and replaces every 4 evaluations,
    # every 10 on hopper-expert (on hopper-medium-expert too, with the official match).
    interval = method("o2sac-interval", dataset="hopper-medium-v2")
    assert interval.epsilon_range() == (0.125, 0.5) and interval.reference_interval == 4
    assert method("o2sac-interval", dataset="hopper-expert-v2").reference_interval == 10
    assert method("o2td3-interval", dataset="hopper-medium-expert-v2").reference_interval == 4
    quirk = method(
        "o2td3-interval", dataset="hopper-medium-expert-v2", official_substring_match=True
    )
    assert quirk.reference_interval == 10
    assert method("o2sac", dataset="x", level="expert").alpha == 0.5
    assert method("o2sac", dataset="hopper-medium-v2").alpha == 0.2
    assert method("o2sac", dataset="x", epsilon_end=3.0).epsilon_range() == (0.125, 3.0)


def test_options_fitted_to_the_budget_and_dataset_are_stored():
    pipeline = PipelineConfig(dataset="hopper-medium-lite", offline_steps=4000, online_steps=3000)
    spec = RunSpec.create("cql", pipeline, "o2sac")
    assert spec.options == {
        "dataset": "hopper-medium-lite",
        "reevaluation_steps": 2000,
        "alignment_steps": 2000,
        "warmup_steps": 30,
        "schedule_steps": 3000,
        "lambda_init": 1.0,
    }
    # The user's values win; a run from another's offline checkpoint (--from, 0 offline
    # steps) scales the phases with its online budget.
    spec = RunSpec.create(
        "cql", PipelineConfig(offline_steps=0, online_steps=3000), "o2sac", {"warmup_steps": 7}
    )
    assert spec.options["warmup_steps"] == 7 and spec.options["reevaluation_steps"] == 1500
    online = spec.online_agent
    assert (online.policy, online.actor_hidden_dims, online.critic_layer_norm) == (
        "cql",
        (256, 256, 256),
        True,
    )
    assert online.init_temperature == 0.2 and online.actor_lr == 1e-4
    # --online-set wins over the method's defaults.
    spec = RunSpec.create("td3bc", pipeline, "o2td3", online_overrides={"actor_lr": 1e-3})
    assert spec.online_algo == "td3" and spec.online_agent.actor_lr == 1e-3
    assert spec.online_agent.normalize_actor_q and spec.online_agent.exploration_noise == 0.1
    assert RunSpec.from_stored(spec.stored()) == spec
    assert spec.online_agent.actor_grad_clip is None

    # The alternative mode's hopper-expert actor gradient clip, with the quirk's reach.
    def clip(dataset, method="o2td3-interval", **options):
        config = PipelineConfig(dataset=dataset, offline_steps=10, online_steps=10)
        return RunSpec.create("td3bc" if "td3" in method else "cql", config, method, options)

    assert clip("hopper-expert-v2").online_agent.actor_grad_clip == 0.25
    assert clip("hopper-expert-v2", "o2sac-interval").online_agent.actor_grad_clip == 0.25
    assert clip("hopper-expert-v2", "o2td3").online_agent.actor_grad_clip is None
    assert clip("hopper-medium-expert-v2").online_agent.actor_grad_clip is None
    quirk = clip("hopper-medium-expert-v2", official_substring_match=True)
    assert quirk.online_agent.actor_grad_clip == 0.25


def test_antmaze_presets():
    from types import SimpleNamespace

    from o2o.agents import SACConfig, TD3Config
    from o2o.experiment.pipeline import reward_convention_for

    assert dataset_level("antmaze-umaze-v2") == "antmaze"
    assert dataset_level("D4RL/antmaze/large-diverse-v1") == "antmaze"

    def spec(method, dataset):
        config = PipelineConfig(dataset=dataset, offline_steps=3000, online_steps=2000)
        return RunSpec.create("cql" if "sac" in method else "td3bc", config, method)

    # O2SAC: FQE 500k + alignment 1M -> a third and two thirds of the offline budget;
    # warm-up 5k of 200k; one critic of 5 LayerNorm layers; α and λ by maze size.
    umaze = spec("o2sac", "antmaze-umaze-v2")
    assert (umaze.options["reevaluation_steps"], umaze.options["alignment_steps"]) == (1000, 2000)
    assert umaze.options["warmup_steps"] == 50 and umaze.options["lambda_init"] == 1.0
    online = umaze.online_agent
    assert (online.num_critics, online.critic_hidden_dims, online.critic_layer_norm) == (
        1,
        (256,) * 5,
        True,
    )
    assert online.init_temperature == 0.2
    large = spec("o2sac", "antmaze-large-diverse-v2")
    assert large.options["lambda_init"] == 2.0 and large.online_agent.init_temperature == 0.5
    assert spec("o2sac", "D4RL/antmaze/medium-play-v1").options["lambda_init"] == 2.0
    # O2TD3: warm-up 1k of 200k, critics without LayerNorm, σ_expl 0.1, the medium ε.
    td3 = spec("o2td3", "antmaze-umaze-diverse-v2")
    assert td3.options["warmup_steps"] == 10 and td3.options["alignment_steps"] == 2000
    assert not td3.online_agent.critic_layer_norm and td3.online_agent.exploration_noise == 0.1
    method = make_methods("o2td3", {"dataset": "antmaze-umaze-v2"}, 3, 2).methods[0]
    assert method.epsilon_range() == (0.0025, 0.04)
    # Locomotion keeps its presets; the user's λ wins.
    hopper = spec("o2sac", "hopper-medium-lite")
    assert hopper.online_agent.num_critics == 2 and hopper.options["lambda_init"] == 1.0
    config = PipelineConfig(dataset="antmaze-large-play-v2", offline_steps=30, online_steps=20)
    assert (
        RunSpec.create("cql", config, "o2sac", {"lambda_init": 3.0}).options["lambda_init"] == 3.0
    )

    # The official online reward transforms on mazes: O2SAC 10r − 5, O2TD3 r − 1, O2PPO raw;
    # an explicit --reward-convention wins.
    maze = SimpleNamespace(env_id="AntMaze_UMaze-v4", name="antmaze-umaze-v2")

    def convention(name, agent, **pipeline):
        methods = make_methods(name, {"dataset": maze.name}, 3, 2) if name else None
        return reward_convention_for(agent, maze, PipelineConfig(**pipeline), methods)

    assert convention("o2sac", SACConfig()) == "antmaze_cql"
    assert convention("o2td3", TD3Config()) == "antmaze_minus_one"
    assert convention(None, SACConfig()) == "none"
    assert convention("o2sac", SACConfig(), reward_convention="none") == "none"
    hopper_data = SimpleNamespace(env_id="Hopper-v5", name="hopper-medium-lite")
    o2sac = make_methods("o2sac", {"dataset": hopper_data.name}, 3, 2)
    assert reward_convention_for(SACConfig(), hopper_data, PipelineConfig(), o2sac) == "none"


# --- the declared online algorithm ------------------------------------------------------------
def test_methods_declare_their_online_algorithm():
    assert declared_online_algo("o2sac", None) == "sac"
    assert declared_online_algo("o2td3-no-va", "TD3") == "td3"
    assert declared_online_algo("o2ppo", None) == "ppo"
    assert declared_online_algo("samg", None) is None
    assert declared_online_algo("vanilla", "ppo") == "ppo"
    with pytest.raises(ConfigError, match="o2sac fine-tunes with sac; drop --online-algo td3"):
        declared_online_algo("o2sac", "td3")
    with pytest.raises(ConfigError, match="fine-tunes with sac; drop --online-algo td3"):
        RunSpec.create("cql", PipelineConfig(), "o2sac", online_algo="td3")


def test_cli_refuses_a_wrong_online_algo_and_utd_in_one_line(tmp_path, capsys):
    from o2o.cli import main

    common = ["--dataset", "hopper-medium-lite", "--runs-dir", str(tmp_path)]
    cases = [
        ["--algo", "cql", "--finetune", "o2sac", "--online-algo", "td3"],
        ["--algo", "td3bc", "--finetune", "o2td3", "--online-algo", "ppo"],
        ["--algo", "cql", "--finetune", "o2sac", "--utd", "5"],
        ["--algo", "cql", "--finetune", "o2sac", "--method-set", "level=hard"],
    ]
    for i, argv in enumerate(cases):
        assert main(["train", *common, *argv, "--name", f"x{i}"]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err, (argv, err)
        assert not (tmp_path / f"x{i}").exists()


def test_method_utd_is_its_own_option(small_hopper):
    from tests.helpers import tiny_ocr_spec

    # --utd equal to the method's is accepted; the method's option changes it.
    tiny_ocr_spec(small_hopper, utd=10).build(small_hopper)
    pipeline = tiny_ocr_spec(small_hopper, options={"utd": 3}).build(small_hopper)
    assert pipeline.online_config().utd == 3
    with pytest.raises(ConfigError, match="--method-set utd=N, not --utd 4"):
        tiny_ocr_spec(small_hopper, utd=4).build(small_hopper)


# --- resume fixes -----------------------------------------------------------------------------
def test_checkpoint_phase_is_read_whatever_the_key_order(tmp_path):
    path = tmp_path / "c.msgpack"
    # "keys" sorts before the version entry: it was read as "no phase" before.
    save_checkpoint(path, {"states": {"a": np.zeros(3)}, "keys": np.zeros(2)}, phase="p_align")
    assert checkpoint_phase(path) == "p_align"
    save_checkpoint(path, {"A": np.zeros(3)})
    assert checkpoint_phase(path) is None
    path.write_bytes(b"\x00garbage")
    assert checkpoint_phase(path) is None


@pytest.fixture(scope="module")
def small_hopper():
    from o2o import data as datasets

    return datasets.load("hopper-medium-lite").select(slice(0, 1000))


def test_resume_inside_a_later_phase_skips_the_earlier_ones(tmp_path, small_hopper):
    """A run killed inside alignment resumes there: re-evaluation is not traced again."""
    from o2o.experiment.runs import RunDir
    from tests.helpers import phase_start_states, tiny_ocr_spec

    pipeline = tiny_ocr_spec(small_hopper).build(small_hopper)
    run = RunDir.create(tmp_path / "r", {})
    offline, _ = pipeline.initial_states()
    states = phase_start_states(pipeline)
    keys = jax.random.split(jax.random.PRNGKey(1), 1)
    save_checkpoint(
        run.checkpoint_path,
        {"states": states, "keys": keys, "step": np.int64(25)},
        phase="o2sac_alignment",
    )
    (run.path / "phase.json").write_text(json.dumps({"phase": "o2sac_alignment", "step": 25}))
    traced = []
    phases = []
    for phase in pipeline.phases_before_online:
        update = phase.update

        def counting(state, batch, key, update=update, name=phase.name):
            traced.append(name)
            return update(state, batch, key)

        phases.append(type(phase)(**{**phase.__dict__, "update": counting}))
    pipeline.phases_before_online = tuple(phases)
    pipeline.prepare_finetuning(offline, run, resume=True, progress=False)
    assert set(traced) == {"o2sac_alignment"}
    rows = run.rows()
    assert [(r["phase"], r["step"]) for r in rows] == [("o2sac_alignment", 50)]


# --- the initial reference ---------------------------------------------------------------------
def _first_leaf_mean(states):
    """A stand-in evaluation: per seed, the mean of the actor's first parameter array."""
    leaf = jax.tree.leaves(states.actor.params)[0]
    return np.asarray(leaf.reshape(leaf.shape[0], -1).mean(axis=1), np.float64)


@pytest.mark.parametrize("name", ["o2sac", "o2td3"])
def test_initial_reference_is_the_better_of_the_aligned_actor_and_pi_off(name, small_hopper):
    from tests.helpers import phase_start_states, tiny_ocr_spec

    pipeline = tiny_ocr_spec(small_hopper, name, seeds=2).build(small_hopper)
    states = phase_start_states(pipeline, seeds=2)
    pi_off = states.actor.params
    # "Alignment" moved seed 0's actor up (it scores better than π_off) and seed 1's down.
    shift = jnp.asarray([1.0, -1.0])
    aligned = jax.tree.map(lambda p: p + shift.reshape((2,) + (1,) * (p.ndim - 1)), pi_off)
    states = states.replace(actor=states.actor.replace(params=aligned))
    calls = []

    def scores(s):
        calls.append(1)
        return _first_leaf_mean(s)

    finish = pipeline.phases_before_online[-1].finish
    assert pipeline.phases_before_online[-1].name == f"{name}_alignment"
    new, rows = finish(states, pipeline.finetune_offline, scores)
    assert len(calls) == 2  # the aligned actor, then π_off
    row = next(r for r in rows if r["phase"] == f"{name}_initial_reference")
    want_aligned, want_offline = (
        _first_leaf_mean(states),
        _first_leaf_mean(states.replace(actor=states.actor.replace(params=pi_off))),
    )
    np.testing.assert_allclose(row["aligned_score"], want_aligned)
    np.testing.assert_allclose(row["offline_score"], want_offline)
    assert row["aligned_chosen"] == [True, False]
    own = new.extras[name]
    np.testing.assert_allclose(own["best_score"], np.maximum(want_aligned, want_offline), rtol=1e-6)
    for ref, a, off in zip(
        jax.tree.leaves(own["reference"]),
        jax.tree.leaves(aligned),
        jax.tree.leaves(pi_off),
        strict=True,
    ):
        np.testing.assert_array_equal(ref[0], a[0])
        np.testing.assert_array_equal(ref[1], off[1])
    # An online evaluation below the best of both leaves the reference where it is.
    worse = {"seed_normalized_scores": (np.maximum(want_aligned, want_offline) - 1).tolist()}
    kept, _ = pipeline.methods.on_evaluation(pipeline.finetune_agent, 0, new, worse, 0)
    for ref, before in zip(
        jax.tree.leaves(kept.extras[name]["reference"]),
        jax.tree.leaves(own["reference"]),
        strict=True,
    ):
        np.testing.assert_array_equal(ref, before)


def test_initial_reference_offline_option_and_without_alignment(small_hopper):
    from tests.helpers import phase_start_states, tiny_ocr_spec

    # "offline": π_off with no score, as before the official rule; the finish adds no row.
    spec = tiny_ocr_spec(small_hopper, "o2td3", options={"initial_reference": "offline"}, seeds=2)
    pipeline = spec.build(small_hopper)
    states = phase_start_states(pipeline, seeds=2)
    new, rows = pipeline.phases_before_online[-1].finish(
        states, pipeline.finetune_offline, lambda s: pytest.fail("no evaluation expected")
    )
    assert [r["phase"] for r in rows] == ["o2td3_ranking"]
    assert np.all(np.isneginf(np.asarray(new.extras["o2td3"]["best_score"])))
    # Without alignment the actor is still π_off: one evaluation, π_off kept, its score best.
    pipeline = tiny_ocr_spec(small_hopper, "o2td3-no-va", seeds=2).build(small_hopper)
    last = pipeline.phases_before_online[-1]
    assert last.name == "o2td3_reevaluation"
    states = phase_start_states(pipeline, seeds=2)
    calls = []
    new, rows = last.finish(
        states, pipeline.finetune_offline, lambda s: calls.append(1) or np.array([3.0, 4.0])
    )
    assert len(calls) == 1 and rows[-1]["aligned_chosen"] == [False, False]
    np.testing.assert_allclose(new.extras["o2td3"]["best_score"], [3.0, 4.0])


# --- the "-plain" control ---------------------------------------------------------------------
@pytest.mark.parametrize("name", ["o2sac", "o2td3"])
def test_plain_variant_is_the_methods_setup_without_its_parts(name, small_hopper):
    from tests.helpers import ocr_started, tiny_ocr_spec

    full = tiny_ocr_spec(small_hopper, name, online={"critic_layer_norm": False})
    full = full.build(small_hopper)
    pipeline, state, batch = ocr_started(small_hopper, f"{name}-plain")
    assert pipeline.phases_before_online == ()
    # The setup is the full method's: the online agent, UTD, replay and warm-up.
    plain_online, full_online = pipeline.online_config(), full.online_config()
    assert (plain_online.utd, plain_online.update_after) == (
        full_online.utd,
        full_online.update_after,
    )
    assert pipeline.policy == full.policy == "mixed"
    assert pipeline.online_agent_config == full.online_agent_config
    # Online, the step is the online agent's own: the same update as the agent without the
    # method, bit for bit (λ is 0, the penalties vanish, no key is taken from the agent; run eagerly,
    # as a jitted graph with the zero terms may fuse differently), with a
    # reference policy away from π so that the full method's penalties are not 0.
    own = dict(state.extras[name])
    own["reference"] = jax.tree.map(lambda p: p + 0.1, own["reference"])
    state = state.replace(extras={name: own})
    key = jax.random.PRNGKey(3)
    plain_step = pipeline.methods.wrap_update(pipeline.finetune_agent)
    full_step = full.methods.wrap_update(full.finetune_agent)
    bare_step = pipeline.online_agent_config.create().update
    bare = bare_step(state.replace(extras=None), batch, key)[0]
    networks = lambda s: jax.tree.leaves((s.actor.params, s.critic.params))  # noqa: E731
    for x, y in zip(networks(plain_step(state, batch, key)[0]), networks(bare), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    changed = networks(full_step(state, batch, key)[0])
    assert any(
        not np.array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(changed, networks(bare), strict=True)
    )
