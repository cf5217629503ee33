"""Figures of the analysis results: pole-zero map, Bode diagram, Hankel singular values, nonlinearities.

Each function takes the value objects of ``deepwiener.analysis`` and returns a ``matplotlib.figure.Figure``
(never pyplot, so no global figure state and no GUI backend); save it with ``fig.savefig(path)``. Only the
command line imports this module, so ``import deepwiener`` never loads matplotlib.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from deepwiener.analysis.lti import BlockSystem, NonLTIBlock, frequency_grid
from deepwiener.analysis.nonlinear import NonlinearityCurve

_MAX_PAIRS = 4  # blocks with more input-output pairs are drawn as their largest singular value
_MAX_VIEW = 3.0  # pole-zero maps show at most this radius; zeros farther out are counted in the legend


def _lti(blocks: Sequence[BlockSystem | NonLTIBlock]) -> list[BlockSystem]:
    return [b for b in blocks if isinstance(b, BlockSystem)]


def _grid(n: int, width: float = 4.0, height: float = 3.2) -> tuple[Figure, list[Axes]]:
    """A figure with n axes in a grid of at most 4 columns."""
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, list(axes[:n])


def pole_zero_figure(block: BlockSystem) -> Figure:
    """Poles (x) and transmission zeros (o) of one block in the z-plane, with the unit circle.

    Args:
        block: one LTI block (``analysis.blocks(model)[i]``).

    Returns:
        The figure (equal axes; zeros beyond radius 3 are counted in the legend, not drawn).
    """
    fig = Figure(figsize=(5.2, 5.2), layout="constrained")
    ax = fig.subplots()
    t = np.linspace(0, 2 * np.pi, 400)
    ax.plot(np.cos(t), np.sin(t), color="0.6", lw=1, label="unit circle")
    poles = block.poles
    square = block.C.shape[0] == block.B.shape[1]
    zeros = block.zeros if square else np.zeros(0, dtype=complex)
    shown = zeros[np.abs(zeros) <= _MAX_VIEW]
    ax.plot(poles.real, poles.imag, "x", color="C3", ms=8, mew=1.6, label=f"poles ({poles.size})")
    hidden = zeros.size - shown.size
    zero_label = f"zeros ({zeros.size}" + (f", {hidden} beyond |z| = {_MAX_VIEW:g})" if hidden else ")")
    ax.plot(shown.real, shown.imag, "o", mfc="none", color="C0", ms=7, label=zero_label)
    extent = max(1.1, min(_MAX_VIEW, 1.1 * float(np.max(np.abs(np.concatenate([poles, shown])), initial=0))))
    ax.set_xlim(-extent, extent)
    ax.set_ylim(-extent, extent)
    ax.set_aspect("equal")
    ax.axhline(0, color="0.85", lw=0.8, zorder=0)
    ax.axvline(0, color="0.85", lw=0.8, zorder=0)
    ax.set_xlabel("Re z")
    ax.set_ylabel("Im z")
    ax.set_title(f"block {block.index} ({block.layer}): poles and zeros, spectral radius {block.spectral_radius:.4f}")
    ax.legend(loc="upper right", fontsize="small")
    return fig


def bode_figure(blocks: Sequence[BlockSystem | NonLTIBlock], n_points: int = 400) -> Figure:
    """Bode diagram of every LTI block, in Hz up to the Nyquist frequency of the blocks' ``dt``.

    A block with at most 4 input-output pairs gets one magnitude and phase line per pair; a larger MIMO
    block gets one line, its largest singular value (the gain in the worst input direction), and no phase.

    Args:
        blocks: ``analysis.blocks(model)`` (non-LTI blocks are skipped).
        n_points: frequencies on the log-spaced grid.

    Returns:
        The figure: magnitude in dB (top) and, if any block is small enough, phase in degrees (bottom).
    """
    systems = _lti(blocks)
    with_phase = any(b.B.shape[1] * b.C.shape[0] <= _MAX_PAIRS for b in systems)
    fig = Figure(figsize=(8, 6.5 if with_phase else 4), layout="constrained")
    axes = fig.subplots(2 if with_phase else 1, 1, sharex=True, squeeze=False)[:, 0]
    for block in systems:
        f = frequency_grid(block.dt, n_points)
        p, m = block.C.shape[0], block.B.shape[1]
        if p * m > _MAX_PAIRS:
            axes[0].semilogx(f, 20 * np.log10(block.sigma_max(f)), label=f"block {block.index}: max singular value")
            continue
        mag, phase = block.bode(f)
        for o in range(p):
            for i in range(m):
                line = axes[0].semilogx(f, 20 * np.log10(mag[:, o, i]), label=f"block {block.index}: u{i} -> y{o}")
                axes[1].semilogx(f, phase[:, o, i], color=line[0].get_color())
    if systems:
        nyquist = 0.5 / systems[0].dt
        axes[-1].set_xlim(frequency_grid(systems[0].dt, 2)[0], nyquist)
        for ax in axes:
            ax.grid(True, which="both", alpha=0.3)
        axes[0].legend(fontsize="small", ncols=2 if len(axes[0].lines) > 8 else 1)
    axes[0].set_ylabel("magnitude (dB)")
    axes[0].set_title("frequency response of each block's LTI layer, up to the Nyquist frequency")
    if with_phase:
        axes[1].set_ylabel("phase (deg)")
    axes[-1].set_xlabel("frequency (Hz)")
    return fig


def hsv_figure(blocks: Sequence[BlockSystem | NonLTIBlock]) -> Figure:
    """Hankel singular values of every stable LTI block on a log scale, one marker line per block.

    Args:
        blocks: ``analysis.blocks(model)`` (non-LTI and unstable blocks are skipped).

    Returns:
        The figure.
    """
    fig = Figure(figsize=(7, 4.2), layout="constrained")
    ax = fig.subplots()
    for block in _lti(blocks):
        if not block.is_stable:
            continue
        hsv = block.hankel_singular_values()
        hsv = np.where(hsv > 0, hsv, np.nan)  # exact zeros cannot be drawn on a log axis
        ax.semilogy(np.arange(1, hsv.size + 1), hsv, marker="o", ms=3.5, lw=1, label=f"block {block.index}")
    ax.set_xlabel("state index (real order)")
    ax.set_ylabel("Hankel singular value")
    ax.set_title("Hankel singular values (truncation error <= 2 x sum of those dropped)")
    ax.grid(True, which="both", alpha=0.3)
    if ax.lines:
        ax.legend(fontsize="small")
    return fig


def nonlinearity_figure(curves: Sequence[NonlinearityCurve]) -> Figure:
    """Input-output curve of each block's nonlinearity over the range seen on data, one line per channel.

    Args:
        curves: ``analysis.nonlinearity_curves(model, data)``.

    Returns:
        The figure, one panel per block.
    """
    fig, axes = _grid(max(len(curves), 1))
    for ax, curve in zip(axes, curves, strict=False):
        for c in range(curve.eta.shape[1]):
            ax.plot(curve.eta[:, c], curve.output[:, c], lw=1.2, label=f"ch {c}")
        ax.set_title(f"block {curve.index}: {curve.name}")
        ax.set_xlabel("eta (input of sigma)")
        ax.set_ylabel("sigma(eta)")
        ax.grid(True, alpha=0.3)
        if curve.eta.shape[1] <= 8:
            ax.legend(fontsize="x-small")
    return fig
