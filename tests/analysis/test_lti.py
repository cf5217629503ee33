"""Per-block linear analysis: poles, zeros, gains and frequency response against independent oracles."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import control
import numpy as np
import pytest
import torch
from helpers import LAYER_NAMES
from torch import nn

from deepwiener.analysis import BlockSystem, NonLTIBlock, blocks, frequency_grid, nonlinearity_curves
from deepwiener.analysis.gramians import hankel_singular_values
from deepwiener.data import IOData
from deepwiener.errors import DataError
from deepwiener.models import DeepWiener

DT = 0.01


def small_model(layer: str, **options: object) -> DeepWiener:
    settings = {"d_model": 3, "d_state": 3, "n_layers": 2, "dt": DT, "seed": 1, **options}
    return DeepWiener(n_u=1, n_y=1, layer=layer, **settings).double()


@pytest.mark.parametrize("layer", LAYER_NAMES)
def test_poles_are_the_eigenvalues_of_each_block(layer: str) -> None:
    model = small_model(layer)
    for block, system in zip(model.blocks, blocks(model), strict=True):
        assert isinstance(system, BlockSystem) and system.dt == DT
        np.testing.assert_allclose(np.sort_complex(system.poles), np.sort_complex(np.linalg.eigvals(system.A)))
        modal = block.lti.discretize().modal()[0].lam.detach().numpy()  # half of each conjugate pair
        expected = np.concatenate([modal, modal.conj()])
        np.testing.assert_allclose(np.sort_complex(system.poles), np.sort_complex(expected), atol=1e-10)
        assert system.spectral_radius == pytest.approx(np.abs(expected).max())
        assert system.is_stable


@pytest.mark.parametrize("layer", ["lru", "s4"])
def test_frequency_response_dc_gain_and_zeros_match_python_control(layer: str) -> None:
    system = blocks(small_model(layer))[0]
    sys_ct = system.to_control()
    assert sys_ct.dt == DT
    f = frequency_grid(DT, 50)
    assert f[-1] == pytest.approx(0.5 / DT)
    expected = sys_ct.frequency_response(2 * np.pi * f, squeeze=False).complex  # (p, m, f)
    np.testing.assert_allclose(system.frequency_response(f), np.moveaxis(expected, -1, 0), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(system.dc_gain, control.dcgain(sys_ct), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.sort_complex(system.zeros), np.sort_complex(sys_ct.zeros()), rtol=1e-8)
    rosenbrock = np.block([[system.A, system.B], [system.C, system.D]])
    n = system.n_states
    for z in system.zeros:  # each zero makes the Rosenbrock matrix drop rank
        shifted = rosenbrock - z * np.pad(np.eye(n), ((0, 3), (0, 3)))
        s = np.linalg.svd(shifted, compute_uv=False)
        assert s[-1] < 1e-8 * s[0]


def test_bode_hsv_and_hinf_norm() -> None:
    system = blocks(small_model("lru"))[1]
    f = frequency_grid(DT, 2000)
    mag, phase = system.bode(f)
    G = system.frequency_response(f)
    np.testing.assert_allclose(mag, np.abs(G))
    np.testing.assert_allclose(np.exp(1j * np.radians(phase)), G / np.abs(G), atol=1e-9)
    np.testing.assert_allclose(system.hankel_singular_values(), hankel_singular_values(system.A, system.B, system.C))
    norm, f_peak = system.hinf_norm()
    assert norm >= system.sigma_max(f).max() - 1e-12
    assert norm == pytest.approx(system.sigma_max(np.array([f_peak]))[0], rel=1e-12)


def test_to_dict_is_strict_json() -> None:
    for system in blocks(small_model("s5")):
        data = json.loads(json.dumps(system.to_dict(), allow_nan=False))
        assert data["n_states"] == 6 and len(data["poles"]) == 6 and len(data["poles"][0]) == 2
        assert np.array(data["dc_gain"]).shape == (3, 3)
        assert len(data["hsv"]) == 6 and data["stable"] and data["lti"]
        assert len(data["continuous_poles_rad_s"]) == 3


def test_continuous_poles_in_rad_per_second_and_aliasing_flag(caplog: pytest.LogCaptureFixture) -> None:
    model = small_model("s5", layer_options={"dt_min": 0.1, "dt_max": 0.2})
    layer = model.blocks[0].lti
    system = blocks(model)[0]
    expected = (layer.lam_c() * layer.log_dt.exp()).detach().numpy() / DT
    np.testing.assert_allclose(system.continuous_poles_rad_s, expected)
    lam = np.exp(system.continuous_poles_rad_s * DT)  # ZOH: the discrete poles
    np.testing.assert_allclose(np.sort_complex(np.concatenate([lam, lam.conj()])), np.sort_complex(system.poles))
    assert not system.aliased
    with torch.no_grad():
        layer.im[0] = 2 * np.pi / layer.log_dt[0].exp()  # |Im(lam_c)| Delta = 2 pi > pi
    with caplog.at_level(logging.WARNING, logger="deepwiener.analysis.lti"):
        aliased = blocks(model)[0]
    assert aliased.aliased and aliased.to_dict()["aliased"]
    assert "Nyquist" in caplog.text
    assert blocks(small_model("lru"))[0].continuous_poles_rad_s is None


def test_bilinear_layers_are_never_flagged_as_aliased() -> None:
    model = small_model("s4", layer_options={"dt_min": 1.0, "dt_max": 2.0})
    system = blocks(model)[0]
    assert system.discretization == "bilinear"
    assert np.any(np.abs(system.continuous_poles_rad_s.imag) * DT > np.pi)
    assert not system.aliased


def test_a_non_lti_layer_is_reported_not_analysed() -> None:
    model = small_model("lru")
    model.blocks[1].lti = nn.Linear(3, 3)  # stands in for a selective (input-dependent) layer
    result = blocks(model)
    assert isinstance(result[0], BlockSystem)
    assert isinstance(result[1], NonLTIBlock) and not result[1].is_lti
    assert result[1].to_dict() == {"index": 1, "layer": "lru", "lti": False, "reason": result[1].reason}
    assert "not LTI" in result[1].reason
    selective = blocks(small_model("s6"))  # the real selective layer
    assert all(isinstance(b, NonLTIBlock) and b.layer == "s6" for b in selective)


def test_nonlinearity_curves_follow_sigma_over_the_observed_range() -> None:
    model = small_model("lru", nonlinearity="tanh")
    bias = np.array([0.1, -0.2, 0.3])
    with torch.no_grad():
        model.blocks[0].sigma.bias.copy_(torch.from_numpy(bias))
    u = np.random.default_rng(0).standard_normal((300, 1))
    data = IOData(u, np.zeros((300, 1)), DT, name="rec")
    curves = nonlinearity_curves(model, data, n_points=11)
    eta, _ = model.blocks[0].lti(model.encoder(torch.as_tensor(u)[None]))
    eta = eta[0].detach().numpy()
    first = curves[0]
    assert first.name == "tanh" and first.eta.shape == (11, 3)
    np.testing.assert_allclose(first.eta[0], eta.min(0))
    np.testing.assert_allclose(first.eta[-1], eta.max(0))
    np.testing.assert_allclose(first.output, np.tanh(first.eta + bias))
    assert json.dumps(first.to_dict())
    with pytest.raises(DataError, match="dt"):
        nonlinearity_curves(model, IOData(u, np.zeros((300, 1)), 2 * DT))


def test_importing_analysis_loads_neither_matplotlib_nor_control() -> None:
    code = "import sys, deepwiener.analysis; print('matplotlib' in sys.modules, 'control' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
