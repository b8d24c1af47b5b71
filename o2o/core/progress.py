"""Training progress: step, updates/s, latest evaluation, elapsed time and ETA. A rich bar on a
terminal; elsewhere (a log file, a pipe, a cluster job) a plain line every
``$O2O_PROGRESS_EVERY`` seconds (default 30) and one at the end, since a bar redrawn in place
reaches a log only when its phase ends."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

PLAIN_EVERY_ENV = "O2O_PROGRESS_EVERY"
DEFAULT_PLAIN_EVERY = 30.0


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}"


class RunProgress:
    def __init__(
        self,
        total: int,
        description: str,
        enabled: bool = True,
        console: Console | None = None,
        plain_every: float | None = None,
        unit: str | None = None,
        note: str = "eval: -",
    ):
        """``unit`` (e.g. ``rows``, ``env steps``): the rate is of the steps themselves; None:
        of the ``updates`` given to ``advance_to`` (a training loop)."""
        self.enabled = enabled
        self.unit = unit
        self.total = total
        self.description = description
        self.console = console or Console()
        self.plain = enabled and not self.console.is_terminal
        if plain_every is None:
            plain_every = float(os.environ.get(PLAIN_EVERY_ENV) or DEFAULT_PLAIN_EVERY)
        self.plain_every = plain_every
        self._step = 0
        self._first_step: int | None = None
        self._last_line = time.perf_counter()
        self._last_eval = note
        self._rate = f"- {unit or 'upd'}/s"
        self._t0 = time.perf_counter()
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TextColumn("{task.fields[last_eval]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            disable=not enabled or self.plain,
            transient=False,
        )
        self._task = self._progress.add_task(
            description, total=total, rate=self._rate, last_eval=self._last_eval
        )

    def __enter__(self) -> RunProgress:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._progress.__exit__(*exc)
        if self.plain and exc[0] is None:  # a failing phase ends with its error, not a line
            self._plain_line()

    def advance_to(self, step: int, updates: int | None = None) -> None:
        if updates is not None:
            elapsed = max(time.perf_counter() - self._t0, 1e-9)
            # Before the first update (warm-up: SAMG's seed transitions, random steps) the
            # loop only collects data: say so rather than "0 upd/s".
            self._rate = (
                f"{updates / elapsed:,.0f} upd/s" if updates else "collecting, no updates yet"
            )
        if self._first_step is None:
            self._first_step = step
        if self.unit is not None and step > self._first_step:
            elapsed = max(time.perf_counter() - self._t0, 1e-9)
            self._rate = f"{(step - self._first_step) / elapsed:,.0f} {self.unit}/s"
        self._step = step
        self._progress.update(self._task, completed=step, rate=self._rate)
        if self.plain and time.perf_counter() - self._last_line >= self.plain_every:
            self._plain_line()

    def _plain_line(self) -> None:
        """``description: step/total (pct) | rate | last eval | elapsed | eta`` on one line."""
        self._last_line = time.perf_counter()
        elapsed = self._last_line - self._t0
        done = self._step - (self._first_step or 0)
        left = self.total - self._step
        eta = _clock(elapsed / done * left) if done > 0 and left > 0 else "-"
        percent = 100.0 * self._step / self.total if self.total else 100.0
        note = f"{self._last_eval} | " if self._last_eval else ""
        self.console.print(
            f"{self.description}: {self._step}/{self.total} ({percent:.0f}%) | {self._rate} | "
            f"{note}elapsed {_clock(elapsed)} | eta {eta}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )

    def note(self, text: str) -> None:
        """What the bar says beside the rate (the last evaluation's field): an evaluation
        under way, a phase's own news."""
        self._last_eval = text
        self._progress.update(self._task, last_eval=text)
        if self.plain and time.perf_counter() - self._last_line >= self.plain_every:
            self._plain_line()

    def report(self, row: dict) -> None:
        """The last row in the bar: its evaluation, or (a phase that does not evaluate) its
        first train metrics."""
        if "return" not in row:
            train = [
                (k.removeprefix("train/"), v) for k, v in row.items() if k.startswith("train/")
            ]
            text = " | ".join(f"{name} {value:.3g}" for name, value in train[:3])
            self._last_eval = text
            self._progress.update(self._task, last_eval=text)
            return
        text = f"return {row['return']:.1f}"
        if "normalized_score" in row:
            text += f" | score {row['normalized_score']:.1f}"
        if "success_rate" in row:
            text += f" | success {row['success_rate']:.2f}"
        self._last_eval = text
        self._progress.update(self._task, last_eval=text)


def evaluation_steps(bar: RunProgress, limit: int | None) -> Callable[[int], None]:
    """An ``on_step`` for ``o2o.envs.evaluation.evaluate`` that says in ``bar``'s note how
    far an evaluation inside a training phase has come (its episodes step together, so the
    longest one's step is the evaluation's progress)."""
    total = f"/{limit}" if limit else ""

    def on_step(step: int) -> None:
        bar.note(f"evaluating: env step {step}{total}")

    return on_step
