"""The stable LFR (``LFRModel(stable=True)``): every parameter value gives a contracting loop, by the small-gain
condition ``||A|| + L_phi ||E|| ||F|| <= CONTRACTION`` (a true Lipschitz bound of the state map) or by the IQC
condition (``certificate="iqc"``, ``models.lfr.iqc_norm``); an input ten times the training range for 10^5 samples
keeps the state bounded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cli.cli_helpers import run_cli

import deepwiener as dw
from deepwiener import analysis
from deepwiener.errors import ConfigError
from deepwiener.models.lfr import CONTRACTION, LFRModel, iqc_norm, metric_factor

MAPS = ("mlp", "tanh", "linear_tanh", "gelu")


def scramble(model: LFRModel, generator: torch.Generator, scale: float) -> None:
    """Draw every parameter at random, ``scale`` times larger than a standard normal (loops far from stable)."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=generator, dtype=p.dtype))


def state_map(model: LFRModel, x: torch.Tensor, u_n: torch.Tensor) -> torch.Tensor:
    """One step of the loop: x (batch, n_x), u_n (batch, n_u) -> x[k+1] (batch, n_x)."""
    return model.trajectory(u_n[:, None], x, mode="loop")[2]


@pytest.mark.parametrize("nonlinearity", MAPS)
def test_a_thousand_random_draws_contract_by_the_iqc_certificate(nonlinearity: str) -> None:
    model = LFRModel(2, 1, n_x=5, n_w=3, nonlinearity=nonlinearity, stable=True, certificate="iqc").double()
    generator = torch.Generator().manual_seed(0)
    norms, ratios = [], []
    with torch.no_grad():
        for draw in range(250):  # 4 maps x 250 = 1000 draws, the multiplier drawn too
            scramble(model, generator, scale=3.0 if draw % 2 else 0.3)
            cert = analysis.loop_certificate(model)
            norms.append(cert.iqc_norm)
            x1, x2 = torch.randn(2, 8, 5, generator=generator, dtype=torch.float64)
            u_n = torch.randn(8, 2, generator=generator, dtype=torch.float64)
            R = metric_factor(model.metric)  # increments contract in ||x||_P = ||R^T x||
            step = ((state_map(model, x1, u_n) - state_map(model, x2, u_n)) @ R).norm(dim=1) / ((x1 - x2) @ R).norm(
                dim=1)
            ratios.append(float(step.max()))
            assert cert.holds and cert.stable and cert.certificate == "iqc"
    assert max(norms) <= 1 + 1e-9
    assert max(ratios) <= CONTRACTION * (1 + 1e-9)  # measured increments contract at the certified rate
    assert max(norms) > 0.999  # large draws are scaled onto the condition, not far inside it


def test_the_iqc_condition_leaves_more_of_the_loop_than_the_small_gain_bound() -> None:
    # a slow mode (pole 0.99) the loop does not act on, and a fast one it does: the IQC keeps A and E as they are
    small_gain, iqc = (LFRModel(1, 1, n_x=2, n_w=1, nonlinearity="tanh", stable=True, certificate=c).double()
                       for c in ("small_gain", "iqc"))
    with torch.no_grad():
        small_gain.A.copy_(torch.diag(torch.tensor([0.99, 0.3], dtype=torch.float64)))
        small_gain.E.copy_(torch.tensor([[0.0], [0.5]], dtype=torch.float64))
        small_gain.F.copy_(torch.tensor([[0.0, 1.0]], dtype=torch.float64))
    iqc.load_state_dict(small_gain.state_dict(), strict=False)
    assert analysis.loop_certificate(small_gain).bound == pytest.approx(CONTRACTION)  # the small gain scales
    A, E = iqc.loop_matrices()
    torch.testing.assert_close((A, E), (iqc.A, iqc.E), rtol=0, atol=0)  # the IQC leaves the loop alone
    assert analysis.loop_certificate(iqc).iqc_norm < 1


