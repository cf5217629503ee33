"""Optuna studies that any number of processes join: storages, the study's identity, the worker loop, local workers.

- Storage (:func:`open_storage`): by default Optuna's journal file in the output folder (several processes on one
  machine append to it safely; SQLite locks up under concurrent writers); ``sqlite:///FILE``; or
  ``postgresql://USER[:PASSWORD]@HOST:PORT/DB`` (the URL as users write it; the driver, psycopg, is named for
  SQLAlchemy here), which processes on any number of machines join.
- A study is bound to its search space and data (:func:`open_study`): joining it with other ones is refused.
- Trials lost with their process are failed and run again once: on SQLite and PostgreSQL through Optuna's heartbeat
  (a trial whose process has not beaten for ``grace`` seconds), on the journal file when the process that ran it
  (this machine, its pid) is gone.
- ``--trials N`` is the study's total: each worker (:func:`work`) runs trials until N have ended (complete, pruned,
  or failed by their own error), and waits while the last ones run elsewhere.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import re
import socket
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.storages import BaseStorage, JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from deepwiener.errors import ConfigError, DataError, DeepWienerError

log = logging.getLogger("deepwiener.tune")
HEARTBEAT_SECONDS = 30
"""Default heartbeat of SQLite and PostgreSQL studies; a trial whose process is silent for 3 beats is failed."""
JOURNAL = "study.journal"
"""The default storage's file in the output folder."""
TRIAL_ERRORS: tuple[type[Exception], ...] = (ConfigError, DataError)
"""Errors of a trial's own configuration or training (a diverged model): the trial fails, the search goes on."""
ENDED = (TrialState.COMPLETE, TrialState.PRUNED)


def host() -> str:
    """This machine's name, as trials record it."""
    return socket.gethostname()


