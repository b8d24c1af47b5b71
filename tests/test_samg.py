"""SAMG: target mixing, the weight p, the C-VAE phase, the online-only buffer, adaptive updates.

Expected values are computed independently: numpy/scipy forward passes and formulas, not the
functions under test."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm

from o2o.agents import AWACConfig, CQLConfig, IQLConfig, SACConfig
from o2o.agents.cql import conservative_gap
from o2o.core.buffers import Sampler, buffer_from_transitions
from o2o.core.engine import compile_fused
from o2o.core.types import Transition
from o2o.errors import ConfigError, O2OError
from o2o.experiment.online import Preprocess
from o2o.finetune import make_methods
from o2o.finetune.samg import (
    SAMG,
    SAMGConfig,
    latent_probability,
    latent_snr,
    merge_statistics,
    posterior_collapsed,
    thresholded,
)
from tests.helpers import OfflineArrayProbe, q_values, tiny_batch, tiny_pipeline

OBS, ACT = 3, 2


def test_latent_probability_tail_and_window_forms():
    mean, std = jnp.array([0.0, 1.0]), jnp.array([1.0, 2.0])
    z = jnp.array([[0.0, 1.0], [1.0, 5.0], [-2.0, 1.0]])
    expected_tail = np.mean(2 * (1 - norm.cdf(np.abs(np.asarray(z) - [0, 1]) / [1, 2])), axis=1)
    np.testing.assert_allclose(
        latent_probability(z, mean, std, "tail", 1.0), expected_tail, rtol=1e-5
    )
    assert float(latent_probability(z, mean, std, "tail", 1.0)[0]) == pytest.approx(1.0)
    d = 0.5
    zz = np.asarray(z)
    expected_window = np.mean(
        norm.cdf((zz + d - [0, 1]) / [1, 2]) - norm.cdf((zz - d - [0, 1]) / [1, 2]), axis=1
    )
    np.testing.assert_allclose(
        latent_probability(z, mean, std, "window", d), expected_window, rtol=1e-5
    )


def test_threshold_zeroes_small_probabilities_exactly():
    p = thresholded(jnp.array([0.2, 0.49999, 0.5, 0.9]), 0.5)
    np.testing.assert_array_equal(p, np.float32([0.0, 0.0, 0.5, 0.9]))


def samg_agent(agent_config, weight="even", **options):
    """An agent created with SAMG as its hooks and SAMG's state filled in (a frozen copy of
    the critic moved away from the online one, so that mixing is visible)."""
    methods = make_methods("samg", {"weight": weight, **options}, OBS, ACT)
    (method,) = methods
    agent = agent_config.create(hooks=methods)
    state = agent.init(jax.random.PRNGKey(0), OBS, ACT)
    own = method.init_state(agent, state, jax.random.PRNGKey(1), Preprocess())
    own["offline_params"] = jax.tree.map(lambda x: x * 0.5 + 0.1, own["offline_params"])
    return method, agent, state.replace(extras={"samg": own})


def test_even_weight_target_by_hand():
    _, agent, state = samg_agent(SACConfig(hidden_dims=(8, 8), discount=0.9))
    frozen = state.extras["samg"]["offline_params"]
    batch = tiny_batch(np.random.default_rng(0), 4, OBS, ACT)
    key = jax.random.PRNGKey(3)
    loss, _ = agent.critic_loss(state, batch, key, state.critic.params)
    next_a, next_logp = state.actor(batch.next_observations).sample_and_log_prob(key)
    alpha = float(state.temperature())
    online = q_values(state.target_critic_params, batch.next_observations, np.asarray(next_a)).min(
        0
    ) - alpha * np.asarray(next_logp)
    offline = q_values(frozen, batch.next_observations, np.asarray(next_a)).min(
        0
    ) - alpha * np.asarray(next_logp)
    target = batch.rewards + 0.9 * (1 - batch.terminals) * (0.5 * online + 0.5 * offline)
    q = q_values(state.critic.params, batch.observations, batch.actions)
    np.testing.assert_allclose(float(loss), ((q - target) ** 2).mean(1).sum(), rtol=1e-5)


CQL_TINY = dict(actor_hidden_dims=(8,), critic_hidden_dims=(8,), cql_n_actions=3, discount=0.9)


def test_after_the_cut_off_cql_samg_is_exactly_vanilla_cql():
    """Zero guidance: the whole critic loss, conservative term included, equals plain CQL's
    (before the fix the cut-off also zeroed the p-weighted conservative term)."""
    _, agent, state = samg_agent(CQLConfig(**CQL_TINY))
    own = {**state.extras["samg"], "guidance": jnp.float32(0.0)}
    state = state.replace(extras={"samg": own})
    plain = CQLConfig(**CQL_TINY).create()
    batch = tiny_batch(np.random.default_rng(1), 4, OBS, ACT)
    key = jax.random.PRNGKey(4)
    with_samg, metrics = agent.critic_loss(state, batch, key, state.critic.params)
    base, base_metrics = plain.critic_loss(
        state.replace(extras=None), batch, key, state.critic.params
    )
    assert float(metrics["cql_loss"]) == float(base_metrics["cql_loss"]) != 0.0
    assert float(with_samg) == float(base)


def test_unguided_control_is_vanilla_cql_under_samgs_schedule():
    """samg-unguided (p ≡ 0, plain conservative term) changes only the data: its critic loss is
    plain CQL's while guidance is on, and it keeps SAMG's online-only buffer and seed steps."""
    methods = make_methods("samg-unguided", {}, OBS, ACT)
    (method,) = methods
    agent = CQLConfig(**CQL_TINY).create(hooks=methods)
    state = agent.init(jax.random.PRNGKey(0), OBS, ACT)
    own = method.init_state(agent, state, jax.random.PRNGKey(1), Preprocess())
    own["offline_params"] = jax.tree.map(lambda x: x * 0.5 + 0.1, own["offline_params"])
    state = state.replace(extras={"samg": own})
    batch = tiny_batch(np.random.default_rng(1), 4, OBS, ACT)
    key = jax.random.PRNGKey(4)
    unguided, metrics = agent.critic_loss(state, batch, key, state.critic.params)
    base, base_metrics = (
        CQLConfig(**CQL_TINY)
        .create()
        .critic_loss(state.replace(extras=None), batch, key, state.critic.params)
    )
    assert float(metrics["samg/p_mean"]) == 0.0
    assert float(metrics["cql_loss"]) == float(base_metrics["cql_loss"]) != 0.0
    assert float(unguided) == float(base)
    assert method.data_policy() == "online"
    assert method.online_overrides()["warmup_steps"] == 1_000


def test_cql_conservative_term_is_weighted_by_p():
    method, agent, state = samg_agent(CQLConfig(**CQL_TINY), weight="random")
    batch = jax.tree.map(jnp.asarray, tiny_batch(np.random.default_rng(2), 6, OBS, ACT))
    key = jax.random.PRNGKey(5)
    _, metrics = agent.critic_loss(state, batch, key, state.critic.params)
    # The same step's p: SAMG's key is the step's hook key folded with its index (0).
    from o2o.core.hooks import hook_key

    target_key, sets_key = jax.random.split(key)
    p = np.asarray(jax.random.uniform(jax.random.fold_in(hook_key(target_key), 0), (6,)))
    sets = agent.cql_action_sets(state, batch, sets_key)
    q_data = np.asarray(state.critic(batch.observations, batch.actions))
    n = 3

    def q_at(actions):
        obs = np.repeat(np.asarray(batch.observations)[:, None], actions.shape[1], 1)
        return q_values(state.critic.params, obs, np.asarray(actions))

    gap = np.asarray(
        conservative_gap(
            q_data,
            q_at(sets.random),
            q_at(sets.current),
            q_at(sets.next),
            sets,
            1.0,
            True,
        )
    )
    assert gap.shape == (2, 6) and n == sets.random.shape[1]
    expected = 10.0 * np.sum((gap * p[None]).mean(-1))
    np.testing.assert_allclose(float(metrics["cql_loss"]), expected, rtol=1e-4)
    # The same draw of p mixes the target: the mean p logged is this p's mean.
    np.testing.assert_allclose(float(metrics["samg/p_mean"]), p.mean(), rtol=1e-5)


def test_iql_form_mixes_frozen_offline_value():
    _, agent, state = samg_agent(IQLConfig(hidden_dims=(8, 8), discount=0.9))
    frozen_v = state.extras["samg"]["offline_params"]
    batch = tiny_batch(np.random.default_rng(2), 4, OBS, ACT)
    loss, _ = agent.critic_loss(state, batch, jax.random.PRNGKey(0), state.critic.params)
    v_online = np.asarray(state.value(batch.next_observations))
    v_offline = np.asarray(state.value(batch.next_observations, params=frozen_v))
    target = batch.rewards + 0.9 * (1 - batch.terminals) * (0.5 * v_online + 0.5 * v_offline)
    q = q_values(state.critic.params, batch.observations, batch.actions)
    np.testing.assert_allclose(float(loss), ((q - target) ** 2).mean(1).sum(), rtol=1e-5)


def test_cql_max_backup_evaluates_the_frozen_critic_at_the_agents_action():
    config = CQLConfig(**{**CQL_TINY, "cql_max_target_backup": True})
    _, agent, state = samg_agent(config)
    frozen = state.extras["samg"]["offline_params"]
    batch = jax.tree.map(jnp.asarray, tiny_batch(np.random.default_rng(3), 5, OBS, ACT))
    key = jax.random.PRNGKey(6)
    target_key, _ = jax.random.split(key)
    target = np.asarray(agent.critic_target(state, batch, target_key))
    from o2o.agents.cql import repeat_rows, sample_repeated

    actions, _ = sample_repeated(state.actor(batch.next_observations), target_key, 3)
    obs = np.asarray(repeat_rows(batch.next_observations, 3))
    q_target = q_values(state.target_critic_params, obs, np.asarray(actions)).min(0)  # (B, n)
    best = q_target.argmax(-1)
    chosen = np.asarray(actions)[np.arange(5), best]
    online = q_target[np.arange(5), best]
    offline = q_values(frozen, np.asarray(batch.next_observations), chosen).min(0)
    expected = np.asarray(batch.rewards) + 0.9 * (1 - np.asarray(batch.terminals)) * (
        0.5 * online + 0.5 * offline
    )
    np.testing.assert_allclose(target, expected, rtol=1e-5, atol=1e-6)


def test_even_and_random_ablations_give_the_stated_p():
    batch = tiny_batch(np.random.default_rng(0), 4, OBS, ACT)
    big = jax.tree.map(lambda c: jnp.asarray(np.repeat(np.asarray(c), 500, axis=0)), batch)
    own = {"guidance": jnp.float32(1.0)}
    key = jax.random.PRNGKey(0)
    even = SAMG(SAMGConfig(weight="even"), OBS, ACT)
    np.testing.assert_array_equal(even.weight(own, big, key), 0.5)
    p = np.asarray(SAMG(SAMGConfig(weight="random"), OBS, ACT).weight(own, big, key))
    assert p.min() >= 0 and p.max() <= 1 and abs(p.mean() - 0.5) < 0.03 and p.std() > 0.25


# --- the C-VAE, fitted by the engine as the phase ``samg_cvae`` ------------------------------

OBS_MEAN = np.array([1.0, -2.0, 0.5], np.float32)
OBS_STD = np.array([0.1, 3.0, 2.0], np.float32)


def two_cluster_data(n=2000, seed=0) -> Transition:
    """Raw offline data: states near +1, actions near 0.5, dynamics s' = 0.9 s + a."""
    rng = np.random.default_rng(seed)
    s = 1.0 + 0.1 * rng.normal(size=(n, OBS)).astype(np.float32)
    a = np.clip(0.5 + 0.1 * rng.normal(size=(n, ACT)), -1, 1).astype(np.float32)
    s_next = 0.9 * s + np.pad(a, ((0, 0), (0, OBS - ACT)))
    z = np.zeros(n, np.float32)
    return Transition(s, a, z, s_next.astype(np.float32), z, z)


