"""Checkpoints as msgpack (flax.serialization): data only, nothing that can run code on load.
Writes are atomic: a temp file in the same directory, fsync, then rename."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import serialization

from o2o.errors import O2OError


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_checkpoint(path: Path, tree: Any) -> None:
    host_tree = jax.tree.map(np.asarray, tree)
    atomic_write_bytes(
        path, serialization.msgpack_serialize(serialization.to_state_dict(host_tree))
    )


def load_checkpoint(path: Path, template: Any) -> Any:
    """Restore into the structure of ``template`` (shapes and dtypes are checked)."""
    path = Path(path)
    try:
        state_dict = serialization.msgpack_restore(path.read_bytes())
        restored = serialization.from_state_dict(template, state_dict)
    except FileNotFoundError:
        raise O2OError(f"{path}: checkpoint not found") from None
    except Exception as error:  # msgpack and flax raise many types for corrupt input
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
