"""Incremental input-to-state stability (delta-ISS) certificate of a deep Wiener model, with its numbers.

The argument (paper notes section 4.3): a block ``w = sigma(G(N(v))) + F v`` has a linear state equation, so
its state is delta-ISS iff the discrete A of its LTI layer is Schur (spectral radius rho < 1); the block's
output is then a Lipschitz function of its state and input when sigma and the normalisation N are Lipschitz;
and a cascade of delta-ISS systems through Lipschitz static maps (encoder, decoder, skips) is delta-ISS.

The numbers reported per block: rho, the margin 1 - rho, the spectral norms of the real realisation's B, C and
D, the H-infinity norm of the LTI part (its l2 gain, exact for a linear map), the Lipschitz constants of sigma
(L_sigma) and of N (L_N), ||F||, and the bound on the block's incremental l2 gain

    gamma_block = L_sigma * ||G||_inf * L_N + ||F||

(from ||sigma(a) - sigma(b)||_l2 <= L_sigma ||a - b||_l2 for a memoryless map). The model's incremental l2
gain from u to y in physical units is then at most max|y_std| ||W_dec|| prod(gamma_block) ||W_enc|| / min|u_std|.

A model with an output integrator (``ModelConfig.integrator``) sums its decoder's output: the certificate then
covers the map from u to the increments of y, and y itself is not delta-ISS (a pure integrator, a pole at
z = 1, keeps every difference of its input's past): ``holds`` is False and the summary says so.

Status, worst first: "failed" (a block not Schur: no certificate), "unknown" (a block that is not LTI, or a
normalisation without a known constant: the argument does not apply), "local" (a nonlinearity only locally
Lipschitz, such as poly with a nonzero quadratic/cubic term or glu: delta-ISS holds on bounded sets; with data
the local constant over the observed range of eta is used), "global". LayerNorm is not globally Lipschitz in
its exact form (its slope grows as the variance of its input goes to 0); with its ``eps`` it is, with the
loose constant max|gamma| / sqrt(eps), which is what is used. Bounds hold in eval mode (dropout off).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from deepwiener.analysis.lti import BlockSystem, NonLTIBlock, blocks
from deepwiener.analysis.nonlinear import SignalRange, signal_ranges
from deepwiener.data import IOData
from deepwiener.models import DeepWiener, LFRModel
from deepwiener.models.lfr import CONTRACTION

Status = Literal["global", "local", "unknown", "failed"]
_SEVERITY: dict[str, int] = {"global": 0, "local": 1, "unknown": 2, "failed": 3}


@dataclass(frozen=True)
class BlockCertificate:
    """The delta-ISS numbers of one block.

    Attributes:
        index: block index.
        layer: layer name.
        lti: whether the layer is LTI (the argument needs it).
        spectral_radius: rho = max |pole| of the LTI part (None if not LTI).
        margin: 1 - rho (None if not LTI).
        schur: rho < 1.
        norm_B, norm_C, norm_D: spectral norms of the real realisation's matrices (None if not LTI).
        hinf_norm: H-infinity norm (l2 gain) of the LTI part (None if not LTI or not Schur).
        nonlinearity: the nonlinearity's class name.
        lipschitz: Lipschitz constant of sigma used in the bound: global, or local on the observed range
            (None when only locally Lipschitz and no data / no local bound).
        lipschitz_kind: "global" or "local".
        norm_lipschitz: Lipschitz constant of the normalisation before the LTI layer (None if unknown).
        skip_norm: ||F|| of the skip path (0 without skip, 1 for identity).
        gain_bound: bound on the block's incremental l2 gain (None when some factor is missing).
        notes: human-readable caveats.
    """

    index: int
    layer: str
    lti: bool
    spectral_radius: float | None
    margin: float | None
    schur: bool
    norm_B: float | None
    norm_C: float | None
    norm_D: float | None
    hinf_norm: float | None
    nonlinearity: str
    lipschitz: float | None
    lipschitz_kind: str
    norm_lipschitz: float | None
    skip_norm: float
    gain_bound: float | None
    notes: tuple[str, ...] = field(default=())

    @property
    def status(self) -> Status:
        """"failed" (not Schur), "unknown" (not LTI / unknown norm), "local" or "global"."""
        if self.lti and not self.schur:
            return "failed"
        if not self.lti or self.norm_lipschitz is None:
            return "unknown"
        return "global" if self.lipschitz_kind == "global" else "local"

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (with ``status``)."""
        return {**asdict(self), "notes": list(self.notes), "status": self.status}

    def summary(self) -> list[str]:
        """Human-readable lines."""
        head = f"block {self.index} ({self.layer}): "
        if not self.lti:
            return [head + "not LTI: not covered by the certificate"]
        stable = "Schur" if self.schur else "NOT Schur"
        lines = [
            head + f"rho = {self.spectral_radius:.6f} (margin {self.margin:.3e}, {stable}), "
            f"||B|| = {self.norm_B:.4g}, ||C|| = {self.norm_C:.4g}, ||D|| = {self.norm_D:.4g}, "
            f"||G||inf = {_fmt(self.hinf_norm)}",
            f"  {self.nonlinearity}: L_sigma = {_fmt(self.lipschitz)} ({self.lipschitz_kind}), "
            f"L_norm = {_fmt(self.norm_lipschitz)}, ||F|| = {self.skip_norm:.4g} "
            f"-> incremental l2 gain <= {_fmt(self.gain_bound)}",
        ]
        return lines + [f"  note: {note}" for note in self.notes]


