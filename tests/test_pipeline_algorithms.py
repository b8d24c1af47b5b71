"""Every offline algorithm runs through the whole offline→online pipeline (tiny budgets)."""

import dataclasses

import numpy as np
import pytest

from o2o import data as datasets
from o2o.agents import CONFIGS
from o2o.experiment.pipeline import Pipeline, PipelineConfig

TINY = {
    "hidden_dims": (16, 16),
    "actor_hidden_dims": (16, 16),
    "critic_hidden_dims": (16, 16),
    "vae_hidden_dims": (16, 16),
    "vae_steps": 100,
    "cql_n_actions": 2,
    "bc_steps": 10,
}


@pytest.fixture(scope="module")
def small_hopper():
    return datasets.load("hopper-medium-lite").select(slice(0, 2000))


@pytest.mark.parametrize("algo", ["bc", "td3bc", "awac", "iql", "cql", "calql", "spot"])
def test_offline_then_online(algo, small_hopper):
    config_cls = CONFIGS[algo]
    fields = {f.name for f in dataclasses.fields(config_cls)}
    agent_config = config_cls.for_domain(
        "locomotion", **{k: v for k, v in TINY.items() if k in fields}
    )
    agent_config = agent_config.fit_to_budget(200, 100)
    config = PipelineConfig(
        offline_steps=200,
        online_steps=100,
        offline_chunk=100,
        offline_eval_every=200,
        online_eval_every=100,
        update_every=50,
        eval_episodes=1,
        batch_size=32,
    )
    result = Pipeline(algo, agent_config, config, dataset=small_hopper).run(progress=False)
    leaves = [np.asarray(x) for x in __import__("jax").tree.leaves(result.states)]
    assert all(np.isfinite(x).all() for x in leaves if x.dtype.kind == "f")
