"""Model-order reduction: exactness at full order, a textbook case, stability, bounds, config round trip."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
import torch
from helpers import LAYER_NAMES

from deepwiener.analysis import blocks, reduce
from deepwiener.analysis.gramians import hinf_norm
from deepwiener.data import IOData
from deepwiener.errors import ConfigError
from deepwiener.layers import LAYERS, S5, LTILayer
from deepwiener.models import DeepWiener
from deepwiener.systems import DiagonalSSM, diagonal_from_real

DT = 0.1
U = np.random.default_rng(0).standard_normal((300, 1))


def small_model(layer: str = "lru", readout: str = "next", d_state: int = 4, **options: object) -> DeepWiener:
    settings = {"d_model": 3, "d_state": d_state, "n_layers": 2, "dt": DT, "seed": 2, **options}
    return DeepWiener(n_u=1, n_y=1, layer=layer, layer_options={"readout": readout}, **settings).double()


@pytest.mark.parametrize("method", ["balanced", "modal"])
@pytest.mark.parametrize(("layer", "readout"), [("lru", "next"), ("lru", "current"), ("s5", "next")])
def test_full_order_reproduces_the_model_on_every_engine(layer: str, readout: str, method: str) -> None:
    model = small_model(layer, readout)
    result = reduce(model, order=4, method=method)
    assert result.states_after == (4, 4) and result.model.config == model.config
    for block in result.model.blocks:
        assert block.lti.options.readout == readout and next(block.lti.parameters()).dtype == torch.float64
    for mode in ("loop", "scan", "fft"):
        np.testing.assert_allclose(result.model.simulate(U, mode=mode), model.simulate(U, mode=mode), atol=1e-8)


def test_balanced_truncation_of_decoupled_first_order_modes_matches_the_textbook() -> None:
    """Two decoupled real modes: the Hankel singular values are |b c lam| / (1 - lam^2) (readout next:
    eta = c b z / (z - lam) = c b + c b lam / (z - lam)) and order 1 keeps exactly the dominant mode."""
    lam, b, c = np.array([0.9, 0.5]), np.array([1.0, 2.0]), np.array([0.5, 1.5])
    D = np.array([[0.2, 0.1], [0.0, -0.3]])
    system = DiagonalSSM(
        torch.tensor(lam, dtype=torch.complex128),
        torch.tensor(np.diag(b), dtype=torch.complex128),
        torch.tensor(np.diag(c), dtype=torch.complex128),
        torch.tensor(D),
        "next",
    )
    model = DeepWiener(n_u=1, n_y=1, layer="s5", d_model=2, d_state=2, n_layers=1, dt=DT).double()
    model.blocks[0].lti = S5.from_system(system, model.blocks[0].lti.options).double()
    block = blocks(model)[0]
    hsv = np.abs(b * c * lam) / (1 - lam**2)
    np.testing.assert_allclose(block.hankel_singular_values()[:2], hsv, rtol=1e-6)  # the rest is 0
    reduced = reduce(model, order=1)
    assert reduced.error_bounds[0] == pytest.approx(2 * hsv[1], rel=1e-6)
    kept = blocks(reduced.model)[0]
    np.testing.assert_allclose(kept.poles, [0.9, 0.9], rtol=1e-7)  # one real mode: Re and Im states
    f = np.linspace(0, 0.5 / DT, 7)
    z = np.exp(2j * np.pi * f * DT)
    expected = np.broadcast_to(D + np.diag([0.0, b[1] * c[1]]), (f.size, 2, 2)).astype(complex)
    expected[:, 0, 0] += c[0] * b[0] * z / (z - lam[0])
    np.testing.assert_allclose(kept.frequency_response(f), expected, atol=1e-6)


@pytest.mark.parametrize("method", ["balanced", "modal"])
def test_reduction_keeps_stability_and_respects_its_error_bound(method: str) -> None:
    model = small_model("lru", d_state=6)
    result = reduce(model, order=2, method=method)
    for before, after, bound in zip(blocks(model), blocks(result.model), result.error_bounds, strict=True):
        assert after.is_stable and after.n_states == 4
        A = np.block([[before.A, np.zeros((12, 4))], [np.zeros((4, 12)), after.A]])
        error = hinf_norm(A, np.vstack([before.B, after.B]), np.hstack([before.C, -after.C]), before.D - after.D)
        assert error[0] <= bound * (1 + 1e-6)
        if method == "balanced":  # ||G - G_r|| >= the first discarded Hankel singular value
            assert error[0] >= before.hankel_singular_values()[4] * (1 - 1e-6)


def test_tol_gives_one_order_for_every_block_and_a_loadable_model() -> None:
    model = small_model("s5", d_state=6)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    data = IOData(U, model.simulate(U) + 0.01, DT, name="rec")
    result = reduce(model, tol=0.25, method="balanced", data=data, init_window=10)
    modes = result.states_after[0]
    assert result.states_before == (6, 6) and set(result.states_after) == {modes} and modes < 6
    assert all(bound <= 0.25 for bound in result.error_bounds)
    assert result.model.config.d_state == modes and model.config.d_state == 6
    assert result.rmse_before == pytest.approx(0.01) and result.rmse_after >= 0
    assert result.to_dict()["states_after"] == [modes, modes]
    rebuilt = DeepWiener.from_config(result.model.config).double()
    rebuilt.load_state_dict(result.model.state_dict(), strict=True)
    np.testing.assert_allclose(rebuilt.simulate(U), result.model.simulate(U))
    for key, value in model.state_dict().items():  # the original is untouched
        torch.testing.assert_close(value, original[key], rtol=0, atol=0)


def test_modal_truncation_drops_the_weakest_modes() -> None:
    model = small_model("lru", d_state=5)
    result = reduce(model, tol=1e9, method="modal")
    assert result.states_after == (1, 1)
    with torch.no_grad():
        system = model.blocks[0].lti.discretize()
    weight = system.C.abs().norm(dim=0) * system.B.abs().norm(dim=1) / (1 - system.lam.abs())
    kept = result.model.blocks[0].lti.discretize().lam
    torch.testing.assert_close(kept, system.lam[weight.argmax()][None])
    assert result.error_bounds[0] == pytest.approx(float(weight.sum() - weight.max()))


@pytest.mark.parametrize("readout", ["current", "next"])
def test_diagonal_from_real_matches_dlsim_with_real_and_complex_poles(readout: str) -> None:
    rng = np.random.default_rng(4)
    A = rng.standard_normal((5, 5))
    A *= 0.9 / np.abs(np.linalg.eigvals(A)).max()
    assert np.sum(np.linalg.eigvals(A).imag == 0) >= 1
    B, C, D = rng.standard_normal((5, 2)), rng.standard_normal((3, 5)), rng.standard_normal((3, 2))
    system = diagonal_from_real(A, B, C, D, readout)
    assert system.lam.shape[0] == np.sum(np.linalg.eigvals(A).imag >= 0) and system.readout == readout
    u = rng.standard_normal((50, 2))
    _, y, _ = scipy.signal.dlsim((A, B, C, D, 1.0), u)
    x = torch.zeros(1, system.lam.shape[0], dtype=torch.complex128)
    out = []
    for u_k in torch.as_tensor(u)[:, None, :]:
        x_next = system.advance(x, u_k)
        out.append(system.output(x, x_next, u_k)[0])
        x = x_next
    np.testing.assert_allclose(torch.stack(out).numpy(), y, atol=1e-10)


CANNOT_BE_REBUILT = [name for name in LAYER_NAMES if LAYERS[name].from_system.__func__ is LTILayer.from_system.__func__]
"""LTI layers without ``from_system``: reduction cannot rebuild them."""


@pytest.mark.parametrize("layer", CANNOT_BE_REBUILT)
def test_siso_bank_layers_are_refused(layer: str) -> None:
    with pytest.raises(ConfigError, match="lru, s5"):
        reduce(small_model(layer), order=2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"order": 2, "tol": 0.1}, "exactly one"),
        ({}, "exactly one"),
        ({"order": 0}, "order"),
        ({"order": 5}, "order"),
        ({"tol": -1.0}, "tol"),
        ({"order": 2, "method": "modall"}, "did you mean 'modal'"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        reduce(small_model(), **kwargs)
