"""Fused CPU kernels for a whole deep Wiener stack: one compiled forward, one compiled adjoint, one autograd node.

The stack (every block a diagonal complex system in modal coordinates, the discretisation done before, in torch)::

    v0 = W_e u + b_e                                      encoder, n_u -> d
    block l:  x[k+1] = lam_l * x[k] + B_l v[k]            n complex modes, real input
              z[k]   = Re(C_l x_read[k]) + D_l v[k] + b_l x_read = x[k+1] (readout "next") or x[k] ("current")
              v'[k]  = sigma_l(z[k]) + F_l v[k]           static map, skip F = I, a learned matrix, or none
    y = W_d v_L + b_d                                     decoder, d -> n_y

Complex numbers are pairs of reals inside: a block's state is the real vector s = [Re x; Im x] (2n,), so
``B u`` is ``[B_re; B_im] v`` and ``Re(C x)`` is ``[C_re, -C_im] s``; tensors in and out are real.

Layout: every signal is channel-major, (channels, N) with N = T * batch and column ``t = k * batch + b`` (time
step k, batch row b), so the projections (encoder, B, C, D, skip, map matrices, decoder) are loops over long
contiguous rows and the recurrence at step k is one contiguous run of ``batch`` columns per state: both vectorise
across batch rows; threads split the output rows of a projection and the states of a recurrence.

Backward (adjoint), with gradients dL/d(real part), dL/d(imag part) of each state stacked the same way: the
map's derivative gives g_z; ``g_v = F^T g + D^T g_z + [B_re; B_im]^T mu``; the readout's adjoint is
``r = [C_re, -C_im]^T g_z``; the state adjoint runs backwards, ``mu[k] = conj(lam) mu[k+1] + r[k]`` (readout
"next"; for "current" ``r`` enters one step later and the initial state receives ``r[0]``), starting from the
gradient of the final state; ``g_lam = sum conj(x[k]) mu[k]``, ``g_x0 = conj(lam) mu[0]`` (+ ``r[0]``). Parameter
gradients are sums over all N columns, accumulated in float64.

Maps (``MAP_KINDS``): the per-channel maps of ``nonlinearities`` (identity, relu, tanh, elu, gelu exact and
tanh-approximated, poly, linear_tanh: per channel (bias, p1, p2)) and the channel-mixing glu and mlp (hidden
width h = 2d: W1 (h, d), c1 (h,), W2 (d, h), c2 (d,)). The kernels follow ``numba_runtime``'s policy (built on
first use, cached on disk, ``Kernels``); :func:`stack` is the entry point.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from deepwiener.engines import numba_runtime
from deepwiener.engines.numba_runtime import Kernels, prange

__all__ = ["KERNELS", "MAP_KINDS", "SKIP_KINDS", "StackParams", "available", "stack"]

MAP_KINDS: dict[str, int] = {"identity": 0, "relu": 1, "tanh": 2, "elu": 3, "gelu": 4, "gelu_tanh": 5, "poly": 6,
                             "linear_tanh": 7, "glu": 8, "mlp": 9}
"""The maps the kernels implement, by ``stepgraph.MAPS`` name (per channel) or nonlinearity name (glu, mlp)."""

SKIP_KINDS: dict[str, int] = {"none": 0, "identity": 1, "linear": 2}
"""The skip paths: F = 0, F = I, a learned F."""

_PARALLEL_MIN_WORK = 1 << 16
"""Stacks with fewer ``N * (d + 2n)`` elements per layer run on one thread (a parallel launch costs more)."""

_SQRT_HALF = 1 / math.sqrt(2.0)
_INV_SQRT_2PI = 1 / math.sqrt(2.0 * math.pi)
_GELU_TANH_C = math.sqrt(2.0 / math.pi)
_GELU_TANH_K = 0.044715


# --------------------------------------------------------------------------------------------------
# Building blocks (plain Python here, compiled into the kernels). Arrays are C-contiguous.
# --------------------------------------------------------------------------------------------------


def _mm(W, X, out, accumulate):  # pragma: no cover - runs compiled
    """out (m, N) (+)= W (m, p) @ X (p, N); parallel over output rows."""
    m, p = W.shape
    N = X.shape[1]
    for r in prange(m):
        if not accumulate:
            for t in range(N):
                out[r, t] = 0.0
        for j in range(p):
            w = W[r, j]
            for t in range(N):
                out[r, t] += w * X[j, t]


def _mm_t(W, G, out, accumulate):  # pragma: no cover - runs compiled
    """out (p, N) (+)= W^T @ G, W (m, p), G (m, N); parallel over output rows."""
    m, p = W.shape
    N = G.shape[1]
    for j in prange(p):
        if not accumulate:
            for t in range(N):
                out[j, t] = 0.0
        for r in range(m):
            w = W[r, j]
            for t in range(N):
                out[j, t] += w * G[r, t]


def _outer(G, X, gW, g_off, x_off, count):  # pragma: no cover - runs compiled
    """gW (m, p) += sum_t G[:, g_off + t] X[:, x_off + t]^T over t < count, summed in float64."""
    m, p = gW.shape
    for r in prange(m):
        for j in range(p):
            s = 0.0
            for t in range(count):
                s += G[r, g_off + t] * X[j, x_off + t]
            gW[r, j] += s


def _row_sums(G, out):  # pragma: no cover - runs compiled
    """out (m,) += sum over columns of G (m, N), in float64."""
    for r in prange(G.shape[0]):
        s = 0.0
        for t in range(G.shape[1]):
            s += G[r, t]
        out[r] += s


def _add_bias(out, bias):  # pragma: no cover - runs compiled
    """out (m, N) += bias (m,) per row."""
    for r in prange(out.shape[0]):
        c = bias[r]
        for t in range(out.shape[1]):
            out[r, t] += c


def _gelu(z):  # pragma: no cover - runs compiled
    return 0.5 * z * (1.0 + math.erf(z * _SQRT_HALF))


def _gelu_slope(z):  # pragma: no cover - runs compiled
    return 0.5 * (1.0 + math.erf(z * _SQRT_HALF)) + z * math.exp(-0.5 * z * z) * _INV_SQRT_2PI


def _channel_map(kind, Z, P, out):  # pragma: no cover - runs compiled
    """out = sigma(Z) for a per-channel map; Z (d, N) already holds z = eta + bias; P (3, d): bias, p1, p2."""
    d, N = Z.shape
    for o in prange(d):
        p1, p2 = P[1, o], P[2, o]
        if kind == 0:
            for t in range(N):
                out[o, t] = Z[o, t]
        elif kind == 1:
            for t in range(N):
                out[o, t] = max(Z[o, t], 0.0)
        elif kind == 2:
            for t in range(N):
                out[o, t] = math.tanh(Z[o, t])
        elif kind == 3:
            for t in range(N):
                z = Z[o, t]
                out[o, t] = z if z > 0 else p1 * math.expm1(z)
        elif kind == 4:
            for t in range(N):
                out[o, t] = _gelu(Z[o, t])
        elif kind == 5:
            for t in range(N):
                z = Z[o, t]
                out[o, t] = 0.5 * z * (1.0 + math.tanh(_GELU_TANH_C * (z + _GELU_TANH_K * z * z * z)))
        elif kind == 6:
            for t in range(N):
                z = Z[o, t]
                out[o, t] = z + p1 * z * z + p2 * z * z * z
        else:
            for t in range(N):
                z = Z[o, t]
                out[o, t] = z + p1 * math.tanh(z)


def _channel_map_adjoint(kind, Z, P, G, GZ, gP):  # pragma: no cover - runs compiled
    """GZ = sigma'(Z) * G; gP (3, d) += the sums of p1's and p2's gradients (the bias's is added by the caller)."""
    d, N = Z.shape
    for o in prange(d):
        p1, p2 = P[1, o], P[2, o]
        s1 = 0.0
        s2 = 0.0
        if kind == 0:
            for t in range(N):
                GZ[o, t] = G[o, t]
        elif kind == 1:
            for t in range(N):
                GZ[o, t] = G[o, t] if Z[o, t] > 0 else 0.0
        elif kind == 2:
            for t in range(N):
                th = math.tanh(Z[o, t])
                GZ[o, t] = G[o, t] * (1.0 - th * th)
        elif kind == 3:
            for t in range(N):
                z = Z[o, t]
                if z > 0:
                    GZ[o, t] = G[o, t]
                else:
                    GZ[o, t] = G[o, t] * p1 * math.exp(z)
                    s1 += G[o, t] * math.expm1(z)
        elif kind == 4:
            for t in range(N):
                GZ[o, t] = G[o, t] * _gelu_slope(Z[o, t])
        elif kind == 5:
            for t in range(N):
                z = Z[o, t]
                th = math.tanh(_GELU_TANH_C * (z + _GELU_TANH_K * z * z * z))
                slope = 0.5 * (1.0 + th) + 0.5 * z * (1.0 - th * th) * _GELU_TANH_C * (1.0 + 3 * _GELU_TANH_K * z * z)
                GZ[o, t] = G[o, t] * slope
        elif kind == 6:
            for t in range(N):
                z = Z[o, t]
                GZ[o, t] = G[o, t] * (1.0 + 2.0 * p1 * z + 3.0 * p2 * z * z)
                s1 += G[o, t] * z * z
                s2 += G[o, t] * z * z * z
        else:
            for t in range(N):
                th = math.tanh(Z[o, t])
                GZ[o, t] = G[o, t] * (1.0 + p1 * (1.0 - th * th))
                s1 += G[o, t] * th
        gP[1, o] += s1
        gP[2, o] += s2


def _recurrence(lr, li, S, x0, batch, threads):  # pragma: no cover - runs compiled
    """In place: S (2n, N) holds B v on entry and the states x[k+1] = lam x[k] + B v[k] on exit, x[0] = x0 (2n, B).

    Parallel over blocks of states; inside, step k, state i, batch row b (contiguous, vectorised)."""
    n = lr.shape[0]
    steps = S.shape[1] // batch
    chunks = min(threads, n)
    for c in prange(chunks):
        for k in range(steps):
            t = k * batch
            for i in range(c * n // chunks, (c + 1) * n // chunks):
                a, w = lr[i], li[i]
                if k == 0:
                    for b in range(batch):
                        pr, pi = x0[i, b], x0[n + i, b]
                        S[i, b] += a * pr - w * pi
                        S[n + i, b] += a * pi + w * pr
                else:
                    for b in range(batch):
                        pr, pi = S[i, t - batch + b], S[n + i, t - batch + b]
                        S[i, t + b] += a * pr - w * pi
                        S[n + i, t + b] += a * pi + w * pr


def _recurrence_adjoint(lr, li, S, x0, MU, gxT, gx0, glam, nxt, batch, threads):  # pragma: no cover
    """In place: MU (2n, N) holds the readout's adjoint r on entry and mu[k] = dL/dx[k+1] on exit.

    gxT (2n, B): gradient of the final state; writes gx0 (2n, B); glam (2, n) += (dL/dRe lam, dL/dIm lam)."""
    n = lr.shape[0]
    steps = MU.shape[1] // batch
    chunks = min(threads, n)
    for c in prange(chunks):
        i0, i1 = c * n // chunks, (c + 1) * n // chunks
        cr = np.empty((i1 - i0, batch))
        ci = np.empty((i1 - i0, batch))
        sr = np.zeros((i1 - i0, batch))
        si = np.zeros((i1 - i0, batch))
        for i in range(i0, i1):
            for b in range(batch):
                cr[i - i0, b] = gxT[i, b]
                ci[i - i0, b] = gxT[n + i, b]
        for k in range(steps - 1, -1, -1):
            t = k * batch
            for i in range(i0, i1):
                a, w = lr[i], li[i]
                q = i - i0
                for b in range(batch):
                    rr, ri = MU[i, t + b], MU[n + i, t + b]
                    mr, mi = cr[q, b], ci[q, b]
                    if nxt:
                        mr += rr
                        mi += ri
                    MU[i, t + b] = mr
                    MU[n + i, t + b] = mi
                    if k == 0:
                        pr, pi = x0[i, b], x0[n + i, b]
                    else:
                        pr, pi = S[i, t - batch + b], S[n + i, t - batch + b]
                    sr[q, b] += pr * mr + pi * mi
                    si[q, b] += pr * mi - pi * mr
                    nr, ni = a * mr + w * mi, a * mi - w * mr
                    if not nxt:
                        nr += rr
                        ni += ri
                    cr[q, b] = nr
                    ci[q, b] = ni
        for i in range(i0, i1):
            q = i - i0
            for b in range(batch):
                gx0[i, b] = cr[q, b]
                gx0[n + i, b] = ci[q, b]
                glam[0, i] += sr[q, b]
                glam[1, i] += si[q, b]


def _shift_columns(Z, x_part, batch):  # pragma: no cover - runs compiled
    """Z (m, N) <- Z delayed by one time step (``batch`` columns), the first step from x_part (m, batch)."""
    m, N = Z.shape
    for r in prange(m):
        for t in range(N - 1, batch - 1, -1):
            Z[r, t] = Z[r, t - batch]
        for b in range(batch):
            Z[r, b] = x_part[r, b]


if numba_runtime.numba is not None:  # jitted lazily: compiled into the kernels on their first use
    _mm, _mm_t, _outer, _row_sums, _add_bias, _channel_map, _channel_map_adjoint, _recurrence, _recurrence_adjoint, \
        _shift_columns = (numba_runtime.jit(f) for f in (_mm, _mm_t, _outer, _row_sums, _add_bias, _channel_map,
                                                         _channel_map_adjoint, _recurrence, _recurrence_adjoint,
                                                         _shift_columns))
    _gelu, _gelu_slope = (numba_runtime.jit(f, parallel=False) for f in (_gelu, _gelu_slope))


# --------------------------------------------------------------------------------------------------
# The two kernels
# --------------------------------------------------------------------------------------------------


def _forward_kernel(u, We, be, lr, li, Bs, Cs, D, F, skip, kind, P, W1, c1, W2, c2, Wd, bd, x0, nxt, batch,
                    threads, V, S, Z, H, Y, xT):  # pragma: no cover - runs compiled
    """The stack's forward pass; writes the saved activations V (L+1, d, N), S (L, 2n, N), Z (L, d, N), H (L, h,
    N), the output Y (n_y, N) and the final states xT (L, 2n, B). Shapes of the rest: see :class:`StackParams`."""
    L = lr.shape[0]
    N = u.shape[1]
    _mm(We, u, V[0], False)
    _add_bias(V[0], be)
    for layer in range(L):
        v, s, z, out = V[layer], S[layer], Z[layer], V[layer + 1]
        _mm(Bs[layer], v, s, False)
        _recurrence(lr[layer], li[layer], s, x0[layer], batch, threads)
        _mm(Cs[layer], s, z, False)
        if not nxt:
            _shift_columns(z, Cs[layer] @ x0[layer], batch)
        _mm(D[layer], v, z, True)
        _add_bias(z, P[layer, 0])
        if kind == 8:
            h = H[layer]
            _mm(W1[layer], z, h, False)
            _add_bias(h, c1[layer])
            d = z.shape[0]
            for o in prange(d):
                for t in range(N):
                    out[o, t] = h[o, t] / (1.0 + math.exp(-h[d + o, t]))
        elif kind == 9:
            h = H[layer]
            _mm(W1[layer], z, h, False)
            _add_bias(h, c1[layer])
            act = np.empty_like(h)
            for r in prange(h.shape[0]):
                for t in range(N):
                    act[r, t] = _gelu(h[r, t])
            _mm(W2[layer], act, out, False)
            _add_bias(out, c2[layer])
        else:
            _channel_map(kind, z, P[layer], out)
        if skip == 1:
            for o in prange(out.shape[0]):
                for t in range(N):
                    out[o, t] += v[o, t]
        elif skip == 2:
            _mm(F[layer], v, out, True)
        last = N - batch
        for r in range(s.shape[0]):
            for b in range(batch):
                xT[layer, r, b] = s[r, last + b] if N > 0 else x0[layer, r, b]
    _mm(Wd, V[L], Y, False)
    _add_bias(Y, bd)


def _backward_kernel(u, We, lr, li, Bs, Cs, D, F, skip, kind, P, W1, W2, Wd, x0, nxt, batch, threads,
                     V, S, Z, H, gY, gxT,
                     gu, gWe, gbe, glam, gBs, gCs, gD, gF, gP, gW1, gc1, gW2, gc2, gWd, gbd,
                     gx0):  # pragma: no cover - runs compiled
    """The stack's adjoint pass (module docstring): from gY (n_y, N) and gxT (L, 2n, B), add every gradient into
    its zero-initialised float64 array (g-prefixed, shaped like its parameter) and write gu (n_u, N) and gx0."""
    L = lr.shape[0]
    d, N = V.shape[1], V.shape[2]
    n2 = S.shape[1]
    G = np.empty((d, N), V.dtype)
    GV = np.empty((d, N), V.dtype)
    GZ = np.empty((d, N), V.dtype)
    MU = np.empty((n2, N), V.dtype)
    gx_layer = np.empty((n2, batch), V.dtype)
    gl = np.zeros((2, n2 // 2))
    _mm_t(Wd, gY, G, False)
    _outer(gY, V[L], gWd, 0, 0, N)
    _row_sums(gY, gbd)
    for layer in range(L - 1, -1, -1):
        v, s, z = V[layer], S[layer], Z[layer]
        if kind == 8:
            h = H[layer]
            gh = np.empty_like(h)
            for o in prange(d):
                for t in range(N):
                    sg = 1.0 / (1.0 + math.exp(-h[d + o, t]))
                    gh[o, t] = G[o, t] * sg
                    gh[d + o, t] = G[o, t] * h[o, t] * sg * (1.0 - sg)
            _outer(gh, z, gW1[layer], 0, 0, N)
            _row_sums(gh, gc1[layer])
            _mm_t(W1[layer], gh, GZ, False)
        elif kind == 9:
            h = H[layer]
            act = np.empty_like(h)
            for r in prange(h.shape[0]):
                for t in range(N):
                    act[r, t] = _gelu(h[r, t])
            _outer(G, act, gW2[layer], 0, 0, N)
            _row_sums(G, gc2[layer])
            _mm_t(W2[layer], G, act, False)  # act <- dL/d gelu(h)
            for r in prange(h.shape[0]):
                for t in range(N):
                    act[r, t] *= _gelu_slope(h[r, t])
            _outer(act, z, gW1[layer], 0, 0, N)
            _row_sums(act, gc1[layer])
            _mm_t(W1[layer], act, GZ, False)
        else:
            _channel_map_adjoint(kind, z, P[layer], G, GZ, gP[layer])
        _row_sums(GZ, gP[layer, 0])
        if skip == 1:
            GV[:, :] = G
        elif skip == 2:
            _mm_t(F[layer], G, GV, False)
            _outer(G, v, gF[layer], 0, 0, N)
        else:
            GV[:, :] = 0.0
        _mm_t(D[layer], GZ, GV, True)
        _outer(GZ, v, gD[layer], 0, 0, N)
        _mm_t(Cs[layer], GZ, MU, False)
        if nxt:
            _outer(GZ, s, gCs[layer], 0, 0, N)
        else:
            _outer(GZ, s, gCs[layer], batch, 0, N - batch)
            _outer(GZ, x0[layer], gCs[layer], 0, 0, batch)
        gl[:, :] = 0.0
        _recurrence_adjoint(lr[layer], li[layer], s, x0[layer], MU, gxT[layer], gx_layer, gl, nxt, batch, threads)
        gx0[layer] += gx_layer
        glam[layer] += gl
        _outer(MU, v, gBs[layer], 0, 0, N)
        _mm_t(Bs[layer], MU, GV, True)
        G, GV = GV, G
    _outer(G, u, gWe, 0, 0, N)
    _row_sums(G, gbe)
    _mm_t(We, G, gu, False)


# --------------------------------------------------------------------------------------------------
# Compilation and launch
# --------------------------------------------------------------------------------------------------


def _build() -> dict[str, Callable[..., None]]:
    """Create the numba dispatchers and run them once on a tiny stack."""
    kernels = {"forward": numba_runtime.jit(_forward_kernel), "backward": numba_runtime.jit(_backward_kernel)}
    params = StackParams.zeros(n_u=1, n_y=1, d=2, n=1, layers=1, hidden=0, skip_matrix=False, dtype=torch.float64)
    u = torch.ones(1, 2, 1, dtype=torch.float64)
    x0 = torch.zeros(1, 1, 2, dtype=torch.float64)
    out = _run_forward(params, u, x0, "elu", "identity", True, kernels["forward"], 1)
    _run_backward(params, u, x0, "elu", "identity", True, out, torch.ones(1, 2, 1, dtype=torch.float64),
                  torch.zeros_like(x0), kernels["backward"], 1)
    return kernels


KERNELS = Kernels("fused deep-Wiener stack kernel", _build)
"""The forward and adjoint kernels of the whole stack, built on first use (``numba_runtime``)."""


def available() -> bool:
    """Whether the fused kernels can run (numba imports and they compiled). Never raises; the first call compiles
    them (seconds; cached on disk by numba afterwards)."""
    return KERNELS.available()


# --------------------------------------------------------------------------------------------------
# Parameters and array plumbing
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StackParams:
    """The discrete parameters of a stack of L blocks of width d with n complex modes each, as real tensors of one
    dtype (differentiable; unused parts have a zero-sized dimension).

    Attributes:
        We: (d, n_u) encoder weight; be: (d,) its bias.
        lam: (L, 2, n) the eigenvalues, (Re, Im).
        Bs: (L, 2n, d) the input maps [Re B; Im B].
        Cs: (L, d, 2n) the output maps [Re C, -Im C].
        D: (L, d, d) feedthrough.
        F: (L, d, d) the learned skip matrices, or (L, 0, 0).
        P: (L, 3, d) per channel: the map's bias and its parameters p1, p2 (``MAP_KINDS``; zeros if unused).
        W1: (L, h, d), c1: (L, h), W2: (L, d, h), c2: (L, d): the glu / mlp matrices (h = 0 for other maps).
        Wd: (n_y, d) decoder weight; bd: (n_y,) its bias.
    """

    We: Tensor
    be: Tensor
    lam: Tensor
    Bs: Tensor
    Cs: Tensor
    D: Tensor
    F: Tensor
    P: Tensor
    W1: Tensor
    c1: Tensor
    W2: Tensor
    c2: Tensor
    Wd: Tensor
    bd: Tensor

    def tensors(self) -> tuple[Tensor, ...]:
        """The fields in order."""
        return tuple(getattr(self, f) for f in self.__dataclass_fields__)

    @classmethod
    def zeros(cls, n_u: int, n_y: int, d: int, n: int, layers: int, hidden: int, skip_matrix: bool,
              dtype: torch.dtype) -> StackParams:
        """All-zero parameters of the given sizes (eigenvalues 0.5, to build and test the kernels)."""
        L, f = layers, d if skip_matrix else 0

        def z(*shape: int) -> Tensor:
            return torch.zeros(shape, dtype=dtype)

        lam = z(L, 2, n)
        lam[:, 0] = 0.5
        return cls(z(d, n_u), z(d), lam, z(L, 2 * n, d), z(L, d, 2 * n), z(L, d, d), z(L, f, f), z(L, 3, d),
                   z(L, hidden, d), z(L, hidden), z(L, d, hidden), z(L, d), z(n_y, d), z(n_y))


def _np(t: Tensor) -> np.ndarray:
    """A detached, contiguous tensor's numpy view (a copy only when not contiguous)."""
    return t.detach().contiguous().numpy()


