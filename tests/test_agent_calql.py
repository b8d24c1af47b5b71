"""Cal-QL: the policy-action Q-values clipped below at the Monte-Carlo return (random actions
not), the switch to uncalibrated CQL online, learning on the bandit task, config checks."""

import jax
import numpy as np
import pytest

from o2o.agents import make_agent
from o2o.agents.calql import CalQLConfig
from o2o.agents.cql import CQLConfig
from o2o.errors import ConfigError
from tests.helpers import bandit_scores_before_after, tiny_batch
from tests.test_agent_cql import LEARNING, OBS, SMALL, conservative_by_hand, q_at

ACT = 2


@pytest.fixture
def batch():
    return tiny_batch(np.random.default_rng(0), 5, OBS, ACT)


def conservative(agent, state, batch, key=jax.random.PRNGKey(4)):
    sets = agent.cql_action_sets(state, batch, key)
    q = state.critic(batch.observations, batch.actions)
    loss, metrics = agent.conservative_loss(
        state, batch, q, sets, state.critic.params, jax.random.PRNGKey(0)
    )
    return float(loss), metrics, sets


def test_policy_action_values_are_clipped_below_at_the_mc_return(batch):
    agent = CalQLConfig(**SMALL, cql_alpha=1.0).create()
    state = agent.init(jax.random.PRNGKey(0), OBS, ACT)
    sets = agent.cql_action_sets(state, batch, jax.random.PRNGKey(4))
    q_current = q_at(state.critic.params, batch.observations, sets.current)
    # Bounds between the rows' Q-values: some policy-action values get clipped, others not.
    bounds = np.array([-50.0, 50.0, 0.0, float(np.median(q_current[:, 3])), -0.01], np.float32)
    batch = batch._replace(mc_returns=bounds)
    loss, metrics, sets = conservative(agent, state, batch)
    expected = conservative_by_hand(
        state, batch, sets, True, 1.0, lower_bound=bounds.astype(np.float64)
    )
    np.testing.assert_allclose(loss, expected.sum(), rtol=1e-5)
    # Clipping matters here: plain CQL's term differs.
    assert not np.isclose(
        loss, conservative_by_hand(state, batch, sets, True, 1.0).sum(), rtol=1e-3
    )

    q_next = q_at(state.critic.params, batch.observations, sets.next)
    below = np.concatenate([q_current, q_next], axis=-1) < bounds[None, :, None]
    np.testing.assert_allclose(float(metrics["calql_bound_rate"]), below.mean(), rtol=1e-6)


def test_random_actions_are_not_clipped(batch):
    """With a huge bound every policy-action value equals it; the uniform actions keep theirs."""
    agent = CalQLConfig(**SMALL, cql_alpha=1.0).create()
    state = agent.init(jax.random.PRNGKey(1), OBS, ACT)
    bound = 40.0
    loss, _, sets = conservative(
        agent, state, batch._replace(mc_returns=np.full(5, bound, np.float32))
    )
    q_data = np.asarray(state.critic(batch.observations, batch.actions), np.float64)
    q_rand = q_at(state.critic.params, batch.observations, sets.random)
    cat = np.concatenate(
        [
            q_rand - ACT * np.log(0.5),
            bound - np.asarray(sets.next_log_probs, np.float64)[None].repeat(2, 0),
            bound - np.asarray(sets.current_log_probs, np.float64)[None].repeat(2, 0),
        ],
        axis=-1,
    )
    top = cat.max(-1, keepdims=True)
    gap = (top[..., 0] + np.log(np.exp(cat - top).sum(-1))) - q_data
    np.testing.assert_allclose(loss, gap.mean(1).sum(), rtol=1e-5)


def test_uncalibrated_calql_is_cql(batch):
    batch = batch._replace(mc_returns=np.full(5, 30.0, np.float32))
    cql = CQLConfig(**SMALL).create()
    calql = CalQLConfig(**SMALL, calibrated=False).create()
    state = cql.init(jax.random.PRNGKey(2), OBS, ACT)
    assert conservative(cql, state, batch)[0] == pytest.approx(
        conservative(calql, state, batch)[0], rel=1e-6
    )
    calibrated = CalQLConfig(**SMALL).create()
    assert conservative(calibrated, state, batch)[0] != pytest.approx(
        conservative(cql, state, batch)[0], rel=1e-3
    )


def test_boundary_turns_calibration_off_and_switches_alpha(batch):
    agent = CalQLConfig(**SMALL, cql_alpha=5.0, online_cql_alpha=2.0).create()
    online = agent.for_online()
    assert type(online).__name__ == "CalQL"
    assert online.config.cql_alpha == 2.0 and not online.config.calibrated
    assert online.lower_bound(batch) is None and agent.lower_bound(batch) is not None
    kept = CalQLConfig(**SMALL, online_calibrated=True).create().for_online()
    assert kept.config.calibrated


def test_update_runs_and_reports_the_bound_rate(batch):
    agent = CalQLConfig(**SMALL).create()
    state = agent.init(jax.random.PRNGKey(0), OBS, ACT)
    new, metrics = agent.update(state, batch, jax.random.PRNGKey(1))
    assert int(new.step) == 1 and 0.0 <= float(metrics["calql_bound_rate"]) <= 1.0


def test_calql_improves_over_its_initial_policy():
    before, after, metrics = bandit_scores_before_after(CalQLConfig(**LEARNING).create(), steps=200)
    assert np.isfinite(float(metrics["critic_loss"]))
    assert after > before + 0.1, (before, after)


def test_domain_presets_and_registry():
    maze = CalQLConfig.for_domain("maze")
    assert isinstance(maze, CalQLConfig) and maze.cql_lagrange and maze.cql_target_action_gap == 0.8
    assert maze.calibrated and not maze.online_calibrated
    assert type(make_agent("calql")).__name__ == "CalQL"


@pytest.mark.parametrize(
    "overrides", [{"actor_lr": -1.0}, {"cql_n_actions": 0}, {"online_cql_alpha": -2.0}]
)
def test_invalid_hyperparameters_are_rejected(overrides):
    with pytest.raises(ConfigError):
        CalQLConfig(**overrides)
