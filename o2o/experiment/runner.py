"""Run a suite: what has no finished result yet, skipping what is done, resuming what was
interrupted.

A configuration's run directory is finished when it holds ``summary.json``; a directory with
``config.yaml`` but no summary was interrupted and continues from its last checkpoint. A
paired method (anything but vanilla) starts from the offline checkpoint of the vanilla run of
the same (dataset, algorithm), which runs first if it is missing; so does a variant of a method
that trains offline from its base variant's run (``Configuration.offline_source``).
Checkpoints are not committed to git, so in a fresh clone a finished source run has none: its
offline phase is then trained again (in ``<source>/.offline-recreate/``, resumable) and the
checkpoint kept only if the offline rows come out as the finished run recorded them (training
is deterministic; timings aside), which also checks that code and data have not changed since.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator
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
    path = Path(out) / config.relpath
    finished = RunDir(path).summary()
    if finished is not None:
        return finished
    with claimed(path):
        return _run_claimed(out, config, path, progress)


def _run_claimed(out: Path, config: Configuration, path: Path, progress: bool) -> dict[str, Any]:
    from o2o.experiment.builder import execute

    finished = RunDir(path).summary()  # finished by the process that held it before
    if finished is not None:
        return finished
    spec = config.spec()
    stored = spec.stored()
    resume = (path / CONFIG).exists()
    if resume:
        check_same_config(path, stored)
    source = None
    origin = config.offline_source()
    if origin is not None:
        source = Path(out) / origin.relpath / OFFLINE_CHECKPOINT
        if not source.exists():
            run_configuration(out, origin, progress)
        if not source.exists():
            recreate_offline_checkpoint(out, origin, progress)
    run = RunDir.create(path, stored, resume=resume)
    _, summary = execute(
        spec, run, resume=resume, progress=progress, offline_from=source, label=config.method.label
    )
    return summary


@contextlib.contextmanager
def claimed(path: Path) -> Iterator[None]:
    """``path``'s run for this process alone, through a lock file beside it
    (``.<name>.running``: host and pid). Processes may share one results directory (``bench
    run --only-methods``), and a paired method runs its missing source itself: a second
    process reaching a run another one holds stops with one line instead of writing the same
    files. The lock of a process that is gone (killed) is taken over; one held on another host
    is refused, as its process cannot be checked from here."""
    lock = lock_path(path)
    lock.parent.mkdir(parents=True, exist_ok=True)
    mine = f"{socket.gethostname()} {os.getpid()}"
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                holder = lock.read_text().split()
            except FileNotFoundError:
                continue  # released meanwhile
            if _dead_here(holder):
                with contextlib.suppress(FileNotFoundError):
                    lock.unlink()
                continue
            raise O2OError(
                f"{path} is being run by process {' on '.join(reversed(holder)) or '?'} "
                f"({lock}; delete it if that process is gone)"
            ) from None
        with os.fdopen(fd, "w") as handle:
            handle.write(mine)
        break
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            if lock.read_text() == mine:
                lock.unlink()


def lock_path(path: Path) -> Path:
    return path.parent / f".{path.name}.running"


def _dead_here(holder: list[str]) -> bool:
    """A lock's holder (host, pid) is a process of this host that has ended."""
    return len(holder) == 2 and holder[0] == socket.gethostname() and not _alive(holder[1])


def _alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def missing_checkpoint_message(out: Path, config: Configuration) -> str:
    origin = config.offline_source()
    assert origin is not None
    source = Path(out) / origin.relpath
    return (
        f"{config.name} starts from the offline checkpoint of {source}, a finished run without "
        f"its {OFFLINE_CHECKPOINT} (checkpoints are not committed to git); run the suite once "
        "without --ray: it trains that offline phase again and checks it against the run's rows"
    )


RECREATE_DIR = ".offline-recreate"  # hidden: reports skip it
TIMING_FIELDS = frozenset({"wall_time", "seconds"})


