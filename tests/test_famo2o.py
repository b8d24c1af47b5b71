"""FamO2O (o2o/finetune/famo2o.py; docs/famo2o.md): the β encoding and range map, the balance
model's losses against float64 NumPy, the update order, β reaching the actor, the offline and
online β sources, the variants, resume, and the CLI end to end."""

import json
import math
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml

from o2o.agents import AWACConfig, CQLConfig, IQLConfig, TD3BCConfig
from o2o.core.hooks import with_policy_inputs
from o2o.core.types import conditioned
from o2o.errors import ConfigError
from o2o.experiment.online import Preprocess
from o2o.finetune import make_methods
from o2o.finetune.base import METHOD_KEY
from o2o.finetune.famo2o import beta_from_unit, beta_histogram, encode_beta
from tests.helpers import mlp_forward, q_values, tiny_batch

OBS, ACT, B = 3, 2, 8
KEY = jax.random.PRNGKey(5)
BASES = {
    "iql": IQLConfig(hidden_dims=(8,)),
    "awac": AWACConfig(hidden_dims=(8,)),
    "cql": CQLConfig(actor_hidden_dims=(8,), critic_hidden_dims=(8,), cql_n_actions=3),
}
ROOT = Path(__file__).resolve().parents[1]


def famo2o_agent(algo="iql", name="famo2o", online=False, **options):
    """(method, agent, agent state with FamO2O's state) for a small base agent."""
    methods = make_methods(name, {"balance_hidden_dims": (8,), **options}, OBS, ACT)
    (method,) = methods
    agent = BASES[algo].create(hooks=methods)
    state = agent.init(jax.random.PRNGKey(0), OBS, ACT)
    own = method.init_state(agent, state, jax.random.PRNGKey(1), Preprocess())
    if online:
        own = method.start_online(own)
    return method, agent, state.replace(extras={"famo2o": own})


def batch(seed=0, n=B):
    return jax.tree.map(jnp.asarray, tiny_batch(np.random.default_rng(seed), n, OBS, ACT))


def with_balance_bias(state, bias, log_std=None):
    """The agent state with the balance model's output bias (and log-std) set: a fixture whose
    balance β is known without running the network."""
    own = state.extras["famo2o"]
    params = jax.tree.map(lambda x: x, own["balance"].params)
    last = sorted(params["MLP_0"], key=lambda n: int(n.split("_")[1]))[-1]
    params["MLP_0"][last]["bias"] = jnp.full_like(params["MLP_0"][last]["bias"], bias)
    params["MLP_0"][last]["kernel"] = jnp.zeros_like(params["MLP_0"][last]["kernel"])
    if log_std is not None:
        params["log_std"] = jnp.full_like(params["log_std"], log_std)
    own = {**own, "balance": own["balance"].replace(params=params)}
    return state.replace(extras={"famo2o": own})


# --- encoding and range -----------------------------------------------------------------------


def test_encoding_matches_a_float64_loop():
    betas = np.array([0.0, 0.5, 1.0, 3.7, 14.0, -2.0])
    want = np.zeros((betas.size, 6))
    for row, beta in enumerate(betas):
        for i in range(3):
            want[row, 2 * i] = math.sin(beta / 10000.0 ** (2 * i / 6))
            want[row, 2 * i + 1] = math.cos(beta / 10000.0 ** (2 * i / 6))
    got = np.asarray(encode_beta(jnp.asarray(betas, jnp.float32)))
    np.testing.assert_allclose(got, want, atol=2e-6)
    assert got[2, 0] == pytest.approx(math.sin(1.0), abs=1e-6)  # by hand: i = 0 is sin(β), cos(β)
    assert got[2, 3] == pytest.approx(math.cos(1.0 / 10000 ** (1 / 3)), abs=1e-6)


def test_range_map_and_the_cql_quirk():
    u = jnp.asarray([-1.0, 0.0, 1.0, 0.5])
    np.testing.assert_allclose(beta_from_unit(u, 1.0, 5.0), [1.0, 3.0, 5.0, 4.0])
    # Official HierarchicalPolicy: u·(hi-lo) + lo, so (0.5, 1.5) spans (-0.5, 1.5).
    np.testing.assert_allclose(beta_from_unit(u, 0.5, 1.5, quirk=True), [-0.5, 0.5, 1.5, 1.0])


