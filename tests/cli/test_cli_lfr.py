"""The LFR model from the command line: train on a CSV slice of Silverbox, evaluate on another."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import SILVERBOX_DT, run_cli

from deepwiener import io
from deepwiener.models.lfr import LFRModel


def test_cli_trains_and_evaluates_an_lfr(silverbox_slices: dict[str, Path], tmp_path: Path) -> None:
    config = tmp_path / "tiny.toml"
    config.write_text('[model]\nkind = "lfr"\nn_x = 3\nn_w = 2\n\n[train]\nwindow = 64\nwashout = 10\n'
                      "batch_size = 64\n")
    out = tmp_path / "lfr"
    data = ["--csv", silverbox_slices["train"], "--u", "V1", "--y", "V2", "--dt", SILVERBOX_DT]
    train = run_cli(["train", *data, "--model", "lfr", "--nonlinearity", "tanh", "--init", "linear", "--config",
                     config, "--epochs", 1, "--seed", 1, "--out", out])
    assert train.code == 0, train.err
    assert 'kind = "lfr"' in (out / "config.toml").read_text()
    model = io.load(out / "model.dw")
    assert isinstance(model, LFRModel) and io.read_info(out / "model.dw")["kind"] == "lfr"
    assert (model.config.n_x, model.config.n_w, model.config.nonlinearity, model.config.seed) == (3, 2, "tanh", 1)
    assert model.dt == pytest.approx(SILVERBOX_DT)

    evaluate = run_cli(["evaluate", out / "model.dw", "--csv", silverbox_slices["test"], "--u", "V1", "--y", "V2",
                        "--dt", SILVERBOX_DT, "--init-window", 50, "--json", tmp_path / "m.json"])
    assert evaluate.code == 0, evaluate.err
    metrics = json.loads((tmp_path / "m.json").read_text())["test"]
    u = np.loadtxt(silverbox_slices["test"], delimiter=",", skiprows=1)
    y_hat = model.simulate(u[:, :1])[50:, 0]
    assert metrics["rmse"] == pytest.approx(np.sqrt(np.mean((u[50:, 1] - y_hat) ** 2)), rel=1e-9)
    assert metrics["fit"] > 50.0  # the linear start alone fits Silverbox well, and training keeps the best

    wrong = run_cli(["train", *data, "--model", "lfr", "--hidden", 4, "--out", tmp_path / "bad"])
    assert wrong.code == 2 and "hidden" in wrong.err and "n_x" in wrong.err