def recreate_offline_checkpoint(out: Path, vanilla: Configuration, progress: bool) -> None:
    """The offline checkpoint of the finished run ``vanilla``, trained again and checked
    against the run's own offline rows (module docstring)."""
    from o2o.experiment.builder import check_dataset

    path = Path(out) / vanilla.relpath
    scratch = path / RECREATE_DIR
    spec = vanilla.spec()
    resume = (scratch / CONFIG).exists()
    if resume:
        check_same_config(scratch, spec.stored())
    run = RunDir.create(scratch, spec.stored(), resume=resume)
    pipeline = spec.build()
    check_dataset(run, pipeline.dataset)
    if progress:
        print(f"{vanilla.name}: no {OFFLINE_CHECKPOINT} (not committed); training it again")
    pipeline.run_offline(run, resume=resume, progress=progress)
    recorded = offline_rows(RunDir(path))
    recreated = offline_rows(run)
    if recreated != recorded:
        where = next(
            (i for i, (a, b) in enumerate(zip(recorded, recreated, strict=False)) if a != b),
            min(len(recorded), len(recreated)),
        )
        difference = (
            first_difference(recorded[where], recreated[where])
            if where < min(len(recorded), len(recreated))
            else f"{len(recorded)} offline rows recorded, {len(recreated)} now"
        )
        raise O2OError(
            f"{path}: the offline phase trained again differs from the recorded one "
            f"(row {where}: {difference}); the code or the data changed since, so the paired "
            f"methods cannot start from it: rerun the vanilla run (move {path} away) or "
            "restore the code it was made with"
        )
    os.replace(scratch / OFFLINE_CHECKPOINT, path / OFFLINE_CHECKPOINT)
    shutil.rmtree(scratch)


def offline_rows(run: RunDir) -> list[dict[str, Any]]:
    return [
        {k: v for k, v in row.items() if k not in TIMING_FIELDS}
        for row in run.rows()
        if row.get("phase") == "offline"
    ]


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


def describe_status(out: Path, config: Configuration) -> str:
    """A configuration's state for ``bench run --dry-run``: its scores once finished; the
    phase and step of its last row while a live process holds it (``running``, with the time
    since that row was written, so a stalled run shows) or after one stopped
    (``interrupted``); ``missing``."""
    path = Path(out) / config.relpath
    status = status_of(out, config)
    if status == "finished":
        return f"finished: {scores_text(RunDir(path).summary() or {})}"
    if status == "missing":
        return status
    rows = [row for row in RunDir(path).rows() if "step" in row]
    where = f" at {rows[-1].get('phase', '?')} step {int(rows[-1]['step']):,}" if rows else ""
    try:
        holder = lock_path(path).read_text().split()
    except FileNotFoundError:
        holder = []
    if not holder or _dead_here(holder):
        return f"interrupted{where}"
    host, pid = (holder + ["?", "?"])[:2]
    written = [p.stat().st_mtime for p in path.iterdir() if p.suffix in (".jsonl", ".json")]
    since = ""
    if written:
        minutes = (time.time() - max(written)) / 60
        since = f", last write {minutes:.0f} min ago"
    return f"running{where} (pid {pid} on {host}{since})"


def describe_outcome(outcome: Outcome) -> str:
    if outcome.status in ("failed", "diverged"):
        return f"{outcome.config.name}: {outcome.status.upper()} ({outcome.error})"
    summary = outcome.summary or {}
    seconds = number(summary.get("seconds"))
    return f"{outcome.config.name}: {scores_text(summary)} ({seconds:.0f}s, {outcome.status})"


def scores_text(summary: dict[str, Any]) -> str:
    """``offline X -> online Y``, seed means; an offline-only run (a budget study's) has no
    online part."""
    off = np.mean(np.asarray(summary.get("offline_scores") or [np.nan], float))
    if not summary.get("online_scores"):
        return f"offline {off:.1f}"
    on = np.mean(np.asarray(summary["online_scores"], float))
    return f"offline {off:.1f} -> online {on:.1f}"


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
