"""Validation split, training windows and scaler statistics, checked against explicit loops."""

from __future__ import annotations

import math

import numpy as np
import pytest

from deepwiener.data import IOData, fit_scaler, make_windows, split_validation
from deepwiener.errors import ConfigError, DataError


def record(T: int, n_u: int = 2, n_y: int = 1, seed: int = 0, name: str = "rec") -> IOData:
    rng = np.random.default_rng(seed)
    return IOData(u=rng.normal(size=(T, n_u)), y=rng.normal(size=(T, n_y)), dt=0.01, name=name,
                  y_unit="V")


# --- split_validation ---------------------------------------------------------------------------------------


def test_split_validation_is_a_contiguous_tail() -> None:
    data = record(100)
    train, val = split_validation(data, 0.25)
    assert (len(train), len(val)) == (75, 25)
    np.testing.assert_array_equal(np.vstack([train.u, val.u]), data.u)
    np.testing.assert_array_equal(val.y, data.y[75:])
    assert val.dt == data.dt and val.y_unit == "V" and train.name == "rec"


def test_split_validation_keeps_at_least_one_sample() -> None:
    train, val = split_validation(record(10), 0.01)
    assert (len(train), len(val)) == (9, 1)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.2, 1.5, float("nan"), "0.2", True])
def test_split_validation_bad_fraction(fraction: object) -> None:
    with pytest.raises(ConfigError, match="fraction must be in"):
        split_validation(record(10), fraction)  # type: ignore[arg-type]


def test_split_validation_record_too_short() -> None:
    with pytest.raises(DataError, match="'tiny' has 1 samples"):
        split_validation(record(1, name="tiny"), 0.5)


# --- make_windows -------------------------------------------------------------------------------------------


def reference_windows(datas: list[IOData], window: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Windows by an explicit loop: starts 0, stride, ... plus one end-aligned window when needed."""
    us, ys = [], []
    for data in datas:
        start = 0
        starts = []
        while start + window <= len(data):
            starts.append(start)
            start += stride
        if starts[-1] + window != len(data):
            starts.append(len(data) - window)
        for s in starts:
            us.append(data.u[s:s + window])
            ys.append(data.y[s:s + window])
    return np.array(us), np.array(ys)


@pytest.mark.parametrize(("T", "window", "stride"),
                         [(20, 5, 5), (23, 5, 5), (23, 8, 3), (10, 10, 4), (7, 1, 1)])
def test_make_windows_matches_reference(T: int, window: int, stride: int) -> None:
    data = record(T, n_u=2, n_y=3)
    u, y = make_windows([data], window, stride)
    u_ref, y_ref = reference_windows([data], window, stride)
    assert u.shape == (len(u_ref), window, 2) and y.shape == (len(y_ref), window, 3)
    np.testing.assert_array_equal(u, u_ref)
    np.testing.assert_array_equal(y, y_ref)
    assert u.flags.c_contiguous and u.flags.writeable


def test_make_windows_counts_and_coverage() -> None:
    u, _ = make_windows(record(23, n_u=1), window=5, stride=5)
    assert len(u) == 5  # starts 0, 5, 10, 15 and the end-aligned 18
    assert u[-1, -1, 0] == record(23, n_u=1).u[-1, 0]
    assert len(make_windows(record(20), window=5, stride=5)[0]) == 4  # no extra window when aligned
    assert len(make_windows(record(20), window=10, stride=1)[0]) == 11  # overlapping


def test_make_windows_several_records_in_order() -> None:
    a, b = record(12, seed=1, name="a"), record(9, seed=2, name="b")
    u, y = make_windows([a, b], window=4, stride=4)
    u_ref, y_ref = reference_windows([a, b], 4, 4)
    np.testing.assert_array_equal(u, u_ref)
    np.testing.assert_array_equal(y, y_ref)
    assert len(make_windows(a, 4, 4)[0]) == 3  # one record may be passed directly


def test_make_windows_record_shorter_than_window() -> None:
    with pytest.raises(DataError, match=r"record 1 \('short'\) has 5 samples, shorter than the window of 8"):
        make_windows([record(10), record(5, name="short")], window=8, stride=1)


def test_make_windows_channel_mismatch() -> None:
    with pytest.raises(DataError, match=r"record 1 \('b'\) has n_u=3"):
        make_windows([record(10, n_u=2), record(10, n_u=3, name="b")], window=4, stride=1)


@pytest.mark.parametrize(("window", "stride"), [(0, 1), (4, 0), (4.0, 1), (4, -2), (True, 1)])
def test_make_windows_bad_sizes(window: object, stride: object) -> None:
    with pytest.raises(ConfigError, match="must be a positive integer"):
        make_windows([record(10)], window=window, stride=stride)  # type: ignore[arg-type]


def test_make_windows_needs_records() -> None:
    with pytest.raises(DataError, match="no records"):
        make_windows([], window=4, stride=1)
    with pytest.raises(DataError, match="record 0 is a ndarray"):
        make_windows([np.zeros((10, 2))], window=4, stride=1)  # type: ignore[list-item]


# --- fit_scaler ---------------------------------------------------------------------------------------------


def test_fit_scaler_pools_all_samples() -> None:
    a, b = record(30, n_u=2, n_y=2, seed=3), record(50, n_u=2, n_y=2, seed=4)
    u_mean, u_std, y_mean, y_std = fit_scaler([a, b])
    assert u_mean.shape == u_std.shape == (2,) and y_mean.shape == y_std.shape == (2,)
    for k in range(2):
        values = [float(v) for v in a.y[:, k]] + [float(v) for v in b.y[:, k]]
        mean = math.fsum(values) / len(values)
        std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / len(values))
        assert y_mean[k] == pytest.approx(mean, rel=1e-12)
        assert y_std[k] == pytest.approx(std, rel=1e-12)


def test_fit_scaler_constant_channel_gets_unit_std() -> None:
    data = IOData(u=np.column_stack([np.full(20, 3.0), np.arange(20.0)]), y=np.full(20, -7.0), dt=1.0)
    stats = fit_scaler(data)
    np.testing.assert_array_equal(stats.u_mean, [3.0, 9.5])
    assert stats.u_std[0] == 1.0 and stats.u_std[1] == pytest.approx(np.arange(20.0).std())
    assert stats.y_std[0] == 1.0 and stats.y_mean[0] == -7.0
    assert np.all(np.isfinite((data.u - stats.u_mean) / stats.u_std))


def test_fit_scaler_channel_mismatch() -> None:
    with pytest.raises(DataError, match="n_y=2"):
        fit_scaler([record(10, n_y=1), record(10, n_y=2)])
