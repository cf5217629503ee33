"""evaluate(): the official protocol, cross-checked against an independent plain-Python implementation."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest

from deepwiener.data import IOData, load_benchmark
from deepwiener.errors import ConfigError, DataError
from deepwiener.evaluation import evaluate, evaluate_all, input_reach
from deepwiener.identification import fit_fir


@dataclass
class Replay:
    """A Simulator that returns a fixed output (and records the input it was given)."""

    y_hat: np.ndarray
    dt: float = 0.1

    def simulate(self, u: np.ndarray) -> np.ndarray:
        self.u = u
        return self.y_hat


def reference(y: list[float], y_hat: list[float], skip: int, scale: float) -> dict[str, float]:
    """The benchmark formulas written out with explicit sums (nonlinear_benchmarks' RMSE with n_init)."""
    y = [scale * v for v in y[skip:]]
    y_hat = [scale * v for v in y_hat[skip:]]
    n = len(y)
    mean = math.fsum(y) / n
    sse = math.fsum((a - b) ** 2 for a, b in zip(y, y_hat, strict=True))
    sst = math.fsum((a - mean) ** 2 for a in y)
    return {"rmse": math.sqrt(sse / n), "nrmse": math.sqrt(sse / sst), "fit": 100 * (1 - math.sqrt(sse / sst)),
            "r2": 1 - sse / sst}


def test_matches_independent_implementation() -> None:
    rng = np.random.default_rng(0)
    y = rng.normal(size=(300, 2)) * [0.05, 2.0]
    y_hat = y + rng.normal(size=(300, 2)) * [0.01, 0.5]
    y_hat[:20] += 100.0  # errors inside the init window must not count
    data = IOData(u=rng.normal(size=300), y=y, dt=0.1, y_unit="V", report_unit="mV", report_scale=1000.0)
    model = Replay(y_hat)
    m = evaluate(model, data, init_window=20)
    np.testing.assert_array_equal(model.u, data.u)  # the whole record is simulated
    assert m["unit"] == "mV" and m["n_samples"] == 280
    for k in range(2):
        ref = reference(y[:, k].tolist(), y_hat[:, k].tolist(), 20, 1000.0)
        for key, value in ref.items():
            assert m[key][k] == pytest.approx(value, rel=1e-10), key


def test_single_output_floats_and_data_unit() -> None:
    y = np.sin(np.arange(100) / 5)
    m = evaluate(Replay(y[:, None] + 0.1), IOData(u=y, y=y, dt=0.1, y_unit="m"))
    assert m == {"rmse": pytest.approx(0.1), "nrmse": pytest.approx(0.1 / y.std()),
                 "fit": pytest.approx(100 * (1 - 0.1 / y.std())), "r2": pytest.approx(1 - (0.1 / y.std()) ** 2),
                 "unit": "m", "n_samples": 100}
    assert isinstance(m["rmse"], float)


def test_refuses_other_dt_naming_both() -> None:
    data = IOData(u=np.zeros(10), y=np.ones(10), dt=0.2, name="rec")
    with pytest.raises(DataError, match=r"record 'rec' has dt = 0\.2 s but the model uses dt = 0\.1 s"):
        evaluate(Replay(np.ones((10, 1))), data)
    evaluate(Replay(np.ones((10, 1)), dt=0.2 * (1 + 5e-4)), data)  # within the 1e-3 relative tolerance


@pytest.mark.parametrize("init_window", [-1, 10, 1.5, True])
def test_bad_init_window(init_window: object) -> None:
    with pytest.raises(DataError, match="init_window must be an integer in"):
        evaluate(Replay(np.ones((10, 1))), IOData(u=np.zeros(10), y=np.arange(10.0), dt=0.1), init_window)


def test_wrong_simulated_shape() -> None:
    with pytest.raises(DataError, match=r"simulated an output of shape \(9, 1\)"):
        evaluate(Replay(np.ones((9, 1))), IOData(u=np.zeros(10), y=np.arange(10.0), dt=0.1))


def test_segments_split_the_counted_samples_in_consecutive_parts() -> None:
    rng = np.random.default_rng(2)
    y = rng.normal(size=(53, 2))
    y_hat = y + rng.normal(size=(53, 2)) * [[0.1, 1.0]]
    y_hat[:3] += 100.0  # init window: not in any part
    data = IOData(u=np.zeros(53), y=y, dt=0.1, y_unit="V", report_unit="mV", report_scale=1000.0)
    m = evaluate(Replay(y_hat), data, init_window=3, segments=4)
    assert m["segment_starts"] == [3, 16, 29, 41]  # 50 counted samples: parts of 13, 13, 12, 12
    bounds = [*m["segment_starts"], 53]
    for part, (a, b) in enumerate(zip(bounds, bounds[1:], strict=False)):
        for k in range(2):
            ref = reference(y[a:b, k].tolist(), y_hat[a:b, k].tolist(), 0, 1000.0)["rmse"]
            assert m["segment_rmse"][part][k] == pytest.approx(ref, rel=1e-10)
    assert m["rmse"] == evaluate(Replay(y_hat), data, init_window=3)["rmse"]  # the totals do not change
    single = evaluate(Replay(y_hat[:, :1]), replace(data, y=y[:, :1]), init_window=3, segments=50)
    assert single["segment_starts"] == list(range(3, 53)) and isinstance(single["segment_rmse"][0], float)
    assert "segment_rmse" not in evaluate(Replay(y_hat), data, init_window=3)


@pytest.mark.parametrize("segments", [-1, 11, 2.0, True])
def test_bad_segments(segments: object) -> None:
    with pytest.raises(ConfigError, match=r"segments must be an integer in \[0, 10\]"):
        evaluate(Replay(np.ones((12, 1))), IOData(u=np.zeros(12), y=np.arange(12.0), dt=0.1), 2, segments)


def test_linear_baseline_is_a_simulator() -> None:
    rng = np.random.default_rng(1)
    u = rng.normal(size=400)
    y = np.convolve(u, [0.5, 0.3, 0.1])[:400]
    data = IOData(u=u, y=y, dt=0.01)
    model = fit_fir([data], n_taps=3)
    assert evaluate(model, data, init_window=5)["rmse"] < 1e-8


def test_benchmark_records_carry_report_units(data_dir: Path) -> None:
    bench = load_benchmark("silverbox", data_dir)
    for record in (*bench.train, *bench.tests.values()):
        assert (record.y_unit, record.report_unit, record.report_scale) == ("V", "mV", 1000.0)
    piece = bench.tests["multisine"][100:400]
    assert (piece.report_unit, piece.report_scale) == ("mV", 1000.0)
    zero = Replay(np.zeros((300, 1)), dt=bench.train[0].dt)
    assert evaluate(zero, piece)["rmse"] == pytest.approx(1000 * np.sqrt(np.mean(piece.y**2)))
    only_multisine = replace(bench, tests={"multisine": bench.tests["multisine"]})
    results = evaluate_all(Replay(np.zeros((21688, 1)), dt=piece.dt), only_multisine)
    assert list(results) == ["multisine"] and results["multisine"]["n_samples"] == 21688 - bench.init_window


def test_report_scale_must_be_positive() -> None:
    with pytest.raises(DataError, match="field 'report_scale' must be finite and > 0"):
        IOData(u=np.zeros(3), y=np.zeros(3), dt=1.0, report_unit="mV", report_scale=0.0)


def test_input_reach_counts_samples_outside_and_the_farthest_excursion() -> None:
    low, high = np.array([-1.0, 0.0]), np.array([1.0, 4.0])  # centres 0 and 2, half-widths 1 and 2
    inside = np.array([[0.5, 1.0], [-1.0, 4.0], [0.0, 0.0]])
    assert input_reach(inside, low, high) == (0.0, 1.0)
    u = np.array([[0.0, 2.0], [3.0, 2.0], [0.0, -2.0], [-0.5, 5.0]])  # reaches 0, 3, 2, 1.5; 3 of 4 outside
    reach = input_reach(u, low, high)
    assert reach.outside == pytest.approx(0.75) and reach.reach == pytest.approx(3.0)


def test_input_reach_of_a_constant_training_channel() -> None:
    low = high = np.array([2.0])
    assert input_reach(np.array([[2.0], [2.0]]), low, high) == (0.0, 0.0)
    assert input_reach(np.array([[2.0], [2.5]]), low, high) == (0.5, math.inf)


@pytest.mark.parametrize(("low", "high"), [([0.0], [1.0, 2.0]), ([1.0, 0.0], [0.0, 1.0])])
def test_input_reach_refuses_bad_ranges(low: list[float], high: list[float]) -> None:
    with pytest.raises(DataError, match="low <= high"):
        input_reach(np.zeros((5, 2)), np.array(low), np.array(high))


@pytest.mark.parametrize("n_y", [1, 2])
def test_a_diverged_simulation_is_a_result_with_infinite_errors(n_y: int) -> None:
    rng = np.random.default_rng(3)
    y = rng.normal(size=(200, n_y))
    y_hat = y + 0.01
    y_hat[150:, -1] = np.inf  # blows up at sample 150 in the last output
    y_hat[170:, -1] = np.nan
    data = IOData(u=rng.normal(size=200), y=y, dt=0.1, y_unit="V")
    m = evaluate(Replay(y_hat), data, init_window=10, segments=4)  # parts start at 10, 57, 105, 153
    assert m["diverged_at"] == 150
    for key, value in (("rmse", math.inf), ("nrmse", math.inf), ("fit", -math.inf), ("r2", -math.inf)):
        assert m[key] == (value if n_y == 1 else [value] * n_y), key
    finite_parts = m["segment_rmse"][:2]  # the part from 105 contains sample 150, and so does the next
    assert all(np.all(np.isfinite(part)) for part in finite_parts)
    assert m["segment_rmse"][0] == pytest.approx(0.01 if n_y == 1 else [0.01] * n_y)
    assert np.all(np.isinf(m["segment_rmse"][2])) and np.all(np.isinf(m["segment_rmse"][3]))
    assert "diverged_at" not in evaluate(Replay(y + 0.01), data, init_window=10)


def test_a_simulation_diverged_inside_the_init_window_still_counts() -> None:
    y = np.ones((50, 1))
    y_hat = y.copy()
    y_hat[5:] = np.nan  # the state is NaN from sample 5 on, including the scored samples
    m = evaluate(Replay(y_hat), IOData(u=y, y=y, dt=0.1), init_window=10)
    assert m["diverged_at"] == 5 and m["rmse"] == math.inf
