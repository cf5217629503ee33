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
* ``DPLRSSM``: blocks whose continuous-time matrix is diagonal plus low rank, A_c = Lambda - P P^*,
  discretised by the bilinear transform (S4), in two layouts: ``DPLRBank`` (one SISO system per channel)
  and ``DPLRBlocks`` (MIMO blocks reading every input and writing every output). The impulse response
  comes from Cauchy sums and the Woodbury identity; simulation by scan uses the eigendecomposition of each
  block (``modal()``).

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
        C (d_out, G m); 1 x 1 blocks (the eigenvalues) for a diagonal system, one m x m block per DPLR block (one
        per channel in a ``DPLRBank``, one per MIMO block in ``DPLRBlocks``). The states are numbered as in
        ``state_shape``, flattened."""

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

    def mode_weights(self) -> Tensor:
        """Each mode's H-infinity weight ``w_i = ||c_i|| ||b_i|| / (1 - |lam_i|)`` (c_i column i of C, b_i row i
        of B): a bound on the H-infinity norm of the mode's share of the output. Modal truncation keeps the modes
        with the largest weights; their sum is the modal l1 penalty of training (``TrainConfig.modal_l1``).

        Returns:
            (n,) real, differentiable in lam, B and C (needs every ``|lam_i| < 1``).
        """
        return torch.linalg.vector_norm(self.C, dim=0) * torch.linalg.vector_norm(self.B, dim=1) / (1 - self.lam.abs())

    def hankel_singular_values(self) -> Tensor:
        """The Hankel singular values of the real system (the order-2n realisation ``real_matrices``), differentiable.

        The conjugate completion ``lam_c = [lam, conj(lam)]``, ``B_c = [B; conj(B)]``, ``C_c = [C', conj(C')] / 2``
        (``C' = C`` for readout "current", ``C diag(lam)`` for "next", whose real realisation reads ``C A``) is
        similar to the real realisation, so it has the same Hankel singular values. Its Gramians are closed-form
        for a diagonal A: ``P_ij = (B_c B_c^H)_ij / (1 - lam_i conj(lam_j))`` and
        ``Q_ij = (C_c^H C_c)_ij / (1 - conj(lam_i) lam_j)``; with Cholesky factors ``P = Lp Lp^H``,
        ``Q = Lq Lq^H`` the values are the singular values of ``Lq^H Lp`` (= ``sqrt(eig(P Q))``). Each Gramian is
        factored with a jitter of 1e-12 times its largest diagonal entry, so that a singular one (inert modes
        with B = 0 or C = 0) can be factored; it moves a value by at most about 1e-6 of the largest. Computed in
        complex128 whatever the system's dtype.

        Returns:
            (2n,) float64, descending, differentiable in lam, B and C (needs every ``|lam_i| < 1``).
        """
        lam, B, C = (t.to(torch.complex128) for t in (self.lam, self.B, self.C))
        if self.readout == "next":
            C = C * lam
        lam_c = torch.cat([lam, lam.conj()])  # (2n,)
        B_c = torch.cat([B, B.conj()], dim=0)  # (2n, d_in)
        C_c = torch.cat([C, C.conj()], dim=1) / 2  # (d_out, 2n)
        P = (B_c @ B_c.mH) / (1 - lam_c[:, None] * lam_c.conj()[None, :])  # (2n, 2n)
        Q = (C_c.mH @ C_c) / (1 - lam_c.conj()[:, None] * lam_c[None, :])  # (2n, 2n)
        return torch.linalg.svdvals(_gramian_factor(Q).mH @ _gramian_factor(P))


_GRAMIAN_JITTER = 1e-12  # relative to a Gramian's largest diagonal entry


def _gramian_factor(G: Tensor) -> Tensor:
    """Lower Cholesky factor L of ``G + delta I``, ``delta = 1e-12 max(diag G)``: ``G`` (n, n) Hermitian positive
    semidefinite complex128 -> L (n, n), differentiable."""
    G = (G + G.mH) / 2
    scale = G.diagonal().real.max().clamp_min(torch.finfo(torch.float64).tiny)
    eye = torch.eye(G.shape[0], dtype=G.dtype, device=G.device)
    return torch.linalg.cholesky(G + _GRAMIAN_JITTER * scale * eye)


def bank_io(B: Tensor, C: Tensor) -> tuple[Tensor, Tensor]:
    """Dense input and output maps of a bank of SISO systems (system g reads input g and writes output g).

    Args:
        B, C: (h, n) complex each: the input and output vectors of each system.

    Returns:
        B (h*n, h) and C (h, h*n), block-sparse; the states of system g are rows g*n .. g*n+n-1.
    """
    h, n = B.shape
    eye = torch.eye(h, dtype=B.dtype, device=B.device)
    return (B[:, :, None] * eye[:, None, :]).reshape(h * n, h), (eye[:, :, None] * C[None, :, :]).reshape(h, h * n)


@dataclass(frozen=True, eq=False)
class DPLRSSM(LinearSystem):
    """G blocks of order m, each with a continuous-time diagonal-plus-low-rank state matrix, bilinear-discretised.

    Block g (state x_g in C^m, step d_g)::

        A_c,g = diag(lam_c,g) - P_g P_g^*
        A_g = (I - d_g/2 A_c,g)^-1 (I + d_g/2 A_c,g),   B_g = (I - d_g/2 A_c,g)^-1 d_g B_c,g

    The blocks share this dynamics; how they read the inputs and write the outputs is the layout of a subclass:
    ``DPLRBank`` (one SISO system per channel, the S4 paper) or ``DPLRBlocks`` (MIMO blocks that read every
    input and write every output). The impulse response comes from Cauchy sums and the Woodbury identity
    (``markov``); simulation by scan uses the eigendecomposition of each block (``modal``).

    Attributes:
        lam_c: (G, m) complex continuous-time diagonal part, Re < 0.
        P: (G, m) complex low-rank factor.
        B_c: continuous input map, shape of the layout.
        C: output map, shape of the layout.
        D: (d_out, d_in) real feedthrough.
        delta: (G,) real positive step of each block, in samples.
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
    def state_shape(self) -> tuple[int, ...]:
        return tuple(self.lam_c.shape)

    @property
    def cdtype(self) -> torch.dtype:
        return self.lam_c.dtype

    @abc.abstractmethod
    def drive(self, B: Tensor, u_k: Tensor) -> Tensor:
        """The input term of each block: B, a discrete input map of the layout's shape; u_k (batch, d_in)
        real -> (batch, G, m) complex."""

    @abc.abstractmethod
    def read(self, M: Tensor) -> Tensor:
        """C times one matrix per block: M (G, m, m) complex -> an output map of the layout's shape."""

    @abc.abstractmethod
    def flat_io(self, B: Tensor, C: Tensor) -> tuple[Tensor, Tensor]:
        """Input and output maps of the layout's shapes -> dense B (G*m, d_in) and C (d_out, G*m) of the states
        flattened block by block."""

    @abc.abstractmethod
    def kernel_spectrum(self, C: Tensor, r: Tensor, v: Tensor, d: Tensor) -> Tensor:
        """Markov parameters of the output map C from the Woodbury terms (see ``markov``).

        Args:
            C: output map of the layout's shape (C (I - A^L)).
            r: (G, L, m) complex Cauchy weights 1 / ((1 - z) - d/2 (1 + z) lam_c).
            v: (G, L) complex d/2 (1 + z).
            d: (G,) complex steps.

        Returns:
            (L, d_out, d_in) real: the inverse DFT over the L frequencies of the transfer function.
        """

    @functools.cached_property
    def discrete(self) -> tuple[Tensor, Tensor]:
        """Bilinear transform, computed once per system object.

        Returns:
            (A (G, m, m), B of B_c's shape) complex.
        """
        G, m = self.lam_c.shape
        eye = torch.eye(m, dtype=self.cdtype, device=self.lam_c.device)
        A_c = torch.diag_embed(self.lam_c) - self.P[:, :, None] * self.P.conj()[:, None, :]  # (G, m, m)
        half = (self.delta / 2).to(self.cdtype)[:, None, None]
        M = eye - half * A_c
        A = torch.linalg.solve(M, eye + half * A_c)
        B = torch.linalg.solve(M, 2 * half * self.B_c.reshape(G, m, -1)).reshape(self.B_c.shape)
        return A, B

    def advance(self, x: Tensor, u_k: Tensor) -> Tensor:
        A, B = self.discrete
        return torch.einsum("gij,bgj->bgi", A, x) + self.drive(B, u_k)

    def markov(self, length: int) -> Tensor:
        """Cauchy kernel + Woodbury identity on the truncated generating function (exact, no wrap-around).

        sum_{k<L} K_k z^k = C (I - A^L)(I - A z)^-1 B; at the L-th roots of unity this is the DFT of K.
        With the bilinear transform, (I - A z)^-1 B = (Mz)^-1 d B_c per block, where
        Mz = diag((1 - z) - v lam_c) + v P P^* and v = d/2 (1 + z); Woodbury inverts it with the Cauchy
        sums k_ab = sum_j a_j r_j b_j over the modes, r = 1 / ((1 - z) - v lam_c):
        C (Mz)^-1 d B_c = d (k_CB - v k_CP k_PB / (1 + v k_PP)), with k_PB and k_PP read with P^*.
        """
        if length == 0:
            return torch.zeros(0, self.d_out, self.d_in, dtype=self.D.dtype, device=self.D.device)
        A, _ = self.discrete
        c_tilde = self.C - self.read(torch.linalg.matrix_power(A, length))
        k = torch.arange(length, device=self.lam_c.device, dtype=torch.float64)
        z = torch.exp(-2j * torch.pi * k / length).to(self.cdtype)  # (L,)
        # written as before the MIMO blocks existed, so that the SISO bank's values and gradients stay bit-identical
        d = self.delta.to(self.cdtype)[:, None, None]  # (G, 1, 1)
        r = 1 / ((1 - z)[None, :, None] - d / 2 * (1 + z)[None, :, None] * self.lam_c[:, None, :])  # (G, L, m)
        v = d[..., 0] / 2 * (1 + z)[None, :]  # (G, L)
        return self.kernel_spectrum(c_tilde, r, v, d[..., 0, 0]).to(self.D.dtype)

    def modal(self) -> tuple[DiagonalSSM, Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]:
        """Eigendecomposition A = V diag(lam) V^-1 per block, computed in complex128 (differentiable for
        distinct eigenvalues)."""
        A, B = self.discrete
        lam, V = torch.linalg.eig(A.to(torch.complex128))  # (G, m), (G, m, m); float64 for accuracy
        V_inv = torch.linalg.inv(V)
        lam, V, V_inv = lam.to(self.cdtype), V.to(self.cdtype), V_inv.to(self.cdtype)
        G, m = lam.shape
        b_modal = (V_inv @ B.reshape(G, m, -1)).reshape(B.shape)
        diag = DiagonalSSM(lam.reshape(-1), *self.flat_io(b_modal, self.read(V)), self.D, self.readout)

        def to_modal(x: Tensor) -> Tensor:
            return torch.einsum("gij,bgj->bgi", V_inv, x).reshape(x.shape[0], G * m)

        def from_modal(z: Tensor) -> Tensor:
            return torch.einsum("gij,bgj->bgi", V, z.reshape(z.shape[0], G, m))

        return diag, to_modal, from_modal

    def blocks(self) -> tuple[Tensor, Tensor, Tensor]:
        A, B = self.discrete
        return A, *self.flat_io(B, self.C)


@dataclass(frozen=True, eq=False)
class DPLRBank(DPLRSSM):
    """DPLR layout "bank": one SISO system per channel (G = d_in = d_out = h channels, m = n modes each).

    Attributes (besides those of ``DPLRSSM``):
        B_c: (h, n) complex continuous input vector of each channel.
        C: (h, n) complex output vector of each channel.
        D: (h, h) real (diagonal) feedthrough.
    """

    @property
    def d_in(self) -> int:
        return self.lam_c.shape[0]

    @property
    def d_out(self) -> int:
        return self.lam_c.shape[0]

    def drive(self, B: Tensor, u_k: Tensor) -> Tensor:
        return B * u_k.to(B.dtype)[..., None]

    def observe(self, x: Tensor) -> Tensor:
        return (x * self.C).sum(-1).real

    def read(self, M: Tensor) -> Tensor:
        return torch.einsum("gj,gjk->gk", self.C, M)

    def flat_io(self, B: Tensor, C: Tensor) -> tuple[Tensor, Tensor]:
        return bank_io(B, C)

    def kernel_spectrum(self, C: Tensor, r: Tensor, v: Tensor, d: Tensor) -> Tensor:
        p_conj = self.P.conj()

        def cauchy(left: Tensor, right: Tensor) -> Tensor:
            return (left[:, None, :] * r * right[:, None, :]).sum(-1)  # (h, L)

        # the operands in this order (complex products are not bit-commutative): the numbers of the SISO bank as
        # before the MIMO blocks existed (tests/workflow/test_compatibility.py)
        k_cb, k_cp = cauchy(C, self.B_c), cauchy(C, self.P) * v
        k_pb, k_pp = cauchy(p_conj, self.B_c), cauchy(p_conj, self.P) * v
        k_hat = d[:, None] * (k_cb - k_cp * k_pb / (1 + k_pp))  # (h, L)
        return torch.diag_embed(torch.fft.ifft(k_hat, dim=-1).real.T)  # (L, h, h)


@dataclass(frozen=True, eq=False)
class DPLRBlocks(DPLRSSM):
    """DPLR layout "blocks": G MIMO blocks of order m, each reading every input and writing every output.

    eta = Re(sum_g C_g x_g) + D u, with x_g[k+1] = A_g x_g[k] + B_g u[k].

    Attributes (besides those of ``DPLRSSM``):
        B_c: (G, m, d_in) complex continuous input matrix of each block.
        C: (d_out, G, m) complex output matrix.
        D: (d_out, d_in) real feedthrough.
    """

    @property
    def d_in(self) -> int:
        return self.B_c.shape[2]

    @property
    def d_out(self) -> int:
        return self.C.shape[0]

    def drive(self, B: Tensor, u_k: Tensor) -> Tensor:
        return torch.einsum("gji,bi->bgj", B, u_k.to(B.dtype))

    def observe(self, x: Tensor) -> Tensor:
        return torch.einsum("ogj,...gj->...o", self.C, x).real

    def read(self, M: Tensor) -> Tensor:
        return torch.einsum("ogj,gjk->ogk", self.C, M)

    def flat_io(self, B: Tensor, C: Tensor) -> tuple[Tensor, Tensor]:
        G, m, d_in = B.shape
        return B.reshape(G * m, d_in), C.reshape(C.shape[0], G * m)

    def kernel_spectrum(self, C: Tensor, r: Tensor, v: Tensor, d: Tensor) -> Tensor:
        p_conj = self.P.conj()
        dr = d[:, None, None] * r  # (G, L, m)
        k_cb = torch.einsum("ogj,gLj,gji->Loi", C, dr, self.B_c)  # summed over the blocks
        k_cp = torch.einsum("ogj,gLj,gj->ogL", C, r, self.P)
        k_pb = torch.einsum("gj,gLj,gji->gLi", p_conj, r, self.B_c)
        k_pp = torch.einsum("gj,gLj,gj->gL", p_conj, r, self.P)
        k_hat = k_cb - torch.einsum("ogL,gL,gLi->Loi", k_cp, d[:, None] * v / (1 + v * k_pp), k_pb)
        return torch.fft.ifft(k_hat, dim=0).real  # (L, d_out, d_in)


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
