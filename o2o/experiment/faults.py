"""Named fault points for the kill -9 suite (``tests/test_kill.py``).

``O2O_KILL_AT=<point>:<n>`` makes the process SIGKILL itself the n-th time it reaches
``point`` (``kill_point(point)`` in the code; the points are listed in the README's
"Resumability"). Unset, a point costs one dict lookup done once per process.
"""

from __future__ import annotations

import os
import signal

_ENV = "O2O_KILL_AT"


def _target() -> tuple[str, int] | None:
    setting = os.environ.get(_ENV)
    if not setting:
        return None
    point, _, nth = setting.rpartition(":")
    return point, int(nth)


_TARGET = _target()
_hits: dict[str, int] = {}


def kill_point(point: str) -> None:
    """SIGKILL this process if it is the n-th arrival at ``point`` that ``O2O_KILL_AT`` names."""
    if _TARGET is None or _TARGET[0] != point:
        return
    _hits[point] = _hits.get(point, 0) + 1
    if _hits[point] == _TARGET[1]:
        os.kill(os.getpid(), signal.SIGKILL)
