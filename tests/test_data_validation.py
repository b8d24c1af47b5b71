"""A corpus of bad dataset files, one per failure, each must give a one-line DatasetError
naming the file and the problem."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from o2o.data import load, read_hdf5
from o2o.errors import DatasetError, O2OError

OBS_DIM, ACT_DIM = 11, 3  # Hopper-v5


def good_columns(n: int = 50, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    timeouts = np.zeros(n, bool)
    timeouts[n // 2 - 1] = timeouts[-1] = True
    return {
        "observations": rng.normal(size=(n, OBS_DIM)).astype(np.float32),
        "actions": rng.uniform(-1, 1, size=(n, ACT_DIM)).astype(np.float32),
        "rewards": rng.normal(size=n).astype(np.float32),
        "next_observations": rng.normal(size=(n, OBS_DIM)).astype(np.float32),
        "terminals": np.zeros(n, bool),
        "timeouts": timeouts,
    }


def write_file(path: Path, columns: dict, env_id: str | None = "Hopper-v5") -> Path:
    with h5py.File(path, "w") as handle:
        for key, value in columns.items():
            handle.create_dataset(key, data=value)
        if env_id is not None:
            handle.create_group("metadata").attrs["env_id"] = env_id
    return path


def assert_one_line_error(path: Path, fragment: str, **load_kwargs) -> str:
    with pytest.raises(DatasetError) as info:
        load(path, **load_kwargs)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message, message
    assert fragment in message, message
    return message


def test_good_file_loads(tmp_path):
    dataset = load(write_file(tmp_path / "good.hdf5", good_columns()))
    assert dataset.size == 50 and dataset.metadata["env_checked"] is True
    assert dataset.observations.dtype == np.float32 and dataset.terminals.dtype == np.bool_


def test_missing_file(tmp_path):
    assert_one_line_error(tmp_path / "absent.hdf5", "no such file")


def test_not_hdf5(tmp_path):
    path = tmp_path / "text.hdf5"
    path.write_text("observations,actions\n1,2\n")
    assert_one_line_error(path, "not an HDF5 file")


@pytest.mark.parametrize("key", ["observations", "actions", "rewards", "terminals"])
def test_missing_key(tmp_path, key):
    columns = good_columns()
    del columns[key]
    assert_one_line_error(write_file(tmp_path / "missing.hdf5", columns), f"missing key '{key}'")


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("observations", np.zeros((50, OBS_DIM), np.int64), "'observations' has dtype int64"),
        ("rewards", np.array([b"x"] * 50), "'rewards' has dtype |S1"),
        ("terminals", np.full(50, 2, np.int64), "values other than 0 and 1"),
    ],
)
def test_wrong_dtype(tmp_path, key, value, fragment):
    columns = good_columns()
    columns[key] = value
    assert_one_line_error(write_file(tmp_path / "dtype.hdf5", columns), fragment)


@pytest.mark.parametrize(
    ("key", "shape", "fragment"),
    [
        ("observations", (50,), "'observations' has shape (50,), expected rank 2"),
        ("actions", (50, 3, 1), "'actions' has shape (50, 3, 1), expected rank 2"),
        ("rewards", (50, 2), "'rewards' has shape (50, 2), expected rank 1"),
    ],
)
def test_wrong_rank(tmp_path, key, shape, fragment):
    columns = good_columns()
    columns[key] = np.zeros(shape, np.float32)
    assert_one_line_error(write_file(tmp_path / "rank.hdf5", columns), fragment)


def test_lengths_disagree(tmp_path):
    columns = good_columns()
    columns["rewards"] = columns["rewards"][:-3]
    message = assert_one_line_error(
        write_file(tmp_path / "lengths.hdf5", columns), "key lengths disagree"
    )
    assert "rewards=47" in message and "observations=50" in message


@pytest.mark.parametrize(
    ("key", "bad"), [("observations", np.nan), ("rewards", np.inf), ("actions", -np.inf)]
)
def test_nan_or_inf(tmp_path, key, bad):
    columns = good_columns()
    columns[key] = columns[key].copy()
    columns[key].reshape(-1)[7] = bad
    assert_one_line_error(
        write_file(tmp_path / "nan.hdf5", columns), f"'{key}' contains NaN or inf"
    )


def test_empty(tmp_path):
    columns = {k: v[:0] for k, v in good_columns().items()}
    assert_one_line_error(write_file(tmp_path / "empty.hdf5", columns), "dataset is empty")


def test_observation_dim_mismatch_with_env(tmp_path):
    columns = good_columns()
    columns["observations"] = columns["observations"][:, :8]
    columns["next_observations"] = columns["next_observations"][:, :8]
    path = write_file(tmp_path / "obsdim.hdf5", columns)
    assert_one_line_error(path, "observation dimension 8 does not match env Hopper-v5")
    # the env can also be given explicitly, overriding the file's own
    assert_one_line_error(
        path, "observation dimension 8 does not match env Hopper-v5", env="Hopper-v5"
    )


def test_action_dim_mismatch_with_env(tmp_path):
    columns = good_columns()
    columns["actions"] = columns["actions"][:, :2]
    assert_one_line_error(
        write_file(tmp_path / "actdim.hdf5", columns), "action dimension 2 does not match"
    )


def test_actions_outside_bounds(tmp_path):
    columns = good_columns()
    columns["actions"][3, 1] = 1.5
    message = assert_one_line_error(
        write_file(tmp_path / "bounds.hdf5", columns), "outside env Hopper-v5's bounds"
    )
    assert "row 3" in message and "1.5" in message


def test_env_check_can_be_skipped(tmp_path):
    columns = good_columns()
    columns["actions"][3, 1] = 1.5
    assert load(write_file(tmp_path / "bounds.hdf5", columns), check_env=False).size == 50


def test_minari_directory_without_metadata(tmp_path):
    directory = tmp_path / "minari" / "demo-v0"
    (directory / "data").mkdir(parents=True)
    (directory / "data" / "main_data.hdf5").write_bytes(b"")
    assert_one_line_error(directory, "Minari dataset directory without metadata")


def test_minari_metadata_unreadable(tmp_path):
    directory = tmp_path / "broken-v0"
    (directory / "data").mkdir(parents=True)
    (directory / "data" / "metadata.json").write_text("{not json")
    with pytest.raises(DatasetError, match="unreadable Minari metadata"):
        load(directory)


def test_errors_are_o2o_errors(tmp_path):
    with pytest.raises(O2OError):
        read_hdf5(tmp_path / "absent.hdf5")


def test_flags_as_numbers_and_column_vectors_are_accepted(tmp_path):
    columns = good_columns()
    columns["terminals"] = np.zeros((50, 1), np.float32)
    columns["rewards"] = columns["rewards"][:, None]
    dataset = load(write_file(tmp_path / "loose.hdf5", columns))
    assert dataset.rewards.shape == (50,) and dataset.terminals.dtype == np.bool_


def test_old_d4rl_file_without_next_observations(tmp_path):
    """D4RL v0 files lack next_observations/timeouts in places: derive them like
    d4rl.qlearning_dataset (drop the rows whose successor is unknown)."""
    columns = good_columns(10)
    del columns["next_observations"]
    columns["timeouts"] = np.zeros(10, bool)
    columns["timeouts"][4] = True
    dataset = load(write_file(tmp_path / "v0.hdf5", columns))
    # row 4 (timeout) and row 9 (last) dropped
    assert dataset.size == 8
    np.testing.assert_array_equal(dataset.next_observations[0], columns["observations"][1])
    np.testing.assert_array_equal(dataset.observations[4], columns["observations"][5])
    assert dataset.timeouts[3] and dataset.timeouts[-1]
    assert json.dumps(dataset.metadata["next_observations_derived"]) == "true"


def test_inferred_goal_conditioned_env_is_not_checked(tmp_path):
    """PointMaze_UMaze-v3 has Dict observations: inferred, it cannot be compared, so the data
    loads unchecked; given explicitly, the mismatch is an error."""
    columns = good_columns()
    columns["observations"] = columns["observations"][:, :4]
    columns["next_observations"] = columns["next_observations"][:, :4]
    columns["actions"] = columns["actions"][:, :2]
    path = write_file(tmp_path / "maze.hdf5", columns, env_id="PointMaze_UMaze-v3")
    pytest.importorskip("gymnasium_robotics")
    import gymnasium as gym
    import gymnasium_robotics

    gym.register_envs(gymnasium_robotics)
    assert load(path).metadata["env_checked"] is False
    assert_one_line_error(path, "non-array observation space", env="PointMaze_UMaze-v3")
