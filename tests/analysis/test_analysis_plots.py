"""The analysis figures render to PNG (Agg, no pyplot) with the expected axes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deepwiener import analysis_plots
from deepwiener.analysis import blocks, nonlinearity_curves
from deepwiener.data import IOData
from deepwiener.models import DeepWiener


@pytest.fixture(scope="module")
def model() -> DeepWiener:
    return DeepWiener(n_u=1, n_y=1, layer="lru", d_model=4, d_state=4, n_layers=2, dt=0.01, seed=0).double()


def save(fig, path: Path) -> None:
    fig.savefig(path, dpi=80)
    assert path.stat().st_size > 5_000


def test_pole_zero_and_hsv_figures(model: DeepWiener, tmp_path: Path) -> None:
    systems = blocks(model)
    fig = analysis_plots.pole_zero_figure(systems[0])
    ax = fig.axes[0]
    assert ax.get_xlabel() == "Re z" and ax.get_aspect() == 1.0 and "poles" in ax.get_title()
    assert ax.get_legend() is not None
    save(fig, tmp_path / "pz.png")
    fig = analysis_plots.hsv_figure(systems)
    assert fig.axes[0].get_yscale() == "log" and len(fig.axes[0].lines) == 2
    save(fig, tmp_path / "hsv.png")


def test_bode_figure_mimo_and_siso(model: DeepWiener, tmp_path: Path) -> None:
    fig = analysis_plots.bode_figure(blocks(model))
    assert len(fig.axes) == 1 and fig.axes[0].get_xscale() == "log"
    assert fig.axes[0].get_xlabel() == "frequency (Hz)" and fig.axes[0].get_ylabel() == "magnitude (dB)"
    assert fig.axes[0].get_xlim()[1] >= 50.0
    save(fig, tmp_path / "bode_mimo.png")
    siso = DeepWiener(n_u=1, n_y=1, layer="s5", d_model=1, d_state=4, n_layers=2, dt=0.01).double()
    fig = analysis_plots.bode_figure(blocks(siso))
    assert [ax.get_ylabel() for ax in fig.axes] == ["magnitude (dB)", "phase (deg)"]
    save(fig, tmp_path / "bode_siso.png")


def test_nonlinearity_figure(model: DeepWiener, tmp_path: Path) -> None:
    u = np.sin(np.linspace(0, 20, 400))[:, None]
    curves = nonlinearity_curves(model, IOData(u, np.zeros_like(u), 0.01))
    fig = analysis_plots.nonlinearity_figure(curves)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 2 and len(visible[0].lines) == 4
    save(fig, tmp_path / "sigma.png")