@dataclass(frozen=True)
class Certificate:
    """The delta-ISS certificate of a whole model.

    Attributes:
        blocks: one ``BlockCertificate`` per block.
        encoder_norm: ||W_enc||.
        decoder_norm: ||W_dec||.
        input_scale: max 1 / |u_std| (physical input -> normalised).
        output_scale: max |y_std| (normalised output -> physical).
        data: name of the record whose ranges gave the local constants (None without data).
        integrator: the model sums its output (the numbers then describe u -> increments of y).
    """

    blocks: tuple[BlockCertificate, ...]
    encoder_norm: float
    decoder_norm: float
    input_scale: float
    output_scale: float
    data: str | None = None
    integrator: bool = False

    @property
    def status(self) -> Status:
        """The worst block status ("global" only when every block is certified globally)."""
        return max((b.status for b in self.blocks), key=_SEVERITY.__getitem__, default="global")

    @property
    def holds(self) -> bool:
        """True when delta-ISS of u -> y is certified, globally or on bounded sets ("global" or "local"); never
        with an output integrator."""
        return self.status in ("global", "local") and not self.integrator

    @cached_property
    def gain_bound(self) -> float | None:
        """Bound on the model's incremental l2 gain u -> y (u -> increments of y with an output integrator) in
        physical units (None if a factor is missing)."""
        gains = [b.gain_bound for b in self.blocks]
        if any(g is None for g in gains):
            return None
        return self.output_scale * self.decoder_norm * math.prod(gains) * self.encoder_norm * self.input_scale

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {
            "status": self.status,
            "holds": self.holds,
            "gain_bound": self.gain_bound,
            "encoder_norm": self.encoder_norm,
            "decoder_norm": self.decoder_norm,
            "input_scale": self.input_scale,
            "output_scale": self.output_scale,
            "data": self.data,
            "integrator": self.integrator,
            "blocks": [b.to_dict() for b in self.blocks],
        }

    def summary(self) -> list[str]:
        """Human-readable lines: the verdict, then each block's numbers."""
        verdict = {
            "global": "delta-ISS certified: every block Schur stable, every static map globally Lipschitz",
            "local": "delta-ISS on bounded sets only: some nonlinearity is only locally Lipschitz",
            "unknown": "not certified: some block is not LTI or has a normalisation without a known constant",
            "failed": "NOT certified: some block is not Schur stable",
        }[self.status]
        lines = [f"stability certificate [{self.status}]: {verdict}"]
        target = "y"
        if self.integrator:
            target = "increments of y"
            lines.append("NOT delta-ISS from u to y: the model sums its output (a pure integrator, pole at z = 1); "
                         "the certificate covers u -> increments of y")
        if self.gain_bound is not None:
            scope = f" (on the range seen on {self.data!r})" if self.status == "local" else ""
            lines.append(f"incremental l2 gain u -> {target} <= {self.gain_bound:.4g} in physical units{scope}")
        lines.append(
            f"encoder ||W|| = {self.encoder_norm:.4g}, decoder ||W|| = {self.decoder_norm:.4g}, "
            f"input scale {self.input_scale:.4g}, output scale {self.output_scale:.4g}"
        )
        for block in self.blocks:
            lines.extend(block.summary())
        return lines


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _spectral_norm(matrix: np.ndarray | torch.Tensor) -> float:
    arr = matrix.detach().double().cpu().numpy() if isinstance(matrix, torch.Tensor) else matrix
    return float(np.linalg.norm(arr, ord=2)) if arr.size else 0.0


