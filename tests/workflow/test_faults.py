"""Fault injection: each failure found by trying deepwiener as a user (the reliability issue's items 1-14), as it
behaves now, and SIGKILL of a training process at seeded random moments, then resume.

Real components: a real tmpfs for the full disk and the read-only file system (as root; skipped otherwise, with the
reason), real subprocesses for the concurrent run, Ctrl-C and SIGKILL.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from io import StringIO
from pathlib import Path

import numpy as np
import pytest
import torch
from cli.cli_helpers import one_error, run_cli, write_csv
from rich.console import Console

import deepwiener as dw
from deepwiener import analysis, analysis_plots, files, io
from deepwiener.config import resolve
from deepwiener.layers import LRU, LRUOptions
from deepwiener.progress import TrainingProgress
from deepwiener.report import IN_SAMPLE_TITLE
from deepwiener.training import TrainConfig, fit

ROOT = os.geteuid() == 0
TINY = "[model]\nd_model = 4\nd_state = 4\nn_layers = 1\n[train]\nwindow = 64\nwashout = 10\nbatch_size = 64\n"
BIG = "[model]\nd_model = 32\nd_state = 32\nn_layers = 4\n[train]\nwindow = 64\nwashout = 10\nbatch_size = 64\n"
"""A model whose checkpoint (about 0.5 MB) does not fit a 200 kB disk."""


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A simulated plant (1200 samples) as CSV, a held-out test record, and the two model configurations."""
    folder = tmp_path_factory.mktemp("faults")
    rng = np.random.default_rng(0)
    records = {}
    for name, n in (("train", 1200), ("test", 400)):
        u = rng.normal(size=n)
        y = np.convolve(np.tanh(u), [0.5, 0.3, 0.1])[:n]
        records[name] = write_csv(folder / f"{name}.csv", {"V1": u, "V2": y})
    (folder / "tiny.toml").write_text(TINY)
    (folder / "big.toml").write_text(BIG)
    return {**records, "tiny": folder / "tiny.toml", "big": folder / "big.toml"}


def train_args(data: dict[str, Path], out: Path, *extra: object, config: str = "tiny") -> list[object]:
    return ["train", "--csv", data["train"], "--u", "V1", "--y", "V2", "--dt", 0.01, "--config", data[config],
            "--out", out, *extra]


