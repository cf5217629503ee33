"""Validation split, training windows and normalisation statistics.

The validation part of a record is its time-contiguous tail: windows overlap, so a random window split would
leak training samples into validation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from deepwiener.data.iodata import IOData
from deepwiener.errors import ConfigError, DataError, is_integer_in

_CONSTANT_RTOL = 1e-10
"""A channel whose std is below this times max(1, |mean|) is treated as constant (std set to 1)."""


class ScalerStats(NamedTuple):
    """Per-channel normalisation statistics: ``(x - mean) / std``.

    Attributes:
        u_mean: (n_u,) float64 input means.
        u_std: (n_u,) float64 input standard deviations, > 0.
        y_mean: (n_y,) float64 output means.
        y_std: (n_y,) float64 output standard deviations, > 0.
    """

    u_mean: np.ndarray
    u_std: np.ndarray
    y_mean: np.ndarray
    y_std: np.ndarray


class ValidationRecord(NamedTuple):
    """A validation record: simulated in full from the zero state, scored from sample ``start`` on (a held-out tail
    is scored after its record's training part, which warms the state up with its inputs only)."""

    data: IOData
    start: int


def split_validation(data: IOData, fraction: float) -> tuple[IOData, IOData]:
    """Split a record into a training head and a time-contiguous validation tail.

    Args:
        data: the record, T samples.
        fraction: share of the samples in the validation tail, 0 < fraction < 1; the tail holds
            ``round(fraction * T)`` samples, at least 1.

    Returns:
        ``(train_part, val_part)``: ``data[:T - n_val]`` and ``data[T - n_val:]``, keeping dt, names and unit.

    Raises:
        ConfigError: ``fraction`` is not in (0, 1).
        DataError: the record is too short to leave at least one sample on each side.
    """
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0.0 < fraction < 1.0:
        raise ConfigError(f"validation fraction must be in (0, 1); got {fraction!r}")
    n_val = max(1, round(fraction * len(data)))
    if n_val >= len(data):
        raise DataError(f"record {data.name!r} has {len(data)} samples, too few to split off a validation "
                        f"tail of fraction {fraction}")
    cut = len(data) - n_val
    return data[:cut], data[cut:]


def make_windows(datas: Sequence[IOData] | IOData, window: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut overlapping windows of equal length from one or more records.

    Windows start at 0, stride, 2 stride, ... of each record; when the last one does not end at the record's
    end, one more window aligned with the end is added, so every sample is covered.

    Args:
        datas: the records (or one record); all must have the same n_u and n_y.
        window: window length in samples, >= 1.
        stride: distance between window starts in samples, >= 1 (``stride < window`` overlaps).

    Returns:
        ``(u, y)``: u (n_win, window, n_u) and y (n_win, window, n_y), float64, records in the given order.

    Raises:
        ConfigError: ``window`` or ``stride`` is not a positive integer.
        DataError: no records, records with different channel counts, or a record shorter than ``window``.
    """
    records = _as_records(datas)
    _check_positive_int("window", window)
    _check_positive_int("stride", stride)
    us, ys = [], []
    for i, data in enumerate(records):
        if len(data) < window:
            raise DataError(f"record {i} ({data.name!r}) has {len(data)} samples, shorter than the window of "
                            f"{window}")
        starts = _window_starts(len(data), window, stride)
        us.append(_cut(data.u, starts, window))
        ys.append(_cut(data.y, starts, window))
    return np.concatenate(us), np.concatenate(ys)


def fit_scaler(datas: Sequence[IOData] | IOData, increments: bool = False) -> ScalerStats:
    """Per-channel mean and standard deviation over all samples of all records.

    A (near-)constant channel gets std 1, so normalising it never divides by zero.

    Args:
        datas: the (training) records; all must have the same n_u and n_y.
        increments: describe the output's increments (:func:`output_increments`) instead of the output, with
            mean 0 (a model with an output integrator: a nonzero mean increment would be a built-in drift).

    Returns:
        ScalerStats ``(u_mean (n_u,), u_std (n_u,), y_mean (n_y,), y_std (n_y,))``, unpackable as a tuple.

    Raises:
        DataError: no records, or records with different channel counts.
    """
    records = _as_records(datas)
    u_mean, u_std = _mean_std(np.concatenate([d.u for d in records]))
    y_mean, y_std = _mean_std(np.concatenate([(output_increments(d) if increments else d).y for d in records]))
    return ScalerStats(u_mean, u_std, np.zeros_like(y_mean) if increments else y_mean, y_std)


def output_increments(data: IOData) -> IOData:
    """The record with its output replaced by the output's increments ``y_k - y_{k-1}``, from ``y_{-1} = 0``.

    Their running sum is the output again: what a model with an output integrator learns (``ModelConfig``).

    Args:
        data: u: (T, n_u), y: (T, n_y).

    Returns:
        The same record (u, dt, names, units) with y: (T, n_y) increments.
    """
    return dataclasses.replace(data, y=np.diff(data.y, axis=0, prepend=np.zeros((1, data.n_y))))


def _as_records(datas: Sequence[IOData] | IOData) -> list[IOData]:
    records = [datas] if isinstance(datas, IOData) else list(datas)
    if not records:
        raise DataError("no records given; expected at least one IOData")
    for i, data in enumerate(records):
        if not isinstance(data, IOData):
            raise DataError(f"record {i} is a {type(data).__name__}; expected IOData")
        if (data.n_u, data.n_y) != (records[0].n_u, records[0].n_y):
            raise DataError(f"record {i} ({data.name!r}) has n_u={data.n_u}, n_y={data.n_y}; record 0 "
                            f"({records[0].name!r}) has n_u={records[0].n_u}, n_y={records[0].n_y}")
    return records


def _check_positive_int(name: str, value: object) -> None:
    if not is_integer_in(value, 1):
        raise ConfigError(f"{name} must be a positive integer number of samples; got {value!r}")


def _window_starts(n_samples: int, window: int, stride: int) -> np.ndarray:
    starts = np.arange(0, n_samples - window + 1, stride)
    if starts[-1] != n_samples - window:
        starts = np.append(starts, n_samples - window)
    return starts


def _cut(x: np.ndarray, starts: np.ndarray, window: int) -> np.ndarray:
    view = np.lib.stride_tricks.sliding_window_view(x, (window, x.shape[1]))  # (T - window + 1, 1, window, n)
    return view[starts, 0]  # (n_win, window, n), one contiguous copy


def _mean_std(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column mean and population std of x (T, n); near-constant columns get std 1."""
    mean, std = x.mean(axis=0), x.std(axis=0)
    constant = std <= _CONSTANT_RTOL * np.maximum(1.0, np.abs(mean))
    return mean, np.where(constant, 1.0, std)
