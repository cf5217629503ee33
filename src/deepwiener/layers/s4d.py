"""S4D: diagonal S4 (Gu, Gupta, Goel, Re, "On the parameterization and initialization of diagonal state
space models", NeurIPS 2022): one continuous-time SISO diagonal system per channel.

For channel c with n modes:  x_c' = diag(lam_c) x_c + B_c u_c,  lam_c = -exp(a) + i b  (Hurwitz),
discretised with the channel's step Delta_c = exp(log_dt_c) by ZOH (default) or bilinear;
eta_c[k] = Re(C_c x_c[k+1]) + D_c u_c[k]. The layer is a bank of d_model SISO systems: d_in = d_out.
The discrete system is returned as one DiagonalSSM in block layout (modes of channel c are rows
c*n .. c*n+n-1), so every engine and the analysis treat it like any diagonal system.

Initialisation: "legs" (diagonal of HiPPO-LegS), "lin" (lam = -1/2 + i pi k) or "inv"
(lam = -1/2 + i (n/pi)(n/(2k+1) - 1)); B = 1, C complex normal (variance 1/2 per part), Delta log-uniform
in [dt_min, dt_max] samples per channel.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from deepwiener.errors import ConfigError
from deepwiener.layers import init
from deepwiener.layers.base import LTILayer, complex_from, real_param
from deepwiener.layers.discretize import discretize
from deepwiener.layers.s5 import ContinuousOptions
from deepwiener.systems import DiagonalSSM, bank_io

S4D_INITS: tuple[str, ...] = ("legs", "lin", "inv")


@dataclasses.dataclass(frozen=True)
class S4DOptions(ContinuousOptions):
    """S4D options: the eigenvalue initialisation ("legs", "lin", "inv") plus the continuous-time options."""

    init: str = "legs"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.init not in S4D_INITS:
            raise ConfigError(f"init must be one of {S4D_INITS}, got {self.init!r}")


class S4D(LTILayer):
    """S4D layer: a bank of d_model SISO diagonal systems with d_state complex modes each."""

    Options = S4DOptions
    continuous = True

    def __init__(
        self, d_in: int, d_out: int, d_state: int, options: S4DOptions | None = None, *, generator: torch.Generator
    ) -> None:
        options = options or S4DOptions()
        super().__init__(d_in, d_out, d_state, options)
        if d_in != d_out:
            raise ConfigError(f"S4D is one SISO system per channel: d_in must equal d_out, got {d_in} and {d_out}")
        lam = torch.from_numpy(init.s4d_eigenvalues(options.init, d_state)).expand(d_in, -1)  # (h, n)
        self.log_neg_re = real_param(torch.log(-lam.real))  # (h, n)
        self.im = real_param(lam.imag)  # (h, n)
        self.log_dt = real_param(init.log_uniform((d_in,), options.dt_min, options.dt_max, generator))  # (h,)
        self.B_re, self.B_im = real_param(torch.ones(d_in, d_state)), real_param(torch.zeros(d_in, d_state))
        c_re, c_im = init.complex_normal((d_in, d_state), 0.5**0.5, generator)
        self.C_re, self.C_im = real_param(c_re), real_param(c_im)  # (h, n)
        self.D = real_param(torch.randn(d_in, generator=generator))  # (h,)

    def lam_c(self) -> Tensor:
        """Continuous eigenvalues (h, n) complex."""
        return complex_from(-self.log_neg_re.exp(), self.im)

    def discretize(self) -> DiagonalSSM:
        lam, gain = discretize(self.lam_c(), self.log_dt.exp()[:, None], self.options.discretization)  # (h, n)
        B = gain * complex_from(self.B_re, self.B_im)
        B_f, C_f = bank_io(B, complex_from(self.C_re, self.C_im))
        return DiagonalSSM(lam.reshape(-1), B_f, C_f, torch.diag(self.D), self.options.readout)

    def continuous_poles(self) -> Tensor:
        return (self.lam_c() * self.log_dt.exp()[:, None]).reshape(-1)
