"""Fault injection, the clean-failure part of issue 19: bad names, bad values, unreadable and
corrupt files, checkpoints of another version and a full disk each end in one ``error: ...``
line with status 2 and no traceback, leave every file that was there unchanged, and leave no
new file behind (a run directory only where a full disk stopped a started run).

Also here: temp files of interrupted writes are removed when a run is opened, strict JSON
(``null`` for values that are not finite) is written and read back, an offline evaluation
interval shorter than a fused call is kept exactly, and a checkpoint committed under
``tests/data`` still loads (a change that breaks old checkpoints must bump the schema)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import jax
import numpy as np
import pytest
import yaml
from flax import serialization

from o2o.cli import main
from o2o.errors import DiskFullError, O2OError
from o2o.experiment import checkpoint as checkpoint_module
from o2o.experiment.checkpoint import FORMAT_KEY, SCHEMA, atomic_write_bytes, load_checkpoint
from o2o.experiment.runs import RunDir

DATA = Path(__file__).parent / "data"
TINY = ["--no-progress", "--eval-episodes", "1", "--batch-size", "32", "--set", "hidden_dims=[8]"]
TRAIN = [
    "train", "--dataset", "hopper-medium-lite", "--algo", "td3", *TINY,
    "--offline-steps", "100", "--online-steps", "0", "--offline-eval-every", "100",
]  # fmt: skip
SUITE = {
    "name": "faults",
    "datasets": ["hopper-medium-lite"],
    "algos": ["td3bc"],
    "methods": ["vanilla"],
    "seeds": 1,
    "offline_steps": 100,
    "online_steps": 0,
}


def invoke(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exit_:  # argument errors exit from the parser
        return int(exit_.code)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A directory holding ``runs/ok``, a finished tiny run every case must leave alone."""
    root = tmp_path_factory.mktemp("faults")
    assert invoke([*TRAIN, "--runs-dir", str(root / "runs"), "--name", "ok"]) == 0
    return root


def untimed(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "wall_time"} for row in rows]


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file below ``root`` (but the unreadable datasets of the cases) and its bytes."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.stat().st_mode & 0o444
    }


# --- what cases set up before they run (case: this case's own directory) --------------------
def write_dataset(path: Path, **changes: Any) -> Path:
    """A small valid Hopper-v5 file in the D4RL layout, with ``changes`` to its columns."""
    rng = np.random.default_rng(0)
    n = 50
    columns = {
        "observations": rng.normal(size=(n, 11)).astype(np.float32),
        "actions": rng.uniform(-1, 1, (n, 3)).astype(np.float32),
        "rewards": rng.normal(size=n).astype(np.float32),
        "next_observations": rng.normal(size=(n, 11)).astype(np.float32),
        "terminals": np.zeros(n, bool),
        "timeouts": np.arange(n) == n - 1,
    }
    for key, (row, value) in changes.items():
        columns[key][row] = value
    with h5py.File(path, "w") as handle:
        for key, value in columns.items():
            handle.create_dataset(key, data=value)
        handle.create_group("metadata").attrs["env_id"] = "Hopper-v5"
    return path


def unreadable_dataset(case: Path, runs: Path, monkeypatch) -> None:
    path = write_dataset(case / "data.hdf5")
    path.chmod(0)
    if os.geteuid() == 0:  # root reads anything: do what the library does for other users
        real = h5py.is_hdf5

        def is_hdf5(name):
            if Path(name) == path:
                raise PermissionError(errno.EACCES, "Permission denied", str(name))
            return real(name)

        monkeypatch.setattr(h5py, "is_hdf5", is_hdf5)


def huge_reward(case: Path, runs: Path, monkeypatch) -> None:
    write_dataset(case / "data.hdf5", rewards=(7, 3e38))


def huge_observation(case: Path, runs: Path, monkeypatch) -> None:
    write_dataset(case / "data.hdf5", observations=(3, 1e30))


