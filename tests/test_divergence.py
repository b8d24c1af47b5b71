"""The divergence guard (issue 19): a run whose parameters stop being finite, or whose loss
passes the bound, stops with one ``error: ...`` line (exit 2) naming the phase, the step, the
loss and the last good checkpoint, which stays bit-identical: nothing of the diverged state
is written. Offline, online, a method's phase (SAMG's C-VAE fit), the on-policy rollout path
and suites; ``o2o report``'s aggregates leave a NaN run out."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml

from o2o import data as datasets
from o2o.cli import main
from o2o.errors import DivergenceError
from o2o.experiment.divergence import DivergenceGuard
from o2o.experiment.runs import RunDir
from tests.helpers import tiny_pipeline

TINY = [
    "--dataset", "hopper-medium-lite", "--algo", "td3", "--set", "hidden_dims=[16]",
    "--batch-size", "32", "--eval-episodes", "1", "--update-every", "50", "--no-progress",
]  # fmt: skip


def invoke(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exit_:
        return int(exit_.code)


def files(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def assert_strict_json(path: Path) -> None:
    """Every JSON file below ``path`` parses without NaN/Infinity."""

    def refuse(constant: str):
        raise AssertionError(f"{constant} in a JSON file")

    for file in path.rglob("*.json*"):
        for line in (
            file.read_text().splitlines() if file.suffix == ".jsonl" else [file.read_text()]
        ):
            if line.strip():
                json.loads(line, parse_constant=refuse)


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: training diverged"), err
    return err[0]


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    """A healthy tiny run: offline only, its offline checkpoint a good start."""
    runs = tmp_path_factory.mktemp("divergence")
    argv = [*TINY, "--offline-steps", "100", "--offline-eval-every", "100", "--online-steps", "0"]
    assert invoke(["train", *argv, "--runs-dir", str(runs), "--name", "good"]) == 0
    return runs / "good"


def test_exploding_learning_rates_stop_online_and_keep_the_good_checkpoint(good, capsys):
    """The issue's case: --set actor_lr=1e3 --set critic_lr=1e3 (critic loss 4.7e27, exit 0
    before) stops at the first online update call past the bound."""
    runs = good.parent
    before = files(good)
    argv = [*TINY, "--from", str(good), "--offline-steps", "0", "--online-steps", "200"]
    argv += ["--online-eval-every", "100", "--set", "actor_lr=1e3", "--set", "critic_lr=1e3"]
    capsys.readouterr()
    assert invoke(["train", *argv, "--runs-dir", str(runs), "--name", "lr"]) == 2
    line = one_error_line(capsys)
    assert "online phase at step 50" in line and "critic_loss" in line, line
    assert f"{runs / 'lr' / 'offline.msgpack'} (offline phase)" in line, line
    assert files(good) == before
    # The start it fine-tuned is kept as loaded, and no online checkpoint was written.
    assert (runs / "lr" / "offline.msgpack").read_bytes() == before["offline.msgpack"]
    assert not (runs / "lr" / "checkpoint.msgpack").exists()
    assert not (runs / "lr" / "summary.json").exists()
    assert_strict_json(runs / "lr")


def poisoned(update, after: int):
    """``update`` whose every floating array turns NaN once the agent's step passes ``after``."""

    def run(state, batch, key):
        state, metrics = update(state, batch, key)
        poison = state.step > after
        return jax.tree.map(
            lambda x: jnp.where(poison, jnp.nan, x) if jnp.issubdtype(x.dtype, jnp.inexact) else x,
            state,
        ), metrics

    return run


def test_nan_offline_stops_before_overwriting_the_checkpoint(tmp_path, monkeypatch):
    """NaN parameters at step 150: the row and checkpoint of step 200 are never written; the
    checkpoint of step 100 stays bit-identical, offline.msgpack is not written."""
    from o2o.core.engine import Phase
    from o2o.experiment.pipeline import Pipeline

    offline_phase = Pipeline.offline_phase

    def nan_after_150(self):
        phase = offline_phase(self)
        return Phase(phase.name, phase.steps, poisoned(phase.update, 150), evaluate=True)

    monkeypatch.setattr(Pipeline, "offline_phase", nan_after_150)
    dataset = datasets.load("hopper-medium-lite").select(slice(0, 1000))
    pipeline = tiny_pipeline(dataset, "vanilla", offline_steps=300, online_steps=0)
    run = RunDir.create(tmp_path / "run", {})
    saved = {}
    with pytest.raises(DivergenceError, match="offline phase at step 200: NaN parameters") as error:
        pipeline.run(run, progress=False, on_eval=lambda row: saved.update(files(run.path)))
    assert str(run.checkpoint_path) in str(error.value)
    assert [row["step"] for row in run.rows()] == [100]
    assert files(run.path) == saved  # the checkpoint of step 100, bit for bit
    assert not (run.path / "offline.msgpack").exists()


