"""Fine-tuning methods, one file each; ``make_method`` builds one by name."""

from __future__ import annotations

import dataclasses
from typing import Any

from o2o.errors import ConfigError
from o2o.finetune.base import FinetuneMethod, Prepared, Vanilla
from o2o.finetune.samg import SAMG, SAMGConfig

METHODS = ("vanilla", "samg", "samg-even", "samg-random", "samg-embedding")


def method_config_class(name: str) -> type | None:
    return SAMGConfig if name.startswith("samg") else None


def make_method(name: str, options: dict[str, Any], obs_dim: int, act_dim: int) -> FinetuneMethod:
    """The method ``name`` with config ``options`` for a dataset's dimensions."""
    if name not in METHODS:
        raise ConfigError(f"unknown fine-tuning method '{name}'; choose from {', '.join(METHODS)}")
    if name == "vanilla":
        if options:
            raise ConfigError("vanilla fine-tuning takes no --method-set options")
        return Vanilla()
    try:
        config = SAMGConfig.ablation(name, **options)
    except TypeError as error:
        fields = ", ".join(f.name for f in dataclasses.fields(SAMGConfig))
        raise ConfigError(f"{error}; SAMG options: {fields}") from None
    method = SAMG(config, obs_dim, act_dim)
    method.name = name
    return method


__all__ = ["METHODS", "SAMG", "FinetuneMethod", "Prepared", "SAMGConfig", "Vanilla", "make_method"]