def suite_file(**changes: Any):
    def setup(case: Path, runs: Path, monkeypatch) -> None:
        (case / "suite.yaml").write_text(yaml.safe_dump({**SUITE, **changes}, sort_keys=False))
        monkeypatch.chdir(case)  # where a suite without --out writes (runs/<name>)

    return setup


def suite_with_duplicate_key(case: Path, runs: Path, monkeypatch) -> None:
    (case / "suite.yaml").write_text(yaml.safe_dump(SUITE, sort_keys=False) + "seeds: 2\n")


def file_named(name: str):
    def setup(case: Path, runs: Path, monkeypatch) -> None:
        (runs / name).write_text("not a run\n")

    return setup


def corrupt_summary(case: Path, runs: Path, monkeypatch) -> None:
    shutil.copytree(runs / "ok", case / "results" / "ok")
    (case / "results" / "ok" / "summary.json").write_text('{"dataset": "hopper')


def set_checkpoint_version(path: Path, version: dict | None) -> None:
    """Rewrite the checkpoint at ``path`` with ``version`` as its format entry (None: none,
    as before checkpoints were versioned)."""
    state_dict = serialization.msgpack_restore(path.read_bytes())
    state_dict.pop(FORMAT_KEY)
    if version is not None:
        state_dict[FORMAT_KEY] = version
    path.write_bytes(serialization.msgpack_serialize(state_dict))


def run_with_checkpoint(name: str, version: dict | None = None, payload: bytes | None = None):
    """A copy of ``runs/ok`` as ``runs/<name>`` whose offline.msgpack carries ``version`` (or
    is ``payload``)."""

    def setup(case: Path, runs: Path, monkeypatch) -> None:
        shutil.copytree(runs / "ok", runs / name)
        if payload is not None:
            (runs / name / "offline.msgpack").write_bytes(payload)
        else:
            set_checkpoint_version(runs / name / "offline.msgpack", version)

    return setup


NEWER = {"schema": SCHEMA + 1, "o2o_version": "99.0"}


