"""Fused CPU kernels for a whole deep Wiener stack: one compiled forward, one compiled adjoint, one autograd node.

The stack (every block a diagonal complex system in modal coordinates, the discretisation done before, in torch)::

    v0 = W_e u + b_e                                      encoder, n_u -> d
    block l:  x[k+1] = lam_l * x[k] + B_l v[k]            n complex modes, real input
              z[k]   = Re(C_l x_read[k]) + D_l v[k] + b_l x_read = x[k+1] (readout "next") or x[k] ("current")
              v'[k]  = sigma_l(z[k]) + F_l v[k]           static map, skip F = I, a learned matrix, or none
    y = W_d v_L + b_d                                     decoder, d -> n_y

Complex numbers are pairs of reals inside: a block's state is the real vector s = [Re x; Im x] (2n,), so
``B u`` is ``[B_re; B_im] v`` and ``Re(C x)`` is ``[C_re, -C_im] s``; tensors in and out are real.

Layout: the batch is cut into chunks, one per thread (``torch.get_num_threads()``; one below
``_PARALLEL_MIN_WORK``), each a whole stack problem of its own: one parallel region per pass. Inside a chunk every
signal is channel-major, (channels, N) with N = T * rows and column ``t = k * rows + b`` (time step k, row b), so
the projections (encoder, B, C, D, skip, map matrices, decoder) are loops over long contiguous rows and the
recurrence at step k is one contiguous run of ``rows`` columns per state: both vectorise.

Backward (adjoint), with gradients dL/d(real part), dL/d(imag part) of each state stacked the same way: the
map's derivative gives g_z; ``g_v = F^T g + D^T g_z + [B_re; B_im]^T mu``; the readout's adjoint is
``r = [C_re, -C_im]^T g_z``; the state adjoint runs backwards, ``mu[k] = conj(lam) mu[k+1] + r[k]`` (readout
"next"; for "current" ``r`` enters one step later and the initial state receives ``r[0]``), starting from the
gradient of the final state; ``g_lam = sum conj(x[k]) mu[k]``, ``g_x0 = conj(lam) mu[0]`` (+ ``r[0]``). Parameter
gradients are sums over all N columns: blocks of ``_SUM_BLOCK`` terms summed in the data's dtype (the one fastmath
flag, reassociation, lets these sums use vector lanes), the blocks' sums in float64.

Maps (``MAP_KINDS``): the per-channel maps of ``nonlinearities`` (identity, relu, tanh, elu, gelu exact and
tanh-approximated, poly, linear_tanh: per channel (bias, p1, p2)) and the channel-mixing glu and mlp (hidden
width h = 2d: W1 (h, d), c1 (h,), W2 (d, h), c2 (d,)). The kernels follow ``numba_runtime``'s policy (built on
first use, cached on disk, ``Kernels``); :func:`stack` is the entry point.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from deepwiener.engines import numba_runtime
from deepwiener.engines.numba_runtime import Kernels, prange

__all__ = ["KERNELS", "MAP_KINDS", "SKIP_KINDS", "StackParams", "available", "resolve", "stack"]

MAP_KINDS: dict[str, int] = {"identity": 0, "relu": 1, "tanh": 2, "elu": 3, "gelu": 4, "gelu_tanh": 5, "poly": 6,
                             "linear_tanh": 7, "glu": 8, "mlp": 9}
"""The maps the kernels implement, by ``stepgraph.MAPS`` name (per channel) or nonlinearity name (glu, mlp)."""

SKIP_KINDS: dict[str, int] = {"none": 0, "identity": 1, "linear": 2}
"""The skip paths: F = 0, F = I, a learned F."""

_PARALLEL_MIN_WORK = 1 << 16
"""Stacks with fewer ``N * (d + 2n)`` elements per layer run as one chunk on one thread (a launch costs more)."""

_POOL_BYTES = 256 << 20
"""The most bytes of arrays kept for reuse (:class:`_Pool`)."""

_SUM_BLOCK = 1024
"""Terms per partial sum of a gradient's sum over columns (summed in the data's dtype, the partial sums in
float64)."""

_SQRT_HALF = 1 / math.sqrt(2.0)
_INV_SQRT_2PI = 1 / math.sqrt(2.0 * math.pi)
_GELU_TANH_C = math.sqrt(2.0 / math.pi)
_GELU_TANH_K = 0.044715


# --------------------------------------------------------------------------------------------------
# Building blocks (plain Python here, compiled into the kernels; sequential: the kernels run one batch chunk
# per thread). Arrays are C-contiguous.
# --------------------------------------------------------------------------------------------------


def _mm(W, X, out, accumulate):  # pragma: no cover - runs compiled
    """out (m, N) (+)= W (m, p) @ X (p, N); the backward passes ``W.T`` for ``W^T @ X`` (the same loops, the same
    order of the sums)."""
    m, p = W.shape
    N = X.shape[1]
    for r in range(m):
        if not accumulate:
            for t in range(N):
                out[r, t] = 0.0
        for j in range(p):
            w = W[r, j]
            for t in range(N):
                out[r, t] += w * X[j, t]


def _dot(a, b):  # pragma: no cover - runs compiled (reassociated: vector lanes)
    """sum_t a[t] * b[t] for two 1-D arrays of one length > 0, in their dtype."""
    s = a[0] * b[0]
    for t in range(1, a.shape[0]):
        s += a[t] * b[t]
    return s


def _total(a):  # pragma: no cover - runs compiled (reassociated: vector lanes)
    """sum_t a[t] for a 1-D array of length > 0, in its dtype."""
    s = a[0]
    for t in range(1, a.shape[0]):
        s += a[t]
    return s


def _outer(G, X, gW, g_off, x_off, count):  # pragma: no cover - runs compiled
    """gW (m, p) += sum_t G[:, g_off + t] X[:, x_off + t]^T over t < count: float64 sums of blocks of
    ``_SUM_BLOCK`` terms summed in the arrays' dtype."""
    m, p = gW.shape
    for r in range(m):
        for j in range(p):
            s = 0.0
            for t0 in range(0, count, _SUM_BLOCK):
                c = min(_SUM_BLOCK, count - t0)
                s += _dot(G[r, g_off + t0 : g_off + t0 + c], X[j, x_off + t0 : x_off + t0 + c])
            gW[r, j] += s


