"""Fine-tuning methods, one file each, and the registry that names them.

``--finetune a+b`` composes registered methods; options go to one method by its field name
(``threshold=0.4``) or, where several methods are on, by ``label.field`` (``samg.threshold=0.4``).
A new method is one file plus one ``register`` line below.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from o2o.core.overrides import coerce_overrides
from o2o.errors import ConfigError, did_you_mean
from o2o.finetune.base import SLOTS, VANILLA, Method, Methods
from o2o.finetune.famo2o import FamO2O, FamO2OConfig
from o2o.finetune.o2ppo import O2PPO, O2PPOConfig
from o2o.finetune.o2sac import O2SAC, O2SACConfig
from o2o.finetune.o2td3 import O2TD3, O2TD3Config
from o2o.finetune.samg import SAMG, SAMGConfig
from o2o.finetune.sera import SERA, SERAConfig

REGISTRY: dict[str, tuple[type[Method], dict[str, Any]]] = {}


def register(cls: type[Method], label: str | None = None, **preset: Any) -> None:
    """``label`` (default: the method's name) builds ``cls`` with the ``preset`` options."""
    REGISTRY[label or cls.name] = (cls, preset)


register(SAMG)
register(SAMG, "samg-even", weight="even")
register(SAMG, "samg-random", weight="random")
register(SAMG, "samg-embedding", weight="embedding")
register(SAMG, "samg-unguided", weight="none", cons_weighting="plain")
register(SERA)
register(SERA, "sera-v", condition="v")  # VCSE: conditioned on V(s) instead of Q(s, a)
register(SERA, "sera-random-q", critic="random")  # a randomly initialised conditioning critic
register(SERA, "sera-none-tanh", squash="none")  # r + λ·r_int
register(FamO2O)
register(FamO2O, "famo2o-fixed", beta_source="fixed")  # β = beta (default: mid-range)
register(FamO2O, "famo2o-random", beta_source="random")  # β ~ U[lo, hi] online
register(O2PPO)  # over an offline iql run (PPO online)
register(O2PPO, "o2ppo-interval", reference_update="interval")  # π_ref ← π every 4 evaluations
register(O2PPO, "o2ppo-no-pr", value_fit=False)  # ablations: no value fit (re-evaluation)
register(O2PPO, "o2ppo-no-cf", reference_weight=0.0)  # no reference-advantage blend
# "-plain": none of the parts, only the method's setup (networks, UTD, replay, warm-up): the
# control that isolates what the parts add, paired with the base's offline checkpoint.
register(O2PPO, "o2ppo-plain", value_fit=False, reference_weight=0.0)
register(O2SAC)  # over an offline cql run (SAC online)
register(O2TD3)  # over an offline td3bc run (TD3 online)
for _cls in (O2SAC, O2TD3):
    register(_cls, f"{_cls.name}-no-pr", reevaluate=False)  # ablations, methods.md §2.5
    register(_cls, f"{_cls.name}-no-va", align=False)
    register(_cls, f"{_cls.name}-no-cf", constrain=False)
    register(_cls, f"{_cls.name}-interval", reference_update="interval")
    register(_cls, f"{_cls.name}-plain", reevaluate=False, align=False, constrain=False)


def method_labels() -> list[str]:
    """Every name ``--finetune`` accepts (besides ``vanilla`` and compositions)."""
    return ["vanilla", *REGISTRY]


def parse_labels(name: str) -> tuple[str, ...]:
    """``"samg+sera"`` -> ``("samg", "sera")``; ``"vanilla"`` -> ``()``."""
    labels = tuple(part.strip() for part in str(name).split("+"))
    if labels == ("vanilla",):
        return ()
    for label in labels:
        if label not in REGISTRY:
            raise ConfigError(
                f"unknown fine-tuning method '{label}'{did_you_mean(label, REGISTRY)}; choose "
                f"from {', '.join(method_labels())}, or join several with '+'"
            )
    return labels


def split_options(labels: tuple[str, ...], options: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Route ``{"threshold": .4}`` / ``{"samg.threshold": .4}`` to each method's own options."""
    routed: dict[str, dict[str, Any]] = {label: {} for label in labels}
    for key, value in options.items():
        prefix, dot, field = str(key).partition(".")
        if dot:
            if prefix not in routed:
                raise ConfigError(
                    f"method option '{key}' names '{prefix}', which is not among "
                    f"{', '.join(labels) or 'the methods on (vanilla takes no options)'}"
                )
            routed[prefix][field] = value
        elif len(labels) == 1:
            routed[labels[0]][key] = value
        else:
            raise ConfigError(
                f"method option '{key}' is ambiguous with {'+'.join(labels) or 'vanilla'}: "
                f"write it as LABEL.{key}"
                if labels
                else "vanilla fine-tuning takes no method options"
            )
    return routed


def coerce_method_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """Typed options (strings from the command line, lists from YAML) for ``name``'s methods,
    with the keys as given; unknown options and values a method's config refuses are an
    error (here, when a suite is loaded, not when its run starts)."""
    labels = parse_labels(name)
    typed: dict[str, Any] = {}
    for label, own in split_options(labels, options).items():
        method_config(label, own)
        coerced = coerce_overrides(own, REGISTRY[label][0].config_class)
        prefix = f"{label}." if len(labels) > 1 or any("." in str(k) for k in options) else ""
        typed.update({f"{prefix}{k}": v for k, v in coerced.items()})
    return typed


def with_domain(name: str, options: dict[str, Any], domain: str) -> dict[str, Any]:
    """``options`` with the run's ``domain`` (locomotion, maze) given to every method of
    ``name`` whose config has a ``domain`` field and that was not given one (FamO2O's β
    range and balance update period are per domain)."""
    labels = parse_labels(name)
    out = dict(options)
    for label in labels:
        names = {f.name for f in fields(REGISTRY[label][0].config_class)}
        key = f"{label}.domain" if len(labels) > 1 else "domain"
        if "domain" in names and key not in out and f"{label}.domain" not in out:
            out[key] = domain
    return out


def with_dataset(name: str, options: dict[str, Any], dataset: str) -> dict[str, Any]:
    """``options`` with the run's dataset name given to every method of ``name`` whose config
    has a ``dataset`` field and that was not given one (OCR-CFT's per-level presets)."""
    labels = parse_labels(name)
    out = dict(options)
    for label in labels:
        names = {f.name for f in fields(REGISTRY[label][0].config_class)}
        key = f"{label}.dataset" if len(labels) > 1 else "dataset"
        given = key in out or f"{label}.dataset" in out or "dataset" in REGISTRY[label][1]
        if "dataset" in names and not given:
            out[key] = str(dataset)
    return out


def declared_online_algo(name: str, given: str | None) -> str | None:
    """The online algorithm of ``name``'s methods (``Method.online_algo``), or ``given``; a
    ``given`` one that differs from a method's is refused."""
    declared = {REGISTRY[label][0].online_algo for label in parse_labels(name)} - {None}
    if len(declared) > 1:
        raise ConfigError(f"{name} combines methods that fine-tune with {' and '.join(declared)}")
    if not declared:
        return given
    (algo,) = declared
    if given is not None and given.lower() != algo:
        raise ConfigError(f"{name} fine-tunes with {algo}; drop --online-algo {given}")
    return algo


def method_online_defaults(name: str, options: dict[str, Any], online_algo: str) -> dict[str, Any]:
    """The online agent options the methods of ``name`` set (``online_agent_defaults``)."""
    labels = parse_labels(name)
    defaults: dict[str, Any] = {}
    for label, own in split_options(labels, options).items():
        cls = REGISTRY[label][0]
        defaults.update(cls.online_agent_defaults(method_config(label, own), online_algo))
    return defaults


def method_agent_defaults(name: str, options: dict[str, Any], algo: str) -> dict[str, Any]:
    """The agent options the methods of ``name`` set for ``algo`` (``Method.agent_defaults``),
    later methods winning; only ``trains_offline`` methods are asked."""
    labels = parse_labels(name)
    defaults: dict[str, Any] = {}
    for label, own in split_options(labels, options).items():
        cls = REGISTRY[label][0]
        if cls.trains_offline:
            defaults.update(cls.agent_defaults(method_config(label, own), algo))
    return defaults


def method_config(label: str, options: dict[str, Any]) -> Any:
    """The config of the registered method ``label``: its preset with ``options``, validated."""
    cls, preset = REGISTRY[label]
    typed = coerce_overrides(options, cls.config_class)
    try:
        return cls.config_class(**{**preset, **typed})
    except TypeError as error:
        names = ", ".join(f.name for f in fields(cls.config_class))
        raise ConfigError(f"{error}; {label} options: {names}") from None


def offline_twin(name: str, options: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """(label, options) of the run whose offline phase ``name`` with ``options`` shares: for a
    variant of a ``trains_offline`` method that differs from its base (the label registered
    without a preset) only in ``online_variant_options`` (famo2o-fixed, famo2o-random: the
    base famo2o with the other options); None where it trains its own offline phase."""
    labels = parse_labels(name)
    if len(labels) != 1:
        return None
    label = labels[0]
    cls, preset = REGISTRY[label]
    variant = cls.online_variant_options
    if not cls.trains_offline or not variant or not set(preset) <= variant:
        return None
    base = next((other for other, (c, p) in REGISTRY.items() if c is cls and not p), None)
    shared = {k: v for k, v in options.items() if str(k).split(".")[-1] not in variant}
    if base is None or (base == label and shared == options):
        return None
    return base, shared


def budget_options(
    name: str, options: dict[str, Any], offline_steps: int, online_steps: int
) -> dict[str, Any]:
    """``options`` with what the methods of ``name`` fit to the budget
    (``Method.fit_to_budget``) written out, keyed as the given options are: the value a run
    used is in its config.yaml, so resuming it or reading it back never refits."""
    labels = parse_labels(name)
    methods = make_methods(name, options, 0, 0)  # configs only: no dataset sizes needed
    fitted = methods.fit_to_budget(offline_steps, online_steps)
    out = dict(options)
    prefixed = len(labels) > 1 or any("." in str(k) for k in options)
    for label, before, after in zip(labels, methods, fitted, strict=True):
        for f in fields(before.config):
            value = getattr(after.config, f.name)
            if getattr(before.config, f.name) != value:
                out[f"{label}.{f.name}" if prefixed else f.name] = value
    return out


def make_methods(name: str, options: dict[str, Any], obs_dim: int, act_dim: int) -> Methods:
    """The composition ``name`` (e.g. ``samg+sera``) with ``options`` for a dataset's sizes."""
    labels = parse_labels(name)
    built = []
    for label, own in split_options(labels, options).items():
        config = method_config(label, own)
        method = REGISTRY[label][0](config, obs_dim, act_dim)
        method.label = label
        built.append(method)
    return Methods(tuple(built))


__all__ = ["REGISTRY", "SAMG", "SERA", "SLOTS", "VANILLA", "Method", "Methods", "SAMGConfig"]
__all__ += ["FamO2O", "FamO2OConfig", "SERAConfig", "O2PPO", "O2PPOConfig"]
__all__ += ["O2SAC", "O2SACConfig", "O2TD3", "O2TD3Config"]
__all__ += ["coerce_method_options", "make_methods", "method_labels", "parse_labels", "register"]
__all__ += ["budget_options", "method_agent_defaults", "with_domain", "with_dataset"]
__all__ += ["declared_online_algo", "method_online_defaults", "offline_twin"]