def test_histogram_counts_and_q_means_by_hand():
    beta = np.array([1.0, 1.1, 2.9, 5.0, 7.0, 0.0])
    q = np.array([1.0, 3.0, 10.0, 4.0, 6.0, 2.0])
    out = beta_histogram(beta, q, 1.0, 5.0, bins=4)  # bins [1,2) [2,3) [3,4) [4,5]
    assert out["counts"] == [3, 1, 0, 2]  # 0.0 and 7.0 land in the end bins
    assert out["q_mean"] == [2.0, 10.0, None, 5.0]
    assert out["edges"] == [1.0, 2.0, 3.0, 4.0, 5.0] and out["states"] == 6


# --- the balance model's losses ---------------------------------------------------------------


def tanh_gaussian_sample(mean, log_std, noise):
    """(tanh u, log π(u)) in float64: the Gaussian log-density minus log(1 - tanh²)."""
    pre = mean + np.exp(log_std) * noise
    log_prob = -0.5 * noise**2 - log_std - 0.5 * np.log(2 * np.pi)
    log_prob -= np.log(1.0 - np.tanh(pre) ** 2)
    return np.tanh(pre), log_prob.sum(axis=-1)


def encode64(beta):
    i = np.arange(3)
    angles = beta[:, None] / 10000.0 ** (2 * i / 6)
    return np.stack([np.sin(angles), np.cos(angles)], -1).reshape(beta.size, 6)


def balance_case(algo):
    """(method, agent, state, FamO2O's state, batch, float64 states, the balance loss's draws
    of the β noise (B, 1) and of the action noise (B, |A|) for ``KEY``)."""
    method, agent, state = famo2o_agent(algo)
    data = batch()
    beta_key, action_key = jax.random.split(KEY)
    noise = np.asarray(jax.random.normal(beta_key, (B, 1)), np.float64)
    action_noise = np.asarray(jax.random.normal(action_key, (B, ACT)), np.float64)
    obs = np.asarray(data.observations, np.float64)
    return method, agent, state, state.extras["famo2o"], data, obs, noise, action_noise


def test_awr_balance_loss_and_temperature_update_match_float64():
    method, agent, state, own, data, obs, noise, action_noise = balance_case("iql")
    # float64: u ~ tanh N(μ_b(s), σ_b), β = (u+1)/2·4 + 1, a ~ N(tanh μ_u(s, enc β), σ_u).
    params = own["balance"].params
    mean = mlp_forward(params["MLP_0"], obs)
    u, log_prob = tanh_gaussian_sample(mean, np.asarray(params["log_std"], np.float64), noise)
    beta = (u[:, 0] + 1.0) / 2.0 * 4.0 + 1.0
    actor = state.actor.params
    actor_mean = np.tanh(mlp_forward(actor["MLP_0"], np.concatenate([obs, encode64(beta)], -1)))
    actions = actor_mean + np.exp(np.asarray(actor["log_std"], np.float64)) * action_noise
    q = q_values(state.target_critic_params, obs, actions).min(axis=0)
    want = np.mean(1.0 * log_prob - q)  # α_b = 1 at the start
    got, metrics = method.balance_loss(own, agent, state, data, KEY, params)
    assert float(got) == pytest.approx(want, rel=1e-4, abs=1e-5)
    assert float(metrics["balance_entropy"]) == pytest.approx(-log_prob.mean(), rel=1e-4)

    # L_α = α·(H - H_target): one Adam step moves log α by -lr·sign(H + 0.5).
    new, out = method.update(own, agent, state, data, KEY)
    entropy = float(out["famo2o/balance_entropy"])
    assert float(out["famo2o/temperature_loss"]) == pytest.approx(entropy + 0.5, rel=1e-5)
    log_alpha = float(np.log(new["temperature"]()))
    assert log_alpha == pytest.approx(-3e-4 * np.sign(entropy + 0.5), rel=1e-3)


