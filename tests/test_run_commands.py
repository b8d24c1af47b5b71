"""o2o eval, record, runs list and plot on a tiny trained run; --log csv end to end; the
files a run writes are 0644 (the umask's mode, not mkstemp's 0600)."""

from __future__ import annotations

import csv
import ctypes.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from o2o.cli import main
from o2o.experiment.runs import RunDir

ROOT = Path(__file__).resolve().parents[1]
TRAIN = [
    "train", "--dataset", "hopper-medium-lite", "--algo", "td3", "--offline-steps", "200",
    "--online-steps", "100", "--offline-eval-every", "100", "--online-eval-every", "50",
    "--eval-episodes", "2", "--batch-size", "32", "--set", "hidden_dims=[16]", "--seeds", "2",
    "--no-progress",
]  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("cmds") / "runs"
    assert main([*TRAIN, "--runs-dir", str(runs), "--name", "td3-a", "--log", "csv"]) == 0
    return runs


def test_log_csv_and_file_modes(runs):
    run = RunDir(runs / "td3-a")
    with open(run.path / "metrics.csv") as file:
        table = list(csv.DictReader(file))
    rows = run.rows()
    assert [int(r["step"]) for r in table] == [r["step"] for r in rows] == [100, 200, 250, 300]
    assert [float(r["normalized_score"]) for r in table] == pytest.approx(
        [r["normalized_score"] for r in rows]
    )
    umask = os.umask(0)
    os.umask(umask)
    for name in (
        "config.yaml",
        "offline.msgpack",
        "checkpoint.msgpack",
        "summary.json",
        "metrics.csv",
    ):
        assert (run.path / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


def test_eval_prints_the_runs_final_score(runs, capsys):
    capsys.readouterr()
    assert main(["eval", str(runs / "td3-a")]) == 0
    out = capsys.readouterr().out
    final = RunDir(runs / "td3-a").rows()[-1]
    assert "online checkpoint, 2 episodes per seed, seed(s) 0, 1" in out
    assert f"normalized score {final['normalized_score']:.1f} ±" in out
    assert main(["eval", str(runs / "td3-a"), "--seed", "1", "--episodes", "1"]) == 0
    assert "1 episodes per seed, seed(s) 1" in capsys.readouterr().out


def test_runs_list_fits_80_columns(runs, capsys, tmp_path):
    (runs / "sub").mkdir(exist_ok=True)
    RunDir.create(
        runs / "sub" / "a-very-long-run-name-that-ends-in-x1", RunDir(runs / "td3-a").config()
    )
    capsys.readouterr()
    assert main(["runs", "list", str(runs)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    header, new, done = lines  # sorted by path
    assert header.split() == ["name", "dataset", "algo", "methods", "budget", "status", "score"]
    final = RunDir(runs / "td3-a").rows()[-1]["normalized_score"]
    assert done.split() == [
        "td3-a",
        "hopper-medium-lite",
        "td3",
        "vanilla",
        "200+100×2",
        "done",
        f"{final:.1f}",
    ]
    assert new.split()[0].endswith("ends-in-x1") and new.split()[-1] == "new"
    assert main(["runs", "list", str(tmp_path)]) == 0
    assert "no runs below" in capsys.readouterr().out


def test_plot_writes_a_png_of_any_runs(runs, tmp_path, capsys):
    from PIL import Image

    out = tmp_path / "curves.png"
    assert main(["plot", str(runs / "td3-a"), str(runs), "--out", str(out)]) == 0
    assert re.search(r"wrote .*curves\.png", capsys.readouterr().out)
    with Image.open(out) as image:
        assert image.size[0] > 400 and image.size[1] > 300


def gl_available() -> bool:
    code = (
        "import os; os.environ.setdefault('MUJOCO_GL', 'egl'); import gymnasium as gym; "
        "e = gym.make('Hopper-v5', render_mode='rgb_array', width=32, height=32); "
        "e.reset(seed=0); assert e.render().shape == (32, 32, 3)"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def test_record_writes_a_gif(runs, tmp_path, capsys):
    if not gl_available():
        pytest.skip("no offscreen GL here (the no-GL path is tested below and in test_faults)")
    from PIL import Image

    out = tmp_path / "episode.gif"
    argv = [
        "record",
        str(runs / "td3-a"),
        "--out",
        str(out),
        "--max-steps",
        "5",
        "--size",
        "64",
        "48",
    ]
    assert main(argv) == 0
    with Image.open(out) as gif:
        assert gif.size == (64, 48) and 2 <= gif.n_frames <= 6
    assert f"wrote {out}" in capsys.readouterr().out


@pytest.mark.skipif(ctypes.util.find_library("OSMesa") is not None, reason="OSMesa is installed")
def test_record_without_gl_is_one_line(runs, tmp_path):
    """MUJOCO_GL=osmesa where OSMesa is missing: a real GL failure, one line, exit 2."""
    env = {k: v for k, v in os.environ.items() if k != "PYOPENGL_PLATFORM"}  # egl's, set above
    env.update(MUJOCO_GL="osmesa", PYTHONPATH=str(ROOT))
    out = tmp_path / "x.gif"
    done = subprocess.run(
        [sys.executable, "-m", "o2o.cli", "record", str(runs / "td3-a"), "--out", str(out)],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    err = done.stderr.strip()
    assert done.returncode == 2 and err.startswith("error: cannot render") and "\n" not in err, err
    assert not out.exists() and not list(tmp_path.iterdir())


def test_train_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for shown in ("offline gradient steps (default: 100000)", "(default: Pendulum-v1)",
                  "first seed (default: 0)", "(default: vanilla)"):  # fmt: skip
        assert shown in text, shown
    assert main(["train", "--algo", "list"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^offline .*: awac, bc, calql, cql, iql, spot, td3bc$", out, re.M)
    assert re.search(r"^online .*: sac, td3, ppo$", out, re.M)
    json.dumps(out)


def test_a_closed_pipe_is_no_traceback():
    """``o2o runs list | head -1``: the reader closes the pipe before o2o is done writing."""
    code = (
        "import os, sys\n"
        "read, write = os.pipe(); os.close(read); os.dup2(write, 1)\n"
        "from o2o.cli import main\n"
        "sys.exit(main(['--help']))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0 and done.stderr == "", done.stderr


def test_eval_shows_progress_unless_told_not_to(runs, capsys, monkeypatch):
    monkeypatch.setenv("O2O_PROGRESS_EVERY", "0")
    capsys.readouterr()
    assert main(["eval", str(runs / "td3-a"), "--episodes", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("evaluate ")
    assert "env steps/s" in out
    assert main(["eval", str(runs / "td3-a"), "--episodes", "1", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "env steps/s" not in out and len(out.strip().splitlines()) == 1
