"""IOData: one validated, immutable input/output experiment.

An experiment is an input record ``u`` of shape ``(T, n_u)``, an output record ``y`` of shape ``(T, n_y)`` and
a sampling time ``dt`` in seconds. Construction validates everything once, so the rest of the library can rely
on finite float64 arrays of matching length. The arrays are copied and made read-only; slicing (``data[a:b]``)
keeps ``dt``, the channel names and the units.

Sampling times are compared with :func:`check_dt` (relative tolerance :data:`DT_RTOL`), the one place where
"same dt" is decided.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from deepwiener.errors import DataError
from deepwiener.signals import as_signal

DT_RTOL = 1e-3
"""Relative tolerance of sampling-time comparisons (EMPS train and test dt differ by 1.6e-5 relative)."""


@dataclass(frozen=True, eq=False, repr=False)
class IOData:
    """One input/output experiment sampled at a constant rate.

    Attributes:
        u: (T, n_u) float64 input record; a 1-D (T,) array is stored as (T, 1).
        y: (T, n_y) float64 output record; a 1-D (T,) array is stored as (T, 1).
        dt: sampling time in seconds, finite and > 0.
        name: label used in error messages and reports.
        u_names: one name per input channel, or () when unnamed.
        y_names: one name per output channel, or () when unnamed.
        y_unit: physical unit of ``y`` (e.g. ``"V"``), or "" when unknown.
        report_unit: unit in which errors on this record are reported, by the benchmark's convention (e.g.
            ``"mV"``), or "" to report in ``y_unit``.
        report_scale: factor from ``y_unit`` to ``report_unit`` (e.g. 1000 for V -> mV), finite and > 0.

    Raises:
        DataError: NaN/inf values, an empty record, a wrong number of dimensions, ``u`` and ``y`` of
            different lengths, a non-positive or non-finite ``dt`` or ``report_scale``, or channel names that
            do not match the channel count. The message names the record and the field.
    """

    u: np.ndarray
    y: np.ndarray
    dt: float
    name: str = ""
    u_names: tuple[str, ...] = ()
    y_names: tuple[str, ...] = ()
    y_unit: str = ""
    report_unit: str = ""
    report_scale: float = 1.0

    def __post_init__(self) -> None:
        u = _as_record(self.u, "u", "n_u", self.name)
        y = _as_record(self.y, "y", "n_y", self.name)
        if u.shape[0] != y.shape[0]:
            raise DataError(
                f"{_label(self.name)}: u and y must have the same length; u has {u.shape[0]} samples, "
                f"y has {y.shape[0]}"
            )
        object.__setattr__(self, "u", u)
        object.__setattr__(self, "y", y)
        object.__setattr__(self, "dt", _as_dt(self.dt, self.name))
        object.__setattr__(self, "u_names", _as_names(self.u_names, "u_names", u.shape[1], self.name))
        object.__setattr__(self, "y_names", _as_names(self.y_names, "y_names", y.shape[1], self.name))
        object.__setattr__(self, "report_scale", _as_positive(self.report_scale, "report_scale", self.name))

    @property
    def n_u(self) -> int:
        """Number of input channels."""
        return self.u.shape[1]

    @property
    def n_y(self) -> int:
        """Number of output channels."""
        return self.y.shape[1]

    @property
    def n_samples(self) -> int:
        """Number of samples T."""
        return self.u.shape[0]

    @property
    def time(self) -> np.ndarray:
        """(T,) float64 time axis in seconds, starting at 0 for the first sample of this record."""
        return np.arange(self.n_samples) * self.dt

    def __len__(self) -> int:
        return self.n_samples

    def __getitem__(self, index: slice) -> IOData:
        """Return the contiguous time slice ``data[a:b]`` as a new IOData with the same dt, names and units.

        Raises:
            DataError: the index is not a slice, the slice has a step other than 1, or it is empty.
        """
        if not isinstance(index, slice):
            raise DataError(f"{_label(self.name)}: IOData is indexed by a time slice such as data[a:b]; "
                            f"got {type(index).__name__}")
        if index.step not in (None, 1):
            raise DataError(f"{_label(self.name)}: IOData slices must be contiguous (step 1); got step "
                            f"{index.step}")
        return replace(self, u=self.u[index], y=self.y[index])

    def __repr__(self) -> str:
        return (f"IOData(name={self.name!r}, n_samples={self.n_samples}, n_u={self.n_u}, n_y={self.n_y}, "
                f"dt={self.dt!r}, y_unit={self.y_unit!r})")


def _label(name: str) -> str:
    return f"IOData {name!r}" if name else "IOData"


def _as_record(values: object, field: str, width: str, name: str) -> np.ndarray:
    """Validate one record and return it as a read-only (T, width) float64 copy."""
    array = as_signal(values, f"{_label(name)}: field {field!r}", width)
    array.flags.writeable = False
    return array


def check_dt(found: float, expected: float, what: str, reference: str = "the model") -> None:
    """Raise DataError unless two sampling times agree to the relative tolerance :data:`DT_RTOL`.

    Args:
        found: the sampling time to check, in seconds.
        expected: the reference sampling time, in seconds.
        what: names the source of ``found`` in the message, e.g. ``"record 'test'"``.
        reference: names the source of ``expected``.

    Raises:
        DataError: the sampling times differ; the message names both values.
    """
    if not math.isclose(found, expected, rel_tol=DT_RTOL):
        raise DataError(f"{what} has dt = {found!r} s but {reference} uses dt = {expected!r} s (they must agree "
                        f"to a relative tolerance of {DT_RTOL:g})")


def _as_dt(dt: object, name: str) -> float:
    return _as_positive(dt, "dt", name, " seconds")


def _as_positive(value: object, field: str, name: str, unit: str = "") -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise DataError(f"{_label(name)}: field {field!r} must be a number{unit}; got {value!r}") from exc
    if not math.isfinite(number) or number <= 0:
        raise DataError(f"{_label(name)}: field {field!r} must be finite and > 0{unit}; got {value!r}")
    return number


def _as_names(names: object, field: str, n_channels: int, name: str) -> tuple[str, ...]:
    if isinstance(names, str):
        names = (names,)
    try:
        result = tuple(str(n) for n in names)  # type: ignore[union-attr]
    except TypeError as exc:
        raise DataError(f"{_label(name)}: field {field!r} must be a sequence of names; got "
                        f"{names!r}") from exc
    if result and len(result) != n_channels:
        raise DataError(f"{_label(name)}: field {field!r} has {len(result)} name(s) for {n_channels} "
                        f"channel(s): {result}")
    return result
