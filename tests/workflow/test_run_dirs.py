"""Run directories: status written last, refusal of incomplete runs, no silent overwrite, resume checkpoint."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from deepwiener.config import resolve
from deepwiener.errors import ConfigError, ModelFileError
from deepwiener.runs import RunDir, resolve_target

CONFIG = resolve(None, {"data": {"benchmark": "silverbox"}})


def status(path: Path) -> str:
    return json.loads((path / "status.json").read_text())["status"]


def test_complete_run(tmp_path: Path) -> None:
    with RunDir.create(tmp_path / "run", config=CONFIG) as run:
        assert status(run.path) == "running"
        with pytest.raises(ModelFileError, match="is not complete \\(status: running\\)"):
            RunDir.open(run.path)
        run.write_json("metrics.json", {"a": 1})
        run.write_history([{"epoch": 0, "train_loss": 1.0, "val_rmse": 2.0, "lr": 0.1, "seconds": 3.0}])
    assert status(run.path) == "complete"
    assert RunDir.open(run.path).config() == CONFIG
    assert (run.path / "history.csv").read_text() == "epoch,train_loss,val_rmse,lr,seconds\n0,1.0,2.0,0.1,3.0\n"
    assert "run " in (run.path / "run.log").read_text()
    status_json = json.loads((run.path / "status.json").read_text())
    assert status_json["kind"] == "train" and "torch" in status_json["versions"]


def test_failed_run_is_refused_and_logged(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="boom"), RunDir.create(tmp_path / "run", config=CONFIG):
        raise ValueError("boom")
    assert status(tmp_path / "run") == "failed"
    assert "ValueError: boom" in json.loads((tmp_path / "run" / "status.json").read_text())["error"]
    assert "Traceback" in (tmp_path / "run" / "run.log").read_text()
    with pytest.raises(ModelFileError, match="not complete \\(status: failed\\)"):
        resolve_target(tmp_path / "run")
    RunDir.create(tmp_path / "run", config=CONFIG)  # a failed run may be redone without --force


def test_complete_run_needs_force(tmp_path: Path) -> None:
    with RunDir.create(tmp_path / "run", config=CONFIG) as run:
        run.write_text("model.dw", "x")
    with pytest.raises(ConfigError, match="is complete; use --force"):
        RunDir.create(tmp_path / "run", config=CONFIG)
    RunDir.create(tmp_path / "run", config=CONFIG, force=True)
    assert status(tmp_path / "run") == "running" and not (tmp_path / "run" / "model.dw").exists()


def test_demo_overwrites_demo(tmp_path: Path) -> None:
    with RunDir.create(tmp_path / "demo", kind="demo"):
        pass
    with RunDir.create(tmp_path / "demo", kind="demo"):
        pass
    with pytest.raises(ConfigError, match="is complete"):
        RunDir.create(tmp_path / "demo", config=CONFIG)


def test_refuses_foreign_folders_and_missing_targets(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(ConfigError, match="non-empty folder that is not a run"):
        RunDir.create(tmp_path / "mine", config=CONFIG)
    with pytest.raises(ConfigError, match="is not a run directory \\(no status.json\\)"):
        RunDir.open(tmp_path / "mine")
    with pytest.raises(ConfigError, match="no such run directory or model file"):
        resolve_target(tmp_path / "absent")


def test_checkpoint_kept_only_for_the_same_config(tmp_path: Path) -> None:
    path = tmp_path / "run"
    RunDir.create(path, config=CONFIG).lock.release()  # left "running" without its process, as after a kill
    (path / "checkpoint.pt").write_bytes(b"ckpt")
    (path / "status.json").write_text('{"status": "failed"}')
    RunDir.create(path, config=CONFIG).lock.release()
    assert (path / "checkpoint.pt").exists()
    (path / "status.json").write_text('{"status": "failed"}')
    RunDir.create(path, config=resolve(None, {"data": {"benchmark": "emps"}})).lock.release()
    assert not (path / "checkpoint.pt").exists()


def test_a_live_run_refuses_every_other_writer(tmp_path: Path) -> None:
    live = RunDir.create(tmp_path / "run", config=CONFIG)
    for force in (False, True):
        with pytest.raises(ConfigError, match=rf"run .* is in use by process {os.getpid()} on "):
            RunDir.create(tmp_path / "run", config=CONFIG, force=force)
    live.lock.release()


def test_an_interrupted_run_resumes_with_its_config_and_needs_force_for_another(tmp_path: Path) -> None:
    RunDir.create(tmp_path / "run", config=CONFIG).lock.release()  # its process is gone
    (tmp_path / "run" / "checkpoint.pt").write_bytes(b"ckpt")
    other = resolve(None, {"data": {"benchmark": "emps"}})
    with pytest.raises(ConfigError, match="was interrupted .* the command that started it resumes it; use --force"):
        RunDir.create(tmp_path / "run", config=other)
    RunDir.create(tmp_path / "run", config=CONFIG).lock.release()
    assert (tmp_path / "run" / "checkpoint.pt").read_bytes() == b"ckpt"
    RunDir.create(tmp_path / "run", config=other, force=True).lock.release()
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