def test_the_iqc_norm_is_the_lmi_it_stands_for() -> None:
    # ||[A Et] L^-T|| <= 1 is [A Et]^T [A Et] <= M: check the matrix inequality directly at the best scale
    model = LFRModel(1, 1, n_x=3, n_w=2, nonlinearity="mlp", stable=True, certificate="iqc").double()
    scramble(model, torch.Generator().manual_seed(11), 0.7)
    with torch.no_grad():
        A, E = model.loop_matrices()
        sector = model.phi.slope_sector()
        Et, Ft = E @ sector.outer, sector.inner @ model.F
        R = metric_factor(model.metric)
        P, N = R @ R.T, torch.cat([A, Et], 1)
        gaps = []
        for scale in np.logspace(-4, 4, 17):
            lam = scale * model.log_multiplier.exp()
            top = CONTRACTION**2 * P + Ft.T @ ((lam * sector.low * sector.high)[:, None] * Ft)
            cross = -(lam * (sector.low + sector.high) / 2)[:, None] * Ft
            M = torch.cat([torch.cat([top, cross.T], 1), torch.cat([cross, torch.diag(lam)], 1)])
            if torch.linalg.eigvalsh(M).min() > 0:  # scales where M is not definite are shrunk by iqc_norm
                gaps.append(float(torch.linalg.eigvalsh(M - N.T @ P @ N).min()))
        assert max(gaps) >= -1e-9  # the scaled loop satisfies the LMI at some multiplier scale
        args = (model.F, sector, model.log_multiplier, model.metric)
        assert float(iqc_norm(A, E, *args)) <= 1 + 1e-9
        assert float(iqc_norm(A / 0.9, E / 0.9, *args)) > 1  # the test can fail


@pytest.mark.parametrize("nonlinearity", MAPS)
def test_a_thousand_random_draws_contract_by_the_certificate(nonlinearity: str) -> None:
    model = LFRModel(2, 1, n_x=5, n_w=3, nonlinearity=nonlinearity, stable=True).double()
    generator = torch.Generator().manual_seed(0)
    bounds, ratios = [], []
    with torch.no_grad():
        for draw in range(250):  # 4 maps x 250 = 1000 draws
            scramble(model, generator, scale=3.0 if draw % 2 else 0.3)
            cert = analysis.loop_certificate(model)
            bounds.append(cert.bound)
            x1, x2 = torch.randn(2, 8, 5, generator=generator, dtype=torch.float64)
            u_n = torch.randn(8, 2, generator=generator, dtype=torch.float64)
            step = (state_map(model, x1, u_n) - state_map(model, x2, u_n)).norm(dim=1) / (x1 - x2).norm(dim=1)
            ratios.append(float(step.max()) / cert.bound)
            assert cert.holds and cert.stable
    assert max(bounds) <= CONTRACTION * (1 + 1e-12)
    assert max(ratios) <= 1 + 1e-12  # the bound is a true Lipschitz constant of the state map
    assert max(bounds) > 0.99 * CONTRACTION  # large draws are scaled down to the bound, not far below it


def test_the_free_model_with_the_same_parameters_is_not_certified() -> None:
    free, stable = (LFRModel(1, 1, n_x=4, n_w=3, stable=s) for s in (False, True))
    generator = torch.Generator().manual_seed(1)
    scramble(free, generator, 3.0)
    stable.load_state_dict(free.state_dict())
    assert not analysis.loop_certificate(free).holds
    assert analysis.loop_certificate(stable).holds


