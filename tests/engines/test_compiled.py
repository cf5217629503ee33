"""Tests of the compiled (numba) diagonal-recurrence engine against a plain Python-loop reference.

Tolerances: float64/complex128 results must match the float64 reference to 1e-10 relative to the
largest state magnitude. float32/complex64 results are compared with the float64 reference run on
the same (up-cast) inputs; with poles as slow as |a| = 0.9995 rounding errors are amplified by up to
1 / (1 - |a|) ~ 2000 over T = 4096 steps; the bound is 2e-5 relative to the largest magnitude
(measured worst case 1.4e-6 for values, 1e-6 for gradients).
"""

from __future__ import annotations

import logging
import threading

import pytest
import torch

pytest.importorskip("numba")

from helpers import build_layer, run_without_numba  # noqa: E402

from deepwiener import engines  # noqa: E402
from deepwiener.engines import compiled, numba_runtime  # noqa: E402
from deepwiener.engines.compiled import diagonal_recurrence  # noqa: E402
from deepwiener.errors import ConfigError  # noqa: E402

COMPLEX = (torch.complex64, torch.complex128)
REAL = (torch.float32, torch.float64)
ALL_DTYPES = COMPLEX + REAL
WIDE = {torch.complex64: torch.complex128, torch.float32: torch.float64}


