"""Command-line plumbing every ``o2o`` subcommand shares: one-line errors and NAME=VALUE
options. Bad input never produces a traceback: an argument error prints one line to stderr
and exits with status 2."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import yaml

from o2o.errors import ConfigError


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, status 2, like every other bad input
        raise SystemExit(fail(f"{self.prog}: {message}"))


def parse_pairs(pairs: list[str], flag: str = "--set") -> dict[str, Any]:
    """``["actor_lr=1e-4", "hidden_dims=[64,64]"]`` -> ``{"actor_lr": 1e-4, ...}`` (YAML
    values; typing against a config happens where the config is known)."""
    values: dict[str, Any] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep:
            raise ConfigError(f"{flag} expects NAME=VALUE, got '{pair}'")
        try:
            values[name] = yaml.safe_load(text)
        except yaml.YAMLError:
            raise ConfigError(f"{flag} {name}: '{text}' is not a value (YAML)") from None
    return values
