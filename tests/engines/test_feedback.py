"""The compiled LFR kernel (engines/feedback.py) against the torch loop of LFRModel: values and gradients.

The reference is ``LFRModel.trajectory(..., mode="loop")``, plain torch operations differentiated by autograd,
so both the forward kernel and the hand-written backward pass are checked against an independent computation.
"""

from __future__ import annotations

import pytest
import torch
from helpers import run_without_numba

from deepwiener.engines import feedback
from deepwiener.errors import ConfigError
from deepwiener.models.lfr import LFRModel


@pytest.fixture(scope="module", autouse=True)
def _kernel_available() -> None:
    assert feedback.available()


def _model(dtype: torch.dtype, n_u: int = 2, n_y: int = 2, n_x: int = 5, n_w: int = 3) -> LFRModel:
    """An LFR with every part of the loop active (random feedback, biases, map bias)."""
    model = LFRModel(n_u, n_y, n_x=n_x, n_w=n_w, nonlinearity="mlp", seed=3).to(dtype)
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in (model.E, model.H, model.b_x, model.b_y, model.phi.bias, model.G, model.D):
            p.copy_(0.4 * torch.randn(p.shape, generator=gen, dtype=dtype))
    return model


def _run(model: LFRModel, u: torch.Tensor, x0: torch.Tensor, mode: str) -> tuple[torch.Tensor, ...]:
    """Output, final state and every parameter's and x0's gradient of a nonlinear scalar loss."""
    model.zero_grad()
    x0 = x0.clone().requires_grad_(True)
    y, (last,) = model(u, (x0,), mode=mode)
    (y.sin().sum() + last.pow(2).sum()).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    return (y.detach(), last.detach(), x0.grad, *grads)


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-12), (torch.float32, 2e-5)], ids=str)
def test_compiled_equals_loop_values_and_gradients(dtype: torch.dtype, tol: float) -> None:
    model = _model(dtype)
    gen = torch.Generator().manual_seed(0)
    u = torch.randn(4, 40, 2, generator=gen, dtype=dtype)
    x0 = torch.randn(4, 5, generator=gen, dtype=dtype)
    reference = _run(model, u, x0, "loop")
    kernel = _run(model, u, x0, "compiled")
    for ref, got in zip(reference, kernel, strict=True):
        scale = ref.abs().max().clamp_min(1e-30)
        assert ((ref - got).abs().max() / scale).item() < tol


def test_every_gradient_is_exercised() -> None:
    """A check that could pass vacuously (zero gradients) must not: every parameter gets a nonzero gradient."""
    model = _model(torch.float64)
    u = torch.randn(2, 30, 2, dtype=torch.float64)
    grads = _run(model, u, torch.zeros(2, 5, dtype=torch.float64), "compiled")[3:]
    assert all(g.abs().max() > 0 for g in grads)


def test_gradcheck_of_the_kernel() -> None:
    """Finite differences of the kernel itself (float64, all inputs)."""
    gen = torch.Generator().manual_seed(1)
    n_x, n_w, hidden = 3, 2, 4
    shapes = [(2, 6, n_x), (2, 6, n_w), (2, n_x), (n_x, n_x), (n_w, n_x), (n_x, n_w), (n_w,), (hidden, n_w),
              (hidden,), (n_w, hidden), (n_w,)]
    inputs = [(0.5 * torch.randn(s, generator=gen, dtype=torch.float64)).requires_grad_(True) for s in shapes]
    assert torch.autograd.gradcheck(feedback.perceptron_loop, inputs, eps=1e-6, atol=1e-7)


def test_split_run_equals_one_run() -> None:
    model = _model(torch.float64)
    u = torch.randn(3, 50, 2, dtype=torch.float64)
    with torch.no_grad():
        whole, _ = model(u, mode="compiled")
        first, state = model(u[:, :20], mode="compiled")
        second, _ = model(u[:, 20:], state, mode="compiled")
    assert torch.allclose(torch.cat([first, second], 1), whole, rtol=0, atol=1e-12)


def test_auto_takes_the_kernel_only_where_it_applies() -> None:
    mlp = LFRModel(1, 1, nonlinearity="mlp")
    gelu = LFRModel(1, 1, nonlinearity="gelu")
    assert mlp.engine("auto", "cpu") == "compiled"
    assert mlp.engine("auto", "cuda") == "loop"
    assert gelu.engine("auto", "cpu") == "loop"
    with pytest.raises(ConfigError, match="'mlp' on the CPU only"):
        gelu.engine("compiled", "cpu")
    with pytest.raises(ConfigError, match="loop is nonlinear"):
        mlp.engine("scan", "cpu")
    with pytest.raises(ConfigError, match="unknown mode"):
        mlp.engine("fastest", "cpu")


def test_without_numba_auto_falls_back_and_compiled_explains() -> None:
    code = (
        "import torch\n"
        "from deepwiener.engines import feedback\n"
        "from deepwiener.errors import ConfigError\n"
        "from deepwiener.models import LFRModel\n"
        "assert not feedback.available()\n"
        "model = LFRModel(1, 1)\n"
        "assert model.engine('auto', 'cpu') == 'loop'\n"
        "model(torch.zeros(1, 5, 1))\n"
        "try:\n"
        "    model.engine('compiled', 'cpu')\n"
        "except ConfigError as exc:\n"
        "    assert 'numba' in str(exc)\n"
        "else:\n"
        "    raise AssertionError('no error')\n"
    )
    run_without_numba(code)