def cql_log_std(params, raw):
    """CQLPolicy's log-std in float64: multiplier·raw + offset, clipped to [-20, 2]."""
    scaled = float(params["log_std_multiplier"]) * raw + float(params["log_std_offset"])
    return np.clip(scaled, -20.0, 2.0)


def test_cql_balance_loss_is_minus_q_of_the_live_critic_without_entropy():
    method, agent, state, own, data, obs, noise, action_noise = balance_case("cql")
    params = own["balance"].params
    # The CQL form's balance model is CQLPolicy with one output: log-std = m·raw + o.
    out = mlp_forward(params["MLP_0"], obs)
    u, _ = tanh_gaussian_sample(out[:, :1], cql_log_std(params, out[:, 1:]), noise)
    beta = (u[:, 0] + 1.0) / 2.0 * 1.0 + 0.5
    actor = state.actor.params
    a_out = mlp_forward(actor["MLP_0"], np.concatenate([obs, encode64(beta)], -1))
    a_log_std = cql_log_std(actor, a_out[:, ACT:])
    actions = np.tanh(a_out[:, :ACT] + np.exp(a_log_std) * action_noise)
    q = q_values(state.critic.params, obs, actions).min(axis=0)
    got, _ = method.balance_loss(own, agent, state, data, KEY, params)
    assert float(got) == pytest.approx(-q.mean(), rel=1e-4, abs=1e-5)
    new, metrics = method.update(own, agent, state, data, KEY)
    assert "famo2o/temperature_loss" not in metrics
    np.testing.assert_array_equal(new["temperature"].params["log_value"], 0.0)


def test_balance_updates_every_fifth_step_on_locomotion_iql_and_every_step_for_cql():
    for algo, period in (("iql", 5), ("awac", 5), ("cql", 1)):
        method, agent, state = famo2o_agent(algo)
        own, data = state.extras["famo2o"], batch()
        changed = []
        for step in range(6):
            new, _ = method.update(own, agent, state, data, jax.random.fold_in(KEY, step))
            moved = (
                jax.tree.leaves(new["balance"].params)[0]
                - jax.tree.leaves(own["balance"].params)[0]
            )
            changed.append(bool(np.any(np.asarray(moved) != 0)))
            own = new
        assert changed == [step % period == 0 for step in range(6)], algo
    method, _, _ = famo2o_agent("iql", domain="maze")
    assert method.resolved(BASES["iql"].create())["period"] == 1


# --- update order -----------------------------------------------------------------------------


