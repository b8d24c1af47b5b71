"""Checkpoints as msgpack (flax.serialization): data only, nothing that can run code on load.

Writes are atomic: a temp file in the same directory, fsync, then rename. A write that fails
(a full disk) leaves the previous file as it was and no temp file; the temp files of a
process killed mid-write are removed when a run directory is opened (``remove_temp_files``).

Every checkpoint carries ``o2o_checkpoint: {schema, o2o_version}`` beside its tree. A reader
refuses a schema other than its own (a newer o2o's, or an incompatible older one); a
checkpoint written before versioning (no such entry) still loads when its structure, shapes
and dtypes match the run's.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

import jax
import msgpack
import numpy as np
from flax import serialization

from o2o import __version__
from o2o.errors import O2OError, raise_if_disk_full
from o2o.experiment.faults import kill_point

# Bump when what a checkpoint holds changes incompatibly, and say in the README what reads it.
SCHEMA = 1
FORMAT_KEY = "o2o_checkpoint"
TEMP_SUFFIX = ".tmp"
# atomic_write_bytes's temp names: "." + the target's name + "." + mkstemp's 8 random
# characters + ".tmp"; the targets o2o writes in a run directory end in one of these.
_TEMP_NAME = re.compile(r"^\..+\.(msgpack|jsonl|json|yaml)\.[a-z0-9_]{8}\.tmp$")


def _file_mode() -> int:
    """The mode ``open()`` gives a new file (0o666 less the umask: 0644 under the usual 022);
    mkstemp's temp files are 0600, which the rename would otherwise keep."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


FILE_MODE = _file_mode()


def write_all(fd: int, payload: bytes) -> None:
    """Every byte of ``payload`` to ``fd`` (one ``os.write`` may write fewer)."""
    view = memoryview(payload)
    while view:
        view = view[os.write(fd, view) :]


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
        try:
            os.fchmod(fd, FILE_MODE)
            write_all(fd, payload)
            os.fsync(fd)
        finally:
            os.close(fd)
        kill_point(f"rename:{path.name}")
        os.replace(tmp, path)
    except BaseException as error:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(error, OSError):
            raise_if_disk_full(error, path)
        raise


def is_temp_file(path: Path) -> bool:
    """Whether ``path`` is named like the temp file of an atomic write of a run's file."""
    return bool(_TEMP_NAME.match(Path(path).name))


def remove_temp_files(directory: Path) -> list[Path]:
    """Remove the temp files interrupted atomic writes left in ``directory`` (o2o's own
    names only); the removed paths."""
    removed = []
    for entry in Path(directory).iterdir():
        if is_temp_file(entry) and entry.is_file():
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def save_checkpoint(path: Path, tree: Any, phase: str | None = None) -> None:
    """``tree`` (a mapping of arrays and nested mappings) with the checkpoint's version and
    the ``phase`` of the run it belongs to (``checkpoint_phase`` reads it back cheaply)."""
    version: dict[str, Any] = {"schema": SCHEMA, "o2o_version": __version__}
    if phase is not None:
        version["phase"] = phase
    state_dict = {
        FORMAT_KEY: version,
        **serialization.to_state_dict(jax.tree.map(np.asarray, tree)),
    }
    atomic_write_bytes(path, serialization.msgpack_serialize(state_dict))


def checkpoint_phase(path: Path) -> str | None:
    """The phase ``path`` was written in, from its version entry (other entries are skipped
    unparsed: the serializer sorts the top-level keys, so the version entry is not always
    first); None when the checkpoint records none (written before it did) or cannot be
    read."""
    try:
        with open(path, "rb") as file:
            unpacker = msgpack.Unpacker(file, raw=False, strict_map_key=False)
            for _ in range(unpacker.read_map_header()):
                if unpacker.unpack() == FORMAT_KEY:
                    version = unpacker.unpack()
                    break
                unpacker.skip()
            else:
                return None
    except (OSError, ValueError, msgpack.UnpackException):
        return None
    return version.get("phase") if isinstance(version, dict) else None


def load_checkpoint(path: Path, template: Any) -> Any:
    """Restore into the structure of ``template`` (version, shapes and dtypes are checked)."""
    path = Path(path)
    try:
        state_dict = serialization.msgpack_restore(path.read_bytes())
    except FileNotFoundError:
        raise O2OError(f"{path}: checkpoint not found") from None
    except Exception as error:  # msgpack raises many types for corrupt input
        raise O2OError(f"{path}: corrupt checkpoint ({type(error).__name__}: {error})") from None
    if isinstance(state_dict, dict):
        _check_version(path, state_dict.pop(FORMAT_KEY, None))
    try:
        restored = serialization.from_state_dict(template, state_dict)
    except Exception as error:  # flax raises many types for another structure
        raise O2OError(
            f"{path}: corrupt or incompatible checkpoint ({type(error).__name__}: {error})"
        ) from None
    for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(template), strict=True):
        if np.shape(got) != np.shape(want):
            raise O2OError(
                f"{path}: checkpoint shapes {np.shape(got)} do not match the run's {np.shape(want)}"
            )
    return jax.tree.map(
        lambda got, want: np.asarray(got, dtype=np.asarray(want).dtype), restored, template
    )


def _check_version(path: Path, version: Any) -> None:
    """None (written before checkpoints were versioned) passes: the structure check decides."""
    if version is None:
        return
    schema = version.get("schema") if isinstance(version, dict) else None
    if schema == SCHEMA:
        return
    writer = version.get("o2o_version", "?") if isinstance(version, dict) else "?"
    newer = isinstance(schema, int) and schema > SCHEMA
    raise O2OError(
        f"{path}: checkpoint schema {schema!r} (written by o2o {writer}) is "
        f"{'newer than' if newer else 'incompatible with'} this o2o {__version__}, which reads "
        f"schema {SCHEMA}" + ("; upgrade o2o to load it" if newer else "")
    )
