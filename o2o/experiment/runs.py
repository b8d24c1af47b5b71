"""A run on disk: ``runs/<name>/{config.yaml, metrics.jsonl, checkpoint.msgpack, summary.json}``."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from o2o.errors import ConfigError, O2OError
from o2o.experiment.checkpoint import atomic_write_bytes

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
        started run without ``resume``."""
        run = cls(Path(path))
        if resume:
            if not (run.path / CONFIG).exists():
                raise O2OError(f"cannot resume {run.path}: no {CONFIG} there")
            return run
        if run.path.exists() and any(run.path.iterdir()):
            raise O2OError(
                f"run directory {run.path} already exists; pass --resume to continue it or choose another --name"
            )
        try:
            run.path.mkdir(parents=True, exist_ok=True)
            probe = run.path / ".write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as error:
            raise O2OError(f"run directory {run.path} is not writable: {error.strerror}") from None
        atomic_write_bytes(run.path / CONFIG, yaml.safe_dump(config, sort_keys=False).encode())
        return run

    def config(self) -> dict[str, Any]:
        return yaml.safe_load((self.path / CONFIG).read_text())

    @property
    def checkpoint_path(self) -> Path:
        return self.path / CHECKPOINT

    def has_checkpoint(self) -> bool:
        return self.checkpoint_path.exists()

    def append(self, filename: str, row: dict[str, Any]) -> None:
        with open(self.path / filename, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())

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

    def truncate_after(self, step: int) -> None:
        """Drop rows logged after the checkpoint a resumed run continues from."""
        for filename in (METRICS, EPISODES, FINETUNE):
            if (self.path / filename).exists():
                kept = [r for r in self.rows(filename) if r.get("step", 0) <= step]
                atomic_write_bytes(
                    self.path / filename, "".join(json.dumps(r) + "\n" for r in kept).encode()
                )

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_bytes(self.path / SUMMARY, json.dumps(summary, indent=2).encode())

    def summary(self) -> dict[str, Any] | None:
        path = self.path / SUMMARY
        return json.loads(path.read_text()) if path.exists() else None


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
