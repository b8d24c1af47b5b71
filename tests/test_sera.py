"""SERA: the KSG/VCSE estimator, its reward in the critic target of every base, the offline
phase left alone, composition with SAMG, diagnostics and option checks.

Expected values are computed independently: a float64 reference with explicit Python loops,
SciPy's digamma and numpy forward passes of the critics, not the functions under test."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import digamma as scipy_digamma

from o2o.agents import (
    AWACConfig,
    BCConfig,
    CalQLConfig,
    CQLConfig,
    IQLConfig,
    SACConfig,
    TD3BCConfig,
)
from o2o.core.buffers import Sampler, buffer_from_transitions
from o2o.core.engine import compile_fused
from o2o.errors import ConfigError
from o2o.experiment.online import Preprocess
from o2o.finetune import REGISTRY, make_methods
from o2o.finetune.sera import SERAConfig, knn_conditional_entropy, kth_smallest
from tests.helpers import mlp_forward, q_values, tiny_batch

OBS, ACT = 3, 2
KEY = jax.random.PRNGKey(4)


def reference_estimate(states, values, k, include_self=True):
    """VCSE's estimator in float64 with explicit loops: (r_int, ε, n_v) per point."""
    states = [[float(x) for x in row] for row in np.asarray(states, np.float64)]
    values = [float(v) for v in np.asarray(values, np.float64)]
    n, dim = len(states), len(states[0])
    rewards, epsilons, counts = [], [], []
    for i in range(n):
        distances = []
        for j in range(n):
            if j == i and not include_self:
                continue
            state_distance = math.sqrt(sum((states[i][t] - states[j][t]) ** 2 for t in range(dim)))
            distances.append(max(state_distance, abs(values[i] - values[j])))
        distances.sort()
        eps = distances[k - 1]
        count = 0
        for j in range(n):
            if j == i and not include_self:
                continue
            if abs(values[i] - values[j]) < eps:
                count += 1
        rewards.append(float(scipy_digamma(count + 1)) / dim + math.log(2 * eps + 1e-5))
        epsilons.append(eps)
        counts.append(count)
    return np.array(rewards), np.array(epsilons), np.array(counts)


# Hand-made points, exact in float32 (integer coordinates, Pythagorean distances): duplicated
# points (rows 0 and 2, rows 1 and 6 share state and value), equal distances to several
# neighbours, and value distances that equal ε exactly (the strict n_v count must leave them
# out).
HAND_STATES = np.array(
    [[0, 0], [3, 4], [0, 0], [6, 8], [1, 0], [0, 1], [3, 4], [10, 0], [0, 5], [5, 0]],
    np.float32,
)
HAND_VALUES = np.array([0, 1, 0, 5, 2, 2, 1, -3, 5, 0], np.float32)


@pytest.mark.parametrize("include_self", [True, False])
def test_estimator_matches_the_loop_reference_on_hand_made_points(include_self):
    n = len(HAND_STATES)
    for k in range(1, n):
        got = knn_conditional_entropy(
            jnp.asarray(HAND_STATES), jnp.asarray(HAND_VALUES), k, include_self
        )
        reward, eps, n_v = reference_estimate(HAND_STATES, HAND_VALUES, k, include_self)
        np.testing.assert_allclose(np.asarray(got.eps), eps, rtol=1e-6, err_msg=f"k={k}")
        np.testing.assert_array_equal(np.asarray(got.n_v), n_v, err_msg=f"k={k}")
        np.testing.assert_allclose(np.asarray(got.reward), reward, rtol=1e-5, atol=1e-5)


def test_hand_made_points_exercise_duplicates_and_ties():
    """The fixture means what it claims: ε = 0 for a duplicated point at k = 2 with the
    self-neighbour (log(1e-5) then dominates), and some value distance equal to ε."""
    _, eps, n_v = reference_estimate(HAND_STATES, HAND_VALUES, 2, include_self=True)
    assert eps[0] == eps[2] == 0.0 and n_v[0] == 0
    _, eps, _ = reference_estimate(HAND_STATES, HAND_VALUES, 3, include_self=True)
    value_dist = np.abs(HAND_VALUES[:, None] - HAND_VALUES[None, :])
    assert np.any(value_dist == eps[:, None])