def normalised(data: Transition, pre: Preprocess) -> Transition:
    return data._replace(
        observations=pre.observations(data.observations),
        next_observations=pre.observations(data.next_observations),
    )


@pytest.fixture(scope="module")
def fitted():
    """SAMG's C-VAE fitted through its phase on the engine, on states normalised with a
    non-identity normalisation (the C-VAE must see raw states)."""
    pre = Preprocess(OBS_MEAN, OBS_STD)
    data = normalised(two_cluster_data(), pre)
    options = dict(
        cvae_steps=2000,
        encoder_hidden_dims=(64, 64),
        decoder_hidden_dims=(64,),
        kl_weight=0.01,
        reference_pairs=500,
    )
    methods = make_methods("samg", options, OBS, ACT)
    (method,) = methods
    agent = SACConfig(hidden_dims=(8,)).create(hooks=methods)
    keys = jax.random.split(jax.random.PRNGKey(0), 1)
    states = jax.vmap(lambda k: agent.init(k, OBS, ACT))(keys)
    states = methods.init_states(agent, states, keys, pre, offline=False)
    (phase,) = method.phases(agent)
    assert phase.name == "samg_cvae" and phase.when == "before_online" and phase.steps == 2000
    fused = compile_fused(phase.update, Sampler(128), 1000)
    buffers = {"replay": jax.tree.map(lambda x: x[None], buffer_from_transitions(data))}
    history = []
    for _ in range(2):
        states, keys, metrics = fused(states, buffers, keys)
        history.append({k: float(np.mean(v)) for k, v in metrics.items()})
    states, rows = phase.finish(states, data)
    return method, agent, states, data, history, rows


