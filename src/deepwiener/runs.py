"""Run directories: one folder per training run, written so that a half-written run is never taken for a good one.

Layout of ``runs/<name>/``::

    config.toml     the resolved configuration, every default spelled out
    model.dw        the trained model (see ``deepwiener.io``)
    metrics.json    {test name: Metrics} on the evaluation records
    history.csv     one row per epoch: epoch, train_loss, val_rmse, lr, seconds
    plots/*.png     training curves; measured vs simulated output and the error per test record
    run.log         the log of the run (tracebacks of failures included)
    checkpoint.pt   resume checkpoint while training (removed at the end)
    status.json     written first as "running" and last as "complete" or "failed"
    run.lock        while a process writes the run: its pid, host and start time (``files.LockFile``)

Every file is written completely or not at all (``files.write_file``). One process at a time writes a run: it
holds the run's lock from :meth:`RunDir.create` to the end of its ``with`` block, and a live lock refuses every
other writer, ``force`` included. Commands that read a run (:meth:`RunDir.open`) refuse it unless its status is
"complete". :meth:`RunDir.create` refuses to overwrite a complete run without ``force``; a run whose process is
gone ("running" without a live lock, or "failed", as after Ctrl-C or a full disk) is resumed by the command that
started it, from its checkpoint, when the configuration is the same.
"""

from __future__ import annotations

import csv
import io as stdio
import json
import logging
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import numpy as np

from deepwiener.config import DataConfig, RunConfig, resolve
from deepwiener.data import Benchmark
from deepwiener.errors import ConfigError, Interrupted, ModelFileError, WriteError
from deepwiener.evaluation import Metrics, evaluate_all
from deepwiener.files import LockFile, SafeFileHandler, write_file
from deepwiener.io import save, versions
from deepwiener.models import Model
from deepwiener.training import EpochInfo, FitResult, fit

logger = logging.getLogger(__name__)

Status = Literal["running", "complete", "failed"]
_ARTIFACTS = ("config.toml", "model.dw", "metrics.json", "history.csv", "run.log", "checkpoint.pt", "plots")
LOCK = "run.lock"
HISTORY_COLUMNS = ("epoch", "train_loss", "val_rmse", "lr", "seconds")


