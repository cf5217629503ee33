"""Linear initialisation of deep Wiener models: the model reproduces the identified linear model exactly, fit starts
from it, and the combinations it cannot handle are refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepwiener.data import IOData, ValidationRecord, fit_scaler, split_validation
from deepwiener.errors import ConfigError
from deepwiener.identification import identify_linear
from deepwiener.models import DeepWiener, LinearModel
from deepwiener.models.deepwiener_start import check_linear_init, embed_linear
from deepwiener.models.rnn import RNNModel
from deepwiener.training import TrainConfig, fit, validation_rmse


def wiener_data(n_u: int, n_y: int, steps: int, seed: int) -> IOData:
    """A 4th-order MIMO linear system (a resonance, a real and a negative real pole) with a mild output
    nonlinearity, offsets and noise."""
    rng = np.random.default_rng(seed)
    A = np.array([[0.9, 0.3, 0, 0], [-0.3, 0.9, 0, 0], [0, 0, 0.7, 0], [0, 0, 0, -0.5]])
    B, C = rng.normal(size=(4, n_u)), rng.normal(size=(n_y, 4))
    D = 0.3 * rng.normal(size=(n_y, n_u))
    u = 1.0 + 2.0 * rng.normal(size=(steps, n_u))
    x, y = np.zeros(4), np.zeros((steps, n_y))
    for k in range(steps):
        y[k] = C @ x + D @ u[k]
        x = A @ x + B @ u[k]
    return IOData(u=u, y=3.0 + y + 0.3 * np.tanh(y) ** 2 + 0.01 * rng.normal(size=y.shape), dt=0.01)


def split(data: IOData, fraction: float) -> tuple[list[IOData], list[ValidationRecord]]:
    """``fit``'s split of one record: the training head, and the whole record scored on its tail."""
    head, _ = split_validation(data, fraction)
    return [head], [ValidationRecord(data, len(head))]


@pytest.mark.parametrize(
    ("layer", "n_u", "n_y", "nonlinearity", "skip", "readout"),
    [
        ("lru", 1, 1, "gelu", "identity", "next"),
        ("lru", 2, 2, "mlp", "linear", "current"),
        ("lru", 2, 1, "relu", "identity", "next"),
        ("s5", 1, 1, "poly", "identity", "current"),
        ("lru", 2, 1, "linear_tanh", "linear", "next"),
        ("s5", 1, 2, "identity", "identity", "next"),
        ("s5", 2, 2, "glu", "identity", "next"),
        ("s5", 2, 1, "gelu", "linear", "next"),
    ],
)
def test_linear_init_reproduces_the_linear_model(layer: str, n_u: int, n_y: int, nonlinearity: str, skip: str,
                                                  readout: str) -> None:
    train, val = split(wiener_data(n_u, n_y, 1000, seed=0), 0.25)
    model = DeepWiener(n_u, n_y, layer=layer, d_model=7, d_state=5, n_layers=3, nonlinearity=nonlinearity,
                       skip=skip, layer_options={"readout": readout}, dropout=0.1, seed=1).double()
    model.set_scaler(*fit_scaler(train))
    before = {name: p.clone() for name, p in model.named_parameters()}
    linear = model.start_linear(train, val)
    u = wiener_data(n_u, n_y, 600, seed=1).u
    y_model, y_linear = model.simulate(u), linear.simulate(u)
    assert np.linalg.norm(y_model - y_linear) <= 1e-8 * np.linalg.norm(y_linear)
    # streaming gives the same output (dropout off in evaluation)
    stepper, u_t = model.eval().stepper(), torch.tensor(u[:50])
    state, outs = stepper.init_state(1), []
    with torch.no_grad():
        for k in range(50):
            y_k, state = stepper.step(u_t[k : k + 1], state)
            outs.append(y_k[0].numpy())
    np.testing.assert_allclose(np.array(outs), y_linear[:50], rtol=1e-8, atol=1e-8)
    # the free channels keep their random initialisation (row d_model - 1 is neither input nor carrying)
    for name in ("encoder.weight", "blocks.1.lti.B_re", "blocks.2.lti.C_re"):
        torch.testing.assert_close(model.get_parameter(name)[-1], before[name][-1], rtol=0, atol=0)


