"""Static maps: the identity map makes a linear model; the linear_tanh map's bounded deviation, its Lipschitz
bound, and the stack it builds; every map's slope sector holds the slopes it has."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from deepwiener.models import DeepWiener
from deepwiener.nonlinearities import MLP, NONLINEARITIES, Elementwise, LinearTanh, make_nonlinearity


def _linear_tanh(gain: list[float], bias: list[float]) -> LinearTanh:
    sigma = make_nonlinearity("linear_tanh", len(gain)).double()
    assert isinstance(sigma, LinearTanh)
    with torch.no_grad():
        sigma.gain.copy_(torch.tensor(gain))
        sigma.bias.copy_(torch.tensor(bias))
    return sigma


def test_linear_tanh_starts_as_the_identity_and_deviates_by_at_most_its_gain() -> None:
    eta = torch.linspace(-50, 50, 1001, dtype=torch.float64)[:, None].repeat(1, 3)
    fresh = make_nonlinearity("linear_tanh", 3).double()
    torch.testing.assert_close(fresh(eta), eta)  # gain 0 and bias 0 at start
    sigma = _linear_tanh([0.7, -2.5, 0.0], [0.3, -0.1, 0.2])
    z = eta + sigma.bias
    with torch.no_grad():
        deviation = (sigma(eta) - z).abs()
    assert (deviation <= sigma.gain.abs() + 1e-12).all()
    # far out the deviation is the gain itself (tanh saturates)
    np.testing.assert_allclose(deviation[-1].numpy(), [0.7, 2.5, 0.0], atol=1e-12)


@pytest.mark.parametrize(("gain", "expected"), [([0.5, -0.5], 1.5), ([-3.0, 0.2], 2.0), ([-1.5, -0.5], 1.0)])
def test_linear_tanh_lipschitz_bound_is_tight(gain: list[float], expected: float) -> None:
    sigma = _linear_tanh(gain, [0.0, 0.0])
    assert sigma.lipschitz() == pytest.approx(expected)
    eta = torch.linspace(-6, 6, 20001, dtype=torch.float64)[:, None].repeat(1, 2)
    with torch.no_grad():
        slopes = (torch.diff(sigma(eta), dim=0) / torch.diff(eta, dim=0)).abs().max()
    assert float(slopes) <= sigma.lipschitz() + 1e-9
    assert float(slopes) >= sigma.lipschitz() - 1e-3


def test_linear_tanh_stack_is_its_linear_part_plus_a_bounded_deviation() -> None:
    """Scaling the input up scales the linear part; the rest stays bounded (linear extrapolation)."""
    model = DeepWiener(1, 1, d_model=4, d_state=4, n_layers=3, nonlinearity="linear_tanh", seed=2).double()
    linear = DeepWiener(1, 1, d_model=4, d_state=4, n_layers=3, nonlinearity="linear_tanh", seed=2).double()
    with torch.no_grad():
        for block in model.blocks:
            block.sigma.gain.copy_(torch.tensor([0.8, -0.6, 1.2, -0.3]))
    u = np.random.default_rng(0).standard_normal((400, 1))
    deviations = [np.abs(model.simulate(scale * u) - linear.simulate(scale * u)).max() for scale in (1, 10, 100, 1000)]
    linear_size = np.abs(linear.simulate(1000 * u)).max()
    assert deviations[0] > 0.01  # the maps do act
    assert max(deviations) < 20 * deviations[0]  # bounded as the input grows 1000-fold
    assert max(deviations) < 1e-2 * linear_size


def test_identity_map_makes_the_whole_model_linear() -> None:
    """Superposition (about the response to u = 0, which carries the biases) holds for identity maps only."""
    rng = np.random.default_rng(1)
    u1, u2 = rng.standard_normal((2, 300, 2))
    for nonlinearity, linear in (("identity", True), ("gelu", False)):
        model = DeepWiener(2, 1, d_model=5, d_state=4, n_layers=3, nonlinearity=nonlinearity, seed=0).double()
        with torch.no_grad():
            for block in model.blocks:
                block.sigma.bias.normal_()
        y0 = model.simulate(np.zeros_like(u1))
        lhs = model.simulate(2 * u1 - 3 * u2) - y0
        rhs = 2 * (model.simulate(u1) - y0) - 3 * (model.simulate(u2) - y0)
        gap = np.abs(lhs - rhs).max() / np.abs(rhs).max()
        assert (gap < 1e-10) == linear, (nonlinearity, gap)


def _assert_slopes_span(slopes: torch.Tensor, low: float, high: float) -> None:
    """Finite-difference slopes (n,) lie in [low, high] (up to the difference's error) and come close to both ends
    (the bounds are tight)."""
    assert low - 1e-3 <= float(slopes.min()) <= low + 2e-2 and high - 2e-2 <= float(slopes.max()) <= high + 1e-3


@pytest.mark.parametrize("name", NONLINEARITIES)
def test_every_slope_sector_holds_the_slopes_of_its_map(name: str) -> None:
    """Each map is its sector's form, outer @ s(inner @ (eta + b) + c) + d, and every s_i's slopes lie in the
    sector's [low_i, high_i]; poly and glu have no sector."""
    sigma = make_nonlinearity(name, 3).double()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in sigma.parameters():
            param.copy_(torch.randn(param.shape, generator=generator, dtype=torch.float64))
        sector = sigma.slope_sector()
        if name in ("poly", "glu"):
            assert sector is None
            return
        z = torch.linspace(-8, 8, 4001, dtype=torch.float64)
        if sector.inner is None:  # elementwise: s_i is the map's channel i
            for i in range(3):
                eta = torch.zeros(len(z), 3, dtype=torch.float64)
                eta[:, i] = z - sigma.bias[i]
                _assert_slopes_span(torch.diff(sigma(eta)[:, i]) / torch.diff(z), float(sector.low[i]),
                                    float(sector.high[i]))
            return
        assert isinstance(sigma, MLP)  # the perceptron: its hidden gelu units between its weights
        eta = torch.randn(50, 3, generator=generator, dtype=torch.float64)
        hidden = nn.functional.gelu((eta + sigma.bias) @ sector.inner.T + sigma.hidden.bias)
        torch.testing.assert_close(sigma(eta), hidden @ sector.outer.T + sigma.out.bias)
        slopes = torch.diff(nn.functional.gelu(z)) / torch.diff(z)
        for low, high in zip(sector.low.tolist(), sector.high.tolist(), strict=True):
            _assert_slopes_span(slopes, low, high)


def test_an_activation_of_unknown_slopes_has_no_sector() -> None:
    assert Elementwise(2, nn.Sigmoid(), 0.25).slope_sector() is None
    assert Elementwise(2, nn.GELU(approximate="tanh"), 1.13).slope_sector() is None
    wide = Elementwise(2, nn.ELU(alpha=2.0), 2.0).slope_sector()
    assert wide is not None and wide.high.tolist() == [2.0, 2.0] and wide.low.tolist() == [0.0, 0.0]
