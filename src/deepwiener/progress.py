"""The progress display of training: a bar on an interactive terminal, a line every few seconds in a log.

:class:`TrainingProgress` is a context manager whose :meth:`~TrainingProgress.update` takes the ``EpochInfo`` that
``fit`` passes to ``on_epoch`` (epoch counted from 1, training loss, validation RMSE, learning rate, seconds,
whether it is the best so far). On a terminal it draws a rich progress bar on stderr with the time left (from the
epoch budget and the time budget, whichever ends first); elsewhere it prints a plain line at most every
``line_seconds`` (or nothing, with ``line_seconds=None``). ``fit`` shows it by default on an interactive terminal;
the command line shows it always. This module depends on nothing of the package's.
"""

from __future__ import annotations

import math
import time
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn


class TrainingProgress:
    """Training progress on stderr (module docstring).

    Args:
        epochs: the epoch budget.
        max_seconds: the time budget in seconds, or None.
        line_seconds: when stderr is not a terminal, print a plain line at most this often; None: print nothing.
        console: where to draw (default: a console on stderr).
    """

    def __init__(self, epochs: int, max_seconds: float | None = None, line_seconds: float | None = None,
                 console: Console | None = None) -> None:
        self.epochs, self.max_seconds, self.line_seconds = epochs, max_seconds, line_seconds
        self.console = console or Console(stderr=True)
        self._progress: Progress | None = None
        self._task: Any = None
        self._last_line = -math.inf
        self.last_stats = ""

    def __enter__(self) -> TrainingProgress:
        if self.console.is_terminal:
            columns = (TextColumn("epoch {task.completed}/{task.total}"), BarColumn(),
                       TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TextColumn("{task.fields[left]}"))
            self._progress = Progress(*columns, console=self.console, transient=True)
            self._progress.__enter__()
            self._task = self._progress.add_task("train", total=self.epochs, stats="", left="")
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._progress is not None:
            self._progress.__exit__(exc_type, exc, tb)
            self._progress = None

    def update(self, info: Any) -> None:
        """Show one epoch's ``EpochInfo``."""
        self.last_stats = (f"loss {info.train_loss:.4g}  val RMSE {info.val_rmse:.4g}{' (best)' if info.best else ''}"
                           f"  lr {info.lr:.2g}")
        left = self.seconds_left(info.epoch, info.seconds)
        if self._progress is not None:
            self._progress.update(self._task, completed=info.epoch, stats=self.last_stats,
                                  left=f"~{left / 60:.1f} min left" if math.isfinite(left) else "")
        elif self.line_seconds is not None and time.monotonic() - self._last_line >= self.line_seconds:
            self._last_line = time.monotonic()
            self.console.print(f"epoch {info.epoch}/{self.epochs} ({info.seconds:.0f} s): {self.last_stats}",
                               soft_wrap=True, markup=False, highlight=False)

    def seconds_left(self, epoch: int, seconds: float) -> float:
        """The time left at the pace so far: the epoch budget or the time budget, whichever ends first."""
        by_epochs = (self.epochs - epoch) * seconds / epoch if epoch else math.inf
        by_time = self.max_seconds - seconds if self.max_seconds is not None else math.inf
        return max(0.0, min(by_epochs, by_time))
