"""The offline-to-online pipeline: preprocessing, data policies, phases, resume, --from."""

from pathlib import Path

import jax
import numpy as np
import pytest

from o2o import data as datasets
from o2o.agents import CalQLConfig, CQLConfig, IQLConfig, TD3Config
from o2o.core.types import Transition
from o2o.errors import ConfigError
from o2o.experiment.builder import RunSpec
from o2o.experiment.pipeline import Pipeline, PipelineConfig, preprocess_for
from o2o.experiment.runs import RunDir
from tests.helpers import OfflineArrayProbe

AGENT = TD3Config(hidden_dims=(32, 32))


@pytest.fixture(scope="module")
def small_hopper():
    return datasets.load("hopper-medium-lite").select(slice(0, 3000))


def config(**kw) -> PipelineConfig:
    base = dict(
        dataset="hopper-medium-lite",
        offline_steps=400,
        online_steps=200,
        offline_chunk=100,
        offline_eval_every=200,
        online_eval_every=100,
        update_every=50,
        eval_episodes=2,
        batch_size=64,
    )
    return PipelineConfig(**{**base, **kw})


def leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_reward_conventions_and_state_normalisation(small_hopper):
    pre, name = preprocess_for(IQLConfig(), small_hopper, config())
    returns = small_hopper.episode_returns(include_incomplete=True)
    assert name == "iql_locomotion"
    assert pre.reward_scale == pytest.approx(1000.0 / (returns.max() - returns.min()))
    normalised = pre.observations(small_hopper.observations)
    np.testing.assert_allclose(normalised.mean(0), 0.0, atol=1e-3)
    assert preprocess_for(CQLConfig(), small_hopper, config())[1] == "none"
    pre, name = preprocess_for(CQLConfig(), small_hopper, config(reward_convention="antmaze_cql"))
    assert name == "antmaze_cql" and pre.rewards(np.array([0.0, 1.0])).tolist() == [-5.0, 5.0]
    pre, _ = preprocess_for(
        CQLConfig(),
        small_hopper,
        config(reward_convention="antmaze_minus_one", normalize_states=False),
    )
    assert pre.rewards(np.array([1.0])).tolist() == [0.0] and pre.obs_mean is None


@pytest.mark.parametrize("policy", ["union", "mixed", "online"])
def test_online_data_policies(small_hopper, policy):
    p = Pipeline(
        "td3",
        AGENT,
        config(data_policy=policy, offline_fraction=0.25),
        dataset=small_hopper,
    )
    data = p.online_data(capacity=500)
    n = small_hopper.size
    if policy == "union":
        assert set(data.buffers) == {"replay"} and data.write_to == "replay"
        assert (
            data.buffers["replay"].capacity == n + 500 and int(data.buffers["replay"].size[0]) == n
        )
    elif policy == "mixed":
        assert data.sampler.rows_per_source == {"offline": 16, "online": 48}
        assert (
            int(data.buffers["offline"].size[0]) == n and int(data.buffers["online"].size[0]) == 0
        )
    else:
        # Nothing of the offline data is kept for fine-tuning.
        assert set(data.buffers) == {"online"} and data.buffers["online"].capacity == 500
        assert float(np.abs(np.asarray(data.buffers["online"].data.observations)).sum()) == 0.0


def test_union_fine_tuning_holds_the_offline_data_once():
    rows, online_steps = 2351, 100  # row counts no other array in the process has
    dataset = datasets.load("hopper-medium-lite").select(slice(0, rows))
    p = Pipeline(
        "td3",
        AGENT,
        config(offline_steps=100, online_steps=online_steps, online_eval_every=100),
        dataset=dataset,
    )
    check = OfflineArrayProbe(
        [dataset.observations, dataset.actions, *[c for c in p.offline if c is not None]],
        (rows, rows + online_steps),
    )
    del dataset
    p.run(
        progress=False,
        on_online_start=check,
        on_eval=lambda row: check() if row.get("phase") == "online" else None,
    )
    assert len(check.checks) == 2
    for alive, device in check.checks:
        assert not any(alive), "the pipeline still references its offline arrays"
        # One union buffer (one array per transition field, seed axis first), no second copy.
        stored = [f for f in Transition._fields if not f.startswith("policy_")]  # a method's
        assert len(device) == len(stored), device
        assert all(shape[:2] == (1, rows + online_steps) for shape in device)


def test_calql_defaults_to_mixed_and_others_to_union(small_hopper):
    calql = CalQLConfig(actor_hidden_dims=(8,), critic_hidden_dims=(8,))
    assert Pipeline("calql", calql, config(), dataset=small_hopper).policy == "mixed"
    iql = IQLConfig(hidden_dims=(8,))
    assert Pipeline("iql", iql, config(), dataset=small_hopper).policy == "union"