def _sigma_lipschitz(sigma: nn.Module, observed: SignalRange | None) -> tuple[float | None, str, tuple[str, ...]]:
    """(constant, "global" | "local", notes) of a nonlinearity, local on the observed range when needed."""
    name = f"sigma ({type(sigma).__name__})"
    constant = float(sigma.lipschitz())
    if math.isfinite(constant):
        return constant, "global", ()
    local = getattr(sigma, "local_lipschitz", None)
    if observed is None:
        return None, "local", (f"{name} is only locally Lipschitz; give data to bound it on the observed range",)
    if local is None:
        return None, "local", (f"{name} is only locally Lipschitz and provides no local bound",)
    bias = sigma.bias.detach().double().cpu().numpy()
    bound = float(np.max(np.maximum(np.abs(observed.low + bias), np.abs(observed.high + bias))))
    with torch.no_grad():
        value = float(local(bound))
    note = f"{name} is only locally Lipschitz: L_sigma = {value:.4g} holds for |eta + b| <= {bound:.4g} (observed)"
    return value, "local", (note,)


def _norm_lipschitz(norm: nn.Module) -> tuple[float | None, tuple[str, ...]]:
    """Lipschitz constant of the normalisation before the LTI layer, with notes."""
    if isinstance(norm, nn.Identity):
        return 1.0, ()
    if isinstance(norm, nn.LayerNorm):
        gamma = float(norm.weight.detach().abs().max()) if norm.weight is not None else 1.0
        value = gamma / math.sqrt(norm.eps)
        note = (
            f"LayerNorm is not globally Lipschitz as eps -> 0; with eps = {norm.eps:g} its constant "
            f"max|gamma|/sqrt(eps) = {value:.4g} is valid but loose"
        )
        return value, (note,)
    return None, (f"no Lipschitz constant known for normalisation {type(norm).__name__}",)


def _skip_norm(block: nn.Module) -> float:
    """||F|| of the block's skip path."""
    if not block.use_skip:
        return 0.0
    return 1.0 if block.skip is None else _spectral_norm(block.skip.weight)


def certify_block(
    system: BlockSystem | NonLTIBlock,
    block: nn.Module,
    observed: SignalRange | None = None,
    nonlinearity: str | None = None,
) -> BlockCertificate:
    """The delta-ISS numbers of one block.

    Args:
        system: the block's linear part (``analysis.blocks(model)[i]``, or a hand-built ``BlockSystem``).
        block: the model's ``Block`` module (provides ``sigma``, ``norm`` and the skip path).
        observed: range of the block's ``eta`` on data, used for a local Lipschitz constant.
        nonlinearity: name to report (default: the class name of ``block.sigma``).

    Returns:
        The block's certificate.
    """
    lipschitz, kind, notes = _sigma_lipschitz(block.sigma, observed)
    norm_l, norm_notes = _norm_lipschitz(block.norm)
    skip = _skip_norm(block)
    common = {
        "index": system.index,
        "layer": system.layer,
        "nonlinearity": nonlinearity or type(block.sigma).__name__,
        "lipschitz": lipschitz,
        "lipschitz_kind": kind,
        "norm_lipschitz": norm_l,
        "skip_norm": skip,
    }
    if isinstance(system, NonLTIBlock):
        nones = dict.fromkeys(("spectral_radius", "margin", "norm_B", "norm_C", "norm_D", "hinf_norm", "gain_bound"))
        return BlockCertificate(**common, **nones, lti=False, schur=False, notes=(system.reason, *notes))
    rho = system.spectral_radius
    hinf = system.hinf_norm()[0] if system.is_stable else None
    factors = (lipschitz, hinf, norm_l)
    gain = None if any(f is None for f in factors) else lipschitz * hinf * norm_l + skip
    return BlockCertificate(
        **common,
        lti=True,
        spectral_radius=rho,
        margin=1.0 - rho,
        schur=system.is_stable,
        norm_B=_spectral_norm(system.B),
        norm_C=_spectral_norm(system.C),
        norm_D=_spectral_norm(system.D),
        hinf_norm=hinf,
        gain_bound=gain,
        notes=(*notes, *norm_notes),
    )