def test_cvae_elbo_decreases_during_fitting(fitted):
    method, _, states, _, history, _ = fitted
    first, last = history
    assert last["samg/cvae_reconstruction"] < 0.5 * first["samg/cvae_reconstruction"]
    assert int(states.extras["samg"]["fit_step"][0]) == 2000


def test_the_cvae_sees_raw_states(fitted):
    """Its reconstruction error is in raw units: small against the raw spread of s' (0.1),
    while the normalised s' (std ≈ 0.03–1) would give a different scale."""
    method, _, states, data, _, _ = fitted
    own = jax.tree.map(lambda x: x[0], states.extras["samg"])
    raw = two_cluster_data(500, seed=3)
    x = jnp.concatenate([jnp.asarray(raw.observations), jnp.asarray(raw.actions)], -1)
    mean, _ = method.vae.apply({"params": own["model"].params}, x, method="encode")
    recon = method.vae.apply({"params": own["model"].params}, x, mean, method="decode")
    assert float(np.mean((np.asarray(recon) - raw.next_observations) ** 2)) < 0.01


def test_in_distribution_pairs_get_higher_p_than_far_ood_pairs(fitted):
    method, _, states, _, _, rows = fitted
    own = jax.tree.map(lambda x: x[0], states.extras["samg"])
    pre = Preprocess(OBS_MEAN, OBS_STD)
    raw = two_cluster_data(500, seed=1)
    in_dist = jax.tree.map(jnp.asarray, normalised(raw, pre))
    far = jax.tree.map(
        jnp.asarray,
        normalised(
            raw._replace(
                observations=-3.0 - raw.observations,
                actions=-raw.actions,
                next_observations=-raw.next_observations,
            ),
            pre,
        ),
    )
    key = jax.random.PRNGKey(0)
    p_in = np.asarray(method.raw_weight(own, in_dist, key))
    p_far = np.asarray(method.raw_weight(own, far, key))
    assert p_in.mean() > 0.3 and (p_in > 0).mean() > 0.4
    assert p_far.mean() < 0.1 and p_in.mean() > p_far.mean() + 0.3
    assert rows[0]["offline_p_mean"] > rows[0]["random_action_p_mean"]


