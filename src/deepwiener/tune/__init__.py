"""Hyperparameter search and seed sweeps on Optuna studies (``deepwiener tune``; ``pip install 'deepwiener[tune]'``).

- ``space``: the search space, a run configuration plus a ``[tune]`` table of ranges.
- ``study``: storages (a journal file, SQLite, PostgreSQL), a study bound to its search space and data, the worker
  loop that any number of processes on any number of machines run, local worker processes.
- ``search``: the trials as run directories, the summary and the best run.
"""

from deepwiener.tune.search import TuneSettings, finish, run_worker, tune
from deepwiener.tune.space import Range, SearchSpace, read_space
from deepwiener.tune.study import HEARTBEAT_SECONDS, open_storage, open_study, start_workers, work

__all__ = ["HEARTBEAT_SECONDS", "Range", "SearchSpace", "TuneSettings", "finish", "open_storage", "open_study",
           "read_space", "run_worker", "start_workers", "tune", "work"]
