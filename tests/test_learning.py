"""Learning tests: the agents actually solve Pendulum-v1 (slow; run by ./test.sh and CI)."""

import numpy as np
import pytest

from o2o.agents import SACConfig, TD3Config
from o2o.experiment.online import OnlineConfig, OnlineTrainer


@pytest.mark.slow
@pytest.mark.parametrize(
    ("agent_config", "steps"),
    # 64-unit layers: Pendulum needs no more, and the test runs ~3x faster than at (256, 256).
    # TD3 dips on one seed around 10k steps before settling, so it gets 15k.
    [(SACConfig(hidden_dims=(64, 64)), 10_000), (TD3Config(hidden_dims=(64, 64)), 15_000)],
    ids=["sac", "td3"],
)
def test_solves_pendulum(agent_config, steps):
    online = OnlineConfig(
        env="Pendulum-v1", steps=steps, eval_every=5_000, eval_episodes=10, seeds=2
    )
    trainer = OnlineTrainer(agent_config.create(), online)
    result = trainer.run(progress=False)
    trainer.close()
    final = result.rows[-1]
    print(f"{type(agent_config).__name__}: per-seed final returns {final['seed_returns']}")
    assert final["return"] >= -250, final["seed_returns"]
    # Learned, not lucky: far above the untrained policy's first evaluation.
    assert np.mean(result.rows[0]["seed_returns"]) < final["return"]