def test_p_separates_a_data_action_from_a_far_action_at_the_same_state(fitted):
    method, _, states, _, _, _ = fitted
    own = jax.tree.map(lambda x: x[0], states.extras["samg"])
    pre = Preprocess(OBS_MEAN, OBS_STD)
    data = jax.tree.map(jnp.asarray, normalised(two_cluster_data(500, seed=2), pre))
    far_action = data._replace(actions=-jnp.ones_like(data.actions))
    key = jax.random.PRNGKey(0)
    p_data = np.asarray(method.raw_weight(own, data, key))
    p_far = np.asarray(method.raw_weight(own, far_action, key))
    assert p_data.mean() > p_far.mean() + 0.3 and (p_far > 0).mean() < 0.1


def test_latent_statistics_are_those_of_the_encoder_means(fitted):
    method, _, states, data, _, rows = fitted
    own = jax.tree.map(lambda x: x[0], states.extras["samg"])
    raw = np.concatenate([data.observations * OBS_STD + OBS_MEAN, data.actions], -1)
    means = np.asarray(
        method.vae.apply({"params": own["model"].params}, jnp.asarray(raw), method="encode")[0]
    )
    np.testing.assert_allclose(own["stat_mean"], means.mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(own["stat_var"], means.var(0), rtol=1e-3, atol=1e-6)
    assert not rows[0]["posterior_collapse"]


def test_p_is_computed_at_s_a_not_at_s_next_through_every_agent(fitted):
    """An asymmetric batch: (s, a) in the data, (s', a) far from it. The critic target of
    CQL, AWAC and IQL + SAMG must use p(s, a) (mixing the frozen critic in), which differs from
    p(s', a) (≈ 0, no mixing)."""
    method, _, fitted_states, _, _, _ = fitted
    own = jax.tree.map(lambda x: x[0], fitted_states.extras["samg"])
    pre = Preprocess(OBS_MEAN, OBS_STD)
    raw = two_cluster_data(8, seed=4)
    raw = raw._replace(next_observations=-5.0 - raw.next_observations)
    batch = jax.tree.map(jnp.asarray, normalised(raw, pre))
    key = jax.random.PRNGKey(0)
    p_sa = np.asarray(method.raw_weight(own, batch, key))
    swapped = batch._replace(observations=batch.next_observations)
    assert p_sa.mean() > 0.3 and np.asarray(method.raw_weight(own, swapped, key)).mean() < 0.05
    methods = make_methods(
        "samg", {"encoder_hidden_dims": [64, 64], "decoder_hidden_dims": [64]}, OBS, ACT
    )
    r, d = np.asarray(batch.rewards), np.asarray(batch.terminals)
    for config in (
        CQLConfig(actor_hidden_dims=(8,), critic_hidden_dims=(8,), cql_n_actions=2),
        AWACConfig(hidden_dims=(8,)),
        IQLConfig(hidden_dims=(8,)),
    ):
        agent = config.create(hooks=methods)
        state = agent.init(jax.random.PRNGKey(1), OBS, ACT)
        frozen = jax.tree.map(lambda x: x * 0.5 + 0.3, agent.bootstrap_params(state))
        state = state.replace(extras={"samg": {**own, "offline_params": frozen}})
        plain, vanilla = config.create(), state.replace(extras=None)
        key = jax.random.PRNGKey(2)
        if isinstance(config, CQLConfig):
            target_key = jax.random.split(key)[0]
            got = np.asarray(agent.critic_target(state, batch, target_key))
            value_with = plain.next_value_fn(vanilla, batch, target_key)[0]
            online = np.asarray(value_with(state.target_critic_params))
            offline = np.asarray(value_with(frozen))
        else:
            loss, _ = agent.critic_loss(state, batch, key, state.critic.params)
            value_with = plain.next_value_fn(vanilla, batch, key)[0]
            default = (
                state.value.params if isinstance(config, IQLConfig) else state.target_critic_params
            )
            online, offline = np.asarray(value_with(default)), np.asarray(value_with(frozen))
        expected = r + config.discount * (1 - d) * ((1 - p_sa) * online + p_sa * offline)
        assert np.abs(offline - online).max() > 1e-3  # the mixing is visible
        if isinstance(config, CQLConfig):
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
        else:
            q = q_values(
                state.critic.params, np.asarray(batch.observations), np.asarray(batch.actions)
            )
            np.testing.assert_allclose(float(loss), ((q - expected) ** 2).mean(1).sum(), rtol=1e-4)


def test_the_frozen_critic_is_bit_identical_after_updates():
    method, agent, state = samg_agent(CQLConfig(**CQL_TINY))
    before = jax.tree.map(np.asarray, state.extras["samg"]["offline_params"])
    batch = jax.tree.map(jnp.asarray, tiny_batch(np.random.default_rng(5), 16, OBS, ACT))
    update = jax.jit(agent.update)
    for i in range(3):
        state, _ = update(state, batch, jax.random.PRNGKey(i))
    after = jax.tree.map(np.asarray, state.extras["samg"]["offline_params"])
    for x, y in zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True):
        assert np.array_equal(x, y)
    moved = jax.tree.leaves(state.critic.params)[0]
    assert not np.array_equal(np.asarray(moved), jax.tree.leaves(before)[0])