def test_linear_init_in_float32_is_close() -> None:
    train, val = split(wiener_data(1, 1, 1000, seed=0), 0.25)
    model = DeepWiener(1, 1, d_model=4, d_state=4, n_layers=2)
    model.set_scaler(*fit_scaler(train))
    linear = model.start_linear(train, val)
    u = train[0].u
    assert np.linalg.norm(model.simulate(u) - linear.simulate(u)) <= 1e-5 * np.linalg.norm(linear.simulate(u))


def wiener_hammerstein(steps: int, seed: int) -> IOData:
    """A resonance, a saturation and a first-order filter: the best linear model leaves a clear error."""
    rng = np.random.default_rng(seed)
    u, x, z = rng.normal(size=steps), np.zeros(steps), np.zeros(steps)
    for k in range(2, steps):
        x[k] = 1.6 * x[k - 1] - 0.8 * x[k - 2] + 0.3 * u[k - 1]
    w = 2.0 * np.tanh(0.5 * x)
    for k in range(1, steps):
        z[k] = 0.7 * z[k - 1] + w[k - 1]
    return IOData(u=u, y=z + 0.01 * rng.normal(size=steps), dt=0.01)


def test_fit_with_linear_init_starts_as_good_as_the_linear_model() -> None:
    data = wiener_hammerstein(3000, seed=0)
    config = TrainConfig(window=128, washout=20, batch_size=16, epochs=1, lr=1e-3, val_fraction=0.25, seed=0)
    _, val = split(data, config.val_fraction)
    linear = LinearModel(1, 1)
    fit(linear, data, config)
    linear_rmse = validation_rmse(linear, val)
    result = fit(DeepWiener(1, 1, d_model=6, d_state=4, n_layers=2, seed=0), data,
                 TrainConfig(**{**config.to_dict(), "init": "linear"}))
    assert result.history[0]["val_rmse"] <= 1.03 * linear_rmse  # Adam's first steps (about lr each) cost a little
    random = fit(DeepWiener(1, 1, d_model=6, d_state=4, n_layers=2, seed=0), data, config)
    assert result.history[0]["val_rmse"] < 0.5 * random.history[0]["val_rmse"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"layer": "s4d"}, "layer 's4d'"),
        ({"layer": "s4"}, "layer 's4'"),
        ({"layer": "s6"}, "layer 's6'"),
        ({"skip": "none"}, "skip 'none'"),
        ({"norm": "layer"}, "norm 'layer'"),
        ({"nonlinearity": "tanh"}, "nonlinearity 'tanh'"),
        ({"nonlinearity": "elu"}, "nonlinearity 'elu'"),
        ({"d_model": 2}, "d_model 2"),
    ],
)
def test_unsupported_models_are_refused(options: dict, message: str) -> None:
    model = DeepWiener(1, 1, **{"d_model": 4, "d_state": 4, "n_layers": 2, **options})
    with pytest.raises(ConfigError, match=f"init='linear' is not possible with .*{message}"):
        check_linear_init(model)
    with pytest.raises(ConfigError, match=message):  # fit refuses before identifying anything
        fit(model, wiener_data(1, 1, 600, seed=0), TrainConfig(window=64, washout=10, epochs=1, init="linear"))


def test_other_refusals() -> None:
    data = wiener_data(1, 1, 600, seed=0)
    with pytest.raises(ConfigError, match="init='linear' is not available for model kind 'rnn'"):
        fit(RNNModel(1, 1, hidden=4), data, TrainConfig(window=64, washout=10, epochs=1, init="linear"))
    with pytest.raises(ConfigError, match="unknown init 'linaer'"):
        TrainConfig(init="linaer")
    with pytest.raises(ConfigError, match="validation data"):
        fit(DeepWiener(1, 1, d_model=4, d_state=4), data,
            TrainConfig(window=64, washout=10, epochs=1, init="linear", val_fraction=0.0))
    train, val = split(data, 0.25)
    linear = identify_linear(train, val, max_order=6, horizon=10)
    with pytest.raises(ConfigError, match="n_u=1, n_y=1; the model has n_u=2"):
        embed_linear(DeepWiener(2, 1, d_model=5, d_state=4), linear)
    if linear.n_states > 1:
        with pytest.raises(ConfigError, match="complex modes; d_state is 1"):
            embed_linear(DeepWiener(1, 1, d_model=4, d_state=1), linear)