@pytest.mark.parametrize("include_self", [True, False])
@pytest.mark.parametrize("k", [1, 5, 20])
def test_estimator_matches_the_loop_reference_on_random_points(include_self, k):
    rng = np.random.default_rng(k)
    states = rng.normal(size=(48, 5)).astype(np.float32)
    values = (3.0 * rng.normal(size=48)).astype(np.float32)
    got = knn_conditional_entropy(jnp.asarray(states), jnp.asarray(values), k, include_self)
    reward, eps, n_v = reference_estimate(states, values, k, include_self)
    np.testing.assert_allclose(np.asarray(got.eps), eps, rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(got.n_v), n_v)
    np.testing.assert_allclose(np.asarray(got.reward), reward, rtol=1e-5, atol=1e-5)


def test_kth_smallest_counts_repeated_values_like_a_sort():
    rng = np.random.default_rng(3)
    values = rng.integers(0, 4, (9, 12)).astype(np.float32)  # many ties per row
    values[np.arange(9), np.arange(9)] = np.inf
    for k in range(1, 12):
        np.testing.assert_array_equal(
            np.asarray(kth_smallest(jnp.asarray(values), k)), np.sort(values, axis=1)[:, k - 1]
        )


def test_self_neighbour_quirk_is_one_neighbour_and_one_count_off():
    """With VCSE's quirk ε at k is the (k-1)-th other point's distance and n_v counts the point
    itself (distinct points, ε > 0)."""
    rng = np.random.default_rng(1)
    states = jnp.asarray(rng.normal(size=(32, 4)), jnp.float32)
    values = jnp.asarray(rng.normal(size=32), jnp.float32)
    quirk = knn_conditional_entropy(states, values, 6, include_self=True)
    others = knn_conditional_entropy(states, values, 5, include_self=False)
    np.testing.assert_array_equal(np.asarray(quirk.eps), np.asarray(others.eps))
    np.testing.assert_array_equal(np.asarray(quirk.n_v), np.asarray(others.n_v) + 1)


def test_digamma_term_matches_scipy():
    n_v = np.arange(0, 300)
    np.testing.assert_allclose(
        np.asarray(jax.scipy.special.digamma(jnp.asarray(n_v + 1.0, jnp.float32))),
        scipy_digamma(n_v + 1.0),
        rtol=1e-5,
        atol=1e-6,
    )
    rng = np.random.default_rng(2)
    states = jnp.asarray(rng.normal(size=(256, 7)), jnp.float32)
    values = jnp.asarray(rng.normal(size=256) * 0.01, jnp.float32)  # large n_v
    got = knn_conditional_entropy(states, values, 20)
    term = np.asarray(got.reward) - np.log(2 * np.asarray(got.eps, np.float64) + 1e-5)
    assert np.asarray(got.n_v).max() > 100
    np.testing.assert_allclose(term, scipy_digamma(np.asarray(got.n_v) + 1.0) / 7, atol=2e-5)


# --- the reward in each base's critic target -----------------------------------------------

BASES = {
    "cql": CQLConfig(actor_hidden_dims=(8,), critic_hidden_dims=(8,), cql_n_actions=3),
    "calql": CalQLConfig(actor_hidden_dims=(8,), critic_hidden_dims=(8,), cql_n_actions=3),
    "sac": SACConfig(hidden_dims=(8,)),
    "iql": IQLConfig(hidden_dims=(8,)),
    "td3bc": TD3BCConfig(hidden_dims=(8,)),
    "awac": AWACConfig(hidden_dims=(8,)),
}


def spread_batch(n=12, scale=0.3, seed=0):
    """A batch whose states' spread makes r_int span values where tanh is far from linear."""
    batch = tiny_batch(np.random.default_rng(seed), n, OBS, ACT)
    return batch._replace(observations=batch.observations * np.float32(scale))


def sera_agent(agent_config, name="sera", preprocess=None, **options):
    """An agent with SERA as its hooks and SERA's state filled in; a frozen critic moved away
    from the live one (so a test sees which one conditions the reward)."""
    methods = make_methods(name, {"k": 3, **options}, OBS, ACT)
    (method,) = methods
    agent = agent_config.create(hooks=methods)
    state = agent.init(jax.random.PRNGKey(0), OBS, ACT)
    own = method.init_state(agent, state, jax.random.PRNGKey(1), preprocess or Preprocess())
    if "critic_params" in own and method.config.critic == "frozen":
        own["critic_params"] = jax.tree.map(lambda x: x * 1.5 + 0.2, own["critic_params"])
    return method, agent, state, state.replace(extras={"sera": own})


