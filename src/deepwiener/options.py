"""Option dataclasses: the plain-data form every config and options class shares, and the sampling-time check.

Every configuration of the package (a model kind's config, a layer's options, ``TrainConfig``) is a frozen
dataclass with :class:`DictConfig`: ``to_dict()`` gives plain data (JSON/TOML friendly) and ``from_dict()`` reads
it back, refusing unknown keys. This module depends only on ``errors``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Self

import numpy as np

from deepwiener.errors import ConfigError


class DictConfig:
    """Mixin for frozen config dataclasses: a plain-data form and its inverse with strict keys."""

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (JSON/TOML friendly)."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Inverse of ``to_dict``; unknown keys raise ConfigError listing the valid ones."""
        valid = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - valid)
        if unknown:
            raise ConfigError(f"unknown {cls.__name__} option(s) {unknown}; valid options: {sorted(valid)}")
        return cls(**data)


def check_sampling_time(dt: object) -> None:
    """Raise ConfigError unless ``dt`` is a finite positive number of seconds."""
    if isinstance(dt, bool) or not (isinstance(dt, int | float) and np.isfinite(dt) and dt > 0):
        raise ConfigError(f"dt must be a positive number of seconds, got {dt!r}")