def _row_sums(G, out):  # pragma: no cover - runs compiled
    """out (m,) += sum over the columns of G (m, N), blocked like :func:`_outer`."""
    N = G.shape[1]
    for r in range(G.shape[0]):
        s = 0.0
        for t0 in range(0, N, _SUM_BLOCK):
            s += _total(G[r, t0 : min(t0 + _SUM_BLOCK, N)])
        out[r] += s


def _add_bias(out, bias):  # pragma: no cover - runs compiled
    """out (m, N) += bias (m,) per row."""
    for r in range(out.shape[0]):
        c = bias[r]
        for t in range(out.shape[1]):
            out[r, t] += c


def _gelu(z, k):  # pragma: no cover - runs compiled
    """gelu(z) with the typed constants k (:func:`_constants`)."""
    return k[2] * z * (k[1] + math.erf(z * k[3]))


def _gelu_slope(z, k):  # pragma: no cover - runs compiled
    return k[2] * (k[1] + math.erf(z * k[3])) + z * math.exp(-k[2] * z * z) * k[4]


def _constants(like):  # pragma: no cover - runs compiled
    """The maps' constants in the dtype of the array ``like`` (so that float32 stays float32: a float64 literal
    would promote every operation it meets): 0, 1, 1/2, 1/sqrt(2), 1/sqrt(2 pi), sqrt(2/pi), 0.044715, 2, 3."""
    k = np.empty(9, like.dtype)
    k[0], k[1], k[2], k[3], k[4], k[5], k[6] = 0.0, 1.0, 0.5, _SQRT_HALF, _INV_SQRT_2PI, _GELU_TANH_C, _GELU_TANH_K
    k[7], k[8] = 2.0, 3.0
    return k


