"""Compiled CPU kernel for the diagonal linear recurrence, with a hand-written backward pass.

The recurrence, per batch row and per state (all products are elementwise over the ``n`` states)::

    x[0]   = x0
    x[k+1] = a[k] * x[k] + bu[k],      k = 0 .. T-1
    X[k]   = x[k+1]                    (the state *after* consuming input k)

``a[k]`` is either one vector ``a`` for all steps and batch rows (time-invariant, LTI layers) or a
per-row, per-step tensor (time-varying, selective layers).

Backward (adjoint) pass. With PyTorch's complex-gradient convention (a gradient is dL/d(conj z)) and
``gX = dL/d(conj X)``, the adjoint ``mu[k] = dL/d(conj x[k+1])`` runs the same recurrence backwards
with ``conj(a)``::

    mu[T-1] = gX[T-1]
    mu[k]   = gX[k] + conj(a[k+1]) * mu[k+1],      k = T-2 .. 0
    grad_bu[k]  = mu[k]
    grad_a[k]   = conj(x[k]) * mu[k]                (time-varying a)
    grad_a      = sum over batch and k of conj(x[k]) * mu[k]   (time-invariant a)
    grad_x0     = conj(a[0]) * mu[0]

For real dtypes the conjugations are no-ops.

The kernels are numba ``@njit(parallel=True)`` functions, parallel over (batch row, block of
states) with ``prange`` and sequential in time; the inner loop runs over contiguous states of one
time step. numba is optional: without it (or if compilation fails) :func:`available` returns
False and :func:`diagonal_recurrence` raises :class:`CompiledUnavailableError`. Compilation is lazy
(first use) and cached on disk by numba. Kernels run on ``torch.get_num_threads()`` threads, under
numba's TBB or workqueue threading layer rather than OpenMP unless the user chose one (see
:func:`prefer_sleeping_threads`).
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.autograd.function import FunctionCtx, once_differentiable

from deepwiener.errors import DataError, DeepWienerError

try:
    import numba
    from numba import prange
except Exception:  # numba missing or broken (e.g. incompatible numpy): the engine is unavailable
    numba = None
    prange = range

__all__ = ["SUPPORTED_DTYPES", "CompiledUnavailableError", "available", "diagonal_recurrence"]

logger = logging.getLogger(__name__)

SUPPORTED_DTYPES = (torch.complex64, torch.complex128, torch.float32, torch.float64)
"""Dtypes accepted by :func:`diagonal_recurrence` (``a``, ``bu`` and ``x0`` share one of them)."""

_WORK_ITEMS_PER_THREAD = 4
"""Target number of (batch row, state block) work items per thread, for load balance."""

_MIN_BLOCK = 32
"""Fewest states in one work item when rows are split into blocks."""

_PARALLEL_MIN_WORK = 1 << 15
"""Problems with fewer batch * T * n elements run on one thread (a parallel launch costs more)."""


class CompiledUnavailableError(DeepWienerError, RuntimeError):
    """The compiled engine cannot run: numba is not installed or its kernels failed to compile."""


# --------------------------------------------------------------------------------------------------
# Kernels (plain Python here; compiled with numba on first use). Arrays are C-contiguous.
# ``a`` is 2-D (rows, n); the row used at batch b, step k is ``b * asb + k * ask``: (asb, ask) is
# (0, 0) for time-invariant a (one row) and (T, 1) for time-varying a (rows = batch * T).
# ``ga`` (the gradient of a) is (batch, n) per-row partial sums when a is time-invariant, else
# (batch * T, n) with one row per (b, k), like ``a``.
# --------------------------------------------------------------------------------------------------


def _forward_kernel(a, asb, ask, bu, x0, out, block):  # pragma: no cover - runs compiled
    """X[b, k] = a[k] * X[b, k-1] + bu[b, k] with X[b, -1] = x0[b]; writes ``out`` (batch, T, n)."""
    batch, steps, n = bu.shape
    n_blocks = (n + block - 1) // block
    if steps == 0:
        return
    for item in prange(batch * n_blocks):
        b = item // n_blocks
        j0 = (item % n_blocks) * block
        j1 = min(j0 + block, n)
        r = b * asb
        for j in range(j0, j1):
            out[b, 0, j] = a[r, j] * x0[b, j] + bu[b, 0, j]
        for k in range(1, steps):
            r = b * asb + k * ask
            for j in range(j0, j1):
                out[b, k, j] = a[r, j] * out[b, k - 1, j] + bu[b, k, j]


def _backward_kernel(a, asb, ask, x0, xs, gx, mu, gx0, ga, need_a, block):  # pragma: no cover
    """Adjoint pass: writes ``mu`` (= grad_bu, (batch, T, n)), ``gx0`` (batch, n) and, if ``need_a``,
    ``ga``: summed into its zero-initialised rows (time-invariant a) or written per step.

    Memory is walked strictly downwards (states too): rows visited in descending order with an
    ascending inner loop measured ~4x slower (hardware prefetch).
    """
    batch, steps, n = xs.shape
    n_blocks = (n + block - 1) // block
    if steps == 0:
        return
    for item in prange(batch * n_blocks):
        b = item // n_blocks
        j0 = (item % n_blocks) * block
        j1 = min(j0 + block, n)
        for j in range(j1 - 1, j0 - 1, -1):
            mu[b, steps - 1, j] = gx[b, steps - 1, j]
        for k in range(steps - 1, 0, -1):
            if need_a and ask == 0:
                for j in range(j1 - 1, j0 - 1, -1):
                    ga[b, j] += xs[b, k - 1, j].conjugate() * mu[b, k, j]
            elif need_a:
                g = b * steps + k
                for j in range(j1 - 1, j0 - 1, -1):
                    ga[g, j] = xs[b, k - 1, j].conjugate() * mu[b, k, j]
            r = b * asb + k * ask
            for j in range(j1 - 1, j0 - 1, -1):
                mu[b, k - 1, j] = gx[b, k - 1, j] + a[r, j].conjugate() * mu[b, k, j]
        if need_a and ask == 0:
            for j in range(j1 - 1, j0 - 1, -1):
                ga[b, j] += x0[b, j].conjugate() * mu[b, 0, j]
        elif need_a:
            for j in range(j1 - 1, j0 - 1, -1):
                ga[b * steps, j] = x0[b, j].conjugate() * mu[b, 0, j]
        r = b * asb
        for j in range(j1 - 1, j0 - 1, -1):
            gx0[b, j] = a[r, j].conjugate() * mu[b, 0, j]


# --------------------------------------------------------------------------------------------------
# Lazy compilation and availability
# --------------------------------------------------------------------------------------------------


@dataclass
class _Engine:
    """Compilation state: the numba dispatchers once built, or a failure flag."""

    forward: Callable[..., None] | None = None
    backward: Callable[..., None] | None = None
    failed: bool = False


_ENGINE = _Engine()


def _disable(exc: BaseException) -> None:
    """Mark the engine unavailable and log the reason once."""
    if not _ENGINE.failed:
        logger.warning("compiled diagonal-recurrence engine disabled: %s: %s", type(exc).__name__, exc)
    _ENGINE.failed = True


LAUNCH_LOCK = threading.Lock()
"""Serialises kernel launches: the workqueue threading layer aborts the process on concurrent launches."""


def prefer_sleeping_threads() -> None:
    """Put numba's OpenMP threading layer last (TBB, then workqueue), unless the user chose a layer.

    Why: numba otherwise picks OpenMP, whose idle threads spin-wait. When other processes hold the cores
    (a shared machine, training jobs beside a simulation), every parallel launch then waits for the end of a
    scheduler time slice: on 2 loaded cores a (30, 512, 6) forward took 8 ms under OpenMP and 0.25 ms under
    workqueue, whose threads sleep; large problems ran at the same speed under both. Only effective before
    numba's first parallel launch in the process.
    """
    if "NUMBA_THREADING_LAYER" in os.environ or "NUMBA_THREADING_LAYER_PRIORITY" in os.environ:
        return
    numba.config.THREADING_LAYER_PRIORITY = ["tbb", "workqueue", "omp"]


def _build() -> None:
    """Create the numba dispatchers and compile them once on tiny float64 inputs."""
    prefer_sleeping_threads()
    jit = numba.njit(parallel=True, cache=True, fastmath=False)
    _ENGINE.forward = jit(_forward_kernel)
    _ENGINE.backward = jit(_backward_kernel)
    a = torch.full((3,), 0.5, dtype=torch.float64)
    bu = torch.ones(1, 2, 3, dtype=torch.float64)
    x0 = torch.zeros(1, 3, dtype=torch.float64)
    xs = _forward(a, bu, x0)
    _backward(a, x0, xs, torch.ones_like(xs), need_a=True)


def available() -> bool:
    """Whether the compiled engine can run (numba imports and its kernels compiled). Never raises.

    The first call compiles the kernels (seconds; cached on disk by numba afterwards).
    """
    if numba is None or _ENGINE.failed:
        return False
    if _ENGINE.forward is None:
        try:
            _build()
        except Exception as exc:  # any compile/runtime failure just disables the engine
            _ENGINE.forward = _ENGINE.backward = None
            _disable(exc)
            return False
    return True


def _require_engine() -> None:
    """Raise :class:`CompiledUnavailableError` unless :func:`available`."""
    if not available():
        reason = "numba is not installed" if numba is None else "its numba kernels failed to compile"
        raise CompiledUnavailableError(
            f"the compiled diagonal-recurrence engine is unavailable: {reason} "
            "(install the 'fast' extra: pip install 'deepwiener[fast]')"
        )


def _launch(kernel: Callable[..., None], shape: tuple[int, int, int], *args: Any) -> None:
    """Run ``kernel(*args, block)`` for a (batch, T, n) problem; a numba compile error disables the engine.

    Uses torch's thread count (one thread below ``_PARALLEL_MIN_WORK`` elements). numba's OpenMP
    threading layer shares torch's OpenMP runtime and resets its thread count when it starts, so
    torch's setting is restored afterwards.
    """
    batch, steps, n = shape
    threads = 1 if batch * steps * n < _PARALLEL_MIN_WORK else torch.get_num_threads()
    threads = max(1, min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        launch_on_threads(threads, kernel, *args, _block_size(batch, n, threads))
    except numba.core.errors.NumbaError as exc:
        _disable(exc)
        raise CompiledUnavailableError(f"compiling the diagonal-recurrence kernel failed: {exc}") from exc


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


# --------------------------------------------------------------------------------------------------
# Array plumbing
# --------------------------------------------------------------------------------------------------


def _block_size(batch: int, n: int, threads: int) -> int:
    """States per work item: whole rows when the batch alone keeps the threads busy, else split
    into blocks of at least ``_MIN_BLOCK`` states (narrower blocks measured slower)."""
    target = _WORK_ITEMS_PER_THREAD * threads
    if threads == 1 or batch >= target:
        return max(1, n)
    n_blocks = min(math.ceil(target / max(batch, 1)), max(1, n // _MIN_BLOCK))
    return max(1, math.ceil(n / n_blocks))


def _a_layout(a: torch.Tensor, steps: int) -> tuple[np.ndarray, int, int]:
    """``a`` as a (rows, n) array and its (batch, step) row strides: (0, 0) LTI, (T, 1) time-varying."""
    if a.dim() == 1:
        return a.detach().numpy().reshape(1, -1), 0, 0
    return a.detach().numpy().reshape(-1, a.shape[-1]), steps, 1


def _forward(a: torch.Tensor, bu: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """Run the forward kernel on validated, contiguous CPU tensors.

    Args:
        a: (n,) or (batch, T, n).
        bu: (batch, T, n).
        x0: (batch, n).

    Returns:
        X: (batch, T, n), the states after each step.
    """
    batch, steps, n = bu.shape
    a_np, asb, ask = _a_layout(a, steps)
    out = torch.empty_like(bu)
    _launch(
        _ENGINE.forward,
        (batch, steps, n),
        a_np,
        asb,
        ask,
        bu.detach().numpy(),
        x0.detach().numpy(),
        out.numpy(),
    )
    return out


def _backward(
    a: torch.Tensor, x0: torch.Tensor, xs: torch.Tensor, gx: torch.Tensor, need_a: bool
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """Run the adjoint kernel on contiguous CPU tensors.

    Args:
        a: (n,) or (batch, T, n).
        x0: (batch, n).
        xs: (batch, T, n), the forward output X.
        gx: (batch, T, n), dL/d(conj X).
        need_a: whether to compute the gradient of ``a``.

    Returns:
        (grad_a or None, grad_bu, grad_x0) with the shapes of ``a``, ``xs`` and ``x0``.
    """
    batch, steps, n = xs.shape
    a_np, asb, ask = _a_layout(a, steps)
    mu = torch.empty_like(xs)
    gx0 = torch.zeros_like(x0)  # stays zero when T == 0
    time_varying = a.dim() == 3
    if not need_a:
        ga = torch.empty(0, n, dtype=xs.dtype)
    elif time_varying:
        ga = torch.empty(batch * steps, n, dtype=xs.dtype)
    else:
        ga = torch.zeros(batch, n, dtype=xs.dtype)
    _launch(
        _ENGINE.backward,
        (batch, steps, n),
        a_np,
        asb,
        ask,
        x0.numpy(),
        xs.numpy(),
        gx.numpy(),
        mu.numpy(),
        gx0.numpy(),
        ga.numpy(),
        need_a,
    )
    if not need_a:
        return None, mu, gx0
    return (ga.view(batch, steps, n) if time_varying else ga.sum(0)), mu, gx0


class _DiagonalRecurrence(torch.autograd.Function):
    """Autograd wrapper; inputs are validated, contiguous CPU tensors with x0 of shape (batch, n)."""

    @staticmethod
    def forward(ctx: FunctionCtx, a: torch.Tensor, bu: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        xs = _forward(a, bu, x0)
        ctx.save_for_backward(a, x0, xs)
        return xs

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, gx: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        a, x0, xs = ctx.saved_tensors
        need_a, need_bu, need_x0 = ctx.needs_input_grad
        grad_a, grad_bu, grad_x0 = _backward(a.detach(), x0.detach(), xs.detach(), _cpu_contiguous(gx.detach()), need_a)
        return grad_a, (grad_bu if need_bu else None), (grad_x0 if need_x0 else None)


# --------------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------------


def _cpu_contiguous(t: torch.Tensor) -> torch.Tensor:
    """A differentiable, contiguous, conj/neg-resolved CPU version of ``t`` (no copy if already so)."""
    return t.to("cpu").resolve_conj().resolve_neg().contiguous()


def _broadcasts_to(t: torch.Tensor, shape: tuple[int, int]) -> bool:
    """Whether ``t`` (at most 2-D) broadcasts to ``shape``."""
    try:
        return t.dim() <= 2 and torch.broadcast_shapes(t.shape, shape) == shape
    except RuntimeError:
        return False


def _validate(a: torch.Tensor, bu: torch.Tensor, x0: torch.Tensor) -> tuple[int, int, int]:
    """Check shapes, dtypes and devices; return (batch, T, n). Raises DataError (a ValueError)."""
    for name, t in (("a", a), ("bu", bu), ("x0", x0)):
        if not isinstance(t, torch.Tensor):
            raise DataError(f"diagonal_recurrence: {name} must be a torch.Tensor, got {type(t).__name__}")
    if bu.dim() != 3:
        raise DataError(f"diagonal_recurrence: bu must have shape (batch, T, n), got {tuple(bu.shape)}")
    batch, steps, n = bu.shape
    if tuple(a.shape) not in ((n,), (batch, steps, n)):
        raise DataError(
            f"diagonal_recurrence: a must have shape (n,) = ({n},) or (batch, T, n) = "
            f"{(batch, steps, n)}, got {tuple(a.shape)}"
        )
    if not _broadcasts_to(x0, (batch, n)):
        raise DataError(
            f"diagonal_recurrence: x0 must have shape (batch, n) = {(batch, n)} (or broadcast to it), "
            f"got {tuple(x0.shape)}"
        )
    dtypes = {a.dtype, bu.dtype, x0.dtype}
    if len(dtypes) != 1 or bu.dtype not in SUPPORTED_DTYPES:
        raise DataError(
            "diagonal_recurrence: a, bu and x0 must share one dtype among "
            f"{', '.join(str(d) for d in SUPPORTED_DTYPES)}; got a={a.dtype}, bu={bu.dtype}, x0={x0.dtype}"
        )
    if len({a.device, bu.device, x0.device}) != 1:
        raise DataError(
            f"diagonal_recurrence: a, bu and x0 must be on one device; got a={a.device}, bu={bu.device}, x0={x0.device}"
        )
    return batch, steps, n


def diagonal_recurrence(a: torch.Tensor, bu: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """Run ``x[k+1] = a[k] * x[k] + bu[k]`` for k = 0..T-1 from ``x0``, with the compiled CPU kernel.

    Differentiable with respect to ``a``, ``bu`` and ``x0`` (first order). Inputs on another device
    are computed on the CPU and the result is moved back to their device.

    Args:
        a: (n,) time-invariant, or (batch, T, n) time-varying diagonal dynamics.
        bu: (batch, T, n) input term.
        x0: (batch, n) initial state; anything broadcastable to (batch, n), e.g. (n,), is accepted.

    Returns:
        X: (batch, T, n) with ``X[:, k] = x[k+1]``, the state after consuming input k.

    Raises:
        DataError: (a ValueError) on mismatched shapes, dtypes or devices.
        CompiledUnavailableError: (a RuntimeError) if numba is missing or the kernels do not compile.
    """
    batch, _, n = _validate(a, bu, x0)
    _require_engine()
    device = bu.device
    x0 = x0.expand(batch, n)
    xs = _DiagonalRecurrence.apply(_cpu_contiguous(a), _cpu_contiguous(bu), _cpu_contiguous(x0))
    return xs.to(device)