def test_collapse_is_detected_from_the_encoders_dependence_on_its_input():
    rng = np.random.default_rng(0)
    stds = np.ones((1000, 4))
    # KL ≈ 0.014 per dim yet nearly constant means (the case the KL rule missed).
    nearly_collapsed = 0.03 * rng.normal(size=(1000, 4))
    healthy = np.concatenate([0.03 * rng.normal(size=(1000, 3)), rng.normal(size=(1000, 1))], 1)
    np.testing.assert_allclose(latent_snr(nearly_collapsed, stds), 0.03, rtol=0.1)
    assert posterior_collapsed(nearly_collapsed, stds, 0.1)
    assert not posterior_collapsed(healthy, stds, 0.1)
    assert not posterior_collapsed(nearly_collapsed, 0.01 * stds, 0.1)  # sharp codes


def test_adaptive_update_recomputes_the_statistics_under_the_new_encoder(fitted):
    method, agent, states, _, _, _ = fitted
    state = jax.tree.map(lambda x: x[0], states)
    rng = np.random.default_rng(5)
    n = 600
    s = (-2.0 + 0.1 * rng.normal(size=(n, OBS))).astype(np.float32)
    a = np.full((n, ACT), -0.5, np.float32)
    online = Transition(
        s, a, np.zeros(n, np.float32), s, np.ones(n, np.float32), np.zeros(n, np.float32)
    )
    buffer = jax.tree.map(lambda x: x[None], buffer_from_transitions(online))
    before = np.asarray(state.extras["samg"]["stat_mean"]).copy()
    new_states, rows = method.on_chunk(
        agent,
        method.config.adaptive_every,
        jax.tree.map(lambda x: x[None], state),
        {"online": buffer},
        seed=0,
    )
    row = next(r for r in rows if r["phase"] == "samg_adaptive")
    assert row["mastered"] > 0
    own = jax.tree.map(lambda x: x[0], new_states.extras["samg"])
    params = own["model"].params

    def encoder_means(t: Transition) -> np.ndarray:
        raw = np.concatenate(
            [np.asarray(t.observations) * OBS_STD + OBS_MEAN, np.asarray(t.actions)], -1
        )
        return np.asarray(
            method.vae.apply({"params": params}, jnp.asarray(raw), method="encode")[0]
        )

    reference = encoder_means(own["reference"])
    p = np.asarray(
        method.raw_weight(
            state.extras["samg"], jax.tree.map(jnp.asarray, online), jax.random.PRNGKey(0)
        )
    )
    assert (p == 0).all()  # every online sample is out of distribution
    # Which samples were mastered is the method's rule; their count is reported. The new mean
    # is the count-weighted mean of the reference pairs' (standing for the offline count) and
    # of mastered samples' encoder means, all under the NEW encoder.
    count = float(state.extras["samg"]["stat_count"])
    mastered_mean = (
        np.asarray(own["stat_mean"]) * (count + row["mastered"]) - count * reference.mean(0)
    ) / row["mastered"]
    all_means = encoder_means(online)
    assert (
        all_means.min(0).min() - 1e-3 <= mastered_mean.min()
        and mastered_mean.max() <= all_means.max(0).max() + 1e-3
    )
    assert not np.allclose(np.asarray(own["stat_mean"]), before)


