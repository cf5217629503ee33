"""Initialisers as pure functions of a ``torch.Generator`` (no global RNG).

HiPPO-LegS (Gu et al. 2020): A[n,k] = -sqrt(2n+1) sqrt(2k+1) for n > k, -(n+1) for n = k, 0 for n < k;
B[n] = sqrt(2n+1). Adding P P^T with P[n] = sqrt(n + 1/2) gives the normal matrix S = -I/2 + skew
("HiPPO-N"), whose eigenvalues are -1/2 + i w. Keeping the eigenvalues with w > 0 of a size-2N matrix gives
N modes; their conjugates are implied by the Re(C x) output.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor


def hippo_legs(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """HiPPO-LegS (A, B, P) as float64 numpy arrays of shapes (size, size), (size,), (size,)."""
    q = np.sqrt(2 * np.arange(size) + 1.0)
    A = -np.tril(np.outer(q, q), -1) - np.diag(np.arange(size) + 1.0)
    return A, q.copy(), np.sqrt(np.arange(size) + 0.5)


def hippo_dplr(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """HiPPO-LegS of ``size`` in DPLR form: A = V (diag(lam) - Pt Pt^*) V^* and B = V Bt, exactly.

    The normal part S = A + P P^T = -I/2 + skew is diagonalised by the unitary V.

    Returns:
        lam (size,) complex eigenvalues of S (real part -1/2, sorted by frequency, ascending), Pt = V^* P and
        Bt = V^* B, each (size,) complex, and V (size, size).
    """
    A, B, P = hippo_legs(size)
    skew = A + np.outer(P, P) + 0.5 * np.eye(size)
    w, V = np.linalg.eigh(-1j * skew)  # skew = i * Hermitian; w ascending
    return -0.5 + 1j * w, V.conj().T @ P, V.conj().T @ B, V


def hippo_normal_modes(n_modes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The upper-half-plane modes of ``hippo_dplr(2 n_modes)``.

    Returns:
        lam (n_modes,) complex eigenvalues (real part -1/2, sorted by frequency), and the HiPPO vectors
        P and B expressed in the eigenbasis, V^* P and V^* B, each (n_modes,) complex; and V (2n, n_modes).
    """
    lam, P, B, V = hippo_dplr(2 * n_modes)
    keep = slice(n_modes, None)  # the n_modes positive frequencies
    return lam[keep], P[keep], B[keep], V[:, keep]


def s4d_eigenvalues(kind: str, n_modes: int) -> np.ndarray:
    """S4D initial eigenvalues (n_modes,) complex: "legs" (HiPPO diagonal), "lin" or "inv"."""
    n = np.arange(n_modes)
    if kind == "legs":
        return hippo_normal_modes(n_modes)[0]
    if kind == "lin":
        return -0.5 + 1j * np.pi * n
    if kind == "inv":
        return -0.5 + 1j * (n_modes / np.pi) * (n_modes / (2 * n + 1) - 1)
    raise ValueError(kind)


def log_uniform(shape: tuple[int, ...], low: float, high: float, gen: torch.Generator) -> Tensor:
    """Log of samples log-uniform in [low, high]: (shape) float32."""
    r = torch.rand(shape, generator=gen)
    return math.log(low) + r * (math.log(high) - math.log(low))


def ring(n: int, r_min: float, r_max: float, max_phase: float, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """LRU ring initialisation: eigenvalues uniform over the annulus sector r_min <= |lam| <= r_max,
    0 < arg(lam) <= max_phase. Returns (nu, theta) with lam = exp(-exp(nu) + i exp(theta)), each (n,)."""
    u1 = torch.rand(n, generator=gen, dtype=torch.float64)
    u2 = torch.rand(n, generator=gen, dtype=torch.float64)
    radius_sq = u1 * (r_max**2 - r_min**2) + r_min**2
    nu = torch.log(-0.5 * torch.log(radius_sq))
    theta = torch.log(max_phase * u2.clamp_min(1e-6))
    return nu.float(), theta.float()


def complex_normal(shape: tuple[int, ...], std: float, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """Real and imaginary parts, each N(0, std^2): two float32 tensors of ``shape``."""
    return torch.randn(shape, generator=gen) * std, torch.randn(shape, generator=gen) * std