def test_pipeline_logs_both_phases_with_scores(tmp_path, small_hopper):
    cfg = config(seeds=2)
    run = RunDir.create(tmp_path / "r", RunSpec("td3", AGENT, cfg).stored())
    result = Pipeline("td3", AGENT, cfg, dataset=small_hopper).run(run, progress=False)
    phases = [(r.get("phase"), r["step"]) for r in result.rows]
    assert phases == [("offline", 200), ("offline", 400), ("online", 500), ("online", 600)]
    row = result.rows[-1]
    assert len(row["seed_normalized_scores"]) == 2
    # Coverage of the states visited online (o2o.experiment.visited), 100 steps per seed.
    assert all("coverage/knn_radius" in r for r in result.rows if r["phase"] == "online")
    assert all(1 <= n <= 100 for n in row["seed_coverage/cells"])
    ref = datasets.score_reference(small_hopper)
    assert row["normalized_score"] == pytest.approx(
        float(np.mean(ref.normalize(np.array(row["seed_returns"]))))
    )
    assert (run.path / "offline.msgpack").exists()
    # Online training episodes are logged (for regret), at global steps after the offline phase.
    episodes = run.rows("episodes.jsonl")
    assert episodes and all(e["step"] > 400 for e in episodes)


def test_a_run_without_a_run_directory_returns_the_same_rows(tmp_path, small_hopper):
    """The Python API without a run directory keeps the rows in memory: the same as the
    rows a run directory gets (wall time aside)."""
    cfg = config()
    saved = Pipeline("td3", AGENT, cfg, dataset=small_hopper).run(
        RunDir.create(tmp_path / "r", RunSpec("td3", AGENT, cfg).stored()), progress=False
    )
    unsaved = Pipeline("td3", AGENT, cfg, dataset=small_hopper).run(progress=False)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "wall_time"} for r in rows]  # noqa: E731
    assert [(r["phase"], r["step"]) for r in unsaved.rows] == [
        ("offline", 200),
        ("offline", 400),
        ("online", 500),
        ("online", 600),
    ]
    assert strip(unsaved.rows) == strip(saved.rows)


class Crash(Exception):
    pass


@pytest.mark.parametrize("crash_phase, crash_step", [("offline", 200), ("online", 500)])
def test_pipeline_resume_equals_uninterrupted(tmp_path, small_hopper, crash_phase, crash_step):
    def crash(row):
        if row["step"] == crash_step:
            raise Crash

    assert_resumes_identically(
        tmp_path,
        small_hopper,
        lambda pipeline, run: pipeline.run(run, progress=False, on_eval=crash),
    )


def assert_resumes_identically(tmp_path, dataset, crashing_run):
    """``crashing_run(pipeline, run)`` raises ``Crash`` part-way; the run resumed from there
    equals an uninterrupted one: parameters, metrics rows (wall time aside), episode rows."""
    cfg = config()
    full = Pipeline("td3", AGENT, cfg, dataset=dataset).run(
        RunDir.create(tmp_path / "full", RunSpec("td3", AGENT, cfg).stored()), progress=False
    )
    run = RunDir.create(tmp_path / "crash", RunSpec("td3", AGENT, cfg).stored())
    with pytest.raises(Crash):
        crashing_run(Pipeline("td3", AGENT, cfg, dataset=dataset), run)
    resumed = Pipeline("td3", AGENT, cfg, dataset=dataset).run(run, resume=True, progress=False)
    for x, y in zip(leaves(full.states), leaves(resumed.states), strict=True):
        np.testing.assert_array_equal(x, y)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "wall_time"} for r in rows]  # noqa: E731
    assert strip(full.rows) == strip(resumed.rows)
    assert run.rows("episodes.jsonl") == RunDir(tmp_path / "full").rows("episodes.jsonl")


def test_fine_tune_from_an_offline_checkpoint(tmp_path, small_hopper):
    cfg = config()
    first = Pipeline("td3", AGENT, cfg, dataset=small_hopper).run(
        RunDir.create(tmp_path / "a", RunSpec("td3", AGENT, cfg).stored()), progress=False
    )
    from o2o.experiment.checkpoint import load_checkpoint

    loaded = load_checkpoint(tmp_path / "a" / "offline.msgpack", {"states": first.offline_states})[
        "states"
    ]
    second = Pipeline("td3", AGENT, config(offline_steps=0), dataset=small_hopper).run(
        RunDir.create(tmp_path / "b", {}),
        progress=False,
        offline_states=jax.tree.map(np.asarray, loaded),
    )
    # Same offline start and same seeds: the fine-tuned results coincide.
    for x, y in zip(leaves(first.states), leaves(second.states), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-6)