def test_nan_in_samg_cvae_fit_keeps_the_offline_checkpoint(good, capsys):
    runs = good.parent
    argv = [*TINY, "--from", str(good), "--offline-steps", "0", "--online-steps", "100"]
    argv += ["--finetune", "samg", "--method-set", "cvae_steps=100", "--method-set", "cvae_lr=1e30"]
    argv += ["--method-set", "encoder_hidden_dims=[16]", "--method-set", "decoder_hidden_dims=[16]"]
    capsys.readouterr()
    assert invoke(["train", *argv, "--runs-dir", str(runs), "--name", "cvae"]) == 2
    line = one_error_line(capsys)
    assert "samg_cvae phase at step 100: NaN parameters" in line, line
    assert (runs / "cvae" / "offline.msgpack").read_bytes() == (
        good / "offline.msgpack"
    ).read_bytes()
    assert not (runs / "cvae" / "finetune_start.msgpack").exists()
    assert_strict_json(runs / "cvae")


def test_the_rollout_path_is_guarded(tmp_path):
    from tests.test_rollout import ActorCritic, small_config, train

    run = RunDir.create(tmp_path / "run", {})
    with pytest.raises(DivergenceError, match=r"online phase at step \d+: NaN parameters"):
        train(ActorCritic(actor_lr=1e30, critic_lr=1e30), small_config(), run=run)
    assert not run.has_checkpoint()


def test_the_bound_stops_a_finite_loss_and_names_it():
    guard = DivergenceGuard(max_loss=100.0)
    metrics = {"critic_loss": np.array([5.0, 500.0]), "actor_loss": np.array([np.nan, 1.0])}
    with pytest.raises(DivergenceError, match=r"at step 7: critic_loss 500 \(bound 100\)"):
        guard.check(np.array([False, False]), metrics, "offline", 7, None)
    # NaN losses alone (TD3's critic-only steps) and values other than losses pass.
    guard.check(
        np.array([False]), {"actor_loss": np.array([np.nan]), "q": np.array([1e30])}, "x", 1, None
    )


def test_a_diverged_suite_run_is_reported_and_the_others_run(tmp_path, capsys):
    suite = {
        "name": "diverging", "datasets": ["hopper-medium-lite"], "algos": ["td3", "td3bc"],
        "methods": ["vanilla"], "seeds": 1, "offline_steps": 100, "online_steps": 0,
        "eval_episodes": 1, "pipeline": {"batch_size": 32},
        "agent_overrides": {"td3": {"hidden_dims": [16], "critic_lr": 1e30},
                            "td3bc": {"hidden_dims": [16]}},
    }  # fmt: skip
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(suite))
    out = tmp_path / "results"
    code = invoke(["bench", "run", str(tmp_path / "suite.yaml"), "--out", str(out), "--quiet"])
    captured = capsys.readouterr()
    assert code == 2
    assert (
        "td3 vanilla: DIVERGED (training diverged in the offline phase at step 100" in captured.out
    )
    assert (out / "hopper-medium-lite" / "td3bc" / "vanilla" / "summary.json").exists()
    assert len(captured.err.strip().splitlines()) == 1
    assert "1 of 2 configurations failed" in captured.err


def test_report_aggregates_leave_a_nan_run_out(tmp_path):
    from o2o.analysis.results import RunResult
    from o2o.analysis.statistics import aggregate_statistics

    def result(dataset: str, scores: list) -> RunResult:
        summary = {"offline_scores": scores, "online_scores": scores}
        return RunResult(tmp_path / dataset, dataset, "td3", "vanilla", {}, summary, [], [], [])

    healthy = [result("hopper", [50.0, 60.0, 70.0]), result("walker", [40.0, 50.0, 60.0])]
    (alone,) = aggregate_statistics(healthy, reps=50)
    (with_nan,) = aggregate_statistics([*healthy, result("cheetah", [None, 1.0, 2.0])], reps=50)
    assert with_nan.tasks == alone.tasks == ("hopper", "walker")
    for name in ("iqm", "mean", "optimality_gap"):
        got, want = getattr(with_nan, name), getattr(alone, name)
        assert got.point == want.point and np.isfinite([got.low, got.high]).all(), name


def test_a_method_event_turning_the_states_nan_stops_before_the_online_checkpoint(tmp_path):
    """Method events change the states outside the checked update call: a NaN they make is
    caught before the evaluation's row and checkpoint."""
    from o2o.finetune import REGISTRY, Method, register
    from tests.test_method_seam import NoOptions

    class NanOnEvaluation(Method):
        name = "nan-event"
        config_class = NoOptions
        slots = frozenset({"events"})

        def init_state(self, agent, agent_state, key, preprocess):
            return {"value": jnp.float32(0.0)}

        def on_evaluation(self, agent, step, states, row, seed):
            nan = jnp.full_like(states.extras[self.name]["value"], jnp.nan)
            extras = {**states.extras, self.name: {"value": nan}}
            return states.replace(extras=extras), []

    register(NanOnEvaluation)
    try:
        dataset = datasets.load("hopper-medium-lite").select(slice(0, 500))
        pipeline = tiny_pipeline(dataset, "nan-event", online_steps=100, online_eval_every=50)
        run = RunDir.create(tmp_path / "run", {})
        with pytest.raises(DivergenceError, match="online phase at step 150: NaN parameters"):
            pipeline.run(run, progress=False)
    finally:
        del REGISTRY["nan-event"]
    assert not [row for row in run.rows() if row["phase"] == "online"]
    assert not run.has_checkpoint()  # the offline one went at the switch; no online one
