"""Compiled CPU kernel for the loop of an LFR model whose static map is a perceptron, with an analytic backward.

The loop (``lfr.LFRModel``, normalised units; every product a small dense matrix-vector product)::

    z[k]   = F x[k] + direct[k] + b                      (n_w,)  the map's input (b: the map's bias)
    a[k]   = W1 z[k] + c1                                (h,)    pre-activation
    w[k]   = W2 gelu(a[k]) + c2                          (n_w,)  the map's output
    x[k+1] = A x[k] + E w[k] + drive[k]                  (n_x,)

Outputs: the states ``X[k] = x[k]`` (k = 0..T-1), the map outputs ``W[k] = w[k]`` and the final state x[T].

Backward (reverse-mode adjoint). With ``gX``, ``gW``, ``gT`` the gradients of the loss with respect to the
outputs and ``lam = dL/dx[k+1]`` (from ``lam = gT`` at k = T-1), for k = T-1 .. 0::

    gw       = gW[k] + E^T lam                 grad_E  += lam w[k]^T    grad_A += lam x[k]^T   grad_drive[k] = lam
    ga       = (W2^T gw) * gelu'(a[k])         grad_W2 += gw gelu(a[k])^T                       grad_c2 += gw
    gz       = W1^T ga                         grad_W1 += ga z[k]^T     grad_c1 += ga
    grad_direct[k] = gz, grad_b += gz, grad_F += gz x[k]^T
    lam      = gX[k] + A^T lam + F^T gz        (dL/dx[k])

and ``grad_x0`` is the last ``lam``. gelu is the exact one, ``a Phi(a)``, with derivative
``Phi(a) + a phi(a)``. The kernels run in parallel over batch rows (numba ``prange``), each row keeping its
own partial sums of the parameter gradients (summed afterwards, so no two threads write one number). Building,
availability and launching are ``numba_runtime``'s.
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

__all__ = ["KERNELS", "available", "perceptron_loop"]

_SQRT_HALF = math.sqrt(0.5)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _forward_kernel(drive, direct, x0, A, F, E, b, W1, c1, W2, c2, X, W, Z, P, xT):  # pragma: no cover - compiled
    """Writes X, W (outputs), Z (map inputs z + b), P (pre-activations) and xT; shapes as in the docstring."""
    batch, steps, n_x = drive.shape
    n_w = direct.shape[2]
    hidden = c1.shape[0]
    for r in prange(batch):
        x = x0[r].copy()
        nxt = np.empty_like(x)
        for k in range(steps):
            for i in range(n_x):
                X[r, k, i] = x[i]
            for i in range(n_w):
                s = direct[r, k, i] + b[i]
                for j in range(n_x):
                    s += F[i, j] * x[j]
                Z[r, k, i] = s
            for m in range(hidden):
                s = c1[m]
                for i in range(n_w):
                    s += W1[m, i] * Z[r, k, i]
                P[r, k, m] = s
            for i in range(n_w):
                s = c2[i]
                for m in range(hidden):
                    a = P[r, k, m]
                    s += W2[i, m] * (0.5 * a * (1.0 + math.erf(a * _SQRT_HALF)))
                W[r, k, i] = s
            for i in range(n_x):
                s = drive[r, k, i]
                for j in range(n_x):
                    s += A[i, j] * x[j]
                for j in range(n_w):
                    s += E[i, j] * W[r, k, j]
                nxt[i] = s
            x[:] = nxt
        for i in range(n_x):
            xT[r, i] = x[i]


def _backward_kernel(A, F, E, W1, W2, X, W, Z, P, gX, gW, gT,  # pragma: no cover - runs compiled
                     g_drive, g_direct, g_x0, gA, gF, gE, gb, gW1, gc1, gW2, gc2):
    """Writes the input gradients and, per batch row, the parameter gradients' partial sums (zeroed on entry)."""
    batch, steps, n_x = X.shape
    n_w = W.shape[2]
    hidden = P.shape[2]
    for r in prange(batch):
        lam = gT[r].copy()
        gw = np.empty(n_w, dtype=X.dtype)
        ga = np.empty(hidden, dtype=X.dtype)
        gz = np.empty(n_w, dtype=X.dtype)
        prev = np.empty(n_x, dtype=X.dtype)
        for k in range(steps - 1, -1, -1):
            for i in range(n_x):
                g_drive[r, k, i] = lam[i]
                for j in range(n_x):
                    gA[r, i, j] += lam[i] * X[r, k, j]
                for j in range(n_w):
                    gE[r, i, j] += lam[i] * W[r, k, j]
            for j in range(n_w):
                s = gW[r, k, j]
                for i in range(n_x):
                    s += E[i, j] * lam[i]
                gw[j] = s
                gc2[r, j] += s
            for m in range(hidden):
                a = P[r, k, m]
                cdf = 0.5 * (1.0 + math.erf(a * _SQRT_HALF))
                act = a * cdf
                s = 0.0
                for i in range(n_w):
                    gW2[r, i, m] += gw[i] * act
                    s += W2[i, m] * gw[i]
                ga[m] = s * (cdf + a * _INV_SQRT_2PI * math.exp(-0.5 * a * a))
                gc1[r, m] += ga[m]
            for i in range(n_w):
                s = 0.0
                for m in range(hidden):
                    gW1[r, m, i] += ga[m] * Z[r, k, i]
                    s += W1[m, i] * ga[m]
                gz[i] = s
                g_direct[r, k, i] = s
                gb[r, i] += s
                for j in range(n_x):
                    gF[r, i, j] += s * X[r, k, j]
            for j in range(n_x):
                s = gX[r, k, j]
                for i in range(n_x):
                    s += A[i, j] * lam[i]
                for i in range(n_w):
                    s += F[i, j] * gz[i]
                prev[j] = s
            lam[:] = prev
        for j in range(n_x):
            g_x0[r, j] = lam[j]


