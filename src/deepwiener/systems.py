"""Discrete-time linear systems: the value objects that layers produce and engines simulate.

Every linear layer turns its real parameters into one of these (``layer.discretize()``). A system is

    x[k+1] = A x[k] + B u[k]                       x complex, u real
    eta[k] = Re(C x[k+1]) + D u[k]                 readout "next" (proper, the S4/S5/LRU-paper convention)
    eta[k] = Re(C x[k])   + D u[k]                 readout "current" (strictly proper, one-sample delay)

Only one half of each complex-conjugate pair of modes is stored, so a system with ``n_state`` complex
states is a real system of order ``2 * n_state`` (``real_matrices()``; ``real_blocks()`` keeps the state's own
layout, each complex state as a (Re, Im) pair, for the streaming/ONNX/C step).

Two structures exist:

* ``DiagonalSSM``: A = diag(lam); MIMO ``B (n, d_in)``, ``C (d_out, n)``. LRU, S5 and S4D produce it.
* ``DPLRSSM``: one SISO system per channel whose continuous-time matrix is diagonal plus low rank,
  A_c = Lambda - P P^*, discretised by the bilinear transform (S4). Its impulse response comes from
  Cauchy sums and the Woodbury identity; simulation by scan uses its eigendecomposition (``modal()``).

Engines only talk to the methods of ``LinearSystem``; no ``isinstance`` dispatch is needed.
"""

from __future__ import annotations

import abc
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
import scipy.linalg
import torch
from torch import Tensor

from deepwiener.errors import ConfigError

logger = logging.getLogger(__name__)

Readout = Literal["next", "current"]
READOUTS: tuple[str, ...] = ("next", "current")
_MIN_POLE = 1e-8  # below this modulus, C / lam (readout "next") loses all accuracy
_COND_WARN = 1e8  # eigenvector condition number above which a diagonalisation is reported as fragile


def complex_dtype(real: torch.dtype) -> torch.dtype:
    """The complex dtype paired with a real dtype (float32 -> complex64, float64 -> complex128)."""
    return torch.complex128 if real == torch.float64 else torch.complex64


def real_dtype(cplx: torch.dtype) -> torch.dtype:
    """The real dtype paired with a complex dtype."""
    return torch.float64 if cplx == torch.complex128 else torch.float32


def powers(lam: Tensor, exponents: Tensor) -> Tensor:
    """lam ** k for every k, computed as exp(k log lam) in complex128 for accuracy near |lam| = 1.

    Args:
        lam: (n,) complex, nonzero.
        exponents: (m,) integer or real.

    Returns:
        (m, n) complex, same dtype as ``lam``.
    """
    log_lam = torch.log(lam.to(torch.complex128))  # (n,)
    return torch.exp(exponents.to(torch.float64)[:, None] * log_lam[None, :]).to(lam.dtype)  # (m, n)


class RealBlocks(NamedTuple):
    """The real 2 x 2-block realisation of a system in its state's own layout (numpy float64).

    The real state is the complex state with each entry written as the pair (Re x_i, Im x_i), i.e.
    ``torch.view_as_real(x).flatten()``; a complex entry a of A gives the block [[Re a, -Im a], [Im a, Re a]].

    Attributes:
        A: (G, m, m) the diagonal blocks of the state matrix (2 x 2 for diagonal systems).
        B: (G m, d_in).
        C: (d_out, G m), reading Re(C x).
        D: (d_out, d_in).
    """

    A: np.ndarray
    B: np.ndarray
    C: np.ndarray
    D: np.ndarray


class StateSpaceMatrices(NamedTuple):
    """A real discrete-time state-space model (numpy float64), ``dt`` in seconds (1.0 = samples)."""

    A: np.ndarray
    B: np.ndarray
    C: np.ndarray
    D: np.ndarray
    dt: float