def full_disk_at(target: str):
    """The low-level write of any file whose name contains ``target`` writes half of its
    first chunk, then fails with ENOSPC (what a filling disk does)."""

    def setup(case: Path, runs: Path, monkeypatch) -> None:
        real = os.write
        partial: set[int] = set()

        def write(fd: int, data) -> int:
            name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
            if target not in name:
                return real(fd, data)
            if fd not in partial and len(data) > 1:
                partial.add(fd)
                return real(fd, bytes(data[: len(data) // 2]))
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(os, "write", write)

    return setup


def no_gl(case: Path, runs: Path, monkeypatch) -> None:
    """Offscreen rendering fails as it does where MUJOCO_GL's library is missing (osmesa
    here: PyOpenGL finds no GL functions); tests/test_run_commands.py runs it for real."""
    from o2o import run_commands

    def broken(env):
        raise AttributeError("'NoneType' object has no attribute 'glGetError'")

    monkeypatch.setattr(run_commands, "_frame", broken)


@dataclass(frozen=True)
class Case:
    argv: list[str]  # {runs}: the runs directory holding runs/ok; {case}: this case's own
    fragment: str  # expected in the one error line
    setup: Any = None
    leaves: str | None = None  # a run directory (under runs) the failure may leave

    def command(self, runs: Path, case: Path) -> list[str]:
        return [a.format(runs=runs, case=case) for a in self.argv]


R = ["--runs-dir", "{runs}"]
BENCH = ["bench", "run", "{case}/suite.yaml", "--out", "{case}/out"]
SAMG_ON_UNION = ["--finetune", "samg", "--data-policy", "union"]
CASES = {
    # names and paths: a run name is one directory name inside --runs-dir
    "name-parent": Case([*TRAIN, *R, "--name", "../escaped"], "single directory name"),
    "name-absolute": Case([*TRAIN, *R, "--name", "{case}/abs"], "single directory name"),
    "name-slash": Case([*TRAIN, *R, "--name", "a/b"], "single directory name"),
    "name-dotdot": Case([*TRAIN, *R, "--name", ".."], "single directory name"),
    "name-is-a-file": Case([*TRAIN, *R, "--name", "plain"], "not a directory", file_named("plain")),
    "resume-name-parent": Case(["train", "--resume", *R, "--name", "../runs/ok"], "single directory name"),
    "name-taken": Case([*TRAIN, *R, "--name", "ok"], "already exists"),
    "suite-label-parent": Case(BENCH, "suite method label", suite_file(methods=[{"samg": {"label": "../../x"}}])),
    "suite-name-parent": Case(["bench", "run", "{case}/suite.yaml"], "suite name", suite_file(name="../../x")),
    "suite-dataset-parent": Case(BENCH, "suite dataset directory", suite_file(datasets=[".."])),
    # a failed setup leaves no run directory holding only config.yaml
    "setup-fails-in-pipeline": Case([*TRAIN, *R, *SAMG_ON_UNION, "--name", "setup"], "data policy"),
    "setup-fails-loading-from": Case([*TRAIN, *R, "--offline-steps", "0", "--from", "{case}/none", "--name", "from"], "checkpoint not found"),
    # tracebacks of issue 19
    "dataset-unreadable": Case([*TRAIN, *R, "--dataset", "{case}/data.hdf5", "--name", "u"], "permission denied", unreadable_dataset),
    "datasets-info-unreadable": Case(["datasets", "info", "{case}/data.hdf5"], "permission denied", unreadable_dataset),
    "set-tuple-word": Case([*TRAIN, *R, "--set", "hidden_dims=abc"], "expects a list of integers"),
    "set-tuple-number": Case([*TRAIN, *R, "--set", "hidden_dims=64"], "expects a list of integers"),
    "set-tuple-negative": Case([*TRAIN, *R, "--set", "hidden_dims=[64,-1]"], "positive widths"),
    "set-tuple-float": Case([*TRAIN, *R, "--set", "hidden_dims=[64,1.5]"], "expects a list of integers"),
    "set-not-yaml": Case([*TRAIN, *R, "--set", "hidden_dims=[8"], "is not a value"),
    "set-number-list": Case([*TRAIN, *R, "--set", "actor_lr=[1]"], "expects a number"),
    "set-bool-number": Case([*TRAIN, *R, "--set", "critic_layer_norm=2"], "expects true or false"),
    "method-set-list": Case([*TRAIN, *R, "--finetune", "samg", "--method-set", "threshold=[1]"], "expects a number"),
    "suite-overrides-list": Case(BENCH, "must map option names", suite_file(agent_overrides={"td3bc": [1, 2]})),
    "suite-method-options-list": Case(BENCH, "options must be a mapping", suite_file(methods=[{"samg": [1]}])),
    "suite-override-type": Case(BENCH, "expects a list of integers", suite_file(agent_overrides={"td3bc": {"hidden_dims": "abc"}})),
    "suite-method-range": Case(BENCH, "threshold must be in [0, 1]", suite_file(methods=[{"samg": {"threshold": 5}}])),
    "suite-pipeline-type": Case(BENCH, "'batch_size' expects an integer", suite_file(pipeline={"batch_size": "abc"})),
    "suite-agent-set-not-yaml": Case([*BENCH, "--agent-set", "td3bc.alpha=[1"], "is not a value", suite_file()),
    "report-corrupt-summary": Case(["report", "{case}/results"], "ok/summary.json: corrupt summary.json", corrupt_summary),
    "datasets-unknown": Case(["datasets", "info", "no-such-dataset"], "unknown dataset"),
    "datasets-bad-command": Case(["datasets", "bogus"], "invalid choice"),
    "datasets-make-unknown": Case(["datasets", "make", "nope"], "cannot make 'nope'"),
    "datasets-missing-argument": Case(["datasets", "info"], "required"),
    # silent surprises
    "offline-eval-not-multiple": Case([*TRAIN, *R, "--offline-steps", "3000", "--offline-eval-every", "1500"], "must be a multiple of offline_chunk"),
    "suite-duplicate-key": Case(BENCH, "duplicate key 'seeds'", suite_with_duplicate_key),
    "reward-beyond-limit": Case([*TRAIN, *R, "--dataset", "{case}/data.hdf5", "--name", "r"], "'rewards' has values beyond ±1e+06", huge_reward),
    "observation-beyond-limit": Case(["datasets", "info", "{case}/data.hdf5"], "'observations' has values beyond ±1e+06", huge_observation),
    # checkpoints of another version
    "checkpoint-newer-resume": Case(["train", "--resume", *R, "--name", "newer"], "newer than this o2o", run_with_checkpoint("newer", NEWER)),
    "checkpoint-newer-from": Case([*TRAIN, *R, "--offline-steps", "0", "--from", "{runs}/newer2", "--name", "f2"], "upgrade o2o", run_with_checkpoint("newer2", NEWER)),
    "checkpoint-bad-schema": Case(["train", "--resume", *R, "--name", "odd"], "incompatible with this o2o", run_with_checkpoint("odd", {"schema": "x"})),
    "checkpoint-corrupt": Case(["train", "--resume", *R, "--name", "corrupt"], "corrupt checkpoint", run_with_checkpoint("corrupt", payload=b"\x93not msgpack")),
    # a full disk: one line, nothing half-written, earlier files intact
    "disk-full-config": Case([*TRAIN, *R, "--name", "full0"], "no space left", full_disk_at("config.yaml")),
    "disk-full-row": Case([*TRAIN, *R, "--name", "full1"], "no space left", full_disk_at("metrics.jsonl"), leaves="full1"),
    "disk-full-checkpoint": Case([*TRAIN, *R, "--name", "full2"], "no space left", full_disk_at("checkpoint.msgpack"), leaves="full2"),
    "disk-full-summary": Case([*TRAIN, *R, "--name", "full3"], "no space left", full_disk_at("summary.json"), leaves="full3"),
    # No option is ignored: one of the other mode is refused; close names get a suggestion.
    "dataset-with-steps": Case([*TRAIN, *R, "--steps", "10", "--name", "m1"], "--steps applies to online training from scratch"),
    "dataset-with-eval-every": Case([*TRAIN, *R, "--eval-every", "10", "--name", "m2"], "--eval-every applies to online"),
    "dataset-with-env": Case([*TRAIN, *R, "--env", "Hopper-v5", "--name", "m3"], "--env applies to online"),
    "dataset-with-random-steps": Case([*TRAIN, *R, "--random-steps", "5", "--name", "m4"], "--random-steps applies"),
    "env-with-finetune": Case(["train", "--env", "Pendulum-v1", *R, "--finetune", "samg", "--name", "m5"], "--finetune applies to --dataset runs"),
    "env-with-method-set": Case(["train", *R, "--method-set", "threshold=0.4", "--name", "m6"], "--method-set applies to --dataset runs"),
    "env-with-offline-steps": Case(["train", *R, "--offline-steps", "5", "--name", "m7"], "--offline-steps applies"),
    "env-with-data-policy": Case(["train", *R, "--data-policy", "mixed", "--name", "m8"], "--data-policy applies"),
    "env-with-from": Case(["train", *R, "--from", "{runs}/ok", "--name", "m9"], "--from applies"),
    "env-with-two": Case(["train", *R, "--online-steps", "5", "--no-normalize-states", "--name", "m10"], "--online-steps, --no-normalize-states apply"),
    "dataset-close-name": Case([*TRAIN, *R, "--dataset", "hopper-medium", "--name", "d1"], "'hopper-medium-lite'"),
    "algo-close-name": Case([*TRAIN, *R, "--algo", "iqll", "--name", "d2"], "did you mean 'iql'?"),
    "method-close-name": Case([*TRAIN, *R, "--finetune", "smag", "--name", "d3"], "did you mean 'samg'?"),
    "log-unknown-sink": Case([*TRAIN, *R, "--log", "csv,tensorbord", "--name", "d4"], "did you mean 'tensorboard'?"),
    "log-missing-extra": Case([*TRAIN, *R, "--log", "tensorboard", "--name", "d5"], "pip install 'o2o-rl[tensorboard]'", lambda case, runs, mp: mp.setitem(sys.modules, "tensorboardX", None)),
    "command-close-name": Case(["evl", "{runs}/ok"], "did you mean 'eval'?"),
    # The commands that read runs.
    "eval-not-a-run": Case(["eval", "{case}"], "not a run directory"),
    "eval-bad-seed": Case(["eval", "{runs}/ok", "--seed", "7"], "seed 7 is not a seed of this run"),
    "eval-bad-episodes": Case(["eval", "{runs}/ok", "--episodes", "0"], "episodes must be positive"),
    "record-bad-suffix": Case(["record", "{runs}/ok", "--out", "{case}/v.avi"], "must end in .mp4 or .gif"),
    "record-existing-out": Case(["record", "{runs}/ok", "--out", "{runs}/old.gif"], "exists", file_named("old.gif")),
    "record-no-ffmpeg": Case(["record", "{runs}/ok", "--out", "{case}/v.mp4"], "needs imageio-ffmpeg", lambda case, runs, mp: mp.setitem(sys.modules, "imageio_ffmpeg", None)),
    "record-no-gl": Case(["record", "{runs}/ok", "--out", "{case}/v.gif"], "cannot render", no_gl),
    "runs-list-missing": Case(["runs", "list", "{case}/nothing"], "is not a directory"),
    "runs-no-command": Case(["runs"], "o2o runs"),
    "plot-not-a-dir": Case(["plot", "{case}/nothing"], "is not a directory"),
    "plot-no-runs": Case(["plot", "{case}"], "no run directories"),
    "plot-bad-key": Case(["plot", "{runs}/ok", "--key", "loss", "--out", "{case}/c.png"], "--key must be"),
}  # fmt: skip


@pytest.mark.parametrize("name", CASES)
def test_bad_input_is_one_line_and_changes_nothing(name, root, monkeypatch, capsys):
    case_spec = CASES[name]
    runs, case = root / "runs", root / "cases" / name
    case.mkdir(parents=True)
    if case_spec.setup is not None:
        case_spec.setup(case, runs, monkeypatch)
    before = snapshot(root)
    capsys.readouterr()

    status = invoke(case_spec.command(runs, case))

    monkeypatch.undo()  # the full disk and unreadable files end with the command
    err = capsys.readouterr().err.strip()
    assert status == 2, err
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    assert case_spec.fragment in err, err
    after = snapshot(root)
    assert {k: v for k, v in after.items() if k in before} == before, "earlier files changed"
    new = sorted(set(after) - set(before))
    left = f"runs/{case_spec.leaves}/" if case_spec.leaves else None
    assert all(left and path.startswith(left) for path in new), new
    if left:
        check_nothing_half_written(runs / case_spec.leaves)


def check_nothing_half_written(path: Path) -> None:
    """Every row is whole JSON, every checkpoint loads, no temp file is left."""
    for file in path.iterdir():
        assert not file.name.endswith(".tmp"), file
        if file.suffix == ".jsonl":
            for line in file.read_text().splitlines():
                json.loads(line)
        if file.suffix == ".msgpack":
            serialization.msgpack_restore(file.read_bytes())


@pytest.mark.parametrize(
    "write",
    [
        lambda path: RunDir(path.parent).append(path.name, {"step": 2, "return": 1.0}),
        lambda path: atomic_write_bytes(path, b'{"step": 2}\n' * 1000),
    ],
    ids=["row", "atomic"],
)
def test_full_disk_leaves_the_file_as_it_was(tmp_path, monkeypatch, write):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n')
    full_disk_at("metrics.jsonl")(tmp_path, tmp_path, monkeypatch)
    with pytest.raises(DiskFullError, match="no space left on device while writing"):
        write(path)
    monkeypatch.undo()
    assert path.read_text() == '{"step": 1}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]  # no temp file


def test_a_run_stopped_by_a_full_disk_resumes(root, monkeypatch):
    runs = root / "runs"
    full_disk_at("checkpoint.msgpack")(root, runs, monkeypatch)
    assert invoke([*TRAIN, "--runs-dir", str(runs), "--name", "resumed"]) == 2
    monkeypatch.undo()
    assert invoke(["train", "--resume", "--runs-dir", str(runs), "--name", "resumed"]) == 0
    ok, resumed = RunDir(runs / "ok"), RunDir(runs / "resumed")
    assert untimed(resumed.rows()) == untimed(ok.rows())


def test_failed_setup_frees_the_name(root, capsys):
    runs = root / "runs"
    assert invoke([*TRAIN, "--runs-dir", str(runs), *SAMG_ON_UNION, "--name", "again"]) == 2
    assert not (runs / "again").exists()
    assert invoke([*TRAIN, "--runs-dir", str(runs), "--name", "again"]) == 0


def test_a_run_killed_during_setup_resumes(root):
    """A kill before training leaves only config.yaml (and maybe a temp file): --resume runs."""
    runs = root / "runs"
    (runs / "killed").mkdir()
    shutil.copy(runs / "ok" / "config.yaml", runs / "killed" / "config.yaml")
    (runs / "killed" / ".metrics.jsonl.abcd_123.tmp").write_text('{"step": 1')
    assert invoke(["train", "--resume", "--runs-dir", str(runs), "--name", "killed"]) == 0
    assert untimed(RunDir(runs / "killed").rows()) == untimed(RunDir(runs / "ok").rows())
    assert not list((runs / "killed").glob("*.tmp"))


def test_temp_files_of_interrupted_writes_are_removed_when_a_run_opens(tmp_path):
    temp = ".checkpoint.msgpack.k2j4_x9a.tmp"  # atomic_write_bytes's name for a temp file
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("a: 1\n")
    for name in (temp, ".metrics.jsonl.0a1b2c3d.tmp", "notes.tmp", ".other.abcdefgh.tmp"):
        (run / name).write_text("partial")
    with pytest.raises(O2OError, match="already exists"):
        RunDir.create(run, {"a": 1})  # refused: nothing is touched
    assert (run / temp).exists()
    RunDir.create(run, {}, resume=True)
    assert sorted(p.name for p in run.iterdir()) == [
        ".other.abcdefgh.tmp",
        "config.yaml",
        "notes.tmp",
    ]
    # A directory holding only such leftovers is as good as empty for a new run.
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / temp).write_text("partial")
    RunDir.create(fresh, {"a": 2})
    assert [p.name for p in fresh.iterdir()] == ["config.yaml"]


def test_every_file_holds_strict_json_and_readers_take_null(root, tmp_path, capsys):
    run = RunDir(tmp_path / "results" / "nan")
    shutil.copytree(root / "runs" / "ok", run.path)
    row = run.rows()[0]
    broken = {**row, "return": float("nan"), "seed_returns": [float("inf")]}
    broken.update(normalized_score=float("-inf"), seed_normalized_scores=[float("nan")])
    run.truncate_after(0, phase="offline")
    run.append("metrics.jsonl", broken)
    run.write_summary({**run.summary(), "final_offline": broken, "offline_scores": [np.nan]})

    def strict(text: str) -> Any:
        return json.loads(text, parse_constant=lambda word: pytest.fail(f"bare {word}"))

    written = strict(run.path.joinpath("metrics.jsonl").read_text())
    assert written["return"] is None and written["seed_returns"] == [None]
    assert strict(run.path.joinpath("summary.json").read_text())["offline_scores"] == [None]
    assert invoke(["report", str(tmp_path / "results"), "--reps", "10"]) == 0, capsys.readouterr()


def test_readers_take_null_as_nan():
    from o2o.analysis.diagnostics import diagnostic_series, kl_curve
    from o2o.analysis.results import RunResult
    from o2o.experiment.builder import score_line

    row = {"phase": "online", "step": 1, "return": None, "normalized_score": None}
    row.update({"seed_normalized_scores": [None], "train/samg/p_mean": None})
    fit = {"phase": "samg_cvae", "step": 1, "train/samg/cvae_kl": None}
    result = RunResult(Path("r"), "d", "iql", "samg", {}, None, [row], [], [], [fit])
    assert np.isnan(kl_curve(result)[1]).all()
    result = RunResult(Path("r"), "d", "iql", "samg", {}, None, [row], [], [])
    result.finetune.append({"phase": "samg_fit", "cvae_step": 1, "kl": None})
    assert np.isnan(kl_curve(result)[1]).all()
    assert np.isnan(diagnostic_series(result, "online", "train/samg/p_mean")[1]).all()
    assert score_line(row, 1).startswith("normalized score nan")


def test_offline_eval_interval_shorter_than_a_fused_call_is_kept(tmp_path):
    argv = [*TRAIN, "--offline-steps", "300", "--offline-eval-every", "100"]
    assert invoke([*argv, "--runs-dir", str(tmp_path), "--name", "r"]) == 0
    assert [r["step"] for r in RunDir(tmp_path / "r").rows()] == [100, 200, 300]


def committed_template() -> tuple[Any, Any]:
    """The run that wrote ``tests/data/offline-schema1-td3.msgpack`` (its config is beside
    it) and the offline states its pipeline builds today."""
    from o2o import data as datasets
    from o2o.experiment.builder import RunSpec

    spec = RunSpec.from_stored(
        yaml.safe_load((DATA / "offline-schema1-td3.config.yaml").read_text())
    )
    pipeline = spec.build(datasets.load(spec.pipeline.dataset).select(slice(0, 2000)))
    return pipeline, pipeline.initial_states()[0]


def test_a_checkpoint_committed_by_schema_1_loads(tmp_path):
    """Written by ``o2o train`` (TD3, hidden_dims [8], 100 offline steps on hopper-medium-lite,
    the config beside it) with schema 1. If this fails, checkpoints of earlier runs no longer
    load: bump ``checkpoint.SCHEMA``, keep this file, and say in the README what reads it."""
    from o2o.experiment.builder import load_offline_states

    path = DATA / "offline-schema1-td3.msgpack"
    raw = serialization.msgpack_restore(path.read_bytes())
    assert raw[FORMAT_KEY]["schema"] == 1
    pipeline, template = committed_template()
    states = serialization.to_state_dict(load_offline_states(pipeline, path))
    jax.tree.map(np.testing.assert_array_equal, states, raw["states"])
    # Written before checkpoints were versioned (no format entry): loads by its structure.
    unversioned = tmp_path / "old.msgpack"
    shutil.copy(path, unversioned)
    set_checkpoint_version(unversioned, None)
    load_checkpoint(unversioned, {"states": template})
    # A schema from the future is refused in one line.
    shutil.copy(path, tmp_path / "new.msgpack")
    set_checkpoint_version(tmp_path / "new.msgpack", NEWER)
    with pytest.raises(O2OError, match=f"schema {SCHEMA + 1} .* newer than this o2o"):
        load_checkpoint(tmp_path / "new.msgpack", {"states": template})


def test_checkpoints_record_their_version(tmp_path):
    checkpoint_module.save_checkpoint(tmp_path / "c.msgpack", {"x": np.zeros(2)})
    raw = serialization.msgpack_restore((tmp_path / "c.msgpack").read_bytes())
    from o2o import __version__

    assert raw[FORMAT_KEY] == {"schema": SCHEMA, "o2o_version": __version__}