def _channel_map(kind, Z, P, out, Q):  # pragma: no cover - runs compiled
    """out = sigma(Z) for a per-channel map; Z (d, N) holds z = eta + bias, P (3, d): bias, p1, p2. Q (2, d, N) gets
    sigma'(z) and d sigma / d p1 (what the adjoint needs, so that it calls no transcendental; always written: a
    branch in the loop measured slower than the stores)."""
    d, N = Z.shape
    k = _constants(Z)
    zero, one, half, c, cubic, two, three = k[0], k[1], k[2], k[5], k[6], k[7], k[8]
    for o in range(d):
        p1, p2 = P[1, o], P[2, o]
        z_, out_, slope, dp1 = Z[o], out[o], Q[0, o], Q[1, o]
        if kind == 0:
            for t in range(N):
                out_[t] = z_[t]
                slope[t] = one
        elif kind == 1:
            for t in range(N):
                z = z_[t]
                out_[t] = z if z > zero else zero
                slope[t] = one if z > zero else zero
        elif kind == 2:
            for t in range(N):
                th = math.tanh(z_[t])
                out_[t] = th
                slope[t] = one - th * th
        elif kind == 3:
            for t in range(N):
                z = z_[t]
                e = math.exp(min(z, zero))
                positive = z > zero
                out_[t] = z if positive else p1 * (e - one)
                slope[t] = one if positive else p1 * e
                dp1[t] = zero if positive else e - one
        elif kind == 4:
            for t in range(N):
                z = z_[t]
                out_[t] = _gelu(z, k)
                slope[t] = _gelu_slope(z, k)
        elif kind == 5:
            for t in range(N):
                z = z_[t]
                th = math.tanh(c * (z + cubic * z * z * z))
                out_[t] = half * z * (one + th)
                slope[t] = half * (one + th) + half * z * (one - th * th) * c * (one + three * cubic * z * z)
        elif kind == 6:
            for t in range(N):
                z = z_[t]
                out_[t] = z + p1 * z * z + p2 * z * z * z
                slope[t] = one + two * p1 * z + three * p2 * z * z
                dp1[t] = z * z
        else:
            for t in range(N):
                z = z_[t]
                th = math.tanh(z)
                out_[t] = z + p1 * th
                slope[t] = one + p1 * (one - th * th)
                dp1[t] = th


def _channel_map_adjoint(kind, Z, Q, G, GZ, gP):  # pragma: no cover - runs compiled
    """GZ = sigma'(z) * G from the forward's Q; gP (3, d) += the gradients of p1 and p2 (the bias's is added by
    the caller)."""
    d, N = Z.shape
    for o in range(d):
        for t in range(N):
            GZ[o, t] = Q[0, o, t] * G[o, t]
    if kind == 3 or kind == 6 or kind == 7:
        for o in range(d):
            s = 0.0
            for t0 in range(0, N, _SUM_BLOCK):
                t1 = min(t0 + _SUM_BLOCK, N)
                s += _dot(G[o, t0:t1], Q[1, o, t0:t1])
            gP[1, o] += s
    if kind == 6:
        for o in range(d):
            s = 0.0
            for t in range(N):
                z = Z[o, t]
                s += G[o, t] * z * z * z
            gP[2, o] += s


