"""S6 (selective, not LTI): engines and streaming equal an independent numpy reference, on values and
gradients; stability for any parameters; training inside DeepWiener; errors.

Tolerances: float64 agrees to 1e-10. In float32 the scan reorders the products of the time-varying
multipliers, so it agrees with the float64 reference to 1e-5 (absolute and relative) for T = 777.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import run_stepper

from deepwiener.data import IOData
from deepwiener.engines import compiled
from deepwiener.errors import ConfigError, DataError
from deepwiener.layers import S6, S6Options, make_layer
from deepwiener.models import DeepWiener
from deepwiener.training import TrainConfig, fit

H, N = 3, 4
FAST_MODES = ["scan", pytest.param("compiled", marks=pytest.mark.skipif(
    not compiled.available(), reason="numba kernel unavailable"))]


def _layer(readout: str = "next", seed: int = 0) -> S6:
    layer = make_layer("s6", H, H, N, {"readout": readout}, torch.Generator().manual_seed(seed))
    assert isinstance(layer, S6)
    return layer.double()


def _inputs(steps: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(2, steps, H, generator=gen, dtype=torch.float64)
    x0 = torch.randn(2, H, N, generator=gen, dtype=torch.float64)
    return u, x0


def _reference(layer: S6, u: torch.Tensor, x0: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """The module docstring's equations in numpy float64, sample by sample."""
    p = {name: t.detach().double().numpy() for name, t in layer.named_parameters()}
    u_np, x = u.detach().numpy(), x0.detach().numpy().copy()
    out = []
    for k in range(u_np.shape[1]):
        uk = u_np[:, k]  # (b, h)
        delta = np.log1p(np.exp(uk @ p["W_dt"].T + p["b_dt"]))  # (b, h)
        A_bar = np.exp(-delta[:, :, None] * np.exp(p["a"]))  # (b, h, n)
        B, C = uk @ p["W_B"].T, uk @ p["W_C"].T  # (b, n)
        x_next = A_bar * x + (delta * uk)[:, :, None] * B[:, None, :]
        read = x_next if layer.options.readout == "next" else x
        out.append(np.einsum("bhn,bn->bh", read, C) + p["D"] * uk)
        x = x_next
    return np.stack(out, axis=1), x