def test_guidance_cut_off_sets_p_to_zero(fitted):
    _, agent, states, _, _, _ = fitted
    cut = SAMG(SAMGConfig(guidance_steps=100, adaptive_every=0), OBS, ACT)
    new, rows = cut.on_chunk(agent, 100, states, {}, seed=0)
    assert float(new.extras["samg"]["guidance"][0]) == 0.0 and rows
    new, _ = cut.on_chunk(agent, 50, states, {}, seed=0)
    assert float(new.extras["samg"]["guidance"][0]) == 1.0


def test_merge_statistics_equals_pooled():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(100, 3)), rng.normal(3, 2, size=(40, 3))
    count, mean, var = merge_statistics(100, a.mean(0), a.var(0), 40, b.mean(0), b.var(0))
    pooled = np.concatenate([a, b])
    assert count == 140
    np.testing.assert_allclose(mean, pooled.mean(0))
    np.testing.assert_allclose(var, pooled.var(0))


def test_invalid_samg_options():
    with pytest.raises(ConfigError):
        SAMGConfig(p_form="square")
    with pytest.raises(ConfigError):
        SAMGConfig(threshold=1.5)
    with pytest.raises(ConfigError, match="unknown fine-tuning method 'samg-sometimes'"):
        make_methods("samg-sometimes", {}, OBS, ACT)
    with pytest.raises(ConfigError, match="has no option"):
        make_methods("samg", {"cvae_stepz": 3}, OBS, ACT)


# --- through the pipeline -------------------------------------------------------------------


def test_samg_refuses_another_data_policy_and_agents_without_a_critic():
    from o2o import data as datasets
    from o2o.agents import BCConfig
    from o2o.experiment.pipeline import Pipeline, PipelineConfig

    dataset = datasets.load("hopper-medium-lite").select(slice(0, 500))
    with pytest.raises(ConfigError, match="data policy"):
        tiny_pipeline(dataset, data_policy="union")
    methods = make_methods("samg", {}, dataset.obs_dim, dataset.act_dim)
    with pytest.raises(ConfigError, match="no critic"):
        Pipeline("bc", BCConfig(), PipelineConfig(), dataset, methods)


def test_samg_fine_tuning_keeps_no_offline_transition(tmp_path):
    from o2o import data as datasets
    from o2o.experiment.runs import RunDir

    dataset = datasets.load("hopper-medium-lite").select(slice(0, 2000))
    pipeline = tiny_pipeline(dataset, options={"seed_transitions": 100, "buffer_capacity": 500})
    assert pipeline.policy == "online"
    seen = {}
    original = pipeline.methods.on_chunk

    def capture(agent, step, states, buffers, seed):
        seen["buffers"] = buffers
        return original(agent, step, states, buffers, seed)

    pipeline.methods.on_chunk = capture
    pipeline.methods.has_events = lambda: True
    run = RunDir.create(tmp_path / "r", {})
    pipeline.run(run, progress=False)
    assert set(seen["buffers"]) == {"online"}
    buffer = jax.tree.map(lambda x: np.asarray(x[0]), seen["buffers"]["online"])
    # 100 warm-up transitions before the 300-step budget; every budget step is updated on.
    assert buffer.capacity == 500 and int(buffer.size) == 400
    assert [r["updates"] for r in run.rows() if r["phase"] == "online"] == [300]
    n = int(buffer.size)
    stored = np.concatenate([buffer.data.observations[:n], buffer.data.actions[:n]], axis=1)
    offline = np.concatenate(
        [pipeline.preprocess.observations(dataset.observations), dataset.actions], axis=1
    )
    # No stored (s, a) equals any offline pair: every row came from the env online. (Reset
    # states alone may coincide: the env is reset with small integer seeds, as the data was.)
    distances = np.abs(stored[:, None, :] - offline[None, :, :]).max(-1).min(-1)
    assert distances.min() > 1e-6
    assert pipeline.offline is None and pipeline.dataset is None