@dataclass(frozen=True)
class LoopCertificate:
    """The contraction certificate of an LFR model (``models.lfr``), by two sufficient conditions: the small-gain
    bound, the state map ``x -> A x + E phi(F x + G u) + ...`` being Lipschitz in x with a constant at most
    ``bound = ||A|| + L_phi ||E|| ||F||`` (``bound < 1``: a contraction), and the IQC condition
    ``||[A Et] L^-T|| <= 1`` (``models.lfr.iqc_norm``: a contraction at rate ``models.lfr.CONTRACTION``). Either
    makes the model delta-ISS.

    Attributes:
        norm_A, norm_E, norm_F: spectral norms of the simulated A and E (scaled when stable) and of F.
        lipschitz: L_phi, the map's global Lipschitz bound (inf if it has none).
        iqc_norm: ``||[A Et] L^-T||`` with the model's multiplier (its shape 1 for a model without one; its scale
            searched), or None for a map without a slope sector (poly, glu).
        stable: the model is stable by construction.
        certificate: the condition a stable model is built on ("small_gain" or "iqc").
    """

    norm_A: float
    norm_E: float
    norm_F: float
    lipschitz: float
    iqc_norm: float | None
    stable: bool
    certificate: str

    @property
    def bound(self) -> float:
        """``norm_A + lipschitz * norm_E * norm_F``: a Lipschitz constant of the state map in x."""
        return self.norm_A + self.lipschitz * self.norm_E * self.norm_F

    @property
    def status(self) -> Status:
        """"global" when either condition holds, else "unknown" (sufficient conditions that do not hold)."""
        iqc = self.iqc_norm is not None and self.iqc_norm <= 1 + IQC_TOLERANCE
        return "global" if self.bound < 1 or iqc else "unknown"

    @property
    def holds(self) -> bool:
        """True when the loop is certified contracting (delta-ISS)."""
        return self.status == "global"

    @property
    def blocks(self) -> tuple[LoopCertificate, ...]:
        """The one block of an LFR model (its status is the model's)."""
        return (self,)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (with ``bound``, ``status`` and ``holds``)."""
        return {**asdict(self), "bound": self.bound, "status": self.status, "holds": self.holds}

    def summary(self) -> list[str]:
        """Human-readable lines: the verdict and the numbers of both conditions."""
        if self.holds:
            how = f"by construction, {self.certificate.replace('_', ' ')}" if self.stable else \
                "for these parameter values"
            rate = self.bound if self.bound < 1 else CONTRACTION
            verdict = f"delta-ISS certified ({how}): the loop's state map contracts at rate <= {rate:.6g}"
        else:
            verdict = ("not certified: neither ||A|| + L_phi ||E|| ||F|| < 1 nor the IQC condition holds (sufficient "
                       "conditions; the model may still be stable; train it with stable = true for a certificate)")
        iqc = ("no slope sector (poly, glu)" if self.iqc_norm is None else
               f"||[A Et] L^-T|| = {self.iqc_norm:.6g} at rate {CONTRACTION} (<= 1 certifies)")
        return [f"stability certificate [{self.status}]: {verdict}",
                f"small gain: ||A|| = {self.norm_A:.6g}, ||E|| = {self.norm_E:.4g}, ||F|| = {self.norm_F:.4g}, "
                f"L_phi = {_fmt(self.lipschitz)}: ||A|| + L_phi ||E|| ||F|| = {self.bound:.6g}",
                f"IQC: {iqc}"]


IQC_TOLERANCE = 1e-6
"""Rounding allowed above 1 in the IQC norm of a model scaled onto the condition (float32 parameters)."""


def loop_certificate(model: LFRModel) -> LoopCertificate:
    """The contraction certificate of an LFR model (:class:`LoopCertificate`)."""
    with torch.no_grad():
        A, E = model.loop_matrices()
        iqc = float(model.iqc_norm(A, E)) if model.phi.slope_sector() is not None else None
    return LoopCertificate(norm_A=_spectral_norm(A), norm_E=_spectral_norm(E), norm_F=_spectral_norm(model.F),
                           lipschitz=model.phi.lipschitz(), iqc_norm=iqc, stable=model.config.stable,
                           certificate=model.config.certificate)


def certificate(model: DeepWiener | LFRModel, data: IOData | None = None) -> Certificate | LoopCertificate:
    """The delta-ISS certificate of a model, with per-block numbers and an incremental gain bound.

    Args:
        model: a ``DeepWiener`` model (or an ``LFRModel``: :func:`loop_certificate`; ``data`` is not used).
        data: optional record (model's ``dt``); the observed range of each block's ``eta`` gives local
            Lipschitz constants for nonlinearities that are only locally Lipschitz.

    Returns:
        The ``Certificate`` (``status``, ``gain_bound``, ``to_dict()``, ``summary()``).

    Raises:
        DataError: ``data`` has another ``dt`` or input width.
    """
    if isinstance(model, LFRModel):
        return loop_certificate(model)
    observed: list[SignalRange | None] = (
        list(signal_ranges(model, data)) if data is not None else [None] * len(model.blocks)
    )
    certs = tuple(
        certify_block(system, block, obs, model.config.nonlinearity)
        for system, block, obs in zip(blocks(model), model.blocks, observed, strict=True)
    )
    return Certificate(
        blocks=certs,
        encoder_norm=_spectral_norm(model.encoder.weight),
        decoder_norm=_spectral_norm(model.decoder.weight),
        input_scale=float((1.0 / model.u_std.double().abs()).max()),
        output_scale=float(model.y_std.double().abs().max()),
        data=None if data is None else data.name,
        integrator=model.integrates_output,
    )
