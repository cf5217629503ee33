"""``deepwiener tune`` end to end: two processes on one PostgreSQL study (one of them killed mid-trial), a killed
study that resumes, and the errors of storages and studies (one ``error:`` line, exit code 2).

Real components: a PostgreSQL server (the ``postgres`` fixture), SQLite and journal files, ``deepwiener tune``
processes killed with SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import optuna
import pytest
from cli.cli_helpers import one_error, run_cli
from conftest import SMOKE, TINY_SPACE, csv_flags, free_port

from deepwiener.tune import open_storage

Start = Callable[[Sequence[object]], subprocess.Popen]
RUNNING, ENDED = optuna.trial.TrialState.RUNNING, (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def kill_mid_trial(process: subprocess.Popen, storage: optuna.storages.BaseStorage, study: str,
                   timeout: float = 150.0) -> int:
    """SIGKILL ``process`` once it has ended a trial of ``study`` and runs another; that trial's number."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            trials = optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)
        except KeyError:  # not created yet
            trials = []
        mine = [t for t in trials if t.user_attrs.get("pid") == process.pid]
        running = [t.number for t in mine if t.state == RUNNING]
        if running and any(t.state in ENDED for t in mine):
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
            return running[0]
        time.sleep(0.1)
    raise AssertionError(f"process {process.pid} did not start a second trial (exit code {process.poll()})")


def check_study(out: Path, n_trials: int, killed: int) -> list[dict]:
    """summary.json: n_trials ended (one more when both processes started their last trial at once), none is left
    running, the killed trial failed and ran again; best is a complete run."""
    rows = json.loads((out / "summary.json").read_text())["trials"]
    ended = [r for r in rows if r["state"] in ("complete", "pruned")]
    assert n_trials <= len(ended) <= n_trials + 1 and not [r for r in rows if r["state"] == "running"], rows
    lost = next(r for r in rows if r["number"] == killed)
    assert lost["state"] == "fail" and "process was lost" in lost["note"]
    assert [r["state"] for r in rows if r.get("retry_of") == killed] in (["complete"], ["pruned"])
    assert json.loads((out / "best" / "status.json").read_text())["status"] == "complete"
    assert (out / "summary.md").exists() and (out / "optimization_history.png").exists()
    return ended


def test_two_processes_share_a_postgresql_study_and_outlive_a_killed_one(postgres: str, data_dir: Path,
                                                                         tmp_path: Path, start_tune: Start,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPWIENER_DATA", str(data_dir))
    monkeypatch.setenv("DEEPWIENER_OFFLINE", "1")
    out = tmp_path / "tune"
    args = ["--config", SMOKE, "--trials", 4, "--storage", postgres, "--study", "smoke", "--heartbeat", 1, "--out", out]
    first, second = start_tune(args), start_tune(args)
    storage = open_storage(postgres, tmp_path)
    try:
        killed = kill_mid_trial(second, storage, "smoke")
    finally:
        storage.engine.dispose()  # the test's own connections
    assert first.wait(timeout=240) == 0
    ended = check_study(out, 4, killed)
    assert {first.pid, second.pid} <= {r["pid"] for r in ended}  # both contributed
    assert run_cli(["evaluate", out / "best"]).code == 0


@pytest.mark.parametrize("storage", ["sqlite", "journal"])
def test_a_killed_study_resumes(storage: str, tiny: dict[str, Path], tmp_path: Path, start_tune: Start) -> None:
    out = tmp_path / "tune"
    url = f"sqlite:///{tmp_path / 'study.db'}" if storage == "sqlite" else None
    args = ["--config", tiny["space"], *csv_flags(tiny), "--trials", 3, "--heartbeat", 1, "--out", out,
            *(["--storage", url] if url else [])]
    killed = kill_mid_trial(start_tune(args), open_storage(url, out), "space")
    assert start_tune(args).wait(timeout=120) == 0
    check_study(out, 3, killed)


def test_bad_storages_and_another_studys_name_are_one_error_line(tiny: dict[str, Path], tmp_path: Path) -> None:
    def tune(space: Path, *extra: object) -> list[object]:
        return ["tune", "--config", space, *csv_flags(tiny), "--trials", 1, "--out", tmp_path / "out",
                "--study", "s", *extra]

    one_error(run_cli(tune(tiny["space"], "--storage", "mysql://me@localhost/db")), "unsupported --storage")
    one_error(run_cli(tune(tiny["space"], "--storage", f"postgresql://me:secret@127.0.0.1:{free_port()}/db")),
              "cannot open the study storage postgresql+psycopg://me:***@127.0.0.1")
    assert run_cli(tune(tiny["space"])).code == 0
    other = tmp_path / "other.toml"
    other.write_text(TINY_SPACE.replace("1e-2", "2e-2"))
    one_error(run_cli(tune(other)), "study 's' was started with other settings: the search space differ")
    one_error(run_cli([*tune(tiny["space"])[:-2], "--dt", "0.02", "--study", "s"]), "the data differ")
