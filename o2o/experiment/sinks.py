"""Logging sinks beside ``metrics.jsonl`` (``o2o train --log csv,tensorboard,wandb``).

A sink is called with each evaluation row the engine already returns (``on_eval``), after
the row is in metrics.jsonl: no per-step host synchronisation, nothing the JSONL lacks.
* ``csv``: ``metrics.csv``, rewritten from metrics.jsonl at every row (one column per key,
  per-seed lists joined with ``;``), so a resumed run's CSV holds no rows twice;
* ``tensorboard``: event files in ``tensorboard/`` (tensorboardX), scalars ``PHASE/KEY`` at
  the row's step (offline gradient steps, then offline steps + online env steps);
* ``wandb``: a Weights & Biases run in offline mode under ``wandb/`` (never the network;
  ``wandb sync`` uploads it), the run's config.yaml as its config.
"""

from __future__ import annotations

import csv
import importlib
import io
from collections.abc import Sequence
from typing import Any

from o2o.errors import ConfigError, did_you_mean
from o2o.experiment.checkpoint import atomic_write_bytes
from o2o.experiment.runs import METRICS, RunDir

CSV_FILE = "metrics.csv"
TENSORBOARD_DIR = "tensorboard"
WANDB_DIR = "wandb"
EXTRAS = {"tensorboard": ("tensorboardX", "tensorboard"), "wandb": ("wandb", "wandb")}


def parse_sinks(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"tensorboard,csv"`` (or a list) -> validated sink names, their extras importable."""
    if text is None:
        return ()
    names = text.split(",") if isinstance(text, str) else list(text)
    names = [n.strip().lower() for n in names if n.strip()]
    for name in names:
        if name not in SINKS:
            raise ConfigError(
                f"unknown log sink '{name}'{did_you_mean(name, SINKS)}; choose from "
                f"{', '.join(SINKS)} (metrics.jsonl is always written)"
            )
        if name in EXTRAS:
            module, extra = EXTRAS[name]
            try:
                importlib.import_module(module)
            except ImportError:
                raise ConfigError(
                    f"--log {name} needs {module}: pip install 'o2o-rl[{extra}]'"
                ) from None
    return tuple(dict.fromkeys(names))


def scalars(row: dict[str, Any]) -> dict[str, float]:
    """The row's numeric values (not its per-seed lists, phase or step)."""
    return {
        k: float(v)
        for k, v in row.items()
        if k not in ("phase", "step") and isinstance(v, int | float) and not isinstance(v, bool)
    }


class CsvSink:
    def __init__(self, run: RunDir):
        self.run = run

    def write(self, row: dict[str, Any]) -> None:
        rows = self.run.rows(METRICS)
        columns = list(dict.fromkeys(k for r in rows for k in r))
        text = io.StringIO()
        writer = csv.DictWriter(text, columns, lineterminator="\n")
        writer.writeheader()
        for r in rows:
            writer.writerow(
                {
                    k: ";".join(map(str, v)) if isinstance(v, list) else ("" if v is None else v)
                    for k, v in r.items()
                }
            )
        atomic_write_bytes(self.run.path / CSV_FILE, text.getvalue().encode())

    def close(self) -> None:
        pass


class TensorBoardSink:
    def __init__(self, run: RunDir):
        from tensorboardX import SummaryWriter

        self.writer = SummaryWriter(logdir=str(run.path / TENSORBOARD_DIR))

    def write(self, row: dict[str, Any]) -> None:
        phase = row.get("phase", "online")
        for key, value in scalars(row).items():
            self.writer.add_scalar(f"{phase}/{key}", value, global_step=int(row["step"]))
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    def __init__(self, run: RunDir):
        import wandb

        (run.path / WANDB_DIR).mkdir(exist_ok=True)
        self.run = wandb.init(
            project="o2o",
            name=run.path.name,
            dir=str(run.path),
            mode="offline",
            config=run.config(),
            settings=wandb.Settings(silent=True, console="off"),
        )

    def write(self, row: dict[str, Any]) -> None:
        phase = row.get("phase", "online")
        values = {f"{phase}/{k}": v for k, v in scalars(row).items()}
        self.run.log(values, step=int(row["step"]))

    def close(self) -> None:
        self.run.finish()


SINKS = {"csv": CsvSink, "tensorboard": TensorBoardSink, "wandb": WandbSink}


class Sinks:
    """The chosen sinks of one run, called with each evaluation row; opened at the first row,
    so a run whose setup fails leaves nothing of theirs behind. ``close`` at the end."""

    def __init__(self, names: Sequence[str], run: RunDir | None):
        if names and run is None:
            raise ConfigError("logging sinks write into the run directory: give one")
        self.names, self.run = tuple(names), run
        self.sinks: list[Any] | None = None

    def __call__(self, row: dict[str, Any]) -> None:
        if self.sinks is None:
            self.sinks = [SINKS[name](self.run) for name in self.names]
        for sink in self.sinks:
            sink.write(row)

    def close(self) -> None:
        for sink in self.sinks or ():
            sink.close()
