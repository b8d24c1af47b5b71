"""Typed overrides of a config dataclass's fields, from the command line or a suite file."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from o2o.errors import ConfigError


def coerce_overrides(values: Mapping[str, Any], config_cls: type) -> dict[str, Any]:
    """``{"hidden_dims": [64, 64], "actor_lr": 1}`` -> field overrides of ``config_cls`` with
    the fields' own types (lists to tuples, ints to floats); unknown names are an error."""
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    overrides: dict[str, Any] = {}
    for raw_name, value in values.items():
        name = str(raw_name).strip().replace("-", "_")
        if name not in fields:
            raise ConfigError(
                f"{config_cls.__name__} has no option '{name}'; options: {', '.join(sorted(fields))}"
            )
        default = fields[name].default
        if isinstance(default, tuple) and isinstance(value, list):
            value = tuple(value)
        elif isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif isinstance(default, float) and isinstance(value, str):
            value = _number(name, value)  # YAML 1.1 reads "1e-4" as a string
        overrides[name] = value
    return overrides


def _number(name: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"option '{name}' expects a number, got '{text}'") from None