def vanilla_target(agent_config, state, batch):
    return agent_config.create().critic_target(state, batch, KEY)


@pytest.mark.parametrize("algo", list(BASES))
def test_sera_changes_the_critic_target_by_exactly_the_bonus(algo):
    config = BASES[algo]
    _, agent, state, sera_state = sera_agent(config, intrinsic_scale=0.7)
    batch = spread_batch()
    with_sera = np.asarray(agent.critic_target(sera_state, batch, KEY), np.float64)
    vanilla = np.asarray(vanilla_target(config, state, batch), np.float64)
    frozen = sera_state.extras["sera"]["critic_params"]
    q_hat = q_values(frozen, batch.observations, batch.actions).min(0)
    r_int, _, _ = reference_estimate(batch.observations, q_hat, 3)
    assert r_int.min() < 0.0 and r_int.max() > 1.0  # tanh is far from linear here
    np.testing.assert_allclose(with_sera - vanilla, 0.7 * np.tanh(r_int), atol=2e-5)


@pytest.mark.parametrize("algo", list(BASES))
def test_actor_and_value_updates_are_untouched(algo):
    """One whole update: the actor (and IQL's V) come out exactly as vanilla's; the critic
    does not (its target changed)."""
    config = BASES[algo]
    _, agent, state, sera_state = sera_agent(config)
    batch = jax.tree.map(jnp.asarray, spread_batch())
    new_sera, _ = jax.jit(agent.update)(sera_state, batch, KEY)
    new_vanilla, _ = jax.jit(config.create().update)(state, batch, KEY)
    # Different compiled graphs may round differently (≈1e-7); a change that reached these
    # losses would move the parameters by about a learning rate's step (≈1e-4).
    for name in ("actor", "value"):
        if hasattr(new_vanilla, name):
            for a, b in zip(
                jax.tree.leaves(getattr(new_sera, name).params),
                jax.tree.leaves(getattr(new_vanilla, name).params),
                strict=True,
            ):
                np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)
    assert any(
        not np.allclose(a, b)
        for a, b in zip(
            jax.tree.leaves(new_sera.critic.params),
            jax.tree.leaves(new_vanilla.critic.params),
            strict=True,
        )
    )


def test_live_critic_conditions_on_the_critic_being_fine_tuned():
    config = BASES["cql"]
    _, agent, state, sera_state = sera_agent(config, critic="live")
    assert "critic_params" not in sera_state.extras["sera"]
    batch = spread_batch()
    assert_bonus_conditioned_on(state.critic.params, agent, config, state, sera_state, batch)


def assert_bonus_conditioned_on(critic_params, agent, config, state, sera_state, batch):
    """SERA's target − vanilla's = tanh(r_int) (λ = 1, k = 3) with Q̂ from ``critic_params``."""
    diff = np.asarray(agent.critic_target(sera_state, batch, KEY)) - np.asarray(
        vanilla_target(config, state, batch)
    )
    q_hat = q_values(critic_params, batch.observations, batch.actions).min(0)
    np.testing.assert_allclose(
        diff, np.tanh(reference_estimate(batch.observations, q_hat, 3)[0]), atol=2e-5
    )


def test_random_q_conditions_on_a_freshly_initialised_critic():
    config = BASES["cql"]
    _, agent, state, sera_state = sera_agent(config, name="sera-random-q")
    random_params = sera_state.extras["sera"]["critic_params"]
    trained = jax.tree.leaves(state.critic.params)
    pairs = list(zip(jax.tree.leaves(random_params), trained, strict=True))
    assert all(a.shape == b.shape for a, b in pairs)
    assert any(not np.allclose(a, b) for a, b in pairs)  # kernels differ (biases start at 0)
    batch = spread_batch()
    assert_bonus_conditioned_on(random_params, agent, config, state, sera_state, batch)


def test_sera_v_conditions_iql_on_its_frozen_value_network():
    config = BASES["iql"]
    _, agent, state, sera_state = sera_agent(config, name="sera-v")
    frozen_v = sera_state.extras["sera"]["critic_params"]
    assert set(frozen_v) == set(state.value.params)  # V's parameters, not the critic's
    batch = spread_batch()
    diff = np.asarray(agent.critic_target(sera_state, batch, KEY)) - np.asarray(
        vanilla_target(config, state, batch)
    )
    v_hat = mlp_forward(frozen_v["MLP_0"], batch.observations)[..., 0]
    np.testing.assert_allclose(
        diff, np.tanh(reference_estimate(batch.observations, v_hat, 3)[0]), atol=2e-5
    )