class RunDir:
    """A run directory. Use as a context manager around the work that fills it::

        with RunDir.create("runs/x", config=cfg) as run:   # status "running", log to run.log
            ...                                            # write files with run.write_*
        # status "complete" on success, "failed" (with the error) on any exception

    Attributes:
        path: the folder.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.lock = LockFile(self.path / LOCK)
        self._handler: SafeFileHandler | None = None
        self._previous_level = logging.NOTSET

    def file(self, name: str) -> Path:
        """Path of a file in the run, e.g. ``run.file("model.dw")``."""
        return self.path / name

    @property
    def model_path(self) -> Path:
        """The model file."""
        return self.file("model.dw")

    @property
    def log_path(self) -> Path:
        """The run log."""
        return self.file("run.log")

    @classmethod
    def create(cls, path: str | Path, *, config: RunConfig | None = None, kind: str = "train",
               force: bool = False) -> RunDir:
        """Start a run in ``path``: take its lock, check it may be (over)written, clear old artifacts, mark it
        "running". Use the result as a context manager, which releases the lock at its end.

        A resume checkpoint of an unfinished run (failed, or "running" with its process gone) with the same
        resolved configuration is kept, so the same command continues an interrupted run.

        Args:
            path: the run folder (created if missing).
            config: the resolved configuration, written to ``config.toml``; None writes none.
            kind: what produced the run ("train", "demo", "reduce"); a complete run of kind "demo" may be
                overwritten by another demo without ``force``.
            force: overwrite a complete run, or an interrupted one of another configuration.

        Raises:
            ConfigError: ``path`` is a file, a non-empty folder that is not a run, a run that a live process is
                writing (whatever ``force``), or a complete or interrupted run that ``force`` is needed for.
            WriteError: the folder cannot be written.
        """
        run = cls(path)
        if run.path.exists() and not run.path.is_dir():
            raise ConfigError(f"{run.path} exists and is not a directory")
        try:
            run.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise WriteError(f"cannot write {run.path}: {exc.strerror or exc}") from exc
        run.lock.acquire(f"run {run.path}")
        try:
            previous = run.read_status() if run.file("status.json").exists() else None
            if previous is None and any(p.name != LOCK for p in run.path.iterdir()) and not force:
                raise ConfigError(f"{run.path} is a non-empty folder that is not a run; choose another --out or use "
                                  "--force")
            config_text = config.to_toml() if config is not None else None
            same_config = config_text is not None and run._same_config(config_text)
            run._check_overwrite(previous, kind, same_config, force)
            run._clear(keep_checkpoint=same_config)
            run.set_status("running", kind=kind)
            if config_text is not None:
                write_file(run.file("config.toml"), config_text)
        except BaseException:
            run.lock.release()
            raise
        return run

    def _check_overwrite(self, previous: Mapping[str, Any] | None, kind: str, same_config: bool, force: bool) -> None:
        """Refuse to overwrite a complete run, or an interrupted one of another configuration, without ``force``."""
        status = None if previous is None else previous.get("status")
        if force or status is None:
            return
        if status == "complete" and not previous.get("kind") == kind == "demo":
            raise ConfigError(f"run {self.path} is complete; use --force to overwrite it")
        if status == "running" and not same_config:
            raise ConfigError(f"run {self.path} was interrupted (it is marked running and its process is gone): the "
                              "command that started it resumes it; use --force to start it over with this "
                              "configuration")

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        """Open a complete run for reading.

        Raises:
            ConfigError: ``path`` is not a directory, or not a run.
            ModelFileError: the run's status is not "complete" (running, failed or unreadable).
        """
        run = cls(path)
        if not run.path.is_dir():
            raise ConfigError(f"{run.path}: no such run directory")
        if not run.file("status.json").exists():
            raise ConfigError(f"{run.path} is not a run directory (no status.json)")
        status = run.read_status().get("status")
        if status != "complete":
            raise ModelFileError(f"run {run.path} is not complete (status: {status}); train it again")
        return run

    def read_status(self) -> dict[str, Any]:
        """The content of status.json; ``{"status": "unreadable"}`` when it cannot be parsed."""
        try:
            status = json.loads(self.file("status.json").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return {"status": "unreadable"}
        return status if isinstance(status, dict) else {"status": "unreadable"}

    def set_status(self, status: Status, **info: Any) -> None:
        """Write status.json (atomically) with the time, the versions and ``info``."""
        kind = info.pop("kind", None) or self.read_status().get("kind", "train")
        content = {"status": status, "kind": kind, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                   "versions": versions(), **info}
        self.write_json("status.json", content)

    def config(self) -> RunConfig:
        """The run's resolved configuration (from config.toml).

        Raises:
            ConfigError: the run has no config.toml, or it is invalid.
        """
        if not self.file("config.toml").exists():
            raise ConfigError(f"run {self.path} has no config.toml")
        return resolve(self.file("config.toml"))

    def write_text(self, name: str, text: str) -> Path:
        """Write a text file in the run (atomically)."""
        return write_file(self.file(name), text)

    def write_bytes(self, name: str, data: bytes) -> Path:
        """Write a binary file in the run (atomically), e.g. ``plots/training.png``."""
        return write_file(self.file(name), data)

    def write_json(self, name: str, content: Any) -> Path:
        """Write a JSON file in the run (atomically, indented)."""
        return write_file(self.file(name), json.dumps(content, indent=2) + "\n")

    def write_history(self, history: Sequence[Mapping[str, float]]) -> Path:
        """Write history.csv, one row per epoch with the columns :data:`HISTORY_COLUMNS`."""
        buffer = stdio.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(history)
        return write_file(self.file("history.csv"), buffer.getvalue())

    def read_history(self) -> list[dict[str, float]]:
        """The rows of history.csv (see :meth:`write_history`) as floats; [] when it is missing."""
        path = self.file("history.csv")
        if not path.exists():
            return []
        with path.open(encoding="utf-8", newline="") as file:
            return [{key: float(value) for key, value in row.items()} for row in csv.DictReader(file)]

    def __enter__(self) -> RunDir:
        self._handler = SafeFileHandler(self.log_path)
        self._handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        package = logging.getLogger("deepwiener")
        self._previous_level = package.level
        package.addHandler(self._handler)
        package.setLevel(min(package.getEffectiveLevel(), logging.INFO))
        logger.info("run %s started", self.path)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if exc is None:
                logger.info("run %s complete", self.path)
                self.set_status("complete")
            else:
                logger.error("run %s failed: %s", self.path, exc, exc_info=(exc_type, exc, tb))
                interrupted = isinstance(exc, KeyboardInterrupt | Interrupted)
                reason = "interrupted" if interrupted else f"{type(exc).__name__}: {exc}"
                self.set_status("failed", error=reason)
        except OSError as status_error:  # e.g. a full disk: the run stays "running", and its lock goes below
            if exc is None:
                raise
            logger.error("could not mark run %s failed: %s", self.path, status_error)
        finally:
            package = logging.getLogger("deepwiener")
            if self._handler is not None:
                package.removeHandler(self._handler)
                self._handler.close()
                self._handler = None
            package.setLevel(self._previous_level)
            self.lock.release()

    def _same_config(self, config_text: str) -> bool:
        path = self.file("config.toml")
        return path.exists() and path.read_text(encoding="utf-8") == config_text

    def _clear(self, keep_checkpoint: bool) -> None:
        """Remove status.json first (so the run is never "complete" meanwhile), then old artifacts and the temporary
        files a killed process left (``files.write_file`` names them ``.<name>.<random>.tmp``)."""
        self.file("status.json").unlink(missing_ok=True)
        for leftover in self.path.rglob(".*.tmp"):
            leftover.unlink(missing_ok=True)
        for name in _ARTIFACTS:
            target = self.file(name)
            if name == "checkpoint.pt" and keep_checkpoint:
                continue
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)


@dataclass(frozen=True)
class TrainOutcome:
    """What :func:`train_run` produced.

    Attributes:
        model: the trained model (best validation epoch).
        result: the training history and stopping reason.
        data: the data the run trained and evaluated on.
        metrics: ``{test name: Metrics}`` on ``data.tests``.
    """

    model: Model
    result: FitResult
    data: Benchmark
    metrics: dict[str, Metrics]


def train_run(run: RunDir, config: RunConfig, data: Benchmark,
              on_epoch: Callable[[EpochInfo], None] | None = None) -> TrainOutcome:
    """Build the model, train it (or identify it, for a kind such as "linear": one epoch, no checkpoint), save it,
    and evaluate it on every test record of ``data``.

    Writes ``model.dw``, ``history.csv`` and ``metrics.json`` into ``run`` (its status is the caller's).

    Args:
        run: the run directory (from :meth:`RunDir.create`).
        config: the resolved configuration.
        data: the train and test records (``config.data.load()``).
        on_epoch: progress callback, called after every epoch.

    Returns:
        The trained model, the fit result, the data and the metrics.
    """
    model, result = _fit(config, data, run.file("checkpoint.pt"), on_epoch)
    logger.info("stopped after %d epochs (%s); best epoch %d, validation RMSE %.6g", result.epochs_run,
                result.stopped, result.best_epoch, result.best_val_rmse)
    save(model, run.model_path, extra=describe(data))
    run.write_history(result.history)
    metrics = evaluate_all(model, data)
    run.write_json("metrics.json", metrics)
    return TrainOutcome(model, result, data, metrics)


def train_replica(config: RunConfig, data: Benchmark) -> None:
    """A rank other than 0 of a distributed training (``deepwiener train --distributed``): train alongside rank 0,
    which resumes from its checkpoint, writes the run and holds its lock; write nothing."""
    _fit(config, data, None, None)


def _fit(config: RunConfig, data: Benchmark, checkpoint: Path | None,
         on_epoch: Callable[[EpochInfo], None] | None) -> tuple[Model, FitResult]:
    """Build the model of ``config`` and train it on ``data`` (``training.fit``)."""
    first = data.train[0]
    model = config.build_model(first.n_u, first.n_y)
    logger.info("training %s (%d parameters) on %s", config.label, model.n_parameters, data.name)
    result = fit(model, data.train, config.train, val=list(data.val) or None, checkpoint=checkpoint,
                 on_epoch=on_epoch, progress=False)
    return model, result


def describe(data: Benchmark) -> dict[str, Any]:
    """Information about the training data stored in the model file (channel names, units, source, and the
    range of the training inputs, ``u_low`` and ``u_high`` per channel)."""
    first = data.train[0]
    inputs = np.concatenate([rec.u for rec in data.train])
    return {"data": data.name, "u_names": list(first.u_names), "y_names": list(first.y_names),
            "y_unit": first.y_unit, "report_unit": first.report_unit, "report_scale": first.report_scale,
            "u_low": inputs.min(axis=0).tolist(), "u_high": inputs.max(axis=0).tolist()}


def merge_descriptions(extras: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The ``describe`` information of an ensemble from its members' (``read_info(path)["extra"]``): the entries
    on which all members agree, and the union of their input ranges when every member stores one."""
    if not extras:
        return {}
    shared = {key: value for key, value in extras[0].items() if all(e.get(key) == value for e in extras[1:])}
    if all("u_low" in e and "u_high" in e for e in extras):
        shared["u_low"] = np.min([e["u_low"] for e in extras], axis=0).tolist()
        shared["u_high"] = np.max([e["u_high"] for e in extras], axis=0).tolist()
    return shared


def resolve_target(target: str | Path) -> tuple[Path, RunDir | None]:
    """The model file of a complete run directory, or a model file itself.

    Returns:
        ``(model file, run)``, with ``run`` None when ``target`` is a file.

    Raises:
        ConfigError: ``target`` does not exist or is not a run.
        ModelFileError: the run is not complete.
    """
    path = Path(target)
    if path.is_dir():
        run = RunDir.open(path)
        return run.model_path, run
    if not path.exists():
        raise ConfigError(f"{path}: no such run directory or model file")
    return path, None


def evaluation_data(run: RunDir | None, data: DataConfig | None) -> Benchmark:
    """The records to evaluate on: ``data`` when given, else the run's own data.

    Raises:
        ConfigError: neither is available.
    """
    if data is not None:
        return data.load()
    if run is None or not run.file("config.toml").exists():
        raise ConfigError("say what to evaluate on: --benchmark NAME or --csv FILE --u COLS --y COLS --dt SECONDS")
    return run.config().data.load()

