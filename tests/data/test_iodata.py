"""IOData: coercion, immutability, slicing, and a DataError naming the field for every bad input."""

from __future__ import annotations

import re

import numpy as np
import pytest

from deepwiener.data import IOData
from deepwiener.errors import DataError, DeepWienerError


def make(T: int = 10, n_u: int = 2, n_y: int = 1, **kwargs: object) -> IOData:
    rng = np.random.default_rng(0)
    fields = {"u": rng.normal(size=(T, n_u)), "y": rng.normal(size=(T, n_y)), "dt": 0.5, **kwargs}
    return IOData(**fields)  # type: ignore[arg-type]


def test_one_dimensional_records_become_columns() -> None:
    data = IOData(u=[1, 2, 3], y=np.array([4.0, 5.0, 6.0], dtype=np.float32), dt=0.1)
    assert data.u.shape == (3, 1) and data.y.shape == (3, 1)
    assert data.u.dtype == np.float64 and data.y.dtype == np.float64
    np.testing.assert_array_equal(data.y[:, 0], [4.0, 5.0, 6.0])
    assert (data.n_u, data.n_y, data.n_samples, len(data)) == (1, 1, 3, 3)


def test_properties_and_time_axis() -> None:
    data = make(T=4, n_u=3, n_y=2, name="rig", u_names=("a", "b", "c"), y_names=("p", "q"), y_unit="V")
    assert (data.n_u, data.n_y, data.n_samples) == (3, 2, 4)
    np.testing.assert_allclose(data.time, [0.0, 0.5, 1.0, 1.5])
    assert "rig" in repr(data) and "n_samples=4" in repr(data)


def test_arrays_are_read_only_copies() -> None:
    u = np.zeros(5)
    data = IOData(u=u, y=np.ones(5), dt=1.0)
    u[0] = 99.0
    assert data.u[0, 0] == 0.0
    with pytest.raises(ValueError):
        data.u[0, 0] = 1.0
    with pytest.raises(AttributeError):
        data.dt = 2.0  # type: ignore[misc]


def test_slice_keeps_metadata() -> None:
    data = make(T=10, name="exp", u_names=("a", "b"), y_names=("p",), y_unit="mm")
    part = data[2:7]
    assert isinstance(part, IOData) and len(part) == 5
    assert (part.dt, part.name, part.y_unit) == (0.5, "exp", "mm")
    assert (part.u_names, part.y_names) == (("a", "b"), ("p",))
    np.testing.assert_array_equal(part.u, data.u[2:7])
    np.testing.assert_array_equal(part.y, data.y[2:7])


@pytest.mark.parametrize("index", [3, slice(0, 6, 2)])
def test_only_contiguous_slices(index: object) -> None:
    with pytest.raises(DataError, match="slice|step"):
        make()[index]  # type: ignore[index]


def test_empty_slice_is_an_error() -> None:
    with pytest.raises(DataError, match="'u' is empty"):
        make(T=10)[5:5]


def test_nan_in_u_names_field_count_and_first_index() -> None:
    u = np.zeros((8, 2))
    u[3, 1] = np.nan
    u[6, 0] = np.nan
    with pytest.raises(DataError, match=r"'exp'.*field 'u' has 2 non-finite .*time index 3, channel 1"):
        IOData(u=u, y=np.zeros(8), dt=1.0, name="exp")


def test_inf_in_y() -> None:
    y = np.zeros(8)
    y[5] = -np.inf
    with pytest.raises(DataError, match=r"field 'y' has 1 non-finite .*time index 5"):
        IOData(u=np.zeros(8), y=y, dt=1.0)


def test_length_mismatch_gives_both_lengths() -> None:
    with pytest.raises(DataError, match=r"same length; u has 10 samples, y has 9"):
        IOData(u=np.zeros(10), y=np.zeros(9), dt=1.0)


@pytest.mark.parametrize("field", ["u", "y"])
@pytest.mark.parametrize("shape", [(), (4, 1, 1)])
def test_wrong_ndim(field: str, shape: tuple[int, ...]) -> None:
    fields = {"u": np.zeros(4), "y": np.zeros(4), "dt": 1.0, field: np.zeros(shape)}
    with pytest.raises(DataError, match=rf"field '{field}' must be 1-D .*got shape {re.escape(str(shape))}"):
        IOData(**fields)  # type: ignore[arg-type]



@pytest.mark.parametrize("u", [np.zeros(0), np.zeros((5, 0))])
def test_empty_record(u: np.ndarray) -> None:
    with pytest.raises(DataError, match="field 'u' is empty"):
        IOData(u=u, y=np.zeros(len(u)), dt=1.0)


@pytest.mark.parametrize("dt", [0.0, -0.1, float("nan"), float("inf"), "fast", None])
def test_bad_dt(dt: object) -> None:
    with pytest.raises(DataError, match="field 'dt'"):
        IOData(u=np.zeros(3), y=np.zeros(3), dt=dt)  # type: ignore[arg-type]


def test_non_numeric_and_complex_values() -> None:
    with pytest.raises(DataError, match="field 'u' must be numeric"):
        IOData(u=["a", "b"], y=[1.0, 2.0], dt=1.0)
    with pytest.raises(DataError, match="field 'y' must be real"):
        IOData(u=[1.0, 2.0], y=np.array([1 + 1j, 2.0]), dt=1.0)


def test_channel_names_must_match_channel_count() -> None:
    with pytest.raises(DataError, match=r"'u_names' has 1 name\(s\) for 2 channel\(s\)"):
        make(n_u=2, u_names=("only",))
    assert make(n_y=1, y_names="out").y_names == ("out",)


def test_data_error_is_a_value_error_and_a_deepwiener_error() -> None:
    with pytest.raises(ValueError):
        IOData(u=np.zeros(3), y=np.zeros(3), dt=0.0)
    assert issubclass(DataError, DeepWienerError)
