"""A run on disk: ``runs/<name>/{config.yaml, metrics.jsonl, checkpoint.msgpack, summary.json}``."""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from o2o.errors import ConfigError, O2OError, raise_if_disk_full
from o2o.experiment.checkpoint import (
    atomic_write_bytes,
    is_temp_file,
    remove_temp_files,
    write_all,
)
from o2o.experiment.faults import kill_point

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
EPISODES = "episodes.jsonl"
FINETUNE = "finetune.jsonl"  # a fine-tuning method's diagnostics (e.g. SAMG's p, C-VAE KL)
CHECKPOINT = "checkpoint.msgpack"
SUMMARY = "summary.json"


@dataclass(frozen=True)
class RunDir:
    path: Path

    @classmethod
    def create(cls, path: Path | str, config: dict[str, Any], resume: bool = False) -> RunDir:
        """Open a new run, or an existing one with ``resume``. Never overwrites a finished or
        started run without ``resume``. The temp files of writes a killed process left are
        removed from a directory that is opened."""
        run = cls(Path(path))
        if run.path.exists() and not run.path.is_dir():
            raise O2OError(f"{run.path} exists and is not a directory; choose another --name")
        if resume:
            if not (run.path / CONFIG).exists():
                raise O2OError(f"cannot resume {run.path}: no {CONFIG} there")
            remove_temp_files(run.path)
            return run
        if run.path.exists():
            if any(not is_temp_file(entry) for entry in run.path.iterdir()):
                raise O2OError(
                    f"run directory {run.path} already exists; pass --resume to continue it or choose another --name"
                )
            remove_temp_files(run.path)
        try:
            run.path.mkdir(parents=True, exist_ok=True)
            probe = run.path / ".write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as error:
            raise O2OError(f"run directory {run.path} is not writable: {error.strerror}") from None
        run.write_config(config)
        return run

    def write_config(self, config: dict[str, Any]) -> None:
        atomic_write_bytes(self.path / CONFIG, yaml.safe_dump(config, sort_keys=False).encode())

    def config(self) -> dict[str, Any]:
        path = self.path / CONFIG
        try:
            config = yaml.safe_load(path.read_text())
        except yaml.YAMLError:
            raise O2OError(f"{path}: corrupt run config (not valid YAML)") from None
        if not isinstance(config, dict):
            raise O2OError(f"{path}: corrupt run config (not a mapping)")
        return config

    @property
    def checkpoint_path(self) -> Path:
        return self.path / CHECKPOINT

    def has_checkpoint(self) -> bool:
        return self.checkpoint_path.exists()

    def append(self, filename: str, row: dict[str, Any]) -> None:
        """One JSON line, written whole or not at all: a failed write (a full disk) is cut
        back to the file's previous end."""
        path = self.path / filename
        line = (json_text(row) + "\n").encode()
        fd = size = None
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            size = os.fstat(fd).st_size
            write_all(fd, line)
            os.fsync(fd)
            kill_point(f"row:{filename}")
        except OSError as error:
            if size is not None:
                os.ftruncate(fd, size)
            raise_if_disk_full(error, path)
            raise
        finally:
            if fd is not None:
                os.close(fd)

    def rows(self, filename: str = METRICS) -> list[dict[str, Any]]:
        path = self.path / filename
        if not path.exists():
            return []
        rows = []
        for line in path.read_text().splitlines():
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    break  # a half-written last line from a crash
        return rows

    def truncate_after(self, step: int, phase: str = "online") -> None:
        """Drop the rows of ``phase`` logged after the checkpoint a resumed run continues
        from (steps count within a phase; online rows are offset by the offline steps).
        Diagnostic rows name the phase they were written in as ``during`` (online if absent);
        episode rows exist only online."""

        def written_later(filename: str, row: dict) -> bool:
            if row.get("step", 0) <= step:
                return False
            if filename == METRICS:
                return row.get("phase", "online") == phase
            if filename == FINETUNE:
                return row.get("during", "online") == phase
            return phase == "online"

        for filename in (METRICS, EPISODES, FINETUNE):
            if (self.path / filename).exists():
                self.write_rows(
                    filename, [r for r in self.rows(filename) if not written_later(filename, r)]
                )

    def drop_rows(self, filename: str, **match: Any) -> None:
        """Remove the rows of ``filename`` whose fields equal ``match``."""
        if (self.path / filename).exists():
            rows = self.rows(filename)
            self.write_rows(
                filename, [r for r in rows if any(r.get(k) != v for k, v in match.items())]
            )

    def write_rows(self, filename: str, rows: list[dict[str, Any]]) -> None:
        """Replace ``filename`` with ``rows``, atomically."""
        payload = "".join(json_text(r) + "\n" for r in rows).encode()
        atomic_write_bytes(self.path / filename, payload)

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_bytes(self.path / SUMMARY, json_text(summary, indent=2).encode())

    def summary(self) -> dict[str, Any] | None:
        path = self.path / SUMMARY
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise O2OError(
                f"{path}: corrupt {SUMMARY} ({error.msg}, line {error.lineno})"
            ) from None

    @contextlib.contextmanager
    def removed_if_setup_fails(self, new: bool = True) -> Iterator[RunDir]:
        """Around a run: an O2OError of a ``new`` run that has written nothing but its
        config.yaml (a failed setup) removes the directory, so the name can be used again."""
        try:
            yield self
        except O2OError:
            if new:
                self.remove_if_unstarted()
            raise

    def remove_if_unstarted(self) -> bool:
        """Remove the directory if it holds nothing but config.yaml: a run whose setup failed
        before anything else was written, whose name can then be used again. Whether it did."""
        if not self.path.is_dir() or {e.name for e in self.path.iterdir()} != {CONFIG}:
            return False
        (self.path / CONFIG).unlink()
        self.path.rmdir()
        return True


