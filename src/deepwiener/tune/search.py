"""``deepwiener tune``: a hyperparameter search whose trials are ordinary runs, and its summary.

Layout of the output folder ``DIR``::

    trials/NNNN/           one run directory per trial this folder's processes ran (``runs.RunDir``)
    best/                  a copy of the best trial's run (a complete run: evaluate, inspect, report take it)
    summary.json           every trial of the study ("trials"), the best one and the parameters' importances
    summary.md             the same as tables
    optimization_history.png   the validation RMSE of each trial and the best so far
    study.journal          the default storage (``study.open_storage``)

The objective is the validation RMSE that ``fit`` computes (the held-out tail or the validation records, never the
test records); trials report it after every epoch, and the pruner stops trials whose curve is worse than the median
of earlier trials at the same epoch.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import time
import uuid
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from deepwiener import plots
from deepwiener.config import DataConfig, resolve
from deepwiener.data import Benchmark
from deepwiener.errors import ConfigError
from deepwiener.files import LockFile, write_file
from deepwiener.runs import RunDir, train_run
from deepwiener.training import EpochInfo
from deepwiener.tune.space import SearchSpace, read_space
from deepwiener.tune.study import (
    HEARTBEAT_SECONDS,
    JOURNAL,
    TRIAL_ERRORS,
    host,
    open_storage,
    open_study,
    redact,
    start_workers,
    work,
)

log = logging.getLogger("deepwiener.tune")
SUMMARY_COLUMNS = ("trial", "state", "validation RMSE", "epochs", "wall [s]", "host", "pid", "parameters")
FINISH_WAIT_SECONDS = 300.0
"""How long a process waits for another one writing the same folder's summary."""


@dataclasses.dataclass(frozen=True)
class TuneSettings:
    """What ``deepwiener tune`` was asked to do.

    Attributes:
        space: SPACE.toml, a run configuration with a ``[tune]`` table (``tune.space``).
        out: the output folder (module docstring).
        trials: the study's total number of trials, shared by every process that joins it.
        data: the ``[data]`` flags of the command line (None: not given; the file's ``[data]`` table otherwise).
        workers: processes started on this machine, each with its share of the cores.
        storage: None (a journal file in ``out``), ``sqlite:///FILE`` or ``postgresql://USER@HOST:PORT/DB``.
        study: the study's name (default: the stem of ``space``); processes with the same name and storage join.
        heartbeat: seconds between a trial's heartbeats on SQLite and PostgreSQL.
        max_minutes: no trial starts this many minutes after the search started here (None: no limit); the
            trials running then finish (each within its own ``[train] max_minutes``).
        deadline: the ``time.time()`` after which no trial starts (set from ``max_minutes`` by :func:`tune`).
    """

    space: Path
    out: Path
    trials: int
    data: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    workers: int = 1
    storage: str | None = None
    study: str | None = None
    heartbeat: int = HEARTBEAT_SECONDS
    max_minutes: float | None = None
    deadline: float | None = None

    @property
    def study_name(self) -> str:
        """The study's name."""
        return self.study or self.space.stem

    @property
    def overrides(self) -> dict[str, Mapping[str, Any]]:
        """The command line's overrides of the run configuration (its data flags)."""
        return {"data": dict(self.data)}


class Pruned(Exception):
    """The pruner stopped a trial (raised from ``fit``'s ``on_epoch``; the trial's run is marked failed)."""


def tune(settings: TuneSettings) -> dict[str, Any]:
    """Run (or join, or resume) the study of ``settings`` until it has ``settings.trials`` trials; write the summary
    and copy the best run.

    Returns:
        The summary (``summary.json``'s content).

    Raises:
        ConfigError: bad settings or search space, an unreachable storage, a study of another search space or data,
            a failed worker.
    """
    if settings.trials < 1 or settings.workers < 1 or settings.heartbeat < 1:
        raise ConfigError(f"--trials, --workers and --heartbeat must be >= 1 (got {settings.trials}, "
                          f"{settings.workers}, {settings.heartbeat})")
    if settings.max_minutes is not None and settings.max_minutes <= 0:
        raise ConfigError(f"--max-minutes must be positive, got {settings.max_minutes}")
    if settings.max_minutes is not None:
        settings = dataclasses.replace(settings, deadline=time.time() + 60 * settings.max_minutes)
    space, study = _open(settings)  # checks everything before workers start
    if settings.workers == 1:
        _search(settings, space, study)
    else:
        start_workers(settings.workers, run_worker, (settings,))
    return finish(study, settings.out)


def run_worker(settings: TuneSettings) -> None:
    """One local worker of :func:`tune` (in its own process): join the study and run trials."""
    _search(settings, *_open(settings))


