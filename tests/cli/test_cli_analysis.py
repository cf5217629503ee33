"""``deepwiener inspect | reduce | report`` end to end on the tiny CSV run, and their bad-input errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import SILVERBOX_DT, Result, run_cli

from deepwiener.analysis import blocks
from deepwiener.evaluation import evaluate_all
from deepwiener.identification import LinearStateSpace
from deepwiener.io import load, read_info, save
from deepwiener.models import DeepWiener, LinearModel
from deepwiener.runs import RunDir

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_error(result: Result, *fragments: str) -> None:
    """Exit code 2 and exactly one stderr line, ``error: ...``, holding every fragment."""
    lines = result.err.strip().splitlines()
    assert result.code == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def pngs(folder: Path) -> set[str]:
    """Names of the PNG files in a folder, each checked to be a PNG."""
    files = sorted(folder.glob("*.png"))
    assert all(f.read_bytes().startswith(PNG_MAGIC) for f in files)
    return {f.stem for f in files}


def copy_run(run: Path, to: Path, model: DeepWiener | None = None, status: str | None = None) -> Path:
    """A copy of a run, optionally with another model file or status."""
    shutil.copytree(run, to)
    if model is not None:
        save(model, to / "model.dw", extra=read_info(run / "model.dw")["extra"])
    if status is not None:
        (to / "status.json").write_text(json.dumps({"status": status}))
    return to


@pytest.mark.parametrize("command", ["inspect", "reduce", "report"])
def test_help_has_example(command: str) -> None:
    assert command in run_cli(["--help"]).out
    sub = run_cli([command, "--help"])
    assert sub.code == 0 and "Example" in sub.out and f"deepwiener {command}" in sub.out


def test_inspect_run(csv_run: Path, tmp_path: Path) -> None:
    result = run_cli(["inspect", csv_run, "--out", tmp_path / "fig", "--json", tmp_path / "inspect.json"])
    assert result.code == 0, result.err
    assert pngs(tmp_path / "fig") == {"pole_zero_block0", "bode", "hsv", "nonlinearity"}
    assert "stability certificate [" in result.out and "spectral radius" in result.out
    info = json.loads((tmp_path / "inspect.json").read_text())
    assert info["data"] == "train" and info["model"]["layer"] == "lru"
    system = blocks(load(csv_run / "model.dw"))[0]
    block = info["blocks"][0]
    assert block["poles"] == [[p.real, p.imag] for p in system.poles] and len(block["poles"]) == 8
    assert len(block["zeros"]) == 8 and np.shape(block["dc_gain"]) == (4, 4) and len(block["hsv"]) == 8
    assert block["stable"] is True and info["certificate"]["status"] in ("global", "local")
    assert info["certificate"]["blocks"][0]["spectral_radius"] == pytest.approx(system.spectral_radius)


def test_inspect_model_file_with_and_without_data(csv_run: Path, silverbox_slices: dict[str, Path],
                                                  tmp_path: Path) -> None:
    alone = run_cli(["inspect", csv_run / "model.dw", "--out", tmp_path / "alone"])
    assert alone.code == 0, alone.err
    assert pngs(tmp_path / "alone") == {"pole_zero_block0", "bode", "hsv"} and "no data" in alone.out
    data = run_cli(["inspect", csv_run / "model.dw", "--csv", silverbox_slices["test"], "--u", "V1", "--y", "V2",
                    "--dt", SILVERBOX_DT, "--out", tmp_path / "data", "--json", tmp_path / "i.json"])
    assert data.code == 0, data.err
    assert "nonlinearity" in pngs(tmp_path / "data") and json.loads((tmp_path / "i.json").read_text())["data"] == "test"


def test_inspect_selective_model_is_not_lti(tmp_path: Path) -> None:
    save(DeepWiener(n_u=1, n_y=1, layer="s6", d_model=2, d_state=2, n_layers=1, dt=0.01), tmp_path / "s6.dw")
    result = run_cli(["inspect", tmp_path / "s6.dw", "--out", tmp_path / "fig", "--json", tmp_path / "i.json"])
    assert result.code == 0, result.err
    info = json.loads((tmp_path / "i.json").read_text())
    assert info["blocks"][0]["lti"] is False and info["certificate"]["status"] == "unknown"
    assert pngs(tmp_path / "fig") == set() and "not LTI" in result.out


def test_reduce_writes_a_complete_reevaluated_run(csv_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "reduced"
    result = run_cli(["reduce", csv_run, "--order", 2, "--out", out])
    assert result.code == 0, result.err
    assert "modes after" in result.out and "RMSE before" in result.out
    run = RunDir.open(out)
    assert run.read_status()["kind"] == "reduce" and run.config().model["d_state"] == 2
    assert {"model.dw", "config.toml", "metrics.json", "history.csv", "reduction.json", "plots"} <= \
        {p.name for p in out.iterdir()}
    model = load(run.model_path)
    assert model.config.d_state == 2
    metrics = json.loads(run.file("metrics.json").read_text())
    assert metrics["train"]["rmse"] == pytest.approx(evaluate_all(model, run.config().data.load())["train"]["rmse"])
    reduction = json.loads(run.file("reduction.json").read_text())
    assert reduction["states_before"] == [4] and reduction["states_after"] == [2]
    assert reduction["method"] == "balanced" and reduction["error_bounds"][0] > 0
    original = json.loads((csv_run / "metrics.json").read_text())
    assert reduction["rmse_before"]["train"] == pytest.approx(original["train"]["rmse"])
    assert reduction["rmse_after"]["train"] == pytest.approx(metrics["train"]["rmse"])
    assert pngs(out / "plots") == {"training", "train"}

    report = run_cli(["report", out])
    assert report.code == 0, report.err
    page = (out / "report.html").read_text()
    assert '<section id="reduction">' in page and "modes after" in page


def test_reduce_by_tolerance_modal(csv_run: Path, tmp_path: Path) -> None:
    result = run_cli(["reduce", csv_run, "--tol", 1e6, "--method", "modal", "--out", tmp_path / "r"])
    assert result.code == 0, result.err
    reduction = json.loads((tmp_path / "r" / "reduction.json").read_text())
    assert reduction["states_after"] == [1] and reduction["tol"] == 1e6 and reduction["method"] == "modal"


def test_report_command(csv_run: Path, tmp_path: Path) -> None:
    result = run_cli(["report", csv_run, "--out", tmp_path / "report.html"])
    assert result.code == 0, result.err
    page = (tmp_path / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and page.count('src="data:image/png;base64,') == 6
    assert all(f'<section id="{key}">' in page for key in ("metrics", "training", "simulation", "analysis",
                                                             "certificate", "config"))


@pytest.mark.parametrize(("args", "fragments"), [
    (["--tol", -1], ("tol must be a positive number",)),
    (["--tol", 0], ("tol must be a positive number",)),
    (["--tol", 1, "--order", 2], ("give exactly one of order and tol",)),
    ([], ("give exactly one of order and tol",)),
    (["--order", 9], ("order must be an integer in [1, d_state=4]",)),
    (["--order", 2, "--method", "bogus"], ("unknown reduction method 'bogus'",)),
])
def test_reduce_bad_arguments(csv_run: Path, tmp_path: Path, args: list, fragments: tuple[str, ...]) -> None:
    assert_error(run_cli(["reduce", csv_run, *args, "--out", tmp_path / "r"]), *fragments)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(("layer", "fragment"), [("s4d", "layer 's4d' (S4D) cannot"), ("s4", "layer 's4'"),
                                                 ("s6", "layer 's6' is not LTI")])
def test_reduce_refuses_layers_it_cannot_rebuild(csv_run: Path, tmp_path: Path, layer: str, fragment: str) -> None:
    model = DeepWiener(n_u=1, n_y=1, layer=layer, d_model=4, d_state=4, n_layers=1, dt=SILVERBOX_DT)
    run = copy_run(csv_run, tmp_path / layer, model=model)
    assert_error(run_cli(["reduce", run, "--order", 2, "--out", tmp_path / "r"]), fragment)
    assert not (tmp_path / "r").exists()


def test_reduce_refuses_its_own_folder(csv_run: Path) -> None:
    assert_error(run_cli(["reduce", csv_run, "--order", 2, "--out", csv_run]), "is the run being reduced")
    assert RunDir.open(csv_run).read_status()["status"] == "complete"


def test_baseline_run_has_no_blocks(csv_run: Path, tmp_path: Path) -> None:
    one = np.ones(1)
    linear = LinearModel.from_state_space(LinearStateSpace(A=np.array([[0.5]]), B=np.eye(1), C=np.eye(1),
                                                           D=np.zeros((1, 1)), dt=SILVERBOX_DT, u_mean=0 * one,
                                                           u_std=one, y_mean=0 * one, y_std=one))
    run = copy_run(csv_run, tmp_path / "linear", model=linear)
    for command in (["inspect", run, "--out", tmp_path / "fig"],
                    ["reduce", run, "--order", 1, "--out", tmp_path / "r"]):
        assert_error(run_cli(command), "holds a model of kind 'linear', which has no blocks to analyse or reduce; "
                                       "the kinds that have: deepwiener")
    report = run_cli(["report", run])
    assert report.code == 0, report.err
    page = (run / "report.html").read_text()
    assert page.count("a model of kind linear has no blocks") == 2 and page.count('src="data:image/png;base64,') == 2


@pytest.mark.parametrize("command", ["inspect", "reduce", "report"])
def test_missing_and_incomplete_runs(command: str, csv_run: Path, tmp_path: Path) -> None:
    extra = {"inspect": ["--out", tmp_path / "fig"], "reduce": ["--order", 1, "--out", tmp_path / "r"],
             "report": ["--out", tmp_path / "r.html"]}[command]
    assert_error(run_cli([command, tmp_path / "nope", *extra]), "nope: no such run")
    running = copy_run(csv_run, tmp_path / "running", status="running")
    assert_error(run_cli([command, running, *extra]), "is not complete (status: running)")
    assert not any((tmp_path / name).exists() for name in ("fig", "r", "r.html"))
