"""Validation of signal arrays: the one place where user data becomes a (time, channels) float64 array.

Both the data records (``IOData``) and the error measures (``metrics``) check their arrays here, so a bad
signal gets the same message wherever it enters. This module depends only on ``errors``.
"""

from __future__ import annotations

import numpy as np

from deepwiener.errors import DataError


def as_signal(values: object, what: str, width: str = "n") -> np.ndarray:
    """A real, finite, non-empty signal as a new (T, n) float64 array.

    Args:
        values: (T,) or (T, n) array-like; a 1-D signal becomes one channel.
        what: how messages name the signal, e.g. ``"y_hat"`` or ``"record 'exp': field 'u'"``.
        width: the name of the channel count in messages, e.g. ``"n_y"``.

    Returns:
        (T, n) float64 copy.

    Raises:
        DataError: complex or non-numeric values, more than 2 dimensions, no samples or channels, or
            NaN/inf (the message gives their count and the first time index and channel).
    """
    if np.iscomplexobj(values):
        raise DataError(f"{what} must be real; got complex values")
    try:
        array = np.array(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{what} must be numeric: {exc}") from exc
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise DataError(f"{what} must be 1-D (T,) or 2-D (T, {width}); got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise DataError(f"{what} is empty (shape {array.shape}); expected at least one sample and one channel")
    bad = ~np.isfinite(array)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise DataError(f"{what} has {int(bad.sum())} non-finite value(s) (NaN or inf); the first is at time "
                        f"index {row}, channel {col}")
    return array
