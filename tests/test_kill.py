"""The kill -9 suite (issue 19): a real ``o2o train`` (or ``o2o bench run``) subprocess
SIGKILLs itself at a named fault point (``O2O_KILL_AT``, ``o2o/experiment/faults.py``), is
resumed, and then every file of its run directory equals an uninterrupted run's: the rows
(wall time aside), summary.json (timings aside), config.yaml and every checkpoint's arrays."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from flax import serialization
from flax.traverse_util import flatten_dict

from o2o.experiment.runs import RunDir

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--dataset", "hopper-medium-lite", "--algo", "td3", "--set", "hidden_dims=[16]",
    "--batch-size", "32", "--eval-episodes", "1", "--update-every", "50", "--no-progress",
]  # fmt: skip
TD3 = [
    *TINY, "--offline-steps", "200", "--offline-eval-every", "100",
    "--online-steps", "200", "--online-eval-every", "100",
]  # fmt: skip
SAMG = [
    *TINY, "--offline-steps", "100", "--offline-eval-every", "100",
    "--online-steps", "100", "--online-eval-every", "100", "--finetune", "samg",
    "--method-set", "cvae_steps=100", "--method-set", "encoder_hidden_dims=[16]",
    "--method-set", "decoder_hidden_dims=[16]", "--method-set", "seed_transitions=50",
    "--method-set", "adaptive_every=0",
]  # fmt: skip
SUITE = {
    "name": "kill",
    "datasets": ["hopper-medium-lite"],
    "algos": ["td3"],
    "methods": ["vanilla", {"samg": {"cvae_steps": 100, "encoder_hidden_dims": [16],
                                     "decoder_hidden_dims": [16], "seed_transitions": 50,
                                     "adaptive_every": 0}}],
    "seeds": 1,
    "offline_steps": 100,
    "online_steps": 100,
    "online_eval_every": 100,
    "eval_episodes": 1,
    "agent_overrides": {"td3": {"hidden_dims": [16]}},
    "pipeline": {"batch_size": 32, "update_every": 50},
}  # fmt: skip
ROWS = ("metrics.jsonl", "episodes.jsonl", "finetune.jsonl")
TIMINGS = {"wall_time", "seconds"}

# (scenario, fault point, n-th arrival): where a run is killed.
# CI kills at these 8 instants (each costs two subprocesses); O2O_KILL_ALL=1 adds nine more
# (the same writes reached by other paths, or tested in process: the C-VAE fit in
# tests/test_samg.py), 17 in all.
INSTANTS = [
    ("td3", "row:metrics.jsonl", 1),  # after an offline row, before its checkpoint
    ("td3", "rename:checkpoint.msgpack", 1),  # the first checkpoint half-written
    ("td3", "evaluate", 2),  # during an offline evaluation
    ("td3", "row:episodes.jsonl", 3),  # after an episode row, before the online checkpoint
    ("td3", "chunk:online", 3),  # online, between two checkpoints
    ("td3", "rename:summary.json", 1),  # summary.json half-written
    ("samg", "rename:finetune_start.msgpack", 1),  # the fitted start half-written
    ("suite", "row:metrics.jsonl", 3),  # inside the paired run, after its copied rows
]
MORE_INSTANTS = [
    ("samg", "chunk:samg_cvae", 1),  # during SAMG's C-VAE fit
    ("td3", "rename:offline.msgpack", 1),  # the offline checkpoint half-written
    ("td3", "checkpoint-saved", 2),  # between a checkpoint and phase.json
    ("td3", "chunk:offline", 1),  # offline, before the first row
    ("td3", "online-start", 1),  # online, before anything was logged
    ("td3", "row:metrics.jsonl", 3),  # after the first online row, before its checkpoint
    ("td3", "rename:checkpoint.msgpack", 3),  # the first online checkpoint half-written
    ("samg", "row:finetune.jsonl", 1),  # after a C-VAE statistics row
    ("suite", "suite:between-runs", 1),  # between the suite's two runs
]
if os.environ.get("O2O_KILL_ALL"):
    INSTANTS += MORE_INSTANTS


def command(scenario: str, out: Path, resume: bool = False) -> list[str]:
    if scenario == "suite":
        return [sys.executable, "-m", "o2o.cli", "bench", "run", str(out / "suite.yaml"),
                "--out", str(out / "results"), "--quiet"]  # fmt: skip
    args = ["--name", "run", "--runs-dir", str(out)]
    if resume:
        return [sys.executable, "-m", "o2o.cli", "train", "--resume", *args, "--no-progress"]
    return [sys.executable, "-m", "o2o.cli", "train", *(TD3 if scenario == "td3" else SAMG), *args]


def launch(scenario: str, out: Path, resume: bool = False, kill_at: str | None = None) -> int:
    out.mkdir(parents=True, exist_ok=True)
    if scenario == "suite":
        (out / "suite.yaml").write_text(yaml.safe_dump(SUITE))
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        # One compilation cache for every subprocess: each compiles nothing after the first.
        "O2O_JAX_CACHE": str(ROOT / ".cache" / "jax"),
    }
    env.pop("O2O_KILL_AT", None)
    if kill_at is not None:
        env["O2O_KILL_AT"] = kill_at
    done = subprocess.run(command(scenario, out, resume), cwd=ROOT, env=env, capture_output=True)
    assert done.returncode in (0, -9), done.stderr.decode()[-2000:]
    return done.returncode


def run_dirs(out: Path) -> list[Path]:
    return sorted(p.parent for p in out.rglob("config.yaml"))


def untimed(value):
    if isinstance(value, dict):
        return {k: untimed(v) for k, v in value.items() if k not in TIMINGS}
    if isinstance(value, list):
        return [untimed(v) for v in value]
    return value


def arrays(path: Path) -> dict[tuple, np.ndarray]:
    """A checkpoint's arrays by key path, its wall time (a timing) aside."""
    flat = flatten_dict(serialization.msgpack_restore(path.read_bytes()))
    return {key: value for key, value in flat.items() if "wall_time" not in key}


