"""S4: structured state space with a diagonal-plus-low-rank (DPLR) state matrix (Gu, Goel, Re,
"Efficiently modeling long sequences with structured state spaces", ICLR 2022).

One continuous-time SISO system per channel (d_in = d_out = d_model), n complex modes each:

    x_c' = (diag(lam_c) - P P^*) x_c + B_c u_c,   lam_c = -exp(a) + i b
    eta_c[k] = Re(C_c x_c[k+1]) + D_c u_c[k]        (readout "next"; bilinear discretisation, step Delta_c)

Stability: A + A^* = 2 Re(diag lam_c) - 2 P P^* is negative definite because Re lam_c < 0, so A is
Hurwitz for every parameter value, and the bilinear transform maps it inside the unit disc (Q = P, the
SaShiMi choice, with Re lam_c enforced negative).

Kernel: Cauchy sums plus the Woodbury identity on the truncated generating function
(``DPLRSSM.markov``), so the FFT engine is exact for slow poles. Scan and compiled engines use the
eigendecomposition of the discrete matrix.

Initialisation: HiPPO-LegS of size 2n in its DPLR form (normal part diagonalised, upper-half-plane
modes kept, P and B rotated into the eigenbasis), C complex normal (variance 1/2 per part),
Delta log-uniform in [dt_min, dt_max] samples per channel.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import Tensor

from deepwiener.errors import ConfigError
from deepwiener.layers import init
from deepwiener.layers.base import LTILayer, complex_from, real_param
from deepwiener.layers.s5 import ContinuousOptions
from deepwiener.systems import DPLRSSM


@dataclasses.dataclass(frozen=True)
class S4Options(ContinuousOptions):
    """S4 options; S4 always uses the bilinear transform."""

    discretization: str = "bilinear"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.discretization != "bilinear":
            raise ConfigError(f"S4 uses the bilinear transform only, got discretization={self.discretization!r}")


class S4(LTILayer):
    """S4 layer: a bank of d_model SISO DPLR systems with d_state complex modes each."""

    Options = S4Options
    continuous = True

    def __init__(
        self, d_in: int, d_out: int, d_state: int, options: S4Options | None = None, *, generator: torch.Generator
    ) -> None:
        options = options or S4Options()
        super().__init__(d_in, d_out, d_state, options)
        if d_in != d_out:
            raise ConfigError(f"S4 is one SISO system per channel: d_in must equal d_out, got {d_in} and {d_out}")
        lam, P, B, _ = init.hippo_normal_modes(d_state)

        def per_channel(v: np.ndarray) -> Tensor:
            return torch.from_numpy(np.ascontiguousarray(v)).expand(d_in, -1)  # (h, n)

        self.log_neg_re = real_param(per_channel(np.log(-lam.real)))
        self.im = real_param(per_channel(lam.imag))
        self.P_re, self.P_im = real_param(per_channel(P.real)), real_param(per_channel(P.imag))
        self.B_re, self.B_im = real_param(per_channel(B.real)), real_param(per_channel(B.imag))
        c_re, c_im = init.complex_normal((d_in, d_state), 0.5**0.5, generator)
        self.C_re, self.C_im = real_param(c_re), real_param(c_im)
        self.log_dt = real_param(init.log_uniform((d_in,), options.dt_min, options.dt_max, generator))
        self.D = real_param(torch.randn(d_in, generator=generator))

    def discretize(self) -> DPLRSSM:
        return DPLRSSM(
            lam_c=complex_from(-self.log_neg_re.exp(), self.im),
            P=complex_from(self.P_re, self.P_im),
            B_c=complex_from(self.B_re, self.B_im),
            C=complex_from(self.C_re, self.C_im),
            D=torch.diag(self.D),
            delta=self.log_dt.exp(),
            readout=self.options.readout,
        )

    def continuous_poles(self) -> Tensor:
        system = self.discretize()
        A_c = torch.diag_embed(system.lam_c) - system.P[:, :, None] * system.P.conj()[:, None, :]
        return (torch.linalg.eigvals(A_c) * system.delta[:, None]).reshape(-1)
