"""o2o: offline-to-online reinforcement learning on a jitted JAX engine.

``o2o.fit`` and ``o2o.load`` (o2o/api.py) are imported on first use, so ``import o2o`` stays
cheap (no JAX) for the CLI and the tools that only read run files."""

from typing import Any

__version__ = "0.1.0"
__all__ = ["fit", "load"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from o2o import api

        return getattr(api, name)
    raise AttributeError(f"module 'o2o' has no attribute {name!r}")
