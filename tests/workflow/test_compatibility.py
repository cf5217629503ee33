"""Model files written before today's code load and simulate to the same numbers (``tests/fixtures/README.md``).

Engines are pinned (``loop`` for the format-1 fixtures, ``compiled`` for the committed headlines, as they were
recorded) and torch runs on one thread, so that later engine work cannot move these numbers.
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
    np.testing.assert_allclose(y, recorded[name], rtol=1e-9, atol=1e-9 * np.abs(recorded[name]).max())


@pytest.mark.parametrize("name", sorted(COMMITTED))
def test_committed_headline_evaluates_as_recorded(name: str, one_thread: None, data_dir: Path) -> None:
    pytest.importorskip("numba", reason="the recorded numbers used the compiled engine (the fast extra)")
    entry = COMMITTED[name]
    bench = dw.load_benchmark(entry["benchmark"])
    metrics = dw.evaluate_all(Pinned(dw.load(RESULTS / name / "best.dw"), entry["mode"]), bench)
    assert set(metrics) == set(entry["rmse"])
    for test, rmse in entry["rmse"].items():
        assert metrics[test]["rmse"] == pytest.approx(rmse, rel=1e-9), test
