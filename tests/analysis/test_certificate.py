"""The delta-ISS certificate: verdicts, numbers, and the gain bound checked on simulations."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from deepwiener.analysis import BlockSystem, Certificate, blocks, certificate, certify_block
from deepwiener.data import IOData
from deepwiener.layers import LRU
from deepwiener.models import DeepWiener
from deepwiener.systems import DiagonalSSM

DT = 0.5


def small_model(**options: object) -> DeepWiener:
    settings = {"layer": "lru", "d_model": 3, "d_state": 3, "n_layers": 2, "dt": DT, "seed": 3, **options}
    return DeepWiener(n_u=1, n_y=1, **settings).double()


def test_global_certificate_numbers_and_gain_bound_hold_on_simulations() -> None:
    model = small_model(skip="linear")
    model.set_scaler([0.5], [2.0], [1.0], [3.0])
    cert = certificate(model)
    assert cert.status == "global" and cert.holds
    for block_cert, system, block in zip(cert.blocks, blocks(model), model.blocks, strict=True):
        assert block_cert.spectral_radius == pytest.approx(system.spectral_radius)
        assert block_cert.margin == pytest.approx(1 - system.spectral_radius)
        assert block_cert.norm_B == pytest.approx(np.linalg.norm(system.B, 2))
        assert block_cert.lipschitz == pytest.approx(1.1289)
        skip = np.linalg.norm(block.skip.weight.detach().numpy(), 2)
        assert block_cert.skip_norm == pytest.approx(skip)
        assert block_cert.gain_bound == pytest.approx(1.1289 * system.hinf_norm()[0] + skip)
    expected = 3.0 * cert.decoder_norm * np.prod([b.gain_bound for b in cert.blocks]) * cert.encoder_norm / 2.0
    assert cert.gain_bound == pytest.approx(expected)
    rng = np.random.default_rng(0)
    for _ in range(5):  # incremental l2 gain from the zero state
        u_a, u_b = rng.standard_normal((2, 400, 1))
        dy = model.simulate(u_a) - model.simulate(u_b)
        assert np.linalg.norm(dy) <= cert.gain_bound * np.linalg.norm(u_a - u_b)
    data = json.loads(json.dumps(cert.to_dict(), allow_nan=False))
    assert data["status"] == "global" and len(data["blocks"]) == 2
    assert "certified" in cert.summary()[0] and any("rho = " in line for line in cert.summary())


def test_a_block_that_is_not_schur_fails_the_certificate() -> None:
    model = small_model()
    A = np.array([[1.02, 0.3], [0.0, 0.5]])
    unstable = BlockSystem(0, "hand-built", A, np.ones((2, 3)), np.ones((3, 2)), np.zeros((3, 3)), DT)
    block_cert = certify_block(unstable, model.blocks[0])
    assert not block_cert.schur and block_cert.status == "failed"
    assert block_cert.spectral_radius == pytest.approx(1.02) and block_cert.margin == pytest.approx(-0.02)
    assert block_cert.hinf_norm is None and block_cert.gain_bound is None
    cert = Certificate((block_cert,), 1.0, 1.0, 1.0, 1.0)
    assert cert.status == "failed" and not cert.holds and cert.gain_bound is None
    assert "NOT certified" in cert.summary()[0] and "NOT Schur" in "\n".join(cert.summary())


class UnstableLRU(LRU):
    """An LRU whose discrete poles are pushed outside the unit circle (LRU itself cannot be unstable)."""

    def discretize(self) -> DiagonalSSM:
        system = super().discretize()
        return DiagonalSSM(1.2 * system.lam, system.B, system.C, system.D, system.readout)


def test_a_destabilised_layer_in_a_model_is_flagged() -> None:
    model = small_model()
    layer = model.blocks[1].lti
    destabilised = UnstableLRU(3, 3, 3, layer.options, generator=torch.Generator().manual_seed(0)).double()
    destabilised.load_state_dict(layer.state_dict())
    model.blocks[1].lti = destabilised
    cert = certificate(model)
    assert [b.status for b in cert.blocks] == ["global", "failed"]
    assert cert.status == "failed" and cert.blocks[1].spectral_radius > 1


def test_linear_tanh_is_globally_lipschitz() -> None:
    model = small_model(nonlinearity="linear_tanh")
    with torch.no_grad():
        model.blocks[0].sigma.gain.copy_(torch.tensor([0.5, -0.2, 0.1]))
        model.blocks[1].sigma.gain.copy_(torch.tensor([-3.0, 0.0, 0.0]))
    cert = certificate(model)
    assert cert.status == "global" and cert.gain_bound is not None
    assert [b.lipschitz for b in cert.blocks] == [pytest.approx(1.5), pytest.approx(2.0)]


def test_polynomial_with_cubic_term_is_local_and_bounded_on_data() -> None:
    model = small_model(nonlinearity="poly")
    with torch.no_grad():
        for block in model.blocks:
            block.sigma.a3.fill_(0.05)
    cert = certificate(model)
    assert cert.status == "local" and cert.holds
    assert all(b.lipschitz_kind == "local" and b.lipschitz is None for b in cert.blocks)
    assert cert.gain_bound is None and "locally Lipschitz" in cert.blocks[0].notes[0]
    u = np.random.default_rng(1).standard_normal((200, 1))
    with_data = certificate(model, IOData(u, np.zeros_like(u), DT, name="rec"))
    assert with_data.status == "local" and with_data.data == "rec" and with_data.gain_bound is not None
    for block_cert, block in zip(with_data.blocks, model.blocks, strict=True):
        bound = float(block_cert.notes[0].split("<= ")[1].split(" ")[0])
        with torch.no_grad():
            expected = block.sigma.local_lipschitz(bound)
        assert block_cert.lipschitz == pytest.approx(expected, rel=1e-3)
        assert block_cert.lipschitz > 1.0
    assert "on the range seen on 'rec'" in "\n".join(with_data.summary())


def test_layernorm_is_reported_with_its_eps_bound() -> None:
    model = small_model(norm="layer")
    cert = certificate(model)
    norm = model.blocks[0].norm
    assert cert.blocks[0].norm_lipschitz == pytest.approx(1 / np.sqrt(norm.eps))
    assert "not globally Lipschitz" in cert.blocks[0].notes[-1]
    x = torch.full((3,), 0.7, dtype=torch.float64) + 1e-4 * torch.randn(3, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(norm, x)  # near-constant input: the steepest region
    assert torch.linalg.matrix_norm(jac, 2) <= cert.blocks[0].norm_lipschitz


def test_no_skip_and_non_lti_blocks() -> None:
    model = small_model(skip="none")
    assert all(b.skip_norm == 0.0 for b in certificate(model).blocks)
    model.blocks[0].lti = nn.Linear(3, 3)
    cert = certificate(model)
    assert cert.blocks[0].status == "unknown" and cert.status == "unknown" and not cert.holds
    assert "not LTI" in cert.blocks[0].summary()[0]


def test_an_output_integrator_is_not_certified_but_its_increments_are() -> None:
    model = small_model(integrator=True)
    cert = certificate(model)
    assert cert.status == "global" and not cert.holds and cert.to_dict()["integrator"]
    assert any("NOT delta-ISS from u to y" in line for line in cert.summary())
    u_a = np.zeros((400, 1))
    u_b = u_a.copy()
    u_b[:10] = 1.0  # a brief input difference: the increments forget it, the summed output does not
    dy = model.simulate(u_b) - model.simulate(u_a)
    increments = np.diff(dy, axis=0, prepend=0.0)
    assert np.linalg.norm(increments) <= cert.gain_bound * np.linalg.norm(u_b - u_a)
    assert abs(dy[-1, 0]) > 10 * abs(increments[-1, 0])