def test_samg_and_vanilla_make_the_same_number_of_updates(tmp_path):
    from o2o import data as datasets
    from o2o.experiment.runs import RunDir

    dataset = datasets.load("hopper-medium-lite").select(slice(0, 1000))
    counts = {}
    for name in ("vanilla", "samg-even"):
        run = RunDir.create(tmp_path / name, {})
        tiny_pipeline(dataset, name, online_eval_every=100).run(run, progress=False)
        counts[name] = [(r["step"], r["updates"]) for r in run.rows() if r["phase"] == "online"]
    assert counts["vanilla"] == counts["samg-even"] == [(200, 100), (300, 200), (400, 300)]


def test_samg_online_phase_references_no_offline_array():
    from o2o import data as datasets

    rows = 2347  # a row count no other array in the process has
    dataset = datasets.load("hopper-medium-lite").select(slice(0, rows))
    options = dict(
        cvae_steps=100,
        encoder_hidden_dims=[16],
        decoder_hidden_dims=[16],
        seed_transitions=50,
        buffer_capacity=200,
        adaptive_every=100,
        reference_pairs=64,  # the only offline rows SAMG keeps, by design
    )
    pipeline = tiny_pipeline(
        dataset,
        "samg",
        options,
        offline_steps=50,
        offline_chunk=50,
        offline_eval_every=50,
        online_steps=100,
        online_eval_every=100,
    )
    check = OfflineArrayProbe(
        [dataset.observations, dataset.next_observations, dataset.actions]
        + [c for c in pipeline.offline if c is not None],
        (rows,),
    )
    del dataset

    pipeline.run(
        progress=False,
        on_online_start=check,
        on_eval=lambda row: check() if row.get("phase") == "online" else None,
    )
    assert len(check.checks) == 2  # at the start of fine-tuning and at its evaluation
    for alive, device in check.checks:
        assert not any(alive), "an offline host array is still referenced"
        assert device == [], f"device arrays of the offline data's size are alive: {device}"


def killable_samg_pipeline():
    """A tiny SAMG pipeline whose C-VAE phase spans several checkpoints."""
    from o2o import data as datasets

    dataset = datasets.load("hopper-medium-lite").select(slice(0, 1000))
    options = dict(
        cvae_steps=250,  # not a multiple of the 100-step chunk: exactly 250 steps are run
        encoder_hidden_dims=[16],
        decoder_hidden_dims=[16],
        seed_transitions=50,
        adaptive_every=0,
    )
    return tiny_pipeline(dataset, "samg", options, online_steps=100, online_eval_every=50)


@pytest.fixture(scope="module")
def uninterrupted_samg(tmp_path_factory):
    from o2o.experiment.runs import RunDir

    full = killable_samg_pipeline().run(
        RunDir.create(tmp_path_factory.mktemp("samg") / "full", {}), progress=False
    )
    assert np.asarray(full.states.extras["samg"]["fit_step"]).tolist() == [250]
    fit_rows = [r["step"] for r in full.rows if r["phase"] == "samg_cvae"]
    assert fit_rows == [100, 200, 250]
    return full


def untimed_rows(rows):
    return [{k: v for k, v in r.items() if k != "wall_time"} for r in rows]