def test_sera_v_on_agents_without_a_value_network_uses_the_soft_value_at_s():
    """CQL has no V: sera-v conditions on its bootstrap value at s (min_i Q̂_i(s, a'), a' ~
    π(·|s)), which differs from the Q̂(s, a) of the dataset action."""
    config = BASES["cql"]
    _, agent, state, v_state = sera_agent(config, name="sera-v")
    _, q_agent, _, q_state = sera_agent(config)
    batch = spread_batch()
    v_target = np.asarray(agent.critic_target(v_state, batch, KEY))
    vanilla = np.asarray(vanilla_target(config, state, batch))
    q_target = np.asarray(q_agent.critic_target(q_state, batch, KEY))
    assert np.all(np.isfinite(v_target))
    assert not np.allclose(v_target, vanilla) and not np.allclose(v_target, q_target)


def test_no_squash_adds_lambda_times_r_int():
    config = BASES["sac"]
    _, agent, state, sera_state = sera_agent(config, name="sera-none-tanh", intrinsic_scale=0.3)
    batch = spread_batch(scale=20.0)
    diff = np.asarray(agent.critic_target(sera_state, batch, KEY), np.float64) - np.asarray(
        vanilla_target(config, state, batch)
    )
    q_hat = q_values(sera_state.extras["sera"]["critic_params"], batch.observations, batch.actions)
    r_int = reference_estimate(batch.observations, q_hat.min(0), 3)[0]
    assert r_int.max() > 3.0  # where tanh would have saturated
    np.testing.assert_allclose(diff, 0.3 * r_int, rtol=1e-5, atol=2e-5)


def test_raw_states_undo_the_agents_normalisation():
    config = BASES["td3bc"]
    preprocess = Preprocess(
        obs_mean=np.array([1.0, -2.0, 0.5], np.float32),
        obs_std=np.array([10.0, 0.1, 2.0], np.float32),
    )
    _, agent, state, sera_state = sera_agent(config, preprocess=preprocess, raw_states=True)
    batch = spread_batch()
    diff = np.asarray(agent.critic_target(sera_state, batch, KEY)) - np.asarray(
        vanilla_target(config, state, batch)
    )
    raw = batch.observations * preprocess.obs_std + preprocess.obs_mean
    # Q̂ still sees what the critic sees: the normalised states.
    q_hat = q_values(sera_state.extras["sera"]["critic_params"], batch.observations, batch.actions)
    np.testing.assert_allclose(
        diff, np.tanh(reference_estimate(raw, q_hat.min(0), 3)[0]), atol=2e-5
    )


# --- phases, composition, diagnostics ------------------------------------------------------


