"""LRU: the Linear Recurrent Unit (Orvieto et al., "Resurrecting recurrent neural networks for long
sequences", ICML 2023), a discrete-time complex diagonal layer.

Recurrence (readout "next", the LRU paper's convention; "current" gives the strictly proper variant of
Bonassi et al.'s code):

    x[k+1] = diag(lam) x[k] + diag(gamma) B u[k]
    eta[k] = Re(C x[k+1]) + D u[k]

Parametrisation: lam = exp(-exp(nu) + i exp(theta)) with real nu, theta, so |lam| = exp(-exp(nu)) < 1
for every parameter value (Schur stable by construction). gamma = sqrt(1 - |lam|^2) normalises the
state's l2 gain and is computed from lam, not learnt.

Initialisation: eigenvalues uniform over the annulus sector r_min <= |lam| <= r_max,
0 < arg(lam) <= max_phase; B, C complex normal with variance 1/d_in and 1/(2 n) per part; D normal
with variance 1/d_in.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from deepwiener.errors import ConfigError
from deepwiener.layers import init
from deepwiener.layers.base import LayerOptions, LTILayer, complex_from, real_param
from deepwiener.systems import DiagonalSSM, LinearSystem, real_dtype

_MIN_PHASE = 1e-7  # real poles are stored as slowly rotating ones; the error is O(1e-14)


@dataclasses.dataclass(frozen=True)
class LRUOptions(LayerOptions):
    """LRU options: ring of the initial eigenvalues (radius r_min..r_max, phase 0..max_phase)."""

    r_min: float = 0.5
    r_max: float = 0.99
    max_phase: float = math.pi

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.r_min <= self.r_max < 1:
            raise ConfigError(f"need 0 <= r_min <= r_max < 1, got r_min={self.r_min}, r_max={self.r_max}")
        if not 0 < self.max_phase <= 2 * math.pi:
            raise ConfigError(f"max_phase must be in (0, 2 pi], got {self.max_phase}")


class LRU(LTILayer):
    """Linear Recurrent Unit: u (batch, time, d_in) -> eta (batch, time, d_out), d_state complex modes."""

    Options = LRUOptions

    def __init__(
        self, d_in: int, d_out: int, d_state: int, options: LRUOptions | None = None, *, generator: torch.Generator
    ) -> None:
        options = options or LRUOptions()
        super().__init__(d_in, d_out, d_state, options)
        nu, theta = init.ring(d_state, options.r_min, options.r_max, options.max_phase, generator)
        self.nu = real_param(nu)  # (n,)
        self.theta = real_param(theta)  # (n,)
        b_re, b_im = init.complex_normal((d_state, d_in), 1 / math.sqrt(2 * d_in), generator)
        c_re, c_im = init.complex_normal((d_out, d_state), 1 / math.sqrt(2 * d_state), generator)
        self.B_re, self.B_im = real_param(b_re), real_param(b_im)  # (n, d_in)
        self.C_re, self.C_im = real_param(c_re), real_param(c_im)  # (d_out, n)
        self.D = real_param(torch.randn(d_out, d_in, generator=generator) / math.sqrt(d_in))

    def discretize(self) -> DiagonalSSM:
        log_mod = -self.nu.exp()  # log|lam| < 0
        lam = torch.exp(complex_from(log_mod, self.theta.exp()))  # (n,)
        gamma = torch.sqrt(-torch.expm1(2 * log_mod))  # sqrt(1 - |lam|^2)
        B = complex_from(self.B_re, self.B_im) * gamma[:, None]
        return DiagonalSSM(lam, B, complex_from(self.C_re, self.C_im), self.D, self.options.readout)

    @classmethod
    def from_system(cls, system: LinearSystem, options: LRUOptions | None = None) -> LRU:
        """An LRU reproducing a diagonal system (modes with negative phase are conjugated)."""
        if not isinstance(system, DiagonalSSM):
            raise ConfigError("LRU.from_system needs a DiagonalSSM")
        lam, B, C = system.lam.detach(), system.B.detach(), system.C.detach()
        if bool((lam.abs() >= 1).any()):
            raise ConfigError(f"cannot represent an unstable system as an LRU (max |lam| = {lam.abs().max():.6g})")
        flip = lam.angle() < 0
        lam = torch.where(flip, lam.conj(), lam)
        B = torch.where(flip[:, None], B.conj(), B)
        C = torch.where(flip[None, :], C.conj(), C)
        options = dataclasses.replace(options or LRUOptions(), readout=system.readout)
        layer = cls(system.d_in, system.d_out, lam.shape[0], options, generator=torch.Generator().manual_seed(0))
        layer = layer.to(real_dtype(system.lam.dtype))  # keep the system's precision
        gamma = torch.sqrt(1 - lam.abs() ** 2)
        with torch.no_grad():
            layer.nu.copy_(torch.log(-torch.log(lam.abs())))
            layer.theta.copy_(torch.log(lam.angle().clamp_min(_MIN_PHASE)))
            layer.B_re.copy_((B / gamma[:, None]).real)
            layer.B_im.copy_((B / gamma[:, None]).imag)
            layer.C_re.copy_(C.real)
            layer.C_im.copy_(C.imag)
            layer.D.copy_(system.D.detach())
        return layer