class LinearSystem(abc.ABC):
    """Common interface of the discrete-time systems. Subclasses are frozen dataclasses."""

    D: Tensor  # (d_out, d_in) real
    readout: Readout

    @property
    @abc.abstractmethod
    def d_in(self) -> int: ...

    @property
    @abc.abstractmethod
    def d_out(self) -> int: ...

    @property
    @abc.abstractmethod
    def state_shape(self) -> tuple[int, ...]:
        """Shape of one state (without the batch dimension)."""

    @property
    @abc.abstractmethod
    def cdtype(self) -> torch.dtype:
        """Complex dtype of the state."""

    @abc.abstractmethod
    def advance(self, x: Tensor, u_k: Tensor) -> Tensor:
        """One state update. x: (batch, *state_shape) complex; u_k: (batch, d_in) real -> next state."""

    @abc.abstractmethod
    def observe(self, x: Tensor) -> Tensor:
        """Re(C x). x: (..., *state_shape) complex -> (..., d_out) real."""

    @abc.abstractmethod
    def markov(self, length: int) -> Tensor:
        """Markov parameters Re(C A^m B) for m = 0..length-1: (length, d_out, d_in) real."""

    @abc.abstractmethod
    def modal(self) -> tuple[DiagonalSSM, Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]:
        """The same system in modal (diagonal) coordinates.

        Returns:
            (diagonal system, to_modal, from_modal): the two functions map states
            (batch, *state_shape) <-> (batch, n_modes).
        """

    @abc.abstractmethod
    def blocks(self) -> tuple[Tensor, Tensor, Tensor]:
        """The half-pair system with A as the diagonal blocks it is made of, complex: A (G, m, m), B (G m, d_in),
        C (d_out, G m); 1 x 1 blocks (the eigenvalues) for a diagonal system, one n x n block per channel for a
        DPLR bank. The states are numbered as in ``state_shape``, flattened."""

    def init_state(self, batch: int) -> Tensor:
        """Zero state: (batch, *state_shape) complex."""
        return torch.zeros((batch, *self.state_shape), dtype=self.cdtype, device=self.D.device)

    def output(self, x: Tensor, x_next: Tensor, u_k: Tensor) -> Tensor:
        """eta[k] from the states before and after the update and the input. Returns (batch, d_out)."""
        read = x_next if self.readout == "next" else x
        return self.observe(read) + u_k @ self.D.T

    def impulse_response(self, length: int) -> Tensor:
        """Input-to-output kernel h with eta[k] = sum_j h[k-j] u[j] from a zero state.

        Includes D and the readout delay. Returns (length, d_out, d_in) real.
        """
        if self.readout == "next":
            h = self.markov(length)
            return torch.cat([h[:1] + self.D, h[1:]], dim=0)
        h = self.markov(max(length - 1, 0))
        return torch.cat([self.D[None], h], dim=0)[:length]

    def real_blocks(self) -> RealBlocks:
        """The exact real realisation in the state's own layout, each complex state a (Re, Im) pair
        (:class:`RealBlocks`); the readout stays the system's (``readout``)."""
        A, B, C = (t.detach().to(torch.complex128).cpu().numpy() for t in self.blocks())
        A_r = np.empty((A.shape[0], 2 * A.shape[1], 2 * A.shape[2]))
        A_r[:, 0::2, 0::2], A_r[:, 0::2, 1::2] = A.real, -A.imag
        A_r[:, 1::2, 0::2], A_r[:, 1::2, 1::2] = A.imag, A.real
        B_r = np.empty((2 * B.shape[0], B.shape[1]))
        B_r[0::2], B_r[1::2] = B.real, B.imag
        C_r = np.empty((C.shape[0], 2 * C.shape[1]))
        C_r[:, 0::2], C_r[:, 1::2] = C.real, -C.imag
        return RealBlocks(A_r, B_r, C_r, self.D.detach().to(torch.float64).cpu().numpy().copy())

    def real_matrices(self, dt: float = 1.0) -> StateSpaceMatrices:
        """Exact real realisation of order 2N: states [Re x; Im x], numpy float64.

        A complex mode block gives [[Re A, -Im A], [Im A, Re A]], rows [Re B; Im B] and columns
        [Re C, -Im C] (:meth:`real_blocks`, its states reordered). With readout "next" the output reads x[k+1], so
        the realisation is (A, B, C A, C B + D).
        """
        blocks = self.real_blocks()
        order = np.r_[0 : blocks.B.shape[0] : 2, 1 : blocks.B.shape[0] : 2]  # (Re, Im) pairs -> [Re x; Im x]
        Ar = scipy.linalg.block_diag(*blocks.A)[np.ix_(order, order)]
        Br, Cr, Dr = blocks.B[order], blocks.C[:, order], blocks.D
        if self.readout == "next":
            Cr, Dr = Cr @ Ar, Cr @ Br + Dr
        return StateSpaceMatrices(Ar, Br, Cr, Dr, float(dt))