def redact(url: str) -> str:
    """``url`` without its password."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def open_storage(url: str | None, folder: Path, heartbeat: int = HEARTBEAT_SECONDS) -> BaseStorage:
    """The storage of a study.

    Args:
        url: None (the journal file ``folder/study.journal``), ``sqlite:///FILE`` or ``postgresql://...``
            (also ``postgres://`` and ``postgresql+DRIVER://``).
        folder: the output folder (created if missing).
        heartbeat: seconds between the heartbeats of a running trial (SQLite, PostgreSQL); a trial silent for
            three of them is failed.

    Raises:
        ConfigError: an unsupported URL, a missing driver, or a database that cannot be reached or opened.
    """
    folder.mkdir(parents=True, exist_ok=True)
    if url is None:
        return JournalStorage(JournalFileBackend(str(folder / JOURNAL)))
    scheme, _, rest = url.partition("://")
    scheme = scheme.lower()
    engine: dict[str, Any] = {}
    if scheme in ("postgresql", "postgres"):
        url, engine = f"postgresql+psycopg://{rest}", {"connect_args": {"connect_timeout": 10}}
    if scheme.startswith("postgres"):
        try:
            import psycopg  # noqa: F401 - checked here for a clear message
        except ImportError:
            raise ConfigError("a PostgreSQL study needs the psycopg driver: pip install 'deepwiener[tune]'") from None
    elif scheme != "sqlite" or not rest:
        raise ConfigError(f"unsupported --storage {redact(url)!r}: give sqlite:///FILE or "
                          "postgresql://USER@HOST:PORT/DBNAME (default: a journal file in --out)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # the heartbeat's arguments
            return RDBStorage(url, engine_kwargs=engine, heartbeat_interval=heartbeat, grace_period=3 * heartbeat,
                              heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1))
    except Exception as exc:  # SQLAlchemy's and the driver's errors: unreachable server, bad URL, no database, ...
        raise ConfigError(f"cannot open the study storage {redact(url)}: {_first_line(exc)}") from None


def open_study(storage: BaseStorage, name: str, identity: Mapping[str, str],
               pruner: optuna.pruners.BasePruner | None = None) -> optuna.Study:
    """Create the study ``name`` or join it, minimising; refuse it when it was started with another search space or
    other data (``identity``: ``{"space": ..., "data": ...}``, stored in the study's user attributes).

    Raises:
        ConfigError: the study exists with another identity, or the storage fails.
    """
    try:
        study = optuna.create_study(storage=storage, study_name=name, direction="minimize", load_if_exists=True,
                                    pruner=pruner or optuna.pruners.NopPruner())
        for key, value in identity.items():
            if key not in study.user_attrs:
                study.set_user_attr(key, value)
        stored = study.user_attrs
    except DeepWienerError:
        raise
    except Exception as exc:  # the storage's errors (a lost connection, a locked database, ...)
        raise ConfigError(f"cannot open study {name!r}: {_first_line(exc)}") from None
    differ = [key for key, value in identity.items() if stored.get(key) != value]
    if differ:
        what = " and ".join("the search space" if key == "space" else "the data" if key == "data" else key
                            for key in differ)
        raise ConfigError(f"study {name!r} was started with other settings: {what} differ; give another --study name "
                          "(or the study's own search space and data)")
    return study


def counts(study: optuna.Study) -> tuple[int, int, int]:
    """(trials that ended, trials running, trials queued): a trial ended when it is complete or pruned, or failed by
    its own error (``TRIAL_ERRORS``, recorded as the user attribute "error"); one lost with its process is not counted
    (it is queued to run again)."""
    trials = study.get_trials(deepcopy=False)
    ended = sum(t.state in ENDED or (t.state == TrialState.FAIL and "error" in t.user_attrs) for t in trials)
    return ended, sum(t.state == TrialState.RUNNING for t in trials), sum(t.state == TrialState.WAITING for t in trials)


def fail_lost_trials(study: optuna.Study) -> list[int]:
    """Fail the running trials whose process is gone and queue them again (once); returns their numbers.

    SQLite and PostgreSQL: Optuna's heartbeat (``optuna.storages.fail_stale_trials``). The journal file, which has
    no heartbeat: the trials this machine ran whose process (the pid they record) no longer exists.
    """
    storage = study._storage  # noqa: SLF001 - Optuna's documented way to reach a study's storage
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if not isinstance(storage, JournalStorage):
            before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
            optuna.storages.fail_stale_trials(study)
            after = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
            return sorted(before - after)
        lost = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                if t.user_attrs.get("host") == host() and not _alive(t.user_attrs.get("pid"))]
        retry = RetryHeartbeatStaleTrialCallback(max_retry=1)
        for trial in lost:
            try:
                study.tell(trial.number, state=TrialState.FAIL)
            except (RuntimeError, ValueError):  # another process failed it first
                continue
            retry(study, next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number))
    return [t.number for t in lost]


def work(study: optuna.Study, objective: Callable[[optuna.Trial], float], n_trials: int, poll: float,
         on_trial: Callable[[optuna.Study, FrozenTrial], None] | None = None, deadline: float | None = None) -> None:
    """Run trials of ``study`` until ``n_trials`` have ended (:func:`counts`) and none runs or waits in the queue,
    waiting ``poll`` seconds at a time while the last ones run in other processes (which may die: their trials then
    fail, after the storage's grace period, and run again here); start none after ``deadline`` (a ``time.time()``),
    if given.

    Processes that start their last trials at the same moment may end a few more than ``n_trials``; a trial lost
    with its process always runs again (so that the summary holds no trial of a dead process as running).
    A trial that raises one of ``TRIAL_ERRORS`` fails and the loop goes on; any other error ends it.
    """
    while deadline is None or time.time() < deadline:
        fail_lost_trials(study)
        ended, running, queued = counts(study)
        if ended >= n_trials and running == 0 and queued == 0:
            return
        if queued == 0 and ended + running >= n_trials:
            time.sleep(poll)
            continue
        study.optimize(objective, n_trials=1, catch=TRIAL_ERRORS, callbacks=[on_trial] if on_trial else None)


def start_workers(count: int, target: Callable[..., None], args: Sequence[Any], threads: int | None = None) -> None:
    """Run ``target(*args)`` in ``count`` new processes at once, each with ``threads`` torch threads (default: its
    share of this machine's cores), and wait for them. In each, a ``DeepWienerError`` is one ``error:`` line and exit
    code 2.

    Raises:
        ConfigError: a worker failed (its own error line says why).
    """
    threads = threads or max(1, (os.cpu_count() or 1) // count)
    spawn = multiprocessing.get_context("spawn")
    workers = [spawn.Process(target=_worker, args=(target, threads, args), name=f"tune-worker-{k}")
               for k in range(count)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    failed = [w.exitcode for w in workers if w.exitcode != 0]
    if failed:
        raise ConfigError(f"{len(failed)} of {count} workers failed (exit codes {failed}); their errors are above")


def _worker(target: Callable[..., None], threads: int, args: Sequence[Any]) -> None:
    """A worker process: its share of the cores, then ``target``. Its trial lines (logger ``deepwiener.tune``) go to
    stderr; a ``DeepWienerError`` is one ``error:`` line and exit code 2."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)
    lines = logging.StreamHandler(sys.stderr)
    lines.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(lines)
    log.setLevel(logging.INFO)
    try:
        target(*args)
    except DeepWienerError as exc:
        log.error("error: %s", _first_line(exc))
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


def _alive(pid: Any) -> bool:
    """Whether process ``pid`` exists on this machine (a pid that is not an integer is not alive)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, as another user's
        return True
    return True


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return " ".join(text[0].split()) if text else type(exc).__name__
