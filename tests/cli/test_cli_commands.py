"""The command line end to end on small slices of the real data: train, evaluate, simulate, demo, help."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import SILVERBOX_DT, run_cli, write_csv
from rich.console import Console

import deepwiener as dw
from deepwiener import cli
from deepwiener.io import read_info


@pytest.mark.parametrize("command", ["demo", "train", "evaluate", "simulate", "ensemble"])
def test_help_lists_commands_with_examples(command: str) -> None:
    top = run_cli(["--help"])
    assert top.code == 0 and command in top.out
    sub = run_cli([command, "--help"])
    assert sub.code == 0 and "Example" in sub.out and f"deepwiener {command}" in sub.out


def test_silverbox_train_then_evaluate_matches_independent_rmse(cli_env: Path, tmp_path: Path) -> None:
    config = tmp_path / "tiny.toml"
    config.write_text("[model]\nd_model = 4\nd_state = 4\nn_layers = 1\n"
                      "[train]\nwindow = 64\nwashout = 10\nstride = 64\nbatch_size = 128\nval_fraction = 0.9\n")
    out = tmp_path / "x"
    train = run_cli(["train", "--benchmark", "silverbox", "--layer", "lru", "--max-minutes", 1, "--epochs", 1,
                     "--config", config, "--out", out])
    assert train.code == 0, train.err
    assert "arrow_no_extrapolation" in train.out and "mV" in train.out
    # the arrow_full input leaves the training range (by design of the benchmark), the other two do not
    note = "note: the input of {!r} leaves the training inputs' range"
    assert note.format("arrow_full") in train.out and "1.50 times" in train.out
    assert note.format("multisine") not in train.out and note.format("arrow_no_extrapolation") not in train.out
    for name in ("config.toml", "model.dw", "metrics.json", "history.csv", "run.log", "status.json",
                 "plots/training.png", "plots/multisine.png", "plots/arrow_full.png",
                 "plots/arrow_no_extrapolation.png"):
        assert (out / name).is_file(), name
    assert json.loads((out / "status.json").read_text())["status"] == "complete"
    assert not (out / "checkpoint.pt").exists()

    evaluate = run_cli(["evaluate", out, "--json", tmp_path / "m.json"])
    assert evaluate.code == 0, evaluate.err
    assert note.format("arrow_full") in evaluate.out
    results = json.loads((tmp_path / "m.json").read_text())
    assert list(results) == ["multisine", "arrow_full", "arrow_no_extrapolation"]
    assert results == json.loads((out / "metrics.json").read_text())

    bench = dw.load_benchmark("silverbox")
    model = dw.load(out / "model.dw")
    for name, test in bench.tests.items():
        y_hat = model.simulate(test.u)[50:, 0]  # the official protocol, written out
        rmse_mv = 1000 * np.sqrt(np.mean((test.y[50:, 0] - y_hat) ** 2))
        assert results[name]["rmse"] == pytest.approx(rmse_mv, rel=1e-9)
        assert results[name]["unit"] == "mV" and results[name]["n_samples"] == len(test) - 50
        assert f"{rmse_mv:.5g}" in evaluate.out


def test_csv_run_evaluate_and_simulate(csv_run: Path, silverbox_slices: dict[str, Path], tmp_path: Path) -> None:
    assert json.loads((csv_run / "metrics.json").read_text())["train"]["n_samples"] == 3000 - 20
    test_csv = silverbox_slices["test"]
    evaluate = run_cli(["evaluate", csv_run / "model.dw", "--csv", test_csv, "--u", "V1", "--y", "V2", "--dt",
                        SILVERBOX_DT, "--init-window", 50, "--json", tmp_path / "m.json"])
    assert evaluate.code == 0, evaluate.err
    metrics = json.loads((tmp_path / "m.json").read_text())["test"]
    model = dw.load(csv_run / "model.dw")
    test = dw.read_csv(test_csv, "V1", "V2", SILVERBOX_DT)
    assert metrics["rmse"] == pytest.approx(float(dw.rmse(test.y[50:], model.simulate(test.u)[50:])), rel=1e-9)

    by_part = run_cli(["evaluate", csv_run / "model.dw", "--csv", test_csv, "--u", "V1", "--y", "V2", "--dt",
                       SILVERBOX_DT, "--init-window", 50, "--segments", 5, "--json", tmp_path / "s.json"])
    assert by_part.code == 0, by_part.err
    parts = json.loads((tmp_path / "s.json").read_text())["test"]
    error = (test.y - model.simulate(test.u))[:, 0]  # in V: a CSV record has no report unit
    expected = [float(np.sqrt(np.mean(error[a:a + 190] ** 2))) for a in range(50, 1000, 190)]
    assert parts["segment_starts"] == [50, 240, 430, 620, 810]
    assert parts["segment_rmse"] == pytest.approx(expected, rel=1e-9)
    assert "test: RMSE [-] of 5 consecutive parts from sample 50: " + " ".join(f"{v:.3g}" for v in expected) \
        in by_part.out
    assert "consecutive parts" not in evaluate.out

    simulate = run_cli(["simulate", csv_run, "--csv", test_csv, "--out", tmp_path / "y.csv"])  # --u from the model
    assert simulate.code == 0, simulate.err
    table = np.loadtxt(tmp_path / "y.csv", delimiter=",", skiprows=1)
    assert (tmp_path / "y.csv").read_text().startswith("time,V2\n")
    np.testing.assert_allclose(table[:, 1], model.simulate(test.u)[:, 0], rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(table[:, 0], np.arange(1000) * SILVERBOX_DT)


def test_complete_run_is_not_overwritten_without_force(csv_run: Path, silverbox_slices: dict[str, Path]) -> None:
    args = ["train", "--csv", silverbox_slices["train"], "--u", "V1", "--y", "V2", "--dt", SILVERBOX_DT, "--out",
            csv_run]
    result = run_cli(args)
    assert result.code == 2 and "is complete; use --force" in result.err
    assert json.loads((csv_run / "status.json").read_text())["status"] == "complete"


def test_internal_error_is_logged_and_marks_the_run_failed(
        silverbox_slices: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("kaboom")

    monkeypatch.setattr("deepwiener.cli.train_run", broken)
    args = ["train", "--csv", silverbox_slices["train"], "--u", "V1", "--y", "V2", "--dt", SILVERBOX_DT]
    result = run_cli([*args, "--out", tmp_path / "r"])
    assert result.code == 1
    assert result.err.strip().splitlines()[-1].startswith("internal error: RuntimeError: kaboom (traceback in ")
    assert "Traceback" not in result.err and "Traceback" in (tmp_path / "r" / "run.log").read_text()
    assert json.loads((tmp_path / "r" / "status.json").read_text())["status"] == "failed"
    debug = run_cli(["--debug", *args, "--out", tmp_path / "r"])
    assert debug.code == 1 and "Traceback" in debug.err, debug.err


def test_demo_beats_the_linear_model_and_is_a_complete_run(tmp_path: Path) -> None:
    demo = tmp_path / "demo"
    result = run_cli(["demo", "--epochs", 40, "--max-minutes", 2, "--out", demo])  # ~7 s unloaded
    assert result.code == 0, result.err
    assert "deep Wiener" in result.out and "best linear" in result.out
    assert "stopped after 40 epochs (epochs)" in result.out
    comparison = json.loads((demo / "comparison.json").read_text())
    assert comparison["deep Wiener"]["fit"] > comparison["best linear"]["fit"] + 10
    for name in ("model.dw", "config.toml", "history.csv", "plots/training.png", "plots/test.png", "status.json",
                 "data/train.csv", "data/val.csv", "data/test.csv"):
        assert (demo / name).is_file(), name
    evaluated = run_cli(["evaluate", demo, "--json", tmp_path / "m.json"])  # a complete run like any other
    assert evaluated.code == 0, evaluated.err
    assert json.loads((tmp_path / "m.json").read_text())["test"] == json.loads((demo / "metrics.json").read_text())[
        "test"] == comparison["deep Wiener"]
    for command in (["inspect", demo, "--out", tmp_path / "inspect"], ["report", demo]):
        done = run_cli(command)
        assert done.code == 0, done.err


def test_simulate_writes_named_columns_without_model_names(csv_run: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = write_csv(tmp_path / "in.csv", {"t": np.arange(200) * SILVERBOX_DT, "drive": rng.normal(size=200)})
    result = run_cli(["simulate", csv_run, "--csv", path, "--u", "drive", "--time", "t", "--out", tmp_path / "o.csv"])
    assert result.code == 0, result.err
    assert len((tmp_path / "o.csv").read_text().splitlines()) == 201


def test_integrator_flag_trains_an_integrating_model(cli_env: Path, tmp_path: Path) -> None:
    config = tmp_path / "tiny.toml"
    config.write_text("[model]\nd_model = 4\nd_state = 4\nn_layers = 1\n"
                      "[train]\nwindow = 256\nwashout = 20\nstride = 256\nbatch_size = 128\n")
    out = tmp_path / "emps"
    train = run_cli(["train", "--benchmark", "emps", "--integrator", "--epochs", 1, "--config", config, "--out", out])
    assert train.code == 0, train.err
    assert "integrator = true" in (out / "config.toml").read_text()
    model = dw.load(out / "model.dw")
    assert model.integrates_output
    test = dw.load_benchmark("emps").tests["test"]
    rmse_mm = 1000 * float(dw.rmse(test.y[20:], model.simulate(test.u)[20:]))
    assert json.loads((out / "metrics.json").read_text())["test"]["rmse"] == pytest.approx(rmse_mm, rel=1e-9)

    refused = run_cli(["train", "--benchmark", "emps", "--model", "lstm", "--integrator", "--epochs", 1,
                       "--out", tmp_path / "lstm"])
    assert refused.code == 2 and "integrator" in refused.err


def test_ensemble_of_two_models_evaluates_and_simulates(csv_run: Path, silverbox_slices: dict[str, Path],
                                                        tmp_path: Path) -> None:
    first = dw.load(csv_run / "model.dw")
    second = dw.load(csv_run / "model.dw")
    with torch.no_grad():
        second.decoder.weight.mul_(1.5)  # another model of the same system
    extra = {**read_info(csv_run / "model.dw")["extra"], "u_low": [-9.0], "source": "elsewhere"}
    dw.save(second, tmp_path / "second.dw", extra=extra)

    made = run_cli(["ensemble", csv_run, tmp_path / "second.dw", "--out", tmp_path / "e.dw"])
    assert made.code == 0, made.err
    assert "wrote an ensemble of 2 models" in made.out
    info = read_info(tmp_path / "e.dw")
    assert info["kind"] == "ensemble" and info["extra"]["u_low"] == [-9.0] and "source" not in info["extra"]
    assert info["extra"]["u_names"] == ["V1"] and len(info["extra"]["members"]) == 2

    test = dw.read_csv(silverbox_slices["test"], "V1", "V2", SILVERBOX_DT)
    y_mean = (first.simulate(test.u) + second.simulate(test.u)) / 2
    evaluate = run_cli(["evaluate", tmp_path / "e.dw", "--csv", silverbox_slices["test"], "--u", "V1", "--y", "V2",
                        "--dt", SILVERBOX_DT, "--init-window", 50, "--json", tmp_path / "m.json"])
    assert evaluate.code == 0, evaluate.err
    rmse = json.loads((tmp_path / "m.json").read_text())["test"]["rmse"]
    assert rmse == pytest.approx(float(dw.rmse(test.y[50:], y_mean[50:])), rel=1e-9)
    simulate = run_cli(["simulate", tmp_path / "e.dw", "--csv", silverbox_slices["test"], "--out", tmp_path / "y.csv"])
    assert simulate.code == 0, simulate.err
    np.testing.assert_allclose(np.loadtxt(tmp_path / "y.csv", delimiter=",", skiprows=1)[:, 1], y_mean[:, 0],
                               rtol=1e-8, atol=1e-12)
    inspect = run_cli(["inspect", tmp_path / "e.dw", "--out", tmp_path / "fig"])
    assert inspect.code == 2
    assert "holds a model of kind 'ensemble' (inspect or reduce each of its members)" in inspect.err


def test_ensemble_refuses_one_model_and_other_sampling_times(csv_run: Path, tmp_path: Path) -> None:
    alone = run_cli(["ensemble", csv_run, "--out", tmp_path / "e.dw"])
    assert alone.code == 2 and "at least two models, got 1" in alone.err
    other = dw.load(csv_run / "model.dw")
    other.with_dt(2 * other.dt)
    dw.save(other, tmp_path / "other.dw")
    mixed = run_cli(["ensemble", csv_run, tmp_path / "other.dw", "--out", tmp_path / "e.dw"])
    assert mixed.code == 2 and "disagree on the sampling time" in mixed.err
    assert not (tmp_path / "e.dw").exists()


def test_segments_print_one_line_per_output(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    monkeypatch.setattr(cli, "stdout", Console(file=out, width=80))
    metrics = {"rmse": [1.0, 2.0], "unit": "mV", "segment_starts": [5, 7, 9],
               "segment_rmse": [[0.1, 1.5], [0.2, 2.5], [0.3, 3.5]]}
    cli._print_segments({"rec": metrics, "plain": {"rmse": 1.0, "unit": "V"}})
    assert out.getvalue().splitlines() == [
        "rec, output 1: RMSE [mV] of 3 consecutive parts from sample 5: 0.1 0.2 0.3",
        "rec, output 2: RMSE [mV] of 3 consecutive parts from sample 5: 1.5 2.5 3.5"]
