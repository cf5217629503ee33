"""The search space of ``deepwiener tune``: a run configuration plus a ``[tune]`` table of ranges over its keys.

::

    [model]                      # the run configuration: fixed values, as for ``deepwiener train``
    layer = "lru"
    [train]
    max_minutes = 1.0

    [tune]
    pruner = "median"            # stop trials whose validation curve is worse than the median ("none": never)
    prune_after = 5              # epochs a trial runs before the pruner may stop it

    [tune.train]                 # ranges over the keys of [train], [model] or [layer]
    lr = { low = 1e-4, high = 1e-2, log = true }      # float range (log scale)
    batch_size = { choices = [8, 16, 32] }            # choices
    [tune.model]
    kind = { choices = ["deepwiener", "lfr"] }        # the model kind is a key like any other
    d_model = { low = 4, high = 16, step = 4 }        # integer range (low and high are integers)

    [tune.lfr.model]             # [tune.<kind>.<table>]: applies only when that kind is chosen
    n_x = { low = 2, high = 8 }
    n_w = 8                      # a plain value: fixed whenever lfr is chosen

A range is an inline table: ``low`` and ``high`` (integers: an integer range; else a float range), optional
``log`` and ``step``; or ``choices``. Any other value is fixed. The data is never searched (``[tune.data]`` and
``val_fraction`` are refused): every trial is scored on the same validation records. Parameters are named
``table.key`` (``train.lr``) and ``kind.table.key`` for a kind's own (``lfr.model.n_x``).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from deepwiener.config import DataConfig, read_toml, resolve
from deepwiener.errors import ConfigError, unknown_name
from deepwiener.models import MODEL_KINDS

SEARCHED = ("model", "layer", "train")
"""The run-configuration tables a search space may range over."""
PRUNERS = ("median", "none")
FIXED_DATA = ("val_fraction",)
"""[train] keys that choose the validation records: never searched, so that trials are compared on the same data."""


class Suggest(Protocol):
    """What a search space samples from: an ``optuna.Trial`` (its ``suggest_*`` methods)."""

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int: ...

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None,
                      log: bool = False) -> float: ...

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any: ...


@dataclasses.dataclass(frozen=True)
class Range:
    """One searched key: an integer or float range (``log``, ``step``) or a list of ``choices``."""

    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    @classmethod
    def parse(cls, name: str, spec: Mapping[str, Any]) -> Range:
        """A range from its inline table.

        Raises:
            ConfigError: unknown keys, low > high, a log range that reaches 0, a log range with a step, empty or
                non-scalar choices.
        """
        keys = set(spec)
        if "choices" in keys:
            if keys != {"choices"}:
                raise ConfigError(f"[tune] {name}: choices go alone (got {sorted(keys)})")
            choices = spec["choices"]
            if not isinstance(choices, list) or not choices or any(isinstance(c, list | dict) for c in choices):
                raise ConfigError(f"[tune] {name}: choices must be a non-empty list of values, got {choices!r}")
            return cls(name, choices=tuple(choices))
        if not {"low", "high"} <= keys <= {"low", "high", "log", "step"}:
            raise ConfigError(f"[tune] {name}: a range is {{ low = ..., high = ... }} with optional log and step, or "
                              f"{{ choices = [...] }}; got {sorted(keys)}")
        low, high, step, log = spec["low"], spec["high"], spec.get("step"), spec.get("log", False)
        numbers = [v for v in (low, high, step) if v is not None]
        if any(isinstance(v, bool) or not isinstance(v, int | float) for v in numbers) or not isinstance(log, bool):
            raise ConfigError(f"[tune] {name}: low, high and step must be numbers and log true or false")
        if not low <= high or (log and low <= 0) or (step is not None and step <= 0) or (log and step is not None):
            raise ConfigError(f"[tune] {name}: need low <= high, low > 0 on a log scale, step > 0 and no step on a log "
                              f"scale (got low={low}, high={high}, step={step}, log={log})")
        return cls(name, low=low, high=high, log=log, step=step)

    @property
    def integer(self) -> bool:
        """An integer range: low, high (and step) are integers."""
        return not self.choices and all(isinstance(v, int) for v in (self.low, self.high, self.step or 1))

    def sample(self, trial: Suggest) -> Any:
        """The value this trial takes."""
        if self.choices:
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.integer:
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.name, float(self.low), float(self.high), step=self.step, log=self.log)

    def first(self) -> Any:
        """A value of the range (the first choice, or low), to check a configuration before searching."""
        return self.choices[0] if self.choices else self.low


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """A run configuration's tables and the ranges over them.

    Attributes:
        base: the run configuration's tables (``[data]``, ``[model]``, ``[layer]``, ``[train]``) without ``[tune]``.
        ranges: ``{table: {key: Range or fixed value}}`` for every trial.
        kinds: ``{kind: {table: {key: Range or fixed value}}}``, applied when that kind is chosen.
        pruner: "median" or "none".
        prune_after: epochs before the pruner may stop a trial.
    """

    base: Mapping[str, Mapping[str, Any]]
    ranges: Mapping[str, Mapping[str, Any]]
    kinds: Mapping[str, Mapping[str, Mapping[str, Any]]]
    pruner: str = "median"
    prune_after: int = 5

    def sample(self, trial: Suggest) -> dict[str, dict[str, Any]]:
        """The run configuration's tables with this trial's values: the common ranges first (the kind among them),
        then those of the chosen kind."""
        tables = copy.deepcopy({table: dict(values) for table, values in self.base.items()})
        _apply(tables, self.ranges, lambda r: r.sample(trial))
        _apply(tables, self.kinds.get(_kind(tables), {}), lambda r: r.sample(trial))
        return tables

    def check(self, overrides: Mapping[str, Mapping[str, Any]]) -> DataConfig:
        """Resolve one configuration of each kind the space can choose (with the first value of every range), so
        that a wrong key or value fails before the search starts; returns the data they share.

        Raises:
            ConfigError: the configuration of some kind is invalid (the message names the kind).
        """
        common = copy.deepcopy({table: dict(values) for table, values in self.base.items()})
        _apply(common, self.ranges, Range.first)
        kind_range = self.ranges.get("model", {}).get("kind")
        kinds = list(kind_range.choices) if isinstance(kind_range, Range) else [_kind(common)]
        unknown = [k for k in kinds if k not in MODEL_KINDS]
        if unknown:
            raise unknown_name("model kind in [tune]", unknown[0], MODEL_KINDS)
        data = None
        for kind in kinds:
            tables = copy.deepcopy(common)
            tables.setdefault("model", {})["kind"] = kind
            _apply(tables, self.kinds.get(kind, {}), Range.first)
            try:
                data = resolve(tables, overrides).data
            except ConfigError as exc:
                raise ConfigError(f"the search space's configuration of kind {kind!r} is invalid: {exc}") from None
        assert data is not None
        return data

    def fingerprint(self, data: DataConfig) -> dict[str, str]:
        """What a study is bound to: the search space (ranges and fixed values) and the data, as JSON texts."""
        space = {"base": {t: v for t, v in self.base.items() if t != "data"}, "ranges": _plain(self.ranges),
                 "kinds": _plain(self.kinds), "pruner": self.pruner, "prune_after": self.prune_after}
        return {"space": json.dumps(space, sort_keys=True, default=str),
                "data": json.dumps(dataclasses.asdict(data), sort_keys=True)}


def read_space(path: str | Path) -> SearchSpace:
    """Read SPACE.toml: a run configuration with a ``[tune]`` table (module docstring).

    Raises:
        ConfigError: an unreadable file, no ``[tune]`` table, or an invalid one (unknown tables or kinds, bad
            ranges, a searched ``[data]`` table or ``val_fraction``).
    """
    tables = read_toml(path, extra=("tune",))
    if "tune" not in tables:
        raise ConfigError(f"{path}: no [tune] table: say which keys to search, e.g. [tune.train] lr = "
                          "{ low = 1e-4, high = 1e-2, log = true }")
    tune = dict(tables.pop("tune"))
    pruner = tune.pop("pruner", "median")
    if pruner not in PRUNERS:
        raise unknown_name("[tune] pruner", pruner, PRUNERS)
    prune_after = tune.pop("prune_after", 5)
    if isinstance(prune_after, bool) or not isinstance(prune_after, int) or prune_after < 0:
        raise ConfigError(f"[tune] prune_after must be an integer >= 0 (epochs), got {prune_after!r}")
    ranges: dict[str, dict[str, Any]] = {}
    kinds: dict[str, dict[str, dict[str, Any]]] = {}
    for name, value in tune.items():
        if name == "data":
            raise ConfigError("[tune.data]: the data is never searched (every trial is scored on the same "
                              "validation records)")
        if name in SEARCHED:
            ranges[name] = _parse_table(name, value)
        elif name in MODEL_KINDS:
            if not isinstance(value, dict) or not set(value) <= set(SEARCHED):
                raise ConfigError(f"[tune.{name}] holds the tables {', '.join(SEARCHED)} of kind {name!r}, got "
                                  f"{value!r}")
            kinds[name] = {table: _parse_table(f"{name}.{table}", keys) for table, keys in value.items()}
        else:
            raise unknown_name("[tune] entry", name, (*SEARCHED, *MODEL_KINDS, "pruner", "prune_after"))
    return SearchSpace(base=tables, ranges=ranges, kinds=kinds, pruner=pruner, prune_after=prune_after)


def _parse_table(prefix: str, values: Any) -> dict[str, Any]:
    """``{key: Range or fixed value}`` of one ``[tune...]`` table."""
    if not isinstance(values, dict):
        raise ConfigError(f"[tune.{prefix}] must be a table of ranges, got {values!r}")
    table = prefix.split(".")[-1]
    if table == "train" and set(values) & set(FIXED_DATA):
        raise ConfigError(f"[tune.{prefix}] val_fraction chooses the validation records: it is never searched")
    if "kind" in values and "." in prefix:
        raise ConfigError(f"[tune.{prefix}]: the kind is chosen in [tune.model]")
    return {key: Range.parse(f"{prefix}.{key}", spec) if isinstance(spec, dict) else spec
            for key, spec in values.items()}


def _apply(tables: dict[str, dict[str, Any]], ranges: Mapping[str, Mapping[str, Any]], value: Any) -> None:
    """Set every key of ``ranges`` in ``tables``: ``value(range)`` for a Range, the fixed value otherwise."""
    for table, keys in ranges.items():
        for key, spec in keys.items():
            tables.setdefault(table, {})[key] = value(spec) if isinstance(spec, Range) else spec


def _kind(tables: Mapping[str, Mapping[str, Any]]) -> str:
    return str(tables.get("model", {}).get("kind", "deepwiener"))


def _plain(value: Any) -> Any:
    """Ranges as plain data (for the fingerprint)."""
    if isinstance(value, Range):
        return {k: v for k, v in dataclasses.asdict(value).items() if v not in (None, (), False)}
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value
