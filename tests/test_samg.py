"""SAMG: target mixing, the weight p, the C-VAE, the online-only buffer, adaptive updates."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm

from o2o.agents import IQLConfig, SACConfig
from o2o.core.buffers import buffer_from_transitions
from o2o.core.types import Transition
from o2o.errors import ConfigError
from o2o.experiment.online import Preprocess
from o2o.finetune.samg import (
    SAMG,
    SAMGConfig,
    SAMGHooks,
    latent_probability,
    merge_statistics,
    thresholded,
)
from tests.helpers import OfflineArrayProbe, q_values, tiny_batch

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


def fixed_weight_hooks(weight: str) -> SAMGHooks:
    return SAMG(SAMGConfig(weight=weight), OBS, ACT).hooks("sac")


def sac_state_with_extras(hooks, p_const=None):
    agent = SACConfig(hidden_dims=(8, 8), discount=0.9).create(hooks=hooks)
    state = agent.init(jax.random.PRNGKey(0), OBS, ACT)
    frozen = jax.tree.map(lambda x: x * 0.5 + 0.1, state.critic.params)
    extras = {
        "guidance": jnp.float32(1.0),
        "offline_params": frozen,
        "obs_mean": jnp.zeros(OBS),
        "obs_std": jnp.ones(OBS),
    }
    return agent, state.replace(extras=extras), frozen


def test_even_weight_target_by_hand():
    hooks = fixed_weight_hooks("even")
    agent, state, frozen = sac_state_with_extras(hooks)
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


def test_zero_guidance_reverts_exactly_to_the_base_algorithm():
    hooks = fixed_weight_hooks("even")
    agent, state, _ = sac_state_with_extras(hooks)
    state = state.replace(extras={**state.extras, "guidance": jnp.float32(0.0)})
    plain = SACConfig(hidden_dims=(8, 8), discount=0.9).create()
    batch = tiny_batch(np.random.default_rng(1), 4, OBS, ACT)
    key = jax.random.PRNGKey(4)
    with_samg, _ = agent.critic_loss(state, batch, key, state.critic.params)
    base, _ = plain.critic_loss(state.replace(extras=None), batch, key, state.critic.params)
    assert float(with_samg) == float(base)


def test_iql_form_mixes_frozen_offline_value():
    hooks = SAMG(SAMGConfig(weight="even"), OBS, ACT).hooks("iql")
    agent = IQLConfig(hidden_dims=(8, 8), discount=0.9).create(hooks=hooks)
    state = agent.init(jax.random.PRNGKey(0), OBS, ACT)
    frozen_v = jax.tree.map(lambda x: x * 0.3 - 0.2, state.value.params)
    state = state.replace(
        extras={
            "guidance": jnp.float32(1.0),
            "offline_params": frozen_v,
            "obs_mean": jnp.zeros(OBS),
            "obs_std": jnp.ones(OBS),
        }
    )
    batch = tiny_batch(np.random.default_rng(2), 4, OBS, ACT)
    from o2o.core.hooks import TargetInputs, target_with_hooks

    v_online = state.value(batch.next_observations)
    v_offline = state.value(batch.next_observations, params=frozen_v)
    inputs = TargetInputs(batch, v_online, lambda p: state.value(batch.next_observations, params=p))
    target = target_with_hooks(hooks, state.extras, inputs, 0.9)
    expected = batch.rewards + 0.9 * (1 - batch.terminals) * (
        0.5 * np.asarray(v_online) + 0.5 * np.asarray(v_offline)
    )
    np.testing.assert_allclose(target, expected, rtol=1e-5)


def test_even_and_random_ablations_give_the_stated_p():
    batch = tiny_batch(np.random.default_rng(0), 4, OBS, ACT)
    big = Transition(*(jnp.asarray(np.repeat(np.asarray(c), 500, axis=0)) for c in batch))
    extras = {"guidance": jnp.float32(1.0)}
    np.testing.assert_array_equal(fixed_weight_hooks("even").weight(extras, big), 0.5)
    p = np.asarray(fixed_weight_hooks("random").weight(extras, big))
    assert p.min() >= 0 and p.max() <= 1 and abs(p.mean() - 0.5) < 0.03 and p.std() > 0.25


def two_cluster_data(n=2000, seed=0) -> Transition:
    """Offline data: states near +1, actions near 0.5, deterministic dynamics s' = 0.9 s + a."""
    rng = np.random.default_rng(seed)
    s = 1.0 + 0.1 * rng.normal(size=(n, OBS)).astype(np.float32)
    a = np.clip(0.5 + 0.1 * rng.normal(size=(n, ACT)), -1, 1).astype(np.float32)
    s_next = 0.9 * s + np.pad(a, ((0, 0), (0, OBS - ACT)))
    z = np.zeros(n, np.float32)
    return Transition(s, a, z, s_next.astype(np.float32), z, z)


@pytest.fixture(scope="module")
def fitted():
    data = two_cluster_data()
    config = SAMGConfig(
        cvae_steps=2000,
        cvae_batch_size=128,
        encoder_hidden_dims=(64, 64),
        decoder_hidden_dims=(64,),
        kl_weight=0.1,
    )
    method = SAMG(config, OBS, ACT)
    agent = SACConfig(hidden_dims=(8,)).create(hooks=method.hooks("sac"))
    states = jax.vmap(lambda k: agent.init(k, OBS, ACT))(jax.random.split(jax.random.PRNGKey(0), 1))
    prepared = method.prepare(agent, states, data, Preprocess(), seed=0, progress=False)
    return method, agent, prepared, data