@pytest.mark.parametrize("algo", ["iql", "cql"])
def test_balance_trains_on_the_step_start_and_the_actor_on_the_balance_before_it(algo):
    method, agent, state = famo2o_agent(algo, online=True)
    methods = agent.hooks
    data = batch()
    updated, metrics = jax.jit(methods.wrap_update(agent))(state, data, KEY)
    # The agent's own update is the plain one: it saw FamO2O's state unchanged.
    alone, _ = agent.update(state, data, KEY)
    for x, y in zip(
        jax.tree.leaves(alone.actor.params), jax.tree.leaves(updated.actor.params), strict=True
    ):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
    # The balance step is the one computed against the agent at the start of the step ...
    method_key = jax.random.fold_in(jax.random.fold_in(KEY, METHOD_KEY), 0)
    own = state.extras["famo2o"]
    at_start, start_metrics = method.update(own, agent, state, data, method_key)
    _, after_metrics = method.update(own, agent, alone, data, method_key)
    got = jax.tree.leaves(updated.extras["famo2o"]["balance"].params)
    for x, y in zip(jax.tree.leaves(at_start["balance"].params), got, strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
    loss = float(metrics["famo2o/balance_loss"])
    assert loss == pytest.approx(float(start_metrics["famo2o/balance_loss"]), rel=1e-6)
    # ... not against the updated agent (one step apart: a small but clear difference).
    assert abs(loss - float(after_metrics["famo2o/balance_loss"])) > 1e-5


def test_cql_bootstraps_with_the_balance_beta_at_s_even_offline():
    method, agent, state = famo2o_agent("cql")
    own = state.extras["famo2o"]
    data = batch()
    attached = with_policy_inputs(agent.hooks, state.extras, data, KEY)
    key = jax.random.fold_in(KEY, 0x9E7A)  # POLICY_INPUT_KEY: the hook's key
    _, balance_key = jax.random.split(key)
    beta_at_s = method.balance_beta(own, data.observations, balance_key)[0]
    np.testing.assert_allclose(attached.policy_next_inputs, encode_beta(beta_at_s), atol=1e-6)
    assert not np.allclose(attached.policy_next_inputs, attached.policy_inputs)
    np.testing.assert_array_equal(
        attached.actor_next_observations,
        conditioned(data.next_observations, attached.policy_next_inputs),
    )
    # At s, not s': other next states leave β unchanged.
    moved = data._replace(next_observations=data.next_observations + 3.0)
    again = with_policy_inputs(agent.hooks, state.extras, moved, KEY)
    np.testing.assert_array_equal(again.policy_next_inputs, attached.policy_next_inputs)


# --- β reaches the actor ----------------------------------------------------------------------


@pytest.mark.parametrize("algo", ["iql", "awac", "cql"])
def test_a_different_beta_changes_the_action(algo):
    _, agent, state = famo2o_agent(algo, name="famo2o-fixed", beta=1.0)
    obs = batch().observations
    low = agent.act(state, obs, KEY, True)
    _, agent, _ = famo2o_agent(algo, name="famo2o-fixed", beta=4.0)
    high = agent.act(state, obs, KEY, True)
    assert not np.allclose(low, high)


@pytest.mark.parametrize("algo", ["iql", "awac"])
def test_the_awr_weight_is_exp_of_beta_times_the_advantage(algo):
    _, agent, state = famo2o_agent(algo)
    data = with_policy_inputs(agent.hooks, state.extras, batch(), KEY)
    beta = np.asarray(data.policy_aux, np.float64)
    assert beta.min() >= 1.0 and beta.max() <= 5.0 and beta.std() > 0.3
    _, metrics = agent.actor_loss(state, data, KEY, state.actor.params)
    vanilla = BASES[algo].create()
    plain = vanilla.actor_loss(state.replace(extras=None), data, KEY, state.actor.params)[1]
    adv = np.asarray(plain["adv_mean"])  # the same advantages: only the coefficient changed
    assert float(metrics["adv_mean"]) == pytest.approx(float(adv), rel=1e-5)
    # One sample at a time recovers exp(β_i A_i) from a one-row batch.
    for i in range(3):
        row = jax.tree.map(lambda x, i=i: x[i : i + 1] if x is not None else None, data)
        one = agent.actor_loss(state, row, KEY, state.actor.params)[1]
        a_i = float(
            vanilla.actor_loss(state.replace(extras=None), row, KEY, state.actor.params)[1][
                "adv_mean"
            ]
        )
        assert float(one["awr_weight_mean"]) == pytest.approx(
            min(math.exp(beta[i] * a_i), 100.0), rel=1e-4
        )


def test_cql_actor_loss_weights_q_by_beta():
    _, agent, state = famo2o_agent("cql")
    data = with_policy_inputs(agent.hooks, state.extras, batch(), KEY)
    loss_beta = float(agent.actor_loss(state, data, KEY, state.actor.params)[0])
    ones = data._replace(policy_aux=jnp.ones(B))
    loss_one = float(agent.actor_loss(state, ones, KEY, state.actor.params)[0])
    dist = state.actor(data.actor_observations)
    actions = np.asarray(dist.sample_and_log_prob(KEY)[0], np.float64)
    q = q_values(state.critic.params, np.asarray(data.observations, np.float64), actions).min(0)
    beta = np.asarray(data.policy_aux, np.float64)
    # α log π is unchanged; only the Q term is scaled: Δ = -mean((β - 1)·Q).
    assert loss_beta - loss_one == pytest.approx(-np.mean((beta - 1.0) * q), rel=1e-4, abs=1e-5)


# --- β sources --------------------------------------------------------------------------------


def test_offline_beta_is_uniform_and_online_beta_is_the_balance_sample():
    method, agent, state = famo2o_agent("iql")
    state = with_balance_bias(state, 5.0, log_std=-10.0)  # balance β ≈ hi = 5, nearly fixed
    data = batch(n=256)
    offline = np.asarray(with_policy_inputs(agent.hooks, state.extras, data, KEY).policy_aux)
    assert offline.min() >= 1.0 and offline.max() <= 5.0
    assert offline.std() == pytest.approx(4.0 / math.sqrt(12.0), rel=0.15)
    own = method.start_online(state.extras["famo2o"])
    online_state = state.replace(extras={"famo2o": own})
    online = with_policy_inputs(agent.hooks, online_state.extras, data, KEY)
    np.testing.assert_allclose(online.policy_aux, 5.0, atol=1e-3)
    np.testing.assert_allclose(online.policy_inputs, encode_beta(online.policy_aux), atol=1e-6)
    # start_online is what the pipeline's boundary applies (over seeds).
    stacked = jax.tree.map(lambda x: x[None], state)
    flipped = agent.hooks.init_states(agent, stacked, None, Preprocess(), offline=False)
    assert bool(flipped.extras["famo2o"]["online"][0])


def test_acting_uses_the_deterministic_balance_beta():
    method, agent, state = famo2o_agent("iql")
    state = with_balance_bias(state, 0.3)  # tanh(0.3) mapped: (tanh .3 + 1)/2·4 + 1
    obs = batch().observations
    want = encode_beta(jnp.full(B, (math.tanh(0.3) + 1.0) / 2.0 * 4.0 + 1.0))
    own = state.extras["famo2o"]
    for key in (KEY, jax.random.PRNGKey(9)):
        for deterministic in (True, False):
            got = method.acting_inputs(own, obs, key, deterministic)
            np.testing.assert_allclose(got, want, atol=1e-5)


def test_variants_fixed_and_random():
    fixed, agent, state = famo2o_agent("iql", name="famo2o-fixed", online=True)
    assert fixed.label == "famo2o-fixed" and fixed.config.beta_source == "fixed"
    data = batch(n=64)
    got = with_policy_inputs(agent.hooks, state.extras, data, KEY)
    np.testing.assert_allclose(got.policy_aux, 3.0)  # the middle of [1, 5] by default
    np.testing.assert_allclose(got.policy_next_inputs, encode_beta(jnp.full(64, 3.0)), atol=1e-6)
    fixed2, agent2, state2 = famo2o_agent("iql", name="famo2o-fixed", online=True, beta=2.0)
    np.testing.assert_allclose(
        fixed2.acting_inputs(state2.extras["famo2o"], data.observations, KEY, True),
        encode_beta(jnp.full(64, 2.0)),
        atol=1e-6,
    )
    # Offline, the fixed variant trains the family exactly as the adaptive one does.
    adaptive, agent_a, state_a = famo2o_agent("iql")
    _, agent_f, _ = famo2o_agent("iql", name="famo2o-fixed", beta=2.0)
    a = with_policy_inputs(agent_a.hooks, state_a.extras, data, KEY)
    f = with_policy_inputs(agent_f.hooks, state_a.extras, data, KEY)
    np.testing.assert_array_equal(a.policy_aux, f.policy_aux)
    random, agent_r, state_r = famo2o_agent("iql", name="famo2o-random", online=True)
    own = state_r.extras["famo2o"]
    first = np.asarray(random.acting_beta(own, data.observations, KEY))
    second = np.asarray(random.acting_beta(own, data.observations, jax.random.PRNGKey(3)))
    assert not np.allclose(first, second) and first.min() >= 1.0 and first.max() <= 5.0


@pytest.mark.parametrize(
    "name, options, message",
    [
        ("famo2o", {"beta": 2.0}, "use beta_source=fixed"),
        ("famo2o", {"beta_min": 3.0, "beta_max": 1.0}, "must be below"),
        ("famo2o", {"encoding_dim": 5}, "must be even"),
        ("famo2o", {"beta_source": "best"}, "beta_source"),
        ("famo2o", {"domain": "atari"}, "domain"),
    ],
)
def test_bad_options_are_one_line_errors(name, options, message):
    with pytest.raises(ConfigError, match=message) as error:
        make_methods(name, options, OBS, ACT)
    assert "\n" not in str(error.value)


def test_agents_without_an_awr_or_cql_actor_are_refused():
    (method,) = make_methods("famo2o", {}, OBS, ACT)
    with pytest.raises(ConfigError, match="td3bc is neither"):
        method.check_agent("td3bc", TD3BCConfig(hidden_dims=(8,)).create())
    with pytest.raises(ConfigError, match="deterministic_actor"):
        method.check_agent("iql", IQLConfig(deterministic_actor=True).create())


def test_a_famo2o_run_never_reuses_a_vanilla_offline_checkpoint():
    from o2o.experiment.suite import suite_from_dict

    suite = suite_from_dict(
        {
            "name": "t",
            "datasets": ["hopper-medium-lite"],
            "algos": ["iql"],
            "methods": ["vanilla", "famo2o", "famo2o-fixed", "famo2o-random", "sera"],
            "offline_steps": 100,
            "online_steps": 100,
        }
    )
    paired = {str(c.relpath).split("/")[-1]: c.paired for c in suite.configurations()}
    assert paired == {
        "vanilla": False,
        "famo2o": False,
        "famo2o-fixed": False,
        "famo2o-random": False,
        "sera": True,
    }
    # The β-source variants share famo2o's offline phase (offline training is the same).
    sources = {
        c.method.label: (c.offline_source().method.label if c.offline_source() else None)
        for c in suite.configurations()
    }
    assert sources == {
        "vanilla": None,
        "famo2o": None,
        "famo2o-fixed": "famo2o",
        "famo2o-random": "famo2o",
        "sera": "vanilla",
    }


@pytest.mark.parametrize(
    "name, options, twin",
    [
        (
            "famo2o-fixed",
            {"beta": 2.0, "histogram_every": 500},
            ("famo2o", {"histogram_every": 500}),
        ),
        ("famo2o-random", {"balance_lr": 1e-3}, ("famo2o", {"balance_lr": 1e-3})),
        ("famo2o", {"beta_source": "random"}, ("famo2o", {})),
        ("famo2o", {"histogram_every": 500}, None),  # the base itself
        ("samg", {}, None),  # does not train offline: paired with vanilla instead
        ("famo2o+sera", {}, None),  # a composition trains its own offline phase
    ],
)
def test_offline_twin_drops_only_the_online_variant_options(name, options, twin):
    from o2o.finetune import offline_twin

    assert offline_twin(name, options) == twin


# --- through the pipeline ---------------------------------------------------------------------


class Crash(Exception):
    pass


@pytest.mark.slow
@pytest.mark.parametrize("crash_phase, crash_step", [("offline", 100), ("online", 300)])
def test_resume_mid_offline_and_mid_online_equals_an_uninterrupted_run(
    tmp_path, crash_phase, crash_step
):
    from o2o import data as datasets
    from o2o.experiment.pipeline import Pipeline, PipelineConfig
    from o2o.experiment.runs import RunDir

    dataset = datasets.load("hopper-medium-lite").select(slice(0, 2000))
    config = PipelineConfig(
        dataset="hopper-medium-lite",
        offline_steps=200,
        online_steps=200,
        offline_chunk=100,
        offline_eval_every=100,
        online_eval_every=100,
        update_every=50,
        eval_episodes=1,
        batch_size=32,
    )

    def pipeline():
        methods = make_methods(
            "famo2o",
            {"balance_hidden_dims": (16,), "histogram_every": 100},
            dataset.obs_dim,
            dataset.act_dim,
        )
        return Pipeline(
            "iql", IQLConfig(hidden_dims=(16,), offline_steps=200), config, dataset, methods
        )

    full = pipeline().run(RunDir.create(tmp_path / "full", {}), progress=False)

    def crash(row):
        if row["step"] == crash_step:
            raise Crash

    run = RunDir.create(tmp_path / "crash", {})
    with pytest.raises(Crash):
        pipeline().run(run, progress=False, on_eval=crash)
    resumed = pipeline().run(run, resume=True, progress=False)
    for x, y in zip(jax.tree.leaves(full.states), jax.tree.leaves(resumed.states), strict=True):
        np.testing.assert_array_equal(x, y)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "wall_time"} for r in rows]  # noqa: E731
    assert strip(full.rows) == strip(resumed.rows)
    assert bool(np.asarray(resumed.states.extras["famo2o"]["online"]).all())
    assert run.rows("finetune.jsonl") == RunDir(tmp_path / "full").rows("finetune.jsonl")


