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
False and :func:`diagonal_recurrence` raises ``numba_runtime.CompiledUnavailableError``. Compilation is lazy
(first use) and cached on disk by numba. Kernels run on ``torch.get_num_threads()`` threads, under
numba's TBB or workqueue threading layer rather than OpenMP unless the user chose one
(``numba_runtime.prefer_sleeping_threads``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.autograd.function import FunctionCtx, once_differentiable

from deepwiener.engines import numba_runtime
from deepwiener.engines.numba_runtime import Kernels, prange
from deepwiener.errors import DataError

__all__ = ["KERNELS", "SUPPORTED_DTYPES", "available", "diagonal_recurrence"]

SUPPORTED_DTYPES = (torch.complex64, torch.complex128, torch.float32, torch.float64)
"""Dtypes accepted by :func:`diagonal_recurrence` (``a``, ``bu`` and ``x0`` share one of them)."""

_WORK_ITEMS_PER_THREAD = 4
"""Target number of (batch row, state block) work items per thread, for load balance."""

_MIN_BLOCK = 32
"""Fewest states in one work item when rows are split into blocks."""

_PARALLEL_MIN_WORK = 1 << 15
"""Problems with fewer batch * T * n elements run on one thread (a parallel launch costs more)."""


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
# Compilation and launch
# --------------------------------------------------------------------------------------------------


def _build() -> dict[str, Callable[..., None]]:
    """Create the numba dispatchers and run them once on tiny float64 inputs."""
    kernels = {"forward": numba_runtime.jit(_forward_kernel), "backward": numba_runtime.jit(_backward_kernel)}
    a, bu, x0 = np.full((1, 3), 0.5), np.ones((1, 2, 3)), np.zeros((1, 3))
    xs = np.empty_like(bu)
    kernels["forward"](a, 0, 0, bu, x0, xs, 3)
    kernels["backward"](a, 0, 0, x0, xs, np.ones_like(xs), np.empty_like(xs), np.zeros_like(x0),
                        np.zeros((1, 3)), True, 3)
    return kernels


KERNELS = Kernels("compiled diagonal-recurrence kernel", _build)
"""The forward and adjoint kernels, built on first use (``numba_runtime``)."""


def available() -> bool:
    """Whether the compiled engine can run (numba imports and its kernels compiled). Never raises.

    The first call compiles the kernels (seconds; cached on disk by numba afterwards).
    """
    return KERNELS.available()


def _launch(kernel: str, shape: tuple[int, int, int], *args: Any) -> None:
    """Run ``kernel(*args, block)`` for a (batch, T, n) problem on torch's thread count (one thread below
    ``_PARALLEL_MIN_WORK`` elements)."""
    batch, steps, n = shape
    threads = 1 if batch * steps * n < _PARALLEL_MIN_WORK else torch.get_num_threads()
    threads = max(1, min(threads, numba_runtime.numba.config.NUMBA_NUM_THREADS))
    KERNELS.launch(kernel, threads, *args, _block_size(batch, n, threads))


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
        "forward",
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
        "backward",
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
        numba_runtime.CompiledUnavailableError: if numba is missing or the kernels do not compile.
    """
    batch, _, n = _validate(a, bu, x0)
    KERNELS.require()
    device = bu.device
    x0 = x0.expand(batch, n)
    xs = _DiagonalRecurrence.apply(_cpu_contiguous(a), _cpu_contiguous(bu), _cpu_contiguous(x0))
    return xs.to(device)