def test_cvae_elbo_decreases_during_fitting(fitted):
    _, _, prepared, _ = fitted
    fits = [r for r in prepared.diagnostics if r["phase"] == "samg_fit"]
    first, last = fits[0], fits[-1]
    assert last["reconstruction"] + last["kl"] < first["reconstruction"] + first["kl"]
    assert last["reconstruction"] < 0.5 * first["reconstruction"]


def test_in_distribution_pairs_get_higher_p_than_far_ood_pairs(fitted):
    method, _, prepared, data = fitted
    extras = jax.tree.map(lambda x: x[0], prepared.states.extras)
    hooks = method.model.hooks()
    in_dist = jax.tree.map(lambda c: jnp.asarray(c[:500]), two_cluster_data(500, seed=1))
    far = in_dist._replace(
        observations=-3.0 - in_dist.observations,
        actions=-in_dist.actions,
        next_observations=-in_dist.next_observations,
    )
    p_in = np.asarray(hooks.raw_weight(extras, in_dist))
    p_far = np.asarray(hooks.raw_weight(extras, far))
    assert p_in.mean() > 0.3 and (p_in > 0).mean() > 0.4
    assert p_far.mean() < 0.1 and p_in.mean() > p_far.mean() + 0.3


def test_adaptive_update_changes_the_statistics(fitted):
    method, agent, prepared, _ = fitted
    state = jax.tree.map(lambda x: x[0], prepared.states)
    # An online buffer of out-of-distribution transitions the critic already fits well.
    rng = np.random.default_rng(5)
    n = 600
    s = (-2.0 + 0.1 * rng.normal(size=(n, OBS))).astype(np.float32)
    a = np.full((n, ACT), -0.5, np.float32)
    online = Transition(
        s, a, np.zeros(n, np.float32), s, np.ones(n, np.float32), np.zeros(n, np.float32)
    )
    buffer = jax.tree.map(lambda x: x[None], buffer_from_transitions(online))
    before = np.asarray(state.extras["stat_mean"]).copy(), float(state.extras["stat_count"])
    states = jax.tree.map(lambda x: x[None], state)
    new_states, rows = method.on_chunk(
        agent, method.config.adaptive_every, states, {"online": buffer}, seed=0
    )
    assert rows and rows[0]["mastered"] > 0
    after = np.asarray(new_states.extras["stat_mean"][0]), float(new_states.extras["stat_count"][0])
    assert after[1] == before[1] + rows[0]["mastered"]
    assert not np.allclose(after[0], before[0])


def test_guidance_cut_off_sets_p_to_zero(fitted):
    method, agent, prepared, _ = fitted
    cut = SAMG(SAMGConfig(guidance_steps=100, adaptive_every=0), OBS, ACT)
    states, _ = cut.on_chunk(agent, 100, prepared.states, {}, seed=0)
    assert float(states.extras["guidance"][0]) == 0.0
    states, _ = cut.on_chunk(agent, 50, prepared.states, {}, seed=0)
    assert float(states.extras["guidance"][0]) == 1.0


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
    with pytest.raises(ConfigError):
        SAMGConfig.ablation("samg-sometimes")


def test_samg_fine_tuning_keeps_no_offline_transition(tmp_path):
    from o2o import data as datasets
    from o2o.agents import TD3Config
    from o2o.experiment.pipeline import Pipeline, PipelineConfig
    from o2o.experiment.runs import RunDir

    dataset = datasets.load("hopper-medium-lite").select(slice(0, 2000))
    method = SAMG(
        SAMGConfig(weight="even", seed_transitions=100, buffer_capacity=500),
        dataset.obs_dim,
        dataset.act_dim,
    )
    agent = TD3Config(hidden_dims=(16,)).create(hooks=method.hooks("td3"))
    config = PipelineConfig(
        offline_steps=100,
        online_steps=300,
        offline_chunk=100,
        offline_eval_every=100,
        online_eval_every=300,
        update_every=50,
        eval_episodes=1,
        batch_size=32,
    )
    pipeline = Pipeline("td3", agent, config, dataset=dataset, method=method)
    assert pipeline.policy == "online"
    seen = {}
    original = method.on_chunk

    def capture(step, states, buffers):
        seen["buffers"] = buffers
        return original(agent, step, states, buffers, 0)

    method.on_chunk = lambda agent_, step, states, buffers, seed: capture(step, states, buffers)
    try:
        pipeline.run(RunDir.create(tmp_path / "r", {}), progress=False)
    finally:
        method.on_chunk = original
    assert set(seen["buffers"]) == {"online"}
    buffer = jax.tree.map(lambda x: np.asarray(x[0]), seen["buffers"]["online"])
    assert buffer.capacity == 500 and int(buffer.size) == 300
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


def test_samg_online_phase_references_no_offline_array():
    from o2o import data as datasets
    from o2o.agents import TD3Config
    from o2o.experiment.pipeline import Pipeline, PipelineConfig

    rows = 2347  # a row count no other array in the process has
    dataset = datasets.load("hopper-medium-lite").select(slice(0, rows))
    method = SAMG(
        SAMGConfig(
            cvae_steps=1000,
            cvae_batch_size=32,
            encoder_hidden_dims=(16,),
            decoder_hidden_dims=(16,),
            seed_transitions=50,
            buffer_capacity=200,
            adaptive_every=100,
        ),
        dataset.obs_dim,
        dataset.act_dim,
    )
    agent = TD3Config(hidden_dims=(16,)).create(hooks=method.hooks("td3"))
    config = PipelineConfig(
        offline_steps=50,
        online_steps=100,
        offline_chunk=50,
        offline_eval_every=50,
        online_eval_every=100,
        update_every=50,
        eval_episodes=1,
        batch_size=32,
    )
    pipeline = Pipeline("td3", agent, config, dataset=dataset, method=method)
    check = OfflineArrayProbe(
        [dataset.observations, dataset.next_observations, dataset.actions, *pipeline.offline],
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