@dataclass(frozen=True, eq=False)
class DiagonalSSM(LinearSystem):
    """x[k+1] = lam * x[k] + B u[k]; eta = Re(C x) + D u.

    Attributes:
        lam: (n,) complex discrete eigenvalues.
        B: (n, d_in) complex.
        C: (d_out, n) complex.
        D: (d_out, d_in) real.
        readout: "next" or "current".
    """

    lam: Tensor
    B: Tensor
    C: Tensor
    D: Tensor
    readout: Readout = "next"

    @property
    def d_in(self) -> int:
        return self.B.shape[1]

    @property
    def d_out(self) -> int:
        return self.C.shape[0]

    @property
    def state_shape(self) -> tuple[int, ...]:
        return (self.lam.shape[0],)

    @property
    def cdtype(self) -> torch.dtype:
        return self.lam.dtype

    def drive(self, u: Tensor) -> Tensor:
        """B u for a whole sequence. u: (batch, time, d_in) real -> (batch, time, n) complex."""
        return u.to(self.B.dtype) @ self.B.T

    def advance(self, x: Tensor, u_k: Tensor) -> Tensor:
        return self.lam * x + u_k.to(self.B.dtype) @ self.B.T

    def observe(self, x: Tensor) -> Tensor:
        return (x @ self.C.T).real

    def markov(self, length: int) -> Tensor:
        pw = powers(self.lam, torch.arange(length, device=self.lam.device))  # (m, n)
        return torch.einsum("on,mn,ni->moi", self.C, pw, self.B).real

    def free_response(self, x0: Tensor, length: int) -> Tensor:
        """Output of the unforced system from x0. x0: (batch, n) -> (batch, length, d_out) real."""
        shift = 1 if self.readout == "next" else 0
        pw = powers(self.lam, torch.arange(length, device=self.lam.device) + shift)  # (t, n)
        return torch.einsum("bn,tn,on->bto", x0, pw, self.C).real

    def final_state(self, x0: Tensor, bu: Tensor) -> Tensor:
        """x[T] = lam^T x0 + sum_j lam^(T-1-j) (B u)[j]. x0: (batch, n), bu: (batch, T, n) -> (batch, n)."""
        T = bu.shape[1]
        pw = powers(self.lam, torch.arange(T, -1, -1, device=self.lam.device))  # (T+1, n): lam^T .. lam^0
        return pw[0] * x0 + torch.einsum("btn,tn->bn", bu, pw[1:])

    def modal(self) -> tuple[DiagonalSSM, Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]:
        return self, _identity, _identity

    def blocks(self) -> tuple[Tensor, Tensor, Tensor]:
        return self.lam[:, None, None], self.B, self.C


