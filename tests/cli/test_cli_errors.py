"""Bad input: one line ``error: ...`` naming the problem, exit code 2, no traceback, no run taken for a good one."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import SILVERBOX_DT, Result, run_cli, write_csv


def assert_error(result: Result, *fragments: str) -> None:
    """Exit code 2 and exactly one stderr line, ``error: ...``, holding every fragment."""
    lines = result.err.strip().splitlines()
    assert result.code == 2, result.err
    assert len(lines) == 1 and lines[0].startswith("error: "), result.err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def csv_train(path: Path, *extra: object, u: str = "u", y: str = "y", dt: object = 0.01) -> list[object]:
    return ["train", "--csv", path, "--u", u, "--y", y, "--dt", dt, *extra]


def signal(n: int) -> dict[str, np.ndarray]:
    t = np.arange(n)
    return {"u": np.sin(t / 7), "y": np.cos(t / 5)}


@pytest.mark.parametrize(("cells", "fragments"), [
    ({"u": [1.0, "nan", 2.0], "y": [1.0, 2.0, 3.0]}, ("field 'u' has 1 non-finite value", "time index 1")),
    ({"u": [1.0, 2.0, 3.0], "y": [1.0, "inf", 3.0]}, ("field 'y' has 1 non-finite value",)),
    ({"u": [1.0, 2.0, 3.0], "y": [1.0, 2.0, ""]}, ("line 4, column 'y': empty cell",)),  # y shorter than u
])
def test_bad_values(tmp_path: Path, cells: dict, fragments: tuple[str, ...]) -> None:
    path = write_csv(tmp_path / "d.csv", cells)
    assert_error(run_cli(csv_train(path, "--out", tmp_path / "run")), *fragments)
    assert not (tmp_path / "run").exists()


def test_misspelled_column(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", {"u": [1.0, 2.0], "y_out": [1.0, 2.0]})
    assert_error(run_cli(csv_train(path, y="y_ot")), "no column named 'y_ot'", "available: u, y_out",
                 "did you mean 'y_out'")


@pytest.mark.parametrize("dt", [0, -0.5])
def test_non_positive_dt(tmp_path: Path, dt: float) -> None:
    path = write_csv(tmp_path / "d.csv", signal(50))
    assert_error(run_cli(csv_train(path, dt=dt)), "field 'dt' must be finite and > 0")


def test_series_shorter_than_the_window_leaves_a_failed_run(tmp_path: Path, tiny_toml: Path) -> None:
    path = write_csv(tmp_path / "d.csv", signal(50))
    out = tmp_path / "run"
    assert_error(run_cli(csv_train(path, "--config", tiny_toml, "--out", out)),
                 "has 50 samples, 40 of them for training", "fewer than the window of 64")
    assert json.loads((out / "status.json").read_text())["status"] == "failed"
    assert_error(run_cli(["evaluate", out]), "is not complete (status: failed)")
    assert_error(run_cli(["simulate", out, "--csv", path, "--out", tmp_path / "y.csv"]), "is not complete")


@pytest.mark.parametrize(("flags", "fragments"), [
    (["--layer", "lstm"], ("unknown layer 'lstm'; expected one of: lru, s4, s4d, s5",)),
    (["--nonlinearity", "tahn"], ("unknown nonlinearity 'tahn'", "did you mean 'tanh'")),
    (["--d-model", "0"], ("d_model must be a positive integer",)),
])
def test_bad_model_options_create_no_run(tmp_path: Path, flags: list[str], fragments: tuple[str, ...]) -> None:
    path = write_csv(tmp_path / "d.csv", signal(50))
    assert_error(run_cli(csv_train(path, *flags, "--out", tmp_path / "run")), *fragments)
    assert not (tmp_path / "run").exists()


def test_unknown_benchmark(cli_env: Path) -> None:
    assert_error(run_cli(["train", "--benchmark", "silverbx"]), "unknown benchmark 'silverbx'",
                 "did you mean 'silverbox'")


def test_unknown_config_key(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[train]\nwindw = 128\n")
    assert_error(run_cli(["train", "--benchmark", "silverbox", "--config", config]), "unknown [train] key 'windw'",
                 "did you mean 'window'")


def test_missing_run_directory(tmp_path: Path) -> None:
    assert_error(run_cli(["evaluate", tmp_path / "nope"]), "nope: no such run directory or model file")


def test_checksum_mismatch(cli_env: Path, tmp_path: Path) -> None:
    (tmp_path / "silverbox").mkdir()
    data = bytearray((cli_env / "silverbox" / "SNLS80mV.mat").read_bytes())
    data[-1] ^= 0x01
    (tmp_path / "silverbox" / "SNLS80mV.mat").write_bytes(bytes(data))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DEEPWIENER_DATA", str(tmp_path))
        assert_error(run_cli(["train", "--benchmark", "silverbox", "--out", tmp_path / "run"]), "SHA-256")
    assert not (tmp_path / "run").exists()


def test_truncated_model_file(csv_run: Path, silverbox_slices: dict[str, Path], tmp_path: Path) -> None:
    model = tmp_path / "model.dw"
    data = (csv_run / "model.dw").read_bytes()
    model.write_bytes(data[: len(data) // 2])
    assert_error(run_cli(["evaluate", model, "--csv", silverbox_slices["test"], "--u", "V1", "--y", "V2", "--dt",
                          SILVERBOX_DT]), "model.dw: truncated")


def test_damaged_run_model_is_reported(csv_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "copy"
    shutil.copytree(csv_run, run)
    (run / "model.dw").write_text("not a model")
    assert_error(run_cli(["evaluate", run]), "model.dw: not a safetensors file")


def test_evaluate_refuses_other_dt(csv_run: Path, silverbox_slices: dict[str, Path]) -> None:
    assert_error(run_cli(["evaluate", csv_run, "--csv", silverbox_slices["test"], "--u", "V1", "--y", "V2", "--dt",
                          0.002]), "has dt = 0.002 s but the model uses dt = 0.00163")


def test_evaluate_refuses_more_segments_than_samples(csv_run: Path, silverbox_slices: dict[str, Path]) -> None:
    assert_error(run_cli(["evaluate", csv_run, "--csv", silverbox_slices["test"], "--u", "V1", "--y", "V2", "--dt",
                          SILVERBOX_DT, "--segments", 1001]), "segments must be an integer in [0, 1000]")


def test_evaluate_needs_data_for_a_model_file(csv_run: Path) -> None:
    assert_error(run_cli(["evaluate", csv_run / "model.dw"]), "--benchmark NAME or --csv FILE")


@pytest.mark.parametrize(("flags", "fragments"), [
    (["--dt", "0.002"], ("has dt = 0.002 s but the model", "uses dt = 0.00163")),
    (["--time", "t"], ("has dt = 0.0025", "uses dt = 0.00163")),
    (["--u", "V9"], ("no column named 'V9'",)),
])
def test_simulate_bad_input(csv_run: Path, tmp_path: Path, flags: list[str], fragments: tuple[str, ...]) -> None:
    path = write_csv(tmp_path / "in.csv", {"t": np.arange(100) * 0.0025, "V1": np.zeros(100)})
    assert_error(run_cli(["simulate", csv_run, "--csv", path, "--out", tmp_path / "y.csv", *flags]), *fragments)
    assert not (tmp_path / "y.csv").exists()


def test_simulate_nan_input(csv_run: Path, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "in.csv", {"V1": [0.0, 1.0, "nan"]})
    assert_error(run_cli(["simulate", csv_run, "--csv", path, "--out", tmp_path / "y.csv"]),
                 "column 'V1' has 1 NaN/inf value(s); the first is at row 2")


def test_unknown_option_is_a_usage_error() -> None:
    result = run_cli(["train", "--layers", "lru"])
    assert result.code == 2 and "No such option: --layers" in result.err and "Traceback" not in result.err


def test_entry_point_in_a_subprocess(tmp_path: Path) -> None:
    code = "from deepwiener.cli import main; main()"
    proc = subprocess.run([sys.executable, "-c", code, "evaluate", str(tmp_path / "nope")], capture_output=True,
                          text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {tmp_path / 'nope'}: no such run directory or model file"