def test_the_offline_phase_is_untouched():
    """SERA's state starts at the end of offline training: before it the agent created with
    SERA's hooks updates exactly as vanilla (the same traced computation), and SERA's own
    update is not called."""
    config = BASES["cql"]
    methods = make_methods("sera", {"k": 3}, OBS, ACT)
    assert not methods.trains_offline
    agent = config.create(hooks=methods)
    keys = jnp.stack([jax.random.PRNGKey(0), jax.random.PRNGKey(1)])
    states = jax.vmap(lambda k: agent.init(k, OBS, ACT))(keys)
    offline = methods.init_states(agent, states, keys, Preprocess(), offline=True)
    assert offline.extras is None
    batch = jax.tree.map(jnp.asarray, spread_batch())
    state = jax.tree.map(lambda x: x[0], offline)
    with_hooks, metrics = jax.jit(methods.wrap_update(agent))(state, batch, KEY)
    vanilla, _ = jax.jit(config.create().update)(state, batch, KEY)
    assert not any(key.startswith("sera/") for key in metrics)
    assert jax.tree.structure(with_hooks) == jax.tree.structure(vanilla)  # extras stay None
    for a, b in zip(jax.tree.leaves(with_hooks), jax.tree.leaves(vanilla), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # As the offline phase runs it: fused in a scan, whose carry must keep its structure.
    buffers = {"replay": jax.tree.map(lambda x: jnp.stack([x, x]), buffer_from_transitions(batch))}
    fused = compile_fused(methods.wrap_update(agent), Sampler(8), 2)
    fused(jax.tree.map(jnp.copy, offline), buffers, keys)  # (donates its state)
    online = methods.init_states(agent, offline, keys, Preprocess(), offline=False)
    assert set(online.extras) == {"sera"}


def test_samg_plus_sera_changes_both_reward_and_bootstrap():
    config = BASES["cql"]
    both = make_methods("samg+sera", {"samg.weight": "even", "sera.k": 3}, OBS, ACT)
    assert both.label == "samg+sera" and both.data_policy() == "online"
    samg, sera = both
    agent = config.create(hooks=both)
    state = agent.init(jax.random.PRNGKey(0), OBS, ACT)
    samg_own = samg.init_state(agent, state, jax.random.PRNGKey(1), Preprocess())
    samg_own["offline_params"] = jax.tree.map(lambda x: x * 0.5 + 0.1, samg_own["offline_params"])
    sera_own = sera.init_state(agent, state, jax.random.PRNGKey(2), Preprocess())
    batch = spread_batch()
    y_both = np.asarray(
        agent.critic_target(state.replace(extras={"samg": samg_own, "sera": sera_own}), batch, KEY),
        np.float64,
    )
    y_samg = config.create(hooks=make_methods("samg", {"weight": "even"}, OBS, ACT)).critic_target(
        state.replace(extras={"samg": samg_own}), batch, KEY
    )
    y_sera = config.create(hooks=make_methods("sera", {"k": 3}, OBS, ACT)).critic_target(
        state.replace(extras={"sera": sera_own}), batch, KEY
    )
    y_vanilla = np.asarray(vanilla_target(config, state, batch), np.float64)
    q_hat = q_values(sera_own["critic_params"], batch.observations, batch.actions).min(0)
    bonus = np.tanh(reference_estimate(batch.observations, q_hat, 3)[0])
    bootstrap_change = np.asarray(y_samg, np.float64) - y_vanilla
    assert np.abs(bootstrap_change[batch.terminals == 0]).min() > 1e-4
    np.testing.assert_allclose(y_both - np.asarray(y_samg, np.float64), bonus, atol=2e-5)
    np.testing.assert_allclose(y_both - np.asarray(y_sera, np.float64), bootstrap_change, atol=2e-5)


def test_diagnostics_are_logged_from_the_fused_update_over_seeds():
    config = BASES["iql"]
    methods = make_methods("sera", {"k": 3, "intrinsic_scale": 0.5}, OBS, ACT)
    agent = config.create(hooks=methods)
    keys = jnp.stack([jax.random.PRNGKey(0), jax.random.PRNGKey(1)])
    states = jax.vmap(lambda k: agent.init(k, OBS, ACT))(keys)
    states = methods.init_states(agent, states, keys, Preprocess(), offline=False)
    frozen_params = jax.tree.map(np.asarray, states.extras["sera"]["critic_params"])
    batch = spread_batch(n=16)
    update = jax.jit(jax.vmap(methods.wrap_update(agent), in_axes=(0, None, 0)))
    _, metrics = update(states, jax.tree.map(jnp.asarray, batch), keys)
    # The statistics of this batch per seed, from the reference (the frozen critic is the
    # critic at the end of offline training: the seed's initial critic here).
    for seed in range(2):
        frozen = jax.tree.map(lambda x, s=seed: x[s], frozen_params)
        q_hat = q_values(frozen, batch.observations, batch.actions).min(0)
        r_int, eps, n_v = reference_estimate(batch.observations, q_hat, 3)
        bonus = 0.5 * np.tanh(r_int)
        share = np.abs(bonus).mean() / (np.abs(batch.rewards).mean() + np.abs(bonus).mean())
        got = {k: float(np.asarray(v)[seed]) for k, v in metrics.items() if k.startswith("sera/")}
        assert got["sera/r_int_mean"] == pytest.approx(r_int.mean(), abs=1e-5)
        assert got["sera/r_int_std"] == pytest.approx(r_int.std(), abs=1e-5)
        assert got["sera/r_int_max"] == pytest.approx(r_int.max(), abs=1e-5)
        assert got["sera/bonus_share"] == pytest.approx(share, rel=1e-5)
        assert got["sera/eps_min"] == pytest.approx(eps.min(), rel=1e-5)
        assert got["sera/n_v_mean"] == pytest.approx(n_v.mean())
    # Through the engine's fused, seed-vmapped update: every declared diagnostic is a metric.
    buffers = {"replay": jax.tree.map(lambda x: jnp.stack([x, x]), buffer_from_transitions(batch))}
    fused = compile_fused(methods.wrap_update(agent), Sampler(16), 2)
    _, _, metrics = fused(states, buffers, keys)
    declared = {d.key.removeprefix("train/") for d in methods.methods[0].diagnostics}
    assert declared <= set(metrics)
    assert all(np.all(np.isfinite(np.asarray(metrics[k]))) for k in declared)


# --- options ---------------------------------------------------------------------------------


def test_registered_variants():
    built = {
        label: next(iter(make_methods(label, {}, OBS, ACT))).config
        for label in ("sera", "sera-v", "sera-random-q", "sera-none-tanh")
    }
    assert built["sera"] == SERAConfig()
    assert built["sera"].intrinsic_scale == 1.0 and built["sera"].critic == "frozen"
    assert built["sera-v"].condition == "v"
    assert built["sera-random-q"].critic == "random"
    assert built["sera-none-tanh"].squash == "none"
    assert all(REGISTRY[label][0].name == "sera" for label in built)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"k": 0}, "k must be positive"),
        ({"k": -3}, "k must be positive"),
        ({"intrinsic_scale": -0.5}, "intrinsic_scale must be non-negative"),
        ({"condition": "s"}, "condition"),
        ({"critic": "old"}, "critic"),
        ({"squash": "sigmoid"}, "squash"),
    ],
)
def test_bad_options_are_one_line_errors(options, message):
    with pytest.raises(ConfigError, match=message) as error:
        make_methods("sera", options, OBS, ACT)
    assert "\n" not in str(error.value)
    with pytest.raises(ConfigError, match=message):  # the config itself, from Python
        SERAConfig(**options)