@pytest.fixture(scope="module")
def run(data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete run of the tiny model (2 epochs)."""
    out = tmp_path_factory.mktemp("run") / "run"
    result = run_cli(train_args(data, out, "--epochs", 2))
    assert result.code == 0, result.err
    return out


def start(*args: object) -> subprocess.Popen[str]:
    """``deepwiener ARGS`` in a new process (its own session, so signals reach only it)."""
    return subprocess.Popen([sys.executable, "-c", "from deepwiener.cli import main; main()", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def wait_for(condition: Callable[[], bool], timeout: float = 90.0, every: float = 0.002) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` seconds pass (a bounded loop)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(every)
    return False


def stop(process: subprocess.Popen[str]) -> tuple[str, str]:
    """Kill ``process`` if it still runs and collect its output."""
    if process.poll() is None:
        process.kill()
    return process.communicate(timeout=60)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """Mount small tmpfs file systems under tmp_path (root only); unmounted at the end."""
    if not ROOT:
        pytest.skip("mounting a tmpfs needs root; the injected-error tests cover the same paths")
    mounted: list[Path] = []

    def mount(name: str, options: str) -> Path:
        point = tmp_path / name
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"mount -t tmpfs failed here: {done.stderr.decode().strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], check=False)


def leftovers(folder: Path) -> list[str]:
    """Temporary files left in a folder."""
    return sorted(p.name for p in folder.rglob("*.tmp"))


# ------------------------------------------------------------------------------------------------- 1. symlinks

def test_01_writing_through_a_symlink_replaces_its_target_and_devices_are_written_in_place(
        run: Path, data: dict[str, Path], tmp_path: Path) -> None:
    target, link = tmp_path / "real.csv", tmp_path / "link.csv"
    target.write_text("old")
    link.symlink_to(target)
    simulate = ["simulate", run, "--csv", data["test"], "--u", "V1", "--out"]
    assert run_cli([*simulate, link]).code == 0
    assert link.is_symlink() and target.read_text().startswith("time,V2")
    device = tmp_path / "null"
    device.symlink_to("/dev/null")
    assert run_cli([*simulate, device]).code == 0
    assert device.is_symlink() and Path("/dev/null").is_char_device()
    to_stdout = run_cli([*simulate, "-"])
    assert to_stdout.code == 0 and to_stdout.out.startswith("time,V2") and "wrote 400 samples" in to_stdout.err


# ------------------------------------------------------------------------------ 2. two trainings on one run

def test_02_a_second_training_of_a_live_run_is_refused_even_with_force(data: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = start(*train_args(data, out, "--seed", 0, "--epochs", 10**6, "--max-minutes", 1))
    try:
        assert wait_for(lambda: (out / "status.json").exists() and (out / "run.lock").exists())
        second = run_cli(train_args(data, out, "--seed", 1, "--force"))
        one_error(second, f"is in use by process {first.pid}", "--force does not take a run from a live process")
        assert "seed = 0" in (out / "config.toml").read_text()
    finally:
        stop(first)


def test_02_fit_resumes_only_from_a_checkpoint_of_its_own_configuration(tmp_path: Path) -> None:
    record = dw.IOData(u=np.random.default_rng(1).normal(size=(300, 1)), y=np.zeros((300, 1)) + 0.1, dt=0.1)
    ckpt = tmp_path / "checkpoint.pt"

    class Stop(Exception):
        pass

    def interrupt(info: object) -> None:
        raise Stop

    config = TrainConfig(window=50, washout=5, epochs=3, seed=0)
    with pytest.raises(Stop):
        fit(dw.DeepWiener(1, 1, d_model=2, d_state=2, n_layers=1), record, config, checkpoint=ckpt, on_epoch=interrupt)
    assert ckpt.exists()
    with pytest.raises(dw.ConfigError, match="written for another model or training configuration"):
        fit(dw.DeepWiener(1, 1, d_model=2, d_state=2, n_layers=1), record, TrainConfig(**{**config.to_dict(),
            "seed": 1}), checkpoint=ckpt)


# ----------------------------------------------------------------------------------------------- 3. disk full

def test_03_disk_full_on_a_small_tmpfs(data: dict[str, Path], tmpfs: Callable[..., Path]) -> None:
    out = tmpfs("tiny", "size=200k") / "run"
    full = run_cli(train_args(data, out, "--epochs", 3, config="big"))
    line = one_error(full, "No space left on device")
    assert "cannot write" in line and str(out) in line and "Logging error" not in full.err
    assert leftovers(out) == []
    status = json.loads((out / "status.json").read_text())["status"]
    assert status in ("failed", "running")  # "running" when even status.json could not be written
    again = run_cli(train_args(data, out, "--epochs", 3, config="big"))  # the lock is free: the same error, no hang
    one_error(again, "No space left on device")


def test_03_injected_disk_full_marks_the_run_failed_and_the_same_command_resumes(
        data: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = files._replace
    writes = []

    def full_at_second_checkpoint(target: Path, payload: bytes) -> None:
        writes.append(target.name)
        if target.name == "checkpoint.pt" and writes.count("checkpoint.pt") == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(target, payload)

    monkeypatch.setattr(files, "_replace", full_at_second_checkpoint)
    out = tmp_path / "run"
    one_error(run_cli(train_args(data, out, "--epochs", 4)), f"cannot write {out / 'checkpoint.pt'}",
              "No space left on device")
    assert json.loads((out / "status.json").read_text())["status"] == "failed" and leftovers(out) == []
    monkeypatch.setattr(files, "_replace", real)
    resumed = run_cli(train_args(data, out, "--epochs", 4))
    assert resumed.code == 0, resumed.err
    assert "resuming from" in (out / "run.log").read_text()


# ------------------------------------------------------------------------------------------------ 4. the seal

def test_04_an_edited_map_name_is_refused(run: Path, data: dict[str, Path], tmp_path: Path) -> None:
    raw = (run / "model.dw").read_bytes()
    edited = tmp_path / "edited.dw"
    edited.write_bytes(raw.replace(b'\\"nonlinearity\\":\\"gelu\\"', b'\\"nonlinearity\\":\\"relu\\"'))
    assert edited.read_bytes() != raw
    one_error(run_cli(["evaluate", edited, "--csv", data["test"], "--u", "V1", "--y", "V2", "--dt", 0.01]),
              "the seal does not match")


# -------------------------------------------------------------------------------------- 5. in-sample labels

def test_05_in_sample_fits_are_not_called_test_metrics(run: Path, data: dict[str, Path], tmp_path: Path) -> None:
    report = run_cli(["report", run, "--out", tmp_path / "r.html"])
    assert report.code == 0 and IN_SAMPLE_TITLE in (tmp_path / "r.html").read_text()
    evaluated = run_cli(["evaluate", run])
    assert "its training data: an in-sample fit" in " ".join(evaluated.out.split())
    held_out = run_cli(train_args(data, tmp_path / "r2", "--epochs", 1, "--test-csv", data["test"]))
    assert held_out.code == 0 and "test metrics" in held_out.out and "in-sample" not in held_out.out


# ------------------------------------------------------------------------------------ 6. environment errors

def test_06_a_read_only_destination_is_one_error_line(run: Path, data: dict[str, Path], tmp_path: Path,
                                                      tmpfs: Callable[..., Path]) -> None:
    ro = tmpfs("ro", "ro,size=100k")
    model = run / "model.dw"
    commands = {
        "train": train_args(data, ro / "run", "--epochs", 1),
        "simulate": ["simulate", run, "--csv", data["test"], "--u", "V1", "--out", ro / "y.csv"],
        "evaluate": ["evaluate", run, "--json", ro / "m.json"],
        "inspect": ["inspect", run, "--out", ro / "inspect"],
        "report": ["report", run, "--out", ro / "r.html"],
        "ensemble": ["ensemble", model, model, "--out", ro / "e.dw"],
    }
    for args in commands.values():
        one_error(run_cli(args), "Read-only file system")


def test_06_other_environment_errors(run: Path, data: dict[str, Path], tmp_path: Path) -> None:
    one_error(run_cli(["simulate", run, "--csv", data["test"], "--u", "V1", "--out", tmp_path]), "is a directory")
    cuda = tmp_path / "cuda.toml"
    cuda.write_text(TINY + 'device = "cuda"\n')
    if not torch.cuda.is_available():
        one_error(run_cli(["train", "--csv", data["train"], "--u", "V1", "--y", "V2", "--dt", 0.01, "--config", cuda,
                           "--out", tmp_path / "c"]), "device 'cuda' is not available here")
    one_error(run_cli(train_args(data, tmp_path / "huge", "--d-model", 100000)), "parameters, which need about",
              "GiB of memory")


# ------------------------------------------------------------------------------------------------- 7. Ctrl-C

def test_07_ctrl_c_says_the_run_was_interrupted_and_the_same_command_resumes_it(data: dict[str, Path],
                                                                               tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = train_args(data, out, "--epochs", 300)
    process = start(*args)
    try:
        assert wait_for(lambda: (out / "checkpoint.pt").exists())
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        stop(process)
    assert process.returncode == 130 and "interrupted" in err and "the same command resumes it" in err, err
    assert json.loads((out / "status.json").read_text())["error"] == "interrupted"
    before = (out / "checkpoint.pt").exists()
    resumed = run_cli(args)
    assert resumed.code == 0 and before, resumed.err
    assert "resuming from" in (out / "run.log").read_text()


# ------------------------------------------------------------------------------------ 8. accepted nonsense

def test_08_nonsense_is_refused_or_noted(run: Path, data: dict[str, Path], tmp_path: Path) -> None:
    base = ["train", "--csv", data["train"], "--dt", 0.01, "--out", tmp_path / "x"]
    one_error(run_cli([*base, "--u", "V1", "--y", "V2,V2"]), "['V2'] named more than once")
    one_error(run_cli([*base, "--u", "V2", "--y", "V2"]), "['V2'] named more than once")
    huge = write_csv(tmp_path / "huge.csv", {"V1": np.full(20, 1e30)})
    noted = run_cli(["simulate", run, "--csv", huge, "--out", tmp_path / "y.csv"])
    assert noted.code == 0 and "leaves the training inputs' range on 100 % of its samples" in noted.out
    one_row = write_csv(tmp_path / "one.csv", {"V1": [0.5], "V2": [0.1]})
    one_error(run_cli(["evaluate", run, "--csv", one_row, "--u", "V1", "--y", "V2", "--dt", 0.01]),
              "errors need at least 2")
    header_only = tmp_path / "header.csv"
    header_only.write_text("V1,V2\n")
    one_error(run_cli(["simulate", run, "--csv", header_only, "--out", tmp_path / "e.csv"]), "no samples")
    assert not (tmp_path / "e.csv").exists()


# ------------------------------------------------------------------------------------------ 9. the demo run

def test_09_the_demo_folder_is_a_complete_run_and_the_demo_says_its_budget_ended(tmp_path: Path) -> None:
    demo = tmp_path / "demo"
    done = run_cli(["demo", "--epochs", 10**6, "--max-minutes", 0.02, "--out", demo])
    assert done.code == 0 and "(time budget)" in done.out  # item 14
    for command in (["evaluate", demo], ["inspect", demo, "--out", tmp_path / "i"], ["report", demo]):
        done = run_cli(command)
        assert done.code == 0, done.err


# ------------------------------------------------------------------------------------- 10. reproducibility

def test_10_equal_seeds_and_epoch_budgets_give_byte_identical_model_files(data: dict[str, Path],
                                                                          tmp_path: Path) -> None:
    for name in ("a", "b"):
        assert run_cli(train_args(data, tmp_path / name, "--epochs", 2, "--seed", 5)).code == 0
    assert (tmp_path / "a" / "model.dw").read_bytes() == (tmp_path / "b" / "model.dw").read_bytes()
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert "reproduce exactly" in readme and "time budget" in readme


# -------------------------------------------------------------------- 11. tests that need data say so at the end

def test_11_skipped_data_tests_are_counted_in_the_last_lines(tmp_path: Path) -> None:
    env = {**os.environ, "DEEPWIENER_DATA": str(tmp_path / "nowhere")}
    env.pop("CI", None)
    tests = Path(__file__).parents[1]
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(tests / "test_identification.py"), "-k", "silverbox"], capture_output=True, text=True,
                          env=env, cwd=tests.parent, timeout=300)
    last = done.stdout.strip().splitlines()[-2:]
    assert any("tests skipped: benchmark data not found" in line and "DEEPWIENER_DATA" in line for line in last), last


# ------------------------------------------------------------------------------------------ 12. progress

def test_12_fit_shows_progress_on_a_terminal_and_nothing_elsewhere(capfd: pytest.CaptureFixture[str]) -> None:
    record = dw.IOData(u=np.random.default_rng(2).normal(size=(200, 1)), y=np.zeros((200, 1)) + 0.1, dt=0.1)
    fit(dw.DeepWiener(1, 1, d_model=2, d_state=2, n_layers=1), record, TrainConfig(window=50, washout=5, epochs=2))
    assert capfd.readouterr().err == ""  # stderr is not a terminal here
    screen = StringIO()
    with TrainingProgress(10, max_seconds=60, console=Console(file=screen, force_terminal=True, width=150)) as bar:
        bar.update(dw.EpochInfo(4, 0.5, 0.25, 1e-3, 8.0, True))
    assert bar.seconds_left(4, 8.0) == pytest.approx(12.0)  # 6 epochs at 2 s, before the budget's 52 s


# ------------------------------------------------------------------------------- 13. tests that could miss

def test_13_lru_input_normalisation_is_gamma_of_the_pole_modulus() -> None:
    """gamma = sqrt(1 - |lambda|^2), computed here from lambda = exp(-exp(nu) + i exp(theta)) itself."""
    layer = LRU(2, 2, 3, LRUOptions(), generator=torch.Generator().manual_seed(0)).double()
    with torch.no_grad():
        layer.nu.copy_(torch.tensor([-3.0, -1.0, 0.5], dtype=torch.float64))
    system = layer.discretize()
    lam = torch.exp(-torch.exp(layer.nu) + 1j * torch.exp(layer.theta))
    gamma = torch.sqrt(1 - lam.abs() ** 2)
    torch.testing.assert_close(system.lam, lam)
    torch.testing.assert_close(system.B, torch.complex(layer.B_re, layer.B_im) * gamma[:, None])
    rebuilt = LRU.from_system(system, layer.options)
    torch.testing.assert_close(rebuilt.B_re.double(), layer.B_re, rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------------------------------ 14. small things

def test_14_epochs_count_from_one_everywhere_and_the_bode_title_promises_no_missing_line(run: Path) -> None:
    with (run / "history.csv").open() as file:
        assert [int(float(row["epoch"])) for row in csv.DictReader(file)] == [1, 2]
    assert "epoch 1: loss" in (run / "run.log").read_text() and "epoch 0:" not in (run / "run.log").read_text()
    figure = analysis_plots.bode_figure(analysis.blocks(io.load(run / "model.dw")))
    assert "dashed" not in figure.axes[0].get_title()


# --------------------------------------------------------------------- SIGKILL at random moments, then resume

def assert_nothing_half_written(out: Path) -> None:
    """Every file of the run is whole: it parses."""
    status = json.loads((out / "status.json").read_text())
    assert status["status"] in ("running", "failed", "complete")
    resolve(out / "config.toml")
    if (out / "checkpoint.pt").exists():
        torch.load(out / "checkpoint.pt", weights_only=True)
    if (out / "model.dw").exists():
        io.load(out / "model.dw")
    if (out / "history.csv").exists():
        with (out / "history.csv").open() as file:
            list(csv.DictReader(file))


@pytest.mark.parametrize("moment", ["during an epoch", "during a checkpoint write", "during the final model write"])
def test_sigkill_then_resume(moment: str, data: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = train_args(data, out, "--epochs", 8, "--seed", 3, config="big")
    rng = random.Random(f"sigkill {moment}")
    process = start(*args)
    try:
        assert wait_for(lambda: (out / "status.json").exists())
        if moment == "during an epoch":
            assert wait_for(lambda: (out / "checkpoint.pt").exists())
            time.sleep(rng.uniform(0.0, 0.5))
        elif moment == "during a checkpoint write":
            wait_for(lambda: any(out.glob(".checkpoint.pt.*.tmp")), timeout=60, every=0.0005)
        else:
            wait_for(lambda: any(out.glob(".model.dw.*.tmp")) or (out / "model.dw").exists(), timeout=60,
                     every=0.0005)
        process.send_signal(signal.SIGKILL)
    finally:
        stop(process)
    assert_nothing_half_written(out)
    resumed = run_cli(args)
    assert resumed.code == 0 or resumed.err.startswith("error: "), resumed.err  # resumes, or says why
    if resumed.code == 0:
        assert json.loads((out / "status.json").read_text())["status"] == "complete"
        assert leftovers(out) == []
        assert_nothing_half_written(out)
