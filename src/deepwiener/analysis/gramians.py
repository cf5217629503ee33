"""Discrete-time Gramians, Hankel singular values, balanced truncation and the H-infinity norm.

All functions take a discrete-time system ``x[k+1] = A x[k] + B u[k]``, ``y[k] = C x[k] + D u[k]`` as plain
numpy arrays: ``A (n, n)``, ``B (n, m)``, ``C (p, n)``, ``D (p, m)``. Real inputs give real outputs; complex
matrices (for example a conjugate-completed diagonal system) are accepted as well.

Definitions (A Schur stable, spectral radius < 1):

- controllability Gramian ``P = sum_k A^k B B^H (A^H)^k``, the solution of ``P = A P A^H + B B^H``;
- observability Gramian ``Q = sum_k (A^H)^k C^H C A^k``, the solution of ``Q = A^H Q A + C^H C``;
- Hankel singular values ``sigma_i = sqrt(eig_i(P Q))``, sorted descending;
- balanced truncation to order r keeps the r largest ``sigma_i`` and satisfies the a-priori bound
  ``||G - G_r||_inf <= 2 * sum_{i > r} sigma_i`` (Enns 1984; Glover 1984; Al-Saggaf & Franklin 1987 for
  discrete time);
- ``||G||_inf = max_w sigma_max(G(e^{jw}))`` over ``w`` in ``[0, pi]`` (rad/sample).

The Lyapunov solver is a Bartels-Stewart recursion on the complex Schur form. Square roots of the Gramians
are taken through symmetric eigendecompositions with negative round-off eigenvalues floored at zero, so
singular and nearly singular Gramians (non-minimal systems) are handled.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import scipy.optimize

from deepwiener.errors import ConfigError, is_integer_in

__all__ = [
    "balanced_truncation",
    "controllability_gramian",
    "diagonal_gramians",
    "frequency_response",
    "hankel_singular_values",
    "hinf_norm",
    "hsv_from_gramians",
    "observability_gramian",
]

# Frequency-response evaluations are batched so that a batch of (e^{jw} I - A) stays below ~32 MiB.
_BATCH_BYTES = 32 * 2**20


def _matrix(name: str, value: object, ndim: int = 2) -> np.ndarray:
    """``value`` as a finite float64/complex128 array with ``ndim`` dimensions, or ConfigError."""
    arr = np.asarray(value)
    if arr.dtype.kind not in "biufc":
        raise ConfigError(f"{name} must be a numeric array; found dtype {arr.dtype}")
    arr = arr.astype(np.complex128 if arr.dtype.kind == "c" else np.float64, copy=False)
    if arr.ndim != ndim:
        raise ConfigError(f"{name} must have {ndim} dimension(s); found shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ConfigError(f"{name} contains NaN or inf")
    return arr


def _check_system(
    A: object, B: object | None = None, C: object | None = None, D: object | None = None
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """Validate the shapes of (A, B, C, D); ``None`` entries are skipped."""
    A = _matrix("A", A)
    n = A.shape[0]
    if A.shape != (n, n) or n == 0:
        raise ConfigError(f"A must be square and non-empty; found shape {A.shape}")
    B = None if B is None else _matrix("B", B)
    C = None if C is None else _matrix("C", C)
    D = None if D is None else _matrix("D", D)
    if B is not None and B.shape[0] != n:
        raise ConfigError(f"B must have n={n} rows to match A; found shape {B.shape}")
    if C is not None and C.shape[1] != n:
        raise ConfigError(f"C must have n={n} columns to match A; found shape {C.shape}")
    if D is not None and B is not None and C is not None and D.shape != (C.shape[0], B.shape[1]):
        raise ConfigError(f"D must have shape (p, m)={(C.shape[0], B.shape[1])}; found shape {D.shape}")
    return A, B, C, D


def _require_schur(A: np.ndarray, what: str) -> None:
    """Raise ConfigError unless every eigenvalue of A lies strictly inside the unit circle."""
    radius = float(np.max(np.abs(np.linalg.eigvals(A))))
    if radius >= 1.0:
        raise ConfigError(
            f"{what} needs a Schur-stable A (spectral radius < 1); found spectral radius {radius:.6g}"
        )


def _stein(A: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Solve ``X = A X A^H + W`` for Hermitian W by Bartels-Stewart on the complex Schur form of A.

    With ``A = U T U^H`` (T upper triangular) and ``Y = U^H X U``, column j of ``Y - T Y T^H = U^H W U``
    depends only on columns j..n-1, so the columns are solved from last to first, each with one
    triangular solve of ``(I - conj(T_jj) T) y_j = rhs_j``.

    Args:
        A: (n, n) real or complex, Schur stable.
        W: (n, n) Hermitian.

    Returns:
        X: (n, n) Hermitian; real when A and W are real.
    """
    T, U = scipy.linalg.schur(A.astype(np.complex128), output="complex")
    F = U.conj().T @ W @ U
    n = A.shape[0]
    Y = np.zeros((n, n), dtype=np.complex128)
    eye = np.eye(n)
    for j in range(n - 1, -1, -1):
        # sum_{k > j} Y[:, k] conj(T[j, k]) carries the already solved columns
        tail = Y[:, j + 1 :] @ T[j, j + 1 :].conj()
        rhs = F[:, j] + T @ tail
        Y[:, j] = scipy.linalg.solve_triangular(eye - np.conj(T[j, j]) * T, rhs)
    X = U @ Y @ U.conj().T
    X = 0.5 * (X + X.conj().T)
    if not np.iscomplexobj(A) and not np.iscomplexobj(W):
        return X.real
    return X


