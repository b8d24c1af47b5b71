"""XLA's persistent compilation cache: trainers build fresh closures, so identical updates
would otherwise be recompiled by every run (seconds each on a laptop CPU)."""

from __future__ import annotations

import os
from pathlib import Path

import jax


def enable(directory: str | os.PathLike | None = None) -> Path | None:
    """Cache compiled executables in ``directory`` (default ``$O2O_JAX_CACHE`` or
    ``~/.cache/o2o/jax``); ``O2O_JAX_CACHE=off`` disables it."""
    setting = os.environ.get("O2O_JAX_CACHE")
    if setting == "off":
        return None
    path = Path(directory or setting or Path.home() / ".cache" / "o2o" / "jax")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None  # a read-only home: run without the cache
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path