def reference(a: torch.Tensor, bu: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """Plain loop: X[:, k] = a[k] * x[k] + bu[:, k] from x[0] = x0; a is (n,) or (batch, T, n)."""
    steps = bu.shape[1]
    a_steps = [a] * steps if a.dim() == 1 else list(a.unbind(1))
    x = x0
    states = []
    for a_k, bu_k in zip(a_steps, bu.unbind(1), strict=True):
        x = a_k * x + bu_k
        states.append(x)
    if not states:
        return bu.new_zeros(bu.shape)
    return torch.stack(states, 1)


def make_inputs(
    dtype: torch.dtype, batch: int, steps: int, n: int, time_varying: bool, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random stable inputs with slow poles (|a| up to 0.9995) and a non-zero x0.

    Returns:
        a: (n,) or (batch, T, n); bu: (batch, T, n); x0: (batch, n).
    """
    gen = torch.Generator().manual_seed(seed)
    real = torch.float64
    a_shape = (batch, steps, n) if time_varying else (n,)
    radius = 0.5 + 0.4995 * torch.rand(a_shape, generator=gen, dtype=real)
    radius.view(-1, n)[:, 0] = 0.9995  # one slow pole per row
    if dtype.is_complex:
        phase = (2 * torch.rand(a_shape, generator=gen, dtype=real) - 1) * torch.pi
        a = torch.polar(radius, phase)
        bu = torch.randn(batch, steps, n, generator=gen, dtype=torch.complex128)
        x0 = 3 * torch.randn(batch, n, generator=gen, dtype=torch.complex128)
    else:
        sign = torch.where(torch.rand(a_shape, generator=gen) < 0.3, -1.0, 1.0).to(real)
        a = sign * radius
        bu = torch.randn(batch, steps, n, generator=gen, dtype=real)
        x0 = 3 * torch.randn(batch, n, generator=gen, dtype=real)
    return a.to(dtype), bu.to(dtype), x0.to(dtype)


def assert_close_scaled(actual: torch.Tensor, expected: torch.Tensor, rel: float) -> None:
    """max |actual - expected| <= rel * max(1, max |expected|)."""
    assert actual.shape == expected.shape
    scale = max(1.0, expected.abs().max().item()) if expected.numel() else 1.0
    err = (actual.to(expected.dtype) - expected).abs().max().item() if expected.numel() else 0.0
    assert err <= rel * scale, f"max error {err:.3g} > {rel:.1e} * {scale:.3g}"


def tolerance(dtype: torch.dtype) -> float:
    """Relative tolerance against the float64 reference (see module docstring)."""
    return 2e-5 if dtype in WIDE else 1e-10


def wide(*tensors: torch.Tensor) -> list[torch.Tensor]:
    """Up-cast to the double-precision dtype of the same kind."""
    return [t.to(WIDE.get(t.dtype, t.dtype)) for t in tensors]


@pytest.fixture(scope="module", autouse=True)
def _engine_available() -> None:
    assert compiled.available()


# --------------------------------------------------------------------------------------------------
# Forward values
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
@pytest.mark.parametrize("steps", [1, 7, 777, 4096])
@pytest.mark.parametrize("time_varying", [False, True], ids=["lti", "tv"])
def test_forward_matches_reference(dtype: torch.dtype, steps: int, time_varying: bool) -> None:
    a, bu, x0 = make_inputs(dtype, 3, steps, 5, time_varying)
    out = diagonal_recurrence(a, bu, x0)
    assert out.dtype == dtype and out.shape == bu.shape and out.is_contiguous()
    assert_close_scaled(out, reference(*wide(a, bu, x0)), tolerance(dtype))


@pytest.mark.parametrize("time_varying", [False, True], ids=["lti", "tv"])
def test_states_split_into_blocks(time_varying: bool, monkeypatch) -> None:
    # rows split into uneven blocks of 7 states (as for a small batch on many threads)
    monkeypatch.setattr(compiled, "_block_size", lambda batch, n, threads: 7)
    a, bu, x0 = (t.requires_grad_() for t in make_inputs(torch.complex128, 2, 33, 40, time_varying))
    out, expected = diagonal_recurrence(a, bu, x0), reference(a, bu, x0)
    assert_close_scaled(out, expected, 1e-10)
    grads = torch.autograd.grad(out.abs().square().sum(), (a, bu, x0))
    grads_ref = torch.autograd.grad(expected.abs().square().sum(), (a, bu, x0))
    for g, e in zip(grads, grads_ref, strict=True):
        assert_close_scaled(g, e, 1e-10)


def test_non_contiguous_and_conjugate_views() -> None:
    a, bu, x0 = make_inputs(torch.complex128, 4, 20, 6, time_varying=True)
    bu_nc = bu.transpose(1, 2).contiguous().transpose(1, 2)
    a_conj = a.conj()  # lazy conjugate view (conj bit set)
    x0_nc = x0.t().contiguous().t()
    assert not bu_nc.is_contiguous() and not x0_nc.is_contiguous() and a_conj.is_conj()
    out = diagonal_recurrence(a_conj, bu_nc, x0_nc)
    assert_close_scaled(out, reference(a_conj.resolve_conj(), bu, x0), 1e-10)
    out = diagonal_recurrence(a[:, :, :3], bu[:, :, ::2], -x0[:, ::2])
    assert_close_scaled(out, reference(a[:, :, :3], bu[:, :, ::2], -x0[:, ::2]), 1e-10)


@pytest.mark.parametrize("x0_shape", [(5,), (1, 5), (3, 1), (1,)])
def test_x0_broadcasting(x0_shape: tuple[int, ...]) -> None:
    a, bu, _ = make_inputs(torch.complex128, 3, 11, 5, time_varying=False)
    x0 = torch.randn(x0_shape, dtype=torch.complex128, requires_grad=True)
    out = diagonal_recurrence(a, bu, x0)
    assert_close_scaled(out, reference(a, bu, x0.expand(3, 5)), 1e-10)
    (grad,) = torch.autograd.grad(out.abs().square().sum(), x0)
    (grad_ref,) = torch.autograd.grad(reference(a, bu, x0).abs().square().sum(), x0)
    assert grad.shape == x0.shape
    assert_close_scaled(grad, grad_ref, 1e-10)


@pytest.mark.parametrize("shape", [(0, 5, 3), (2, 0, 3), (2, 5, 0)])
def test_empty_sizes(shape: tuple[int, int, int]) -> None:
    batch, steps, n = shape
    a = torch.rand(n, dtype=torch.float64, requires_grad=True)
    bu = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    x0 = torch.randn(batch, n, dtype=torch.float64, requires_grad=True)
    out = diagonal_recurrence(a, bu, x0)
    assert out.shape == shape
    out.sum().backward()
    for t in (a, bu, x0):
        assert t.grad is not None and t.grad.shape == t.shape
        assert torch.count_nonzero(t.grad) == 0


def test_no_grad_and_thread_count_preserved() -> None:
    a, bu, x0 = make_inputs(torch.float32, 2, 9, 3, time_varying=False)
    a.requires_grad_()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        with torch.no_grad():
            out = diagonal_recurrence(a, bu, x0)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    assert not out.requires_grad


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_inputs_round_trip() -> None:
    a, bu, x0 = (t.cuda().requires_grad_() for t in make_inputs(torch.complex64, 2, 30, 4, False))
    out = diagonal_recurrence(a, bu, x0)
    assert out.device == bu.device
    out.abs().sum().backward()
    assert a.grad is not None and a.grad.device == a.device
    assert_close_scaled(out.cpu(), reference(*wide(a.cpu(), bu.cpu(), x0.cpu())), 2e-5)


# --------------------------------------------------------------------------------------------------
# Gradients
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.complex128, torch.float64], ids=str)
@pytest.mark.parametrize("time_varying", [False, True], ids=["lti", "tv"])
def test_gradcheck(dtype: torch.dtype, time_varying: bool) -> None:
    inputs = [t.requires_grad_() for t in make_inputs(dtype, 2, 9, 3, time_varying)]
    assert torch.autograd.gradcheck(diagonal_recurrence, inputs, eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
@pytest.mark.parametrize("time_varying", [False, True], ids=["lti", "tv"])
def test_gradients_match_autograd_through_reference(dtype: torch.dtype, time_varying: bool) -> None:
    a, bu, x0 = make_inputs(dtype, 3, 300, 4, time_varying, seed=1)
    weight = torch.randn(bu.shape, generator=torch.Generator().manual_seed(2), dtype=dtype)

    def grads(fn, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        inputs = tuple(t.detach().requires_grad_() for t in inputs)
        out = fn(*inputs)
        loss = (out * weight.to(out.dtype)).real.sum() + 0.1 * out.abs().square().sum()
        return torch.autograd.grad(loss, inputs)

    got = grads(diagonal_recurrence, a, bu, x0)
    expected = grads(reference, *wide(a, bu, x0))
    for g, e in zip(got, expected, strict=True):
        assert g.dtype == dtype
        assert_close_scaled(g, e, tolerance(dtype))


@pytest.mark.parametrize("which", ["a", "bu", "x0"])
def test_only_requested_gradients(which: str) -> None:
    a, bu, x0 = make_inputs(torch.complex64, 2, 15, 3, time_varying=True)
    inputs = {"a": a, "bu": bu, "x0": x0}
    inputs[which].requires_grad_()
    out = diagonal_recurrence(**inputs)
    out.abs().sum().backward()
    for name, t in inputs.items():
        assert (t.grad is not None) == (name == which)


def test_double_backward_is_refused() -> None:
    a, bu, x0 = (t.requires_grad_() for t in make_inputs(torch.float64, 2, 5, 3, False))
    loss = diagonal_recurrence(a, bu, x0).square().sum()
    (grad_a,) = torch.autograd.grad(loss, a, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|double backward|twice"):
        grad_a.sum().backward()


# --------------------------------------------------------------------------------------------------
# Errors and availability
# --------------------------------------------------------------------------------------------------


def _good() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return make_inputs(torch.complex64, 2, 6, 3, time_varying=False)


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda a, bu, x0: (a, bu[0], x0), "bu must have shape"),
        (lambda a, bu, x0: (a[:2], bu, x0), "a must have shape"),
        (lambda a, bu, x0: (a[None], bu, x0), "a must have shape"),
        (lambda a, bu, x0: (a.expand(2, 5, 3), bu, x0), "a must have shape"),
        (lambda a, bu, x0: (a.expand(3, 6, 3), bu, x0), "a must have shape"),
        (lambda a, bu, x0: (a, bu, x0[:, :2]), "x0 must have shape"),
        (lambda a, bu, x0: (a, bu, torch.cat([x0, x0])), "x0 must have shape"),
        (lambda a, bu, x0: (a, bu, x0[None]), "x0 must have shape"),
        (lambda a, bu, x0: (a.to(torch.complex128), bu, x0), "share one dtype"),
        (lambda a, bu, x0: (a.real, bu.real, x0.real.half()), "share one dtype"),
        (lambda a, bu, x0: (a.real.half(), bu.real.half(), x0.real.half()), "share one dtype"),
        (lambda a, bu, x0: (a, bu, x0.numpy()), "must be a torch.Tensor"),
    ],
)
def test_bad_inputs_raise_value_error(mutate, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        diagonal_recurrence(*mutate(*_good()))


def test_compile_failure_disables_engine_and_warns_once(monkeypatch, caplog) -> None:
    def broken_build() -> dict:
        raise RuntimeError("simulated compile failure")

    monkeypatch.setattr(compiled, "KERNELS", numba_runtime.Kernels("test kernel", broken_build))
    system = build_layer("lru").discretize()
    with caplog.at_level(logging.WARNING, logger="deepwiener"):
        assert not compiled.available()
        assert not compiled.available()
        with pytest.raises(numba_runtime.CompiledUnavailableError, match="unavailable.*deepwiener\\[fast\\]"):
            diagonal_recurrence(*_good())
        with pytest.raises(ConfigError, match="mode 'compiled' needs numba"):
            engines.resolve_mode(system, "cpu", "compiled")
        assert [engines.resolve_mode(system, "cpu", "auto") for _ in range(2)] == ["scan", "scan"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, warnings
    assert "simulated compile failure" in warnings[0]  # why the kernel is off, once
    assert "runs 'scan' instead" in warnings[1]  # and that "auto" falls back, once


def test_import_without_numba() -> None:
    code = (
        "import torch\n"
        "from deepwiener.engines import compiled\n"
        "assert not compiled.available()\n"
        "x = torch.zeros(1, 2, 3)\n"
        "try:\n"
        "    compiled.diagonal_recurrence(torch.zeros(3), x, torch.zeros(1, 3))\n"
        "except RuntimeError as exc:\n"
        "    assert 'numba is not installed' in str(exc)\n"
        "else:\n"
        "    raise AssertionError('no error')\n"
    )
    run_without_numba(code)


def test_concurrent_calls_from_python_threads() -> None:
    """Kernel launches from several Python threads are serialised (workqueue aborts on concurrent launches)."""
    gen = torch.Generator().manual_seed(0)
    a = torch.polar(torch.rand(64, generator=gen, dtype=torch.float64),
                    torch.rand(64, generator=gen, dtype=torch.float64))
    bu = torch.randn(8, 2048, 64, generator=gen, dtype=torch.complex128)
    x0 = torch.zeros(8, 64, dtype=torch.complex128)
    expected = compiled.diagonal_recurrence(a, bu, x0)
    results: list[torch.Tensor] = []

    def work() -> None:
        for _ in range(5):
            results.append(compiled.diagonal_recurrence(a, bu, x0))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 20
    for out in results:
        torch.testing.assert_close(out, expected, rtol=0, atol=0)