def _build() -> dict[str, Callable[..., None]]:
    """Create the numba dispatchers and run them once, forward and backward, on tiny float64 inputs."""
    kernels = {"forward": numba_runtime.jit(_forward_kernel), "backward": numba_runtime.jit(_backward_kernel)}
    n_x, n_w, hidden, steps = 2, 1, 2, 3
    params = [np.full(shape, 0.1) for shape in _param_shapes(n_x, n_w, hidden)]
    A, F, E, b, W1, c1, W2, c2 = params
    X, W, Z, P = (np.empty((1, steps, k)) for k in (n_x, n_w, n_w, hidden))
    kernels["forward"](np.ones((1, steps, n_x)), np.ones((1, steps, n_w)), np.zeros((1, n_x)), *params, X, W, Z, P,
                       np.empty((1, n_x)))
    gradients = [np.zeros((1, steps, n_x)), np.zeros((1, steps, n_w)), np.zeros((1, n_x))]
    partial = [np.zeros((1, *shape)) for shape in _param_shapes(n_x, n_w, hidden)]
    kernels["backward"](A, F, E, W1, W2, X, W, Z, P, np.ones_like(X), np.ones_like(W), np.ones((1, n_x)), *gradients,
                        *partial)
    return kernels


KERNELS = Kernels("compiled LFR kernel", _build)
"""The forward and adjoint kernels of the loop, built on first use (``numba_runtime``)."""


def available() -> bool:
    """Whether the kernel can run (numba imports and the kernels compiled). Never raises; the first call compiles."""
    return KERNELS.available()


def _param_shapes(n_x: int, n_w: int, hidden: int) -> list[tuple[int, ...]]:
    """Shapes of A, F, E, b, W1, c1, W2, c2."""
    return [(n_x, n_x), (n_w, n_x), (n_x, n_w), (n_w,), (hidden, n_w), (hidden,), (n_w, hidden), (n_w,)]


def _launch(kernel: str, batch: int, *args: Any) -> None:
    """Run a kernel on torch's thread count, at most one thread per batch row."""
    KERNELS.launch(kernel, min(torch.get_num_threads(), batch), *args)


