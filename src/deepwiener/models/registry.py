"""The registry of model kinds: one table from names to kinds (``models.base.Model`` subclasses).

A kind is registered under its kind name (``config_class.kind``: what model files store) and is built under its
*names*: its kind name, or its ``variants`` (``rnn`` is built as ``lstm`` or ``gru``). ``deepwiener.models``
registers the built-in kinds; ``register_kind`` adds one of your own.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import torch

from deepwiener.errors import ConfigError, DeepWienerError, unknown_name
from deepwiener.models.base import CAPABILITIES, TRAINERS, Model

logger = logging.getLogger(__name__)

_KINDS: dict[str, type[Model]] = {}
_NAMES: dict[str, type[Model]] = {}
_FIXED: dict[str, Mapping[str, Any]] = {}

MODEL_KINDS: Mapping[str, type[Model]] = MappingProxyType(_NAMES)
"""The names under which models are built (``build_model``, ``[model] kind``, ``--model``), each with its class: a
live, read-only view of the registry."""
FILE_KINDS: Mapping[str, type[Model]] = MappingProxyType(_KINDS)
"""The kind names model files may hold, each with its class (a live, read-only view)."""


def register_kind(cls: type[Model]) -> type[Model]:
    """Register a model kind (usable as a class decorator).

    Raises:
        ConfigError: ``cls`` is not a ``Model`` subclass, its config has no ``kind`` constant or lacks a field of
            the protocol, its trainer or capabilities are unknown, or one of its names is taken by another kind.
    """
    if not (isinstance(cls, type) and issubclass(cls, Model)):
        raise ConfigError(f"a model kind must be a subclass of deepwiener.models.Model, got {cls!r}")
    config_class = getattr(cls, "config_class", None)
    kind = getattr(config_class, "kind", None)
    if not isinstance(kind, str) or not kind:
        raise ConfigError(f"{cls.__name__}.config_class must be a config dataclass with a class constant 'kind'")
    fields = {f.name for f in dataclasses.fields(config_class)} if dataclasses.is_dataclass(config_class) else set()
    missing = sorted({"n_u", "n_y", "dt", "seed"} - fields) if cls.buildable else []
    if missing:
        raise ConfigError(f"{config_class.__name__} lacks the field(s) {missing} that every model kind has")
    if cls.trainer not in (*TRAINERS, None) or not cls.capabilities <= set(CAPABILITIES):
        raise ConfigError(f"{cls.__name__}: trainer must be one of {TRAINERS} or None and capabilities among "
                          f"{CAPABILITIES}; got {cls.trainer!r}, {sorted(cls.capabilities)}")
    names = dict(cls.variants) if cls.variants else ({kind: {}} if cls.buildable else {})
    for name in (kind, *names):
        owner = _KINDS.get(name) or _NAMES.get(name)
        if owner is not None and owner is not cls:
            raise ConfigError(f"the model kind name {name!r} is taken by {owner.__name__}")
    _KINDS[kind] = cls
    for name, fixed in names.items():
        _NAMES[name] = cls
        _FIXED[name] = MappingProxyType(dict(fixed))
    return cls


def kind_class(kind: str) -> type[Model]:
    """The class registered under a kind name (as model files store it).

    Raises:
        ConfigError: an unknown kind, naming the known ones.
    """
    if kind not in _KINDS:
        raise unknown_name("model kind", kind, _KINDS)
    return _KINDS[kind]


def resolve_name(name: str) -> tuple[type[Model], Mapping[str, Any]]:
    """The class and the fixed options of a name under which models are built (``"lstm"`` -> RNN, cell lstm).

    Raises:
        ConfigError: an unknown name, naming the known ones.
    """
    if name not in _NAMES:
        raise unknown_name("model kind", name, _NAMES)
    return _NAMES[name], _FIXED[name]


def build_model(kind: str, *, n_u: int, n_y: int, seed: int = 0, **options: Any) -> Model:
    """An untrained model of a registered kind, from its defaults, ``options`` and a seed.

    Args:
        kind: a name in :data:`MODEL_KINDS` ("deepwiener", "lfr", "lstm", "gru", "linear", ...).
        n_u, n_y: numbers of inputs and outputs.
        seed: seed of the parameter initialisation.
        options: further fields of the kind's config (e.g. ``layer="s5"`` for "deepwiener").

    Raises:
        ConfigError: an unknown kind, an unknown option, or an invalid value.
    """
    cls, fixed = resolve_name(kind)
    clash = sorted(set(fixed) & set(options))
    if clash:
        raise ConfigError(f"model kind {kind!r} fixes {clash}; leave them out")
    valid = [f.name for f in dataclasses.fields(cls.config_class) if f.name not in {"n_u", "n_y", "seed", *fixed}]
    for key in options:
        if key not in valid:
            raise unknown_name(f"option of model kind {kind!r}:", key, valid)
    config = cls.config_class(n_u=n_u, n_y=n_y, seed=seed, **fixed, **options)
    check_memory(cls, config, kind)
    return cls.from_config(config)


TRAINING_COPIES = 4
"""Copies of the parameters that training holds at once: the values, their gradients and Adam's two moments."""


def check_memory(cls: type[Model], config: Any, kind: str) -> None:
    """Refuse a model whose parameters alone could not be trained in this machine's memory, before allocating it
    (the model is first built on the ``meta`` device, which allocates nothing). A kind whose initialisation cannot
    run on the meta device (it computes on concrete values, e.g. through numpy) is not checked: the estimate is a
    guard, and it must never stop a model that would build.

    Raises:
        ConfigError: ``TRAINING_COPIES`` times the parameters' bytes exceed the physical memory.
    """
    try:
        with torch.device("meta"):
            probe = cls.from_config(config)
    except DeepWienerError:
        raise
    except (TypeError, RuntimeError, NotImplementedError, ValueError) as exc:
        logger.debug("memory check of a %s model skipped: it does not build on the meta device (%s)", kind, exc)
        return
    count = sum(p.numel() for p in probe.parameters())
    need = TRAINING_COPIES * sum(p.numel() * p.element_size() for p in probe.parameters())
    have = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if need > have:
        raise ConfigError(f"a {kind} model with these options has {count:,} parameters, which need about "
                          f"{need / 2**30:,.1f} GiB to train; this machine has {have / 2**30:,.1f} GiB of memory: "
                          "choose smaller sizes")
