"""Model-order reduction of every block's LTI layer, keeping the layer's structure.

``reduce(model, order=... | tol=..., method="balanced" | "modal")`` returns a new model (a deep copy; the
original is untouched) whose layers are rebuilt with ``type(layer).from_system(...)``, so the reduced model is
the same kind of model and runs on every engine.

* **balanced**: square-root balanced truncation (``gramians.balanced_truncation``) of the layer's exact real
  realisation (``state_space()``, which is in "current" form ``eta = C x + D v`` whatever the layer's readout).
  The reduced real A is diagonalised; each conjugate pair keeps its member with Im > 0 with a factor 2 folded
  into C, a real eigenvalue keeps factor 1 (``systems.diagonal_from_real``); for readout "next" the output is
  mapped back by ``C_next = C / lam``, ``D_next = D - Re(C_next B)``. Error bound per block:
  ``||G - G_r||_inf <= 2 * sum of the discarded Hankel singular values``.
* **modal**: drop the modes with the smallest contribution ``w_i = ||c_i|| ||b_i|| / (1 - |lam_i|)`` straight on
  the ``DiagonalSSM`` (``w_i`` bounds the H-infinity norm of mode i, so the sum of the dropped ones bounds the
  error).

**One order for every block.** ``ModelConfig.d_state`` is a single number and model files rebuild the model
from the config, so every block is reduced to the same number of complex modes: ``order`` itself, or with
``tol`` the largest number any block needs for its error bound to be <= tol (the other blocks keep more modes
than they need, which only makes them more accurate). A real eigenvalue of a balanced truncation fills a
whole complex mode, so a block may realise its order with fewer modes than the common number; the rest is
padded with inert modes (pole 0.5, B = C = 0: uncontrollable and unobservable, so the input-output map is
unchanged; they show up in ``poles`` with zero Hankel singular values).

Layers: lru and s5 (the layers with ``from_system``). s4d and s4 are banks of SISO systems whose layers
cannot be rebuilt from a system; reducing them raises ConfigError.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
import torch

from deepwiener.analysis import gramians
from deepwiener.analysis.lti import is_lti_layer
from deepwiener.data import IOData
from deepwiener.data.iodata import check_dt
from deepwiener.errors import ConfigError, is_integer_in, unknown_name
from deepwiener.layers import LTILayer
from deepwiener.metrics import rmse
from deepwiener.models import DeepWiener
from deepwiener.systems import DiagonalSSM, diagonal_from_real

logger = logging.getLogger(__name__)

Method = Literal["balanced", "modal"]
METHODS: tuple[str, ...] = ("balanced", "modal")
INERT_POLE = 0.5


@dataclass(frozen=True, eq=False)
class ReductionResult:
    """A reduced model and what changed.

    Attributes:
        model: the reduced model (a new object).
        method: "balanced" or "modal".
        states_before: complex modes per block before (the unit of ``d_state``; real order is twice that).
        states_after: complex modes per block after (all equal: the new ``config.d_state``).
        error_bounds: per block, an a-priori bound on the H-infinity norm of the LTI layer's error.
        rmse_before: simulation RMSE of the original model on the data, physical units (None without data;
            a list for several outputs).
        rmse_after: the same for the reduced model.
    """

    model: DeepWiener
    method: str
    states_before: tuple[int, ...]
    states_after: tuple[int, ...]
    error_bounds: tuple[float, ...]
    rmse_before: float | list[float] | None = None
    rmse_after: float | list[float] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (without the model)."""
        return {
            "method": self.method,
            "states_before": list(self.states_before),
            "states_after": list(self.states_after),
            "error_bounds": list(self.error_bounds),
            "rmse_before": self.rmse_before,
            "rmse_after": self.rmse_after,
        }


def pad_modes(system: DiagonalSSM, modes: int) -> DiagonalSSM:
    """Append inert modes (pole ``INERT_POLE``, B = C = 0) up to ``modes`` complex modes."""
    extra = modes - system.lam.shape[0]
    if extra <= 0:
        return system
    lam = torch.cat([system.lam, torch.full((extra,), INERT_POLE, dtype=system.lam.dtype)])
    B = torch.cat([system.B, torch.zeros(extra, system.d_in, dtype=system.B.dtype)])
    C = torch.cat([system.C, torch.zeros(system.d_out, extra, dtype=system.C.dtype)], dim=1)
    return DiagonalSSM(lam, B, C, system.D, system.readout)


