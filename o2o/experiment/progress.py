"""A rich progress bar for training: step, updates/s, latest evaluation."""

from __future__ import annotations

import time
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


class RunProgress:
    def __init__(
        self, total: int, description: str, enabled: bool = True, console: Console | None = None
    ):
        self.enabled = enabled
        self.total = total
        self._last_eval = "eval: -"
        self._rate = "- upd/s"
        self._t0 = time.perf_counter()
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TextColumn("{task.fields[last_eval]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=not enabled,
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

    def advance_to(self, step: int, updates: int | None = None) -> None:
        if updates is not None:
            elapsed = max(time.perf_counter() - self._t0, 1e-9)
            self._rate = f"{updates / elapsed:,.0f} upd/s"
        self._progress.update(self._task, completed=step, rate=self._rate)

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