def _open(settings: TuneSettings) -> tuple[SearchSpace, optuna.Study]:
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # each trial gets one line of ours
    space = read_space(settings.space)
    data = space.check(settings.overrides)
    storage = open_storage(settings.storage, settings.out, settings.heartbeat)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=space.prune_after) \
        if space.pruner == "median" else None
    return space, open_study(storage, settings.study_name, space.fingerprint(data), pruner)


def _search(settings: TuneSettings, space: SearchSpace, study: optuna.Study) -> None:
    poll = 2.0 if settings.storage is None else max(1.0, settings.heartbeat / 2)
    work(study, Objective(space, settings), settings.trials, poll, on_trial=_log_trial, deadline=settings.deadline)


class Objective:
    """A trial: sample the configuration, train it as the run ``DIR/trials/NNNN``, return its best validation RMSE.

    The trial records its host, pid, run folder, epochs and, when its configuration or training fails
    (``study.TRIAL_ERRORS``), the error.
    """

    def __init__(self, space: SearchSpace, settings: TuneSettings) -> None:
        self.space = space
        self.settings = settings
        self._data: dict[DataConfig, Benchmark] = {}

    def __call__(self, trial: optuna.Trial) -> float:
        run_path = self.settings.out / "trials" / f"{trial.number:04d}"
        for key, value in (("host", host()), ("pid", os.getpid()), ("run", f"trials/{run_path.name}")):
            trial.set_user_attr(key, value)
        epochs: list[int] = [0]

        def report(info: EpochInfo) -> None:
            epochs[0] = info.epoch
            trial.report(info.val_rmse if math.isfinite(info.val_rmse) else math.inf, info.epoch)
            if trial.should_prune():
                raise Pruned(f"pruned after epoch {info.epoch} (validation RMSE {info.val_rmse:.5g})")

        try:
            cfg = resolve(self.space.sample(trial), self.settings.overrides)
            if cfg.data not in self._data:  # loaded once per process
                self._data[cfg.data] = cfg.data.load()
            data = self._data[cfg.data]
            trial.set_user_attr("unit", data.train[0].y_unit)
            with RunDir.create(run_path, config=cfg, force=True) as run:
                outcome = train_run(run, cfg, data, on_epoch=report)
        except TRIAL_ERRORS as exc:
            trial.set_user_attr("epochs", epochs[0])
            trial.set_user_attr("error", " ".join(str(exc).split()))
            raise
        except Pruned as exc:
            trial.set_user_attr("epochs", epochs[0])
            raise optuna.TrialPruned(str(exc)) from None
        trial.set_user_attr("epochs", outcome.result.epochs_run)
        trial.set_user_attr("best_epoch", outcome.result.best_epoch)
        value = outcome.result.best_val_rmse
        return value if not math.isnan(value) else math.inf


def _log_trial(study: optuna.Study, trial: FrozenTrial) -> None:
    """One line per trial (logger ``deepwiener.tune``, which the command line and the workers show)."""
    row = trial_row(trial)
    result = f"validation RMSE {row['val_rmse']:.5g} {row['unit']}".rstrip() if row["val_rmse"] is not None \
        else row.get("error") or row.get("note") or ""
    log.info("trial %d (%s pid %s): %s after %s epochs, %.0f s; %s", trial.number, row["host"], row["pid"],
             row["state"], row["epochs"], row["seconds"] or 0.0, result)


def trial_row(trial: FrozenTrial) -> dict[str, Any]:
    """A trial as summary.json lists it."""
    seconds = (trial.datetime_complete - trial.datetime_start).total_seconds() \
        if trial.datetime_complete and trial.datetime_start else None
    attrs = trial.user_attrs
    row = {"number": trial.number, "state": trial.state.name.lower(), "val_rmse": trial.value,
           "unit": attrs.get("unit", ""), "params": dict(trial.params), "epochs": attrs.get("epochs"),
           "best_epoch": attrs.get("best_epoch"), "seconds": seconds, "host": attrs.get("host"),
           "pid": attrs.get("pid"), "run": attrs.get("run")}
    if "error" in attrs:
        row["error"] = attrs["error"]
    retried = trial.system_attrs.get("failed_trial")
    if retried is not None:
        row["retry_of"] = retried
    if trial.state == TrialState.FAIL and "error" not in attrs:
        row["note"] = "its process was lost (killed, or its machine stopped); the trial ran again"
    return row


