"""User-facing errors: the CLI prints these as one line and exits with status 2."""

from __future__ import annotations

import difflib
import errno
import os
from collections.abc import Iterable


class O2OError(Exception):
    """Bad input from a user: a config value, a file, a name. Never a bug in o2o."""


class ConfigError(O2OError, ValueError):
    """An invalid hyperparameter or option."""


class DatasetError(O2OError):
    """A dataset file or directory that is missing, unreadable or malformed."""


class DiskFullError(O2OError):
    """A write failed for lack of space; the file being written was left as it was."""


def raise_if_disk_full(error: OSError, path: str | os.PathLike) -> None:
    """Turn a full disk (or an exhausted quota) while writing ``path`` into a DiskFullError;
    other OS errors are left to the caller."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        raise DiskFullError(
            f"no space left on device while writing {path} (nothing was half-written; "
            "free some space and try again; a run continues with --resume)"
        ) from None


def did_you_mean(name: str, choices: Iterable[str], n: int = 1) -> str:
    """``" (did you mean 'x'?)"`` with the ``n`` closest of ``choices`` to ``name``, or ``""``."""
    close = difflib.get_close_matches(str(name), sorted(choices), n=n, cutoff=0.6)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


def check(condition: bool, message: str, error: type[O2OError] = ConfigError) -> None:
    if not condition:
        raise error(message)


def check_positive(config: object, *names: str) -> None:
    """Each named field of ``config`` is > 0."""
    for name in names:
        value = getattr(config, name)
        check(value > 0, f"{name} must be positive, got {value}")


def check_non_negative(config: object, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        check(value >= 0, f"{name} must be non-negative, got {value}")


def check_fields(
    config: object,
    *,
    positive: tuple[str, ...] = (),
    non_negative: tuple[str, ...] = (),
    optional_positive: tuple[str, ...] = (),
    unit_interval: tuple[str, ...] = (),
    hidden_dims: tuple[str, ...] = (),
    choices: dict[str, tuple] | None = None,
) -> None:
    """The validation every agent and method config shares, one line per broken field:
    positive / non-negative numbers, numbers that may also be None, values in [0, 1],
    non-empty tuples of positive layer widths, and values from a fixed set."""
    check_positive(config, *positive)
    check_non_negative(config, *non_negative)
    for name in optional_positive:
        value = getattr(config, name)
        check(value is None or value > 0, f"{name} must be positive or None, got {value}")
    for name in unit_interval:
        value = getattr(config, name)
        check(0 <= value <= 1, f"{name} must be in [0, 1], got {value}")
    for name in hidden_dims:
        dims = getattr(config, name)
        check(
            len(dims) > 0 and all(isinstance(h, int) and h > 0 for h in dims),
            f"{name} must be a non-empty list of positive widths, got {dims}",
        )
    for name, options in (choices or {}).items():
        value = getattr(config, name)
        check(
            value in options, f"{name} must be one of {', '.join(map(str, options))}, got {value!r}"
        )