def assert_same_run(got: Path, want: Path) -> None:
    names = {p.name for p in want.iterdir()}
    assert {p.name for p in got.iterdir()} == names, "files differ (a temp file left?)"
    for name in sorted(names):
        if name in ROWS:
            assert untimed(RunDir(got).rows(name)) == untimed(RunDir(want).rows(name)), name
        elif name == "summary.json":
            assert untimed(RunDir(got).summary()) == untimed(RunDir(want).summary())
        elif name.endswith(".msgpack"):
            got_arrays, want_arrays = arrays(got / name), arrays(want / name)
            assert got_arrays.keys() == want_arrays.keys(), name
            for key, value in want_arrays.items():
                np.testing.assert_array_equal(got_arrays[key], value, err_msg=f"{name} {key}")
        else:
            assert (got / name).read_bytes() == (want / name).read_bytes(), name


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The uninterrupted run of each scenario, made once on first use."""
    made: dict[str, Path] = {}

    def get(scenario: str) -> Path:
        if scenario not in made:
            made[scenario] = tmp_path_factory.mktemp(f"full-{scenario}")
            assert launch(scenario, made[scenario]) == 0
        return made[scenario]

    return get


@pytest.mark.parametrize(("scenario", "point", "nth"), INSTANTS)
def test_killed_then_resumed_equals_uninterrupted(tmp_path, uninterrupted, scenario, point, nth):
    want = uninterrupted(scenario)
    assert launch(scenario, tmp_path, kill_at=f"{point}:{nth}") == -9, "the point was not reached"
    assert launch(scenario, tmp_path, resume=True) == 0
    got_runs, want_runs = run_dirs(tmp_path), run_dirs(want)
    assert [p.relative_to(tmp_path) for p in got_runs] == [p.relative_to(want) for p in want_runs]
    for got, expected in zip(got_runs, want_runs, strict=True):
        assert_same_run(got, expected)
