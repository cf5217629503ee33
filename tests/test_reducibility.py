"""Training for reducibility (issue 23): the modal l1 and Hankel nuclear-norm penalties, and fine-tuning after a
truncation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from test_training import wiener_data

from deepwiener.analysis import blocks, reduce
from deepwiener.errors import ConfigError
from deepwiener.models import MODEL_KINDS, DeepWiener
from deepwiener.systems import DiagonalSSM
from deepwiener.training import TrainConfig, fine_tune, fit, reducibility_penalty, split_training, validation_rmse


def diagonal(r: torch.Tensor, theta: torch.Tensor, B: torch.Tensor, C: torch.Tensor, readout: str) -> DiagonalSSM:
    """A diagonal system from real parameters: poles r e^{i theta}; B (n, 2 d_in) and C (d_out, 2n) hold the real
    and imaginary parts side by side."""
    n = r.shape[0]
    lam = torch.polar(r, theta)
    return DiagonalSSM(lam, torch.complex(B[:, : B.shape[1] // 2], B[:, B.shape[1] // 2 :]),
                       torch.complex(C[:, :n], C[:, n:]), torch.zeros(C.shape[0], B.shape[1] // 2,
                                                                      dtype=torch.float64), readout)


@pytest.mark.parametrize("readout", ["next", "current"])
@pytest.mark.parametrize("penalty", ["mode_weights", "hankel_singular_values"])
def test_penalty_gradients_match_finite_differences(readout: str, penalty: str) -> None:
    gen = torch.Generator().manual_seed(1)
    n, d_in, d_out = 3, 2, 2
    inputs = (0.3 + 0.6 * torch.rand(n, generator=gen, dtype=torch.float64),
              torch.pi * torch.rand(n, generator=gen, dtype=torch.float64),
              torch.randn(n, 2 * d_in, generator=gen, dtype=torch.float64),
              torch.randn(d_out, 2 * n, generator=gen, dtype=torch.float64))
    inputs = tuple(t.requires_grad_() for t in inputs)

    def total(*args: torch.Tensor) -> torch.Tensor:
        return getattr(diagonal(*args, readout), penalty)().sum()

    assert torch.autograd.gradcheck(total, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("layer", ["lru", "s5", "s4d", "s4"])
def test_training_penalty_gradient_through_the_layers_matches_finite_differences(layer: str) -> None:
    model = DeepWiener(n_u=1, n_y=1, layer=layer, d_model=2, d_state=3, n_layers=2, seed=3).double()
    config = TrainConfig(modal_l1=0.3, hankel_nuclear=0.7)
    params = [p for p in model.parameters() if p.requires_grad]
    penalty = reducibility_penalty(model, config)
    grads = torch.autograd.grad(penalty, params, allow_unused=True)
    gen = torch.Generator().manual_seed(0)
    direction = [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params]
    analytic = sum(float((g * d).sum()) for g, d in zip(grads, direction, strict=True) if g is not None)
    eps = 1e-6
    with torch.no_grad():
        values = []
        for sign in (1, -1):
            for p, d in zip(params, direction, strict=True):
                p.add_(sign * eps * d)
            values.append(float(reducibility_penalty(model, config).detach()))
            for p, d in zip(params, direction, strict=True):
                p.sub_(sign * eps * d)
    assert analytic == pytest.approx((values[0] - values[1]) / (2 * eps), rel=1e-5, abs=1e-8)


@pytest.mark.parametrize("layer", ["lru", "s5", "s4d", "s4"])
@pytest.mark.parametrize("readout", ["next", "current"])
def test_hankel_penalty_is_the_sum_of_the_hsvs_analysis_reports(layer: str, readout: str) -> None:
    model = DeepWiener(n_u=1, n_y=1, layer=layer, d_model=3, d_state=4, n_layers=2, seed=1,
                       layer_options={"readout": readout}).double()
    reported = sum(float(np.sum(b.hankel_singular_values())) for b in blocks(model))
    penalty = float(reducibility_penalty(model, TrainConfig(hankel_nuclear=1.0)).detach())
    assert penalty == pytest.approx(reported, rel=1e-7)
    for block, system in zip(blocks(model), model.blocks, strict=True):
        ours = system.lti.discretize().modal()[0].hankel_singular_values().detach().numpy()
        np.testing.assert_allclose(ours, block.hankel_singular_values(), rtol=1e-6, atol=1e-9 * ours[0])


def test_hankel_penalty_of_a_model_with_inert_padding_modes() -> None:
    """A balanced truncation pads with inert modes (B = C = 0): their Gramians are singular, the values still
    match analysis."""
    model = DeepWiener(n_u=1, n_y=1, layer="lru", d_model=2, d_state=4, n_layers=1, seed=0).double()
    reduced = reduce(model, order=3).model
    system = reduced.blocks[0].lti.discretize()
    reported = blocks(reduced)[0].hankel_singular_values()
    ours = system.hankel_singular_values().detach().numpy()
    assert ours.sum() == pytest.approx(reported.sum(), rel=1e-6)
    modal = reducibility_penalty(reduced, TrainConfig(modal_l1=1.0)).detach()
    assert float(modal) == pytest.approx(float(system.mode_weights().sum().detach()))


def test_modal_penalty_is_the_sum_of_the_weights_modal_truncation_ranks_by() -> None:
    model = DeepWiener(n_u=1, n_y=1, layer="lru", d_model=3, d_state=5, n_layers=1, seed=2).double()
    system = model.blocks[0].lti.discretize()
    lam, B, C = (t.detach().numpy() for t in (system.lam, system.B, system.C))
    expected = np.linalg.norm(C, axis=0) * np.linalg.norm(B, axis=1) / (1 - np.abs(lam))
    np.testing.assert_allclose(system.mode_weights().detach().numpy(), expected, rtol=1e-12)
    # the two modes with the largest weights are the ones modal truncation keeps
    kept = reduce(model, order=2, method="modal").model.blocks[0].lti.discretize().lam.detach().numpy()
    np.testing.assert_allclose(np.sort_complex(kept), np.sort_complex(lam[np.argsort(expected)[-2:]]), rtol=1e-6)


@pytest.mark.parametrize("name", ["modal_l1", "hankel_nuclear"])
@pytest.mark.parametrize("value", [-1e-3, float("nan"), float("inf"), True, "0.1"])
def test_bad_penalty_weights_are_config_errors(name: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"{name} must be a finite number >= 0"):
        TrainConfig(**{name: value})


def test_penalties_are_off_by_default() -> None:
    config = TrainConfig()
    assert config.modal_l1 == 0 and config.hankel_nuclear == 0
    assert reducibility_penalty(DeepWiener(n_u=1, n_y=1, d_model=2, d_state=2, n_layers=1), config) is None


def test_the_hankel_penalty_makes_training_shrink_the_hsvs() -> None:
    data = wiener_data(800)
    config = TrainConfig(window=100, washout=10, batch_size=8, epochs=4, lr=1e-2, patience=None, val_fraction=0)
    sums = []
    for weight in (0.0, 0.05):
        model = DeepWiener(1, 1, d_model=4, d_state=4, n_layers=1, seed=0)
        fit(model, data, dataclasses.replace(config, hankel_nuclear=weight))
        sums.append(float(reducibility_penalty(model, TrainConfig(hankel_nuclear=1.0)).detach()))
    assert sums[1] < 0.9 * sums[0]


def test_a_model_without_lti_layers_cannot_be_penalised() -> None:
    model = MODEL_KINDS["gru"].from_config(MODEL_KINDS["gru"].config_class(n_u=1, n_y=1, dt=0.01))
    with pytest.raises(ConfigError, match="without LTI layers cannot be trained with modal_l1"):
        fit(model, wiener_data(400), TrainConfig(window=100, washout=10, epochs=1, modal_l1=1.0))


CONFIG = TrainConfig(window=100, washout=10, batch_size=8, epochs=6, lr=1e-2, patience=None)


@pytest.fixture(scope="module")
def truncated() -> tuple[DeepWiener, list]:
    """A small model trained briefly, truncated to one mode per block, and the validation records of its data."""
    data = wiener_data()
    model = DeepWiener(1, 1, d_model=4, d_state=4, n_layers=2, seed=0)
    fit(model, data, CONFIG)
    return reduce(model, order=1).model, [data]


@pytest.mark.parametrize("lr_factor", [0.1, 1.0])
def test_fine_tuning_never_raises_the_validation_error_of_the_truncated_model(
        truncated: tuple[DeepWiener, list], lr_factor: float) -> None:
    start_model, data = truncated
    config = dataclasses.replace(CONFIG, lr=1.0 if lr_factor == 1.0 else CONFIG.lr, grad_clip=None)
    model = DeepWiener.from_config(start_model.config)
    model.load_state_dict(start_model.state_dict())
    _, val_parts = split_training(data, None, config)
    before = validation_rmse(model, val_parts, config.mode)
    result = fine_tune(model, data, config, 0.2, lr_factor=lr_factor)
    after = validation_rmse(model, val_parts, config.mode)
    assert result.start_val_rmse == pytest.approx(before)
    assert after <= before * (1 + 1e-6) and after == pytest.approx(result.fit.best_val_rmse, rel=1e-6)
    assert result.config.lr == pytest.approx(config.lr * lr_factor) and result.config.init == "random"
    if result.fit.best_epoch == 0:  # no epoch validated better: the truncated model itself comes back
        for a, b in zip(model.parameters(), start_model.parameters(), strict=True):
            torch.testing.assert_close(a, b)


def test_fine_tuning_at_a_huge_learning_rate_keeps_the_truncated_model(truncated: tuple[DeepWiener, list]) -> None:
    start_model, data = truncated
    model = DeepWiener.from_config(start_model.config)
    model.load_state_dict(start_model.state_dict())
    # at this rate every epoch validates worse than the start (0.61): 1.07 and 5.27
    result = fine_tune(model, data, dataclasses.replace(CONFIG, lr=1.0, grad_clip=None, epochs=2), 0.2,
                       lr_factor=1.0)
    assert result.fit.epochs_run == 2 and min(h["val_rmse"] for h in result.fit.history) > result.start_val_rmse
    assert result.fit.best_epoch == 0
    for a, b in zip(model.parameters(), start_model.parameters(), strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize(("changes", "kwargs", "message"), [
    ({"val_fraction": 0.0}, {}, "fine-tuning needs validation data"),
    ({"x0": "encoder"}, {}, "fine-tuning supports x0='zero'"),
    ({}, {"minutes": 0}, "fine-tuning minutes must be a positive number"),
    ({}, {"lr_factor": 2.0}, "lr_factor must be in \\(0, 1\\]"),
])
def test_fine_tuning_bad_input(truncated: tuple[DeepWiener, list], changes: dict, kwargs: dict, message: str) -> None:
    model, data = truncated
    options = {"minutes": 0.1, **kwargs}
    with pytest.raises(ConfigError, match=message):
        fine_tune(model, data, dataclasses.replace(CONFIG, **changes), options.pop("minutes"), **options)
