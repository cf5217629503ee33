"""The fused whole-stack kernels (``engines.fused``, ``models.deepwiener_fused``): equal to the loop engine on every
LTI layer, map, skip and readout, with and without an initial state; gradcheck of the one autograd node (initial
and final states included); training with mode "fused" follows mode "compiled"; the mode's rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import LAYER_CASES, layer_spec

from deepwiener.data import IOData
from deepwiener.engines import fused
from deepwiener.errors import ConfigError
from deepwiener.models import DeepWiener, deepwiener_fused
from deepwiener.nonlinearities import NONLINEARITIES
from deepwiener.training import TrainConfig, fit

pytestmark = pytest.mark.skipif(not fused.available(), reason="numba is not installed")


def _model(layer_case: str, nonlinearity: str = "elu", seed: int = 0, **options: object) -> DeepWiener:
    """A float64 two-block model with every parameter moved off its initial value (maps that start as the
    identity, poly and linear_tanh, get nonzero coefficients)."""
    layer, layer_options = layer_spec(layer_case)
    model = DeepWiener(2, 2, layer=layer, layer_options=layer_options, d_model=3, d_state=4, n_layers=2,
                       nonlinearity=nonlinearity, seed=seed, **options).double()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return model


def _random_state(model: DeepWiener, batch: int, seed: int) -> tuple[torch.Tensor, ...]:
    """A random state: the blocks' complex states (and the integrator's real sum)."""
    gen = torch.Generator().manual_seed(seed)

    def rand(x: torch.Tensor) -> torch.Tensor:
        return torch.randn(x.shape, generator=gen, dtype=torch.float64)

    return tuple(torch.complex(rand(x), rand(x)) if x.is_complex() else rand(x) for x in model.init_state(batch))


def _max_diff(a: tuple[torch.Tensor, ...], b: tuple[torch.Tensor, ...]) -> float:
    """The largest difference of corresponding tensors, relative to the reference's peak (or absolute below 1)."""
    return max(float((x - y).detach().abs().max() / y.detach().abs().max().clamp_min(1))
               for x, y in zip(a, b, strict=True) if x.numel())


