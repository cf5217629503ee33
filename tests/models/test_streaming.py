"""The fast streamer reproduces ``model.forward`` and ``model.stepper()``: every layer (and layer variant, such as
S4's MIMO blocks), nonlinearity, norm, skip and readout, from zero and nonzero states, sample by sample and whole
records."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import LAYER_CASES, layer_spec, run_without_numba

from deepwiener.errors import DataError
from deepwiener.models import DeepWiener
from deepwiener.models.deepwiener_stream import CompiledStreamer, fast_stepper
from deepwiener.models.streamers import Streamer, TorchStreamer
from deepwiener.nonlinearities import NONLINEARITIES

COMPILED_NONLINEARITIES = ("elu", "gelu", "tanh", "relu", "identity", "poly", "linear_tanh")


def _model(layer: str = "lru", nonlinearity: str = "elu", seed: int = 0, **options: object) -> DeepWiener:
    """A float64 model in eval mode with a nontrivial scaler and (for poly, linear_tanh) nonzero coefficients;
    ``layer`` is a name of ``helpers.LAYER_CASES``."""
    layer, layer_options = layer_spec(layer, **options.pop("layer_options", {}))
    options = {"d_model": 3, "d_state": 4, "n_layers": 3, "layer_options": layer_options, **options}
    model = DeepWiener(2, 2, layer=layer, nonlinearity=nonlinearity, seed=seed, **options).double().eval()
    model.set_scaler([0.5, -1.0], [2.0, 0.5], [1.0, -3.0], [4.0, 0.25])
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for block in model.blocks:
            block.sigma.bias.copy_(0.3 * torch.randn(block.sigma.bias.shape, generator=gen, dtype=torch.float64))
            if nonlinearity == "poly":
                block.sigma.a2.copy_(0.2 * torch.randn(3, generator=gen, dtype=torch.float64))
                block.sigma.a3.copy_(0.1 * torch.randn(3, generator=gen, dtype=torch.float64))
            if nonlinearity == "linear_tanh":
                block.sigma.gain.copy_(torch.randn(3, generator=gen, dtype=torch.float64))
            if isinstance(block.norm, torch.nn.LayerNorm):
                block.norm.weight.copy_(1 + 0.1 * torch.randn(3, generator=gen, dtype=torch.float64))
                block.norm.bias.copy_(0.1 * torch.randn(3, generator=gen, dtype=torch.float64))
    return model


def _inputs(length: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(1, length, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _random_state(model: DeepWiener, seed: int = 2) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    return tuple(
        torch.complex(torch.randn(x.shape, generator=gen, dtype=torch.float64),
                      torch.randn(x.shape, generator=gen, dtype=torch.float64))
        for x in model.init_state(1)
    )


def _assert_reproduces(model: DeepWiener, streamer: Streamer, length: int = 200, tol: float = 1e-10,
                       state: tuple[torch.Tensor, ...] | None = None) -> None:
    u = _inputs(length)
    with torch.no_grad():
        ref, final = model(u, state, mode="loop")
    streamer.reset(state)
    y = streamer.run(u[0].numpy())
    np.testing.assert_allclose(y, ref[0].numpy(), rtol=0, atol=tol * max(1.0, float(ref.abs().max())))
    for x, x_ref in zip(streamer.state, final, strict=True):
        torch.testing.assert_close(x.to(x_ref.dtype), x_ref, rtol=0, atol=tol * max(1.0, float(x_ref.abs().max())))


@pytest.mark.parametrize("layer", LAYER_CASES)
@pytest.mark.parametrize("nonlinearity", COMPILED_NONLINEARITIES)
def test_compiled_streamer_reproduces_forward(layer: str, nonlinearity: str) -> None:
    model = _model(layer, nonlinearity, norm="layer", skip="linear")
    streamer = model.fast_stepper()
    assert isinstance(streamer, CompiledStreamer)
    _assert_reproduces(model, streamer)


@pytest.mark.parametrize("layer", LAYER_CASES)
@pytest.mark.parametrize("readout", ["next", "current"])
@pytest.mark.parametrize("skip", ["identity", "linear", "none"])
@pytest.mark.parametrize("norm", ["none", "layer"])
def test_structure_options_and_nonzero_state(layer: str, readout: str, skip: str, norm: str) -> None:
    model = _model(layer, "gelu", layer_options={"readout": readout}, skip=skip, norm=norm)
    _assert_reproduces(model, fast_stepper(model), state=_random_state(model))


def test_tanh_approximate_gelu_and_elu_alpha() -> None:
    model = _model("lru", "gelu")
    for block in model.blocks:
        block.sigma.activation = torch.nn.GELU(approximate="tanh")
    _assert_reproduces(model, fast_stepper(model))
    model = _model("lru", "elu")
    for block in model.blocks:
        block.sigma.activation.alpha = 0.7
    _assert_reproduces(model, fast_stepper(model))


def test_step_equals_run_and_torch_stepper() -> None:
    model = _model("s5", "tanh", norm="layer")
    u = _inputs(50)
    stepper = model.stepper()
    state = stepper.init_state(1)
    ref = []
    with torch.no_grad():
        for k in range(u.shape[1]):
            y_k, state = stepper.step(u[:, k], state)
            ref.append(y_k[0].numpy())
    streamer = model.fast_stepper()
    stepped = np.stack([streamer.step(u_k) for u_k in u[0].numpy()])
    np.testing.assert_allclose(stepped, np.stack(ref), rtol=0, atol=1e-10)
    streamer.reset()
    np.testing.assert_allclose(streamer.run(u[0].numpy()), stepped, rtol=0, atol=1e-12)


def test_run_continues_from_current_state() -> None:
    model = _model("lru", "elu")
    u = _inputs(300)[0].numpy()
    streamer = model.fast_stepper()
    whole = streamer.run(u)
    streamer.reset()
    pieces = np.concatenate([streamer.run(u[:123]), np.stack([streamer.step(u_k) for u_k in u[123:130]]),
                             streamer.run(u[130:])])
    np.testing.assert_allclose(pieces, whole, rtol=0, atol=1e-12)


def test_float32_model_to_float32_accuracy() -> None:
    model = DeepWiener(1, 1, layer="lru", d_model=3, d_state=6, n_layers=4, nonlinearity="elu").eval()
    u = torch.randn(1, 500, 1, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref, _ = model(u, mode="loop")
    y = model.fast_stepper().run(u[0, :, 0].numpy())  # (T,) input is accepted for n_u = 1
    assert y.dtype == np.float64
    np.testing.assert_allclose(y, ref[0].numpy(), rtol=0, atol=1e-5 * max(1.0, float(ref.abs().max())))


def test_dropout_is_ignored_in_eval_mode() -> None:
    model = _model("lru", "relu", dropout=0.5)
    _assert_reproduces(model, model.fast_stepper())


@pytest.mark.parametrize(("layer", "nonlinearity"), [("lru", "glu"), ("s4", "mlp"), ("s6", "elu")])
def test_unsupported_parts_fall_back_to_the_torch_stepper(layer: str, nonlinearity: str) -> None:
    model = _model(layer, nonlinearity)
    streamer = model.fast_stepper()
    assert isinstance(streamer, TorchStreamer)
    state = None if layer == "s6" else _random_state(model)  # S6 states are real
    _assert_reproduces(model, streamer, length=40, tol=1e-12, state=state)


def test_every_nonlinearity_is_covered() -> None:
    assert set(COMPILED_NONLINEARITIES) | {"glu", "mlp"} == set(NONLINEARITIES)


def test_export_is_a_snapshot() -> None:
    model = _model("lru", "elu")
    streamer = model.fast_stepper()
    before = streamer.run(_inputs(20)[0].numpy())
    with torch.no_grad():
        model.decoder.bias.add_(1.0)
    streamer.reset()
    np.testing.assert_array_equal(streamer.run(_inputs(20)[0].numpy()), before)


@pytest.mark.parametrize("kind", ["compiled", "torch"])
def test_bad_shapes_raise(kind: str) -> None:
    model = _model("lru", "elu" if kind == "compiled" else "glu")
    streamer = model.fast_stepper()
    with pytest.raises(DataError, match="u_k"):
        streamer.step(np.zeros(3))
    with pytest.raises(DataError, match="T, n_u"):
        streamer.run(np.zeros((5, 3)))
    if kind == "compiled":
        with pytest.raises(DataError, match="one per block"):
            streamer.reset(model.init_state(1)[:1])
        with pytest.raises(DataError, match="shape"):
            streamer.reset(model.init_state(2))


def test_without_numba_the_torch_stepper_streams_and_the_log_says_so_once() -> None:
    run_without_numba(
        "import logging\n"
        "import numpy as np, torch\n"
        "from deepwiener.models import DeepWiener\n"
        "from deepwiener.models.streamers import TorchStreamer\n"
        "messages = []\n"
        "handler = logging.Handler()\n"
        "handler.emit = lambda record: messages.append(record.getMessage())\n"
        "logging.getLogger('deepwiener').addHandler(handler)\n"
        "model = DeepWiener(2, 2, d_model=3, d_state=4, n_layers=2).double().eval()\n"
        "streamers = [model.fast_stepper(), model.fast_stepper()]\n"
        "assert all(isinstance(s, TorchStreamer) for s in streamers)\n"
        "u = np.random.default_rng(0).normal(size=(20, 2))\n"
        "with torch.no_grad():\n"
        "    reference = model(torch.from_numpy(u)[None], mode='loop')[0][0].numpy()\n"
        "np.testing.assert_allclose(streamers[0].run(u), reference, rtol=0, atol=1e-12)\n"
        "said = [m for m in messages if 'streaming kernel is unavailable' in m and 'deepwiener[fast]' in m]\n"
        "assert len(said) == 1, messages\n"
    )
