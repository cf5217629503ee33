"""Per-channel error measures between a measured output and a simulated one (pure numpy).

Every function takes ``y`` (measured) and ``y_hat`` (simulated) of shape (T,) or (T, n_y), computes one value
per output channel, and returns a float for one channel or a (n_y,) float64 array for several. With
``e = y - y_hat`` and ``ybar`` the channel mean of ``y``:

- ``rmse = sqrt(mean(e^2))`` in the units of ``y``;
- ``nrmse = rmse / std(y)`` (population std);
- ``fit_percent = 100 (1 - ||e|| / ||y - ybar||)`` (100 is perfect, 0 is as good as the mean);
- ``r2 = 1 - sum(e^2) / sum((y - ybar)^2)``.

Hence ``fit_percent = 100 (1 - nrmse)`` and ``r2 = 1 - nrmse^2``. The normalised measures are NaN for a
channel where ``y`` is constant, since they are undefined there. Evaluation protocols that skip an
initialisation window slice the records before calling these functions.
"""

from __future__ import annotations

import numpy as np

from deepwiener.errors import DataError
from deepwiener.signals import as_signal


def rmse(y: np.ndarray, y_hat: np.ndarray) -> float | np.ndarray:
    """Root-mean-square error per channel.

    Args:
        y: (T,) or (T, n_y) measured output.
        y_hat: same shape as ``y``, the simulated output.

    Returns:
        float for one channel, else (n_y,) float64, in the units of ``y``.

    Raises:
        DataError: shapes differ, an array is empty, not 1-D/2-D, or holds NaN/inf.
    """
    _, e = _prepare(y, y_hat)
    return _result(np.sqrt(np.mean(e**2, axis=0)))


def nrmse(y: np.ndarray, y_hat: np.ndarray) -> float | np.ndarray:
    """RMSE divided by the (population) standard deviation of ``y``, per channel.

    Args:
        y: (T,) or (T, n_y) measured output.
        y_hat: same shape as ``y``, the simulated output.

    Returns:
        float for one channel, else (n_y,) float64; NaN where ``y`` is constant.

    Raises:
        DataError: as :func:`rmse`.
    """
    y2, e = _prepare(y, y_hat)
    return _result(_ratio(np.sqrt(np.mean(e**2, axis=0)), np.std(y2, axis=0)))


def fit_percent(y: np.ndarray, y_hat: np.ndarray) -> float | np.ndarray:
    """FIT = 100 (1 - ||y - y_hat|| / ||y - mean(y)||) per channel, in percent.

    Args:
        y: (T,) or (T, n_y) measured output.
        y_hat: same shape as ``y``, the simulated output.

    Returns:
        float for one channel, else (n_y,) float64; 100 is a perfect fit; NaN where ``y`` is constant.

    Raises:
        DataError: as :func:`rmse`.
    """
    y2, e = _prepare(y, y_hat)
    centred = y2 - y2.mean(axis=0)
    return _result(100.0 * (1.0 - _ratio(np.linalg.norm(e, axis=0), np.linalg.norm(centred, axis=0))))


def r2(y: np.ndarray, y_hat: np.ndarray) -> float | np.ndarray:
    """Coefficient of determination R^2 = 1 - SSE / SST per channel.

    Args:
        y: (T,) or (T, n_y) measured output.
        y_hat: same shape as ``y``, the simulated output.

    Returns:
        float for one channel, else (n_y,) float64; 1 is a perfect fit; NaN where ``y`` is constant.

    Raises:
        DataError: as :func:`rmse`.
    """
    y2, e = _prepare(y, y_hat)
    sst = np.sum((y2 - y2.mean(axis=0)) ** 2, axis=0)
    return _result(1.0 - _ratio(np.sum(e**2, axis=0), sst))


def _prepare(y: np.ndarray, y_hat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate and return ``(y (T, n), y - y_hat (T, n))`` as float64."""
    y2 = as_signal(y, "y", "n_y")
    y_hat2 = as_signal(y_hat, "y_hat", "n_y")
    if y2.shape != y_hat2.shape:
        raise DataError(f"y and y_hat must have the same shape; got y {np.shape(y)} and y_hat "
                        f"{np.shape(y_hat)}")
    return y2, y2 - y_hat2


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den elementwise, NaN where den is 0 (without a warning)."""
    return np.divide(num, den, out=np.full_like(num, np.nan), where=den > 0)


def _result(values: np.ndarray) -> float | np.ndarray:
    return float(values[0]) if values.size == 1 else values