def controllability_gramian(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Discrete controllability Gramian, the solution of ``P = A P A^H + B B^H``.

    Args:
        A: (n, n) state matrix, spectral radius < 1.
        B: (n, m) input matrix.

    Returns:
        P: (n, n) Hermitian positive semidefinite; real for real inputs.

    Raises:
        ConfigError: bad shapes, NaN/inf, or A not Schur stable (the message gives the spectral radius).
    """
    A, B, _, _ = _check_system(A, B)
    _require_schur(A, "controllability_gramian")
    return _stein(A, B @ B.conj().T)


def observability_gramian(A: np.ndarray, C: np.ndarray) -> np.ndarray:
    """Discrete observability Gramian, the solution of ``Q = A^H Q A + C^H C``.

    Args:
        A: (n, n) state matrix, spectral radius < 1.
        C: (p, n) output matrix.

    Returns:
        Q: (n, n) Hermitian positive semidefinite; real for real inputs.

    Raises:
        ConfigError: bad shapes, NaN/inf, or A not Schur stable (the message gives the spectral radius).
    """
    A, _, C, _ = _check_system(A, None, C)
    _require_schur(A, "observability_gramian")
    return _stein(A.conj().T, C.conj().T @ C)


def diagonal_gramians(lam: np.ndarray, B: np.ndarray, C: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Closed-form Gramians of a complex diagonal system ``A = diag(lam)``.

    ``P_ij = (B B^H)_ij / (1 - lam_i conj(lam_j))`` and ``Q_ij = (C^H C)_ij / (1 - conj(lam_i) lam_j)``.
    For a layer with real output ``y = Re(C x)``, apply this to the conjugate-completed system
    ``lam_c = [lam, conj(lam)]``, ``B_c = [B; conj(B)]``, ``C_c = [C, conj(C)] / 2`` (order 2n): it has the
    same transfer function, hence the same Hankel singular values, as the real 2x2-block realisation.

    Args:
        lam: (n,) complex eigenvalues, all with modulus < 1.
        B: (n, m) complex input matrix.
        C: (p, n) complex output matrix.

    Returns:
        (P, Q): each (n, n) complex Hermitian.

    Raises:
        ConfigError: bad shapes, NaN/inf, or some ``|lam_i| >= 1``.
    """
    lam = _matrix("lam", lam, ndim=1).astype(np.complex128)
    B = _matrix("B", B)
    C = _matrix("C", C)
    n = lam.shape[0]
    if n == 0 or B.shape[0] != n or C.shape[1] != n:
        raise ConfigError(
            f"lam (n,), B (n, m) and C (p, n) must agree on n >= 1; found {lam.shape}, {B.shape}, {C.shape}"
        )
    radius = float(np.max(np.abs(lam)))
    if radius >= 1.0:
        raise ConfigError(f"diagonal_gramians needs |lam| < 1; found spectral radius {radius:.6g}")
    P = (B @ B.conj().T) / (1.0 - lam[:, None] * lam.conj()[None, :])
    Q = (C.conj().T @ C) / (1.0 - lam.conj()[:, None] * lam[None, :])
    return P, Q


def _sqrt_factor(G: np.ndarray) -> np.ndarray:
    """Factor L with ``G = L L^H`` from a Hermitian eigendecomposition (negatives floored to 0)."""
    w, V = np.linalg.eigh(0.5 * (G + G.conj().T))
    return V * np.sqrt(np.clip(w, 0.0, None))


def _balancing_svd(
    P: np.ndarray, Q: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Factors of the square-root method: ``Lq^H Lp = U diag(hsv) V^H``; returns (Lp, Lq, U, hsv, V)."""
    Lp = _sqrt_factor(P)
    Lq = _sqrt_factor(Q)
    U, hsv, Vh = np.linalg.svd(Lq.conj().T @ Lp)
    return Lp, Lq, U, hsv, Vh.conj().T


def hsv_from_gramians(P: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """Hankel singular values from given Gramians: the singular values of ``Lq^H Lp``.

    Equals ``sqrt(eig(P Q))`` but stays accurate when P or Q is nearly singular.

    Args:
        P: (n, n) controllability Gramian, Hermitian positive semidefinite.
        Q: (n, n) observability Gramian, Hermitian positive semidefinite.

    Returns:
        hsv: (n,) real, non-negative, sorted descending.

    Raises:
        ConfigError: P and Q not square matrices of the same size, or NaN/inf.
    """
    P = _matrix("P", P)
    Q = _matrix("Q", Q)
    if P.shape != Q.shape or P.shape[0] != P.shape[1]:
        raise ConfigError(f"P and Q must be square with the same shape; found {P.shape} and {Q.shape}")
    return _balancing_svd(P, Q)[3]


def hankel_singular_values(A: np.ndarray, B: np.ndarray, C: np.ndarray) -> np.ndarray:
    """Hankel singular values of a stable discrete-time system.

    Args:
        A: (n, n) state matrix, spectral radius < 1.
        B: (n, m) input matrix.
        C: (p, n) output matrix.

    Returns:
        hsv: (n,) real, non-negative, sorted descending.

    Raises:
        ConfigError: bad shapes, NaN/inf, or A not Schur stable.
    """
    return hsv_from_gramians(controllability_gramian(A, B), observability_gramian(A, C))


def balanced_truncation(
    A: np.ndarray,
    B: np.ndarray,
    C: np.ndarray,
    D: np.ndarray,
    order: int | None = None,
    tol: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Square-root balanced truncation of a stable discrete-time system.

    With ``P = Lp Lp^H``, ``Q = Lq Lq^H`` and ``Lq^H Lp = U S V^H``, the projections
    ``Tl = S_r^{-1/2} U_r^H Lq^H`` (r, n) and ``Tr = Lp V_r S_r^{-1/2}`` (n, r) give
    ``(Ar, Br, Cr, Dr) = (Tl A Tr, Tl B, C Tr, D)``: the leading r states of the balanced realisation (whose
    Gramians both equal ``diag(hsv)``; in discrete time the truncated part is stable but, unlike continuous
    time, not itself exactly balanced). The error bound ``||G - G_r||_inf <= 2 * sum(hsv[r:])`` holds.

    Give exactly one of ``order`` and ``tol``. With ``tol`` the smallest r with ``2 * sum(hsv[r:]) <= tol``
    is kept, so the H-infinity error is at most ``tol``.

    Args:
        A: (n, n) state matrix, spectral radius < 1.
        B: (n, m) input matrix.
        C: (p, n) output matrix.
        D: (p, m) feedthrough matrix.
        order: number of states to keep, 1 <= order <= n.
        tol: bound on the H-infinity norm of the error, > 0.

    Returns:
        (Ar (r, r), Br (r, m), Cr (p, r), Dr (p, m), hsv (n,) all Hankel singular values, descending).

    Raises:
        ConfigError: both or neither of order/tol, order out of range, tol <= 0, a kept Hankel singular
            value that is numerically zero (order above the minimal order), bad shapes, or A not stable.
    """
    A, B, C, D = _check_system(A, B, C, D)
    if (order is None) == (tol is None):
        raise ConfigError(f"give exactly one of order and tol; found order={order!r}, tol={tol!r}")
    n = A.shape[0]
    P = controllability_gramian(A, B)
    Q = observability_gramian(A, C)
    Lp, Lq, U, hsv, V = _balancing_svd(P, Q)
    if tol is not None:
        if not tol > 0:
            raise ConfigError(f"tol must be > 0; found {tol!r}")
        tails = 2.0 * np.cumsum(hsv[::-1])[::-1]  # tails[r] = 2 * sum(hsv[r:])
        r = int(np.argmax(np.append(tails, 0.0) <= tol))
        r = max(r, 1)
    else:
        if not is_integer_in(order, 1, n):
            raise ConfigError(f"order must be an integer in [1, {n}]; found {order!r}")
        r = int(order)
    if hsv[r - 1] <= n * np.finfo(float).eps * max(hsv[0], np.finfo(float).tiny):
        minimal = int(np.sum(hsv > n * np.finfo(float).eps * hsv[0]))
        raise ConfigError(
            f"cannot keep {r} states: Hankel singular value {r} is numerically zero ({hsv[r - 1]:.3g}); "
            f"the numerically minimal order is {minimal}"
        )
    scale = 1.0 / np.sqrt(hsv[:r])
    Tl = scale[:, None] * (U[:, :r].conj().T @ Lq.conj().T)  # (r, n)
    Tr = (Lp @ V[:, :r]) * scale[None, :]  # (n, r)
    return Tl @ A @ Tr, Tl @ B, C @ Tr, D.copy(), hsv


def frequency_response(
    A: np.ndarray, B: np.ndarray, C: np.ndarray, D: np.ndarray, omega: np.ndarray
) -> np.ndarray:
    """Frequency response ``G(e^{jw}) = C (e^{jw} I - A)^{-1} B + D``.

    Each value is computed by solving ``(e^{jw} I - A) X = B`` (batched LU), never by forming an inverse.

    Args:
        A: (n, n) state matrix.
        B: (n, m) input matrix.
        C: (p, n) output matrix.
        D: (p, m) feedthrough matrix.
        omega: (f,) frequencies in rad/sample (a scalar is treated as one frequency).

    Returns:
        G: (f, p, m) complex128.

    Raises:
        ConfigError: bad shapes or NaN/inf.
    """
    A, B, C, D = _check_system(A, B, C, D)
    omega = _matrix("omega", np.atleast_1d(omega), ndim=1)
    if np.iscomplexobj(omega):
        raise ConfigError("omega must be real (rad/sample); found complex values")
    n = A.shape[0]
    z = np.exp(1j * omega)  # (f,)
    out = np.empty((z.shape[0], C.shape[0], B.shape[1]), dtype=np.complex128)
    batch = max(1, _BATCH_BYTES // (16 * n * n))
    eye = np.eye(n)
    for start in range(0, z.shape[0], batch):
        zb = z[start : start + batch]
        M = zb[:, None, None] * eye - A  # (b, n, n)
        X = np.linalg.solve(M, np.broadcast_to(B, (zb.shape[0], *B.shape)))  # (b, n, m)
        out[start : start + batch] = C @ X + D
    return out


def hinf_norm(
    A: np.ndarray, B: np.ndarray, C: np.ndarray, D: np.ndarray, n_grid: int = 2048
) -> tuple[float, float]:
    """H-infinity norm of a stable discrete-time system and the frequency where it is attained.

    The largest singular value of ``G(e^{jw})`` is evaluated on a uniform grid of ``n_grid`` points on
    ``[0, pi]`` (``[-pi, pi]`` for complex matrices, whose response is not conjugate symmetric), merged with
    the pole angles and points at a half-bandwidth ``1 - |lam|`` either side of them, so resonance peaks
    narrower than the grid spacing are sampled. The best local maxima are then refined by Brent's bounded
    search between their grid neighbours.

    Args:
        A: (n, n) state matrix, spectral radius < 1.
        B: (n, m) input matrix.
        C: (p, n) output matrix.
        D: (p, m) feedthrough matrix.
        n_grid: number of uniform grid points, >= 16.

    Returns:
        (norm, omega_peak): the norm and the peak frequency in rad/sample.

    Raises:
        ConfigError: bad shapes, NaN/inf, n_grid < 16, or A not Schur stable.
    """
    A, B, C, D = _check_system(A, B, C, D)
    if not is_integer_in(n_grid, 16):
        raise ConfigError(f"n_grid must be an integer >= 16; found {n_grid!r}")
    _require_schur(A, "hinf_norm")
    is_complex = any(np.iscomplexobj(M) for M in (A, B, C, D))
    lo = -np.pi if is_complex else 0.0
    lam = np.linalg.eigvals(A)
    theta = np.angle(lam) if is_complex else np.abs(np.angle(lam))
    width = 1.0 - np.abs(lam)
    grid = np.concatenate([np.linspace(lo, np.pi, n_grid), theta, theta - width, theta + width])
    grid = np.unique(np.clip(grid, lo, np.pi))

    def gain(w: np.ndarray) -> np.ndarray:
        return np.linalg.norm(frequency_response(A, B, C, D, w), ord=2, axis=(1, 2))

    g = gain(grid)
    padded = np.concatenate([[-np.inf], g, [-np.inf]])
    peaks = np.flatnonzero((padded[1:-1] >= padded[:-2]) & (padded[1:-1] >= padded[2:]))
    best_norm, best_w = float(g.max()), float(grid[np.argmax(g)])
    for k in peaks[np.argsort(g[peaks])[::-1][:8]]:
        left, right = grid[max(k - 1, 0)], grid[min(k + 1, grid.size - 1)]
        res = scipy.optimize.minimize_scalar(
            lambda w: -gain(np.array([w]))[0],
            bounds=(left, right),
            method="bounded",
            options={"xatol": 1e-12},
        )
        if -res.fun > best_norm:
            best_norm, best_w = float(-res.fun), float(res.x)
    return best_norm, best_w
