"""Registry resolution, data directory, score provenance and the `datasets` CLI."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from o2o.data import (
    Dataset,
    data_dir,
    env_id_for,
    load,
    normalized_score,
    resolve_path,
    save,
    score_reference,
)
from o2o.data.cli import main
from o2o.data.registry import lookup, registry
from o2o.errors import ConfigError, DatasetError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    data, reference = tmp_path / "data", tmp_path / "reference"
    data.mkdir()
    reference.mkdir()
    monkeypatch.setenv("O2O_DATA_DIR", str(data))
    monkeypatch.setenv("O2O_REFERENCE_DIR", str(reference))
    return data, reference


def hopper_like(n: int = 30, **metadata) -> Dataset:
    rng = np.random.default_rng(0)
    timeouts = np.zeros(n, bool)
    timeouts[-1] = True
    return Dataset(
        observations=rng.normal(size=(n, 11)).astype(np.float32),
        actions=rng.uniform(-1, 1, (n, 3)).astype(np.float32),
        rewards=np.ones(n, np.float32),
        next_observations=rng.normal(size=(n, 11)).astype(np.float32),
        terminals=np.zeros(n, bool),
        timeouts=timeouts,
        metadata=metadata,
    )


def test_registry_has_the_named_suites():
    names = set(registry())
    for env in ("hopper", "halfcheetah", "walker2d"):
        for level in ("random", "medium", "medium-replay", "expert", "medium-expert"):
            assert f"{env}-{level}-lite" in names
    for maze in ("umaze", "medium", "large"):
        assert {f"pointmaze-{maze}-play", f"pointmaze-{maze}-diverse"} <= names
    assert "hopper-medium-v2" in names and "antmaze-umaze-v2" in names
    assert lookup("Hopper-Medium-Lite-v0").name == "hopper-medium-lite"
    assert lookup("hopper-medium-v0") is None  # -v0 is only an alias of o2o's own files


def test_data_dir_default_and_override(monkeypatch, tmp_path):
    monkeypatch.delenv("O2O_DATA_DIR", raising=False)
    assert data_dir() == Path("~/.cache/o2o/datasets").expanduser()
    monkeypatch.setenv("O2O_DATA_DIR", str(tmp_path))
    assert data_dir() == tmp_path


def test_lite_name_resolves_to_data_dir_when_not_in_reference_dir(dirs):
    data, _ = dirs
    with pytest.raises(
        DatasetError,
        match=r"walker2d-medium-lite: .*not found.*o2o datasets make walker2d-medium-lite",
    ):
        load("walker2d-medium-lite")
    save(
        hopper_like(dataset="walker2d-medium-lite-v0", env_id="Hopper-v5"),
        str(data / "walker2d-medium-lite-v0.hdf5"),
    )
    assert resolve_path("walker2d-medium-lite") == data / "walker2d-medium-lite-v0.hdf5"
    assert load("walker2d-medium-lite-v0", check_env=False).size == 30


def test_reference_dir_wins_over_data_dir(dirs):
    data, reference = dirs
    for folder, n in ((data, 10), (reference, 20)):
        save(hopper_like(n, env_id="Hopper-v5"), str(folder / "hopper-random-lite-v0.hdf5"))
    assert load("hopper-random-lite").size == 20
    assert lookup("hopper-random-lite").find_all() == [
        reference / "hopper-random-lite-v0.hdf5",
        data / "hopper-random-lite-v0.hdf5",
    ]


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/datasets not present")
def test_default_reference_dir_is_the_shared_folder(monkeypatch):
    monkeypatch.delenv("O2O_REFERENCE_DIR", raising=False)
    assert resolve_path("hopper-medium-lite") == SHARED / "hopper-medium-lite-v0.hdf5"


def test_real_d4rl_name_resolves_when_file_exists(dirs):
    data, _ = dirs
    with pytest.raises(DatasetError, match="hopper-medium-v2: dataset file"):
        load("hopper-medium-v2")
    save(hopper_like(), str(data / "hopper-medium-v2.hdf5"))
    dataset = load("hopper-medium-v2")
    assert env_id_for(dataset) == "Hopper-v5" and dataset.metadata["env_checked"] is True
    # real D4RL files store no references: D4RL's constants, and the report says so
    info = score_reference(dataset)
    assert info.provenance == "d4rl" and (info.ref_min, info.ref_max) == (-20.272305, 3234.3)
    assert "D4RL constants" in info.describe()


def test_unknown_name_is_a_one_line_error(dirs):
    with pytest.raises(DatasetError, match="nonsense-dataset: unknown dataset"):
        load("nonsense-dataset")


def test_normalized_score_provenance():
    assert normalized_score("hopper-medium-v2", 3234.3) == pytest.approx(100.0)
    assert normalized_score("walker2d-expert-v2", 1.629008) == pytest.approx(0.0)
    scores = normalized_score("antmaze-large-play-v2", np.array([0.0, 1.0]))
    np.testing.assert_allclose(scores, [0.0, 100.0])
    own = hopper_like(ref_min_score=0.0, ref_max_score=10.0, dataset="hopper-medium-lite-v0")
    assert score_reference(own).provenance == "dataset"
    assert normalized_score(own, 5.0) == pytest.approx(50.0)
    assert normalized_score(own, 3234.3, reference="d4rl") == pytest.approx(100.0)  # by family
    with pytest.raises(ConfigError, match="no reference returns"):
        score_reference(hopper_like(dataset="mystery"))
    with pytest.raises(ConfigError, match="degenerate"):
        score_reference(hopper_like(ref_min_score=1.0, ref_max_score=1.0))


def test_env_id_for_names():
    assert env_id_for("halfcheetah-expert-lite") == "HalfCheetah-v5"
    assert env_id_for("walker2d-random-lite-v0") == "Walker2d-v5"
    assert env_id_for("pointmaze-large-diverse") == "o2o.envs.maze:O2OPointMaze_Large-v0"
    assert env_id_for(hopper_like(dataset="maze2d-umaze-v1")) == "PointMaze_UMaze-v3"


def test_cli_list_and_info(capsys, dirs):
    data, _ = dirs
    save(
        hopper_like(
            dataset="hopper-medium-lite-v0",
            env_id="Hopper-v5",
            ref_min_score=0.0,
            ref_max_score=60.0,
        ),
        str(data / "hopper-medium-lite-v0.hdf5"),
    )
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "hopper-medium-lite" in out and "pointmaze-umaze-play" in out and str(data) in out
    assert main(["info", "hopper-medium-lite"]) == 0
    out = capsys.readouterr().out
    assert "30" in out and "mean 50.0" in out and "dataset reference returns" in out


def test_cli_errors_print_one_line_and_exit_2(capsys, dirs, tmp_path):
    assert main(["info", str(tmp_path / "absent.hdf5")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("no such file") and "\n" not in err
    assert main(["make", "hopper-medium-v2"]) == 2
    assert "cannot make 'hopper-medium-v2'" in capsys.readouterr().err


def test_cli_list_fits_80_columns_and_paths_shows_where_files_go(dirs):
    """One short row per dataset at 80 columns (no path folded over dozens of lines);
    ``--paths`` gives each row its env and full location."""
    import subprocess
    import sys

    data, _ = dirs
    env = {**os.environ, "COLUMNS": "80"}
    listing = subprocess.run(
        [sys.executable, "-m", "o2o", "datasets", "list"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    rows = [line for line in listing if line.startswith("│")]
    assert len(rows) == len(registry())  # one line each
    assert max(len(line) for line in listing) <= 80
    assert any("hopper-medium-v2" in r and "missing" in r for r in rows)
    wide = subprocess.run(
        [sys.executable, "-m", "o2o", "datasets", "list", "--paths"],
        env={**env, "COLUMNS": "250"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"put at {data}" in wide and "Hopper-v5" in wide