@pytest.mark.parametrize("kill_at_save", [3, 4])
def test_a_run_killed_in_the_cvae_phase_resumes_identically(
    tmp_path, monkeypatch, kill_at_save, uninterrupted_samg
):
    """Killed just after a checkpoint of the C-VAE phase — its first (3rd save of the run:
    before phase.json names the phase) or its second — the run resumes and ends equal to an
    uninterrupted run."""
    from o2o.experiment import pipeline as pipeline_module
    from o2o.experiment.runs import RunDir

    saved = []
    original = pipeline_module.save_checkpoint

    def dies_after_a_save(path, tree, **labels):
        original(path, tree, **labels)
        saved.append(path.name)
        if len(saved) == kill_at_save:
            raise KeyboardInterrupt

    run = RunDir.create(tmp_path / "killed", {})
    monkeypatch.setattr(pipeline_module, "save_checkpoint", dies_after_a_save)
    with pytest.raises(KeyboardInterrupt):
        killable_samg_pipeline().run(run, progress=False)
    monkeypatch.setattr(pipeline_module, "save_checkpoint", original)
    assert saved[:3] == ["checkpoint.msgpack", "offline.msgpack", "checkpoint.msgpack"]
    phase_rows = [r["step"] for r in run.rows() if r["phase"] == "samg_cvae"]
    assert phase_rows == [100, 200][: kill_at_save - 2]
    resumed = killable_samg_pipeline().run(run, resume=True, progress=False)

    full = uninterrupted_samg
    assert untimed_rows(resumed.rows) == untimed_rows(full.rows)
    for x, y in zip(jax.tree.leaves(full.states), jax.tree.leaves(resumed.states), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_a_run_killed_online_never_refits_the_cvae(tmp_path, uninterrupted_samg):
    """Killed online (after its first evaluation): the resume loads the fitted start and does
    not fit the C-VAE again, and ends equal to an uninterrupted run."""
    from o2o.experiment.runs import RunDir

    run = RunDir.create(tmp_path / "online", {})

    def dies_online(row):
        if row.get("phase") == "online":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        killable_samg_pipeline().run(run, progress=False, on_eval=dies_online)
    fits = len([r for r in run.rows() if r["phase"] == "samg_cvae"])
    calls = []
    pipeline = killable_samg_pipeline()
    original_phase = pipeline.run_phase
    pipeline.run_phase = lambda *a, **k: calls.append(a[0].name) or original_phase(*a, **k)
    resumed = pipeline.run(run, resume=True, progress=False)
    assert calls == [] and len([r for r in run.rows() if r["phase"] == "samg_cvae"]) == fits
    assert untimed_rows(resumed.rows) == untimed_rows(uninterrupted_samg.rows)


# --- the C-VAE fit's length follows the budget ------------------------------------------------


@pytest.mark.parametrize(
    "offline_steps, expected",
    # By hand: a fifth of the offline budget, clipped to [1,000, 10,000].
    [(0, 1000), (1000, 1000), (7500, 1500), (20_000, 4000), (50_000, 10_000), (1_000_000, 10_000)],
)
def test_cvae_steps_default_follows_the_offline_budget(offline_steps, expected):
    from o2o.experiment.builder import RunSpec
    from o2o.experiment.pipeline import PipelineConfig

    pipeline = PipelineConfig(offline_steps=offline_steps, online_steps=1000)
    spec = RunSpec.create("iql", pipeline, "samg")
    # Recorded in what config.yaml stores, so resume and the report read the value back.
    assert spec.stored()["finetune"]["options"] == {"cvae_steps": expected}
    assert RunSpec.from_stored(spec.stored()).methods(OBS, ACT).phases(None)[0].steps == expected


def test_a_given_cvae_steps_and_the_ablations_are_left_alone():
    from o2o.experiment.builder import RunSpec
    from o2o.experiment.pipeline import PipelineConfig

    pipeline = PipelineConfig(offline_steps=20_000, online_steps=1000)
    given = RunSpec.create("iql", pipeline, "samg", {"cvae_steps": 123})
    assert given.stored()["finetune"]["options"] == {"cvae_steps": 123}
    # The ablations fit no weight model: nothing to resolve, configs of earlier runs unchanged.
    for label in ("samg-even", "samg-random", "samg-unguided"):
        assert RunSpec.create("iql", pipeline, label).stored()["finetune"]["options"] == {}
    composed = RunSpec.create("iql", pipeline, "samg+sera")
    assert composed.stored()["finetune"]["options"] == {"samg.cvae_steps": 4000}


def test_fit_to_budget_is_a_generic_seam_hook():
    """The base method's hook is the identity; the pipeline fits every method it is given
    (it names none), so a Pipeline built by hand runs SAMG with the budget's value."""
    from o2o.finetune import Method

    samg = make_methods("samg", {}, OBS, ACT)
    assert samg.methods[0].config.cvae_steps is None
    with pytest.raises(O2OError, match="fitted to the run's budget"):
        samg.phases(None)
    fitted = samg.fit_to_budget(15_000, 500)
    assert fitted.methods[0].config.cvae_steps == 3000
    assert fitted.methods[0].label == "samg"
    sera = make_methods("sera", {}, OBS, ACT)
    assert sera.fit_to_budget(15_000, 500) is sera
    assert Method.fit_to_budget(sera.methods[0], 1, 1) is sera.methods[0]

    from o2o import data as datasets

    dataset = datasets.load("hopper-medium-lite").select(slice(0, 500))
    pipeline = tiny_pipeline(dataset, "samg", offline_steps=6000)
    [phase] = pipeline.phases_before_online
    assert phase.name == "samg_cvae" and phase.steps == 1200


def test_a_from_run_fits_cvae_steps_to_its_sources_offline_budget(tmp_path):
    """``--from`` runs train no offline steps of their own (--offline-steps 0): the budget
    behind their agent is the source run's."""
    from o2o.experiment.builder import RunSpec, source_offline_steps
    from o2o.experiment.pipeline import PipelineConfig
    from o2o.experiment.runs import RunDir

    source = RunSpec.create("iql", PipelineConfig(offline_steps=30_000), "vanilla")
    RunDir.create(tmp_path / "source", source.stored())
    assert source_offline_steps(tmp_path / "source") == 30_000
    assert source_offline_steps(tmp_path / "source" / "offline.msgpack") == 30_000
    assert source_offline_steps(tmp_path / "elsewhere") is None
    pipeline = PipelineConfig(offline_steps=0, online_steps=1000)
    spec = RunSpec.create("iql", pipeline, "samg", offline_budget=30_000)
    assert spec.stored()["finetune"]["options"] == {"cvae_steps": 6000}
