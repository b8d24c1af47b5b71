"""Typed overrides of a config dataclass's fields, from the command line or a suite file."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, Union

from o2o.errors import ConfigError


def coerce_overrides(values: Mapping[str, Any], config_cls: type) -> dict[str, Any]:
    """``{"hidden_dims": [64, 64], "actor_lr": 1}`` -> field overrides of ``config_cls`` typed
    by the fields' annotations (lists to tuples, ints to floats, "1e-4" to a number); an
    unknown name or a value of the wrong kind is a one-line ConfigError."""
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    hints = typing.get_type_hints(config_cls)
    overrides: dict[str, Any] = {}
    for raw_name, value in values.items():
        name = str(raw_name).strip().replace("-", "_")
        if name not in fields:
            raise ConfigError(
                f"{config_cls.__name__} has no option '{name}'; options: {', '.join(sorted(fields))}"
            )
        hint = hints.get(name, Any)
        try:
            overrides[name] = _typed(value, hint)
        except _Mismatch:
            raise ConfigError(f"option '{name}' expects {_describe(hint)}, got {value!r}") from None
    return overrides


class _Mismatch(Exception):
    pass


def _typed(value: Any, hint: Any) -> Any:
    """``value`` as ``hint`` (the types config fields use); other annotations pass it as is."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return _typed(value, option)
            except _Mismatch:
                continue
        raise _Mismatch
    if origin is Literal:
        if value in args:
            return value
        raise _Mismatch
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise _Mismatch
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_typed(v, args[0]) for v in value)
        if args and len(args) != len(value):
            raise _Mismatch
        return (
            tuple(_typed(v, a) for v, a in zip(value, args, strict=True)) if args else tuple(value)
        )
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if isinstance(value, bool) and hint in (int, float):
        raise _Mismatch  # YAML's true is not a number here
    if hint is int:
        if isinstance(value, int):
            return value
        raise _Mismatch
    if hint is float:
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" as a string
            try:
                return float(value)
            except ValueError:
                raise _Mismatch from None
        raise _Mismatch
    if hint is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    return value


_KINDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
_PLURAL = {bool: "true/false values", int: "integers", float: "numbers", str: "strings"}


def _describe(hint: Any) -> str:
    """What a value of ``hint`` looks like, for an error message."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        options = [_describe(a) for a in args if a is not type(None)]
        return " or ".join(options + (["null"] if type(None) in args else []))
    if origin is Literal:
        return "one of " + ", ".join(map(str, args))
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            example = ", e.g. [256, 256]" if args[0] is int else ""
            return f"a list of {_PLURAL.get(args[0], 'values')}{example}"
        return f"a list of {len(args)} values" if args else "a list"
    return _KINDS.get(hint, f"a {getattr(hint, '__name__', hint)}")