def _run_backward(A: torch.Tensor, F: torch.Tensor, E: torch.Tensor, W1: torch.Tensor, W2: torch.Tensor,
                  X: torch.Tensor, W: torch.Tensor, Z: torch.Tensor, P: torch.Tensor, gX: torch.Tensor,
                  gW: torch.Tensor, gT: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The backward kernel on torch tensors: (g_drive, g_direct, g_x0, gA, gF, gE, gb, gW1, gc1, gW2, gc2)."""
    batch, steps, n_x = X.shape
    n_w, hidden = W.shape[2], P.shape[2]
    new = X.new_zeros
    inputs = [new(batch, steps, n_x), new(batch, steps, n_w), new(batch, n_x)]
    partial = [new(batch, *shape) for shape in _param_shapes(n_x, n_w, hidden)]  # gA, gF, gE, gb, gW1, gc1, gW2, gc2
    arrays = [t.numpy() for t in (A, F, E, W1, W2, X, W, Z, P, gX, gW, gT, *inputs, *partial)]
    _launch("backward", batch, *arrays)
    return (*inputs, *(g.sum(0) for g in partial))


class _Loop(torch.autograd.Function):
    """Autograd wrapper of the kernels; inputs are contiguous CPU tensors of one float dtype."""

    @staticmethod
    def forward(ctx: FunctionCtx, drive: torch.Tensor, direct: torch.Tensor, x0: torch.Tensor,  # type: ignore[override]
                *params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        A, F, E, b, W1, c1, W2, c2 = params
        batch, steps, n_x = drive.shape
        new = drive.new_empty
        X, W, Z = new(batch, steps, n_x), new(batch, steps, b.shape[0]), new(batch, steps, b.shape[0])
        P, xT = new(batch, steps, c1.shape[0]), new(batch, n_x)
        arrays = [t.detach().numpy() for t in (drive, direct, x0, *params, X, W, Z, P, xT)]
        _launch("forward", batch, *arrays)
        ctx.save_for_backward(A, F, E, W1, W2, X, W, Z, P)
        return X, W, xT

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, gX: torch.Tensor, gW: torch.Tensor, gT: torch.Tensor  # type: ignore[override]
                 ) -> tuple[torch.Tensor, ...]:
        A, F, E, W1, W2, X, W, Z, P = (t.detach() for t in ctx.saved_tensors)
        grads = [torch.zeros_like(X) if g is None else g.contiguous() for g in (gX, gW)]
        g_final = torch.zeros_like(X[:, 0]) if gT is None else gT.contiguous()
        g_drive, g_direct, g_x0, gA, gF, gE, gb, gW1, gc1, gW2, gc2 = _run_backward(
            A, F, E, W1, W2, X, W, Z, P, *grads, g_final)
        return g_drive, g_direct, g_x0, gA, gF, gE, gb, gW1, gc1, gW2, gc2


def perceptron_loop(drive: torch.Tensor, direct: torch.Tensor, x0: torch.Tensor, A: torch.Tensor, F: torch.Tensor,
                    E: torch.Tensor, b: torch.Tensor, W1: torch.Tensor, c1: torch.Tensor, W2: torch.Tensor,
                    c2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run the loop of the module docstring with the compiled kernel (differentiable, first order).

    Args:
        drive: (batch, T, n_x) input term of the state update. direct: (batch, T, n_w) input term of z.
        x0: (batch, n_x) initial state. A: (n_x, n_x), F: (n_w, n_x), E: (n_x, n_w): the loop's matrices.
        b: (n_w,) the map's bias; W1: (h, n_w), c1: (h,), W2: (n_w, h), c2: (n_w,): its perceptron.
        All CPU tensors of one dtype, float32 or float64 (the caller checks; :func:`available` must be True).

    Returns:
        X: (batch, T, n_x) the states x[0..T-1], W: (batch, T, n_w) the map outputs, x[T]: (batch, n_x).
    """
    tensors = [t.contiguous() for t in (drive, direct, x0, A, F, E, b, W1, c1, W2, c2)]
    return _Loop.apply(*tensors)