def _recurrence(lr, li, S, x0, batch):  # pragma: no cover - runs compiled
    """In place: S (2n, N) holds B v on entry and the states x[k+1] = lam x[k] + B v[k] on exit, x[0] = x0 (2n, B).

    Loops: step k, state i, batch row b (contiguous 1-D views: vectorised); one batch row: step k, state i (the
    states' chains overlap in the pipeline)."""
    n = lr.shape[0]
    if batch == 1:
        for k in range(S.shape[1]):
            for i in range(n):
                pr, pi = (S[i, k - 1], S[n + i, k - 1]) if k > 0 else (x0[i, 0], x0[n + i, 0])
                S[i, k] += lr[i] * pr - li[i] * pi
                S[n + i, k] += lr[i] * pi + li[i] * pr
        return
    for k in range(S.shape[1] // batch):
        t = k * batch
        prev, p0 = (S, t - batch) if k > 0 else (x0, 0)
        for i in range(n):
            a, w = lr[i], li[i]
            pr, pi = prev[i, p0 : p0 + batch], prev[n + i, p0 : p0 + batch]
            xr, xi = S[i, t : t + batch], S[n + i, t : t + batch]
            for b in range(batch):
                xr[b] += a * pr[b] - w * pi[b]
                xi[b] += a * pi[b] + w * pr[b]


def _recurrence_adjoint(lr, li, S, x0, MU, gxT, gx0, glam, nxt, batch):  # pragma: no cover - runs compiled
    """In place: MU (2n, N) holds the readout's adjoint r on entry and mu[k] = dL/dx[k+1] on exit.

    gxT (2n, B): gradient of the final state; writes gx0 (2n, B); glam (2, n) += (dL/dRe lam, dL/dIm lam).
    r enters before the step (readout "next") or after it ("current")."""
    n = lr.shape[0]
    carry = gxT.copy()  # (2n, B): dL/dx[k+1] without the readout at step k
    sums = np.zeros_like(carry)  # (Re, Im) of conj(x[k]) mu[k], per batch row
    for k in range(MU.shape[1] // batch - 1, -1, -1):
        t = k * batch
        prev, p0 = (S, t - batch) if k > 0 else (x0, 0)
        for i in range(n):
            a, w = lr[i], li[i]
            cr, ci, sr, si = carry[i], carry[n + i], sums[i], sums[n + i]
            mur, mui = MU[i, t : t + batch], MU[n + i, t : t + batch]
            pr, pi = prev[i, p0 : p0 + batch], prev[n + i, p0 : p0 + batch]
            if nxt:
                for b in range(batch):
                    mr, mi = cr[b] + mur[b], ci[b] + mui[b]
                    mur[b], mui[b] = mr, mi
                    sr[b] += pr[b] * mr + pi[b] * mi
                    si[b] += pr[b] * mi - pi[b] * mr
                    cr[b], ci[b] = a * mr + w * mi, a * mi - w * mr
            else:
                for b in range(batch):
                    rr, ri = mur[b], mui[b]
                    mr, mi = cr[b], ci[b]
                    mur[b], mui[b] = mr, mi
                    sr[b] += pr[b] * mr + pi[b] * mi
                    si[b] += pr[b] * mi - pi[b] * mr
                    cr[b], ci[b] = a * mr + w * mi + rr, a * mi - w * mr + ri
    gx0[:, :] = carry
    for i in range(n):
        for b in range(batch):
            glam[0, i] += sums[i, b]
            glam[1, i] += sums[n + i, b]


def _shift_columns(Z, x_part, batch):  # pragma: no cover - runs compiled
    """Z (m, N) <- Z delayed by one time step (``batch`` columns), the first step from x_part (m, batch)."""
    m, N = Z.shape
    for r in range(m):
        for t in range(N - 1, batch - 1, -1):
            Z[r, t] = Z[r, t - batch]
        for b in range(batch):
            Z[r, b] = x_part[r, b]


# --------------------------------------------------------------------------------------------------
# One batch chunk, forward and adjoint
# --------------------------------------------------------------------------------------------------


def _forward_chunk(u, We, be, lr, li, Bs, Cs, D, F, skip, kind, P, W1, c1, W2, c2, Wd, bd, x0, nxt, need, V, S,
                   Z, H, Q, Y, xT):  # pragma: no cover - runs compiled
    """The stack's forward pass on one chunk of batch rows; writes the saved activations V (L+1, d, N),
    S (L, 2n, N), Z (L, d, N), H (L, h, N), Q (L, 2, d, N) (without ``need``: one layer's, reused), the output
    Y (n_y, N) and the final states xT (L, 2n, B). Shapes of the parameters: see :class:`StackParams`."""
    L = lr.shape[0]
    N = u.shape[1]
    batch = x0.shape[2]
    k = _constants(u)
    _mm(We, u, V[0], False)
    _add_bias(V[0], be)
    for layer in range(L):
        v, s, z, out = V[layer], S[layer], Z[layer], V[layer + 1]
        _mm(Bs[layer], v, s, False)
        _recurrence(lr[layer], li[layer], s, x0[layer], batch)
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
            for o in range(d):
                for t in range(N):
                    out[o, t] = h[o, t] / (k[1] + math.exp(-h[d + o, t]))
        elif kind == 9:
            h = H[layer]
            _mm(W1[layer], z, h, False)
            _add_bias(h, c1[layer])
            act = np.empty_like(h)
            for r in range(h.shape[0]):
                for t in range(N):
                    act[r, t] = _gelu(h[r, t], k)
            _mm(W2[layer], act, out, False)
            _add_bias(out, c2[layer])
        else:
            _channel_map(kind, z, P[layer], out, Q[layer if need else 0])
        if skip == 1:
            for o in range(out.shape[0]):
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


def _backward_chunk(u, We, lr, li, Bs, Cs, D, F, skip, kind, W1, W2, Wd, x0, nxt, V, S, Z, H, Q, W, MU, gY, gxT,
                    gu, gWe, gbe, glam, gBs, gCs, gD, gF, gP, gW1, gc1, gW2, gc2, gWd, gbd,
                    gx0):  # pragma: no cover - runs compiled
    """The stack's adjoint pass on one chunk (module docstring): from gY (n_y, N) and gxT (L, 2n, B), add every
    parameter's gradient into its zero-initialised float64 array (g-prefixed, shaped like the parameter) and write
    gu (n_u, N) and gx0 (L, 2n, B); W (3, d, N) and MU (2n, N) are scratch."""
    L = lr.shape[0]
    d, N = V.shape[1], V.shape[2]
    batch = x0.shape[2]
    k = _constants(V)
    G, GV, GZ = W[0], W[1], W[2]
    if N == 0:
        gx0[:, :, :] = gxT
        return
    _mm(Wd.T, gY, G, False)
    _outer(gY, V[L], gWd, 0, 0, N)
    _row_sums(gY, gbd)
    for layer in range(L - 1, -1, -1):
        v, s, z = V[layer], S[layer], Z[layer]
        if kind == 8:
            h = H[layer]
            gh = np.empty_like(h)
            for o in range(d):
                for t in range(N):
                    sg = k[1] / (k[1] + math.exp(-h[d + o, t]))
                    gh[o, t] = G[o, t] * sg
                    gh[d + o, t] = G[o, t] * h[o, t] * sg * (k[1] - sg)
            _outer(gh, z, gW1[layer], 0, 0, N)
            _row_sums(gh, gc1[layer])
            _mm(W1[layer].T, gh, GZ, False)
        elif kind == 9:
            h = H[layer]
            act = np.empty_like(h)
            for r in range(h.shape[0]):
                for t in range(N):
                    act[r, t] = _gelu(h[r, t], k)
            _outer(G, act, gW2[layer], 0, 0, N)
            _row_sums(G, gc2[layer])
            _mm(W2[layer].T, G, act, False)  # act <- dL/d gelu(h)
            for r in range(h.shape[0]):
                for t in range(N):
                    act[r, t] *= _gelu_slope(h[r, t], k)
            _outer(act, z, gW1[layer], 0, 0, N)
            _row_sums(act, gc1[layer])
            _mm(W1[layer].T, act, GZ, False)
        else:
            _channel_map_adjoint(kind, z, Q[layer], G, GZ, gP[layer])
        _row_sums(GZ, gP[layer, 0])
        if skip == 1:
            GV[:, :] = G
        elif skip == 2:
            _mm(F[layer].T, G, GV, False)
            _outer(G, v, gF[layer], 0, 0, N)
        else:
            GV[:, :] = 0.0
        _mm(D[layer].T, GZ, GV, True)
        _outer(GZ, v, gD[layer], 0, 0, N)
        _mm(Cs[layer].T, GZ, MU, False)
        if nxt:
            _outer(GZ, s, gCs[layer], 0, 0, N)
        else:
            _outer(GZ, s, gCs[layer], batch, 0, N - batch)
            _outer(GZ, x0[layer], gCs[layer], 0, 0, batch)
        _recurrence_adjoint(lr[layer], li[layer], s, x0[layer], MU, gxT[layer], gx0[layer], glam[layer], nxt,
                            batch)
        _outer(MU, v, gBs[layer], 0, 0, N)
        _mm(Bs[layer].T, MU, GV, True)
        G, GV = GV, G
    _outer(G, u, gWe, 0, 0, N)
    _row_sums(G, gbe)
    _mm(We.T, G, gu, False)


if numba_runtime.numba is not None:  # jitted lazily: compiled into the kernels on their first use
    _mm, _outer, _row_sums, _add_bias, _channel_map, _channel_map_adjoint, _recurrence, _recurrence_adjoint, \
        _shift_columns, _forward_chunk, _backward_chunk, _gelu, _gelu_slope, _constants = (
            numba_runtime.jit(f, parallel=False) for f in (
                _mm, _outer, _row_sums, _add_bias, _channel_map, _channel_map_adjoint, _recurrence,
                _recurrence_adjoint, _shift_columns, _forward_chunk, _backward_chunk, _gelu, _gelu_slope,
                _constants))
    _dot, _total = (numba_runtime.jit(f, parallel=False, reassociate=True) for f in (_dot, _total))


# --------------------------------------------------------------------------------------------------
# The two kernels: one batch chunk per thread
# --------------------------------------------------------------------------------------------------


def _forward_kernel(u, We, be, lr, li, Bs, Cs, D, F, skip, kind, P, W1, c1, W2, c2, Wd, bd, x0, nxt, need, V, S,
                    Z, H, Q, Y, xT):  # pragma: no cover - runs compiled
    """:func:`_forward_chunk` on each chunk (the leading axis of u, x0 and the outputs), in parallel."""
    for c in prange(u.shape[0]):
        _forward_chunk(u[c], We, be, lr, li, Bs, Cs, D, F, skip, kind, P, W1, c1, W2, c2, Wd, bd, x0[c], nxt,
                       need, V[c], S[c], Z[c], H[c], Q[c], Y[c], xT[c])


def _backward_kernel(u, We, lr, li, Bs, Cs, D, F, skip, kind, W1, W2, Wd, x0, nxt, V, S, Z, H, Q, W, MU, gY, gxT,
                     gu, gWe, gbe, glam, gBs, gCs, gD, gF, gP, gW1, gc1, gW2, gc2, gWd, gbd,
                     gx0):  # pragma: no cover - runs compiled
    """:func:`_backward_chunk` on each chunk in parallel; each chunk adds into its own slot of the gradients."""
    for c in prange(u.shape[0]):
        _backward_chunk(u[c], We, lr, li, Bs, Cs, D, F, skip, kind, W1, W2, Wd, x0[c], nxt, V[c], S[c], Z[c], H[c],
                        Q[c], W[c], MU[c], gY[c], gxT[c], gu[c], gWe[c], gbe[c], glam[c], gBs[c], gCs[c], gD[c],
                        gF[c], gP[c], gW1[c], gc1[c], gW2[c], gc2[c], gWd[c], gbd[c], gx0[c])


# --------------------------------------------------------------------------------------------------
# Compilation and launch
# --------------------------------------------------------------------------------------------------


def _build() -> dict[str, Callable[..., None]]:
    """Create the numba dispatchers and run them once on a tiny float32 stack (the training dtype: its compilation
    is the one every first training step needs; float64 compiles on its first use)."""
    kernels = {"forward": numba_runtime.jit(_forward_kernel), "backward": numba_runtime.jit(_backward_kernel)}
    params = StackParams.zeros(n_u=1, n_y=1, d=2, n=1, layers=1, hidden=0, skip_matrix=False, dtype=torch.float32)
    u = torch.ones(1, 2, 1)
    x0 = torch.zeros(1, 2, 1)
    saved = _run_forward(params, u, x0, "elu", "identity", True, True, kernels["forward"], 1)
    _run_backward(params, "elu", "identity", True, saved, torch.ones(1, 2, 1), torch.zeros_like(x0),
                  kernels["backward"])
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


class _Pool:
    """Arrays of the kernels kept for reuse: the saved activations once their autograd graph is gone, the scratch
    of a pass once it ends. A fresh multi-megabyte array costs a page fault per 4 kB on first touch (measured
    ~1,500 faults, 2-3 ms of system time, per training step of the paper model); a reused one costs none.
    Holds at most ``_POOL_BYTES``; thread-safe."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._free: list[Tensor] = []
        self._lock = threading.Lock()

    def take(self, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
        """An uninitialised tensor of this shape and dtype (a kept one if there is one)."""
        with self._lock:
            for i, t in enumerate(self._free):
                if t.shape == shape and t.dtype == dtype:
                    return self._free.pop(i)
        return torch.empty(shape, dtype=dtype)

    def give(self, tensors: list[Tensor]) -> None:
        """Keep these tensors for reuse (the newest first, within the limit); nothing may use them any more."""
        with self._lock:
            self._free = [*tensors, *self._free]
            total = 0
            for i, t in enumerate(self._free):
                total += t.numel() * t.element_size()
                if total > self._limit:
                    del self._free[i:]
                    break


_POOL = _Pool(_POOL_BYTES)


class _Saved(dict):
    """The arrays one forward keeps for its backward; given back to the pool when the autograd graph (and so this
    dict) is freed."""

    def __del__(self) -> None:
        _POOL.give([self[k] for k in _POOLED if k in self])


_POOLED = ("V", "S", "Z", "H", "Q")


def _np(t: Tensor) -> np.ndarray:
    """A detached, contiguous tensor's numpy view (a copy only when not contiguous)."""
    return t.detach().contiguous().numpy()


def _chunks(batch: int, steps: int, d: int, n: int) -> int:
    """Batch chunks (one per thread): torch's thread count, at most one per batch row; one below
    ``_PARALLEL_MIN_WORK``."""
    if batch * steps * (d + 2 * n) < _PARALLEL_MIN_WORK:
        return 1
    return max(1, min(batch, torch.get_num_threads(), numba_runtime.numba.config.NUMBA_NUM_THREADS))


def _to_chunks(u: Tensor, chunks: int) -> Tensor:
    """(batch, T, c) -> (chunks, c, T * rows) with rows = ceil(batch / chunks) (zero rows padded at the end):
    column ``k * rows + b`` of chunk j is row ``j * rows + b`` at step k."""
    batch, steps, width = u.shape
    rows = -(-batch // chunks)
    u = torch.nn.functional.pad(u, (0, 0, 0, 0, 0, chunks * rows - batch))
    return u.reshape(chunks, rows, steps, width).permute(0, 3, 2, 1).reshape(chunks, width, steps * rows).contiguous()


def _from_chunks(y: Tensor, batch: int, steps: int) -> Tensor:
    """The inverse of :func:`_to_chunks`: (chunks, c, T * rows) -> (batch, T, c)."""
    chunks, width, _ = y.shape
    return y.reshape(chunks, width, steps, -1).permute(0, 3, 2, 1).reshape(-1, steps, width)[:batch]


def _states_to_chunks(x: Tensor, chunks: int) -> Tensor:
    """(L, 2n, batch) -> (chunks, L, 2n, rows), zero rows padded."""
    L, n2, batch = x.shape
    rows = -(-batch // chunks)
    x = torch.nn.functional.pad(x, (0, chunks * rows - batch))
    return x.reshape(L, n2, chunks, rows).permute(2, 0, 1, 3).contiguous()


def _states_from_chunks(x: Tensor, batch: int) -> Tensor:
    """The inverse of :func:`_states_to_chunks`."""
    chunks, L, n2, rows = x.shape
    return x.permute(1, 2, 0, 3).reshape(L, n2, chunks * rows)[:, :, :batch]


def _run_forward(p: StackParams, u: Tensor, x0: Tensor, kind: str, skip: str, nxt: bool, need: bool,
                 kernel: Callable[..., None] | None = None, chunks: int | None = None) -> dict[str, Any]:
    """The forward kernel on detached tensors. u: (batch, T, n_u); x0: (L, 2n, batch); ``need``: keep what the
    adjoint needs. Returns the chunked inputs and saved arrays (u, x0, V, S, Z, H, Q), y (batch, T, n_y) and
    xT (L, 2n, batch)."""
    batch, steps, _ = u.shape
    L, n2, d = p.Bs.shape
    chunks = chunks or _chunks(batch, steps, d, n2 // 2)
    rows = -(-batch // chunks)
    N = rows * steps
    dtype = p.Bs.dtype
    saved = _Saved(u=_to_chunks(u, chunks), x0=_states_to_chunks(x0, chunks), chunks=chunks)
    shapes = {"V": (L + 1, d, N), "S": (L, n2, N), "Z": (L, d, N), "H": (L, p.W1.shape[1], N),
              "Q": (L if need else 1, 2, d, N)}
    saved.update({k: _POOL.take((chunks, *shape), dtype) for k, shape in shapes.items()})
    saved.update(Y=torch.empty(chunks, p.Wd.shape[0], N, dtype=dtype), xT=torch.empty(chunks, L, n2, rows, dtype=dtype))
    args = (saved["u"].numpy(), _np(p.We), _np(p.be), _np(p.lam[:, 0]), _np(p.lam[:, 1]), _np(p.Bs), _np(p.Cs),
            _np(p.D), _np(p.F), SKIP_KINDS[skip], MAP_KINDS[kind], _np(p.P), _np(p.W1), _np(p.c1), _np(p.W2),
            _np(p.c2), _np(p.Wd), _np(p.bd), saved["x0"].numpy(), nxt, need,
            *(saved[k].numpy() for k in ("V", "S", "Z", "H", "Q", "Y", "xT")))
    if kernel is None:
        KERNELS.launch("forward", chunks, *args)
    else:
        kernel(*args)
    saved["y"] = _from_chunks(saved.pop("Y"), batch, steps)
    saved["xT"] = _states_from_chunks(saved["xT"], batch)
    if not need:  # the activations were scratch
        _POOL.give([saved.pop(k) for k in _POOLED])
    return saved


def _run_backward(p: StackParams, kind: str, skip: str, nxt: bool, saved: dict[str, Any], gy: Tensor, gxT: Tensor,
                  kernel: Callable[..., None] | None = None) -> tuple[Tensor, tuple[Tensor, ...], Tensor]:
    """The adjoint kernel after :func:`_run_forward` (``need`` set). gy: (batch, T, n_y); gxT: (L, 2n, batch).
    Returns (grad u (batch, T, n_u), the parameters' gradients in ``StackParams`` order, grad x0 (L, 2n, batch)),
    in the parameters' dtype."""
    batch, steps, _ = gy.shape
    chunks = saved["chunks"]
    u, x0 = saved["u"], saved["x0"]
    grads = tuple(torch.zeros(chunks, *t.shape, dtype=torch.float64) for t in p.tensors())
    gu = torch.empty_like(u)
    gx0 = torch.empty_like(x0)
    L, n2, d = p.Bs.shape
    scratch = [_POOL.take((chunks, 3, d, u.shape[2]), p.Bs.dtype), _POOL.take((chunks, n2, u.shape[2]), p.Bs.dtype)]
    g = dict(zip(StackParams.__dataclass_fields__, (t.numpy() for t in grads), strict=True))
    args = (u.numpy(), _np(p.We), _np(p.lam[:, 0]), _np(p.lam[:, 1]), _np(p.Bs), _np(p.Cs), _np(p.D), _np(p.F),
            SKIP_KINDS[skip], MAP_KINDS[kind], _np(p.W1), _np(p.W2), _np(p.Wd), x0.numpy(), nxt,
            *(saved[k].numpy() for k in ("V", "S", "Z", "H", "Q")), *(t.numpy() for t in scratch),
            _to_chunks(gy, chunks).numpy(),
            _states_to_chunks(gxT, chunks).numpy(), gu.numpy(), g["We"], g["be"], g["lam"], g["Bs"], g["Cs"], g["D"],
            g["F"], g["P"], g["W1"], g["c1"], g["W2"], g["c2"], g["Wd"], g["bd"], gx0.numpy())
    if kernel is None:
        KERNELS.launch("backward", chunks, *args)
    else:
        kernel(*args)
    _POOL.give(scratch)
    dtype = p.Bs.dtype
    return (_from_chunks(gu, batch, steps), tuple(t.sum(0).to(dtype) for t in grads),
            _states_from_chunks(gx0, batch))


class _FusedStack(torch.autograd.Function):
    """The whole stack as one autograd node: inputs (u, x0, *StackParams fields), outputs (y, xT); ``need``: a
    backward may follow (keep the activations)."""

    @staticmethod
    def forward(ctx: FunctionCtx, kind: str, skip: str, nxt: bool, need: bool, u: Tensor, x0: Tensor,
                *tensors: Tensor) -> tuple[Tensor, Tensor]:
        p = StackParams(*(t.detach() for t in tensors))
        saved = _run_forward(p, u.detach(), x0.detach(), kind, skip, nxt, need)
        y, xT = saved.pop("y"), saved.pop("xT")  # not kept in ctx: y -> its graph -> ctx -> y would be a cycle
        ctx.kind, ctx.skip, ctx.nxt, ctx.shapes = kind, skip, nxt, (y.shape, xT.shape)
        ctx.saved = saved if need else None
        ctx.save_for_backward(*tensors)
        return y, xT

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, gy: Tensor | None, gxT: Tensor | None) -> tuple[Tensor | None, ...]:
        p = StackParams(*(t.detach() for t in ctx.saved_tensors))
        saved = ctx.saved
        y_shape, xT_shape = ctx.shapes
        gy = torch.zeros(y_shape, dtype=p.Bs.dtype) if gy is None else gy.detach()
        gxT = torch.zeros(xT_shape, dtype=p.Bs.dtype) if gxT is None else gxT.detach()
        gu, grads, gx0 = _run_backward(p, ctx.kind, ctx.skip, ctx.nxt, saved, gy, gxT)
        need = ctx.needs_input_grad
        return (None, None, None, None, gu if need[4] else None, gx0 if need[5] else None,
                *(g if need[6 + i] else None for i, g in enumerate(grads)))


def resolve(mode: str, device_type: str) -> bool:
    """Whether a deep Wiener stack that the kernels implement runs fused under ``mode`` on this device: "fused"
    asks for it, "auto" takes it on the CPU when the kernels run (``numba_runtime.resolve``'s policy: else the
    per-block engines, said once in the log); other modes never.

    Raises:
        numba_runtime.CompiledUnavailableError: "fused" off the CPU or without working kernels.
    """
    if mode not in ("auto", "fused"):
        return False
    return numba_runtime.resolve(mode, device_type, KERNELS, fallback="per-block engines") == "compiled"


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
    tensors = params.tensors()
    need = torch.is_grad_enabled() and any(t.requires_grad for t in (u, x0, *tensors))
    return _FusedStack.apply(kind, skip, readout == "next", need, u, x0, *tensors)
