"""Model files written before today's code load and simulate to the same numbers (``tests/fixtures/README.md``).

Engines are pinned (``loop`` for the format-1 fixtures, ``compiled`` for the committed headlines, as they were
recorded) and torch runs on one thread, so that later engine work cannot move these numbers.

Tolerances: 1e-9 relative for float64 models. Float32 models reproduce bit for bit on the CPU that recorded them,
but not across CPUs: the float32 matrix products and vectorised maps of another instruction set round their last
bits differently (an AMD EPYC with AVX-512 moved the recorded outputs by up to 2.4e-6 relative and the EMPS
headline's RMSE, whose output integrator sums the error, by 4.4e-6). They are checked to ``FLOAT32_RTOL``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

import deepwiener as dw

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
FORMAT1 = sorted(p.stem for p in (FIXTURES / "format1").glob("*.dw"))
COMMITTED = json.loads((FIXTURES / "committed_metrics.json").read_text())
FLOAT32_RTOL = 2e-5
"""Float32 rounding across CPUs (a hundred float32 ulps; the largest seen is 4.4e-6): far below any change of
formula, engine or file content, which moves these numbers by 1e-4 relative or more."""


def rtol(model: dw.Model) -> float:
    """The tolerance of a model's recorded numbers: 1e-9 when all its tensors are float64 (an ensemble's members
    included), else ``FLOAT32_RTOL``."""
    floats = [t for t in model.state_dict().values() if t.is_floating_point()]
    return 1e-9 if all(t.dtype == torch.float64 for t in floats) else FLOAT32_RTOL


@pytest.fixture
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Pinned:
    """A model simulated with one engine (``evaluate`` calls ``simulate(u)``)."""

    def __init__(self, model: dw.Model, mode: str) -> None:
        self.model, self.mode = model, mode

    @property
    def dt(self) -> float:
        return self.model.dt

    def simulate(self, u: np.ndarray) -> np.ndarray:
        return self.model.simulate(u, mode=self.mode)


def test_every_kind_has_a_format1_fixture() -> None:
    kinds = {dw.io.read_info(FIXTURES / "format1" / f"{name}.dw")["kind"] for name in FORMAT1}
    assert kinds == set(dw.models.FILE_KINDS)


@pytest.mark.parametrize("name", FORMAT1)
def test_format1_file_simulates_as_when_written(name: str, one_thread: None) -> None:
    recorded = np.load(FIXTURES / "format1" / "outputs.npz")
    model = dw.load(FIXTURES / "format1" / f"{name}.dw")
    y = model.simulate(recorded["u"], mode="loop")[:, 0]
    tol = rtol(model)
    np.testing.assert_allclose(y, recorded[name], rtol=tol, atol=tol * np.abs(recorded[name]).max())


@pytest.mark.parametrize("name", sorted(COMMITTED))
def test_committed_headline_evaluates_as_recorded(name: str, one_thread: None, data_dir: Path) -> None:
    pytest.importorskip("numba", reason="the recorded numbers used the compiled engine (the fast extra)")
    entry = COMMITTED[name]
    bench = dw.load_benchmark(entry["benchmark"])
    model = dw.load(RESULTS / name / "best.dw")
    metrics = dw.evaluate_all(Pinned(model, entry["mode"]), bench)
    assert set(metrics) == set(entry["rmse"])
    for test, rmse in entry["rmse"].items():
        assert metrics[test]["rmse"] == pytest.approx(rmse, rel=rtol(model)), test
