"""O2PPO: the reference-advantage blend against NumPy float64, the value fit, the reference
replacement, the IQL → PPO hand-over of the pipeline (``online``), its errors, and resume
inside the value-fit phase and online equal to an uninterrupted run."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import gaussian_log_prob

from o2o.agents import IQLConfig, PPOConfig
from o2o.core.rollout import Rollout
from o2o.core.types import Transition
from o2o.errors import ConfigError
from o2o.experiment.pipeline import Pipeline, PipelineConfig
from o2o.experiment.runs import RunDir
from o2o.finetune import make_methods
from o2o.finetune.o2ppo import reference_advantages

OBS_DIM, ACT_DIM, T = 3, 2, 16


def numpy_reference_advantages(adv, log_ref, entropy_ref, act_dim, alpha):
    shift = 4.0 * act_dim
    softplus = np.log1p(np.exp(log_ref + entropy_ref + shift))
    return alpha * (softplus - shift) / act_dim * abs(np.std(adv))


def o2ppo_agent(**options):
    methods = make_methods("o2ppo", options, OBS_DIM, ACT_DIM)
    config = PPOConfig.for_finetuning(
        rollout_length=T,
        num_minibatches=4,
        actor_hidden_dims=(8,),
        critic_hidden_dims=(8,),
        normalize_advantages=False,
        anneal_steps=64,
    )
    return config.create(hooks=methods), methods


def with_method_state(agent, methods, key=0):
    state = agent.init(jax.random.PRNGKey(key), OBS_DIM, ACT_DIM)
    states = jax.tree.map(lambda x: x[None], state)
    states = methods.init_states(agent, states, jax.random.PRNGKey(1)[None], None, offline=False)
    return jax.tree.map(lambda x: x[0], states)


def test_reference_advantages_match_numpy():
    rng = np.random.default_rng(0)
    adv = rng.normal(size=20) * 3.0
    log_ref = rng.normal(size=20) * 4.0 - 2.0
    entropy = rng.normal(size=20)
    got = reference_advantages(
        *(jnp.asarray(x, jnp.float32) for x in (adv, log_ref, entropy)), act_dim=3, weight=2.0
    )
    want = numpy_reference_advantages(adv, log_ref, entropy, 3, 2.0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # Bounded below by -α·4|A|/|A|·std = -8·std: very unlikely actions are not punished more.
    assert float(jnp.min(got)) > -8.0 * np.std(adv)


@pytest.mark.parametrize("env_steps, weight", [(0, 1.0), (32, 0.5), (64, 0.0), (96, 0.0)])
def test_ppo_blends_gae_with_the_reference_advantage(env_steps, weight):
    """Through PPO's process_rollout: (A_GAE + w·A_ref)/(1 + w), w = 1 − t/T_end (T_end = the
    annealing horizon 64), with π_ref a policy other than the acting one."""
    agent, methods = o2ppo_agent(reference_weight=2.0)
    state = with_method_state(agent, methods)
    own = state.extras["o2ppo"]
    reference = jax.tree.map(lambda x: x + 0.3, own["reference"])
    state = state.replace(
        env_steps=jnp.int32(env_steps),
        extras={"o2ppo": {**own, "reference": reference}},
    )
    rng = np.random.default_rng(1)
    obs = jnp.asarray(rng.normal(size=(T, OBS_DIM)), jnp.float32)
    actions, log_probs, values = agent.act_with_info(state, obs, jax.random.PRNGKey(3))
    rollout = Rollout(
        obs,
        actions,
        jnp.asarray(rng.normal(size=T), jnp.float32),
        jnp.asarray(rng.normal(size=(T, OBS_DIM)), jnp.float32),
        jnp.zeros(T).at[5].set(1.0),
        jnp.zeros(T),
        log_probs,
        values,
    )
    _, blended = agent.process_rollout(state, rollout, jax.random.PRNGKey(4))
    plain_agent = PPOConfig(**{**agent.config.__dict__}).create()  # the same PPO, no method
    _, plain = plain_agent.process_rollout(state, rollout, jax.random.PRNGKey(4))

    policy = state.actor(obs, params=reference)
    log_ref = gaussian_log_prob(actions, policy.mean, policy.log_std)
    log_std = np.asarray(policy.log_std, np.float64)
    entropy = np.sum(log_std + 0.5 * np.log(2 * np.pi * np.e), axis=-1)
    adv = np.asarray(plain.advantages, np.float64)
    bonus = numpy_reference_advantages(adv, log_ref, entropy, ACT_DIM, 2.0)
    want = (adv + weight * bonus) / (1.0 + weight)
    np.testing.assert_allclose(blended.advantages, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(blended.returns, plain.returns)  # V's target stays GAE's
    if weight > 0:
        assert not np.allclose(blended.advantages, adv)


def test_value_fit_regresses_v_on_monte_carlo_returns_with_its_own_optimizer():
    agent, methods = o2ppo_agent(value_fit_lr=1e-2)
    state = with_method_state(agent, methods)
    [phase] = methods.phases(agent)
    assert phase.name == "o2ppo_value_fit" and phase.when == "before_online"
    rng = np.random.default_rng(2)
    obs = jnp.asarray(rng.normal(size=(64, OBS_DIM)), jnp.float32)
    returns = jnp.asarray(obs[:, 0] * 3.0 + 5.0)  # a learnable target
    batch = Transition(obs, jnp.zeros((64, ACT_DIM)), jnp.zeros(64), obs, jnp.zeros(64), returns)
    update = jax.jit(phase.update)

    def mse(s):
        return float(jnp.mean((s.critic(obs) - returns) ** 2))

    before = mse(state)
    for _ in range(300):
        state, metrics = update(state, batch, jax.random.PRNGKey(0))
    assert mse(state) < 0.05 * before
    np.testing.assert_allclose(metrics["o2ppo/value_fit_loss"], mse(state), rtol=0.2)
    # PPO's own critic optimizer (and its annealing count) has not moved.
    count = [x for x in jax.tree.leaves(state.critic.opt_state) if np.ndim(x) == 0]
    assert count and all(int(c) == 0 for c in count)


def test_reference_replaced_per_seed_on_a_new_best_or_every_interval():
    agent, methods = o2ppo_agent()
    [method] = methods
    states = jax.vmap(lambda k: agent.init(k, OBS_DIM, ACT_DIM))(
        jax.random.split(jax.random.PRNGKey(0), 2)
    )
    states = methods.init_states(
        agent, states, jax.random.split(jax.random.PRNGKey(1), 2), None, False
    )
    offline = jax.tree.map(np.asarray, states.actor.params)

    def evaluate(states, scores, shift):
        moved = states.replace(
            actor=states.actor.replace(
                params=jax.tree.map(lambda x: x + shift, states.actor.params)
            )
        )
        return method.on_evaluation(agent, 0, moved, {"seed_normalized_scores": scores}, 0)

    first = lambda tree: np.asarray(jax.tree.leaves(tree)[0])  # noqa: E731
    states, [event] = evaluate(states, [10.0, 20.0], 1.0)
    assert event["replaced"] == [True, True]  # anything beats -inf
    states, [event] = evaluate(states, [15.0, 5.0], 1.0)
    assert event["replaced"] == [True, False] and event["best_score"] == [15.0, 20.0]
    ref = first(states.extras["o2ppo"]["reference"])
    np.testing.assert_allclose(ref[0], first(offline)[0] + 2.0, rtol=1e-6)  # the latest π
    np.testing.assert_allclose(ref[1], first(offline)[1] + 1.0, rtol=1e-6)  # the first one

    interval = make_methods("o2ppo-interval", {}, OBS_DIM, ACT_DIM)
    [every4] = interval
    replaced = []
    for _ in range(8):
        states, [event] = every4.on_evaluation(
            agent, 0, states, {"seed_normalized_scores": [99.0, 99.0]}, 0
        )
        replaced.append(event["replaced"])
    # Evaluations 3 to 10 of this state: replaced at the 4th and 8th, on both seeds alike.
    assert replaced == [[n % 4 == 0] * 2 for n in range(3, 11)]


# --- per-dataset presets ----------------------------------------------------------------------
def test_presets_per_dataset():
    from o2o.experiment.builder import RunSpec

    def spec(dataset, **options):
        config = PipelineConfig(dataset=dataset, offline_steps=10, online_steps=4096)
        return RunSpec.create("iql", config, "o2ppo", options)

    # hopper-expert: 5 epochs per rollout; hopper-medium-expert only with the official match.
    assert spec("hopper-expert-v2").online_agent.epochs == 5
    assert spec("hopper-medium-expert-v2").online_agent.epochs == 10
    assert spec("hopper-medium-expert-v2", official_substring_match=True).online_agent.epochs == 5
    # T_end: the PPO annealing horizon (the online budget), twice it on expert locomotion.
    agent = type("A", (), {"config": type("C", (), {"anneal_steps": 1000})})()

    def blend(dataset, **options):
        return make_methods("o2ppo", {"dataset": dataset, **options}, 3, 2).methods[0]

    assert blend("hopper-medium-lite").blend_steps(agent) == 1000
    assert blend("walker2d-medium-expert-v2").blend_steps(agent) == 2000
    assert blend("halfcheetah-expert-lite").blend_steps(agent) == 2000
    assert blend("pointmaze-medium-diverse").blend_steps(agent) == 1000
    assert blend("hopper-expert-v2", blend_steps=7).blend_steps(agent) == 7
    # HalfCheetah: PPO's reward scaling on (the return scaling carried over), nowhere else.
    assert spec("halfcheetah-medium-lite").online_agent.normalize_rewards
    assert not spec("hopper-medium-lite").online_agent.normalize_rewards
    assert not spec("halfcheetah-medium-lite", return_scaling=False).online_agent.normalize_rewards


def test_hopper_expert_log_std_reset_once_before_the_reference_is_taken():
    """The official ``reset_std``: log-std entries above log 0.05 set to it as fine-tuning
    starts, on hopper-expert only (π_ref, copied after, has the reset log-std too)."""
    agent, _ = o2ppo_agent()
    states = jax.vmap(lambda k: agent.init(k, OBS_DIM, ACT_DIM))(
        jax.random.split(jax.random.PRNGKey(0), 2)
    )
    # One entry below the cap stays as it is.
    log_std = jnp.asarray([[0.0, -4.0], [0.5, -3.5]])
    states = states.replace(
        actor=states.actor.replace(params={**states.actor.params, "log_std": log_std})
    )
    keys = jax.random.split(jax.random.PRNGKey(1), 2)
    cap = np.log(0.05)
    for dataset, want in (
        ("hopper-expert-v2", [[cap, -4.0], [cap, -3.5]]),
        ("hopper-medium-lite", [[0.0, -4.0], [0.5, -3.5]]),
    ):
        methods = make_methods("o2ppo", {"dataset": dataset}, OBS_DIM, ACT_DIM)
        started = methods.init_states(agent, states, keys, None, False)
        np.testing.assert_allclose(started.actor.params["log_std"], want, rtol=1e-6)
        reference = started.extras["o2ppo"]["reference"]["log_std"]
        np.testing.assert_allclose(reference, want, rtol=1e-6)
        # The rest of the actor is handed over unchanged.
        for got, before in zip(
            jax.tree.leaves(started.actor.params["MLP_0"]),
            jax.tree.leaves(states.actor.params["MLP_0"]),
            strict=True,
        ):
            np.testing.assert_array_equal(got, before)


def hand_dataset():
    """Two episodes: rows 0-1 cut by a timeout, rows 2-4 ended by a terminal."""
    from o2o.data.dataset import Dataset

    n = 5
    return Dataset(
        observations=np.zeros((n, OBS_DIM), np.float32),
        actions=np.zeros((n, ACT_DIM), np.float32),
        rewards=np.asarray([1.0, 2.0, 3.0, 4.0, 5.0], np.float32),
        next_observations=np.zeros((n, OBS_DIM), np.float32),
        terminals=np.asarray([0, 0, 0, 0, 1], bool),
        timeouts=np.asarray([0, 1, 0, 0, 0], bool),
    )


def test_monte_carlo_returns_across_timeouts_only_with_the_official_quirk():
    data = hand_dataset()
    transitions = data.to_transition(discount=0.5)
    # By hand, γ = 0.5: episode ends respected: [1 + 0.5·2, 2, 3 + 0.5·(4 + 0.5·5), 4 + 0.5·5, 5].
    respected = [2.0, 2.0, 6.25, 6.5, 5.0]
    np.testing.assert_allclose(transitions.mc_returns, respected)
    [plain] = make_methods("o2ppo", {"dataset": "hopper-medium-lite"}, OBS_DIM, ACT_DIM)
    assert plain.finetune_data(data, transitions, 0.5) is transitions
    [quirk] = make_methods(
        "o2ppo", {"dataset": "hopper-medium-lite", "official_timeout_quirk": True}, OBS_DIM, ACT_DIM
    )
    got = quirk.finetune_data(data, transitions, 0.5)
    # Row 1's return runs on into the next episode: 2 + 0.5·6.25, then row 0: 1 + 0.5·5.125.
    np.testing.assert_allclose(got.mc_returns, [3.5625, 5.125, 6.25, 6.5, 5.0])
    np.testing.assert_array_equal(got.rewards, transitions.rewards)


def test_return_scaling_divides_the_targets_by_the_offline_return_std():
    data = hand_dataset()
    transitions = data.to_transition(discount=0.5)
    # Running discounted returns by hand, restarted at episode starts (rows 0 and 2):
    # [1, 0.5·1 + 2, 3, 0.5·3 + 4, 0.5·5.5 + 5].
    running = np.asarray([1.0, 2.5, 3.0, 5.5, 7.75])
    scale = np.sqrt(running.var() + 1e-8)
    for options in ({"dataset": "halfcheetah-medium-lite"}, {"return_scaling": True}):
        [method] = make_methods("o2ppo", options, OBS_DIM, ACT_DIM)
        got = method.finetune_data(data, transitions, 0.5)
        np.testing.assert_allclose(
            got.mc_returns, np.asarray(transitions.mc_returns) / scale, rtol=1e-6
        )
        np.testing.assert_allclose(got.rewards, data.rewards / scale, rtol=1e-6)
        mean, var, count = method.offline_return_stats
        np.testing.assert_allclose([mean, var, count], [running.mean(), running.var(), 5])
    [off] = make_methods(
        "o2ppo", {"dataset": "halfcheetah-medium-lite", "return_scaling": False}, OBS_DIM, ACT_DIM
    )
    assert (
        off.finetune_data(data, transitions, 0.5) is transitions
        and off.offline_return_stats is None
    )


# --- the pipeline: IQL offline, PPO online ---------------------------------------------------
@pytest.fixture(scope="module")
def small_hopper():
    from o2o import data as datasets

    return datasets.load("hopper-medium-lite").select(slice(0, 1000))


def tiny_o2ppo(dataset, method="o2ppo", method_options=None, **ppo_overrides):
    config = PipelineConfig(
        offline_steps=100,
        online_steps=128,
        offline_chunk=100,
        offline_eval_every=100,
        online_eval_every=64,
        eval_episodes=1,
        batch_size=32,
    )
    ppo = PPOConfig.for_finetuning(
        **{
            "actor_hidden_dims": (16, 16),
            "critic_hidden_dims": (16,),
            "rollout_length": 64,
            "num_minibatches": 4,
            "epochs": 2,
            "anneal_steps": 128,
            **ppo_overrides,
        }
    )
    options = {"value_fit_steps": 150, **(method_options or {})} if method != "vanilla" else {}
    methods = make_methods(method, options, dataset.obs_dim, dataset.act_dim)
    iql = IQLConfig(hidden_dims=(16, 16), offline_steps=100)
    return Pipeline("iql", iql, config, dataset, methods, online=("ppo", ppo))


def test_ppo_starts_from_the_offline_actor_with_a_fresh_critic(small_hopper):
    pipeline = tiny_o2ppo(small_hopper, "vanilla")
    offline_states, _ = pipeline.initial_states()
    start = pipeline.prepare_finetuning(offline_states, None, False, False)
    for x, y in zip(
        jax.tree.leaves(offline_states.actor.params),
        jax.tree.leaves(start.actor.params),
        strict=True,
    ):
        np.testing.assert_array_equal(x, y)
    assert start.critic.params["MLP_0"]["Dense_0"]["kernel"].shape == (1, 11, 16)
    assert pipeline.describe()["online_algo"] == "ppo"
    # The online reward convention (PPO: raw) is what fine-tuning's offline data carries.
    assert pipeline.reward_convention == "iql_locomotion"
    assert pipeline.online_reward_convention == "none"
    np.testing.assert_allclose(pipeline.finetune_offline.rewards, small_hopper.rewards, rtol=1e-6)
    with pytest.raises(ConfigError, match="does not fit ppo's actor"):
        tiny_o2ppo(small_hopper, "vanilla", actor_hidden_dims=(8,)).prepare_finetuning(
            offline_states, None, False, False
        )


def test_return_scaling_statistics_carry_over_into_ppo(small_hopper):
    pipeline = tiny_o2ppo(
        small_hopper, method_options={"return_scaling": True}, normalize_rewards=True
    )
    offline_states, _ = pipeline.initial_states()
    [method] = pipeline.methods
    mean, var, count = method.offline_return_stats
    assert count == small_hopper.size and var > 1.0
    scale = np.sqrt(var + 1e-8)
    np.testing.assert_allclose(
        pipeline.finetune_offline.mc_returns, small_hopper.mc_returns(0.99) / scale, rtol=1e-5
    )  # PPO's reward convention: raw rewards
    start = pipeline.prepare_finetuning(offline_states, None, False, False)
    stats = start.return_stats
    np.testing.assert_allclose(
        [stats.mean[0], stats.var[0], stats.count[0]], [mean, var, count], rtol=1e-6
    )


def test_o2ppo_plain_has_no_value_fit_and_leaves_ppos_advantages_alone(small_hopper):
    pipeline = tiny_o2ppo(small_hopper, "o2ppo-plain")
    assert pipeline.phases_before_online == ()
    assert tiny_o2ppo(small_hopper).phases_before_online[0].name == "o2ppo_value_fit"
    methods = make_methods("o2ppo-plain", {}, OBS_DIM, ACT_DIM)
    agent = o2ppo_agent()[0].config.create(hooks=methods)
    state = with_method_state(agent, methods)
    own = state.extras["o2ppo"]
    reference = jax.tree.map(lambda x: x + 0.3, own["reference"])  # π_ref away from π
    state = state.replace(extras={"o2ppo": {**own, "reference": reference}})
    rng = np.random.default_rng(2)
    obs = jnp.asarray(rng.normal(size=(T, OBS_DIM)), jnp.float32)
    actions, log_probs, values = agent.act_with_info(state, obs, jax.random.PRNGKey(3))
    rewards = jnp.asarray(rng.normal(size=T), jnp.float32)
    next_obs = jnp.asarray(rng.normal(size=(T, OBS_DIM)), jnp.float32)
    rollout = Rollout(
        obs, actions, rewards, next_obs, jnp.zeros(T), jnp.zeros(T), log_probs, values
    )
    _, got = agent.process_rollout(state, rollout, jax.random.PRNGKey(4))
    _, plain = agent.config.create().process_rollout(state, rollout, jax.random.PRNGKey(4))
    np.testing.assert_array_equal(got.advantages, plain.advantages)


def test_o2ppo_needs_ppo_online_and_ppo_no_offline_phase(small_hopper):
    methods = make_methods("o2ppo", {}, small_hopper.obs_dim, small_hopper.act_dim)
    with pytest.raises(ConfigError, match="online-algo ppo"):
        Pipeline("iql", IQLConfig(), PipelineConfig(), small_hopper, methods)
    with pytest.raises(ConfigError, match="no offline phase"):
        Pipeline("ppo", PPOConfig(), PipelineConfig(offline_steps=10), small_hopper)


def test_cli_o2ppo_errors_are_one_line(tmp_path, capsys):
    from o2o.cli import main

    common = ["--dataset", "hopper-medium-lite", "--runs-dir", str(tmp_path)]
    cases = [
        ["--algo", "iql", "--finetune", "o2ppo", "--online-algo", "sac"],
        ["--algo", "iql", "--online-set", "actor_lr=1e-4"],
        ["--algo", "iql", "--online-algo", "nope"],
        ["--algo", "ppo"],
    ]
    for i, argv in enumerate(cases):
        assert main(["train", *common, *argv, "--name", f"x{i}"]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err, (argv, err)
        assert not (tmp_path / f"x{i}").exists()


@pytest.mark.slow
def test_o2ppo_killed_in_the_value_fit_or_online_resumes_identically(
    tmp_path, small_hopper, monkeypatch
):
    """Killed after a checkpoint of the value fit (its first, before phase.json names the
    phase, or its last, before the fitted start is saved) or online (after the first online
    evaluation), the resumed run equals an uninterrupted one."""
    from o2o.experiment import online as online_module
    from o2o.experiment import pipeline as pipeline_module

    full = tiny_o2ppo(small_hopper).run(RunDir.create(tmp_path / "full", {}), progress=False)
    phases = [(r["phase"], r["step"]) for r in full.rows]
    assert ("o2ppo_value_fit", 150) in phases and ("online", 228) in phases
    originals = {module: module.save_checkpoint for module in (pipeline_module, online_module)}

    def killing_saves(kill_at: int) -> list[str]:
        saved: list[str] = []
        for module, original in originals.items():

            def save(path, tree, original=original, **options):
                original(path, tree, **options)
                saved.append(path.name)
                if len(saved) == kill_at:
                    raise KeyboardInterrupt

            monkeypatch.setattr(module, "save_checkpoint", save)
        return saved

    names = ["checkpoint", "offline", "checkpoint", "checkpoint", "finetune_start", "checkpoint"]
    for kill_at in (3, 4, 6):
        saved = killing_saves(kill_at)
        run = RunDir.create(tmp_path / f"killed{kill_at}", {})
        with pytest.raises(KeyboardInterrupt):
            tiny_o2ppo(small_hopper).run(run, progress=False)
        assert [name.split(".")[0] for name in saved] == names[:kill_at]
        for module, original in originals.items():
            monkeypatch.setattr(module, "save_checkpoint", original)
        resumed = tiny_o2ppo(small_hopper).run(run, resume=True, progress=False)
        strip = lambda rows: [{k: v for k, v in r.items() if k != "wall_time"} for r in rows]  # noqa: E731
        assert strip(resumed.rows) == strip(full.rows), kill_at
        for x, y in zip(jax.tree.leaves(full.states), jax.tree.leaves(resumed.states), strict=True):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
        assert run.rows("finetune.jsonl") == RunDir(tmp_path / "full").rows("finetune.jsonl")


def test_run_spec_stores_and_restores_the_online_algorithm():
    from o2o.experiment.builder import RunSpec

    pipeline = PipelineConfig(offline_steps=1000, online_steps=4096)
    spec = RunSpec.create(
        "iql",
        pipeline,
        "o2ppo",
        {"value_fit_steps": 10},
        online_algo="PPO",
        online_overrides={"epochs": 5},
    )
    assert spec.online_algo == "ppo"
    assert spec.online_agent == PPOConfig.for_finetuning(epochs=5, anneal_steps=4096)
    restored = RunSpec.from_stored(spec.stored())
    assert restored == spec and restored.online == ("ppo", spec.online_agent)
    # Without an online algorithm the stored config is what it always was.
    assert "online_agent" not in RunSpec.create("iql", pipeline).stored()
    with pytest.raises(ConfigError, match="--online-set needs --online-algo"):
        RunSpec.create("iql", pipeline, online_overrides={"epochs": 5})
