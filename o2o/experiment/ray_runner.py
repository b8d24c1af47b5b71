"""A suite on a Ray cluster: one task per configuration.

The driver owns the results directory. A task gets the files it needs as bytes (its own run
directory when resuming; for a paired method, the offline checkpoint and offline metrics of
the run it starts from: vanilla's, or a base variant's), runs the configuration in a scratch
directory on whichever node Ray picks, and returns every file of its run directory; the driver
writes them into the results directory. So workers need the package and the datasets, but no shared filesystem. A paired
method is submitted when the run it starts from has come back.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from o2o.errors import O2OError
from o2o.experiment.checkpoint import atomic_write_bytes
from o2o.experiment.pipeline import OFFLINE_CHECKPOINT
from o2o.experiment.runner import (
    Outcome,
    describe_outcome,
    missing_checkpoint_message,
    plan_line,
    status_of,
)
from o2o.experiment.runs import METRICS
from o2o.experiment.suite import Configuration, Suite

Files = dict[str, bytes]  # path relative to the results directory -> contents


def connect(address: str, num_cpus: int | None = None) -> Any:
    """``auto``: the running cluster (``ray start`` / ``$RAY_ADDRESS``), else a local instance;
    ``local``: always a new local instance; anything else: that cluster's address."""
    try:
        import ray
    except ImportError:
        raise O2OError("--ray needs the ray package: pip install 'o2o-rl[ray]'") from None
    quiet = {"include_dashboard": False, "log_to_driver": False}
    if address == "local":
        ray.init(num_cpus=num_cpus, **quiet)
    elif address == "auto":
        try:
            ray.init(address="auto", log_to_driver=False)
        except ConnectionError:
            ray.init(num_cpus=num_cpus, **quiet)
    else:
        try:
            ray.init(address=address, log_to_driver=False)
        except ConnectionError as error:
            raise O2OError(f"cannot reach the Ray cluster at {address}: {error}") from None
    return ray


def run_suite_on_ray(
    suite: Suite,
    out: Path,
    address: str = "auto",
    num_cpus: int | None = None,
    cpus_per_task: float = 1.0,
    echo: Callable[[str], None] | None = None,
) -> list[Outcome]:
    """Every configuration of ``suite`` as a Ray task; outcomes in the suite's order."""
    echo = echo or (lambda line: print(line, flush=True))
    out = Path(out)
    configs = suite.configurations()
    echo(plan_line(suite, out))
    ray = connect(address, num_cpus)
    try:
        task = ray.remote(num_cpus=cpus_per_task, max_retries=0)(run_in_scratch)
        outcomes: dict[Path, Outcome] = {}
        # Paired methods wait for the run they start from (vanilla's, or a base variant's: it
        # may not be in the suite).
        waiting: dict[Path, list[Configuration]] = {}
        to_submit: list[Configuration] = []
        for config in configs:
            origin = config.offline_source()
            if status_of(out, config) == "finished":
                outcomes[config.relpath] = Outcome(config, "skipped", _summary(out, config))
            elif origin is not None and not (out / origin.relpath / OFFLINE_CHECKPOINT).exists():
                if status_of(out, origin) == "finished":
                    outcomes[config.relpath] = Outcome(
                        config, "failed", None, missing_checkpoint_message(out, config)
                    )
                    continue
                if origin.relpath not in waiting:
                    waiting[origin.relpath] = []
                    if all(c.relpath != origin.relpath for c in configs):
                        to_submit.append(origin)
                waiting[origin.relpath].append(config)
            else:
                to_submit.append(config)
        running: dict[Any, tuple[Configuration, str]] = {}

        def submit(config: Configuration) -> None:
            before = status_of(out, config)
            running[task.remote(config, files_for(out, config))] = (config, before)

        for config in to_submit:
            submit(config)
        done = 0
        while running:
            ready, _ = ray.wait(list(running), num_returns=1)
            config, before = running.pop(ready[0])
            try:
                files, summary, error = ray.get(ready[0])
            except Exception as failure:  # a crash in the worker: report it, keep the others going
                files, summary, error = {}, None, str(failure).strip().splitlines()[-1]
            for relative, payload in files.items():
                atomic_write_bytes(out / relative, payload)
            status = "failed" if error else ("resumed" if before == "interrupted" else "ran")
            outcome = Outcome(config, status, summary, error)
            outcomes[config.relpath] = outcome
            done += 1
            echo(f"[{done}] {describe_outcome(outcome)}")
            for dependent in waiting.pop(config.relpath, []):
                if error:
                    outcomes[dependent.relpath] = Outcome(
                        dependent, "failed", None, f"the run it starts from failed: {error}"
                    )
                else:
                    submit(dependent)
    finally:
        ray.shutdown()
    return [outcomes[c.relpath] for c in configs if c.relpath in outcomes]


def files_for(out: Path, config: Configuration) -> Files:
    """What a task needs from the results directory."""
    files = _read_tree(out, config.relpath)
    origin = config.offline_source()
    if origin is not None:
        source = origin.relpath
        for name in (OFFLINE_CHECKPOINT, METRICS):
            if (out / source / name).exists():
                files[str(source / name)] = (out / source / name).read_bytes()
    return files


def run_in_scratch(config: Configuration, files: Files) -> tuple[Files, dict | None, str | None]:
    """The Ray task: run ``config`` in a scratch results directory seeded with ``files``;
    every file of its run directory comes back (also after a failure, so it can resume)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from o2o.core import compile_cache
    from o2o.experiment.runner import run_configuration

    compile_cache.enable()
    with tempfile.TemporaryDirectory(prefix="o2o-ray-") as scratch:
        root = Path(scratch)
        for relative, payload in files.items():
            atomic_write_bytes(root / relative, payload)
        summary, error = None, None
        try:
            summary = run_configuration(root, config, progress=False)
        except O2OError as failure:
            error = str(failure)
        return _read_tree(root, config.relpath), summary, error


def _read_tree(root: Path, relative: Path) -> Files:
    base = root / relative
    if not base.is_dir():
        return {}
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(base.rglob("*"))
        if path.is_file() and not path.name.startswith(".")
    }


def _summary(out: Path, config: Configuration) -> dict | None:
    from o2o.experiment.runs import RunDir

    return RunDir(out / config.relpath).summary()
