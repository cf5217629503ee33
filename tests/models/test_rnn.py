"""RNN baselines: forward, simulate and streaming agree; fit trains them; seeds; config; physical units."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import run_stepper

from deepwiener.data import IOData, fit_scaler, split_validation
from deepwiener.errors import ConfigError, DataError
from deepwiener.evaluation import evaluate
from deepwiener.models.rnn import CELLS, RNNConfig, RNNModel
from deepwiener.training import TrainConfig, ValidationRecord, fit, validation_rmse


@pytest.mark.parametrize("cell", CELLS)
def test_forward_simulate_and_stepper_agree(cell: str) -> None:
    model = RNNModel(2, 3, cell=cell, hidden=5, n_layers=2, seed=1).double()
    model.set_scaler([0.5, -1.0], [2.0, 0.5], [1.0, 2.0, 3.0], [0.1, 1.0, 10.0])
    u = torch.randn(2, 30, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y, state = model(u)
    assert y.shape == (2, 30, 3)
    assert [s.shape for s in state] == [(2, 2, 5)] * (2 if cell == "lstm" else 1)
    np.testing.assert_allclose(model.simulate(u[0].numpy()), y[0].detach().numpy(), rtol=1e-12, atol=1e-12)
    stepper = model.stepper()
    streamed, x = run_stepper(stepper, u, stepper.init_state(2))
    torch.testing.assert_close(streamed, y, rtol=1e-12, atol=1e-12)
    for a, b in zip(x, state, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    y1, x1 = model(u[:, :11])
    y2, _ = model(u[:, 11:], x1)
    torch.testing.assert_close(torch.cat([y1, y2], dim=1), y)


def test_simulate_uses_physical_units() -> None:
    model = RNNModel(1, 1, cell="gru", hidden=4)
    u = np.random.default_rng(0).normal(size=(50, 1))
    y0 = model.simulate(u)
    model.set_scaler([1.0], [2.0], [10.0], [3.0])
    np.testing.assert_allclose(model.simulate(1.0 + 2.0 * u), 10.0 + 3.0 * y0, rtol=1e-5, atol=1e-5)
    with pytest.raises(DataError, match="n_u=1"):
        model.simulate(np.zeros((10, 2)))


def _wiener_data(steps: int, seed: int) -> IOData:
    """A first-order linear system followed by tanh, plus a direct term."""
    rng = np.random.default_rng(seed)
    u = rng.normal(size=steps)
    x = np.zeros(steps)
    for k in range(1, steps):
        x[k] = 0.8 * x[k - 1] + 0.5 * u[k - 1]
    return IOData(u=u, y=np.tanh(x) + 0.1 * u, dt=0.01)


@pytest.mark.parametrize("cell", CELLS)
def test_fit_lowers_validation_error(cell: str) -> None:
    data = _wiener_data(1000, seed=0)
    config = TrainConfig(window=64, washout=10, stride=16, batch_size=8, epochs=4, patience=None, lr=2e-2,
                         schedule="constant", val_fraction=0.2)
    model = RNNModel(1, 1, cell=cell, hidden=16, seed=0)
    train, val = split_validation(data, config.val_fraction)
    model.set_scaler(*fit_scaler(train))
    untrained = validation_rmse(model, [ValidationRecord(data, len(train))], config.mode)
    result = fit(model, data, config)
    assert result.best_val_rmse < 0.5 * untrained
    assert model.dt == 0.01
    metrics = evaluate(model, data, init_window=len(train))  # the held-out tail, state warmed by the head
    assert metrics["rmse"] == pytest.approx(result.best_val_rmse, rel=1e-4)


def test_same_seed_same_parameters_and_rng_untouched() -> None:
    rng_state = torch.get_rng_state()
    a, b = RNNModel(1, 1, seed=5), RNNModel(1, 1, seed=5)
    c = RNNModel(1, 1, seed=6)
    assert torch.equal(rng_state, torch.get_rng_state())
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters(), strict=True))


def test_config_round_trip_and_interface() -> None:
    model = RNNModel(2, 1, cell="gru", hidden=8, n_layers=2, seed=3)
    model.with_dt(0.5)
    assert model.dt == 0.5 and model.config.kind == "rnn"
    rebuilt = RNNModel.from_config(RNNConfig.from_dict(model.config.to_dict()))
    assert rebuilt.config == model.config
    for p, q in zip(model.parameters(), rebuilt.parameters(), strict=True):
        assert torch.equal(p, q)
    gru = 3 * (8 * 2 + 8 * 8 + 2 * 8) + 3 * (8 * 8 + 8 * 8 + 2 * 8)
    assert model.n_parameters == gru + 8 + 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"cell": "lstn"}, "did you mean 'lstm'"),
        ({"hidden": 0}, "hidden"),
        ({"n_layers": True}, "n_layers"),
        ({"dt": -1.0}, "dt"),
    ],
)
def test_config_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        RNNModel(1, 1, **kwargs)


def test_from_dict_rejects_unknown_keys() -> None:
    with pytest.raises(ConfigError, match="unknown RNNConfig option"):
        RNNConfig.from_dict({"n_u": 1, "n_y": 1, "hiden": 4})
