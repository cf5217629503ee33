"""S4: structured state space with a diagonal-plus-low-rank (DPLR) state matrix (Gu, Goel, Re,
"Efficiently modeling long sequences with structured state spaces", ICLR 2022), in two structures.

Every DPLR block g of order m (state x_g in C^m, step Delta_g = exp(log_dt_g) in samples) is

    x_g' = A_g x_g + B_g u_g,   A_g = diag(lam_g) - P_g P_g^*,   lam_g = -exp(a_g) + i b_g
    bilinear: x_g[k+1] = (I - Delta_g/2 A_g)^-1 [(I + Delta_g/2 A_g) x_g[k] + Delta_g B_g u_g[k]]

Stability: A_g + A_g^* = 2 Re(diag lam_g) - 2 P_g P_g^* is negative definite because Re lam_g < 0, so A_g is
Hurwitz for every parameter value, and the bilinear transform maps it inside the unit disc (Q = P, the
SaShiMi choice, with Re lam_g enforced negative).

Structures (``S4Options.block_order``):

* ``None`` (default), the S4 paper's bank: one SISO block per channel (d_in = d_out = h blocks of
  m = d_state modes), eta_c[k] = Re(C_c x_c[k+1]) + D_c u_c[k] (readout "next").
  Init: HiPPO-LegS of size 2m in its DPLR form (normal part diagonalised, the m upper-half-plane modes
  kept, P and B rotated into the eigenbasis; dropping the conjugate modes also drops the low-rank coupling
  to them, so the block is not LegS itself), C complex normal (variance 1/2 per part), D standard normal.
* ``m``, MIMO blocks as in the deep-Wiener paper's S4 (Bonassi et al., SYSID 2024): G = d_state / m
  blocks of order m, each reading every input and writing every output,
  eta[k] = Re(sum_g C_g x_g[k+1]) + D u[k] with B_g (m, d_in), C_g (d_out, m) complex, D (d_out, d_in).
  Init: every block is HiPPO-LegS of order m exactly (all m eigenvalues of the normal part kept,
  A = V (diag(lam) - Pt Pt^*) V^*; for m = 2, lam = -1/2 +- i sqrt(3)/2 and real poles -1, -2), driven by a
  random mix of the inputs, B_g = (V^* B_LegS) r_g^T with r_g ~ N(0, 1/d_in); C complex normal (variance
  1/d_state per part), so Re(C_g x_g) = Re(C_g V^*) x_LegS reads the real LegS state through a random real
  map. C is not of the form C0 V with C0 real: that choice keeps the block invariant under conjugation
  (swap of the conjugate modes) along every gradient step, i.e. a real system of order m forever instead of
  order 2m. D ~ N(0, 1/d_in).

Delta is log-uniform in [dt_min, dt_max] samples, one per block. Kernel: Cauchy sums plus the Woodbury
identity on the truncated generating function (``DPLRSSM.markov``), so the FFT engine is exact for slow
poles. Scan and compiled engines use the eigendecomposition of each block's discrete matrix.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
from torch import Tensor

from deepwiener.errors import ConfigError
from deepwiener.layers import init
from deepwiener.layers.base import LTILayer, complex_from, real_param
from deepwiener.layers.s5 import ContinuousOptions
from deepwiener.systems import DPLRSSM, DPLRBank, DPLRBlocks


@dataclasses.dataclass(frozen=True)
class S4Options(ContinuousOptions):
    """S4 options; S4 always uses the bilinear transform.

    Attributes:
        block_order: None for one SISO block per channel (the S4 paper), or the order m of MIMO blocks:
            d_state / m blocks that read every input and write every output (the deep-Wiener paper's S4).
    """

    discretization: str = "bilinear"
    block_order: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.discretization != "bilinear":
            raise ConfigError(f"S4 uses the bilinear transform only, got discretization={self.discretization!r}")
        order = self.block_order
        if order is not None and (isinstance(order, bool) or not isinstance(order, int) or order < 1):
            raise ConfigError(f"block_order must be a positive integer or None, got {order!r}")


class S4(LTILayer):
    """S4 layer: a bank of d_model SISO DPLR blocks with d_state modes each, or (``block_order`` m) d_state / m
    MIMO DPLR blocks of order m."""

    Options = S4Options
    continuous = True

    def __init__(
        self, d_in: int, d_out: int, d_state: int, options: S4Options | None = None, *, generator: torch.Generator
    ) -> None:
        options = options or S4Options()
        super().__init__(d_in, d_out, d_state, options)
        if options.block_order is None:
            self._init_bank(generator)
        else:
            self._init_blocks(options.block_order, generator)

    def _init_bank(self, generator: torch.Generator) -> None:
        """Parameters of the SISO bank: (h, n) each, log_dt and D (h,)."""
        h, n = self.d_in, self.d_state
        if self.d_out != h:
            raise ConfigError(f"S4 is one SISO system per channel: d_in must equal d_out, got {h} and {self.d_out}")
        lam, P, B, _ = init.hippo_normal_modes(n)
        self._set_dynamics(*(np.broadcast_to(v, (h, n)) for v in (lam, P, B)))
        c_re, c_im = init.complex_normal((h, n), 0.5**0.5, generator)
        self.C_re, self.C_im = real_param(c_re), real_param(c_im)
        self.log_dt = real_param(init.log_uniform((h,), self.options.dt_min, self.options.dt_max, generator))
        self.D = real_param(torch.randn(h, generator=generator))

    def _init_blocks(self, order: int, generator: torch.Generator) -> None:
        """Parameters of the MIMO blocks: (G, m), B (G, m, d_in), C (d_out, G, m), log_dt (G,), D (d_out, d_in)."""
        if self.d_state % order:
            raise ConfigError(f"d_state ({self.d_state}) must be a multiple of block_order ({order})")
        G, m = self.d_state // order, order
        lam, P, B, _ = init.hippo_dplr(m)
        mix = torch.randn(G, self.d_in, generator=generator, dtype=torch.float64, device="cpu") / math.sqrt(self.d_in)
        self._set_dynamics(np.broadcast_to(lam, (G, m)), np.broadcast_to(P, (G, m)),
                           B[None, :, None] * mix.numpy()[:, None, :])  # (G, m, d_in)
        c_re, c_im = init.complex_normal((self.d_out, G, m), self.d_state**-0.5, generator)
        self.C_re, self.C_im = real_param(c_re), real_param(c_im)
        self.log_dt = real_param(init.log_uniform((G,), self.options.dt_min, self.options.dt_max, generator))
        self.D = real_param(torch.randn(self.d_out, self.d_in, generator=generator) / math.sqrt(self.d_in))

    def _set_dynamics(self, lam: np.ndarray, P: np.ndarray, B: np.ndarray) -> None:
        """The continuous-time parameters from complex arrays lam, P (G, m) and B (B_c's shape)."""

        def param(v: np.ndarray) -> torch.nn.Parameter:
            return real_param(torch.from_numpy(np.ascontiguousarray(v)))

        self.log_neg_re, self.im = param(np.log(-lam.real)), param(lam.imag)
        self.P_re, self.P_im = param(P.real), param(P.imag)
        self.B_re, self.B_im = param(B.real), param(B.imag)

    def discretize(self) -> DPLRSSM:
        bank = self.options.block_order is None
        return (DPLRBank if bank else DPLRBlocks)(
            lam_c=complex_from(-self.log_neg_re.exp(), self.im),
            P=complex_from(self.P_re, self.P_im),
            B_c=complex_from(self.B_re, self.B_im),
            C=complex_from(self.C_re, self.C_im),
            D=torch.diag(self.D) if bank else self.D,
            delta=self.log_dt.exp(),
            readout=self.options.readout,
        )

    def continuous_poles(self) -> Tensor:
        system = self.discretize()
        A_c = torch.diag_embed(system.lam_c) - system.P[:, :, None] * system.P.conj()[:, None, :]
        return (torch.linalg.eigvals(A_c) * system.delta[:, None]).reshape(-1)
