"""Linear identification: FIR, ARX and subspace (N4SID/PO-MOESP) state-space models, numpy.

What these return, :class:`LinearStateSpace`, is a value object (numpy arrays and a scaling), as a layer's
``discretize()`` returns a ``DiagonalSSM``: the model kind "linear" (``models.linear.LinearModel``) holds one, and
the other kinds start from one (``TrainConfig(init="linear")``, :func:`identify_linear`).

Every fit works on numpy records ``(u, y)`` with ``u: (T, n_u)`` and ``y: (T, n_y)`` (a 1-D array is one
channel), or on objects with ``.u``/``.y`` attributes (and optionally ``.dt``) such as ``IOData``. Fits use
all records, and no regressor or Hankel column ever spans two records. Inputs and outputs are normalised
to zero mean and unit variance (statistics over all records), and the returned :class:`LinearStateSpace`
carries that scaling, so ``simulate`` takes and returns physical units. Every fit also estimates a
constant output offset (the sample means need not be an equilibrium pair), folded into ``y_mean`` so that
``y_mean`` is the steady-state output for ``u = u_mean``; noise-free data from a linear system with offsets
is therefore fitted exactly.

- FIR (``fit_fir``): ``y[k] = sum_{i=0}^{n_taps-1} H_i u[k-i]``, least squares.
- ARX (``fit_arx``, MIMO): ``y[k] = sum_{i=1}^{na} A_i y[k-i] + sum_{j=0}^{nb-1} B_j u[k-nk-j] + e[k]``,
  least squares, realised in block observer form. FIR is ARX with ``na=0, nk=0, nb=n_taps``.
- Subspace (``fit_n4sid``): PO-MOESP (Verhaegen 1994). The LQ factor of the block Hankel matrix
  ``[1; U_f; U_p; Y_p; Y_f]`` gives ``L32``, whose left singular vectors span the extended observability
  matrix; A and C follow from its shift invariance. Eigenvalues of A outside the unit circle are reflected
  inside (``lam -> 1/conj(lam)``). B, D and one initial state per record are then the least-squares
  solution of the *simulation* (output) error, which is linear in them for fixed A and C.

Least-squares problems are solved by accumulating a QR factor over row chunks, so memory stays at one chunk
even for records of 10^5 to 10^6 samples.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from deepwiener.errors import ConfigError, DataError, is_integer_in

logger = logging.getLogger(__name__)

__all__ = [
    "IORecord",
    "LinearStateSpace",
    "best_linear",
    "fit_arx",
    "fit_fir",
    "fit_n4sid",
    "identify_linear",
    "simulate_state_space",
]

_CHUNK_ROWS = 8192  # rows per QR update
_SIM_BLOCK = 128  # longest block of the block-Toeplitz simulator
_SIM_TOEPLITZ = 2**20  # most entries of its (L m, L p) Toeplitz matrix
_MAX_RADIUS = 1.0 - 1e-6  # where a reflected eigenvalue on the unit circle is placed


class IORecord(Protocol):
    """Anything with ``u: (T, n_u)`` and ``y: (T, n_y)`` arrays, e.g. ``deepwiener.data.IOData``."""

    @property
    def u(self) -> np.ndarray: ...

    @property
    def y(self) -> np.ndarray: ...


Record = tuple[np.ndarray, np.ndarray] | IORecord


# ----------------------------------------------------------------------------------------------------------
# model


def simulate_state_space(
    A: np.ndarray, B: np.ndarray, C: np.ndarray, D: np.ndarray, u: np.ndarray, x0: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Exact simulation of ``x[k+1] = A x[k] + B u[k]``, ``y[k] = C x[k] + D u[k]`` in blocks.

    The record is cut into blocks of L samples. Inside a block the output is the free response
    ``C A^j x_b`` plus a block-Toeplitz product with the Markov parameters ``D, CB, CAB, ...``; the
    block-start states follow ``x_{b+1} = A^L x_b + sum_i A^{L-1-i} B u_b[i]``, a loop over T/L blocks only.

    Args:
        A: (n, n). B: (n, m). C: (p, n). D: (p, m).
        u: (T, m) input.
        x0: (n,) initial state.

    Returns:
        y: (T, p), and the final state x[T]: (n,).
    """
    T, m = u.shape
    n, p = A.shape[0], C.shape[0]
    L = max(1, min(_SIM_BLOCK, T, int(np.sqrt(_SIM_TOEPLITZ // (m * p)))))
    nb = -(-T // L)
    U = np.zeros((nb * L, m))
    U[:T] = u
    U = U.reshape(nb, L, m)
    obs = np.empty((L, p, n))  # obs[j] = C A^j
    ctr = np.empty((L, n, m))  # ctr[j] = A^j B
    obs[0], ctr[0] = C, B
    for j in range(1, L):
        obs[j] = obs[j - 1] @ A
        ctr[j] = A @ ctr[j - 1]
    markov = np.concatenate([D[None], np.einsum("jpn,nm->jpm", obs[:-1], B)])  # (L, p, m): D, CB, CAB, ...
    lag = np.arange(L)[None, :] - np.arange(L)[:, None]  # lag[i, j] = j - i
    toeplitz = np.where((lag >= 0)[:, :, None, None], markov[np.clip(lag, 0, None)], 0.0)  # (i, j, p, m)
    toeplitz = toeplitz.transpose(0, 3, 1, 2).reshape(L * m, L * p)
    forced = (U.reshape(nb, L * m) @ toeplitz).reshape(nb, L, p)
    drive = U.reshape(nb, L * m) @ ctr[::-1].transpose(0, 2, 1).reshape(L * m, n)  # (nb, n)
    A_L = np.linalg.matrix_power(A, L)
    starts = np.empty((nb, n))
    x = np.asarray(x0, dtype=float)
    for b in range(nb):
        starts[b] = x
        x = A_L @ x + drive[b]
    y = forced + np.einsum("jpn,bn->bjp", obs, starts)
    last = T - (nb - 1) * L  # samples in the last block; the zero padding after them moved x past x[T]
    if 0 < last < L:
        x = np.linalg.matrix_power(A, last) @ starts[-1] + np.einsum("inm,im->n", ctr[last - 1 :: -1], U[-1, :last])
    return y.reshape(nb * L, p)[:T], x


@dataclass(frozen=True, eq=False)
class LinearStateSpace:
    """A discrete-time linear state-space model with input/output scaling, in physical units.

    ``un = (u - u_mean) / u_std``, ``x[k+1] = A x[k] + B un[k]``, ``yn[k] = C x[k] + D un[k]``,
    ``y = y_mean + y_std * yn``. The state lives in normalised coordinates.

    Attributes:
        A: (n, n) real state matrix.
        B: (n, n_u) real input matrix.
        C: (n_y, n) real output matrix.
        D: (n_y, n_u) real feedthrough matrix.
        dt: sampling time in seconds, > 0.
        u_mean: (n_u,) input offset.
        u_std: (n_u,) input scale, > 0.
        y_mean: (n_y,) output offset.
        y_std: (n_y,) output scale, > 0.
    """

    A: np.ndarray
    B: np.ndarray
    C: np.ndarray
    D: np.ndarray
    dt: float
    u_mean: np.ndarray
    u_std: np.ndarray
    y_mean: np.ndarray
    y_std: np.ndarray

    def __post_init__(self) -> None:
        n = np.shape(self.A)[0] if np.ndim(self.A) == 2 else -1
        m = np.shape(self.B)[1] if np.ndim(self.B) == 2 else -1
        p = np.shape(self.C)[0] if np.ndim(self.C) == 2 else -1
        expected = {
            "A": (n, n), "B": (n, m), "C": (p, n), "D": (p, m),
            "u_mean": (m,), "u_std": (m,), "y_mean": (p,), "y_std": (p,),
        }  # fmt: skip
        for name, shape in expected.items():
            arr = np.array(getattr(self, name))
            if arr.dtype.kind not in "biuf":
                raise ConfigError(f"LinearStateSpace.{name} must be real; found dtype {arr.dtype}")
            arr = np.ascontiguousarray(arr, dtype=float)  # one memory layout: equal models simulate equally
            if arr.shape != shape:
                raise ConfigError(f"LinearStateSpace.{name} must have shape {shape}; found {arr.shape}")
            if not np.all(np.isfinite(arr)):
                raise ConfigError(f"LinearStateSpace.{name} contains NaN or inf")
            arr.flags.writeable = False
            object.__setattr__(self, name, arr)
        if np.any(self.u_std <= 0) or np.any(self.y_std <= 0):
            raise ConfigError("LinearStateSpace.u_std and y_std must be > 0")
        if not (isinstance(self.dt, int | float) and np.isfinite(self.dt) and self.dt > 0):
            raise ConfigError(f"LinearStateSpace.dt must be a finite number > 0; found {self.dt!r}")

    @property
    def n_states(self) -> int:
        """Model order n."""
        return int(self.A.shape[0])

    @property
    def n_u(self) -> int:
        """Number of inputs."""
        return int(self.B.shape[1])

    @property
    def n_y(self) -> int:
        """Number of outputs."""
        return int(self.C.shape[0])

    @property
    def poles(self) -> np.ndarray:
        """(n,) complex eigenvalues of A (discrete-time poles)."""
        return np.linalg.eigvals(self.A)

    def simulate(self, u: np.ndarray, x0: np.ndarray | None = None) -> np.ndarray:
        """Free-run simulation in physical units.

        Args:
            u: (T, n_u) input; a 1-D array is accepted when n_u == 1.
            x0: (n,) initial state in normalised coordinates; zeros (the operating point) if None.

        Returns:
            y: (T, n_y) simulated output.

        Raises:
            DataError: u has the wrong shape or contains NaN/inf.
            ConfigError: x0 has the wrong shape.
        """
        u = _as_signal("u", u, self.n_u)
        if x0 is None:
            x0 = np.zeros(self.n_states)
        else:
            x0 = np.asarray(x0, dtype=float)
            if x0.shape != (self.n_states,) or not np.all(np.isfinite(x0)):
                raise ConfigError(f"x0 must be a finite array of shape ({self.n_states},); found {x0.shape}")
        un = (u - self.u_mean) / self.u_std
        yn, _ = simulate_state_space(self.A, self.B, self.C, self.D, un, x0)
        return self.y_mean + self.y_std * yn


# ----------------------------------------------------------------------------------------------------------
# validation and scaling


def _as_signal(name: str, value: object, channels: int | None = None) -> np.ndarray:
    """(T, channels) float64 array from ``value``, or DataError."""
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{name} must be a real numeric array; found dtype {arr.dtype}")
    arr = arr.astype(float, copy=False)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise DataError(f"{name} must have shape (T, channels) or (T,); found shape {arr.shape}")
    if channels is not None and arr.shape[1] != channels:
        raise DataError(f"{name} must have {channels} channel(s); found shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise DataError(f"{name} contains NaN or inf")
    return arr


def _records(
    records: Sequence[Record], dt: float | None
) -> tuple[list[tuple[np.ndarray, np.ndarray]], float]:
    """Validate records and resolve dt; returns ([(u (T, n_u), y (T, n_y)), ...], dt)."""
    if isinstance(records, np.ndarray) or not isinstance(records, Sequence) or len(records) == 0:
        raise DataError("records must be a non-empty list of (u, y) pairs or objects with .u and .y")
    out: list[tuple[np.ndarray, np.ndarray]] = []
    dts: set[float] = set()
    for r, rec in enumerate(records):
        if hasattr(rec, "u") and hasattr(rec, "y"):
            u, y = rec.u, rec.y
            if getattr(rec, "dt", None) is not None:
                dts.add(float(rec.dt))
        elif isinstance(rec, tuple | list) and len(rec) == 2:
            u, y = rec
        else:
            raise DataError(f"record {r} must be a (u, y) pair or have .u and .y; found {type(rec).__name__}")
        u = _as_signal(f"record {r} u", u, out[0][0].shape[1] if out else None)
        y = _as_signal(f"record {r} y", y, out[0][1].shape[1] if out else None)
        if u.shape[0] != y.shape[0]:
            raise DataError(f"record {r}: u has {u.shape[0]} samples but y has {y.shape[0]}")
        out.append((u, y))
    if len(dts) > 1:
        raise DataError(f"records have different dt: {sorted(dts)}")
    if dt is None:
        return out, dts.pop() if dts else 1.0
    if not (isinstance(dt, int | float) and np.isfinite(dt) and dt > 0):
        raise ConfigError(f"dt must be a finite number > 0; found {dt!r}")
    if dts and not np.isclose(dts.pop(), dt, rtol=1e-9, atol=0.0):
        raise DataError(f"dt={dt} disagrees with the records' dt")
    return out, float(dt)


def _positive_int(name: str, value: object, minimum: int = 1) -> int:
    if not is_integer_in(value, minimum):
        raise ConfigError(f"{name} must be an integer >= {minimum}; found {value!r}")
    return int(value)


def _scaling(recs: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    """Means and standard deviations over all records (a constant channel gets std 1)."""
    stats = {}
    for k, name in enumerate(("u", "y")):
        data = np.concatenate([rec[k] for rec in recs])
        std = data.std(axis=0)
        stats[f"{name}_mean"] = data.mean(axis=0)
        stats[f"{name}_std"] = np.where(std > 1e-12 * (1.0 + np.abs(data).max(axis=0)), std, 1.0)
    return stats


def _normalised(
    recs: list[tuple[np.ndarray, np.ndarray]], stats: dict[str, np.ndarray]
) -> list[tuple[np.ndarray, np.ndarray]]:
    return [((u - stats["u_mean"]) / stats["u_std"], (y - stats["y_mean"]) / stats["y_std"]) for u, y in recs]


# ----------------------------------------------------------------------------------------------------------
# least squares by accumulated QR


def _qr_accumulate(blocks: Iterator[np.ndarray], n_cols: int) -> np.ndarray:
    """Upper-triangular R (n_cols, n_cols) with ``R^T R = M^T M`` for M the row-stack of ``blocks``."""
    R = np.zeros((0, n_cols))
    for block in blocks:
        R = np.linalg.qr(np.vstack([R, block]), mode="r")
    if R.shape[0] < n_cols:
        R = np.vstack([R, np.zeros((n_cols - R.shape[0], n_cols))])
    return R


def _lstsq(
    blocks: Iterator[np.ndarray], n_params: int, n_targets: int, ridge: float = 0.0, n_free: int = 0
) -> np.ndarray:
    """Solve ``min ||Y - Phi theta||^2 + ridge * N * ||theta[:-n_free]||^2`` from row blocks ``[Phi | Y]``.

    The last ``n_free`` parameters (intercepts) are not penalised.

    Returns:
        theta: (n_params, n_targets).
    """
    n_rows = 0

    def counted() -> Iterator[np.ndarray]:
        nonlocal n_rows
        for block in blocks:
            n_rows += block.shape[0]
            yield block

    R = _qr_accumulate(counted(), n_params + n_targets)
    if n_rows < n_params:
        raise DataError(f"not enough data: {n_rows} equations for {n_params} parameters")
    if ridge > 0:
        weight = np.sqrt(ridge * n_rows) * (np.arange(n_params) < n_params - n_free)
        reg = np.hstack([np.diag(weight), np.zeros((n_params, n_targets))])
        R = np.linalg.qr(np.vstack([R, reg]), mode="r")
    theta, *_ = np.linalg.lstsq(R[:n_params, :n_params], R[:n_params, n_params:], rcond=None)
    return theta


# ----------------------------------------------------------------------------------------------------------
# FIR / ARX


def _arx_blocks(recs: list[tuple[np.ndarray, np.ndarray]], na: int, nb: int, nk: int) -> Iterator[np.ndarray]:
    """Row blocks ``[y[k-1..k-na], u[k-nk..k-nk-nb+1], 1 | y[k]]`` per record, never across records."""
    start = max(na, nk + nb - 1)
    for u, y in recs:
        for k0 in range(start, u.shape[0], _CHUNK_ROWS):
            k1 = min(k0 + _CHUNK_ROWS, u.shape[0])
            cols = [y[k0 - i : k1 - i] for i in range(1, na + 1)]
            cols += [u[k0 - nk - j : k1 - nk - j] for j in range(nb)]
            yield np.hstack([*cols, np.ones((k1 - k0, 1)), y[k0:k1]])


def _arx_realisation(theta: np.ndarray, na: int, nb: int, nk: int, m: int, p: int) -> tuple[np.ndarray, ...]:
    """Block observer form of ``y[k] = sum_i A_i y[k-i] + sum_l Bt_l u[k-l]`` (Bt_l = B_{l-nk}).

    With d = max(na, nk + nb - 1, 1) blocks of p states, ``y = x_1 + Bt_0 u`` and
    ``x_i[k+1] = A_i y[k] + x_{i+1}[k] + Bt_i u[k]``.
    """
    d = max(na, nk + nb - 1, 1)
    Ai = np.zeros((d + 1, p, p))
    Bt = np.zeros((d + 1, p, m))
    for i in range(1, na + 1):
        Ai[i] = theta[(i - 1) * p : i * p].T
    for j in range(nb):
        Bt[nk + j] = theta[na * p + j * m : na * p + (j + 1) * m].T
    A = np.zeros((d * p, d * p))
    B = np.zeros((d * p, m))
    for i in range(1, d + 1):
        rows = slice((i - 1) * p, i * p)
        A[rows, :p] = Ai[i]
        if i < d:
            A[rows, i * p : (i + 1) * p] = np.eye(p)
        B[rows] = Bt[i] + Ai[i] @ Bt[0]
    C = np.zeros((p, d * p))
    C[:, :p] = np.eye(p)
    return A, B, C, Bt[0]


def fit_arx(
    records: Sequence[Record],
    na: int,
    nb: int,
    nk: int = 1,
    *,
    ridge: float = 0.0,
    dt: float | None = None,
) -> LinearStateSpace:
    """Fit a MIMO ARX model by least squares and return it as a state-space model.

    ``y[k] = sum_{i=1}^{na} A_i y[k-i] + sum_{j=0}^{nb-1} B_j u[k-nk-j] + e[k]`` with full matrices
    ``A_i (n_y, n_y)`` and ``B_j (n_y, n_u)`` plus an intercept, fitted on normalised data. The
    state-space form is the block observer realisation with ``max(na, nk + nb - 1, 1) * n_y`` states; the
    intercept becomes the operating point ``y_mean``.

    Args:
        records: list of ``(u (T, n_u), y (T, n_y))`` pairs or objects with ``.u``/``.y``.
        na: number of output lags, >= 0.
        nb: number of input lags, >= 1.
        nk: input delay in samples, >= 0 (0 gives a direct feedthrough term).
        ridge: Tikhonov weight, >= 0; minimises ``mean squared error + ridge * ||theta||^2``.
        dt: sampling time; if None the records' common ``.dt`` or 1.0.

    Returns:
        The fitted model, in physical units.

    Raises:
        DataError: malformed records, or fewer regression rows than parameters.
        ConfigError: bad orders, ridge or dt.
    """
    recs, dt = _records(records, dt)
    na = _positive_int("na", na, 0)
    nb = _positive_int("nb", nb, 1)
    nk = _positive_int("nk", nk, 0)
    if not (isinstance(ridge, int | float) and np.isfinite(ridge) and ridge >= 0):
        raise ConfigError(f"ridge must be a finite number >= 0; found {ridge!r}")
    m, p = recs[0][0].shape[1], recs[0][1].shape[1]
    stats = _scaling(recs)
    n_theta = na * p + nb * m
    theta = _lstsq(_arx_blocks(_normalised(recs, stats), na, nb, nk), n_theta + 1, p, float(ridge), n_free=1)
    A, B, C, D = _arx_realisation(theta[:n_theta], na, nb, nk, m, p)
    # the intercept moves the operating point: y_eq solves (I - sum_i A_i) y_eq = c
    gain = np.eye(p) - sum((theta[(i - 1) * p : i * p].T for i in range(1, na + 1)), np.zeros((p, p)))
    y_eq, *_ = np.linalg.lstsq(gain, theta[n_theta], rcond=None)
    stats["y_mean"] = stats["y_mean"] + stats["y_std"] * y_eq
    return LinearStateSpace(A, B, C, D, dt, **stats)


def fit_fir(
    records: Sequence[Record], n_taps: int, *, ridge: float = 0.0, dt: float | None = None
) -> LinearStateSpace:
    """Fit a FIR model ``y[k] = sum_{i=0}^{n_taps-1} H_i u[k-i]`` by least squares.

    The model is returned as a shift-register state space with ``(n_taps - 1) * n_y`` states (A nilpotent),
    the observer form of ARX with ``na=0, nk=0, nb=n_taps``.

    Args:
        records: list of ``(u (T, n_u), y (T, n_y))`` pairs or objects with ``.u``/``.y``.
        n_taps: number of impulse-response coefficients including lag 0, >= 1.
        ridge: Tikhonov weight, >= 0; minimises ``mean squared error + ridge * ||theta||^2``.
        dt: sampling time; if None the records' common ``.dt`` or 1.0.

    Returns:
        The fitted model, in physical units.

    Raises:
        DataError: malformed records, or fewer regression rows than parameters.
        ConfigError: bad n_taps, ridge or dt.
    """
    n_taps = _positive_int("n_taps", n_taps, 1)
    return fit_arx(records, 0, n_taps, 0, ridge=ridge, dt=dt)


# ----------------------------------------------------------------------------------------------------------
# subspace identification


def _hankel_blocks(recs: list[tuple[np.ndarray, np.ndarray]], i: int) -> Iterator[np.ndarray]:
    """Columns of the block Hankel matrix ``[1; U_f; U_p; Y_p; Y_f]`` as rows, chunked, per record.

    The row of ones treats a constant offset left by the normalisation as a known future input, so the
    projection removes it instead of it showing up as an extra pole at z = 1.
    """
    for u, y in recs:
        n_cols = u.shape[0] - 2 * i + 1
        for j0 in range(0, n_cols, _CHUNK_ROWS):
            j1 = min(j0 + _CHUNK_ROWS, n_cols)
            wu = sliding_window_view(u[j0 : j1 + 2 * i - 1], 2 * i, axis=0).transpose(0, 2, 1)  # (c, 2i, m)
            wy = sliding_window_view(y[j0 : j1 + 2 * i - 1], 2 * i, axis=0).transpose(0, 2, 1)  # (c, 2i, p)
            c = j1 - j0
            yield np.hstack(
                [
                    np.ones((c, 1)),
                    wu[:, i:].reshape(c, -1),  # U_f
                    wu[:, :i].reshape(c, -1),  # U_p
                    wy[:, :i].reshape(c, -1),  # Y_p
                    wy[:, i:].reshape(c, -1),  # Y_f
                ]
            )


def _observability_svd(recs: list[tuple[np.ndarray, np.ndarray]], i: int) -> tuple[np.ndarray, np.ndarray]:
    """PO-MOESP: left singular vectors (i p, i p) and values (i p,) of ``L32`` from the LQ factorisation."""
    m, p = recs[0][0].shape[1], recs[0][1].shape[1]
    n_rows = 2 * i * (m + p) + 1
    n_cols = sum(max(u.shape[0] - 2 * i + 1, 0) for u, _ in recs)
    if n_cols < n_rows:
        raise DataError(
            f"not enough data for horizon {i}: {n_cols} Hankel columns, need at least {n_rows}; "
            "use longer records or a smaller horizon"
        )
    L = _qr_accumulate(_hankel_blocks(recs, i), n_rows).T  # lower triangular, H = L Q^T
    L32 = L[1 + i * (2 * m + p) :, 1 + i * m : 1 + i * (2 * m + p)]  # Y_f rows, [U_p; Y_p] columns
    U, s, _ = np.linalg.svd(L32)
    return U, s


def _stabilise(A: np.ndarray) -> np.ndarray:
    """Reflect eigenvalues outside the unit circle inside: ``lam -> 1/conj(lam)`` (radius <= _MAX_RADIUS)."""
    lam, V = np.linalg.eig(A)
    radius = np.abs(lam)
    if np.all(radius < 1.0):
        return A
    new = np.where(radius >= 1.0, lam / radius * np.minimum(1.0 / radius, _MAX_RADIUS), lam)
    return np.linalg.solve(V.T, (V * new).T).T.real


def _output_error_bd(
    A: np.ndarray, C: np.ndarray, recs: list[tuple[np.ndarray, np.ndarray]], feedthrough: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """B (n, m), D (p, m) and an output offset (p,) minimising the simulation error.

    ``y[k] = C A^k x0_r + sum_{a,b} B_ab (C A^{.} e_a * u_b)[k] + D u[k] + offset`` is linear in
    (B, D, offset, x0_r), with one free initial state per record; each B regressor is one simulation with a
    unit B column. Memory: the regressors of one record, ``8 T n_y (n (n_u + 1) + n_y (n_u + 1))`` bytes.
    """
    n, p, m = A.shape[0], C.shape[0], recs[0][0].shape[1]
    n_bd = n * m + (p * m if feedthrough else 0)
    n_fixed = n_bd + p  # B, D, offset
    n_params = n_fixed + n * len(recs)
    zero_b, zero_d = np.zeros((n, 1)), np.zeros((p, 1))

    def blocks() -> Iterator[np.ndarray]:
        for r, (u, y) in enumerate(recs):
            T = u.shape[0]
            phi = np.zeros((T, p, n_params + 1))  # rows (k, output channel)
            for b in range(m):
                for a in range(n):
                    e_a = np.zeros((n, 1))
                    e_a[a] = 1.0
                    phi[:, :, b * n + a] = simulate_state_space(A, e_a, C, zero_d, u[:, b : b + 1], np.zeros(n))[0]
                if feedthrough:
                    for c in range(p):
                        phi[:, c, n * m + b * p + c] = u[:, b]
            for c in range(p):
                phi[:, c, n_bd + c] = 1.0
            for a in range(n):
                phi[:, :, n_fixed + r * n + a] = simulate_state_space(
                    A, zero_b, C, zero_d, np.zeros((T, 1)), np.eye(n)[a]
                )[0]
            phi[:, :, -1] = y
            rows = phi.reshape(T * p, n_params + 1)
            for k0 in range(0, T * p, _CHUNK_ROWS):
                yield rows[k0 : k0 + _CHUNK_ROWS]

    theta = _lstsq(blocks(), n_params, 1)[:, 0]
    B = theta[: n * m].reshape(m, n).T
    D = theta[n * m : n_bd].reshape(m, p).T if feedthrough else np.zeros((p, m))
    return B, D, theta[n_bd:n_fixed]


def _realise(
    U: np.ndarray,
    s: np.ndarray,
    order: int,
    recs: list[tuple[np.ndarray, np.ndarray]],
    feedthrough: bool,
    stats: dict[str, np.ndarray],
    dt: float,
) -> LinearStateSpace:
    """The model of the given order from the observability SVD, the normalised records and their scaling."""
    p = recs[0][1].shape[1]
    gamma = U[:, :order] * np.sqrt(s[:order])  # extended observability matrix (i p, n)
    C = gamma[:p]
    A, *_ = np.linalg.lstsq(gamma[:-p], gamma[p:], rcond=None)
    A = _stabilise(A)
    B, D, offset = _output_error_bd(A, C, recs, feedthrough)
    y_mean = stats["y_mean"] + stats["y_std"] * offset
    return LinearStateSpace(A, B, C, D, dt, stats["u_mean"], stats["u_std"], y_mean, stats["y_std"])


def _check_subspace_args(order: object, horizon: object, p: int) -> tuple[int, int]:
    order = _positive_int("order", order, 1)
    horizon = _positive_int("horizon", horizon, 2)
    if (horizon - 1) * p < order:
        raise ConfigError(
            f"horizon={horizon} is too short for order={order} with {p} output(s): "
            f"need (horizon - 1) * n_y >= order"
        )
    return order, horizon


def fit_n4sid(
    records: Sequence[Record],
    order: int,
    horizon: int = 20,
    *,
    feedthrough: bool = True,
    dt: float | None = None,
) -> LinearStateSpace:
    """Subspace identification (PO-MOESP) of a stable linear state-space model.

    Steps: normalise; LQ factor of the block Hankel matrix ``[1; U_f; U_p; Y_p; Y_f]`` (past and future of
    ``horizon`` samples, columns stacked over records); SVD of the block ``L32`` relating the future outputs
    to the past data; extended observability matrix ``Gamma = U_n S_n^{1/2}``; ``C = Gamma[:n_y]`` and A from
    ``Gamma[:-n_y] A = Gamma[n_y:]`` (least squares); reflection of unstable eigenvalues of A; then B, D, an
    output offset (folded into ``y_mean``) and one initial state per record by least squares on the
    simulated output.

    Cost: one QR of a (sum T, 2 horizon (n_u + n_y)) matrix, built in chunks, plus ``n (n_u + #records)``
    simulations for the B/D step.

    Args:
        records: list of ``(u (T, n_u), y (T, n_y))`` pairs or objects with ``.u``/``.y``.
        order: model order n, >= 1.
        horizon: past/future block rows i, with ``(i - 1) n_y >= n``; 10 to 40 is typical.
        feedthrough: estimate D (else D = 0).
        dt: sampling time; if None the records' common ``.dt`` or 1.0.

    Returns:
        The fitted model (Schur stable), in physical units.

    Raises:
        DataError: malformed records or too little data for the horizon.
        ConfigError: bad order, horizon or dt.
    """
    recs, dt = _records(records, dt)
    order, horizon = _check_subspace_args(order, horizon, recs[0][1].shape[1])
    stats = _scaling(recs)
    recs_n = _normalised(recs, stats)
    U, s = _observability_svd(recs_n, horizon)
    return _realise(U, s, order, recs_n, bool(feedthrough), stats, dt)


def best_linear(
    records: Sequence[Record],
    val: Record,
    orders: Sequence[int] = (2, 4, 6, 8, 10),
    horizon: int = 20,
    *,
    n_skip: int = 0,
    feedthrough: bool = True,
    dt: float | None = None,
) -> tuple[LinearStateSpace, dict[int, float]]:
    """N4SID models of several orders; the one with the lowest validation simulation RMSE wins.

    The subspace SVD is computed once and shared by all orders.

    Args:
        records: training records, as in :func:`fit_n4sid`.
        val: validation record ``(u (T, n_u), y (T, n_y))`` or an object with ``.u``/``.y``.
        orders: candidate orders, each >= 1 with ``(horizon - 1) n_y >= order``.
        horizon: past/future block rows of the subspace step.
        n_skip: leading validation samples left out of the RMSE (transient from the zero state), >= 0.
        feedthrough: estimate D (else D = 0).
        dt: sampling time; if None the records' common ``.dt`` or 1.0.

    Returns:
        (best model, {order: validation RMSE over all output channels, in physical units}).

    Raises:
        DataError: malformed records, or a validation record not longer than n_skip.
        ConfigError: bad orders, horizon, n_skip or dt.
    """
    recs, dt = _records(records, dt)
    [(u_val, y_val)], _ = _records([val], None)
    n_skip = _positive_int("n_skip", n_skip, 0)
    if y_val.shape[0] <= n_skip:
        raise DataError(f"validation record has {y_val.shape[0]} samples, not more than n_skip={n_skip}")
    if len(orders) == 0:
        raise ConfigError("orders must list at least one model order")
    checked = [_check_subspace_args(o, horizon, recs[0][1].shape[1]) for o in orders]
    stats = _scaling(recs)
    recs_n = _normalised(recs, stats)
    U, s = _observability_svd(recs_n, checked[0][1])
    models: dict[int, LinearStateSpace] = {}
    scores: dict[int, float] = {}
    for order, _ in checked:
        models[order] = _realise(U, s, order, recs_n, bool(feedthrough), stats, dt)
        err = models[order].simulate(u_val)[n_skip:] - y_val[n_skip:]
        scores[order] = float(np.sqrt(np.mean(err**2)))
    return models[min(scores, key=scores.__getitem__)], scores


def identify_linear(
    train: Sequence[Record],
    val: Sequence[tuple[Record, int]],
    *,
    max_order: int = 10,
    horizon: int = 20,
    order: int | None = None,
    max_modes: int | None = None,
) -> LinearStateSpace:
    """The best N4SID model of the training records, its order chosen on a validation record.

    Orders 1..``max_order`` (at most ``(horizon - 1) n_y`` and ``2 max_modes``), or ``order`` alone, are fitted on
    ``train``; the one with the lowest simulation RMSE on the validation record with the most scored samples
    wins. With ``max_modes``, an order whose poles need more complex modes (one per conjugate pair or real pole)
    is dropped and the next best taken.

    Args:
        train: training records (``IOData``, or objects with ``.u: (T, n_u)``, ``.y: (T, n_y)``), one dt.
        val: validation records ``(record, start)``: simulated in full from the zero state, scored from sample
            ``start`` on (``data.ValidationRecord``); at least one.
        max_order: largest candidate order.
        horizon: past/future block rows of the subspace step.
        order: the one order to fit instead of choosing among 1..max_order.
        max_modes: most complex modes the model may need (a layer's ``d_state``), or None.

    Returns:
        The selected ``LinearStateSpace`` (Schur stable), in physical units.

    Raises:
        ConfigError: no validation records, or bad orders or horizon.
        DataError: too little data for the horizon, or nothing left to score in the validation record.
    """
    if not val:
        raise ConfigError("the linear model's order is chosen on validation data, and there is none: set "
                          "val_fraction > 0 or give validation records")
    record, start = max(val, key=lambda pair: len(pair[0].y) - pair[1])
    limit = min(max_order, (horizon - 1) * train[0].y.shape[1])
    orders = [order] if order is not None else list(range(1, (limit if max_modes is None else
                                                              min(limit, 2 * max_modes)) + 1))
    while True:
        linear, scores = best_linear(train, record, orders, horizon, n_skip=start)
        if max_modes is None or _n_modes(linear.A) <= max_modes:
            logger.info("linear model: order %d of %s (validation RMSE by order: %s)", linear.n_states, orders,
                        ", ".join(f"{k}: {v:.4g}" for k, v in scores.items()))
            return linear
        orders.remove(linear.n_states)  # order 1 needs one mode, so the loop ends


def _n_modes(A: np.ndarray) -> int:
    """Complex modes of a real A in half-pair form: one per conjugate pair or real eigenvalue."""
    return int(np.sum(np.linalg.eigvals(A).imag >= 0))
