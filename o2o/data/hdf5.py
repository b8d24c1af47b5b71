"""D4RL-layout HDF5: reading real D4RL files, the reference lite files, and o2o's own files.

o2o's own format *is* this layout (top-level columns, ``infos/*``, ``metadata/*``), so any
D4RL tool can read what o2o writes. Metadata values are stored twice, as in the reference
files: as scalar datasets under ``metadata/`` and as attributes of that group; lists and
dicts are JSON strings. Nothing is pickled.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from o2o.data.dataset import COLUMNS, Dataset
from o2o.data.validation import fail, validate_columns

FORMAT_TAG = "o2o-d4rl-hdf5/1"


def _decode(value: Any) -> Any:
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, np.ndarray):
        return value.tolist() if value.size <= 64 else None
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _read_metadata(group: h5py.Group) -> dict[str, Any]:
    """Scalar datasets and attributes of ``metadata/``; nested groups (real D4RL files keep
    policy weights there) are skipped, they are not metadata a loader needs."""
    metadata: dict[str, Any] = {}
    for key, value in group.attrs.items():
        decoded = _decode(value)
        if decoded is not None:
            metadata[key] = decoded
    for key, item in group.items():
        if isinstance(item, h5py.Dataset) and item.shape == ():
            metadata[key] = _decode(item[()])
    return metadata


def _derive_next_observations(
    columns: dict[str, np.ndarray],
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Old D4RL files lack ``next_observations``: take observations[t + 1] within an
    episode and drop rows whose successor is unknown (timeouts and the last row), as D4RL's
    ``qlearning_dataset`` does; the row before a dropped one becomes the episode's end."""
    n = columns["rewards"].shape[0]
    keep = ~columns["timeouts"].copy()
    keep[-1] = False
    next_obs = np.empty_like(columns["observations"])
    next_obs[:-1] = columns["observations"][1:]
    next_obs[-1] = columns["observations"][-1]
    new_timeouts = np.zeros(n, np.bool_)
    dropped = np.flatnonzero(~keep)
    before = dropped - 1
    before = before[(before >= 0) & keep[np.clip(before, 0, n - 1)]]
    new_timeouts[before] = ~columns["terminals"][before]
    out = dict(columns, next_observations=next_obs, timeouts=new_timeouts)
    return {k: v[keep] for k, v in out.items()}, keep


def read_hdf5(path: str | os.PathLike) -> Dataset:
    """Load and validate a D4RL-layout HDF5 file."""
    path = Path(path)
    source = str(path)
    if not path.exists():
        raise fail(source, "no such file")
    if path.is_dir():
        raise fail(source, "is a directory, expected an HDF5 file (or a Minari dataset directory)")
    try:
        if not h5py.is_hdf5(path):
            raise fail(source, "not an HDF5 file")
        with h5py.File(path, "r") as handle:
            raw = {
                key: handle[key][()]
                for key in COLUMNS
                if key in handle and isinstance(handle[key], h5py.Dataset)
            }
            missing_groups = [k for k in COLUMNS if k in handle and k not in raw]
            if missing_groups:
                raise fail(source, f"'{missing_groups[0]}' is a group, expected an array")
            infos_raw = {}
            if "infos" in handle and isinstance(handle["infos"], h5py.Group):
                for key, item in handle["infos"].items():
                    if isinstance(item, h5py.Dataset) and item.ndim >= 1:
                        infos_raw[key] = item[()]
            metadata = (
                _read_metadata(handle["metadata"])
                if "metadata" in handle and isinstance(handle["metadata"], h5py.Group)
                else {}
            )
    except PermissionError:
        raise fail(source, "cannot read the file (permission denied)") from None
    except OSError as error:
        raise fail(source, f"unreadable HDF5 file ({error})") from error

    columns = validate_columns(raw, source)
    n = columns["rewards"].shape[0]
    derived_next = "next_observations" not in columns
    if "timeouts" not in columns:
        columns["timeouts"] = np.zeros(n, np.bool_)
    if derived_next:
        columns, kept = _derive_next_observations(columns)
        infos_raw = {k: v[kept] for k, v in infos_raw.items() if v.shape[0] == n}
        if columns["rewards"].shape[0] == 0:
            raise fail(source, "dataset is empty after deriving next_observations")
    infos = {k: v for k, v in infos_raw.items() if v.shape[0] == columns["rewards"].shape[0]}
    metadata.setdefault("source", source)
    if derived_next:
        metadata["next_observations_derived"] = True
    return Dataset(
        observations=columns["observations"],
        actions=columns["actions"],
        rewards=columns["rewards"],
        next_observations=columns["next_observations"],
        terminals=columns["terminals"],
        timeouts=columns["timeouts"],
        infos=infos,
        metadata=metadata,
    )


def _encode(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    if isinstance(value, Path):
        return str(value)
    if value is None:
        return "null"
    return value


def write_hdf5(
    dataset: Dataset,
    path: str | os.PathLike,
    compression_level: int = 4,
    columns: tuple[str, ...] = COLUMNS,
) -> Path:
    """Write ``dataset`` in the D4RL layout, atomically (temp file in the same directory,
    then rename), so a killed write never leaves a half file under the final name.
    ``columns`` leaves some out (D4RL's older files have no ``next_observations``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata: Mapping[str, Any] = {
        **{k: v for k, v in dataset.metadata.items() if k != "source"},
        "format": FORMAT_TAG,
    }
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with h5py.File(tmp_name, "w") as handle:
            for key in columns:
                array = getattr(dataset, key)
                array = array.astype(np.bool_) if key in ("terminals", "timeouts") else array
                handle.create_dataset(
                    key, data=array, compression="gzip", compression_opts=compression_level
                )
            for key, array in dataset.infos.items():
                handle.create_dataset(
                    f"infos/{key}",
                    data=array,
                    compression="gzip",
                    compression_opts=compression_level,
                )
            group = handle.create_group("metadata")
            for key, value in metadata.items():
                encoded = _encode(value)
                group.attrs[key] = encoded
                group.create_dataset(key, data=encoded)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path