def json_text(value: Any, indent: int | None = None) -> str:
    """Strict JSON (what every run file and report holds): a float that is not finite is
    written as ``null``, never as the bare ``NaN``/``Infinity`` other parsers reject."""
    return json.dumps(finite_or_none(value), indent=indent, allow_nan=False)


def finite_or_none(value: Any) -> Any:
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_none(v) for v in value]
    return value


def number(value: Any) -> float:
    """A numeric field read back from a run file: ``null`` (not finite when written) is NaN."""
    return float("nan") if value is None else float(value)


def check_run_name(name: str, what: str = "run name") -> str:
    """``name`` when it is one safe path component (it names a directory inside the runs or
    results directory and must stay there), else a ConfigError."""
    text = str(name)
    if (
        not text.strip()
        or text in (".", "..")
        or "/" in text
        or (os.altsep is not None and os.altsep in text)
        or "\0" in text
    ):
        raise ConfigError(
            f"{what} {text!r} must be a single directory name (no '/', not '.' or '..')"
        )
    return text


def plain_config(value: Any) -> Any:
    """Tuples to lists, recursively, so a config dict dumps as plain YAML."""
    if isinstance(value, dict):
        return {k: plain_config(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [plain_config(v) for v in value]
    return value


def default_run_name(*parts: str) -> str:
    import time

    safe = [p.replace("/", "_").replace(":", "_") for p in parts if p]
    return "-".join([*safe, time.strftime("%Y%m%d-%H%M%S")])


def require_positive(**values: float) -> None:
    for name, value in values.items():
        if not value > 0:
            raise ConfigError(f"{name} must be positive, got {value}")


def evaluation_row(
    phase: str,
    step: int,
    wall_time: float,
    returns: Any,
    success: Any = None,
    metrics: dict | None = None,
    score_fn: Any = None,
    updates: int | None = None,
) -> dict[str, Any]:
    """One metrics.jsonl row: per-seed returns (and normalized scores when ``score_fn`` maps
    returns to scores), success rate, gradient ``updates`` so far in the phase, and the train
    metrics of the last fused call averaged over seeds (NaN-safe: TD3's critic-only steps)."""
    returns = np.atleast_1d(np.asarray(returns))
    row: dict[str, Any] = {"phase": phase, "step": int(step)}
    if updates is not None:
        row["updates"] = int(updates)
    row.update(
        wall_time=round(float(wall_time), 3),
        **{"return": float(returns.mean()), "return_std": float(returns.std())},
        seed_returns=[float(r) for r in returns],
    )
    if score_fn is not None:
        scores = np.atleast_1d(np.asarray(score_fn(returns)))
        row["normalized_score"] = float(scores.mean())
        row["seed_normalized_scores"] = [float(x) for x in scores]
    if success is not None:
        row["success_rate"] = float(np.mean(success))
    row.update(train_metrics(metrics or {}))
    return row


def train_metrics(metrics: dict) -> dict[str, float]:
    """``train/<name>`` of each metric of the last fused call, averaged over seeds."""
    return {f"train/{name}": float(np.nanmean(np.asarray(v))) for name, v in metrics.items()}