@pytest.mark.parametrize("certificate", ["small_gain", "iqc"])
def test_ten_times_the_training_range_for_a_hundred_thousand_samples_stays_bounded(certificate: str) -> None:
    free, stable = (LFRModel(1, 1, n_x=6, n_w=4, stable=s, certificate=certificate, dt=0.01).double()
                    for s in (False, True))
    scramble(free, torch.Generator().manual_seed(2), 1.5)
    stable.load_state_dict(free.state_dict(), strict=False)
    u_n = 10 * torch.randn(1, 100_000, 1, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    with torch.no_grad():
        states = stable.trajectory(u_n, stable.init_state(1)[0], mode="compiled")[0][0]
        # ||x[k+1]|| <= rho ||x[k]|| + ||f(0, u_k)||: the state never leaves sup ||f(0, u)|| / (1 - rho)
        cert = analysis.loop_certificate(stable)
        rho = cert.bound if certificate == "small_gain" else CONTRACTION
        R = torch.eye(6, dtype=torch.float64) if stable.metric is None else metric_factor(stable.metric)
        drift = (state_map(stable, torch.zeros(100_000, 6, dtype=torch.float64), u_n[0]) @ R).norm(dim=1).max()
        assert torch.isfinite(states).all()
        assert float((states @ R).norm(dim=1).max()) <= float(drift) / (1 - rho) * (1 + 1e-9)  # in ||x||_P
        free_states = free.trajectory(u_n[:, :2000], free.init_state(1)[0], mode="compiled")[0][0]
    assert not torch.isfinite(free_states).all() or float(free_states.abs().max()) > 1e6  # the test can fail


def test_a_loop_already_inside_the_bound_is_unchanged() -> None:
    free, stable = (LFRModel(1, 2, n_x=4, n_w=3, stable=s, seed=5) for s in (False, True))
    assert analysis.loop_certificate(free).bound < CONTRACTION
    u = torch.randn(2, 50, 1, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(stable(u)[0], free(u)[0], rtol=0, atol=0)


@pytest.mark.parametrize("certificate", ["small_gain", "iqc"])
def test_gradients_are_finite_at_the_linear_start_and_where_the_bound_is_active(certificate: str) -> None:
    model = LFRModel(1, 1, n_x=4, n_w=3, stable=True, certificate=certificate).double()
    u = torch.randn(1, 30, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        model.E.zero_()
        model.A.mul_(5.0)  # ||A|| far above the bound: the scale is active
    for engine in ("loop", "compiled"):
        model.zero_grad()
        model(u, mode=engine)[0].square().sum().backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None), engine
        assert float(model.A.grad.abs().sum()) > 0


@pytest.mark.parametrize("certificate", ["small_gain", "iqc"])
def test_gradcheck_of_the_scaled_loop(certificate: str) -> None:
    model = LFRModel(1, 1, n_x=3, n_w=2, nonlinearity="tanh", stable=True, certificate=certificate).double()
    scramble(model, torch.Generator().manual_seed(6), 2.0)
    u = torch.randn(1, 6, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(7))

    def output(A: torch.Tensor, E: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(model, {"A": A, "E": E}, (u,), {"mode": "loop"})[0]

    A, E = (p.detach().clone().requires_grad_() for p in (model.A, model.E))
    cert = analysis.loop_certificate(model)  # the scale is active
    assert (cert.bound if certificate == "small_gain" else cert.iqc_norm) == pytest.approx(
        CONTRACTION if certificate == "small_gain" else 1.0)
    assert torch.autograd.gradcheck(output, (A, E))


@pytest.mark.parametrize("certificate", ["small_gain", "iqc"])
def test_file_round_trip_and_the_inspection(tmp_path: Path, certificate: str) -> None:
    model = LFRModel(1, 1, n_x=4, n_w=3, stable=True, certificate=certificate, dt=0.01)
    scramble(model, torch.Generator().manual_seed(8), 2.0)
    dw.save(model, tmp_path / "m.dw")
    loaded = dw.load(tmp_path / "m.dw")
    assert loaded.config.stable and loaded.config.certificate == certificate
    u = np.random.default_rng(9).normal(size=(200, 1))
    np.testing.assert_array_equal(loaded.simulate(u), model.simulate(u))
    system = analysis.blocks(loaded)[0]
    np.testing.assert_allclose(np.sort_complex(system.poles), np.sort_complex(loaded.poles()), rtol=1e-6)
    assert system.spectral_radius < 1 and analysis.certificate(loaded).holds


def test_stable_needs_a_globally_lipschitz_map() -> None:
    for name in ("poly", "glu"):
        for certificate in ("small_gain", "iqc"):
            with pytest.raises(ConfigError, match="global Lipschitz"):
                LFRModel(1, 1, nonlinearity=name, stable=True, certificate=certificate)
    with pytest.raises(ConfigError, match="certificate"):
        LFRModel(1, 1, stable=True, certificate="lmi")
    assert dw.build_model("lfr", n_u=1, n_y=1, stable=True).config.stable


def test_inspect_prints_the_certificate_of_an_lfr_model(tmp_path: Path) -> None:
    model = LFRModel(1, 1, n_x=4, n_w=3, stable=True, dt=0.01)
    scramble(model, torch.Generator().manual_seed(10), 2.0)
    dw.save(model, tmp_path / "m.dw")
    result = run_cli(["inspect", tmp_path / "m.dw", "--out", tmp_path / "inspect", "--json", tmp_path / "i.json"])
    assert result.code == 0, result.err
    assert "lfr, loop open" in result.out and "delta-ISS certified (by construction, small gain)" in result.out
    assert (tmp_path / "inspect" / "pole_zero_block0.png").exists()
    cert = json.loads((tmp_path / "i.json").read_text())["certificate"]
    assert cert["holds"] and cert["bound"] == pytest.approx(CONTRACTION)
    assert "IQC: ||[A Et] L^-T|| = " in result.out and cert["iqc_norm"] < 1  # the IQC holds for it too
