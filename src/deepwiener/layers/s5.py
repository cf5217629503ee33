"""S5: simplified structured state space (Smith, Warrington, Linderman, ICLR 2023), a continuous-time
MIMO complex diagonal layer.

    x'(t) = diag(lam_c) x + B_c u,     lam_c = -exp(a) + i b        (Re lam_c < 0: Hurwitz by construction)
    discretised per state with step Delta = exp(log_dt) (in samples) by ZOH (default) or bilinear:
    x[k+1] = diag(lam) x[k] + diag(g) B_c u[k],   eta[k] = Re(C x[k+1]) + D u[k]   (readout "next")

ZOH: lam = exp(lam_c Delta), g = (lam - 1)/lam_c; bilinear: see ``discretize.py``. Both keep |lam| < 1.
Initialisation: lam_c from the diagonalised normal part of HiPPO-LegS of size 2n (upper-half-plane modes),
B_c = V^* B0 and C = C0 V with B0, C0 random real (variance 1/d_in, 1/(2n)), Delta log-uniform in
[dt_min, dt_max] samples (one per state).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
from torch import Tensor

from deepwiener.errors import ConfigError
from deepwiener.layers import init
from deepwiener.layers.base import LayerOptions, LTILayer, complex_from, real_param
from deepwiener.layers.discretize import DISCRETIZATIONS, continuous_from_discrete, discretize
from deepwiener.systems import DiagonalSSM, LinearSystem, real_dtype


@dataclasses.dataclass(frozen=True)
class ContinuousOptions(LayerOptions):
    """Options of continuous-time layers: timescale range (in samples) and discretisation method."""

    dt_min: float = 0.01
    dt_max: float = 0.5
    discretization: str = "zoh"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.dt_min <= self.dt_max:
            raise ConfigError(f"need 0 < dt_min <= dt_max, got dt_min={self.dt_min}, dt_max={self.dt_max}")
        if self.discretization not in DISCRETIZATIONS:
            raise ConfigError(f"discretization must be one of {DISCRETIZATIONS}, got {self.discretization!r}")


class S5(LTILayer):
    """S5 layer: u (batch, time, d_in) -> eta (batch, time, d_out) through d_state complex modes."""

    Options = ContinuousOptions
    continuous = True

    def __init__(
        self,
        d_in: int,
        d_out: int,
        d_state: int,
        options: ContinuousOptions | None = None,
        *,
        generator: torch.Generator,
    ) -> None:
        options = options or ContinuousOptions()
        super().__init__(d_in, d_out, d_state, options)
        lam_c, _, _, V = init.hippo_normal_modes(d_state)  # V: (2n, n)
        draw = {"generator": generator, "dtype": torch.float64, "device": "cpu"}  # numpy-side, also under meta
        B0 = np.asarray(torch.randn(2 * d_state, d_in, **draw)) / math.sqrt(d_in)
        C0 = np.asarray(torch.randn(d_out, 2 * d_state, **draw))
        B_c = V.conj().T @ B0  # (n, d_in)
        C = C0 @ V / math.sqrt(2 * d_state)  # (d_out, n)
        self.log_neg_re = real_param(torch.from_numpy(np.log(-lam_c.real)))  # (n,)
        self.im = real_param(torch.from_numpy(lam_c.imag))  # (n,)
        self.log_dt = real_param(init.log_uniform((d_state,), options.dt_min, options.dt_max, generator))
        self.B_re, self.B_im = real_param(torch.from_numpy(B_c.real)), real_param(torch.from_numpy(B_c.imag))
        self.C_re, self.C_im = real_param(torch.from_numpy(C.real)), real_param(torch.from_numpy(C.imag))
        self.D = real_param(torch.randn(d_out, d_in, generator=generator) / math.sqrt(d_in))

    def lam_c(self) -> Tensor:
        """Continuous eigenvalues (n,) complex, in rad per unit Delta."""
        return complex_from(-self.log_neg_re.exp(), self.im)

    def discretize(self) -> DiagonalSSM:
        lam, gain = discretize(self.lam_c(), self.log_dt.exp(), self.options.discretization)
        B = gain[:, None] * complex_from(self.B_re, self.B_im)
        return DiagonalSSM(lam, B, complex_from(self.C_re, self.C_im), self.D, self.options.readout)

    def continuous_poles(self) -> Tensor:
        return self.lam_c() * self.log_dt.exp()

    @classmethod
    def from_system(cls, system: LinearSystem, options: ContinuousOptions | None = None) -> S5:
        """An S5 layer reproducing a stable diagonal system, with Delta = 1 sample for every state."""
        if not isinstance(system, DiagonalSSM):
            raise ConfigError("S5.from_system needs a DiagonalSSM")
        lam = system.lam.detach()
        if bool((lam.abs() >= 1).any()):
            raise ConfigError(f"cannot represent an unstable system as S5 (max |lam| = {lam.abs().max():.6g})")
        options = dataclasses.replace(options or ContinuousOptions(), readout=system.readout)
        n = lam.shape[0]
        layer = cls(system.d_in, system.d_out, n, options, generator=torch.Generator().manual_seed(0))
        layer = layer.to(real_dtype(system.lam.dtype))  # keep the system's precision
        delta = torch.ones(n, dtype=torch.float64)
        lam_c, gain = continuous_from_discrete(lam.to(torch.complex128), delta, options.discretization)
        B_c = system.B.detach().to(torch.complex128) / gain[:, None]
        with torch.no_grad():
            layer.log_neg_re.copy_(torch.log(-lam_c.real))
            layer.im.copy_(lam_c.imag)
            layer.log_dt.zero_()
            layer.B_re.copy_(B_c.real)
            layer.B_im.copy_(B_c.imag)
            C = system.C.detach().to(system.lam.dtype)
            layer.C_re.copy_(C.real)
            layer.C_im.copy_(C.imag)
            layer.D.copy_(system.D.detach())
        return layer