def test_invalid_pipeline_values():
    with pytest.raises(ConfigError):
        config(data_policy="both")
    with pytest.raises(ConfigError):
        config(offline_fraction=1.5)
    with pytest.raises(ConfigError):
        config(batch_size=0)


def test_cli_train_on_dataset_and_bad_inputs(tmp_path, capsys):
    from o2o.cli import main

    common = [
        "--runs-dir",
        str(tmp_path),
        "--no-progress",
        "--offline-eval-every",
        "100",
        "--online-eval-every",
        "50",
        "--eval-episodes",
        "1",
        "--batch-size",
        "32",
        "--set",
        "hidden_dims=[16]",
    ]
    assert (
        main(
            [
                "train",
                "--dataset",
                "hopper-medium-lite",
                "--algo",
                "td3",
                "--offline-steps",
                "100",
                "--online-steps",
                "50",
                "--name",
                "ok",
                *common,
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "after offline: normalized score" in out and "after online" in out
    assert (tmp_path / "ok" / "summary.json").exists()

    # Each bad input: status 2, one line on stderr, no traceback, earlier results untouched.
    before = (tmp_path / "ok" / "metrics.jsonl").read_text()
    cases = [
        ["train", "--dataset", "no-such-dataset", "--name", "x1"],
        ["train", "--dataset", str(tmp_path / "missing.hdf5"), "--name", "x2"],
        ["train", "--dataset", "hopper-medium-lite", "--algo", "nope", "--name", "x3"],
        ["train", "--dataset", "hopper-medium-lite", "--set", "critic_lr=-1", "--name", "x4"],
        ["train", "--dataset", "hopper-medium-lite", "--batch-size", "0", "--name", "x5"],
        ["train", "--dataset", "hopper-medium-lite", "--name", "ok"],  # would overwrite
        [
            "train",
            "--dataset",
            "hopper-medium-lite",
            "--from",
            str(tmp_path / "ok"),
            "--name",
            "x6",
        ],  # needs --offline-steps 0
    ]
    for argv in cases:
        assert main([*argv, "--runs-dir", str(tmp_path)]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, (argv, err)
    assert (tmp_path / "ok" / "metrics.jsonl").read_text() == before
    assert not Path(tmp_path / "x1").exists()


@pytest.mark.parametrize("instant", ["after_phase_switch", "after_first_online_episode"])
def test_kill_before_the_first_online_checkpoint_resumes_identically(
    tmp_path, small_hopper, monkeypatch, instant
):
    """Killed after phase.json says online (the offline checkpoint must already be gone), or
    after an online episode row but before any online checkpoint: the resumed run's rows and
    parameters equal an uninterrupted run's."""
    from o2o.experiment import pipeline as pipeline_module

    if instant == "after_phase_switch":
        set_phase = pipeline_module._set_phase

        def killed(run, phase, step):
            set_phase(run, phase, step)
            if phase == "online":
                raise Crash

        target = (pipeline_module, "_set_phase", killed)
    else:
        append = RunDir.append

        def killed(self, filename, row):
            append(self, filename, row)
            if filename == "episodes.jsonl":
                raise Crash

        target = (RunDir, "append", killed)

    def crashing_run(pipeline, run):
        with monkeypatch.context() as patch:
            patch.setattr(*target)
            pipeline.run(run, progress=False)

    assert_resumes_identically(tmp_path, small_hopper, crashing_run)


def test_default_evaluation_intervals_follow_the_budget():
    """About ten evaluations per phase (offline a multiple of the 1,000-step chunk), never
    sparser than every 25k offline / 10k online steps; worked out by hand."""
    from o2o.experiment.pipeline import budget_eval_intervals

    assert budget_eval_intervals(1_000_000, 500_000) == (25_000, 10_000)  # long runs: as before
    assert budget_eval_intervals(60_000, 20_000) == (6_000, 2_000)
    assert budget_eval_intervals(5_000, 5_000) == (1_000, 500)  # the chunk / 500 floors
    assert budget_eval_intervals(0, 1_234) == (1_000, 500)
    assert budget_eval_intervals(123_456, 77_777) == (12_000, 7_750)
    for offline, online in [(0, 0), (999, 49), (250_000, 100_000), (31_000, 9_999)]:
        every = budget_eval_intervals(offline, online)
        # valid with the default 1,000-step offline chunk
        PipelineConfig(dataset="d", offline_eval_every=every[0], online_eval_every=every[1])