def test_k_must_be_below_the_batch_size():
    (method,) = make_methods("sera", {"k": 10}, OBS, ACT)
    method.check_batch_size(11)
    with pytest.raises(ConfigError, match=r"k \(10\) must be below the batch size \(10\)") as error:
        method.check_batch_size(10)
    assert "\n" not in str(error.value)
    # At first use too (the Python API, with no pipeline to check the batch size).
    _, agent, _, sera_state = sera_agent(BASES["td3bc"], k=4)
    with pytest.raises(ConfigError, match=r"k \(4\) must be below the batch size \(4\)"):
        agent.critic_target(sera_state, spread_batch(n=4), KEY)


def test_the_pipeline_refuses_k_at_build_time_and_agents_without_a_critic():
    from o2o import data as datasets
    from o2o.experiment.pipeline import Pipeline, PipelineConfig

    dataset = datasets.load("hopper-medium-lite").select(slice(0, 300))
    config = PipelineConfig(dataset="hopper-medium-lite", batch_size=8)
    methods = make_methods("sera", {"k": 10}, dataset.obs_dim, dataset.act_dim)
    with pytest.raises(ConfigError, match="must be below the batch size") as error:
        Pipeline("td3bc", BASES["td3bc"], config, dataset, methods)
    assert "\n" not in str(error.value)
    methods = make_methods("sera", {"k": 3}, dataset.obs_dim, dataset.act_dim)
    with pytest.raises(ConfigError, match="bc has no critic"):
        Pipeline("bc", BCConfig(hidden_dims=(8,)), config, dataset, methods)


@pytest.mark.slow
def test_samg_plus_sera_runs_through_the_pipeline_with_its_diagnostics(tmp_path):
    """``--finetune samg+sera`` end to end (tiny budget): paired on the offline phase, both
    methods' metrics in the online rows, the run labelled samg+sera."""
    from o2o import data as datasets
    from o2o.experiment.runs import RunDir
    from tests.helpers import tiny_pipeline

    dataset = datasets.load("hopper-medium-lite").select(slice(0, 500))
    pipeline = tiny_pipeline(
        dataset,
        "samg+sera",
        {"samg.weight": "even", "samg.seed_transitions": 50, "sera.k": 5},
    )
    methods = pipeline.methods
    assert pipeline.describe()["finetune"] == "samg+sera"
    run = RunDir.create(tmp_path / "run", {})
    result = pipeline.run(run, progress=False)
    online = [row for row in result.rows if row.get("phase") == "online"]
    assert online and all(np.isfinite(online[-1][d.key]) for d in methods.methods[1].diagnostics)
    assert "train/samg/p_mean" in online[-1]
    assert methods.summary(result.rows)["final_bonus_share"] == online[-1]["train/sera/bonus_share"]