class _Plan(Protocol):
    """How one block is reduced: how many modes a tolerance needs, and the system for a number of modes."""

    def modes_for(self, tol: float) -> int: ...

    def system(self, modes: int) -> tuple[DiagonalSSM, float]: ...


class _Balanced:
    """Balanced truncation of one layer; the balanced realisation is computed once and sliced."""

    def __init__(self, layer: LTILayer) -> None:
        A, B, C, D, _ = layer.state_space()
        self.readout = layer.options.readout
        hsv = gramians.hankel_singular_values(A, B, C)
        minimal = int(np.sum(hsv > hsv.size * np.finfo(float).eps * hsv[0]))  # gramians' criterion
        self.Ab, self.Bb, self.Cb, self.Db, self.hsv = gramians.balanced_truncation(A, B, C, D, order=minimal)

    def _order(self, modes: int) -> int:
        """Largest real order r <= 2 modes whose truncation needs at most ``modes`` complex modes."""
        for r in range(min(2 * modes, self.Ab.shape[0]), 0, -1):
            if np.sum(np.linalg.eigvals(self.Ab[:r, :r]).imag >= 0) <= modes:
                return r
        return 0

    def _bound(self, r: int) -> float:
        return float(2.0 * np.sum(self.hsv[r:]))

    def modes_for(self, tol: float) -> int:
        needed = next(r for r in range(1, self.hsv.size + 1) if self._bound(r) <= tol)
        modes = (needed + 1) // 2
        while self._order(modes) < min(needed, self.Ab.shape[0]):
            modes += 1
        return modes

    def system(self, modes: int) -> tuple[DiagonalSSM, float]:
        r = self._order(modes)
        reduced = diagonal_from_real(self.Ab[:r, :r], self.Bb[:r], self.Cb[:, :r], self.Db, self.readout)
        return pad_modes(reduced, modes), self._bound(r)


class _Modal:
    """Modal truncation of one diagonal layer: keep the modes with the largest contribution."""

    def __init__(self, layer: LTILayer) -> None:
        with torch.no_grad():
            system = layer.discretize()
        if not isinstance(system, DiagonalSSM):
            raise ConfigError(f"modal truncation needs a diagonal system; {type(layer).__name__} is not diagonal")
        self.lam = system.lam.detach().to(torch.complex128).cpu()
        self.B = system.B.detach().to(torch.complex128).cpu()
        self.C = system.C.detach().to(torch.complex128).cpu()
        self.D = system.D.detach().to(torch.float64).cpu()
        self.readout = system.readout
        weight = DiagonalSSM(self.lam, self.B, self.C, self.D, self.readout).mode_weights()  # (n,)
        self.rank = torch.argsort(weight, descending=True, stable=True)
        self.tails = torch.flip(torch.cumsum(torch.flip(weight[self.rank], [0]), 0), [0])  # tails[m] = sum w[m:]

    def _bound(self, modes: int) -> float:
        return float(self.tails[modes]) if modes < self.tails.numel() else 0.0

    def modes_for(self, tol: float) -> int:
        return next(m for m in range(1, self.lam.numel() + 1) if self._bound(m) <= tol)

    def system(self, modes: int) -> tuple[DiagonalSSM, float]:
        keep = torch.sort(self.rank[:modes]).values
        reduced = DiagonalSSM(self.lam[keep], self.B[keep], self.C[:, keep], self.D, self.readout)
        return reduced, self._bound(modes)


_PLANS: dict[str, type[_Balanced] | type[_Modal]] = {"balanced": _Balanced, "modal": _Modal}


def _rebuild(layer: LTILayer, system: DiagonalSSM) -> LTILayer:
    """A layer of the same class and options reproducing ``system``, on the layer's device and dtype."""
    reference = next(layer.parameters())
    new = type(layer).from_system(system, layer.options)
    return new.to(device=reference.device, dtype=reference.dtype)


