"""S6: a selective (input-dependent) diagonal state-space layer in the style of Mamba.

**S6 is NOT linear time-invariant, so a block built on it is NOT a Wiener block.** Its dynamics change with
the input at every sample. It therefore has no ``discretize()``, ``state_space()``, ``kernel()``,
``from_system()`` or ``to_control()``; it has no poles, zeros, DC gain, Bode plot, Gramians or Hankel
singular values; model-order reduction and the deltaISS certificate do not apply; and there is no FFT mode
(``mode="fft"`` raises ``ConfigError``). The class attribute ``S6.lti`` is False, and ``deepwiener.analysis``
must report such a block as "selective, not LTI" instead of inventing poles. LTI layers are the ``LTILayer``
instances (``isinstance(layer, LTILayer)`` is the test; S6 is not one).

What it shares with the LTI layers is the interface: ``forward(u, state, mode) -> (eta, state)``,
``init_state(batch)``, ``step(u_k, state)`` and ``stepper()``, so ``DeepWiener(layer="s6")`` trains, simulates
and streams like any other model.

Recurrence, per channel h (of d_model) and state n (of d_state); everything is real::

    Delta[k] = softplus(W_dt u[k] + b_dt)              (b, h)     input-dependent timescale of each channel
    B[k]     = W_B u[k],   C[k] = W_C u[k]             (b, n)     shared by all channels (as in Mamba)
    A        = -exp(a)                                 (h, n)     real diagonal, Hurwitz by construction
    Abar[k]  = exp(Delta[k] A)                         (b, h, n)  exact ZOH of the state matrix
    Bbar[k]  = Delta[k] B[k]                           (b, h, n)  simplified ZOH (Euler) of the input matrix
    x[k+1]   = Abar[k] * x[k] + Bbar[k] u[k]           (b, h, n)  elementwise, channel h driven by u_h[k]
    eta[k]   = C[k] . x[k+1] + D u[k]                  (b, h)     readout "next" (default)
    eta[k]   = C[k] . x[k]   + D u[k]                             readout "current" (strictly proper)

Stability: Delta[k] > 0 for every input, so 0 < Abar[k] = exp(-Delta[k] exp(a)) < 1 at every step and for
every parameter value: each step contracts the previous state. (In floating point, Delta underflows to 0
only for pre-activations below about -100; Abar is then 1, a marginal integrator for that step.)

Parametrisation: a (h, n), W_dt (h, h), b_dt (h,), W_B (n, h), W_C (n, h), D (h,), all real. Unlike Mamba, the
timescale projection W_dt is full rank (Mamba uses a rank-ceil(h/16) factorisation) and the layer reads its
input directly (Mamba precedes it with a causal convolution and a SiLU gate, which belong outside the layer).

Initialisation: S4D-Real a_n = log(n + 1), i.e. A_n = -(n + 1); b_dt = softplus^-1(Delta0) with Delta0
log-uniform in [dt_min, dt_max] samples per channel, so Delta = Delta0 at u = 0; W_dt, W_B and W_C uniform in
+-1/sqrt(h) (torch's ``nn.Linear`` and Mamba's projections); D = 1.

Engines (``mode``): "loop" (the reference, one sample at a time), "scan" (the parallel associative scan
``diagonal_recurrence_scan`` with a time-varying ``a`` and the (h, n) states flattened to h*n), "compiled" (the
numba CPU kernel with its analytic backward), "auto" (compiled on the CPU when available, else scan).

Reference: A. Gu and T. Dao, "Mamba: Linear-time sequence modeling with selective state spaces", 2023
(the S6 layer, Algorithm 2).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deepwiener.engines import MODES, Recurrence, compiled, numba_runtime
from deepwiener.engines.scan import diagonal_recurrence_scan
from deepwiener.errors import ConfigError, DataError, check_positive_ints, unknown_name
from deepwiener.layers import init
from deepwiener.layers.base import LayerOptions, real_param
from deepwiener.stepgraph import StepGraph


@dataclasses.dataclass(frozen=True)
class S6Options(LayerOptions):
    """S6 options: the range, in samples, of the initial timescales Delta (Mamba's defaults).

    Attributes:
        dt_min, dt_max: Delta at u = 0 is log-uniform in [dt_min, dt_max], one value per channel.
    """

    dt_min: float = 0.001
    dt_max: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.dt_min <= self.dt_max:
            raise ConfigError(f"need 0 < dt_min <= dt_max, got dt_min={self.dt_min}, dt_max={self.dt_max}")


class Selection(NamedTuple):
    """The input-dependent discrete system of every step of a sequence.

    Attributes:
        A_bar: (batch, time, h, n) state multipliers, in (0, 1).
        bu: (batch, time, h, n) input terms Bbar[k] u[k].
        C: (batch, time, n) output vectors, shared by the channels.
    """

    A_bar: Tensor
    bu: Tensor
    C: Tensor


def recurrence_loop(a: Tensor, bu: Tensor, x0: Tensor) -> Tensor:
    """The reference recurrence x[k+1] = a[k] * x[k] + bu[k], one sample at a time.

    Args:
        a, bu: (batch, time, n).
        x0: (batch, n).

    Returns:
        X: (batch, time, n) with X[:, k] = x[k+1].
    """
    states = []
    x = x0
    for k in range(bu.shape[1]):
        x = a[:, k] * x + bu[:, k]
        states.append(x)
    return torch.stack(states, dim=1) if states else bu


RECURRENCES: dict[str, Recurrence] = {
    "loop": recurrence_loop,
    "scan": diagonal_recurrence_scan,
    "compiled": compiled.diagonal_recurrence,
}


def resolve_mode(mode: str, device_type: str) -> str:
    """The engine that ``mode`` means for a selective layer on this device ("loop", "scan" or "compiled").

    Raises:
        ConfigError: "fft" (not LTI), an unknown mode, or "compiled" off the CPU or without numba.
    """
    if mode == "fft":
        raise ConfigError("mode 'fft' needs an LTI layer, and S6 is not LTI (its dynamics depend on the input); "
                          "use 'auto', 'scan', 'compiled' or 'loop'")
    if mode not in MODES:
        raise unknown_name("mode", mode, MODES)
    return numba_runtime.resolve(mode, device_type, compiled.KERNELS, fallback="scan")


def _uniform(shape: tuple[int, ...], bound: float, gen: torch.Generator) -> Tensor:
    """Samples uniform in [-bound, bound]: (shape) float32."""
    return (2 * torch.rand(shape, generator=gen) - 1) * bound


class S6(nn.Module):
    """Selective SSM layer: u (batch, time, h) -> eta (batch, time, h), d_state real states per channel.

    Not LTI (see the module docstring): no ``discretize()``; ``lti`` is False.

    Attributes:
        d_in, d_out: the channel count h (equal).
        d_state: real states per channel n; the state is (batch, h, n) real.
    """

    Options: ClassVar[type[LayerOptions]] = S6Options
    lti: ClassVar[bool] = False

    def __init__(
        self, d_in: int, d_out: int, d_state: int, options: S6Options | None = None, *, generator: torch.Generator
    ) -> None:
        super().__init__()
        options = options or S6Options()
        check_positive_ints(d_in=d_in, d_out=d_out, d_state=d_state)
        if d_in != d_out:
            raise ConfigError(f"S6 runs one selective system per channel: d_in must equal d_out, "
                              f"got {d_in} and {d_out}")
        self.d_in, self.d_out, self.d_state = d_in, d_out, d_state
        self.options = options
        h, n = d_in, d_state
        bound = h**-0.5
        self.a = real_param(torch.log(torch.arange(1.0, n + 1)).expand(h, n))  # (h, n)
        self.W_dt = real_param(_uniform((h, h), bound, generator))  # (h, h)
        delta0 = init.log_uniform((h,), options.dt_min, options.dt_max, generator).double().exp()  # (h,)
        self.b_dt = real_param(delta0 + torch.log(-torch.expm1(-delta0)))  # (h,) softplus^-1(delta0)
        self.W_B = real_param(_uniform((n, h), bound, generator))  # (n, h)
        self.W_C = real_param(_uniform((n, h), bound, generator))  # (n, h)
        self.D = real_param(torch.ones(h))  # (h,)

    def selection(self, u: Tensor) -> Selection:
        """The discrete system of each step, computed from the input.

        Args:
            u: (batch, time, h) real.

        Returns:
            ``Selection(A_bar (b, t, h, n), bu (b, t, h, n), C (b, t, n))``.
        """
        delta = F.softplus(u @ self.W_dt.T + self.b_dt)  # (b, t, h)
        A_bar = torch.exp(-delta[..., None] * self.a.exp())  # (b, t, h, n)
        B = u @ self.W_B.T  # (b, t, n)
        bu = (delta * u)[..., None] * B[:, :, None, :]  # (b, t, h, n)
        return Selection(A_bar, bu, u @ self.W_C.T)

    def init_state(self, batch: int) -> Tensor:
        """Zero state (batch, h, n) real, with the parameters' dtype and device."""
        return self.a.new_zeros(batch, self.d_in, self.d_state)

    def forward(self, u: Tensor, state: Tensor | None = None, mode: str = "auto") -> tuple[Tensor, Tensor]:
        """Simulate the layer.

        Args:
            u: (batch, time, h) real.
            state: (batch, h, n) real initial state; zeros if None.
            mode: "auto", "loop", "scan" or "compiled" ("fft" raises ConfigError: S6 is not LTI).

        Returns:
            eta: (batch, time, h) real, and the final state (batch, h, n).

        Raises:
            ConfigError: wrong input width or an inapplicable mode.
            DataError: a state of the wrong shape.
        """
        if u.dim() != 3 or u.shape[-1] != self.d_in:
            raise ConfigError(f"u must have shape (batch, time, {self.d_in}), got {tuple(u.shape)}")
        batch, steps, h = u.shape
        x0 = self.init_state(batch) if state is None else state
        if x0.shape != (batch, h, self.d_state):
            raise DataError(f"state must have shape (batch, h, n) = {(batch, h, self.d_state)}, "
                            f"got {tuple(x0.shape)}")
        recurrence = RECURRENCES[resolve_mode(mode, u.device.type)]
        if steps == 0:
            return u.new_zeros(batch, 0, h), x0
        A_bar, bu, C = self.selection(u)
        X = recurrence(A_bar.flatten(2), bu.flatten(2), x0.flatten(1)).unflatten(2, (h, self.d_state))  # (b,t,h,n)
        read = X if self.options.readout == "next" else torch.cat([x0[:, None], X[:, :-1]], dim=1)
        eta = (read * C[:, :, None, :]).sum(-1) + self.D * u  # (b, t, h)
        return eta, X[:, -1]

    def step(self, u_k: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        """One sample with the reference recurrence.

        Args:
            u_k: (batch, h) real.
            state: (batch, h, n) real.

        Returns:
            eta_k: (batch, h) real, and the next state (batch, h, n).
        """
        eta, state = self(u_k[:, None], state, mode="loop")
        return eta[:, 0], state

    @torch.no_grad()
    def export_step(self, graph: StepGraph, u: str) -> str:
        """Add the layer's one-sample step (the recurrence of the module docstring, in real operations) to a
        model's step graph (``stepgraph``); its state is one part, x (h, n) flattened channel by channel.

        Args:
            graph: the graph under construction.
            u: the name of the layer's input vector (h,).

        Returns:
            The name of eta (h,).
        """
        h, n = self.d_in, self.d_state
        x = graph.state(h * n, f"S6 state: {h} channels x {n} real states, channel by channel")
        channel, state = np.repeat(np.arange(h), n), np.tile(np.arange(n), h)  # (h n,) each: the (h, n) grid
        delta = graph.map("softplus", graph.affine([(self.W_dt, u)], self.b_dt, hint="delta_pre"), hint="delta")
        decay = graph.scale(graph.gather(delta, channel), scale=-self.a.exp().reshape(-1), hint="log_a_bar")
        a_bar = graph.map("exp", decay, hint="a_bar")  # (h n,)
        B, C = (graph.affine([(W, u)], hint=name) for W, name in ((self.W_B, "B"), (self.W_C, "C")))  # (n,) each
        bu = graph.mul(graph.gather(graph.mul(delta, u), channel), graph.gather(B, state))
        x_next = graph.add(graph.mul(a_bar, x), bu)
        read = x_next if self.options.readout == "next" else x
        eta = graph.group_sum(graph.mul(read, graph.gather(C, state)), n)
        graph.update(x, x_next)
        return graph.add(eta, graph.scale(u, scale=self.D))

    def stepper(self) -> S6:
        """The streaming simulator: the layer itself (there is nothing to pre-discretise, since the
        system depends on the input). It follows later parameter changes, unlike an LTI layer's stepper."""
        return self

    def extra_repr(self) -> str:
        return f"d_in={self.d_in}, d_out={self.d_out}, d_state={self.d_state}, options={self.options}"
