"""The compiled streaming kernel: one sample (or a whole record) of a deep Wiener stack given as flat arrays.

``model.stepper()`` runs every block through PyTorch, so each sample pays the Python and dispatch overhead of a
few dozen small tensor operations (a few hundred microseconds). This kernel runs a whole sample, or a whole
record, in one numba-compiled function over flat float64/complex128 arrays (:class:`StreamParams`; a few
microseconds per sample). The model side (``models.deepwiener_stream``) flattens a model into these arrays and
wraps the kernel in a streamer. What runs per sample (the scalers are folded into the encoder and decoder)::

    v   = W_enc' u + b_enc'                          the input scaler folded into the encoder
    block l:  w   = layer_norm(v) or v
              eta = Re(C x) + D w ; x <- A x + B w  (readout "current": read, then update)
              x <- A x + B w ; eta = Re(C x) + D w  (readout "next": update, then read)
              v   = sigma(eta + b) + F v             F = I, a matrix, or 0 (skip "none")
    y   = W_dec' v + b_dec'                          the output scaler folded into the decoder

``A`` is block diagonal: G blocks of m x m per block (1 x 1 for diagonal systems). Without numba the kernel is
unavailable (:data:`KERNELS`; ``numba_runtime``'s policy applies).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from deepwiener.engines import numba_runtime
from deepwiener.engines.numba_runtime import Kernels

__all__ = ["ACTIVATIONS", "KERNELS", "SKIPS", "StreamParams", "bind", "run"]


# Activation codes of the kernel (one per block).
_RELU, _TANH, _ELU, _GELU, _GELU_TANH, _POLY, _LINEAR_TANH, _IDENTITY = range(8)
ACTIVATIONS: dict[str, int] = {"relu": _RELU, "tanh": _TANH, "elu": _ELU, "gelu": _GELU, "gelu_tanh": _GELU_TANH,
                               "poly": _POLY, "linear_tanh": _LINEAR_TANH, "identity": _IDENTITY}
"""The activation codes by name (``flags[:, 2]``)."""
# Skip codes.
_SKIP_NONE, _SKIP_IDENTITY, _SKIP_LINEAR = range(3)
SKIPS: dict[str, int] = {"none": _SKIP_NONE, "identity": _SKIP_IDENTITY, "linear": _SKIP_LINEAR}
"""The skip codes by name (``flags[:, 3]``)."""
# Columns of the per-block integer flags.
_F_NORM, _F_NEXT, _F_ACT, _F_SKIP = range(4)

_SQRT1_2 = 1.0 / math.sqrt(2.0)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


# --------------------------------------------------------------------------------------------------
# Kernel (plain Python here; numba dispatchers at import, compiled on first call)
# --------------------------------------------------------------------------------------------------


def _jit(fn: Any) -> Any:
    """The numba dispatcher of ``fn`` (compiled on first call, cached on disk); without numba ``fn`` itself, which
    is never run (:data:`KERNELS` is then unavailable)."""
    return fn if numba_runtime.numba is None else numba_runtime.jit(fn, parallel=False)


@_jit
def _activation(z: float, kind: int, c1: float, c2: float) -> float:  # pragma: no cover - runs compiled
    """sigma(z) for an activation code; ``c1`` is ELU's alpha, poly's a2 or linear_tanh's a; ``c2`` poly's a3."""
    if kind == _RELU:
        return max(z, 0.0)
    if kind == _TANH:
        return math.tanh(z)
    if kind == _ELU:
        return z if z > 0.0 else c1 * math.expm1(z)
    if kind == _GELU:
        return 0.5 * z * (1.0 + math.erf(z * _SQRT1_2))
    if kind == _GELU_TANH:
        return 0.5 * z * (1.0 + math.tanh(_SQRT_2_OVER_PI * (z + 0.044715 * z * z * z)))
    if kind == _LINEAR_TANH:
        return z + c1 * math.tanh(z)
    if kind == _IDENTITY:
        return z
    return z + c1 * z * z + c2 * z * z * z


@_jit
def _readout(C, D, x, w, eta):  # pragma: no cover - runs compiled
    """eta = Re(C x) + D w. C: (d, N) complex, D: (d, d), x: (N,) complex, w: (d,) -> eta (d,)."""
    for i in range(eta.shape[0]):
        s = 0.0
        for k in range(x.shape[0]):
            s += C[i, k].real * x[k].real - C[i, k].imag * x[k].imag
        for j in range(w.shape[0]):
            s += D[i, j] * w[j]
        eta[i] = s


@_jit
def _sample(  # pragma: no cover - runs compiled
    u, y, x, xw, v, w, eta, enc_W, enc_b, dec_W, dec_b, flags, eps, norm, A, B, C, D, act, F
):
    """One sample through the whole model; updates ``x`` in place.

    Args:
        u: (n_u,) input, y: (n_y,) output (written).
        x: (L, N) complex state; xw: (N,) complex, v, w, eta: (d,) work buffers.
        enc_W, enc_b: (d, n_u), (d,); dec_W, dec_b: (n_y, d), (n_y,) (scalers folded in).
        flags: (L, 4) int64: layer norm on, readout "next", activation code, skip code.
        eps: (L,) layer-norm epsilon; norm: (L, 2, d) layer-norm weight and bias.
        A: (L, G, m, m) complex blocks (N = G m); B: (L, N, d) complex; C: (L, d, N) complex; D: (L, d, d).
        act: (L, 3, d) nonlinearity bias, c1, c2; F: (L, d, d) linear skip.
    """
    n_blocks, groups, m, _ = A.shape
    d = v.shape[0]
    for i in range(d):
        s = enc_b[i]
        for j in range(u.shape[0]):
            s += enc_W[i, j] * u[j]
        v[i] = s
    for layer in range(n_blocks):
        if flags[layer, _F_NORM]:
            mean = 0.0
            for i in range(d):
                mean += v[i]
            mean /= d
            var = 0.0
            for i in range(d):
                var += (v[i] - mean) * (v[i] - mean)
            scale = 1.0 / math.sqrt(var / d + eps[layer])
            for i in range(d):
                w[i] = (v[i] - mean) * scale * norm[layer, 0, i] + norm[layer, 1, i]
        else:
            for i in range(d):
                w[i] = v[i]
        xl = x[layer]
        if not flags[layer, _F_NEXT]:
            _readout(C[layer], D[layer], xl, w, eta)
        for g in range(groups):
            for i in range(m):
                k = g * m + i
                s = 0j
                for j in range(m):
                    s += A[layer, g, i, j] * xl[g * m + j]
                for j in range(d):
                    s += B[layer, k, j] * w[j]
                xw[k] = s
        for k in range(xl.shape[0]):
            xl[k] = xw[k]
        if flags[layer, _F_NEXT]:
            _readout(C[layer], D[layer], xl, w, eta)
        kind, skip = flags[layer, _F_ACT], flags[layer, _F_SKIP]
        for i in range(d):
            eta[i] = _activation(eta[i] + act[layer, 0, i], kind, act[layer, 1, i], act[layer, 2, i])
        if skip == _SKIP_LINEAR:
            for i in range(d):
                s = 0.0
                for j in range(d):
                    s += F[layer, i, j] * v[j]
                w[i] = s
            for i in range(d):
                v[i] = eta[i] + w[i]
        elif skip == _SKIP_IDENTITY:
            for i in range(d):
                v[i] += eta[i]
        else:
            for i in range(d):
                v[i] = eta[i]
    for o in range(y.shape[0]):
        s = dec_b[o]
        for i in range(d):
            s += dec_W[o, i] * v[i]
        y[o] = s


@_jit
def _run(u, x, enc_W, enc_b, dec_W, dec_b, flags, eps, norm, A, B, C, D, act, F):  # pragma: no cover - compiled
    """All samples of ``u`` (T, n_u) from the state ``x`` (L, N) (updated in place) -> y (T, n_y)."""
    d = enc_b.shape[0]
    y = np.empty((u.shape[0], dec_b.shape[0]))
    xw = np.empty(x.shape[1], dtype=np.complex128)
    v, w, eta = np.empty(d), np.empty(d), np.empty(d)
    for t in range(u.shape[0]):
        _sample(u[t], y[t], x, xw, v, w, eta, enc_W, enc_b, dec_W, dec_b, flags, eps, norm, A, B, C, D, act, F)
    return y


@_jit
def _one(u, y, x, work, enc_W, enc_b, dec_W, dec_b, flags, eps, norm, A, B, C, D, act, F):  # pragma: no cover
    """One sample u (n_u,) -> y (n_y,) (written) from the state ``x`` (L, N) (updated in place), with the scratch
    ``work`` (:func:`bind`) instead of fresh arrays."""
    d = enc_b.shape[0]
    xw, vwe = work[0], work[1].real
    _sample(u, y, x, xw, vwe[0:d], vwe[d : 2 * d], vwe[2 * d : 3 * d], enc_W, enc_b, dec_W, dec_b, flags, eps, norm,
            A, B, C, D, act, F)


class StreamParams(NamedTuple):
    """The model as flat arrays, in the kernel's argument order (shapes in :func:`_sample`)."""

    enc_W: np.ndarray
    enc_b: np.ndarray
    dec_W: np.ndarray
    dec_b: np.ndarray
    flags: np.ndarray
    eps: np.ndarray
    norm: np.ndarray
    A: np.ndarray
    B: np.ndarray
    C: np.ndarray
    D: np.ndarray
    act: np.ndarray
    F: np.ndarray


