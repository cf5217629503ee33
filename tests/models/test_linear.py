"""The linear model kind: identified by ``fit`` (N4SID, order chosen on validation), its two engines agree, states
carry across calls, the integrator sums the increments, and it is built untrained as a stable system."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import run_stepper

import deepwiener as dw
from deepwiener.data import IOData, ValidationRecord, output_increments, split_validation
from deepwiener.errors import ConfigError
from deepwiener.identification import identify_linear
from deepwiener.models import LinearModel
from deepwiener.training import TrainConfig, fit, validation_rmse


def wiener_data(n_u: int, n_y: int, steps: int, seed: int) -> IOData:
    """A 4th-order MIMO linear system with a mild output nonlinearity, offsets and noise."""
    rng = np.random.default_rng(seed)
    A = np.array([[0.9, 0.3, 0, 0], [-0.3, 0.9, 0, 0], [0, 0, 0.7, 0], [0, 0, 0, -0.5]])
    B, C = rng.normal(size=(4, n_u)), rng.normal(size=(n_y, 4))
    u = 1.0 + 2.0 * rng.normal(size=(steps, n_u))
    x, y = np.zeros(4), np.zeros((steps, n_y))
    for k in range(steps):
        y[k] = C @ x
        x = A @ x + B @ u[k]
    return IOData(u=u, y=3.0 + y + 0.3 * np.tanh(y) ** 2 + 0.01 * rng.normal(size=y.shape), dt=0.01)


def identified(n_u: int = 2, n_y: int = 1, **options: object) -> LinearModel:
    model = LinearModel(n_u, n_y, max_order=6, horizon=10, **options)
    fit(model, wiener_data(n_u, n_y, 1200, seed=3), TrainConfig(washout=20, val_fraction=0.25))
    return model


def test_fit_identifies_in_one_epoch_with_the_order_chosen_on_validation() -> None:
    data = wiener_data(2, 1, 1200, seed=3)
    config = TrainConfig(washout=20, val_fraction=0.25)
    calls = []
    model = LinearModel(2, 1, max_order=6, horizon=10)
    result = fit(model, data, config, on_epoch=calls.append)
    head, _ = split_validation(data, config.val_fraction)
    val = [ValidationRecord(data, len(head))]
    assert result.epochs_run == 1 and result.best_epoch == 1 and len(result.history) == 1 and len(calls) == 1
    assert result.best_val_rmse == pytest.approx(validation_rmse(model, val), rel=1e-12)
    assert 1 <= model.config.n_states <= 6 and model.dt == 0.01 and model.A.dtype == torch.float64
    assert result.stopped == f"N4SID, order {model.config.n_states}"
    reference = identify_linear([head], val, max_order=6, horizon=10)  # the same identification, by hand
    np.testing.assert_array_equal(model.simulate(data.u), reference.simulate(data.u))
    fixed = LinearModel(2, 1, n_states=3, horizon=10)
    fit(fixed, data, config)
    assert fixed.config.n_states == 3
    with pytest.raises(ConfigError, match="validation data"):
        fit(LinearModel(2, 1), data, TrainConfig(val_fraction=0.0))


def test_engines_agree_and_states_carry_across_calls() -> None:
    model = identified()
    u = torch.tensor(wiener_data(2, 1, 300, seed=4).u)[None].repeat(2, 1, 1)
    x0 = (torch.randn(2, model.config.n_states, dtype=torch.float64),)
    with torch.no_grad():
        y_loop, (x_loop,) = model(u, x0, mode="loop")
        y_blocks, (x_blocks,) = model(u, x0)
        y_head, state = model(u[:, :111], x0)
        y_tail, _ = model(u[:, 111:], state)
        y_step, _ = run_stepper(model.stepper(), u, x0)
    scale = float(y_loop.abs().max())
    for y in (y_blocks, torch.cat([y_head, y_tail], dim=1), y_step):
        torch.testing.assert_close(y, y_loop, rtol=0, atol=1e-10 * scale)
    torch.testing.assert_close(x_blocks, x_loop, rtol=1e-10, atol=1e-10)
    streamer = model.fast_stepper()
    np.testing.assert_allclose(streamer.run(u[0].numpy()), model.simulate(u[0].numpy()), rtol=0, atol=1e-10 * scale)


def test_gradients_flow_through_the_reference_engine() -> None:
    model = identified()
    u = torch.tensor(wiener_data(2, 1, 50, seed=5).u)[None]
    x0 = torch.zeros(1, model.config.n_states, dtype=torch.float64, requires_grad=True)
    y, _ = model(u, (x0,))
    y.sum().backward()
    assert x0.grad is not None and model.A.grad is not None and torch.isfinite(model.A.grad).all()


def test_integrator_sums_the_identified_increments() -> None:
    data = wiener_data(1, 1, 1500, seed=6)
    summed = IOData(u=data.u, y=np.cumsum(data.y, axis=0), dt=data.dt)
    model = LinearModel(1, 1, max_order=6, horizon=10, integrator=True)
    fit(model, summed, TrainConfig(washout=20, val_fraction=0.25))
    head, _ = split_validation(summed, 0.25)
    increments = identify_linear([output_increments(head)], [ValidationRecord(output_increments(summed), len(head))],
                                 max_order=6, horizon=10)
    np.testing.assert_allclose(model.simulate(data.u), np.cumsum(increments.simulate(data.u), axis=0), rtol=1e-12)
    with torch.no_grad():
        y, state = model(torch.tensor(data.u)[None])
    assert len(state) == 2 and state[1].shape == (1, 1)  # the state, then the integrator's sum
    np.testing.assert_allclose(y[0].numpy(), model.simulate(data.u), rtol=1e-10)


def test_untrained_model_is_a_stable_system_of_its_default_order() -> None:
    model = dw.build_model("linear", n_u=2, n_y=3, seed=4)
    assert model.config.n_states is None and model.A.shape == (model.config.max_order,) * 2
    assert np.abs(model.poles()).max() < 1
    again = dw.build_model("linear", n_u=2, n_y=3, seed=4)
    torch.testing.assert_close(model.B, again.B, rtol=0, atol=0)
    assert np.isfinite(model.simulate(np.random.default_rng(0).normal(size=(500, 2)))).all()


def test_file_round_trip_keeps_order_scaler_and_integrator(tmp_path) -> None:
    model = identified(integrator=True)
    path = dw.save(model, tmp_path / "linear.dw")
    loaded = dw.load(path)
    assert loaded.config == model.config and loaded.A.dtype == torch.float64
    u = wiener_data(2, 1, 200, seed=7).u
    np.testing.assert_array_equal(loaded.simulate(u), model.simulate(u))


def test_bad_options() -> None:
    with pytest.raises(ConfigError, match="horizon must be >= 2"):
        LinearModel(1, 1, horizon=1)
    with pytest.raises(ConfigError, match="n_states must be a positive integer"):
        LinearModel(1, 1, n_states=0)
    with pytest.raises(ConfigError, match="n_u=1, n_y=1; the model has n_u=2"):
        LinearModel(2, 1).load_state_space(identified(1, 1).state_space())
