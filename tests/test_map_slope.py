"""The maps' slope penalty (issue 21, item 3): its value on maps of known slope, its effect in training, its errors."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from test_training import wiener_data

from deepwiener.errors import ConfigError
from deepwiener.map_slope import map_slope_penalty, recorded_map_inputs, static_maps
from deepwiener.models import MODEL_KINDS, DeepWiener
from deepwiener.nonlinearities import make_nonlinearity
from deepwiener.training import TrainConfig, fit

CONFIG = TrainConfig(window=100, washout=10, batch_size=8, epochs=4, lr=1e-2, patience=None, val_fraction=0,
                     mode="scan")


def penalty_of(name: str, eta: torch.Tensor, reach: float = 2.0, **params: float) -> float:
    """The penalty of one map ``name`` (width eta.shape[-1]) with the given parameters, on recorded inputs eta."""
    phi = make_nonlinearity(name, eta.shape[-1]).double()
    with torch.no_grad():
        for key, value in params.items():
            getattr(phi, key).fill_(value)
    torch.manual_seed(0)
    return float(map_slope_penalty({phi: [eta]}, reach).detach())


def test_a_linear_map_has_slope_one_in_every_direction() -> None:
    eta = torch.randn(4, 50, 3, dtype=torch.float64)
    assert penalty_of("identity", eta) == pytest.approx(1.0, rel=1e-9)
    assert penalty_of("poly", eta, a3=0.0, a2=0.0) == pytest.approx(1.0, rel=1e-9)


def test_a_cubic_map_is_penalised_more_the_farther_the_reach() -> None:
    eta = torch.randn(4, 50, 1, dtype=torch.float64)
    # z + z^3 has slope 1 + 3 z^2: mean over z = s eta, s ~ U(0, r), of (1 + 3 z^2)^2 grows like r^4
    values = [penalty_of("poly", eta, reach, a3=1.0, a2=0.0) for reach in (1.0, 2.0, 4.0)]
    assert 1.5 < values[0] < values[1] < values[2]
    assert values[2] > 50 * values[0]


def test_the_penalty_matches_the_derivative_of_an_elementwise_map() -> None:
    eta = torch.randn(2, 40, 1, dtype=torch.float64)  # one channel: the direction is +-1, the slope tanh'(z)^2
    phi = make_nonlinearity("tanh", 1).double()
    torch.manual_seed(3)
    value = float(map_slope_penalty({phi: [eta]}, 1.5).detach())
    torch.manual_seed(3)  # the same draws as the penalty: points, then scales
    pick = torch.randint(eta.reshape(-1, 1).shape[0], (80,))
    z = eta.reshape(-1, 1)[pick] * torch.rand(80, 1, dtype=torch.float64) * 1.5
    assert value == pytest.approx(float((1 - torch.tanh(z) ** 2).pow(2).mean()), rel=1e-3)


def test_recording_sees_every_map_once_per_call_and_leaves_no_hook() -> None:
    model = DeepWiener(1, 1, d_model=3, d_state=2, n_layers=2).double()
    with recorded_map_inputs(model) as seen:
        model(torch.randn(2, 30, 1, dtype=torch.float64), mode="scan")
    assert len(seen) == 2 and all(len(calls) == 1 and calls[0].shape == (2, 30, 3) for calls in seen.values())
    assert all(not phi._forward_pre_hooks for phi in static_maps(model))


def test_training_with_the_penalty_lowers_the_maps_slopes_on_and_beyond_the_data() -> None:
    data = wiener_data(800)
    slopes = []
    for weight in (0.0, 1.0):
        model = DeepWiener(1, 1, d_model=4, d_state=4, n_layers=1, nonlinearity="mlp", seed=0)
        fit(model, data, dataclasses.replace(CONFIG, map_slope=weight, map_slope_reach=3.0, epochs=15))
        with recorded_map_inputs(model) as seen, torch.no_grad():
            model(torch.tensor(data.u, dtype=torch.float32)[None], mode="scan")
        eta = next(iter(seen.values()))[0].reshape(-1, 4)
        probe = eta[::20] * torch.linspace(0, 3, len(eta[::20]))[:, None]  # up to 3x the inputs seen
        phi = static_maps(model)[0]
        slopes.append(sum(float(torch.autograd.functional.jacobian(phi, p).pow(2).sum()) for p in probe))
    assert slopes[1] < 0.5 * slopes[0], slopes


def test_the_penalty_is_off_by_default_and_bad_weights_are_config_errors() -> None:
    assert TrainConfig().map_slope == 0
    for value in (-1.0, float("nan"), True):
        with pytest.raises(ConfigError, match="map_slope must be a finite number >= 0"):
            TrainConfig(map_slope=value)
    for value in (0.0, -2.0, float("inf")):
        with pytest.raises(ConfigError, match="map_slope_reach must be a finite number > 0"):
            TrainConfig(map_slope_reach=value)


def test_a_fused_engine_or_a_model_without_maps_is_refused_clearly() -> None:
    data = wiener_data(400)
    with pytest.raises(ConfigError, match="no static map ran as a module"):
        fit(DeepWiener(1, 1, d_model=2, d_state=2, n_layers=1), data,
            dataclasses.replace(CONFIG, mode="fused", map_slope=1.0, epochs=1))
    linear = MODEL_KINDS["linear"].from_config(MODEL_KINDS["linear"].config_class(n_u=1, n_y=1, dt=0.01))
    with pytest.raises(ConfigError, match="without static maps cannot be trained with map_slope"):
        fit(linear, data, dataclasses.replace(CONFIG, map_slope=1.0))
