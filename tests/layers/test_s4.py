"""S4's two structures: the SISO bank and the MIMO DPLR blocks (``block_order``).

Engine agreement (values, final states, gradients) for both runs in ``tests/engines/test_agree.py``
("s4" and "s4-blocks"); here: the Cauchy/Woodbury kernel against dense powers, the HiPPO-LegS initialisation,
shapes, poles, errors, streaming and analysis of the MIMO blocks.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepwiener import analysis
from deepwiener.errors import ConfigError
from deepwiener.layers import S4, make_layer
from deepwiener.layers.init import hippo_dplr, hippo_legs
from deepwiener.models import DeepWiener
from deepwiener.models.deepwiener_stream import CompiledStreamer
from deepwiener.systems import DPLRBank, DPLRBlocks


def _s4(d_in: int = 3, d_out: int = 3, d_state: int = 6, **options: object) -> S4:
    layer = make_layer("s4", d_in, d_out, d_state, options, torch.Generator().manual_seed(0))
    assert isinstance(layer, S4)
    return layer.double()


def _dense_markov(layer: S4, length: int) -> torch.Tensor:
    """Re(C A^k B) from the dense complex matrices: (length, d_out, d_in)."""
    A, B, C = layer.discretize().blocks()
    A = torch.block_diag(*A)
    out, power = [], torch.eye(A.shape[0], dtype=A.dtype)
    for _ in range(length):
        out.append((C @ power @ B).real)
        power = A @ power
    return torch.stack(out)


@pytest.mark.parametrize("options", [{}, {"block_order": 2}, {"block_order": 3}, {"block_order": 1}])
@pytest.mark.parametrize("slow", [False, True])
def test_cauchy_woodbury_kernel_equals_dense_powers(options: dict, slow: bool) -> None:
    layer = _s4(d_in=2 if options else 3, **options)
    if slow:
        with torch.no_grad():
            layer.log_dt.fill_(np.log(1e-3))  # |lam| > 0.999: the truncated generating function matters
    torch.testing.assert_close(layer.discretize().markov(300), _dense_markov(layer, 300), rtol=1e-9, atol=1e-10)


def test_mimo_blocks_shapes_and_system_type() -> None:
    layer = _s4(d_in=2, d_out=4, d_state=6, block_order=2)
    system = layer.discretize()
    assert isinstance(system, DPLRBlocks)
    assert (system.d_in, system.d_out, system.state_shape) == (2, 4, (3, 2))
    assert layer.init_state(5).shape == (5, 3, 2)
    eta, state = layer(torch.randn(5, 30, 2, dtype=torch.float64))
    assert eta.shape == (5, 30, 4) and state.shape == (5, 3, 2)
    assert layer.state_space().A.shape == (12, 12)
    assert isinstance(_s4().discretize(), DPLRBank)


def test_hippo_dplr_is_hippo_legs_exactly() -> None:
    for size in (1, 2, 3, 5):
        lam, P, B, V = hippo_dplr(size)
        A, B_legs, _ = hippo_legs(size)
        np.testing.assert_allclose(V @ (np.diag(lam) - np.outer(P, P.conj())) @ V.conj().T, A, atol=1e-12)
        np.testing.assert_allclose(V @ B, B_legs, atol=1e-12)
        np.testing.assert_allclose(V.conj().T @ V, np.eye(size), atol=1e-12)


def test_mimo_blocks_start_as_hippo_legs_read_out_by_a_real_map() -> None:
    """Block g at initialisation is the real HiPPO-LegS system of order m driven by r_g^T u, bilinear with its
    step, read out by Re(C_g V^*): the layer equals the sum of these real systems (readout "current")."""
    order, d_in, d_out = 2, 3, 2
    layer = _s4(d_in=d_in, d_out=d_out, d_state=6, block_order=order, readout="current")
    with torch.no_grad():
        system = layer.discretize()
    A_legs, B_legs, _ = hippo_legs(order)
    V = hippo_dplr(order)[3]
    u = np.random.default_rng(0).standard_normal((100, d_in))
    expected = u @ layer.D.detach().numpy().T
    for g in range(3):
        mix = system.B_c[g].numpy() / (V.conj().T @ B_legs)[:, None]  # (m, d_in), every row r_g^T
        np.testing.assert_allclose(mix, np.broadcast_to(mix[0].real, mix.shape), atol=1e-12)
        half = float(system.delta[g]) / 2
        M = np.linalg.inv(np.eye(order) - half * A_legs)
        A_d, B_d = M @ (np.eye(order) + half * A_legs), 2 * half * M @ np.outer(B_legs, mix[0].real)
        C_real = (system.C[:, g].numpy() @ V.conj().T).real  # (d_out, m)
        x = np.zeros(order)
        for k in range(len(u)):
            expected[k] += C_real @ x
            x = A_d @ x + B_d @ u[k]
    eta, _ = layer(torch.from_numpy(u)[None], mode="loop")
    # parameters are created in float32, so the initial system is LegS to float32 rounding
    np.testing.assert_allclose(eta[0].detach().numpy(), expected, rtol=1e-6, atol=1e-7)


def test_mimo_initial_poles_are_legs_poles_and_continuous_poles_map_to_discrete_ones() -> None:
    layer = _s4(d_state=6, block_order=2)
    delta = layer.log_dt.exp().detach()
    cont = layer.continuous_poles().detach()
    expected = torch.cat([-delta, -2 * delta])  # LegS(2) has the real poles -1 and -2 (float32 parameters)
    torch.testing.assert_close(torch.sort(cont.real).values, torch.sort(expected).values, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(cont.imag, torch.zeros_like(delta).repeat(2), rtol=0, atol=1e-6)
    for options in ({}, {"block_order": 2}):
        trained = _s4(**options)
        with torch.no_grad():
            for p in trained.parameters():
                p.add_(0.3 * torch.randn_like(p))
        lam = trained.continuous_poles().detach()
        bilinear = (1 + lam / 2) / (1 - lam / 2)  # continuous_poles already carries Delta
        discrete = torch.linalg.eigvals(torch.block_diag(*trained.discretize().discrete[0].detach()))
        torch.testing.assert_close(torch.sort(bilinear.real).values, torch.sort(discrete.real).values)
        torch.testing.assert_close(torch.sort(bilinear.imag).values, torch.sort(discrete.imag).values)


@pytest.mark.parametrize(
    ("options", "d_state", "match"),
    [({"block_order": 4}, 6, "multiple of block_order"), ({"block_order": 0}, 6, "block_order"),
     ({"block_order": True}, 6, "block_order"), ({"block_order": 1.5}, 6, "block_order"),
     ({"discretization": "zoh"}, 6, "bilinear")],
)
def test_bad_options_are_clear_errors(options: dict, d_state: int, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        make_layer("s4", 3, 3, d_state, options, torch.Generator().manual_seed(0))


def test_bank_needs_square_and_blocks_do_not() -> None:
    with pytest.raises(ConfigError, match="d_in must equal d_out"):
        make_layer("s4", 2, 3, 4, None, torch.Generator().manual_seed(0))
    assert make_layer("s4", 2, 3, 4, {"block_order": 2}, torch.Generator().manual_seed(0)).d_out == 3


@pytest.mark.parametrize("options", [{}, {"block_order": 2}])
def test_from_system_is_refused(options: dict) -> None:
    layer = _s4(**options)
    with pytest.raises(ConfigError, match="cannot be built from a system"):
        S4.from_system(layer.discretize())


def test_mimo_model_streams_and_is_analysable() -> None:
    model = DeepWiener(1, 1, layer="s4", d_model=3, d_state=6, n_layers=2, nonlinearity="elu",
                       layer_options={"block_order": 2}, dt=0.01, seed=2).double()
    u = torch.randn(1, 120, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref, final = model(u, mode="loop")
        torch.testing.assert_close(model(u, mode="fft")[0], ref)
    streamer = model.fast_stepper()
    assert isinstance(streamer, CompiledStreamer)
    np.testing.assert_allclose(streamer.run(u[0].numpy()), ref[0].numpy(), rtol=0, atol=1e-10)
    for x, x_ref in zip(streamer.state, final, strict=True):
        torch.testing.assert_close(x.to(x_ref.dtype), x_ref, rtol=0, atol=1e-10)
    systems = analysis.blocks(model)
    assert all(s.n_states == 12 and s.is_stable for s in systems)
    assert systems[0].continuous_poles_rad_s is not None


def test_mimo_blocks_leave_the_real_subspace_under_training() -> None:
    """At initialisation a block is a real LegS system (its order-2m real realisation repeats every pole);
    gradient steps must be able to make it a genuine complex block (distinct poles), which a conjugation-
    symmetric C would forbid."""
    layer, teacher = _s4(d_state=2, block_order=2), make_layer("s4", 3, 3, 4, None, torch.Generator().manual_seed(5))
    u = torch.randn(4, 64, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        target, _ = teacher.double()(u)

    def pole_gap() -> float:
        poles = np.linalg.eigvals(layer.state_space().A)  # 4 poles of the one block
        return min(abs(a - b) for i, a in enumerate(poles) for b in poles[i + 1:])

    assert pole_gap() < 1e-6
    opt = torch.optim.Adam(layer.parameters(), lr=1e-2)
    for _ in range(20):
        opt.zero_grad()
        (layer(u)[0] - target).pow(2).mean().backward()
        opt.step()
    assert pole_gap() > 1e-3
