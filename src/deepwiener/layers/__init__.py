"""Linear layers and their registry: ``make_layer(name, ...)`` builds one by name."""

from __future__ import annotations

from typing import Any

import torch

from deepwiener.errors import unknown_name
from deepwiener.layers.base import LayerOptions, LTILayer
from deepwiener.layers.lru import LRU, LRUOptions
from deepwiener.layers.s4 import S4, S4Options
from deepwiener.layers.s4d import S4D, S4DOptions
from deepwiener.layers.s5 import S5, ContinuousOptions
from deepwiener.layers.selective import S6, S6Options

Layer = LTILayer | S6
"""Any registered layer: an LTI layer, or the selective (not LTI) S6."""

LAYERS: dict[str, type[Layer]] = {"lru": LRU, "s5": S5, "s4d": S4D, "s4": S4, "s6": S6}


def layer_class(name: str) -> type[Layer]:
    """The layer class registered under ``name``; ConfigError with a suggestion otherwise."""
    if name not in LAYERS:
        raise unknown_name("layer", name, LAYERS)
    return LAYERS[name]


def make_layer(
    name: str, d_in: int, d_out: int, d_state: int, options: dict[str, Any] | None, generator: torch.Generator
) -> Layer:
    """Build a registered layer; ``options`` is validated against the layer's options dataclass."""
    cls = layer_class(name)
    return cls(d_in, d_out, d_state, cls.Options.from_dict(dict(options or {})), generator=generator)


__all__ = [
    "LAYERS",
    "LRU",
    "S4",
    "S4D",
    "S5",
    "S6",
    "ContinuousOptions",
    "LRUOptions",
    "Layer",
    "LTILayer",
    "LayerOptions",
    "S4DOptions",
    "S4Options",
    "S6Options",
    "layer_class",
    "make_layer",
]
