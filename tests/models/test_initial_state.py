"""The initial state from an init window (``models.initial_state``): no leakage past the window for any kind and
method, exact recovery for the linear model, a better start than zero for nonlinear ones, the encoder trained with
the model and kept in its file, k-step-ahead prediction, and the command line."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from cli.cli_helpers import run_cli, write_csv

import deepwiener as dw
from deepwiener.evaluation import simulate_record
from deepwiener.identification import LinearStateSpace
from deepwiener.models import initial_state

WINDOW = 30


def with_encoder(model: dw.Model) -> dw.Model:
    """The model with a state encoder of random (not zero) weights, so that "encoder" states are not zero."""
    encoder = model.attach_state_encoder(WINDOW, hidden=8)
    with torch.no_grad():
        encoder.layer_out.weight.normal_(0, 0.3, generator=torch.Generator().manual_seed(1))
    return model


def record(n_u: int, n_y: int, steps: int, seed: int, dt: float = 1.0) -> dw.IOData:
    rng = np.random.default_rng(seed)
    return dw.IOData(u=rng.normal(size=(steps, n_u)), y=rng.normal(size=(steps, n_y)), dt=dt)


@pytest.mark.parametrize("kind", sorted(dw.MODEL_KINDS))
@pytest.mark.parametrize("x0", initial_state.X0_METHODS)
def test_no_leakage_past_the_init_window(kind: str, x0: str) -> None:
    model = with_encoder(dw.build_model(kind, n_u=2, n_y=1, seed=2))
    data = record(2, 1, 200, seed=3)
    noisy = dw.IOData(u=data.u, y=np.concatenate([data.y[:WINDOW], 1e3 * np.random.default_rng(4).normal(
        size=(170, 1))]), dt=1.0)
    first, second = (simulate_record(model, d, WINDOW, x0) for d in (data, noisy))
    np.testing.assert_array_equal(first, second)
    metrics = dw.evaluate(model, data, init_window=WINDOW, x0=x0)
    assert np.isfinite(metrics["rmse"])


def test_fit_recovers_the_state_of_a_linear_model_exactly() -> None:
    rng = np.random.default_rng(5)
    system = LinearStateSpace(A=[[0.9, 0.3, 0.0], [-0.3, 0.9, 0.0], [0.0, 0.0, 0.5]], B=[[1.0], [0.2], [0.7]],
                              C=[[1.0, 0.0, -0.5]], D=[[0.1]], dt=0.1, u_mean=[0.5], u_std=[2.0], y_mean=[1.0],
                              y_std=[3.0])
    model = dw.LinearModel.from_state_space(system)
    u, x_true = rng.normal(size=(300, 1)), np.array([1.5, -2.0, 0.7])
    y = system.simulate(u, x_true)
    u_t, y_t = torch.tensor(u[None, :20]), torch.tensor(y[None, :20])
    estimated = model.fit_state_vector(u_t, y_t, "auto")[0].numpy()
    np.testing.assert_allclose(estimated, x_true, rtol=0, atol=1e-8)
    np.testing.assert_allclose(model.simulate(u, y_init=y[:20], x0="fit"), y, rtol=0, atol=1e-8)


SMALL = {"deepwiener": {"d_model": 2, "d_state": 2, "n_layers": 1}, "lfr": {"n_x": 2, "n_w": 2}, "gru": {"hidden": 3}}
"""Models with few states, which a 10-sample window determines."""


@pytest.mark.parametrize("kind", sorted(SMALL))
def test_fit_starts_nonlinear_models_better_than_zero(kind: str) -> None:
    model = dw.build_model(kind, n_u=1, n_y=1, seed=6, **SMALL[kind]).double()
    u = torch.tensor(np.random.default_rng(7).normal(size=(1, 400, 1)))
    flat = initial_state.flatten_state(model.init_state(1))
    start = initial_state.unflatten_state(torch.randn(flat.shape, generator=torch.Generator().manual_seed(8),
                                                      dtype=torch.float64), model.init_state(1))
    with torch.no_grad():
        y_true = model(u, start)[0][0].numpy()
    head = 10  # states are forgotten: score the samples right after a short window, where the start still shows
    errors = {x0: np.sqrt(np.mean((model.simulate(u[0].numpy(), y_init=y_true[:head], x0=x0) - y_true)[head : 4 * head]
                                  ** 2)) for x0 in ("zero", "fit")}
    assert errors["fit"] < 0.5 * errors["zero"], errors


def test_fit_is_fast_on_a_fifty_sample_window() -> None:
    model = dw.build_model("deepwiener", n_u=1, n_y=1, seed=9, d_model=16, d_state=32, n_layers=4)
    data = record(1, 1, 1000, seed=10)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # CPU time of one thread: on a loaded machine, idle worker threads spin and count
    try:
        start = time.process_time()  # CPU time: other processes on a shared machine do not count
        model.simulate(data.u, y_init=data.y[:50], x0="fit")
        seconds = time.process_time() - start
    finally:
        torch.set_num_threads(threads)
    assert seconds < 5.0  # about 0.4 s on one core


def test_an_ensemble_fits_each_member() -> None:
    members = [dw.build_model("deepwiener", n_u=1, n_y=1, seed=s, d_model=3, d_state=2, n_layers=1) for s in (1, 2)]
    data = record(1, 1, 120, seed=11)
    ensemble = dw.Ensemble(members)
    expected = np.mean([m.simulate(data.u, y_init=data.y[:WINDOW], x0="fit") for m in members], axis=0)
    np.testing.assert_array_equal(ensemble.simulate(data.u, y_init=data.y[:WINDOW], x0="fit"), expected)


def test_encoder_trains_with_the_model_and_stays_in_its_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(12)
    u = rng.normal(size=2400)
    x = np.zeros(2400)
    for k in range(1, 2400):
        x[k] = 0.97 * x[k - 1] + 0.1 * u[k - 1]
    data = dw.IOData(u=u, y=np.tanh(2 * x) + 0.5, dt=0.01)
    model = dw.DeepWiener(1, 1, d_model=4, d_state=4, n_layers=1, seed=0)
    config = dw.TrainConfig(window=120, washout=20, epochs=4, batch_size=8, lr=1e-2, x0="encoder", x0_window=WINDOW)
    result = dw.fit(model, data, config)
    assert model.state_encoder is not None and np.isfinite(result.best_val_rmse)
    loaded = dw.load(dw.save(model, tmp_path / "m.dw"))
    for x0 in ("encoder", "fit"):
        np.testing.assert_array_equal(loaded.simulate(u[:200], y_init=data.y[:WINDOW], x0=x0),
                                      model.simulate(u[:200], y_init=data.y[:WINDOW], x0=x0))
    with pytest.raises(dw.ConfigError, match="reads init windows of 30 samples, not 20"):
        model.simulate(u[:200], y_init=data.y[:20], x0="encoder")
    with pytest.raises(dw.ConfigError, match="needs a model trained with a state encoder"):
        dw.DeepWiener(1, 1).simulate(u[:200], y_init=data.y[:20], x0="encoder")
    with pytest.raises(dw.ConfigError, match="x0_window must be an integer in \\[1, window\\)"):
        dw.TrainConfig(window=200, x0="encoder", x0_window=200)


def test_prediction_windows_and_errors() -> None:
    model = dw.build_model("linear", n_u=1, n_y=1, seed=13)
    data = dw.IOData(u=np.random.default_rng(14).normal(size=(500, 1)), y=np.zeros((500, 1)), dt=1.0)
    data = dw.IOData(u=data.u, y=model.simulate(data.u), dt=1.0)
    prediction = dw.evaluate_prediction(model, data, init_window=20, horizon=50, step=25)
    assert prediction["windows"] == (500 - 70) // 25 + 1 and len(prediction["rmse_by_step"]) == 50
    assert prediction["rmse"] < 1e-8  # the model predicts its own output
    with pytest.raises(dw.DataError, match="fewer than one window of 700"):
        dw.evaluate_prediction(model, data, init_window=200, horizon=500)
    with pytest.raises(dw.ConfigError, match="x0='fit' sets the state from the init window"):
        dw.evaluate(model, data, init_window=0, x0="fit")


def test_command_line(tmp_path: Path) -> None:
    model = dw.build_model("deepwiener", n_u=1, n_y=1, seed=15, d_model=3, d_state=2, n_layers=1, dt=0.01)
    path = dw.save(model, tmp_path / "m.dw", extra={"u_names": ["u"], "y_names": ["y"]})
    data = record(1, 1, 300, seed=16, dt=0.01)
    test = write_csv(tmp_path / "test.csv", {"u": data.u[:, 0], "y": data.y[:, 0]})
    evaluated = run_cli(["evaluate", path, "--csv", test, "--u", "u", "--y", "y", "--dt", 0.01, "--init-window",
                         WINDOW, "--x0", "fit", "--json", tmp_path / "m.json"])
    assert evaluated.code == 0, evaluated.err
    assert "the state estimated on the init window (x0 fit)" in " ".join(evaluated.out.split())
    assert json.loads((tmp_path / "m.json").read_text())["test"]["rmse"] == pytest.approx(
        dw.evaluate(model, data, WINDOW, x0="fit")["rmse"], rel=1e-6)
    head = write_csv(tmp_path / "head.csv", {"y": data.y[:WINDOW, 0]})
    simulated = run_cli(["simulate", path, "--csv", test, "--y-init", head, "--out", tmp_path / "y.csv"])
    assert simulated.code == 0, simulated.err
    y_hat = np.loadtxt(tmp_path / "y.csv", delimiter=",", skiprows=1)[:, 1]
    np.testing.assert_allclose(y_hat, model.simulate(data.u, y_init=data.y[:WINDOW], x0="fit")[:, 0], rtol=1e-6,
                               atol=1e-7)
    refused = run_cli(["simulate", path, "--csv", test, "--x0", "fit", "--out", tmp_path / "z.csv"])
    assert refused.code == 2 and "--x0 goes with --y-init" in refused.err