def _assert_fused_equals_loop(model: DeepWiener, with_x0: bool, batch: int = 3, steps: int = 9) -> None:
    u = torch.randn(batch, steps, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x0 = _random_state(model, batch, 2) if with_x0 else None
    if x0 is not None:
        for x in x0:
            x.requires_grad_()
    params = list(model.parameters())
    results = {}
    for mode in ("loop", "fused"):
        y, finals = model(u, x0, mode=mode)
        loss = y.square().sum() + sum(x.abs().square().sum() for x in finals)
        wrt = params + list(x0 or ())
        grads = torch.autograd.grad(loss, wrt, allow_unused=True)
        grads = tuple(torch.zeros_like(w) if g is None else g for g, w in zip(grads, wrt, strict=True))
        results[mode] = (y, finals, grads)
    (y_ref, x_ref, g_ref), (y, x, g) = results["loop"], results["fused"]
    assert _max_diff((y,), (y_ref,)) < 1e-12
    assert _max_diff(tuple(x), tuple(x_ref)) < 1e-12
    assert _max_diff(g, g_ref) < 1e-10


@pytest.mark.parametrize("layer_case", LAYER_CASES)
@pytest.mark.parametrize("with_x0", [False, True])
def test_every_layer_equals_loop(layer_case: str, with_x0: bool) -> None:
    _assert_fused_equals_loop(_model(layer_case), with_x0)


@pytest.mark.parametrize("nonlinearity", sorted(NONLINEARITIES))
@pytest.mark.parametrize("with_x0", [False, True])
def test_every_map_equals_loop(nonlinearity: str, with_x0: bool) -> None:
    model = _model("lru", nonlinearity)
    if nonlinearity in ("poly", "linear_tanh"):  # they start as the identity: give them a nonlinear part
        with torch.no_grad():
            for block in model.blocks:
                for name, p in block.sigma.named_parameters():
                    if name != "bias":
                        p.fill_(0.3)
    _assert_fused_equals_loop(model, with_x0)


@pytest.mark.parametrize("options", [{"skip": "linear"}, {"skip": "none"}, {"layer_options": {"readout": "current"}},
                                     {"integrator": True}, {"nonlinearity": "gelu", "skip": "linear"}])
def test_skips_readouts_and_integrator_equal_loop(options: dict[str, object]) -> None:
    layer_options = options.pop("layer_options", {})
    model = DeepWiener(2, 2, layer="lru", layer_options=layer_options, d_model=3, d_state=4, n_layers=3,
                       seed=3, **options).double()
    _assert_fused_equals_loop(model, with_x0=True)


@pytest.mark.parametrize("batch,steps", [(1, 1), (5, 1), (1, 40), (37, 20)])
def test_batch_and_length_edge_cases(batch: int, steps: int) -> None:
    _assert_fused_equals_loop(_model("s5"), with_x0=True, batch=batch, steps=steps)


def test_batch_split_over_threads_gives_the_same_numbers(monkeypatch) -> None:
    model = _model("lru")
    u = torch.randn(7, 33, 2, dtype=torch.float64)
    y_one, _ = model(u, mode="fused")
    monkeypatch.setattr(fused, "_chunks", lambda batch, steps, d, n: 3)
    y_three, _ = model(u, mode="fused")
    assert float((y_one - y_three).detach().abs().max()) < 1e-13


def _stack_inputs(kind: str, skip: str, seed: int) -> tuple[fused.StackParams, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    L, n, d = 2, 2, 2
    hidden = 2 * d if kind in ("glu", "mlp") else 0
    zeros = fused.StackParams.zeros(n_u=1, n_y=2, d=d, n=n, layers=L, hidden=hidden, skip_matrix=skip == "linear",
                                    dtype=torch.float64)
    tensors = []
    for name, t in zip(fused.StackParams.__dataclass_fields__, zeros.tensors(), strict=True):
        value = 0.5 * torch.randn(t.shape, generator=gen, dtype=torch.float64)
        if name == "lam":  # stable complex eigenvalues
            radius = 0.5 + 0.4 * torch.rand(L, n, generator=gen, dtype=torch.float64)
            phase = 3 * torch.rand(L, n, generator=gen, dtype=torch.float64)
            value = torch.stack([radius * phase.cos(), radius * phase.sin()], dim=1)
        tensors.append(value.requires_grad_())
    u = torch.randn(3, 5, 1, generator=gen, dtype=torch.float64, requires_grad=True)
    x0 = torch.randn(L, 2 * n, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    return fused.StackParams(*tensors), u, x0


@pytest.mark.parametrize("kind,skip,readout", [("elu", "identity", "next"), ("gelu", "linear", "current"),
                                               ("poly", "none", "next"), ("linear_tanh", "identity", "current"),
                                               ("tanh", "identity", "next"), ("glu", "identity", "next"),
                                               ("mlp", "linear", "current")])
def test_gradcheck_of_the_fused_node(kind: str, skip: str, readout: str) -> None:
    """Every input of the one autograd node, the initial state included, and both outputs (the final state too)."""
    params, u, x0 = _stack_inputs(kind, skip, seed=len(kind))

    every = params.tensors()

    def run(u: torch.Tensor, x0: torch.Tensor, *nonempty: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        given = iter(nonempty)
        tensors = (next(given) if t.numel() else t for t in every)  # the unused (zero-sized) parts as they are
        return fused.stack(fused.StackParams(*tensors), u, x0, kind, skip, readout)

    assert torch.autograd.gradcheck(run, (u, x0, *(t for t in every if t.numel())), eps=1e-6, atol=1e-8, rtol=1e-6)


def _wiener_data(n: int = 1200, seed: int = 0) -> IOData:
    rng = np.random.default_rng(seed)
    u = rng.normal(size=n)
    x = np.zeros(n)
    for k in range(1, n):
        x[k] = 0.9 * x[k - 1] + 0.3 * u[k - 1]
    return IOData(u=u, y=np.tanh(x), dt=0.01, name="wiener")


@pytest.mark.parametrize("x0", ["zero", "encoder"])
def test_training_fused_follows_compiled(x0: str) -> None:
    """The loss curves of a few epochs agree; in float64, so that rounding (the kernels sum in another order than
    torch) stays far below the tolerance."""
    config = TrainConfig(window=100, washout=10, batch_size=8, epochs=4, lr=1e-2, patience=None, x0=x0,
                         x0_window=20, dtype="float64")
    curves = {}
    for mode in ("compiled", "fused"):
        model = DeepWiener(1, 1, d_model=4, d_state=4, n_layers=2, nonlinearity="elu", seed=0)
        torch.manual_seed(0)  # the state encoder starts from the global generator
        result = fit(model, _wiener_data(), TrainConfig(**{**config.to_dict(), "mode": mode}))
        curves[mode] = np.array([[h["train_loss"], h["val_rmse"]] for h in result.history])
    np.testing.assert_allclose(curves["fused"], curves["compiled"], rtol=1e-7)


def test_auto_runs_fused_on_the_cpu(monkeypatch) -> None:
    calls = []
    original = deepwiener_fused.forward
    monkeypatch.setattr(deepwiener_fused, "forward", lambda *a: calls.append(1) or original(*a))
    model = _model("lru")
    u = torch.randn(2, 5, 2, dtype=torch.float64)
    model(u)
    assert calls == [1]
    model(u, mode="compiled")
    assert calls == [1]


@pytest.mark.parametrize("options,reason", [({"norm": "layer"}, "norm"), ({"layer": "s6"}, "not LTI")])
def test_models_it_does_not_implement(options: dict[str, object], reason: str) -> None:
    model = DeepWiener(2, 2, d_model=3, d_state=2, n_layers=2, **options).double()
    u = torch.randn(2, 6, 2, dtype=torch.float64)
    with pytest.raises(ConfigError, match=reason):
        model(u, mode="fused")
    y_auto, _ = model(u)  # auto: the per-block engines, unchanged
    y_ref, _ = model(u, mode="loop")
    assert float((y_auto - y_ref).detach().abs().max()) < 1e-10


def test_dropout_runs_fused_in_eval_mode_only() -> None:
    model = DeepWiener(2, 2, d_model=3, d_state=2, n_layers=2, dropout=0.5).double()
    u = torch.randn(2, 6, 2, dtype=torch.float64)
    with pytest.raises(ConfigError, match="dropout"):
        model(u, mode="fused")
    model.eval()
    y, _ = model(u, mode="fused")
    assert float((y - model(u, mode="loop")[0]).detach().abs().max()) < 1e-12


def test_blocks_with_different_maps_take_the_per_block_engines() -> None:
    """The kernels take one map for the stack: a model whose blocks' maps were swapped apart is not fused."""
    model = _model("lru", nonlinearity="elu")
    model.blocks[1].sigma = NONLINEARITIES["tanh"](3).double()
    u = torch.randn(2, 6, 2, dtype=torch.float64)
    with pytest.raises(ConfigError, match="different maps"):
        model(u, mode="fused")
    assert float((model(u)[0] - model(u, mode="loop")[0]).detach().abs().max()) < 1e-10


def test_auto_keeps_wide_stacks_on_the_per_block_engines(monkeypatch) -> None:
    calls = []
    original = deepwiener_fused.forward
    monkeypatch.setattr(deepwiener_fused, "forward", lambda *a: calls.append(1) or original(*a))
    wide = DeepWiener(1, 1, d_model=deepwiener_fused.AUTO_MAX_WIDTH + 1, d_state=2, n_layers=1).double()
    u = torch.randn(1, 5, 1, dtype=torch.float64)
    wide(u)
    assert calls == []
    wide(u, mode="fused")  # asked for by name, it runs fused
    assert calls == [1]
