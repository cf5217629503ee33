"""``deepwiener reduce --fine-tune``: truncate, then retrain briefly; the output is a complete run that ``evaluate`` and
``inspect`` take, and bad input writes nothing."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from cli_helpers import run_cli
from test_cli_analysis import assert_error

from deepwiener.evaluation import evaluate_all
from deepwiener.io import load
from deepwiener.runs import RunDir


def test_reduce_and_fine_tune_writes_a_complete_run(csv_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "tuned"
    result = run_cli(["reduce", csv_run, "--order", 2, "--fine-tune", 0.05, "--out", out])
    assert result.code == 0, result.err
    assert "fine-tuned" in result.out and "validation RMSE" in result.out
    run = RunDir.open(out)
    assert run.read_status()["kind"] == "reduce" and run.config().model["d_state"] == 2
    model = load(run.model_path)
    assert model.config.d_state == 2
    summary = json.loads(run.file("reduction.json").read_text())
    tuning = summary["fine_tune"]
    assert tuning["minutes"] == 0.05 and tuning["epochs"] >= 1
    assert tuning["lr"] == pytest.approx(run.config().train.lr / 10)
    assert tuning["val_rmse_after"] <= tuning["val_rmse_start"]
    metrics = json.loads(run.file("metrics.json").read_text())
    assert metrics["train"]["rmse"] == pytest.approx(evaluate_all(model, run.config().data.load())["train"]["rmse"])
    assert summary["rmse_after"]["train"] == pytest.approx(metrics["train"]["rmse"])
    assert set(tuning["rmse_truncated"]) == {"train"}
    with run.file("history.csv").open() as file:
        assert len(list(csv.DictReader(file))) == tuning["epochs"]
    for command in (["evaluate", out], ["inspect", out, "--out", tmp_path / "fig"]):
        done = run_cli(command)
        assert done.code == 0, done.err


@pytest.mark.parametrize(("args", "fragment"), [
    (["--fine-tune", 0], "fine-tuning minutes must be a positive number"),
    (["--fine-tune", -1], "fine-tuning minutes must be a positive number"),
    (["--fine-tune", 1, "--lr-factor", 2], "lr_factor must be in (0, 1]"),
    (["--lr-factor", 0.5], "--lr-factor is the learning-rate factor of --fine-tune"),
    (["--fine-tune", 1, "--order", 9], "order must be an integer in [1, d_state=4]"),
])
def test_reduce_fine_tune_bad_arguments(csv_run: Path, tmp_path: Path, args: list, fragment: str) -> None:
    args = args if "--order" in args else [*args, "--order", 2]
    assert_error(run_cli(["reduce", csv_run, *args, "--out", tmp_path / "r"]), fragment)
    assert not (tmp_path / "r").exists()
