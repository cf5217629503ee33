"""numba, once for the compiled kernels (diagonal recurrence, fused deep Wiener stack, LFR loop, streaming): import,
build, launch.

numba is optional (the ``fast`` extra). One policy wherever a compiled kernel could run:

* ``mode="compiled"`` asks for it explicitly (and so does ``mode="fused"``, which means the whole-stack kernels of
  a deep Wiener model, ``engines.fused``, and an engine's own compiled kernel everywhere else): when it cannot run
  (numba missing, a failed compilation, a tensor off the CPU) :func:`resolve` raises
  :class:`CompiledUnavailableError` (a ``ConfigError``) naming the ``fast`` extra;
* ``mode="auto"`` takes it on the CPU when it can run, and otherwise falls back to the engine's pure-PyTorch
  path, saying so once per kernel in the log (a warning).

A :class:`Kernels` object builds one engine's numba dispatchers lazily (on first use, compiled once and cached
on disk by numba) and remembers a failure. :func:`launch_on_threads` runs a parallel kernel on a given number
of threads under one process-wide lock.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

import torch

from deepwiener.errors import ConfigError

try:
    import numba
    from numba import prange
except Exception:  # numba missing or broken (e.g. an incompatible numpy): every compiled kernel is unavailable
    numba = None
    prange = range

__all__ = ["CompiledUnavailableError", "Kernels", "jit", "launch_on_threads", "numba", "prange", "resolve"]

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'deepwiener[fast]'"
"""How to get numba, named in every error about a missing compiled kernel."""

LAUNCH_LOCK = threading.Lock()
"""Serialises kernel launches: the workqueue threading layer aborts the process on concurrent launches."""

_FALLBACKS_LOGGED: set[str] = set()


class CompiledUnavailableError(ConfigError, RuntimeError):
    """A compiled kernel was asked for and cannot run: numba is not installed or the kernel failed to compile."""


def jit(fn: Callable[..., Any], parallel: bool = True, reassociate: bool = False) -> Callable[..., Any]:
    """``numba.njit`` with the package's settings: cached on disk, no fastmath (results equal the references).

    ``reassociate=True`` allows one fastmath flag, the reassociation of sums, for a function that only sums (so
    the compiler may split a long dot product over vector lanes: the same sum up to rounding order)."""
    return numba.njit(parallel=parallel, cache=True, fastmath={"reassoc"} if reassociate else False)(fn)


class Kernels:
    """The numba dispatchers of one engine, built on first use.

    Args:
        name: how messages name the kernels, e.g. "compiled diagonal-recurrence kernel".
        build: creates the dispatchers (a dict of name -> dispatcher) and runs them once on tiny inputs, so that a
            kernel that cannot compile fails here and not in the middle of a simulation.
    """

    def __init__(self, name: str, build: Callable[[], dict[str, Callable[..., Any]]]) -> None:
        self.name = name
        self._build = build
        self._kernels: dict[str, Callable[..., Any]] | None = None
        self._failure: str | None = None if numba is not None else "numba is not installed"

    def available(self) -> bool:
        """Whether the kernels can run. Never raises; the first call compiles them (seconds)."""
        if self._failure is None and self._kernels is None:
            prefer_sleeping_threads()
            try:
                self._kernels = self._build()
            except Exception as exc:  # any compile or run failure just disables the kernels
                self.disable(exc)
        return self._failure is None

    def disable(self, exc: BaseException) -> None:
        """Mark the kernels unavailable (a compilation failed) and log why, once."""
        if self._failure is None:
            logger.warning("%s disabled: %s: %s", self.name, type(exc).__name__, exc)
            self._failure = f"it failed to compile ({type(exc).__name__})"
        self._kernels = None

    def require(self) -> None:
        """Raise :class:`CompiledUnavailableError` unless :meth:`available`."""
        if not self.available():
            raise CompiledUnavailableError(f"the {self.name} is unavailable: {self._failure}; mode 'compiled' needs "
                                           f"numba: {INSTALL_HINT}")

    def __getitem__(self, name: str) -> Callable[..., Any]:
        """A built dispatcher.

        Raises:
            CompiledUnavailableError: the kernels cannot run.
        """
        self.require()
        assert self._kernels is not None
        return self._kernels[name]

    def launch(self, name: str, threads: int, *args: Any) -> None:
        """Run kernel ``name`` on ``threads`` threads (:func:`launch_on_threads`). A compilation that fails for
        new argument types disables the kernels and raises :class:`CompiledUnavailableError`."""
        kernel = self[name]
        try:
            launch_on_threads(threads, kernel, *args)
        except numba.core.errors.NumbaError as exc:
            self.disable(exc)
            raise CompiledUnavailableError(f"compiling the {self.name} failed: {exc}") from exc


def resolve(mode: str, device_type: str, kernels: Kernels, fallback: str) -> str:
    """What ``mode`` means for an engine that has compiled ``kernels`` and a pure-PyTorch ``fallback``.

    Args:
        mode: the mode asked for; "fused" is "compiled" here; modes other than these and "auto" are returned
            unchanged.
        device_type: where the tensors are ("cpu", "cuda", ...).
        kernels: the engine's compiled kernels.
        fallback: the mode "auto" means when the kernels cannot run (e.g. "scan" or "loop").

    Returns:
        "compiled" or a mode of the fallback path.

    Raises:
        CompiledUnavailableError: "compiled" or "fused" on another device than the CPU, or without working kernels.
    """
    if mode in ("compiled", "fused"):
        if device_type != "cpu":
            raise CompiledUnavailableError(f"mode {mode!r} runs on the CPU only, got a tensor on {device_type!r}")
        kernels.require()
        return "compiled"
    if mode != "auto":
        return mode
    if device_type != "cpu":
        return fallback
    if kernels.available():
        return "compiled"
    if kernels.name not in _FALLBACKS_LOGGED:
        _FALLBACKS_LOGGED.add(kernels.name)
        logger.warning("the %s is unavailable, so mode 'auto' runs %r instead (%s for the compiled one)",
                       kernels.name, fallback, INSTALL_HINT)
    return fallback


def prefer_sleeping_threads() -> None:
    """Put numba's OpenMP threading layer last (TBB, then workqueue), unless the user chose a layer.

    Why: numba otherwise picks OpenMP, whose idle threads spin-wait. When other processes hold the cores
    (a shared machine, training jobs beside a simulation), every parallel launch then waits for the end of a
    scheduler time slice: on 2 loaded cores a (30, 512, 6) forward took 8 ms under OpenMP and 0.25 ms under
    workqueue, whose threads sleep; large problems ran at the same speed under both. Only effective before
    numba's first parallel launch in the process.
    """
    if numba is None or "NUMBA_THREADING_LAYER" in os.environ or "NUMBA_THREADING_LAYER_PRIORITY" in os.environ:
        return
    numba.config.THREADING_LAYER_PRIORITY = ["tbb", "workqueue", "omp"]


def launch_on_threads(threads: int, kernel: Callable[..., None], *args: Any) -> None:
    """Run a numba kernel on ``threads`` threads (at most numba's), under the launch lock, and restore torch's
    thread count afterwards (numba's OpenMP layer shares torch's runtime and may reset it)."""
    torch_threads = torch.get_num_threads()
    try:
        with LAUNCH_LOCK:
            numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
            kernel(*args)
    finally:
        if torch.get_num_threads() != torch_threads:
            torch.set_num_threads(torch_threads)
