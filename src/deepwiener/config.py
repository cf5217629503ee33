"""Run configuration: TOML files <-> frozen dataclasses, with defaults < file < command-line flags.

A run configuration has four tables, each mapped one-to-one onto a dataclass or its options:

- ``[data]``: :class:`DataConfig` (a benchmark name, or a CSV file with its columns and sampling time);
- ``[model]``: ``kind`` (:data:`MODEL_KINDS`: "deepwiener" by default, the nonlinear feedback model "lfr", or
  the baselines "lstm", "gru", "linear") and the fields of that kind's config, except ``n_u``, ``n_y`` and ``dt``,
  which come from the data: :class:`~deepwiener.model.ModelConfig` (its ``layer_options`` are the ``[layer]``
  table), :class:`~deepwiener.lfr.LFRConfig`, :class:`~deepwiener.baselines.rnn.RNNConfig` (its ``cell`` is the
  kind) or
  :class:`~deepwiener.initialization.LinearOptions`;
- ``[layer]``: the options dataclass of the chosen layer (e.g. ``LRUOptions``: ``r_min``, ``r_max``, ...);
  deep Wiener models only;
- ``[train]``: :class:`~deepwiener.training.TrainConfig`.

Unknown tables or keys and values of the wrong type raise :class:`ConfigError` naming the table and listing the
valid keys (with a close match). :meth:`RunConfig.to_toml` spells out every value, defaults included; TOML has
no null, so an option that is unset (None) is written as a comment and read back as its default.
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import tomli_w

from deepwiener.baselines.rnn import RNNConfig, RNNModel
from deepwiener.data import BENCHMARKS, Benchmark, load_benchmark, read_csv
from deepwiener.errors import ConfigError, unknown_name
from deepwiener.initialization import LinearOptions
from deepwiener.layers import layer_class
from deepwiener.lfr import LFRConfig, LFRModel
from deepwiener.model import DeepWiener, ModelConfig
from deepwiener.training import TrainConfig

TABLES: tuple[str, ...] = ("data", "model", "layer", "train")
MODEL_KINDS: tuple[str, ...] = ("deepwiener", "lfr", "lstm", "gru", "linear")
"""Values of ``[model] kind`` (the command line's ``--model``)."""
_DERIVED_MODEL_KEYS = ("n_u", "n_y", "dt", "layer_options")  # set from the data / the [layer] table
_DERIVED_RNN_KEYS = ("n_u", "n_y", "dt", "cell")  # set from the data / the kind
_DERIVED_LFR_KEYS = ("n_u", "n_y", "dt")  # set from the data


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the data of a run comes from: a benchmark, or one CSV file.

    Attributes:
        benchmark: a name in ``BENCHMARKS`` (official train/test split), or None.
        csv: path of a CSV file with a header row, or None.
        u: input column names of the CSV file.
        y: output column names of the CSV file.
        dt: sampling time of the CSV file in seconds.
        init_window: samples at the start of a CSV evaluation record that are not counted (benchmarks bring
            their own).
        y_unit: physical unit of the CSV outputs, used in reports.
    """

    benchmark: str | None = None
    csv: str | None = None
    u: tuple[str, ...] = ()
    y: tuple[str, ...] = ()
    dt: float | None = None
    init_window: int = 0
    y_unit: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "u", tuple(self.u))
        object.__setattr__(self, "y", tuple(self.y))
        if (self.benchmark is None) == (self.csv is None):
            raise ConfigError("give the data as exactly one of --benchmark NAME or --csv FILE "
                              f"(got benchmark={self.benchmark!r}, csv={self.csv!r})")
        if self.benchmark is not None and _benchmark_key(self.benchmark) not in BENCHMARKS:
            raise unknown_name("benchmark", self.benchmark, BENCHMARKS)
        if self.csv is not None:
            given = {"--u": bool(self.u), "--y": bool(self.y), "--dt": self.dt is not None}
            missing = [flag for flag, ok in given.items() if not ok]
            if missing:
                raise ConfigError(f"--csv {self.csv} also needs {' '.join(missing)} (input and output column "
                                  "names, sampling time in seconds)")
        if self.init_window < 0:
            raise ConfigError(f"init_window must be >= 0 samples, got {self.init_window}")

    def load(self) -> Benchmark:
        """Load the data as a :class:`Benchmark`.

        A CSV file becomes a one-record benchmark: ``train`` is the record, ``tests`` maps the file stem to
        the same record (so evaluating it measures the fit on that file), ``init_window`` is this config's.

        Raises:
            DataError: missing or unreadable files, unknown columns, invalid values (NaN/inf, dt <= 0, ...).
        """
        if self.benchmark is not None:
            return load_benchmark(self.benchmark)
        assert self.dt is not None  # checked in __post_init__
        record = read_csv(self.csv, self.u, self.y, self.dt, y_unit=self.y_unit)
        return Benchmark(name=record.name, train=(record,), tests=MappingProxyType({record.name: record}),
                         init_window=self.init_window, unit=self.y_unit, scale=1.0)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """A fully resolved run configuration.

    Attributes:
        data: where the data comes from.
        model: the keywords of the kind's config except ``n_u``, ``n_y`` and ``dt``, defaults included:
            ``ModelConfig``'s for "deepwiener" (``layer_options`` holds every option of the layer),
            ``LFRConfig``'s for "lfr", ``RNNConfig``'s except ``cell`` for "lstm" and "gru", ``LinearOptions``'
            for "linear".
        train: the training options.
        kind: the model kind, one of :data:`MODEL_KINDS`.
    """

    data: DataConfig
    model: Mapping[str, Any]
    train: TrainConfig
    kind: str = "deepwiener"

    @property
    def label(self) -> str:
        """Short name of the model: the layer of a deep Wiener model (e.g. "lru"), else the kind ("lstm", ...)."""
        return self.model["layer"] if self.kind == "deepwiener" else self.kind

    def model_config(self, n_u: int, n_y: int) -> ModelConfig | LFRConfig | RNNConfig | LinearOptions:
        """The model's config for data with ``n_u`` inputs and ``n_y`` outputs (a linear model's: its options)."""
        if self.kind == "linear":
            return LinearOptions(**self.model)
        if self.kind == "deepwiener":
            return ModelConfig(n_u=n_u, n_y=n_y, **self.model)
        if self.kind == "lfr":
            return LFRConfig(n_u=n_u, n_y=n_y, **self.model)
        return RNNConfig(n_u=n_u, n_y=n_y, cell=self.kind, **self.model)

    def build_model(self, n_u: int, n_y: int) -> DeepWiener | LFRModel | RNNModel:
        """A freshly initialised trainable model ("deepwiener", "lfr", "lstm", "gru") for ``n_u`` inputs and
        ``n_y`` outputs.

        Raises:
            ConfigError: kind "linear", which is identified from data (``training.fit_linear``), not built.
        """
        config = self.model_config(n_u, n_y)
        if isinstance(config, LinearOptions):
            raise ConfigError("a linear model is identified from data (training.fit_linear), not built")
        if isinstance(config, ModelConfig):
            return DeepWiener.from_config(config)
        return LFRModel.from_config(config) if isinstance(config, LFRConfig) else RNNModel.from_config(config)

    def to_tables(self) -> dict[str, dict[str, Any]]:
        """The four tables as plain dicts, every value spelled out (None for unset options)."""
        model = dict(self.model)
        layer = model.pop("layer_options", {})
        return {"data": dataclasses.asdict(self.data), "model": {"kind": self.kind, **model},
                "layer": dict(layer), "train": self.train.to_dict()}

    def to_toml(self) -> str:
        """TOML text of the resolved configuration; unset (None) options are written as comments."""
        sections = []
        for table, values in self.to_tables().items():
            lines = [f"[{table}]"]
            for key, value in values.items():
                if value is None:
                    lines.append(f"# {key} is unset (None)")
                else:
                    lines.append(tomli_w.dumps({key: list(value) if isinstance(value, tuple) else value}).strip())
            sections.append("\n".join(lines))
        return "\n\n".join(sections) + "\n"


def read_toml(path: str | Path) -> dict[str, dict[str, Any]]:
    """Read a configuration file into its tables (not yet validated against the dataclasses).

    Raises:
        ConfigError: missing or unreadable file, invalid TOML, unknown table, or a table that is not a table.
    """
    path = Path(path)
    try:
        with path.open("rb") as file:
            tables = tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such configuration file") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: invalid TOML configuration: {exc}") from exc
    _check_keys(f"{path}: table", tables, TABLES)
    for table, values in tables.items():
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: [{table}] must be a table of options, got {values!r}")
    return tables


def resolve(file: str | Path | None = None,
            overrides: Mapping[str, Mapping[str, Any]] | None = None) -> RunConfig:
    """Resolve a run configuration: defaults < ``file`` < ``overrides`` (the command-line flags).

    Args:
        file: a TOML configuration file, or None.
        overrides: ``{table: {key: value}}``; None values mean "not given" and are ignored. A ``benchmark``
            or ``csv`` override replaces the file's whole ``[data]`` table.

    Returns:
        The validated :class:`RunConfig`.

    Raises:
        ConfigError: unknown tables or keys (listing the valid ones), values of the wrong type, invalid
            values (unknown model kind, layer, nonlinearity, benchmark, ...), or a ``[layer]`` table for a
            baseline.
    """
    tables: dict[str, dict[str, Any]] = {table: {} for table in TABLES}
    for source in (read_toml(file) if file is not None else {}, overrides or {}):
        _check_keys("table", source, TABLES)
        for table, values in source.items():
            given = {k: v for k, v in values.items() if v is not None}
            if table == "data" and ("benchmark" in given or "csv" in given):
                tables["data"] = {}  # a new data source replaces the earlier one as a whole
            tables[table].update(given)
    model_values = dict(tables["model"])
    kind = model_values.pop("kind", "deepwiener")
    if kind not in MODEL_KINDS:
        raise unknown_name("model kind", kind, MODEL_KINDS)
    if kind == "deepwiener":
        resolved = _deep_wiener_keywords(model_values, tables["layer"])
    else:
        resolved = _baseline_keywords(kind, model_values, tables["layer"])
    data = DataConfig(**_validated("data", tables["data"], DataConfig))
    train = TrainConfig.from_dict(_validated("train", tables["train"], TrainConfig))
    return RunConfig(data=data, model=MappingProxyType(resolved), train=train, kind=kind)


def _deep_wiener_keywords(values: Mapping[str, Any], layer_values: Mapping[str, Any]) -> dict[str, Any]:
    """``ModelConfig`` keywords (defaults filled, ``layer_options`` from the [layer] table) without n_u, n_y, dt."""
    model_keys = {f.name: f for f in dataclasses.fields(ModelConfig) if f.name not in _DERIVED_MODEL_KEYS}
    model = _validated("model", values, ModelConfig, model_keys)
    layer_name = model.get("layer", model_keys["layer"].default)
    options_cls = layer_class(layer_name).Options
    options = options_cls(**_validated("layer", layer_values, options_cls))
    model["layer_options"] = dataclasses.asdict(options)
    resolved = dict(dataclasses.asdict(ModelConfig(n_u=1, n_y=1, **model)))  # validates; fills the defaults
    for key in ("n_u", "n_y", "dt"):
        resolved.pop(key)
    return resolved


def _baseline_keywords(kind: str, values: Mapping[str, Any], layer_values: Mapping[str, Any]) -> dict[str, Any]:
    """Keywords of an "lfr" ``LFRConfig`` (without n_u, n_y, dt), an "lstm"/"gru" ``RNNConfig`` (without n_u,
    n_y, dt, cell) or of ``LinearOptions``."""
    if layer_values:
        raise ConfigError(f"the [layer] table configures deep Wiener models; model kind {kind!r} has no layer "
                          f"(got {sorted(layer_values)})")
    if kind == "linear":
        return LinearOptions(**_validated("model", values, LinearOptions)).to_dict()
    cls, derived, fixed = (LFRConfig, _DERIVED_LFR_KEYS, {}) if kind == "lfr" else (RNNConfig, _DERIVED_RNN_KEYS,
                                                                                    {"cell": kind})
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in derived}
    resolved = cls(n_u=1, n_y=1, **fixed, **_validated("model", values, cls, fields)).to_dict()
    return {key: value for key, value in resolved.items() if key not in derived}


def _benchmark_key(name: str) -> str:
    return str(name).strip().lower().replace("-", "_")


def _check_keys(what: str, given: Mapping[str, Any], valid: typing.Iterable[str]) -> None:
    valid = list(valid)
    for key in given:
        if key not in valid:
            msg = f"unknown {what} {key!r}; valid: {', '.join(valid)}"
            close = difflib.get_close_matches(key, valid, n=1)
            raise ConfigError(msg + (f" (did you mean {close[0]!r}?)" if close else ""))


def _validated(table: str, values: Mapping[str, Any], cls: type,
               fields: Mapping[str, dataclasses.Field] | None = None) -> dict[str, Any]:
    """Check the keys of one table against ``cls``'s fields and the values against their type hints."""
    fields = fields if fields is not None else {f.name: f for f in dataclasses.fields(cls)}
    _check_keys(f"[{table}] key", values, fields)
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        if not _matches(value, hints[key]):
            raise ConfigError(f"[{table}] {key} must be of type {_type_name(hints[key])}, got {value!r}")
    return dict(values)


def _matches(value: Any, hint: Any) -> bool:
    """Whether a TOML/flag value fits a field's type hint (int is accepted for float, bool never for numbers)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(hint))
    if origin is tuple:
        return isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)
    if hint is type(None):
        return value is None
    if hint in (int, float):
        numeric = int if hint is int else int | float
        return isinstance(value, numeric) and not isinstance(value, bool)
    if hint is Any or origin is not None:
        return True
    return isinstance(value, hint)


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
