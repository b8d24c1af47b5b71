"""The public Python API (o2o.fit, o2o.load): the CLI's builder, rows with or without a run
directory, a loaded policy that acts and evaluates as the pipeline did, and the README's
Python snippet run as written (at a tiny budget)."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import o2o
from o2o.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(
    offline_eval_every=100,
    online_eval_every=50,
    eval_episodes=2,
    batch_size=32,
)
# One IQL run: its cosine actor schedule is fitted to the budget (as the CLI fits it).
IQL_RUN = dict(
    algo="iql",
    offline_steps=200,
    online_steps=100,
    seeds=2,
    seed=3,
    agent_options={"hidden_dims": [16]},
    **TINY,
)
CLI_TINY = [
    "--offline-eval-every", "100", "--online-eval-every", "50", "--eval-episodes", "2",
    "--batch-size", "32", "--set", "hidden_dims=[16]", "--no-progress",
]  # fmt: skip


def strip(rows):
    return [{k: v for k, v in r.items() if k != "wall_time"} for r in rows]


@pytest.fixture(scope="module")
def iql_run(tmp_path_factory):
    """IQL_RUN through o2o.fit into a run directory."""
    return o2o.fit("hopper-medium-lite", run_dir=tmp_path_factory.mktemp("api") / "iql", **IQL_RUN)


def test_importing_o2o_does_not_import_jax():
    code = "import sys, o2o; assert 'jax' not in sys.modules; assert callable(o2o.fit)"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


@pytest.mark.slow  # two more tiny runs (the CLI and one without a run directory)
def test_fit_matches_the_cli_and_returns_rows_without_a_run_directory(iql_run, tmp_path):
    from o2o.cli import main

    argv = ["train", "--dataset", "hopper-medium-lite", "--algo", "iql", "--offline-steps",
            "200", "--online-steps", "100", "--seeds", "2", "--seed", "3"]  # fmt: skip
    assert main([*argv, *CLI_TINY, "--runs-dir", str(tmp_path), "--name", "cli"]) == 0
    cli_rows = [json.loads(line) for line in (tmp_path / "cli" / "metrics.jsonl").open()]
    assert [(r["phase"], r["step"]) for r in iql_run.rows] == [
        ("offline", 100), ("offline", 200), ("online", 250), ("online", 300),
    ]  # fmt: skip
    assert strip(iql_run.rows) == strip(cli_rows)
    # The budget fitting is the CLI's: the stored configs agree (IQL's schedule at 200 steps).
    cli_config = (tmp_path / "cli" / "config.yaml").read_text()
    assert (iql_run.run_dir / "config.yaml").read_text() == cli_config
    assert yaml.safe_load(cli_config)["agent"]["offline_steps"] == 200  # IQL's cosine schedule
    unsaved = o2o.fit("hopper-medium-lite", **IQL_RUN)
    assert unsaved.run_dir is None and strip(unsaved.rows) == strip(cli_rows)
    assert unsaved.final("offline")["step"] == 200


def test_load_acts_and_evaluates_as_the_pipeline(iql_run):
    policy = o2o.load(iql_run.run_dir)
    assert policy.phase == "online" and policy.seeds == (3, 4)
    final = iql_run.final("online")
    evaluation = policy.evaluate()  # the run's own eval_episodes and env seeds
    assert evaluation["seed_returns"] == pytest.approx(final["seed_returns"], rel=1e-6)
    assert evaluation["normalized_score"] == pytest.approx(final["normalized_score"], rel=1e-6)
    one = policy.evaluate(seed=4)
    assert one["seed_returns"] == pytest.approx(final["seed_returns"][1:], rel=1e-6)

    obs = np.random.default_rng(0).normal(size=(5, 11)).astype(np.float32)
    batch = policy.act(obs, seed=4)
    assert batch.shape == (5, 3) and np.all(np.abs(batch) <= 1)
    np.testing.assert_allclose(policy.act(obs[2], seed=4), batch[2], rtol=1e-5, atol=1e-6)
    assert not np.allclose(policy.act(obs, seed=3), batch)  # seeds are different agents
    noisy = policy.act(obs, deterministic=False, seed=4)
    assert noisy.shape == (5, 3) and not np.allclose(noisy, batch)
    with pytest.raises(ConfigError, match="seeds are 3, 4"):
        policy.act(obs, seed=0)


def test_fit_refuses_unknown_options_with_a_suggestion():
    with pytest.raises(ConfigError, match="did you mean 'eval_episodes'"):
        o2o.fit("hopper-medium-lite", eval_episode=3)


def readme_python_block() -> str:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) == 1, "the README has one Python snippet"
    return blocks[0]


@pytest.mark.slow
def test_the_readme_python_snippet_runs(tmp_path, monkeypatch):
    """The snippet as written, with its budget cut down (each cut must still match)."""
    code = readme_python_block()
    cuts = {
        "offline_steps=50_000": "offline_steps=200",
        "online_steps=20_000": "online_steps=100",
        "seeds=3,": "seeds=2, eval_episodes=1, batch_size=32, offline_eval_every=100,"
        " online_eval_every=50, agent_options={'hidden_dims': [16]},"
        " method_options={'samg.cvae_steps': 100},",
        "episodes=10": "episodes=1",
    }
    for old, new in cuts.items():
        assert old in code, old
        code = code.replace(old, new)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    assert (tmp_path / "runs" / "iql-samg-sera" / "summary.json").exists()