def importances(study: optuna.Study) -> tuple[dict[str, float], str]:
    """The parameters' importances for the validation RMSE (Optuna's PED-ANOVA, which needs no extra package) and
    how they were obtained, or ``({}, why not)``."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    finite = [t for t in complete if t.value is not None and math.isfinite(t.value)]
    if len(finite) < 3:
        return {}, f"not computed: {len(finite)} complete trials with a finite validation RMSE (3 needed)"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "few trials in some regime": rough, as the table says
            values = optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.PedAnovaImportanceEvaluator(), target=_finite_value)
    except (ValueError, RuntimeError, ZeroDivisionError) as exc:
        return {}, f"not computed: {exc}"
    return dict(values), "PED-ANOVA (optuna.importance.PedAnovaImportanceEvaluator) over the complete trials"


def _finite_value(trial: FrozenTrial) -> float:
    return trial.value if trial.value is not None and math.isfinite(trial.value) else float("nan")


def finish(study: optuna.Study, out: Path) -> dict[str, Any]:
    """Write ``summary.json``, ``summary.md`` and ``optimization_history.png`` and copy the best trial's run to
    ``out/best`` (when it ran into this folder; the summary names its host otherwise). Processes that share ``out``
    take turns (the folder's lock ``tune.lock``).

    Returns:
        The summary.
    """
    rows = [trial_row(t) for t in study.get_trials(deepcopy=False)]
    done = [r for r in rows if r["state"] == "complete" and r["val_rmse"] is not None]
    best = min(done, key=lambda r: r["val_rmse"]) if done else None
    values, method = importances(study)
    summary: dict[str, Any] = {
        "study": study.study_name, "objective": "validation RMSE (minimised)", "storage": _storage_name(study),
        "trials": rows, "best": best, "importances": values, "importance_method": method}
    lock = LockFile(out / "tune.lock")
    deadline = time.monotonic() + FINISH_WAIT_SECONDS
    while True:
        try:
            lock.acquire(f"the tuning folder {out}")
            break
        except ConfigError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    try:
        summary["best_run"] = _copy_best(best, out)
        write_file(out / "summary.json", json.dumps(summary, indent=2, default=str) + "\n")
        write_file(out / "summary.md", summary_markdown(summary))
        write_file(out / "optimization_history.png", plots.png_bytes(plots.optimization_history(
            [r["number"] for r in done], [r["val_rmse"] for r in done], done[0]["unit"] if done else "")))
    finally:
        lock.release()
    return summary


def _copy_best(best: Mapping[str, Any] | None, out: Path) -> str:
    """Copy the best trial's run to ``out/best`` (replacing an earlier one); what the summary says about it."""
    if best is None:
        return "no complete trial"
    source = out / best["run"]
    if not (source / "status.json").exists() or RunDir(source).read_status().get("status") != "complete":
        return f"trial {best['number']} ran on {best['host']} (pid {best['pid']}): its run is {best['run']} there"
    tmp, old = out / f".best.{uuid.uuid4().hex}.tmp", out / f".best.{uuid.uuid4().hex}.old"
    shutil.copytree(source, tmp, ignore=shutil.ignore_patterns("run.lock", "checkpoint.pt", ".*.tmp"))
    target = out / "best"
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    return f"best (a copy of {best['run']}, trial {best['number']})"


def summary_markdown(summary: Mapping[str, Any]) -> str:
    """summary.md: the best trial, every trial, the importances."""
    rows, best = summary["trials"], summary["best"]
    lines = [f"# Study {summary['study']}", "", f"Objective: {summary['objective']}; storage: {summary['storage']}.",
             ""]
    if best is not None:
        lines += [f"Best: trial {best['number']}, validation RMSE {best['val_rmse']:.5g} {best['unit']}; "
                  f"{summary['best_run']}.", "", "Parameters: " + _params(best["params"]) + ".", ""]
    lines += ["| " + " | ".join(SUMMARY_COLUMNS) + " |", "|" + "---|" * len(SUMMARY_COLUMNS)]
    for r in rows:
        state = r["state"] + (f" (retry of {r['retry_of']})" if "retry_of" in r else "")
        value = f"{r['val_rmse']:.5g}" if r["val_rmse"] is not None else r.get("error") or r.get("note") or ""
        seconds = f"{r['seconds']:.0f}" if r["seconds"] is not None else ""
        cells = [str(r["number"]), state, value, str(r["epochs"] if r["epochs"] is not None else ""), seconds,
                 str(r["host"] or ""), str(r["pid"] or ""), _params(r["params"])]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    lines += ["", f"Importances ({summary['importance_method']}):" if summary["importances"]
              else f"Importances: {summary['importance_method']}.", ""]
    lines += [f"- {name}: {value:.3f}" for name, value in summary["importances"].items()]
    return "\n".join(lines).rstrip() + "\n"


def _params(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def _storage_name(study: optuna.Study) -> str:
    """The study's storage in words (its URL without the password, or the journal file's name)."""
    storage = study._storage  # noqa: SLF001 - Optuna's documented way to reach a study's storage
    url = getattr(storage, "url", None)
    return redact(str(url)) if url else f"the journal file {JOURNAL}"

