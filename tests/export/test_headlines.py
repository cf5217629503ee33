"""The committed headline models of every benchmark (README's results table) export to ONNX and C and agree with
``model.simulate`` on 10,000 samples of the benchmark's own test input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from export_helpers import SAMPLES, check_exports

import deepwiener as dw
from deepwiener.io import read_info

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
HEADLINES = ("silverbox", "wiener_hammerstein", "cascaded_tanks", "emps", "coupled_electric_drives", "f16", "bouc_wen")
"""The result folders of the headline models of README's results table."""


@pytest.mark.parametrize("headline", HEADLINES)
def test_headline_model(headline: str, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPWIENER_DATA", str(data_dir))
    path = RESULTS / headline / "best.dw"
    model = dw.load(path)
    test = next(iter(dw.load_benchmark(read_info(path)["extra"]["data"]).tests.values()))
    u = np.resize(test.u, (SAMPLES, test.u.shape[1]))  # the test input, repeated where it is shorter
    check_exports(model, u, tmp_path)
