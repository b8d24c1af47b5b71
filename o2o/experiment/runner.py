"""Run a suite: what has no finished result yet, skipping what is done, resuming what was
interrupted.

A configuration's run directory is finished when it holds ``summary.json``; a directory with
``config.yaml`` but no summary was interrupted and continues from its last checkpoint. A
paired method (anything but vanilla) starts from the offline checkpoint of the vanilla run of
the same (dataset, algorithm), which runs first if it is missing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from o2o.errors import DivergenceError, O2OError
from o2o.experiment.builder import DATASET_DIGEST
from o2o.experiment.faults import kill_point
from o2o.experiment.pipeline import OFFLINE_CHECKPOINT
from o2o.experiment.runs import CONFIG, SUMMARY, RunDir, number
from o2o.experiment.suite import Configuration, Suite


@dataclass(frozen=True)
class Outcome:
    """What the runner did with one configuration: ``ran``, ``resumed``, ``skipped`` (finished
    before), ``diverged`` (stopped by the divergence guard, no summary) or ``failed``."""

    config: Configuration
    status: str
    summary: dict[str, Any] | None
    error: str | None = None


def run_configuration(out: Path, config: Configuration, progress: bool = False) -> dict[str, Any]:
    """Run (or resume) one configuration into ``out/<dataset>/<algo>/<method>``; its summary."""
    from o2o.experiment.builder import execute

    path = Path(out) / config.relpath
    finished = RunDir(path).summary()
    if finished is not None:
        return finished
    spec = config.spec()
    stored = spec.stored()
    resume = (path / CONFIG).exists()
    if resume:
        check_same_config(path, stored)
    source = None
    if spec.paired:
        source = Path(out) / config.vanilla().relpath / OFFLINE_CHECKPOINT
        if not source.exists():
            run_configuration(out, config.vanilla(), progress)
        if not source.exists():
            raise O2OError(missing_checkpoint_message(out, config))
    run = RunDir.create(path, stored, resume=resume)
    _, summary = execute(
        spec, run, resume=resume, progress=progress, offline_from=source, label=config.method.label
    )
    return summary


def missing_checkpoint_message(out: Path, config: Configuration) -> str:
    vanilla = Path(out) / config.vanilla().relpath
    return (
        f"{config.name} starts from the offline checkpoint of {vanilla}, a finished run without "
        f"its {OFFLINE_CHECKPOINT} (checkpoints are not committed to git); move that directory "
        "away and run the suite again to recreate it"
    )


def check_same_config(path: Path, expected: dict[str, Any]) -> None:
    """An interrupted run continues only under the configuration that started it."""
    stored = yaml.safe_load((path / CONFIG).read_text()) or {}
    stored.pop(DATASET_DIGEST, None)  # checked against the data itself (builder.check_dataset)
    expected = yaml.safe_load(yaml.safe_dump(expected, sort_keys=False))
    difference = first_difference(stored, expected)
    if difference is not None:
        raise O2OError(
            f"{path} was started with another configuration ({difference}); "
            "finish it with the original settings or choose another results directory"
        )


def first_difference(stored: Any, expected: Any, where: str = "") -> str | None:
    if isinstance(stored, dict) and isinstance(expected, dict):
        for key in sorted(set(stored) | set(expected), key=str):
            found = first_difference(stored.get(key), expected.get(key), f"{where}{key}.")
            if found is not None:
                return found
        return None
    if stored != expected:
        return f"{where.rstrip('.')}: {stored!r} there, {expected!r} now"
    return None


def status_of(out: Path, config: Configuration) -> str:
    """``finished``, ``interrupted`` or ``missing``."""
    path = Path(out) / config.relpath
    if (path / SUMMARY).exists():
        return "finished"
    return "interrupted" if (path / CONFIG).exists() else "missing"


def describe_outcome(outcome: Outcome) -> str:
    if outcome.status in ("failed", "diverged"):
        return f"{outcome.config.name}: {outcome.status.upper()} ({outcome.error})"
    summary = outcome.summary or {}
    off = np.mean(np.asarray(summary.get("offline_scores") or [np.nan], float))
    on = np.mean(np.asarray(summary.get("online_scores") or [np.nan], float))
    seconds = number(summary.get("seconds"))
    return f"{outcome.config.name}: offline {off:.1f} -> online {on:.1f} ({seconds:.0f}s, {outcome.status})"


def run_suite(
    suite: Suite,
    out: Path,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
) -> list[Outcome]:
    """Every configuration of ``suite`` in this process, in order; an error in one is reported
    and the others still run (the failed one resumes next time)."""
    echo = echo or (lambda line: print(line, flush=True))
    configs = suite.configurations()
    echo(plan_line(suite, out))
    outcomes: list[Outcome] = []
    for index, config in enumerate(configs, 1):
        before = status_of(out, config)
        if before != "finished":
            echo(f"[{index}/{len(configs)}] {config.name}: {_verb(before)}")
        try:
            summary = run_configuration(out, config, progress=progress)
            status = {"finished": "skipped", "interrupted": "resumed"}.get(before, "ran")
            outcome = Outcome(config, status, summary)
        except DivergenceError as error:
            outcome = Outcome(config, "diverged", None, str(error))
        except O2OError as error:
            outcome = Outcome(config, "failed", None, str(error))
        outcomes.append(outcome)
        echo(f"[{index}/{len(configs)}] {describe_outcome(outcome)}")
        kill_point("suite:between-runs")
    return outcomes


def plan_line(suite: Suite, out: Path) -> str:
    counts = {"finished": 0, "interrupted": 0, "missing": 0}
    for config in suite.configurations():
        counts[status_of(out, config)] += 1
    return (
        f"suite {suite.name}: {sum(counts.values())} configurations × {suite.seeds} seeds in {out} "
        f"({counts['finished']} finished, {counts['interrupted']} to resume, {counts['missing']} to run)"
    )


def _verb(status: str) -> str:
    return "resuming" if status == "interrupted" else "running"


def raise_for_failures(outcomes: list[Outcome]) -> None:
    failed = [o for o in outcomes if o.status in ("failed", "diverged")]
    if failed:
        names = "; ".join(f"{o.config.name}: {o.status}: {o.error}" for o in failed)
        raise O2OError(f"{len(failed)} of {len(outcomes)} configurations failed ({names})")
