"""Every engine agrees with the reference loop: outputs and final states, all layers (and S4's MIMO blocks),
many lengths."""

from __future__ import annotations

import pytest
import torch
from helpers import LAYER_CASES, build_layer, random_state, run_stepper

from deepwiener.engines import compiled

ENGINES = ["scan", "fft"] + (["compiled"] if compiled.available() else [])
LENGTHS = [1, 7, 777, 4096]


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


@pytest.mark.parametrize("name", LAYER_CASES)
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("slow", [False, True])
def test_engine_matches_loop_float64(name: str, engine: str, length: int, slow: bool) -> None:
    layer = build_layer(name, slow=slow).double()
    gen = torch.Generator().manual_seed(length)
    u = torch.randn(2, length, layer.d_in, generator=gen, dtype=torch.float64)
    x0 = random_state(layer, 2, gen)
    ref, x_ref = layer(u, x0, mode="loop")
    out, x_out = layer(u, x0, mode=engine)
    assert _rel_err(out, ref) < 1e-6
    assert _rel_err(x_out, x_ref) < 1e-6


@pytest.mark.parametrize("name", LAYER_CASES)
@pytest.mark.parametrize("engine", ENGINES)
def test_engine_matches_loop_float32(name: str, engine: str) -> None:
    """float32 tolerance: 2e-4 of the peak over 4096 samples with |lam| > 0.999 (documented in the README).

    The float32 loop itself drifts from float64 by about this much (rounding of lam compounds over time),
    so each engine is compared with the float32 loop.
    """
    layer = build_layer(name, slow=True)
    gen = torch.Generator().manual_seed(1)
    u = torch.randn(2, 4096, layer.d_in, generator=gen)
    x0 = random_state(layer, 2, gen)
    ref, x_ref = layer(u, x0, mode="loop")
    out, x_out = layer(u, x0, mode=engine)
    assert out.dtype == torch.float32
    assert _rel_err(out, ref) < 2e-4
    assert _rel_err(x_out, x_ref) < 2e-4


@pytest.mark.parametrize("name", LAYER_CASES)
def test_step_reproduces_loop(name: str) -> None:
    layer = build_layer(name).double()
    gen = torch.Generator().manual_seed(3)
    u = torch.randn(2, 50, layer.d_in, generator=gen, dtype=torch.float64)
    x = random_state(layer, 2, gen)
    ref, x_ref = layer(u, x, mode="loop")
    streamed, x = run_stepper(layer.stepper(), u, x)
    torch.testing.assert_close(streamed, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(x, x_ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", LAYER_CASES)
def test_chunked_simulation_continues_state(name: str) -> None:
    """Simulating in two pieces with the returned state equals one piece (every engine)."""
    layer = build_layer(name).double()
    u = torch.randn(1, 300, layer.d_in, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    whole, _ = layer(u, mode="loop")
    for engine in ENGINES:
        first, state = layer(u[:, :123], mode=engine)
        second, _ = layer(u[:, 123:], state, mode=engine)
        torch.testing.assert_close(torch.cat([first, second], 1), whole, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", LAYER_CASES)
@pytest.mark.parametrize("engine", ["loop"] + ENGINES)
def test_gradients_match_loop(name: str, engine: str) -> None:
    """Gradients of a loss through each engine equal those through the loop, for the parameters and for the
    initial state (the initial-state estimation needs the latter)."""
    torch.manual_seed(0)
    u = torch.randn(2, 40, 3, dtype=torch.float64)
    grads = {}
    for mode in ("loop", engine):
        layer = build_layer(name).double()
        x0 = random_state(layer, 2, torch.Generator().manual_seed(1)).requires_grad_(True)
        eta, x = layer(u, x0, mode=mode)
        (eta.pow(2).mean() + x.abs().pow(2).mean()).backward()
        grads[mode] = torch.cat([p.grad.flatten() for p in layer.parameters()]
                                + [torch.view_as_real(x0.grad).flatten()])
    torch.testing.assert_close(grads[engine], grads["loop"], rtol=1e-7, atol=1e-9)
