"""Simulation engines: one system, several ways to run it, all equal to the reference loop.

    mode    what it does                                          systems
    loop    the plain recurrence (the specification)              all
    scan    parallel associative scan in modal coordinates        all (DPLR via its eigendecomposition)
    fft     convolution with the exact impulse response           all LTI
    compiled  fused CPU kernel with analytic backward (numba)     all, CPU only, when numba is installed
    fused   a deep Wiener model's whole stack in one kernel       as compiled; for one system it *is* compiled
            (``fused``, used by ``models.deepwiener``)
    auto    a fixed rule table (no timing at run time, so the choice is deterministic):
            diagonal on CPU -> compiled if available (else scan, said once in the log); diagonal on GPU -> scan;
            DPLR -> fft. (A deep Wiener model on the CPU takes the fused stack first where it applies.)

Engines never import layers or models: they simulate the value objects of ``systems``. The numba kernels share
``numba_runtime`` (building, availability, the policy when numba is missing, launching on threads).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from deepwiener.engines import compiled, numba_runtime
from deepwiener.engines.fft import simulate_fft
from deepwiener.engines.loop import simulate_loop
from deepwiener.engines.scan import diagonal_recurrence_scan
from deepwiener.errors import unknown_name
from deepwiener.systems import DiagonalSSM, LinearSystem

Mode = Literal["auto", "loop", "scan", "fft", "compiled", "fused"]
MODES: tuple[str, ...] = ("auto", "loop", "scan", "fft", "compiled", "fused")

Recurrence = Callable[[Tensor, Tensor, Tensor], Tensor]


def resolve_mode(system: LinearSystem, device_type: str, mode: str) -> str:
    """The concrete engine that ``mode`` means for this system on this device (module docstring).

    Raises:
        ConfigError: an unknown mode; ``numba_runtime.CompiledUnavailableError`` for "compiled" or "fused" where it
            cannot run. "fused" gives "compiled" (one system's fused kernel).
    """
    if mode not in MODES:
        raise unknown_name("mode", mode, MODES)
    if mode == "auto" and not isinstance(system, DiagonalSSM):
        return "fft"
    return numba_runtime.resolve(mode, device_type, compiled.KERNELS, fallback="scan")


def simulate(system: LinearSystem, u: Tensor, x0: Tensor | None = None, mode: str = "auto") -> tuple[Tensor, Tensor]:
    """Simulate a linear system over a sequence.

    Args:
        system: the discrete-time system (``layer.discretize()``).
        u: (batch, time, d_in) real.
        x0: (batch, *state_shape) complex initial state; zeros if None.
        mode: one of ``MODES``.

    Returns:
        eta: (batch, time, d_out) real, and the final state (batch, *state_shape).
    """
    if x0 is None:
        x0 = system.init_state(u.shape[0])
    engine = resolve_mode(system, u.device.type, mode)
    if engine == "loop":
        return simulate_loop(system, u, x0)
    if engine == "fft":
        return simulate_fft(system, u, x0)
    recurrence = compiled.diagonal_recurrence if engine == "compiled" else diagonal_recurrence_scan
    return simulate_modal(system, u, x0, recurrence)


def simulate_modal(system: LinearSystem, u: Tensor, x0: Tensor, recurrence: Recurrence) -> tuple[Tensor, Tensor]:
    """Simulate in modal coordinates with a diagonal recurrence (scan or compiled kernel).

    Args:
        system: any LTI system; DPLR systems are diagonalised first.
        u: (batch, time, d_in) real.
        x0: (batch, *state_shape) complex.
        recurrence: ``f(a (n,), bu (b, t, n), z0 (b, n)) -> states after each input (b, t, n)``.
    """
    diag, to_modal, from_modal = system.modal()
    z0 = to_modal(x0)
    bu = diag.drive(u)  # (b, t, n)
    X = recurrence(diag.lam, bu, z0)  # (b, t, n): x[1..T]
    if u.shape[1] == 0:
        return u.new_zeros(u.shape[0], 0, diag.d_out), x0
    if diag.readout == "next":
        read = X
    else:
        read = _shift_right(X, z0)
    eta = diag.observe(read) + u @ diag.D.T
    return eta, from_modal(X[:, -1])


def _shift_right(X: Tensor, x0: Tensor) -> Tensor:
    """x[0..T-1] from x[1..T] and x0. X: (b, t, n), x0: (b, n)."""
    return torch.cat([x0[:, None, :], X[:, :-1]], dim=1)


class Stepper:
    """A pre-discretised system for one-sample-at-a-time simulation (streaming, control loops).

    Build it once (``layer.stepper()``); it never changes the layer.
    """

    def __init__(self, system: LinearSystem) -> None:
        self.system = system

    def init_state(self, batch: int) -> Tensor:
        """Zero state (batch, *state_shape) complex."""
        return self.system.init_state(batch)

    def step(self, u_k: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        """One sample. u_k: (batch, d_in) real; x: (batch, *state_shape) -> (eta_k (batch, d_out), next state)."""
        x_next = self.system.advance(x, u_k)
        return self.system.output(x, x_next, u_k), x_next
