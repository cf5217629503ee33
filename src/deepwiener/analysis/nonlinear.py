"""The static part of each block on real data: the range of its input ``eta`` and its input-output curve.

``signal_ranges(model, data)`` simulates the model on a record once, with a forward hook on every block's
nonlinearity, and records per channel the minimum, maximum and mean of ``eta`` (the output of the LTI layer,
the input of sigma). ``nonlinearity_curves(model, data)`` then evaluates each sigma on a grid over that range:
for channel c, ``eta_c`` sweeps ``[min_c, max_c]`` while the other channels are held at their observed mean,
so channel-mixing maps (glu, mlp) are shown as sections through the operating point; for elementwise maps
the other channels do not matter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from deepwiener.data import IOData
from deepwiener.data.iodata import check_dt
from deepwiener.models import DeepWiener


@dataclass(frozen=True, eq=False)
class SignalRange:
    """Observed range of one block's ``eta`` (the nonlinearity's input), per channel.

    Attributes:
        index: block index.
        low: (h,) minimum over the record.
        high: (h,) maximum.
        mean: (h,) mean.
    """

    index: int
    low: np.ndarray
    high: np.ndarray
    mean: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {"index": self.index, "low": self.low.tolist(), "high": self.high.tolist(), "mean": self.mean.tolist()}


@dataclass(frozen=True, eq=False)
class NonlinearityCurve:
    """sigma of one block evaluated over the observed range of its input, channel by channel.

    Attributes:
        index: block index.
        name: the nonlinearity's name (``model.config.nonlinearity``).
        eta: (n_points, h) input grid; column c spans channel c's observed range.
        output: (n_points, h) sigma's channel-c output when channel c takes ``eta[:, c]`` and the other
            channels sit at their observed mean.
    """

    index: int
    name: str
    eta: np.ndarray
    output: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {"index": self.index, "name": self.name, "eta": self.eta.tolist(), "output": self.output.tolist()}


class _RangeRecorder:
    """Forward hook accumulating the per-channel min, max and sum of a module's first input."""

    def __init__(self) -> None:
        self.low: Tensor | None = None
        self.high: Tensor | None = None
        self.total: Tensor | None = None
        self.count = 0

    def __call__(self, module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        eta = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).double()  # (b*t, h)
        low, high, total = eta.min(0).values, eta.max(0).values, eta.sum(0)
        if self.low is None:
            self.low, self.high, self.total = low, high, total
        else:
            self.low, self.high = torch.minimum(self.low, low), torch.maximum(self.high, high)
            self.total = self.total + total
        self.count += eta.shape[0]

    def result(self, index: int) -> SignalRange:
        if self.low is None or self.high is None or self.total is None:
            raise RuntimeError(f"block {index}: the nonlinearity was never called")
        mean = self.total / self.count
        return SignalRange(index, self.low.cpu().numpy(), self.high.cpu().numpy(), mean.cpu().numpy())


def signal_ranges(model: DeepWiener, data: IOData) -> list[SignalRange]:
    """Simulate ``model`` on ``data.u`` from the zero state and record each block's ``eta`` range.

    Args:
        model: the model (left in its train/eval mode; run in eval mode).
        data: a record with the model's ``dt``.

    Returns:
        One ``SignalRange`` per block.

    Raises:
        DataError: ``data.dt`` differs from the model's, or ``data.u`` has the wrong width.
    """
    check_dt(data.dt, model.dt, f"record {data.name!r}")
    u = torch.tensor(model.check_numpy_input(data.u), dtype=model.u_mean.dtype, device=model.u_mean.device)[None]
    recorders = [_RangeRecorder() for _ in model.blocks]
    handles = [block.sigma.register_forward_hook(rec) for block, rec in zip(model.blocks, recorders, strict=True)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            v = model.encoder(model.normalize_input(u))
            for block in model.blocks:  # block by block: the fused stack ("auto" on the CPU) calls no map module
                v, _ = block(v, None, "auto")
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return [rec.result(i) for i, rec in enumerate(recorders)]


@torch.no_grad()
def _curve(index: int, name: str, sigma: nn.Module, observed: SignalRange, n_points: int) -> NonlinearityCurve:
    ref = next(iter(sigma.parameters()), None)
    dtype = ref.dtype if ref is not None else torch.get_default_dtype()
    device = ref.device if ref is not None else torch.device("cpu")
    width = observed.low.shape[0]
    steps = np.linspace(0.0, 1.0, n_points)[:, None]
    eta = observed.low + steps * (observed.high - observed.low)  # (f, h)
    output = np.empty_like(eta)
    for c in range(width):
        grid = np.broadcast_to(observed.mean, eta.shape).copy()  # (f, h)
        grid[:, c] = eta[:, c]
        out = sigma(torch.as_tensor(grid, dtype=dtype, device=device))  # (f, h)
        output[:, c] = out[:, c].double().cpu().numpy()
    return NonlinearityCurve(index, name, eta, output)


def nonlinearity_curves(model: DeepWiener, data: IOData, n_points: int = 201) -> list[NonlinearityCurve]:
    """Each block's static nonlinearity over the range of its input seen on ``data``.

    Args:
        model: the model.
        data: the record whose ``eta`` ranges define the grids (same ``dt`` as the model).
        n_points: grid points per channel.

    Returns:
        One ``NonlinearityCurve`` per block.

    Raises:
        DataError: as :func:`signal_ranges`.
    """
    ranges = signal_ranges(model, data)
    name = model.config.nonlinearity
    return [_curve(r.index, name, block.sigma, r, n_points) for block, r in zip(model.blocks, ranges, strict=True)]