@dataclass(frozen=True, eq=False)
class DPLRSSM(LinearSystem):
    """A bank of SISO systems (one per channel), continuous A_c = diag(lam_c) - P P^*, bilinear-discretised.

    Attributes:
        lam_c: (h, n) complex continuous-time diagonal part, Re < 0.
        P: (h, n) complex low-rank factor.
        B_c: (h, n) complex continuous input vector of each channel.
        C: (h, n) complex output vector of each channel.
        D: (h, h) real (diagonal) feedthrough.
        delta: (h,) real positive step of each channel, in samples.
        readout: "next" or "current".
    """

    lam_c: Tensor
    P: Tensor
    B_c: Tensor
    C: Tensor
    D: Tensor
    delta: Tensor
    readout: Readout = "next"

    @property
    def d_in(self) -> int:
        return self.lam_c.shape[0]

    @property
    def d_out(self) -> int:
        return self.lam_c.shape[0]

    @property
    def state_shape(self) -> tuple[int, ...]:
        return tuple(self.lam_c.shape)

    @property
    def cdtype(self) -> torch.dtype:
        return self.lam_c.dtype

    @functools.cached_property
    def discrete(self) -> tuple[Tensor, Tensor]:
        """Bilinear transform, computed once per system object:
        A = (I - d/2 A_c)^-1 (I + d/2 A_c), B = (I - d/2 A_c)^-1 d B_c.

        Returns:
            (A (h, n, n), B (h, n)) complex.
        """
        h, n = self.lam_c.shape
        eye = torch.eye(n, dtype=self.cdtype, device=self.lam_c.device)
        A_c = torch.diag_embed(self.lam_c) - self.P[:, :, None] * self.P.conj()[:, None, :]  # (h, n, n)
        half = (self.delta / 2).to(self.cdtype)[:, None, None]
        M = eye - half * A_c
        A = torch.linalg.solve(M, eye + half * A_c)
        B = torch.linalg.solve(M, (2 * half[:, :, 0] * self.B_c)[..., None])[..., 0]
        return A, B

    def advance(self, x: Tensor, u_k: Tensor) -> Tensor:
        A, B = self.discrete
        return torch.einsum("hij,bhj->bhi", A, x) + B * u_k.to(B.dtype)[..., None]

    def observe(self, x: Tensor) -> Tensor:
        return (x * self.C).sum(-1).real

    def markov(self, length: int) -> Tensor:
        """Cauchy kernel + Woodbury identity on the truncated generating function (exact, no wrap-around).

        sum_{m<L} K_m z^m = C (I - A^L)(I - A z)^-1 B; at the L-th roots of unity this is the DFT of K.
        With the bilinear transform, (I - A z)^-1 B = (Mz)^-1 d B_c where
        Mz = diag((1 - z) - d/2 (1 + z) lam_c) + d/2 (1 + z) P P^*, inverted by Woodbury with
        Cauchy sums over the modes.
        """
        h, n = self.lam_c.shape
        if length == 0:
            return torch.zeros(0, h, h, dtype=self.D.dtype, device=self.D.device)
        A, _ = self.discrete
        c_tilde = self.C[:, None, :] - (self.C[:, None, :] @ torch.linalg.matrix_power(A, length))  # (h,1,n)
        c_tilde = c_tilde[:, 0, :]  # (h, n)
        k = torch.arange(length, device=self.lam_c.device, dtype=torch.float64)
        z = torch.exp(-2j * torch.pi * k / length).to(self.cdtype)  # (L,)
        d = self.delta.to(self.cdtype)[:, None, None]  # (h, 1, 1)
        denom = (1 - z)[None, :, None] - d / 2 * (1 + z)[None, :, None] * self.lam_c[:, None, :]  # (h, L, n)
        r = 1 / denom
        u_scale = d[..., 0] / 2 * (1 + z)[None, :]  # (h, L)
        p_conj = self.P.conj()[:, None, :]

        def cauchy(left: Tensor, right: Tensor) -> Tensor:
            return (left[:, None, :] * r * right[:, None, :]).sum(-1)  # (h, L)

        k_cb = cauchy(c_tilde, self.B_c)
        k_cp = cauchy(c_tilde, self.P) * u_scale
        k_pp = (p_conj * r * self.P[:, None, :]).sum(-1) * u_scale
        k_pb = (p_conj * r * self.B_c[:, None, :]).sum(-1)
        k_hat = d[..., 0] * (k_cb - k_cp * k_pb / (1 + k_pp))  # (h, L)
        kern = torch.fft.ifft(k_hat, dim=-1).real.T  # (L, h)
        return torch.diag_embed(kern.to(self.D.dtype))  # (L, h, h)

    def modal(self) -> tuple[DiagonalSSM, Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]:
        """Eigendecomposition A = V diag(lam) V^-1 per channel, computed in complex128 (differentiable for
        distinct eigenvalues)."""
        A, B = self.discrete
        lam, V = torch.linalg.eig(A.to(torch.complex128))  # (h, n), (h, n, n); float64 for accuracy
        V_inv = torch.linalg.inv(V)
        lam, V, V_inv = lam.to(self.cdtype), V.to(self.cdtype), V_inv.to(self.cdtype)
        h, n = lam.shape
        b_modal = (V_inv @ B[..., None])[..., 0]  # (h, n)
        c_modal = (self.C[:, None, :] @ V)[:, 0, :]  # (h, n)
        eye = torch.eye(h, dtype=self.cdtype, device=lam.device)
        B_flat = (b_modal[:, :, None] * eye[:, None, :]).reshape(h * n, h)  # block layout
        C_flat = (eye[:, :, None] * c_modal[None, :, :]).reshape(h, h * n)
        diag = DiagonalSSM(lam.reshape(-1), B_flat, C_flat, self.D, self.readout)

        def to_modal(x: Tensor) -> Tensor:
            return torch.einsum("hij,bhj->bhi", V_inv, x).reshape(x.shape[0], h * n)

        def from_modal(z: Tensor) -> Tensor:
            return torch.einsum("hij,bhj->bhi", V, z.reshape(z.shape[0], h, n))

        return diag, to_modal, from_modal

    def blocks(self) -> tuple[Tensor, Tensor, Tensor]:
        A, B = self.discrete
        h, n = self.lam_c.shape
        eye = torch.eye(h, dtype=self.cdtype, device=A.device)
        B_bd = (B[:, :, None] * eye[:, None, :]).reshape(h * n, h)
        C_bd = (eye[:, :, None] * self.C[None, :, :]).reshape(h, h * n)
        return A, B_bd, C_bd