def _check_model(model: DeepWiener) -> None:
    """Every block must be LTI and rebuildable from a diagonal system."""
    for index, block in enumerate(model.blocks):
        layer, name = block.lti, model.config.layer
        if not is_lti_layer(layer):
            raise ConfigError(f"block {index}: layer {name!r} is not LTI; model-order reduction needs LTI layers")
        if type(layer).from_system.__func__ is LTILayer.from_system.__func__:
            raise ConfigError(
                f"model-order reduction supports the layers that can be rebuilt from a diagonal system (lru, s5); "
                f"layer {name!r} ({type(layer).__name__}) cannot"
            )


def _check_order(order: int | None, tol: float | None, d_state: int) -> None:
    if (order is None) == (tol is None):
        raise ConfigError(f"give exactly one of order and tol; found order={order!r}, tol={tol!r}")
    if order is not None and not is_integer_in(order, 1, d_state):
        raise ConfigError(f"order must be an integer in [1, d_state={d_state}] (complex modes); found {order!r}")
    if tol is not None and not (isinstance(tol, int | float) and tol > 0):
        raise ConfigError(f"tol must be a positive number (H-infinity error bound per block); found {tol!r}")


def _simulation_rmse(model: DeepWiener, data: IOData, init_window: int) -> float | list[float]:
    """RMSE of the free-run simulation on ``data`` after ``init_window`` samples, in physical units."""
    error = rmse(data.y[init_window:], model.simulate(data.u)[init_window:])
    return error.tolist() if isinstance(error, np.ndarray) else float(error)


def reduce(
    model: DeepWiener,
    *,
    order: int | None = None,
    tol: float | None = None,
    method: Method = "balanced",
    data: IOData | None = None,
    init_window: int = 0,
) -> ReductionResult:
    """Model-order reduction of every block, returning a new model of the same structure.

    Args:
        model: a ``DeepWiener`` model with lru or s5 layers (left untouched).
        order: complex modes to keep in every block (the unit of ``d_state``), 1 <= order <= d_state.
        tol: instead of ``order``: bound on each block's H-infinity error; every block gets the number of
            modes the most demanding block needs.
        method: "balanced" (balanced truncation) or "modal" (modal truncation).
        data: optional record (the model's ``dt``) on which to report the simulation RMSE before and after.
        init_window: samples at the start of ``data`` left out of the RMSE.

    Returns:
        A ``ReductionResult`` with the reduced model (``config.d_state`` updated), the modes before and after,
        per-block error bounds and the RMSE before and after.

    Raises:
        ConfigError: bad ``order``/``tol``/``method``, a layer that cannot be reduced (s4d, s4, non-LTI), or a
            reduced pole at the origin with readout "next".
        DataError: ``data`` with another ``dt`` or input width.
    """
    if method not in _PLANS:
        raise unknown_name("reduction method", method, METHODS)
    _check_order(order, tol, model.config.d_state)
    _check_model(model)
    if data is not None:
        check_dt(data.dt, model.dt, f"record {data.name!r}")
    plans: list[_Plan] = [_PLANS[method](block.lti) for block in model.blocks]
    modes = order if order is not None else max(plan.modes_for(tol) for plan in plans)
    reduced = copy.deepcopy(model)
    bounds = []
    for index, (block, plan) in enumerate(zip(reduced.blocks, plans, strict=True)):
        system, bound = plan.system(modes)
        block.lti = _rebuild(block.lti, system)
        bounds.append(bound)
        logger.info("block %d: %d -> %d modes (%s), H-inf error <= %.3g", index, model.config.d_state, modes,
                    method, bound)
    reduced.config = dataclasses.replace(model.config, d_state=modes)
    before = _simulation_rmse(model, data, init_window) if data is not None else None
    after = _simulation_rmse(reduced, data, init_window) if data is not None else None
    return ReductionResult(
        model=reduced,
        method=method,
        states_before=tuple(block.lti.d_state for block in model.blocks),
        states_after=tuple(block.lti.d_state for block in reduced.blocks),
        error_bounds=tuple(bounds),
        rmse_before=before,
        rmse_after=after,
    )