def _stream(layer: S6, u: torch.Tensor, x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    stepper, x, out = layer.stepper(), x0, []
    for k in range(u.shape[1]):
        eta_k, x = stepper.step(u[:, k], x)
        out.append(eta_k)
    return torch.stack(out, dim=1), x


@pytest.mark.parametrize("readout", ["next", "current"])
@pytest.mark.parametrize("steps", [1, 7, 777])
def test_engines_and_step_equal_reference_float64(steps: int, readout: str) -> None:
    layer = _layer(readout)
    u, x0 = _inputs(steps)
    eta_ref, x_ref = _reference(layer, u, x0)
    modes = ["loop", "scan", "auto"] + (["compiled"] if compiled.available() else [])
    results = {mode: layer(u, x0, mode=mode) for mode in modes}
    if steps <= 7:
        results["step"] = _stream(layer, u, x0)
    for mode, (eta, x) in results.items():
        np.testing.assert_allclose(eta.detach().numpy(), eta_ref, rtol=1e-10, atol=1e-10, err_msg=mode)
        np.testing.assert_allclose(x.detach().numpy(), x_ref, rtol=1e-10, atol=1e-10, err_msg=mode)


def test_stepper_equals_forward_over_a_long_record() -> None:
    layer = _layer()
    u, x0 = _inputs(120)
    eta, x = layer(u, x0, mode="scan")
    eta_s, x_s = _stream(layer, u, x0)
    torch.testing.assert_close(eta_s, eta, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(x_s, x, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("mode", FAST_MODES)
def test_float32_within_documented_tolerance(mode: str) -> None:
    layer64 = _layer()
    u, x0 = _inputs(777)
    eta_ref, x_ref = _reference(layer64, u, x0)
    eta, x = layer64.float()(u.float(), x0.float(), mode=mode)
    assert eta.dtype == torch.float32
    np.testing.assert_allclose(eta.detach().numpy(), eta_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(x.detach().numpy(), x_ref, rtol=1e-5, atol=1e-5)


def test_chunked_forward_equals_whole_record() -> None:
    layer = _layer()
    u, x0 = _inputs(50)
    eta, x = layer(u, x0, mode="scan")
    eta1, x1 = layer(u[:, :17], x0, mode="scan")
    eta2, x2 = layer(u[:, 17:], x1, mode="scan")
    torch.testing.assert_close(torch.cat([eta1, eta2], dim=1), eta)
    torch.testing.assert_close(x2, x)


def _grads(layer: S6, u: torch.Tensor, x0: torch.Tensor, mode: str) -> dict[str, torch.Tensor]:
    layer.zero_grad()
    u, x0 = u.clone().requires_grad_(), x0.clone().requires_grad_()
    eta, x = layer(u, x0, mode=mode)
    weights = torch.linspace(-1, 1, x.numel(), dtype=x.dtype).reshape(x.shape)
    (eta.sin().sum() + (weights * x).sum()).backward()
    grads = {name: p.grad.clone() for name, p in layer.named_parameters()}
    return {**grads, "u": u.grad, "x0": x0.grad}


@pytest.mark.parametrize("mode", FAST_MODES)
@pytest.mark.parametrize("readout", ["next", "current"])
def test_gradients_equal_loop(mode: str, readout: str) -> None:
    layer = _layer(readout)
    u, x0 = _inputs(40)
    ref = _grads(layer, u, x0, "loop")
    got = _grads(layer, u, x0, mode)
    assert set(got) == set(ref)
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], rtol=1e-10, atol=1e-10, msg=name)


def test_adam_lowers_a_toy_loss() -> None:
    layer = _layer()
    u, _ = _inputs(32)
    target = torch.tanh(torch.cumsum(u, dim=1) * 0.1)
    optimizer = torch.optim.Adam(layer.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        optimizer.zero_grad()
        loss = (layer(u, mode="scan")[0] - target).pow(2).mean()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_stable_for_any_parameters() -> None:
    """0 < Abar[k] < 1 at every step, even after large random perturbations of the raw parameters."""
    gen = torch.Generator().manual_seed(3)
    layer = _layer()
    u, _ = _inputs(200)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(3.0 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
        A_bar = layer.selection(u).A_bar
    assert A_bar.shape == (2, 200, H, N)
    assert (A_bar > 0).all() and (A_bar < 1).all()


def test_initialisation() -> None:
    options = S6Options(dt_min=0.01, dt_max=0.2)
    layer = S6(5, 5, 6, options, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(-layer.a.exp(), -torch.arange(1.0, 7).expand(5, 6))  # S4D-Real
    delta0 = torch.nn.functional.softplus(layer.b_dt)  # Delta at u = 0
    assert ((delta0 >= 0.01 * (1 - 1e-5)) & (delta0 <= 0.2 * (1 + 1e-5))).all()
    torch.testing.assert_close(layer.D, torch.ones(5))
    again = S6(5, 5, 6, options, generator=torch.Generator().manual_seed(0))
    for p, q in zip(layer.parameters(), again.parameters(), strict=True):
        assert torch.equal(p, q)


def test_not_lti() -> None:
    layer = _layer()
    assert S6.lti is False
    for name in ("discretize", "state_space", "kernel", "from_system"):
        assert not hasattr(layer, name)


def test_empty_sequence_returns_initial_state() -> None:
    layer = _layer()
    u, x0 = _inputs(0)
    eta, x = layer(u, x0)
    assert eta.shape == (2, 0, H)
    assert torch.equal(x, x0)


def test_errors() -> None:
    layer = _layer()
    u, x0 = _inputs(5)
    with pytest.raises(ConfigError, match="not LTI"):
        layer(u, x0, mode="fft")
    with pytest.raises(ConfigError, match="did you mean 'scan'"):
        layer(u, x0, mode="scn")
    with pytest.raises(ConfigError, match="d_in must equal d_out"):
        make_layer("s6", 2, 3, 4, None, torch.Generator())
    with pytest.raises(ConfigError, match="dt_min"):
        make_layer("s6", 2, 2, 4, {"dt_min": 0.5, "dt_max": 0.1}, torch.Generator())
    with pytest.raises(ConfigError, match="unknown S6Options"):
        make_layer("s6", 2, 2, 4, {"discretization": "zoh"}, torch.Generator())
    with pytest.raises(ConfigError, match="shape"):
        layer(u[..., :2])
    with pytest.raises(DataError, match="state"):
        layer(u, x0[:, :, :2])


def _wiener_data(steps: int, seed: int) -> IOData:
    rng = np.random.default_rng(seed)
    u = rng.normal(size=steps)
    x = np.zeros(steps)
    for k in range(1, steps):
        x[k] = 0.9 * x[k - 1] + 0.3 * u[k - 1]
    return IOData(u=u, y=np.tanh(x) + 0.1 * u, dt=0.01)


def test_deep_wiener_with_s6_trains_and_streams() -> None:
    model = DeepWiener(1, 1, layer="s6", d_model=4, d_state=4, n_layers=2, seed=0)
    config = TrainConfig(window=64, washout=8, batch_size=8, epochs=2, patience=None, lr=1e-2)
    result = fit(model, _wiener_data(600, seed=0), config)
    assert result.epochs_run == 2
    assert all(np.isfinite(h["val_rmse"]) for h in result.history)
    model = model.double()
    u = torch.randn(2, 40, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y, state = model(u, mode="loop")
    modes = ["scan"] + (["compiled"] if compiled.available() else [])
    for mode in modes:
        torch.testing.assert_close(model(u, mode=mode)[0], y, rtol=1e-10, atol=1e-10)
    stepper = model.stepper()
    streamed, x = run_stepper(stepper, u, stepper.init_state(2))
    torch.testing.assert_close(streamed, y, rtol=1e-10, atol=1e-10)
    for a, b in zip(x, state, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
