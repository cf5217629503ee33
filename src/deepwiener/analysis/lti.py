"""The linear part of each block as a plain discrete-time system: poles, zeros, gains, frequency response.

``blocks(model)`` returns one value object per block of a ``DeepWiener`` model:

* ``BlockSystem`` for an LTI layer: its exact real realisation ``(A, B, C, D)`` (order ``2 * d_state``, from
  ``LTILayer.state_space``) and the model's sampling time ``dt`` in seconds. The system maps the block's
  (normalised) input ``v`` to the nonlinearity's input ``eta``, in the model's internal coordinates between
  encoder and decoder::

      x[k+1] = A x[k] + B v[k]        eta[k] = C x[k] + D v[k]

  Cached properties give the poles, transmission zeros, DC gain, spectral radius and stability; methods give
  the frequency response in Hz, Hankel singular values, the H-infinity norm and a ``control.StateSpace``.
  For continuous-time layers (S5, S4D, S4) the continuous poles ``lam_c * Delta / dt`` in rad/s are kept as
  well, with a flag when one is aliased (``|Im(lam_c) Delta| > pi``: the discrete system cannot tell it
  from a slower pole).
* ``NonLTIBlock`` for a layer without a discrete system (a selective, input-dependent SSM): reported as
  "not LTI" instead of inventing poles.

Everything here is numpy float64 and JSON-friendly through ``to_dict()``; python-control is imported only
inside ``to_control()``.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg

from deepwiener.analysis import gramians
from deepwiener.errors import ConfigError
from deepwiener.layers import LTILayer
from deepwiener.models import DeepWiener, LFRModel

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class NonLTIBlock:
    """A block whose layer is not linear time-invariant (no poles, zeros or frequency response).

    Attributes:
        index: position of the block in the model (0-based).
        layer: the layer's name.
        reason: why it is not analysed.
    """

    index: int
    layer: str
    reason: str

    @property
    def is_lti(self) -> bool:
        """Always False."""
        return False

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly summary."""
        return {"index": self.index, "layer": self.layer, "lti": False, "reason": self.reason}


