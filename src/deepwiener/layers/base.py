"""The linear-layer protocol shared by LRU, S5, S4D and S4.

A layer owns real parameters and implements ``discretize()`` (parameters -> discrete system) and, where
its structure allows, ``from_system()`` (the inverse, used by model-order reduction and linear
initialisation). Everything else (simulation, stepping, export) is shared and final.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import ClassVar, final

import torch
from torch import Tensor, nn

from deepwiener.engines import Stepper, simulate
from deepwiener.errors import ConfigError, check_positive_ints
from deepwiener.options import DictConfig
from deepwiener.stepgraph import StepGraph
from deepwiener.systems import READOUTS, LinearSystem, StateSpaceMatrices


@dataclasses.dataclass(frozen=True)
class LayerOptions(DictConfig):
    """Options common to every linear layer.

    Attributes:
        readout: "next" (eta[k] reads x[k+1]: proper, input passes through B at once) or "current"
            (eta[k] reads x[k]: strictly proper, one-sample delay per layer).
    """

    readout: str = "next"

    def __post_init__(self) -> None:
        if self.readout not in READOUTS:
            raise ConfigError(f"readout must be one of {READOUTS}, got {self.readout!r}")


class LTILayer(nn.Module, abc.ABC):
    """Linear time-invariant layer: u (batch, time, d_in) -> eta (batch, time, d_out).

    Attributes:
        d_in, d_out: input and output widths.
        d_state: number of complex modes (real order 2 * d_state).
    """

    Options: ClassVar[type[LayerOptions]] = LayerOptions
    continuous: ClassVar[bool] = False

    def __init__(self, d_in: int, d_out: int, d_state: int, options: LayerOptions) -> None:
        super().__init__()
        check_positive_ints(d_in=d_in, d_out=d_out, d_state=d_state)
        self.d_in, self.d_out, self.d_state = d_in, d_out, d_state
        self.options = options

    @abc.abstractmethod
    def discretize(self) -> LinearSystem:
        """The discrete-time system of the current parameters (differentiable; never cached)."""

    @classmethod
    def from_system(cls, system: LinearSystem, options: LayerOptions | None = None) -> LTILayer:
        """A layer whose ``discretize()`` reproduces ``system`` (inverse of ``discretize``)."""
        raise ConfigError(f"{cls.__name__} cannot be built from a system (its structure does not allow it)")

    def continuous_poles(self) -> Tensor | None:
        """Continuous-time eigenvalues lam_c * Delta in rad/sample (None for discrete-time layers)."""
        return None

    @final
    def forward(self, u: Tensor, state: Tensor | None = None, mode: str = "auto") -> tuple[Tensor, Tensor]:
        """Simulate the layer.

        Args:
            u: (batch, time, d_in) real.
            state: (batch, *state_shape) complex; zeros if None.
            mode: "auto", "loop", "scan", "fft" or "compiled".

        Returns:
            eta: (batch, time, d_out) real, final state.
        """
        if u.dim() != 3 or u.shape[-1] != self.d_in:
            raise ConfigError(f"u must have shape (batch, time, {self.d_in}), got {tuple(u.shape)}")
        return simulate(self.discretize(), u, state, mode)

    @final
    def init_state(self, batch: int) -> Tensor:
        """Zero state (batch, *state_shape) complex."""
        return self.discretize().init_state(batch)

    @final
    def stepper(self) -> Stepper:
        """A pre-discretised one-sample simulator (discretises once)."""
        return Stepper(self.discretize())

    @final
    def step(self, u_k: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        """One sample: u_k (batch, d_in) -> (eta_k (batch, d_out), next state)."""
        return self.stepper().step(u_k, state)

    @final
    def kernel(self, length: int) -> Tensor:
        """Impulse response from a zero state: (length, d_out, d_in) real."""
        return self.discretize().impulse_response(length)

    @final
    @torch.no_grad()
    def state_space(self, dt: float = 1.0) -> StateSpaceMatrices:
        """Exact real discrete-time (A, B, C, D, dt) of order 2 * n_modes, numpy float64."""
        return self.discretize().real_matrices(dt)

    @final
    @torch.no_grad()
    def export_step(self, graph: StepGraph, u: str) -> str:
        """Add the layer's one-sample step to a model's step graph (``stepgraph``), in the real 2 x 2-block
        realisation of its system (``LinearSystem.real_blocks``); its state is one part, the complex state's
        (Re, Im) pairs.

        Args:
            graph: the graph under construction.
            u: the name of the layer's input vector (d_in,).

        Returns:
            The name of eta (d_out,).
        """
        system = self.discretize()
        A, B, C, D = system.real_blocks()
        modes = B.shape[0] // 2
        x = graph.state(B.shape[0], f"{type(self).__name__} state: {modes} complex modes as (Re, Im) pairs")
        x_next = graph.affine([(A, x), (B, u)], hint="x_next")
        eta = graph.affine([(C, x_next if system.readout == "next" else x), (D, u)], hint="eta")
        graph.update(x, x_next)
        return eta

    def extra_repr(self) -> str:
        return f"d_in={self.d_in}, d_out={self.d_out}, d_state={self.d_state}, options={self.options}"


def real_param(value: Tensor) -> nn.Parameter:
    """A float parameter from a tensor (always real)."""
    return nn.Parameter(value.detach().clone().to(torch.get_default_dtype()))


def complex_from(re: Tensor, im: Tensor) -> Tensor:
    """re + i im with the complex dtype matching the real dtype."""
    return torch.complex(re, im)
