"""Run configuration: TOML files <-> frozen dataclasses, with defaults < file < command-line flags.

A run configuration has four tables, each mapped one-to-one onto a dataclass or its options:

- ``[data]``: :class:`DataConfig` (a benchmark name, or a CSV file with its columns and sampling time);
- ``[model]``: ``kind`` (a name of ``models.MODEL_KINDS``: "deepwiener" by default, "lfr", "lstm", "gru",
  "linear", or a kind you registered) and the fields of that kind's config, except ``n_u``, ``n_y`` and ``dt``,
  which come from the data, and the options the name fixes (``cell`` for "lstm" and "gru"); e.g.
  :class:`~deepwiener.models.ModelConfig` for "deepwiener";
- ``[layer]``: the options of the kind's ``options_table`` (for a deep Wiener model the options dataclass of the
  chosen layer, e.g. ``LRUOptions``: ``r_min``, ``r_max``, ..., stored in ``layer_options``); only for kinds
  that have one;
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

from deepwiener.data import BENCHMARKS, Benchmark, IOData, load_benchmark, read_csv
from deepwiener.errors import ConfigError, unknown_name
from deepwiener.models import Model, build_model, resolve_name
from deepwiener.training import TrainConfig

TABLES: tuple[str, ...] = ("data", "model", "layer", "train")
_FROM_DATA = ("n_u", "n_y", "dt")  # model fields that come from the data


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the data of a run comes from: a benchmark, or one CSV file.

    Attributes:
        benchmark: a name in ``BENCHMARKS`` (official train/test split), or None.
        csv: path of a CSV file with a header row (the training record), or None.
        val_csv: CSV files of validation records (same columns); none: ``fit`` holds out the training record's tail.
        test_csv: CSV files of test records (same columns); none: the training record is evaluated (in-sample).
        u: input column names of the CSV file.
        y: output column names of the CSV file.
        dt: sampling time of the CSV file in seconds.
        init_window: samples at the start of a CSV evaluation record that are not counted (benchmarks bring
            their own).
        y_unit: physical unit of the CSV outputs, used in reports.
    """

    benchmark: str | None = None
    csv: str | None = None
    val_csv: tuple[str, ...] = ()
    test_csv: tuple[str, ...] = ()
    u: tuple[str, ...] = ()
    y: tuple[str, ...] = ()
    dt: float | None = None
    init_window: int = 0
    y_unit: str = ""

    def __post_init__(self) -> None:
        for name in ("u", "y", "val_csv", "test_csv"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
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
        if self.csv is None and (self.val_csv or self.test_csv):
            raise ConfigError("--val-csv and --test-csv go with --csv (a benchmark brings its own records)")
        channels = [*self.u, *self.y]
        repeated = sorted({name for name in channels if channels.count(name) > 1})
        if repeated:
            raise ConfigError(f"column(s) {repeated} named more than once in --u/--y: each channel is an input or an "
                              "output, once")

    def load(self) -> Benchmark:
        """Load the data as a :class:`Benchmark`.

        A CSV file becomes a benchmark: ``train`` is its record, ``val`` the records of ``val_csv``, and
        ``tests`` the records of ``test_csv`` by file stem; without test files, ``tests`` maps the file stem to the
        training record itself (``in_sample``: evaluating it measures the fit on that file). ``init_window`` is
        this config's.

        Raises:
            DataError: missing or unreadable files, unknown columns, invalid values (NaN/inf, dt <= 0, ...).
        """
        if self.benchmark is not None:
            return load_benchmark(self.benchmark)
        assert self.dt is not None  # checked in __post_init__

        def read(path: str) -> IOData:
            return read_csv(path, self.u, self.y, self.dt, y_unit=self.y_unit)

        record = read(self.csv)
        tests = {rec.name: rec for rec in map(read, self.test_csv)} or {record.name: record}
        return Benchmark(name=record.name, train=(record,), tests=MappingProxyType(tests),
                         init_window=self.init_window, unit=self.y_unit, scale=1.0,
                         val=tuple(map(read, self.val_csv)), in_sample=not self.test_csv)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """A fully resolved run configuration.

    Attributes:
        data: where the data comes from.
        model: the keywords of the kind's config except ``n_u``, ``n_y``, ``dt`` and the options the kind's name
            fixes, defaults included (for "deepwiener", ``layer_options`` holds every option of the layer).
        train: the training options.
        kind: the name the model is built as, one of ``models.MODEL_KINDS``.
    """

    data: DataConfig
    model: Mapping[str, Any]
    train: TrainConfig
    kind: str = "deepwiener"

    @property
    def label(self) -> str:
        """Short name of the model (run folder names): the layer of a deep Wiener model (e.g. "lru"), else the name
        it is built as ("lstm", ...)."""
        return resolve_name(self.kind)[0].label(self.kind, self.model)

    def build_model(self, n_u: int, n_y: int) -> Model:
        """A freshly initialised model for ``n_u`` inputs and ``n_y`` outputs (``models.build_model``)."""
        return build_model(self.kind, n_u=n_u, n_y=n_y, **self.model)

    def to_tables(self) -> dict[str, dict[str, Any]]:
        """The four tables as plain dicts, every value spelled out (None for unset options)."""
        model = dict(self.model)
        table = resolve_name(self.kind)[0].options_table(model)
        layer = model.pop(table[0], {}) if table is not None else {}
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


def read_toml(path: str | Path, extra: typing.Iterable[str] = ()) -> dict[str, dict[str, Any]]:
    """Read a configuration file into its tables (not yet validated against the dataclasses).

    Args:
        path: the TOML file.
        extra: tables allowed besides :data:`TABLES` (e.g. ``"tune"``, the search space of ``deepwiener tune``).

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
    _check_keys(f"{path}: table", tables, (*TABLES, *extra))
    for table, values in tables.items():
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: [{table}] must be a table of options, got {values!r}")
    return tables


def resolve(file: str | Path | Mapping[str, Mapping[str, Any]] | None = None,
            overrides: Mapping[str, Mapping[str, Any]] | None = None) -> RunConfig:
    """Resolve a run configuration: defaults < ``file`` < ``overrides`` (the command-line flags).

    Args:
        file: a TOML configuration file, its tables as :func:`read_toml` returns them, or None.
        overrides: ``{table: {key: value}}``; None values mean "not given" and are ignored. A ``benchmark``
            or ``csv`` override replaces the file's whole ``[data]`` table.

    Returns:
        The validated :class:`RunConfig`.

    Raises:
        ConfigError: unknown tables or keys (listing the valid ones), values of the wrong type, invalid
            values (unknown model kind, layer, nonlinearity, benchmark, ...), or a ``[layer]`` table for a
            kind without one.
    """
    tables: dict[str, dict[str, Any]] = {table: {} for table in TABLES}
    given_file = read_toml(file) if isinstance(file, str | Path) else file or {}
    for source in (given_file, overrides or {}):
        _check_keys("table", source, TABLES)
        for table, values in source.items():
            given = {k: v for k, v in values.items() if v is not None}
            if table == "data" and ("benchmark" in given or "csv" in given):
                tables["data"] = {}  # a new data source replaces the earlier one as a whole
            tables[table].update(given)
    model_values = dict(tables["model"])
    kind = model_values.pop("kind", "deepwiener")
    resolved = _model_keywords(kind, model_values, tables["layer"])
    data = DataConfig(**_validated("data", tables["data"], DataConfig))
    train = TrainConfig.from_dict(_validated("train", tables["train"], TrainConfig))
    return RunConfig(data=data, model=MappingProxyType(resolved), train=train, kind=kind)


def _model_keywords(kind: str, values: Mapping[str, Any], layer_values: Mapping[str, Any]) -> dict[str, Any]:
    """The keywords of the config of model kind ``kind`` (defaults filled, the ``[layer]`` table in the kind's
    options field) without the fields that come from the data and those the kind's name fixes."""
    cls, fixed = resolve_name(kind)
    derived = {*_FROM_DATA, *fixed}
    table = cls.options_table(values)
    if table is not None:
        derived.add(table[0])
    elif layer_values:
        raise ConfigError(f"the [layer] table configures a model's layers; model kind {kind!r} has no layer (got "
                          f"{sorted(layer_values)})")
    fields = {f.name: f for f in dataclasses.fields(cls.config_class) if f.name not in derived}
    model = _validated("model", values, cls.config_class, fields)
    if table is not None:
        name, options_cls = table
        model[name] = dataclasses.asdict(options_cls(**_validated("layer", layer_values, options_cls)))
    resolved = cls.config_class(n_u=1, n_y=1, **fixed, **model).to_dict()  # validates; fills the defaults
    return {key: value for key, value in resolved.items() if key not in {*_FROM_DATA, *fixed}}


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
