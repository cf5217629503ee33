"""The output integrator (``ModelConfig.integrator``): the output is the running sum of what the decoder gives,
in every simulation path (forward, stepper, compiled streamer, with states carried across), the scaler
describes the increments, linear initialisation identifies the increments, and training learns an
integrating plant."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import run_stepper

from deepwiener.data import IOData, ValidationRecord, fit_scaler, output_increments, split_validation
from deepwiener.errors import ConfigError, DataError
from deepwiener.io import load, save
from deepwiener.models import DeepWiener
from deepwiener.training import TrainConfig, fit

OPTIONS = dict(layer="lru", d_model=6, d_state=5, n_layers=2, layer_options={"r_min": 0.5, "r_max": 0.95})


def pair(seed: int = 0) -> tuple[DeepWiener, DeepWiener]:
    """The same float64 parameters and scaler with and without the integrator."""
    plain = DeepWiener(2, 2, seed=seed, **OPTIONS).double()
    plain.set_scaler([0.5, -1.0], [2.0, 0.5], [0.1, -0.2], [3.0, 0.7])
    integrating = DeepWiener(2, 2, seed=seed, integrator=True, **OPTIONS).double()
    integrating.load_state_dict(plain.state_dict())
    return plain, integrating


def test_output_is_the_running_sum_of_the_plain_model() -> None:
    plain, integrating = pair()
    u = torch.randn(3, 200, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y_plain, _ = plain(u)
    y, state = integrating(u)
    torch.testing.assert_close(y, torch.cumsum(y_plain, dim=1), rtol=1e-12, atol=1e-12)
    assert len(state) == 3 and state[-1].dtype == torch.float64
    torch.testing.assert_close(state[-1], y[:, -1])


@pytest.mark.parametrize("mode", ["loop", "scan", "fft", "compiled"])
def test_every_path_agrees_and_carries_the_sum(mode: str) -> None:
    _, model = pair(seed=1)
    u = torch.randn(2, 120, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y_full, _ = model(u, mode="loop")
    y_head, state = model(u[:, :70], mode=mode)
    y_tail, _ = model(u[:, 70:], state, mode=mode)
    torch.testing.assert_close(torch.cat([y_head, y_tail], dim=1), y_full, rtol=1e-10, atol=1e-10)
    stepper = model.stepper()
    y_step, _ = run_stepper(stepper, u, stepper.init_state(2))
    torch.testing.assert_close(y_step, y_full, rtol=1e-10, atol=1e-10)


def test_compiled_streamer_carries_the_sum() -> None:
    _, model = pair(seed=2)
    u = np.random.default_rng(2).normal(size=(150, 2))
    expected = model.simulate(u)
    streamer = model.fast_stepper()
    head = streamer.run(u[:100])
    state = streamer.state
    assert len(state) == 3
    tail = np.stack([streamer.step(u_k) for u_k in u[100:]])
    np.testing.assert_allclose(np.vstack([head, tail]), expected, rtol=1e-10, atol=1e-10)
    streamer.reset(state)
    np.testing.assert_allclose(streamer.run(u[100:]), tail, rtol=1e-12, atol=1e-12)
    with pytest.raises(DataError, match="integrator's sum"):
        streamer.reset(state[:-1])


def test_state_without_the_sum_is_refused() -> None:
    _, model = pair()
    u = torch.zeros(1, 5, 2, dtype=torch.float64)
    with pytest.raises(DataError, match=r"3 tensors \(one per block and the integrator's sum\)"):
        model(u, model.init_state(1)[:-1])


def test_integrator_option_is_checked_and_saved(tmp_path) -> None:
    with pytest.raises(ConfigError, match="integrator must be true or false"):
        DeepWiener(1, 1, integrator="yes")
    _, model = pair()
    save(model, tmp_path / "m.dw")
    loaded = load(tmp_path / "m.dw")
    assert loaded.config.integrator
    u = np.random.default_rng(3).normal(size=(50, 2))
    np.testing.assert_allclose(loaded.simulate(u), model.simulate(u), rtol=1e-12)


def test_increments_and_their_scaler() -> None:
    y = np.cumsum(np.random.default_rng(4).normal(size=(300, 1)), axis=0) + 5.0
    data = IOData(u=np.zeros((300, 1)), y=y, dt=0.1)
    inc = output_increments(data)
    np.testing.assert_allclose(np.cumsum(inc.y, axis=0), y, rtol=1e-12)
    stats = fit_scaler(data, increments=True)
    assert stats.y_mean == pytest.approx([0.0])
    assert stats.y_std == pytest.approx([inc.y.std()])


def integrating_plant(steps: int, seed: int) -> IOData:
    """A position driven through a damped velocity with Coulomb-like friction: v+ = 0.95 v + 0.05 (u - 0.3
    tanh(5 v)), y+ = y + 0.1 v; one integrator at the output."""
    rng = np.random.default_rng(seed)
    u = np.repeat(rng.normal(size=steps // 20), 20)[:, None]
    v, y = 0.0, np.zeros((steps, 1))
    for k in range(steps):
        y[k] = (y[k - 1] if k else 0.0) + 0.1 * v
        v = 0.95 * v + 0.05 * (u[k, 0] - 0.3 * np.tanh(5 * v))
    return IOData(u=u, y=y, dt=0.01)


def test_linear_init_reproduces_the_integrated_linear_model() -> None:
    data = integrating_plant(1500, seed=5)
    head, _ = split_validation(data, 0.25)
    model = DeepWiener(1, 1, integrator=True, seed=0, **OPTIONS).double()
    model.set_scaler(*fit_scaler([head], increments=True))
    linear = model.start_linear([head], [ValidationRecord(data, len(head))])
    u = integrating_plant(400, seed=6).u
    np.testing.assert_allclose(model.simulate(u), np.cumsum(linear.simulate(u), axis=0), rtol=1e-7, atol=1e-9)


def test_fit_learns_an_integrating_plant() -> None:
    data = integrating_plant(3000, seed=7)
    test = integrating_plant(1000, seed=8)
    errors = {}
    for integrator, init in ((False, "random"), (True, "random"), (True, "linear")):
        config = TrainConfig(window=200, washout=20, batch_size=8, epochs=40, lr=2e-2, val_fraction=0.2, seed=0,
                             init=init)
        model = DeepWiener(1, 1, integrator=integrator, seed=0, **OPTIONS)
        fit(model, data, config)
        assert model.y_mean.item() == 0.0 or not integrator  # the scaler describes the increments
        errors[integrator, init] = float(np.sqrt(np.mean((model.simulate(test.u) - test.y) ** 2)))
    assert errors[True, "random"] < 0.5 * errors[False, "random"], errors
    assert errors[True, "linear"] < 0.2 * test.y.std(), errors