@pytest.mark.slow
def test_cli_train_with_famo2o_writes_beta_histograms_and_diagnostics(tmp_path):
    command = [
        sys.executable, "-m", "o2o", "train", "--dataset", "hopper-medium-lite", "--algo", "iql",
        "--finetune", "famo2o", "--offline-steps", "100", "--online-steps", "100",
        "--offline-eval-every", "100", "--online-eval-every", "100", "--eval-episodes", "1",
        "--batch-size", "32", "--set", "hidden_dims=[16,16]", "--method-set", "histogram_every=100",
        "--method-set", "balance_hidden_dims=[16]", "--runs-dir", str(tmp_path), "--name", "f",
        "--no-progress",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    run = tmp_path / "f"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    online = [r for r in rows if r["phase"] == "online"]
    assert online and 1.0 <= online[-1]["train/famo2o/beta_mean"] <= 5.0
    assert np.isfinite(online[-1]["train/famo2o/temperature"])
    events = [json.loads(line) for line in (run / "finetune.jsonl").read_text().splitlines()]
    histograms = [e for e in events if e["phase"] == "famo2o_beta"]
    assert histograms and sum(histograms[0]["counts"]) == histograms[0]["states"] == 100
    bad = subprocess.run(
        [*command[:-5], "--method-set", "beta=2", "--runs-dir", str(tmp_path), "--name", "g"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error:")
    assert len(bad.stderr.strip().splitlines()) == 1


def test_the_run_domain_reaches_famo2o_unless_set():
    from o2o.experiment.builder import RunSpec
    from o2o.experiment.pipeline import PipelineConfig

    config = PipelineConfig(dataset="hopper-medium-lite", offline_steps=10, online_steps=10)
    maze = RunSpec.create("iql", config, "famo2o", {}, domain="maze")
    assert maze.options == {"domain": "maze"}
    assert maze.agent.expectile == 0.9  # the base's own maze preset (§1.4's expectile)
    (method,) = maze.methods(OBS, ACT)
    assert method.resolved(maze.agent.create())["low"] == 8.0
    kept = RunSpec.create("iql", config, "famo2o", {"domain": "locomotion"}, domain="maze")
    assert kept.options == {"domain": "locomotion"}
    both = RunSpec.create("iql", config, "famo2o+sera", {}, domain="maze")
    assert both.options == {"famo2o.domain": "maze"}
    assert RunSpec.create("iql", config, "sera", {}, domain="maze").options == {}


def test_histograms_pool_over_seeds_and_plot_in_the_report(tmp_path):
    from types import SimpleNamespace

    from o2o.finetune.famo2o import FamO2O, pool_histograms

    seed0 = {"phase": "famo2o_beta", "step": 9, "edges": [1.0, 3.0, 5.0], "counts": [3, 1]}
    seed1 = {**seed0, "counts": [0, 4]}
    seed0["q_mean"], seed1["q_mean"] = [2.0, 6.0], [None, 1.0]
    edges, share, q_mean = pool_histograms([seed0, seed1])
    np.testing.assert_allclose(share, [3 / 8, 5 / 8])
    np.testing.assert_allclose(q_mean, [2.0, (6.0 + 4 * 1.0) / 5])  # by hand: Q sums / counts
    earlier = {**seed1, "step": 3, "counts": [4, 0], "q_mean": [0.0, None]}
    run = SimpleNamespace(algo="iql", method="famo2o", finetune=[earlier, seed0, seed1])
    path = FamO2O.report_figure([run], tmp_path / "beta.png", "d")
    assert path.exists() and path.stat().st_size > 0
    none = SimpleNamespace(algo="iql", method="vanilla", finetune=[])
    assert FamO2O.report_figure([none], tmp_path / "none.png", "d") is None


def test_famo2o_sets_its_agent_defaults_unless_the_user_does():
    from o2o.experiment.builder import RunSpec
    from o2o.experiment.pipeline import PipelineConfig

    config = PipelineConfig(dataset="hopper-medium-lite", offline_steps=10, online_steps=10)
    assert RunSpec.create("iql", config, "famo2o").agent.actor_lr_schedule == "constant"
    assert RunSpec.create("iql", config, "vanilla").agent.actor_lr_schedule == "cosine"
    user = RunSpec.create("iql", config, "famo2o", {}, {"actor_lr_schedule": "decay"})
    assert user.agent.actor_lr_schedule == "decay"
    off = RunSpec.create("iql", config, "famo2o", {"agent_defaults": False})
    assert off.agent.actor_lr_schedule == "cosine"
    cql = RunSpec.create("cql", config, "famo2o").agent
    assert cql.critic_layer_norm and cql.critic_hidden_dims == (256, 256) and cql.cql_alpha == 1.0
    maze = RunSpec.create("cql", config, "famo2o", domain="maze").agent
    assert not maze.critic_layer_norm and maze.cql_alpha == 5.0  # CQL's own maze preset
    assert RunSpec.create("iql", config, "sera").agent.actor_lr_schedule == "cosine"


def test_the_official_decay_schedule_stops_the_actor_after_the_offline_budget():
    data = batch()
    for schedule, frozen in (("decay", True), ("constant", False)):
        agent = IQLConfig(hidden_dims=(8,), actor_lr_schedule=schedule, offline_steps=3).create()
        state = agent.init(jax.random.PRNGKey(0), OBS, ACT)
        update = jax.jit(agent.update)
        for step in range(5):  # count 4 > offline_steps: 0 under "decay", not under "cosine"
            before = state.actor.params
            state, _ = update(state, data, jax.random.fold_in(KEY, step))
        moved = [
            np.abs(np.asarray(a - b)).max()
            for a, b in zip(
                jax.tree.leaves(before), jax.tree.leaves(state.actor.params), strict=True
            )
        ]
        assert (max(moved) == 0.0) == frozen, schedule


def test_beta_source_variants_start_from_famo2o_offline_checkpoint(tmp_path, monkeypatch):
    """famo2o-random and famo2o-fixed without famo2o in the suite: the runner makes famo2o's run
    first, then starts both from its offline checkpoint (``execute`` recorded, not run: loading
    a checkpoint into a paired run is the paired methods' path, tested in test_suite_run)."""
    from o2o.experiment import builder
    from o2o.experiment.runner import run_suite
    from o2o.experiment.suite import suite_from_dict

    calls = []

    def recorded_execute(spec, run, resume=False, progress=True, offline_from=None, label=None):
        source = None if offline_from is None else Path(offline_from).relative_to(tmp_path)
        calls.append((label, spec.finetune, source))
        (run.path / "offline.msgpack").write_bytes(b"offline states")
        run.write_summary({"method": label})
        return None, {"method": label}

    monkeypatch.setattr(builder, "execute", recorded_execute)
    options = {"histogram_every": 500}
    suite = suite_from_dict(
        {
            "name": "t",
            "datasets": ["hopper-medium-lite"],
            "algos": ["iql"],
            "methods": [{"famo2o-random": options}, {"famo2o-fixed": {"beta": 2.0, **options}}],
            "offline_steps": 100,
            "online_steps": 100,
        }
    )
    outcomes = run_suite(suite, tmp_path, progress=False, echo=lambda line: None)
    assert [(o.config.method.label, o.status) for o in outcomes] == [
        ("famo2o-random", "ran"),
        ("famo2o-fixed", "ran"),
    ]
    checkpoint = Path("hopper-medium-lite/iql/famo2o/offline.msgpack")
    assert calls == [
        ("famo2o", "famo2o", None),  # the base, with the shared options, trained first
        ("famo2o-random", "famo2o-random", checkpoint),
        ("famo2o-fixed", "famo2o-fixed", checkpoint),
    ]
    base = yaml.safe_load((tmp_path / "hopper-medium-lite/iql/famo2o/config.yaml").read_text())
    assert base["finetune"]["options"]["histogram_every"] == 500
    assert "beta" not in base["finetune"]["options"]
