"""Readers that turn CSV, NPZ and MAT files into validated :class:`IOData`.

Channels are chosen by name: a CSV header name, an npz array name or a MAT variable name. Each chosen variable
must be a vector, ``(N,)``, ``(1, N)`` or ``(N, 1)``, and becomes one channel. Every failure (missing file,
unknown name, unparsable cell, corrupt or truncated file) is raised as :class:`DataError` naming the file and
the problem; exceptions of the underlying parsers never leak.
"""

from __future__ import annotations

import csv
import difflib
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import scipy.io

from deepwiener.data.iodata import IOData
from deepwiener.errors import DataError

Names = str | Sequence[str]


def read_csv(path: str | Path, u: Names, y: Names, dt: float, *, name: str | None = None, y_unit: str = "",
             delimiter: str = ",") -> IOData:
    """Read an experiment from a CSV file with a header row, choosing columns by header name.

    Quoted headers and the trailing empty column of the official benchmark CSVs (``"V1","V2",``) are handled.
    Only the chosen columns are parsed, so other columns may hold empty cells.

    Args:
        path: the CSV file.
        u: header name(s) of the input column(s), in channel order.
        y: header name(s) of the output column(s), in channel order.
        dt: sampling time in seconds.
        name: record name; the file stem when None.
        y_unit: physical unit of the outputs.
        delimiter: the field separator.

    Returns:
        IOData with u (T, len(u)) and y (T, len(y)).

    Raises:
        DataError: missing file, unknown column (the message lists the available ones and a close match),
            non-numeric or empty cell (with its line number), or an invalid record.
    """
    path = Path(path)
    arrays = _read_csv_columns(path, [*_names(u), *_names(y)], delimiter)
    return _to_iodata(path, arrays, u, y, dt, name, y_unit)


def read_npz(path: str | Path, u: Names, y: Names, dt: float, *, name: str | None = None,
             y_unit: str = "") -> IOData:
    """Read an experiment from a NumPy ``.npz`` archive, choosing arrays by name.

    Args:
        path: the ``.npz`` file (read with ``allow_pickle=False``).
        u: array name(s) of the input channel(s).
        y: array name(s) of the output channel(s).
        dt: sampling time in seconds.
        name: record name; the file stem when None.
        y_unit: physical unit of the outputs.

    Returns:
        IOData with u (T, len(u)) and y (T, len(y)).

    Raises:
        DataError: missing, corrupt or truncated file, unknown array name, an array that is not a vector, or
            an invalid record.
    """
    path = Path(path)
    return _to_iodata(path, _read_npz_arrays(path, [*_names(u), *_names(y)]), u, y, dt, name, y_unit)


def read_mat(path: str | Path, u: Names, y: Names, dt: float, *, name: str | None = None,
             y_unit: str = "") -> IOData:
    """Read an experiment from a MATLAB ``.mat`` file (v4 to v7.2), choosing variables by name.

    Args:
        path: the ``.mat`` file (read with ``scipy.io.loadmat``).
        u: variable name(s) of the input channel(s); each variable (N,), (1, N) or (N, 1).
        y: variable name(s) of the output channel(s).
        dt: sampling time in seconds.
        name: record name; the file stem when None.
        y_unit: physical unit of the outputs.

    Returns:
        IOData with u (T, len(u)) and y (T, len(y)).

    Raises:
        DataError: missing, corrupt, truncated or v7.3 (HDF5) file, unknown variable, a variable that is not a
            vector, or an invalid record.
    """
    path = Path(path)
    return _to_iodata(path, _read_mat_arrays(path, [*_names(u), *_names(y)]), u, y, dt, name, y_unit)


def read_file(path: str | Path, u: Names, y: Names, dt: float, *, name: str | None = None,
              y_unit: str = "") -> IOData:
    """Read an experiment with the reader chosen by the file suffix (``.csv``, ``.npz`` or ``.mat``).

    Args and Returns as :func:`read_csv`; CSV files use the comma delimiter.

    Raises:
        DataError: an unsupported suffix, or any error of the chosen reader.
    """
    path = Path(path)
    return _to_iodata(path, load_variables(path, [*_names(u), *_names(y)]), u, y, dt, name, y_unit)


def load_variables(path: str | Path, names: Sequence[str]) -> dict[str, np.ndarray]:
    """Load the named variables of a ``.csv``, ``.npz`` or ``.mat`` file as stored (no reshaping).

    Args:
        path: the file; its suffix (case-insensitive) picks the format.
        names: the variables (CSV columns, npz arrays, MAT variables) to load.

    Returns:
        Mapping name -> array as stored: CSV columns are (N,) float64, MAT variables keep their 2-D shape.

    Raises:
        DataError: an unsupported suffix, a missing or unreadable file, or an unknown name.
    """
    path = Path(path)
    loaders: Mapping[str, Callable[[Path, Sequence[str]], dict[str, np.ndarray]]] = {
        ".csv": lambda p, n: _read_csv_columns(p, n, ","),
        ".npz": _read_npz_arrays,
        ".mat": _read_mat_arrays,
    }
    loader = loaders.get(path.suffix.lower())
    if loader is None:
        raise DataError(f"{path}: unsupported file type {path.suffix!r}; expected one of "
                        f"{', '.join(loaders)}")
    return loader(path, names)