def _identity(x: Tensor) -> Tensor:
    return x


def diagonal_from_real(
    A: np.ndarray, B: np.ndarray, C: np.ndarray, D: np.ndarray, readout: str = "current"
) -> DiagonalSSM:
    """Half-pair complex diagonal form of a real system ``x+ = A x + B u``, ``y = C x + D u``.

    With ``A = V diag(lam) V^-1``, a conjugate pair keeps its member with Im > 0 and C gains a factor 2
    (``c z + conj(c z) = Re(2 c z)``); a real eigenvalue keeps factor 1 with its real B row and C column.

    Args:
        A: (r, r) real, diagonalisable.
        B: (r, m) real.
        C: (p, r) real.
        D: (p, m) real.
        readout: output convention of the result: "current" (``Re(C x[k]) + D u``, the same as the input) or
            "next" (``Re(C x[k+1]) + D u``: ``C / lam`` and ``D - Re(C B / lam)``; needs no pole at 0).

    Returns:
        A complex128 ``DiagonalSSM`` with one mode per conjugate pair or real eigenvalue.

    Raises:
        ConfigError: readout "next" with a pole at the origin.
    """
    lam, V = np.linalg.eig(A)
    lam, V = lam.astype(np.complex128), V.astype(np.complex128)  # real when every eigenvalue is real
    if np.linalg.cond(V) > _COND_WARN:
        logger.warning("eigenvectors of A are ill-conditioned (cond %.3g)", np.linalg.cond(V))
    upper, real = lam.imag > 0, lam.imag == 0
    keep = upper | real
    lam_h = lam[keep]
    B_h = np.linalg.solve(V, B)[keep]  # (k, m)
    C_h = (C @ V)[:, keep] * np.where(upper[keep], 2.0, 1.0)  # (p, k)
    real_k = real[keep]
    B_h[real_k] = B_h[real_k].real  # a real eigenvector gives real rows; drop the round-off
    C_h[:, real_k] = C_h[:, real_k].real
    D_h = np.array(D, dtype=np.float64)
    if readout == "next":
        if lam_h.size and np.min(np.abs(lam_h)) < _MIN_POLE:
            raise ConfigError(
                f"a pole is at the origin (|lam| = {np.min(np.abs(lam_h)):.3g}); readout 'next' cannot "
                "represent it: use the layer option readout='current'"
            )
        C_h = C_h / lam_h
        D_h = D_h - (C_h @ B_h).real
    return DiagonalSSM(*(torch.from_numpy(np.ascontiguousarray(x)) for x in (lam_h, B_h, C_h, D_h)), readout)