def _build() -> dict[str, Callable[..., Any]]:
    """Compile the kernel by running it once on a one-block, one-channel model."""
    one = np.ones((1, 1))
    params = StreamParams(enc_W=one, enc_b=np.zeros(1), dec_W=one, dec_b=np.zeros(1),
                          flags=np.zeros((1, 4), dtype=np.int64), eps=np.zeros(1), norm=np.ones((1, 2, 1)),
                          A=np.full((1, 1, 1, 1), 0.5 + 0j), B=np.ones((1, 1, 1), dtype=np.complex128),
                          C=np.ones((1, 1, 1), dtype=np.complex128), D=np.zeros((1, 1, 1)), act=np.zeros((1, 3, 1)),
                          F=np.zeros((1, 1, 1)))
    _run(np.ones((2, 1)), np.zeros((1, 1), dtype=np.complex128), *params)
    return {"run": _run}


KERNELS = Kernels("compiled streaming kernel", _build)
"""The streaming kernel, built on first use (``numba_runtime``)."""


def bind(params: StreamParams, x: np.ndarray) -> Callable[[np.ndarray, np.ndarray], None]:
    """A one-sample call for one parameter set and one state array: ``one(u, y)`` with u (n_u,) float64 writes
    y (n_y,) float64 and advances ``x`` in place, without allocating (its scratch is bound here).

    The compiled overload for these argument types is looked up once and called directly: numba's type dispatch of
    seventeen arguments costs about as much as the sample's arithmetic. Where the overload is not found (another
    numba), the dispatcher is called.

    Raises:
        numba_runtime.CompiledUnavailableError: the kernel cannot run (numba missing).
    """
    KERNELS.require()
    d = params.enc_b.shape[0]
    work = np.zeros((2, max(x.shape[1], 3 * d)), dtype=np.complex128)
    u, y = np.zeros(params.enc_W.shape[1]), np.zeros(params.dec_b.shape[0])
    _one(u, y, x.copy(), work, *params)  # compiled (or loaded from the cache) for these types
    overload = _one.overloads.get(tuple(numba_runtime.numba.typeof(a) for a in (u, y, x, work, *params)))
    kernel = _one if overload is None else overload.entry_point

    def one(u: np.ndarray, y: np.ndarray) -> None:
        kernel(u, y, x, work, *params)

    return one


def run(params: StreamParams, u: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Simulate a record with the compiled kernel.

    Args:
        params: the model as flat arrays.
        u: (T, n_u) float64 input, C-contiguous.
        x: (L, N) complex128 state of every block, updated in place.

    Returns:
        y: (T, n_y) float64.

    Raises:
        numba_runtime.CompiledUnavailableError: the kernel cannot run (numba missing).
    """
    return KERNELS["run"](u, x, *params)
