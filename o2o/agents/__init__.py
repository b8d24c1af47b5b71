"""One file per algorithm. ``make_agent(name, **overrides)`` builds any of them by name."""

from __future__ import annotations

from typing import Any

from o2o.agents.awac import AWAC, AWACConfig
from o2o.agents.bc import BC, BCConfig
from o2o.agents.calql import CalQL, CalQLConfig
from o2o.agents.cql import CQL, CQLConfig
from o2o.agents.iql import IQL, IQLConfig
from o2o.agents.ppo import PPO, PPOConfig
from o2o.agents.sac import SAC, SACConfig
from o2o.agents.spot import SPOT, SPOTConfig
from o2o.agents.td3 import TD3, TD3Config
from o2o.agents.td3bc import TD3BC, TD3BCConfig
from o2o.errors import ConfigError

CONFIGS: dict[str, type] = {"sac": SACConfig, "td3": TD3Config}
CONFIGS.update({"bc": BCConfig, "td3bc": TD3BCConfig, "awac": AWACConfig, "iql": IQLConfig})
CONFIGS.update({"cql": CQLConfig, "calql": CalQLConfig, "spot": SPOTConfig})
CONFIGS.update({"ppo": PPOConfig})
# Online RL algorithms (no offline regulariser): they train from scratch on an env, and can
# also start from a dataset; every other algorithm is an offline one.
ONLINE_ALGORITHMS = ("sac", "td3", "ppo")


def make_agent(name: str, **overrides: Any):
    """The agent called ``name`` with config fields overridden."""
    try:
        config_cls = CONFIGS[name.lower()]
    except KeyError:
        raise ConfigError(
            f"unknown algorithm '{name}'; choose from {', '.join(sorted(CONFIGS))}"
        ) from None
    return config_cls(**overrides).create()


def domain_config(name: str, domain: str | None = "locomotion") -> Any:
    """The config of algorithm ``name`` with its CORL preset for ``domain`` (locomotion or
    maze); algorithms without presets (SAC, TD3) and ``domain=None`` give the plain defaults."""
    config_cls = CONFIGS[name]
    if domain and hasattr(config_cls, "for_domain"):
        return config_cls.for_domain(domain)
    return config_cls()


__all__ = [
    "CONFIGS",
    "ONLINE_ALGORITHMS",
    "SAC",
    "SACConfig",
    "TD3",
    "TD3Config",
    "domain_config",
    "make_agent",
]
__all__ += ["AWAC", "AWACConfig", "BC", "BCConfig", "IQL", "IQLConfig", "TD3BC", "TD3BCConfig"]
__all__ += ["CQL", "CQLConfig", "CalQL", "CalQLConfig", "SPOT", "SPOTConfig", "PPO", "PPOConfig"]
