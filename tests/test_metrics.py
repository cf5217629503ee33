"""Metrics: hand-computed values, an independent reference, identities and bad inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from deepwiener.errors import DataError
from deepwiener.metrics import fit_percent, nrmse, r2, rmse

METRICS = (rmse, nrmse, fit_percent, r2)


def reference(y: list[float], y_hat: list[float]) -> dict[str, float]:
    """One channel, with explicit sums in plain Python (no numpy)."""
    n = len(y)
    mean = math.fsum(y) / n
    sse = math.fsum((a - b) ** 2 for a, b in zip(y, y_hat, strict=True))
    sst = math.fsum((a - mean) ** 2 for a in y)
    rms = math.sqrt(sse / n)
    return {"rmse": rms, "nrmse": rms / math.sqrt(sst / n), "fit_percent": 100 * (1 - math.sqrt(sse / sst)),
            "r2": 1 - sse / sst}


def test_hand_computed_values() -> None:
    y, y_hat = [1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 5.0]
    # e = (0, 0, 0, -1): SSE 1, RMSE 1/2; mean 2.5, SST 5, std sqrt(5/4)
    assert rmse(y, y_hat) == pytest.approx(0.5)
    assert nrmse(y, y_hat) == pytest.approx(1 / math.sqrt(5))
    assert fit_percent(y, y_hat) == pytest.approx(100 * (1 - 1 / math.sqrt(5)))  # 55.2786...
    assert r2(y, y_hat) == pytest.approx(0.8)


def test_multichannel_matches_reference() -> None:
    rng = np.random.default_rng(0)
    y = rng.normal(size=(500, 3)) * [1.0, 10.0, 0.01] + [0.0, 5.0, -1.0]
    y_hat = y + rng.normal(size=(500, 3)) * [0.3, 2.0, 0.001]
    results = {f.__name__: f(y, y_hat) for f in METRICS}
    for k in range(3):
        ref = reference(y[:, k].tolist(), y_hat[:, k].tolist())
        for name, values in results.items():
            assert isinstance(values, np.ndarray) and values.shape == (3,)
            assert values[k] == pytest.approx(ref[name], rel=1e-10), name


def test_identities() -> None:
    rng = np.random.default_rng(1)
    y, y_hat = rng.normal(size=(2, 200))
    n = nrmse(y, y_hat)
    assert fit_percent(y, y_hat) == pytest.approx(100 * (1 - n))
    assert r2(y, y_hat) == pytest.approx(1 - n**2)
    assert rmse(y, y_hat) == pytest.approx(np.linalg.norm(y - y_hat) / math.sqrt(200))


def test_perfect_and_mean_predictions() -> None:
    y = np.sin(np.arange(50.0))
    assert (rmse(y, y), fit_percent(y, y), r2(y, y)) == (0.0, 100.0, 1.0)
    mean = np.full_like(y, y.mean())
    assert fit_percent(y, mean) == pytest.approx(0.0, abs=1e-12)
    assert r2(y, mean) == pytest.approx(0.0, abs=1e-12)
    assert nrmse(y, mean) == pytest.approx(1.0)


@pytest.mark.parametrize("metric", METRICS)
def test_one_channel_returns_float(metric: object) -> None:
    y = np.arange(10.0)
    for a, b in ((y, y + 1), (y[:, None], y[:, None] + 1), (y, y[:, None] + 1)):
        assert type(metric(a, b)) is float  # type: ignore[operator]


@pytest.mark.parametrize("metric", (nrmse, fit_percent, r2))
def test_constant_channel_is_nan_without_warning(metric: object) -> None:
    y = np.column_stack([np.ones(10), np.arange(10.0)])
    values = metric(y, y + 0.5)  # type: ignore[operator]
    assert math.isnan(values[0]) and math.isfinite(values[1])
    assert rmse(y, y + 0.5)[0] == pytest.approx(0.5)


@pytest.mark.parametrize("metric", METRICS)
def test_bad_inputs(metric: object) -> None:
    good = np.zeros((10, 2))
    nan = good.copy()
    nan[4, 1] = np.nan
    inf = good.copy()
    inf[7, 0] = np.inf
    cases = [
        ((good, np.zeros((9, 2))), r"same shape; got y \(10, 2\) and y_hat \(9, 2\)"),
        ((good, np.zeros((10, 3))), "same shape"),
        ((nan, good), r"y has 1 non-finite .*time index 4, channel 1"),
        ((good, inf), r"y_hat has 1 non-finite .*time index 7, channel 0"),
        ((np.zeros((2, 2, 2)), np.zeros((2, 2, 2))), r"y must be 1-D \(T,\) or 2-D \(T, n_y\); got shape"),
        ((np.zeros(0), np.zeros(0)), "y is empty"),
        ((["a", "b"], [1.0, 2.0]), "y must be numeric"),
        (([1.0, 2.0], np.array([1j, 2.0])), "y_hat must be real"),
    ]
    for args, message in cases:
        with pytest.raises(DataError, match=message):
            metric(*args)  # type: ignore[operator]