def as_vector(arrays: Mapping[str, np.ndarray], name: str, path: Path) -> np.ndarray:
    """Return variable ``name`` as a (N,) float64 vector, accepting (N,), (1, N) and (N, 1).

    Raises:
        DataError: the variable is not numeric, not a vector, or empty.
    """
    array = np.asarray(arrays[name])
    if array.dtype.kind not in "biuf":
        raise DataError(f"{path}: variable {name!r} is not real numeric (dtype {array.dtype})")
    if array.ndim not in (1, 2) or (array.ndim == 2 and min(array.shape) != 1):
        raise DataError(f"{path}: variable {name!r} has shape {array.shape}; expected a vector (N,), (1, N) "
                        f"or (N, 1)")
    if array.size == 0:
        raise DataError(f"{path}: variable {name!r} has no samples")
    return array.astype(np.float64).ravel()


def _names(names: Names) -> list[str]:
    return [names] if isinstance(names, str) else list(names)


def _to_iodata(path: Path, arrays: Mapping[str, np.ndarray], u: Names, y: Names, dt: float, name: str | None,
               y_unit: str) -> IOData:
    u_names, y_names = _names(u), _names(y)
    if not u_names or not y_names:
        raise DataError(f"{path}: at least one input and one output name are needed; got u={u_names}, "
                        f"y={y_names}")
    channels = [*u_names, *y_names]
    repeated = sorted({n for n in channels if channels.count(n) > 1})
    if repeated:
        raise DataError(f"{path}: {repeated} named more than once among the inputs and outputs (u={u_names}, "
                        f"y={y_names}): each channel is an input or an output, once")
    u_cols = [as_vector(arrays, n, path) for n in u_names]
    y_cols = [as_vector(arrays, n, path) for n in y_names]
    lengths = {n: len(c) for n, c in zip([*u_names, *y_names], [*u_cols, *y_cols], strict=True)}
    if len(set(lengths.values())) > 1:
        raise DataError(f"{path}: the chosen variables have different lengths: {lengths}")
    return IOData(u=np.stack(u_cols, axis=1), y=np.stack(y_cols, axis=1), dt=dt,
                  name=path.stem if name is None else name, u_names=tuple(u_names), y_names=tuple(y_names),
                  y_unit=y_unit)


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise DataError(f"data file not found: {path}" if not path.exists() else f"not a file: {path}")


def _pick(available: Sequence[str], wanted: Sequence[str], path: Path, kind: str) -> None:
    """Raise a DataError for the first wanted name that is not available, with a did-you-mean hint."""
    for name in wanted:
        if name not in available:
            msg = f"{path}: no {kind} named {name!r}; available: {', '.join(available) or '(none)'}"
            close = difflib.get_close_matches(name, list(available), n=1)
            raise DataError(msg + (f" (did you mean {close[0]!r}?)" if close else ""))


def _read_csv_columns(path: Path, names: Sequence[str], delimiter: str) -> dict[str, np.ndarray]:
    _check_file(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as file:
            return _parse_csv(csv.reader(file, delimiter=delimiter), names, path)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: not a readable text CSV file: {exc}") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot read file: {exc}") from exc


def _parse_csv(reader: Iterator[list[str]], names: Sequence[str], path: Path) -> dict[str, np.ndarray]:
    """Parse the header and the chosen columns; ``reader`` is a ``csv.reader`` (its line_num gives lines)."""
    header = [cell.strip() for cell in next(reader, [])]
    available = [h for h in header if h]
    if not available:
        raise DataError(f"{path}: the CSV file has no header row with column names")
    _pick(available, names, path, "column")
    for name in names:
        if header.count(name) > 1:
            raise DataError(f"{path}: column name {name!r} appears {header.count(name)} times in the header")
    index = {name: header.index(name) for name in names}
    columns: dict[str, list[float]] = {name: [] for name in names}
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        for name, i in index.items():
            line = reader.line_num  # type: ignore[attr-defined]
            columns[name].append(_parse_cell(row[i] if i < len(row) else "", path, line, name))
    return {name: np.asarray(values, dtype=np.float64) for name, values in columns.items()}


def _parse_cell(cell: str, path: Path, line: int, column: str) -> float:
    try:
        return float(cell)
    except ValueError:
        what = "empty cell" if not cell.strip() else f"non-numeric cell {cell.strip()!r}"
        raise DataError(f"{path}: line {line}, column {column!r}: {what}; expected a number") from None


def _read_npz_arrays(path: Path, names: Sequence[str]) -> dict[str, np.ndarray]:
    _check_file(path)
    # The file is opened here because numpy leaks its own handle when the archive is corrupt.
    try:
        with path.open("rb") as file:
            archive = np.load(file, allow_pickle=False)
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise DataError(f"{path}: not an .npz archive (it holds a single .npy array)")
            _pick(list(archive.files), names, path, "array")
            return {name: archive[name] for name in names}  # decompressed here: errors of damaged members
    except DataError:
        raise
    except Exception as exc:  # OSError, ValueError, EOFError, BadZipFile, zlib.error, ... on bad files
        raise DataError(f"{path}: cannot read .npz file (corrupt or truncated?): {exc}") from exc


def _read_mat_arrays(path: Path, names: Sequence[str]) -> dict[str, np.ndarray]:
    _check_file(path)
    try:
        with path.open("rb") as file:
            content = scipy.io.loadmat(file)
    except NotImplementedError as exc:
        raise DataError(f"{path}: MATLAB v7.3 (HDF5) files are not supported; save with -v7: {exc}") from exc
    except Exception as exc:  # scipy raises ValueError, TypeError, MatReadError, ... on bad files
        raise DataError(f"{path}: cannot read .mat file (corrupt or truncated?): {exc}") from exc
    available = [key for key in content if not key.startswith("__")]
    _pick(available, names, path, "variable")
    return {name: content[name] for name in names}
