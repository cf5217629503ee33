"""Every layer (and every layer variant, such as S4's MIMO blocks), map and model kind exports: the ONNX step run
by onnxruntime over 10,000 samples of a random input and the C program (float and double) compiled with
``cc -Wall -Wextra -pedantic -Werror`` agree with ``model.simulate``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from export_helpers import SAMPLES, check_exports
from helpers import LAYER_VARIANTS, layer_spec
from torch import Tensor, nn

from deepwiener.layers import LAYERS
from deepwiener.models import MODEL_KINDS, DeepWiener, Ensemble, LinearModel, Model, build_model
from deepwiener.nonlinearities import NONLINEARITIES, Elementwise, Nonlinearity

N_U, N_Y = 2, 2


def _inputs(seed: int = 0) -> np.ndarray:
    """A random input (SAMPLES, n_u) in physical units around the scaler's mean."""
    return np.random.default_rng(seed).normal(size=(SAMPLES, N_U)) * [2.0, 0.5] + [0.5, -1.0]


def _prepare(model: Model, seed: int = 0) -> Model:
    """A non-trivial scaler and random parameters of every static map (biases, poly and linear_tanh coefficients),
    in eval mode."""
    model.set_scaler([0.5, -1.0], [2.0, 0.5], [1.0, -3.0], [4.0, 0.25])
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, Nonlinearity):
                for name, param in module.named_parameters(recurse=False):
                    param.add_((0.3 if name == "bias" else 0.1) * torch.randn(param.shape, generator=gen))
    return model.eval()


def _deep(seed: int = 0, **options: object) -> DeepWiener:
    options = {"layer": "lru", "d_model": 3, "d_state": 4, "n_layers": 2, "nonlinearity": "gelu", **options}
    return DeepWiener(N_U, N_Y, seed=seed, **options)


@pytest.mark.parametrize("layer", (*LAYERS, *LAYER_VARIANTS))
def test_every_layer(layer: str, tmp_path: Path) -> None:
    name, layer_options = layer_spec(layer)
    model = _deep(layer=name, layer_options=layer_options, norm="layer", skip="linear")
    check_exports(_prepare(model), _inputs(), tmp_path)


@pytest.mark.parametrize("nonlinearity", NONLINEARITIES)
def test_every_map(nonlinearity: str, tmp_path: Path) -> None:
    check_exports(_prepare(_deep(nonlinearity=nonlinearity, seed=1)), _inputs(1), tmp_path)


class ChannelELU(Nonlinearity):
    """ELU with an alpha per channel (torch's has one): the general form of the "elu" map of the step graph."""

    def __init__(self, width: int) -> None:
        super().__init__(width)
        self.alpha = nn.Parameter(torch.linspace(0.5, 1.5, width))

    def forward(self, eta: Tensor) -> Tensor:
        z = eta + self.bias
        return torch.where(z > 0, z, self.alpha * torch.expm1(z))

    def channel_map(self) -> tuple[str, dict[str, Tensor]]:
        return "elu", {"bias": self.bias, "alpha": self.alpha}


def test_tanh_approximated_gelu_channel_elu_current_readout_no_skip(tmp_path: Path) -> None:
    model = _deep(layer="s5", layer_options={"readout": "current"}, skip="none", seed=2)
    model.blocks[0].sigma = Elementwise(3, nn.GELU(approximate="tanh"), 1.13)
    model.blocks[1].sigma = ChannelELU(3)
    check_exports(_prepare(model), _inputs(2), tmp_path)


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_every_kind(kind: str, tmp_path: Path) -> None:
    check_exports(_prepare(build_model(kind, n_u=N_U, n_y=N_Y, seed=3)), _inputs(3), tmp_path)


def test_ensemble_of_kinds_with_integrators(tmp_path: Path) -> None:
    members = [_prepare(_deep(integrator=True, seed=4)), _prepare(LinearModel(N_U, N_Y, integrator=True, seed=4)),
               _prepare(build_model("gru", n_u=N_U, n_y=N_Y, seed=4, hidden=5))]
    check_exports(Ensemble(members), _inputs(4), tmp_path)


@pytest.mark.parametrize("certificate", ["small_gain", "iqc"])
def test_a_stable_lfr_exports_the_loop_it_simulates(certificate: str, tmp_path: Path) -> None:
    """The exported step holds the scaled (A, E) of a stable LFR, here with a loop the scale shrinks."""
    model = build_model("lfr", n_u=N_U, n_y=N_Y, seed=5, stable=True, certificate=certificate)
    with torch.no_grad():
        model.E.mul_(20.0)
    assert not torch.allclose(model.loop_matrices()[1], model.E)  # the certificate scales this loop
    check_exports(_prepare(model), _inputs(5), tmp_path)