def _threads(N: int, d: int, n: int) -> int:
    """Threads for a problem of N columns: torch's, or one below ``_PARALLEL_MIN_WORK``."""
    if N * (d + 2 * n) < _PARALLEL_MIN_WORK:
        return 1
    return max(1, min(torch.get_num_threads(), numba_runtime.numba.config.NUMBA_NUM_THREADS))


def _columns(u: Tensor) -> Tensor:
    """(batch, T, c) -> (c, T * batch), column t = k * batch + b."""
    return u.permute(2, 1, 0).reshape(u.shape[2], -1).contiguous()


def _run_forward(p: StackParams, u: Tensor, x0: Tensor, kind: str, skip: str, nxt: bool,
                 kernel: Callable[..., None] | None = None, threads: int | None = None) -> dict[str, Tensor]:
    """The forward kernel on detached tensors. u: (batch, T, n_u); x0: (L, 2n, batch). Returns the saved arrays
    (V, S, Z, H), Y (n_y, N) and xT (L, 2n, batch)."""
    batch, steps, _ = u.shape
    L, n2, d = p.Bs.shape
    N = batch * steps
    dtype = p.Bs.dtype
    out = {"V": torch.empty(L + 1, d, N, dtype=dtype), "S": torch.empty(L, n2, N, dtype=dtype),
           "Z": torch.empty(L, d, N, dtype=dtype), "H": torch.empty(L, p.W1.shape[1], N, dtype=dtype),
           "Y": torch.empty(p.Wd.shape[0], N, dtype=dtype), "xT": torch.empty(L, n2, batch, dtype=dtype)}
    threads = threads or _threads(N, d, n2 // 2)
    args = (_np(_columns(u)), _np(p.We), _np(p.be), _np(p.lam[:, 0]), _np(p.lam[:, 1]), _np(p.Bs), _np(p.Cs),
            _np(p.D), _np(p.F), SKIP_KINDS[skip], MAP_KINDS[kind], _np(p.P), _np(p.W1), _np(p.c1), _np(p.W2),
            _np(p.c2), _np(p.Wd), _np(p.bd), _np(x0), nxt, batch, threads,
            *(out[k].numpy() for k in ("V", "S", "Z", "H", "Y", "xT")))
    if kernel is None:
        KERNELS.launch("forward", threads, *args)
    else:
        kernel(*args)
    return out


def _run_backward(p: StackParams, u: Tensor, x0: Tensor, kind: str, skip: str, nxt: bool, saved: dict[str, Tensor],
                  gy: Tensor, gxT: Tensor, kernel: Callable[..., None] | None = None,
                  threads: int | None = None) -> tuple[Tensor, tuple[Tensor, ...], Tensor]:
    """The adjoint kernel. gy: (batch, T, n_y); gxT: (L, 2n, batch). Returns (grad u (batch, T, n_u), the
    parameters' gradients in ``StackParams`` order, grad x0 (L, 2n, batch)), in the parameters' dtype."""
    batch, steps, n_u = u.shape
    L, n2, d = p.Bs.shape
    N = batch * steps
    grads = tuple(torch.zeros(t.shape, dtype=torch.float64) for t in p.tensors())
    gu = torch.empty(n_u, N, dtype=p.Bs.dtype)
    gx0 = torch.zeros(L, n2, batch, dtype=p.Bs.dtype)
    g = dict(zip(StackParams.__dataclass_fields__, (t.numpy() for t in grads), strict=True))
    threads = threads or _threads(N, d, n2 // 2)
    args = (_np(_columns(u)), _np(p.We), _np(p.lam[:, 0]), _np(p.lam[:, 1]), _np(p.Bs), _np(p.Cs), _np(p.D),
            _np(p.F), SKIP_KINDS[skip], MAP_KINDS[kind], _np(p.P), _np(p.W1), _np(p.W2), _np(p.Wd), _np(x0), nxt,
            batch, threads, *(saved[k].numpy() for k in ("V", "S", "Z", "H")), _np(_columns(gy)), _np(gxT),
            gu.numpy(), g["We"], g["be"], g["lam"], g["Bs"], g["Cs"], g["D"], g["F"], g["P"], g["W1"], g["c1"],
            g["W2"], g["c2"], g["Wd"], g["bd"], gx0.numpy())
    if kernel is None:
        KERNELS.launch("backward", threads, *args)
    else:
        kernel(*args)
    gu = gu.reshape(n_u, steps, batch).permute(2, 1, 0)
    return gu, tuple(t.to(p.Bs.dtype) for t in grads), gx0


class _FusedStack(torch.autograd.Function):
    """The whole stack as one autograd node: inputs (u, x0, *StackParams fields), outputs (y, xT)."""

    @staticmethod
    def forward(ctx: FunctionCtx, kind: str, skip: str, nxt: bool, u: Tensor, x0: Tensor,
                *tensors: Tensor) -> tuple[Tensor, Tensor]:
        p = StackParams(*(t.detach() for t in tensors))
        saved = _run_forward(p, u.detach(), x0.detach(), kind, skip, nxt)
        ctx.kind, ctx.skip, ctx.nxt, ctx.saved = kind, skip, nxt, saved
        ctx.save_for_backward(u, x0, *tensors)
        batch, steps = u.shape[0], u.shape[1]
        y = saved["Y"].reshape(-1, steps, batch).permute(2, 1, 0)
        return y, saved["xT"]

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, gy: Tensor | None, gxT: Tensor | None) -> tuple[Tensor | None, ...]:
        u, x0, *tensors = ctx.saved_tensors
        p = StackParams(*(t.detach() for t in tensors))
        gy = torch.zeros(u.shape[0], u.shape[1], p.Wd.shape[0], dtype=u.dtype) if gy is None else gy
        gxT = torch.zeros_like(x0) if gxT is None else gxT
        gu, grads, gx0 = _run_backward(p, u.detach(), x0.detach(), ctx.kind, ctx.skip, ctx.nxt, ctx.saved,
                                       gy.detach(), gxT.detach().contiguous())
        need = ctx.needs_input_grad
        ctx.saved = None
        return (None, None, None, gu if need[3] else None, gx0 if need[4] else None,
                *(g if need[5 + i] else None for i, g in enumerate(grads)))


def stack(params: StackParams, u: Tensor, x0: Tensor, kind: str, skip: str, readout: str) -> tuple[Tensor, Tensor]:
    """Simulate a deep Wiener stack with the fused kernels (module docstring); differentiable (first order) in
    ``u``, ``x0`` and every parameter.

    Args:
        params: the discrete parameters (:class:`StackParams`), CPU tensors of one real dtype.
        u: (batch, T, n_u) the encoder's input, that dtype.
        x0: (L, 2n, batch) the blocks' initial states, each as [Re x; Im x] in modal coordinates.
        kind: the map's name in ``MAP_KINDS``; skip: a name in ``SKIP_KINDS``; readout: "next" or "current".

    Returns:
        y: (batch, T, n_y) the decoder's output, and the final states (L, 2n, batch) like ``x0``.

    Raises:
        numba_runtime.CompiledUnavailableError: numba is missing or the kernels do not compile.
    """
    KERNELS.require()
    return _FusedStack.apply(kind, skip, readout == "next", u, x0, *params.tensors())
