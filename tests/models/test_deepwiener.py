"""The DeepWiener stack: engines agree end to end, streaming equals batch, seeds, config errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import LAYER_NAMES, run_stepper

from deepwiener.errors import ConfigError, DataError
from deepwiener.models import DeepWiener, ModelConfig
from deepwiener.nonlinearities import NONLINEARITIES


@pytest.mark.parametrize("layer", LAYER_NAMES)
@pytest.mark.parametrize("nonlinearity", sorted(NONLINEARITIES))
def test_engines_and_stepper_agree(layer: str, nonlinearity: str) -> None:
    model = DeepWiener(2, 2, layer=layer, d_model=3, d_state=4, n_layers=2, nonlinearity=nonlinearity,
                       norm="layer", skip="linear").double()
    u = torch.randn(2, 60, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ref, _ = model(u, mode="loop")
    for mode in ("scan", "fft", "auto"):
        torch.testing.assert_close(model(u, mode=mode)[0], ref)
    stepper = model.stepper()
    streamed, _ = run_stepper(stepper, u, stepper.init_state(2))
    torch.testing.assert_close(streamed, ref)


def test_model_exposes_blocks_lti() -> None:
    model = DeepWiener(1, 1, layer="s5", d_model=4, d_state=3, n_layers=3)
    assert len(model.blocks) == 3
    assert model.blocks[1].lti.state_space().A.shape == (6, 6)


def test_same_seed_same_parameters_and_rng_untouched() -> None:
    state = torch.get_rng_state()
    a = DeepWiener(1, 1, seed=5)
    assert torch.equal(state, torch.get_rng_state())
    b = DeepWiener(1, 1, seed=5)
    c = DeepWiener(1, 1, seed=6)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters(), strict=True))


def test_simulate_uses_physical_units() -> None:
    model = DeepWiener(1, 1, d_model=3, d_state=2, n_layers=1)
    u = np.random.default_rng(0).normal(size=(100, 1))
    y0 = model.simulate(u)
    model.set_scaler([1.0], [2.0], [10.0], [3.0])
    y1 = model.simulate(1.0 + 2.0 * u)
    np.testing.assert_allclose(y1, 10.0 + 3.0 * y0, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"layer": "lruu"}, "did you mean 'lru'"),
        ({"nonlinearity": "sigmoidd"}, "nonlinearity"),
        ({"d_model": 0}, "d_model"),
        ({"n_layers": -2}, "n_layers"),
        ({"d_state": 1.5}, "d_state"),
        ({"dropout": 1.0}, "dropout"),
        ({"norm": "batchnorm"}, "norm"),
        ({"layer_options": {"rmin": 0.1}}, "rmin"),
        ({"dt": 0.0}, "dt"),
    ],
)
def test_bad_model_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        DeepWiener(1, 1, **kwargs)


def test_unknown_model_keyword_is_an_error() -> None:
    with pytest.raises(TypeError):
        DeepWiener(1, 1, d_modle=3)
    with pytest.raises(ConfigError, match="d_modle"):
        ModelConfig.from_dict({"n_u": 1, "n_y": 1, "d_modle": 3})


def test_bad_input_shapes() -> None:
    model = DeepWiener(2, 1, d_model=3, d_state=2, n_layers=1)
    with pytest.raises(DataError, match="n_u=2"):
        model(torch.zeros(1, 10, 3))
    with pytest.raises(DataError, match="n_u=2"):
        model.simulate(np.zeros((10, 1)))
    with pytest.raises(DataError, match="NaN"):
        model.simulate(np.full((10, 2), np.nan))
