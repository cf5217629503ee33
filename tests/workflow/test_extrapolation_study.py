"""benchmarks/extrapolation_study.py: the simulated oscillator and the split of its arrow record."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.signal

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def study():
    sys.path.insert(0, str(BENCHMARKS))  # the script imports accuracy.run as the benchmarks folder's package
    try:
        spec = importlib.util.spec_from_file_location("extrapolation_study", BENCHMARKS / "extrapolation_study.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module


def test_small_amplitudes_follow_the_exact_discretisation_of_the_linear_oscillator(study) -> None:
    """At 1e-4 of the knee the cubic spring is negligible: the response is the zero-order-hold discretisation of
    w0^2 / (s^2 + 2 zeta w0 s + w0^2), to the accuracy of the Runge-Kutta scheme."""
    w0 = 2 * np.pi * study.F0
    u = 1e-4 * study.Y_KNEE * np.random.default_rng(0).standard_normal(2000)
    num, den, _ = scipy.signal.cont2discrete(([w0**2], [1, 2 * study.ZETA * w0, w0**2]), study.DT, method="zoh")
    exact = scipy.signal.lfilter(num.ravel(), den, u)
    y = study.duffing(u)
    assert np.max(np.abs(y - exact)) < 2e-5 * np.max(np.abs(exact))  # measured 3.5e-6 (RK4, 8 steps)
    assert y[0] == 0.0


def test_the_cubic_spring_hardens(study) -> None:
    """A constant force settles where y + y^3 / (2 knee^2) = u: at the knee, u = 1.5 knee."""
    y = study.duffing(np.full(6000, 1.5 * study.Y_KNEE))
    assert y[-1] == pytest.approx(study.Y_KNEE, rel=1e-6)


def test_arrow_in_range_ends_where_the_arrow_first_leaves_the_training_amplitudes(study, monkeypatch) -> None:
    monkeypatch.setattr(study, "PERIOD", 512)
    monkeypatch.setattr(study, "N_TRAIN", 2)
    monkeypatch.setattr(study, "N_ARROW", 3000)
    data, val, varied = study.make_benchmark(seed=1)
    y_max = max(np.abs(rec.y).max() for rec in data.train)
    full, in_range = data.tests["arrow_full"], data.tests["arrow_in_range"]
    n = len(in_range)
    assert 0 < n < len(full)
    assert np.abs(in_range.y).max() <= y_max < abs(full.y[n, 0])
    np.testing.assert_array_equal(in_range.u, full.u[:n])
    assert [len(rec) for rec in data.train] == [512, 512] and len(val) == 512
    assert len(varied) == 2
    for rec, level, record in zip(varied, study.VARIED_LEVELS, data.train, strict=False):  # same multisine, scaled
        np.testing.assert_allclose(rec.u, level * record.u, rtol=1e-12)
    assert data.tests["multisine"].report_unit == "mV"
