"""o2o: offline-to-online reinforcement learning on a jitted JAX engine."""

__version__ = "0.1.0"