@dataclass(frozen=True, eq=False)
class BlockSystem:
    """The real discrete-time realisation of one block's LTI layer.

    Attributes:
        index: position of the block in the model (0-based).
        layer: the layer's name (e.g. "lru").
        A: (n, n) float64 state matrix.
        B: (n, m) float64 input matrix.
        C: (p, n) float64 output matrix.
        D: (p, m) float64 feedthrough.
        dt: sampling time in seconds.
        continuous_poles_rad_s: (n / 2,) complex continuous-time poles ``lam_c * Delta / dt`` in rad/s (one
            per complex mode), or None for a discrete-time layer.
        discretization: "zoh" or "bilinear" for a continuous-time layer, else None.
    """

    index: int
    layer: str
    A: np.ndarray
    B: np.ndarray
    C: np.ndarray
    D: np.ndarray
    dt: float
    continuous_poles_rad_s: np.ndarray | None = None
    discretization: str | None = None

    @property
    def is_lti(self) -> bool:
        """Always True."""
        return True

    @property
    def n_states(self) -> int:
        """Real state dimension n."""
        return self.A.shape[0]

    @functools.cached_property
    def poles(self) -> np.ndarray:
        """(n,) complex eigenvalues of A, sorted by decreasing modulus."""
        lam = np.linalg.eigvals(self.A)
        return lam[np.argsort(-np.abs(lam), kind="stable")]

    @functools.cached_property
    def zeros(self) -> np.ndarray:
        """Finite transmission (invariant) zeros: the finite generalised eigenvalues of the Rosenbrock pencil.

        ``[[A, B], [C, D]] - z [[I, 0], [0, 0]]`` (as python-control does without slycot). Square systems
        only (p == m), which every block is.

        Returns:
            (k,) complex, k <= n.

        Raises:
            ConfigError: the system is not square.
        """
        n, m, p = self.n_states, self.B.shape[1], self.C.shape[0]
        if p != m:
            raise ConfigError(f"transmission zeros need a square system (p == m); block {self.index} is {p}x{m}")
        pencil = np.block([[self.A, self.B], [self.C, self.D]])
        mass = np.zeros_like(pencil)
        mass[:n, :n] = np.eye(n)
        z = scipy.linalg.eigvals(pencil, mass)
        return z[np.isfinite(z)]

    @functools.cached_property
    def dc_gain(self) -> np.ndarray:
        """(p, m) static gain G(1) = C (I - A)^-1 B + D; inf where A has an eigenvalue at 1."""
        try:
            return gramians.frequency_response(self.A, self.B, self.C, self.D, np.zeros(1))[0].real
        except np.linalg.LinAlgError:
            return np.full(self.D.shape, np.inf)

    @functools.cached_property
    def spectral_radius(self) -> float:
        """max |pole| (0 for a system without states)."""
        return float(np.max(np.abs(self.poles), initial=0.0))

    @property
    def is_stable(self) -> bool:
        """Schur stability: spectral radius < 1."""
        return self.spectral_radius < 1.0

    @property
    def aliased(self) -> bool:
        """True when a zero-order-hold layer has a continuous pole with ``|Im(p)| * dt > pi`` (p in rad/s).

        Such a pole oscillates above the Nyquist frequency, and the discrete system cannot tell it from a slower
        one. The bilinear transform maps the whole imaginary axis into the unit circle (it warps frequencies
        instead of aliasing them), so bilinear layers are never flagged.
        """
        if self.continuous_poles_rad_s is None or self.discretization != "zoh":
            return False
        return bool(np.any(np.abs(self.continuous_poles_rad_s.imag) * self.dt > math.pi))

    def frequency_response(self, f_hz: np.ndarray) -> np.ndarray:
        """Frequency response G(e^{j 2 pi f dt}).

        Args:
            f_hz: (f,) frequencies in Hz (up to the Nyquist frequency 1 / (2 dt)).

        Returns:
            (f, p, m) complex128.
        """
        omega = 2 * np.pi * np.asarray(f_hz, dtype=np.float64) * self.dt
        return gramians.frequency_response(self.A, self.B, self.C, self.D, omega)

    def bode(self, f_hz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Magnitude and phase of every input-output pair.

        Args:
            f_hz: (f,) increasing frequencies in Hz.

        Returns:
            (magnitude (f, p, m) absolute value, phase (f, p, m) in degrees, unwrapped along frequency).
        """
        G = self.frequency_response(f_hz)
        return np.abs(G), np.degrees(np.unwrap(np.angle(G), axis=0))

    def sigma_max(self, f_hz: np.ndarray) -> np.ndarray:
        """(f,) largest singular value of G at each frequency (the MIMO gain)."""
        return np.linalg.norm(self.frequency_response(f_hz), ord=2, axis=(1, 2))

    @functools.cached_property
    def _hsv(self) -> np.ndarray:
        return gramians.hankel_singular_values(self.A, self.B, self.C)

    def hankel_singular_values(self) -> np.ndarray:
        """(n,) Hankel singular values, descending.

        Raises:
            ConfigError: the block is not Schur stable.
        """
        return self._hsv.copy()

    @functools.cached_property
    def _hinf(self) -> tuple[float, float]:
        return gramians.hinf_norm(self.A, self.B, self.C, self.D)

    def hinf_norm(self) -> tuple[float, float]:
        """H-infinity norm (the l2 gain) and the frequency in Hz where it is attained.

        Raises:
            ConfigError: the block is not Schur stable.
        """
        norm, omega = self._hinf
        return norm, omega / (2 * np.pi * self.dt)

    def to_control(self) -> Any:
        """The block as a python-control ``StateSpace`` with ``dt`` set (python-control imported here)."""
        import control

        return control.ss(self.A, self.B, self.C, self.D, self.dt)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly summary; stability-dependent entries (hsv, H-infinity) are None for unstable blocks."""
        stable = self.is_stable
        hinf, f_peak = self.hinf_norm() if stable else (None, None)
        square = self.C.shape[0] == self.B.shape[1]
        return {
            "index": self.index,
            "layer": self.layer,
            "lti": True,
            "dt": self.dt,
            "n_states": self.n_states,
            "n_inputs": self.B.shape[1],
            "n_outputs": self.C.shape[0],
            "stable": stable,
            "spectral_radius": self.spectral_radius,
            "poles": complex_pairs(self.poles),
            "zeros": complex_pairs(self.zeros) if square else None,
            "dc_gain": finite_or_none(self.dc_gain),
            "hsv": self.hankel_singular_values().tolist() if stable else None,
            "hinf_norm": hinf,
            "hinf_peak_hz": f_peak,
            "continuous_poles_rad_s": (
                None if self.continuous_poles_rad_s is None else complex_pairs(self.continuous_poles_rad_s)
            ),
            "discretization": self.discretization,
            "aliased": self.aliased,
        }


def complex_pairs(values: np.ndarray) -> list[list[float]]:
    """(k,) complex -> [[re, im], ...] (JSON has no complex numbers)."""
    return [[float(v.real), float(v.imag)] for v in np.asarray(values, dtype=np.complex128).ravel()]


def finite_or_none(values: np.ndarray) -> Any:
    """An array as nested lists with non-finite entries replaced by None (strict JSON has no inf/NaN)."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 0:
        return float(arr) if np.isfinite(arr) else None
    return [finite_or_none(row) for row in arr]


def frequency_grid(dt: float, n_points: int = 400, decades: float = 4.0) -> np.ndarray:
    """Log-spaced frequencies in Hz from ``decades`` below the Nyquist frequency up to it.

    Args:
        dt: sampling time in seconds.
        n_points: number of frequencies.
        decades: span of the grid.

    Returns:
        (n_points,) increasing frequencies in Hz, the last one the Nyquist frequency ``1 / (2 dt)``.
    """
    nyquist = 0.5 / dt
    return np.logspace(np.log10(nyquist) - decades, np.log10(nyquist), n_points)


def is_lti_layer(layer: object) -> bool:
    """True for a linear time-invariant layer (one that can produce a discrete system)."""
    return isinstance(layer, LTILayer) and callable(getattr(layer, "discretize", None))


def block_system(model: DeepWiener, index: int) -> BlockSystem | NonLTIBlock:
    """The linear part of block ``index`` of ``model`` (see :func:`blocks`)."""
    layer = model.blocks[index].lti
    name = model.config.layer
    if not is_lti_layer(layer):
        return NonLTIBlock(index, name, f"block {index}: {name} ({type(layer).__name__}) is not LTI")
    A, B, C, D, dt = layer.state_space(model.dt)
    method = getattr(layer.options, "discretization", None) if layer.continuous else None
    system = BlockSystem(index, name, A, B, C, D, dt, _continuous_poles(layer, dt), method)
    if system.aliased:
        logger.warning(
            "block %d (%s): a continuous-time pole lies above the Nyquist frequency %.6g Hz (|Im(lam_c)| "
            "Delta > pi); the zero-order-hold discretisation aliases it to a lower frequency",
            index,
            name,
            0.5 / dt,
        )
    return system


def blocks(model: DeepWiener | LFRModel) -> list[BlockSystem | NonLTIBlock]:
    """The linear part of every block of a model, in order.

    Args:
        model: a ``DeepWiener`` model, or an ``LFRModel`` (one block: :func:`loop_system`).

    Returns:
        One ``BlockSystem`` per LTI block (its real ``(A, B, C, D)`` with the model's ``dt``) and one
        ``NonLTIBlock`` per block whose layer is not LTI. An aliased continuous pole is logged as a warning
        and flagged in ``BlockSystem.aliased``.
    """
    if isinstance(model, LFRModel):
        return [loop_system(model)]
    return [block_system(model, i) for i in range(len(model.blocks))]


def loop_system(model: LFRModel) -> BlockSystem:
    """The linear part of an LFR model with its loop open (w held at zero): ``x[k+1] = A x[k] + B u_n[k]``,
    ``y_n[k] = C x[k] + D u_n[k]`` in normalised units, with the A the model simulates (scaled when stable)."""
    A = model.loop_matrices()[0]
    A, B, C, D = (m.detach().double().cpu().numpy() for m in (A, model.B, model.C, model.D))
    return BlockSystem(0, "lfr, loop open", A, B, C, D, model.dt)


def _continuous_poles(layer: LTILayer, dt: float) -> np.ndarray | None:
    """lam_c * Delta / dt in rad/s for a continuous-time layer, else None."""
    if not layer.continuous:
        return None
    poles = layer.continuous_poles()
    if poles is None:
        return None
    return poles.detach().to("cpu").numpy().astype(np.complex128) / dt
