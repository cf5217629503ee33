"""Slope regularisation of a model's static maps, for models that must extrapolate beyond the training amplitudes.

A static map is fitted only on the inputs it sees in training; beyond them it continues as its parametrisation
happens to, and a steep continuation makes a deep Wiener model's error grow fast outside the training range. The
penalty here keeps the maps' slopes small on and beyond the range seen in a batch::

    R = mean over maps m and points i of || (phi_m(z_i + h d_i) - phi_m(z_i - h d_i)) / (2 h) ||^2
    z_i = s_i * eta_i,   s_i ~ U(0, reach),   d_i a random unit direction,   h = STEP

where eta_i are map inputs recorded in the batch's forward pass (detached: the penalty shapes the maps, not the
layers that feed them), so the points cover the batch's range and ``reach`` times beyond it, and the central
difference is the map's directional slope there (its Jacobian along d_i for maps that mix channels). It is the
squared-gradient (Lipschitz) penalty on the map alone; with the identity skip of a deep Wiener block, a block whose
map slope goes to zero continues as its bypass (plus a constant) where the penalty holds it flat.

Use: ``TrainConfig(map_slope=weight, map_slope_reach=reach)``; maps computed inside a fused kernel (the "fused"
engine of deep Wiener stacks, the compiled LFR kernel) record no inputs, and the training step says so.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from deepwiener.errors import ConfigError
from deepwiener.nonlinearities import Nonlinearity

STEP = 1e-2
"""Half-width h of the central difference, in the maps' (normalised) input units."""
POINTS = 256
"""Points drawn per map and step."""


def static_maps(model: nn.Module) -> list[Nonlinearity]:
    """The model's static maps (every ``Nonlinearity`` module), in module order."""
    return [module for module in model.modules() if isinstance(module, Nonlinearity)]


@contextmanager
def recorded_map_inputs(model: nn.Module) -> Iterator[dict[Nonlinearity, list[Tensor]]]:
    """Record the inputs of every static map of ``model`` while the block runs.

    Yields:
        {map: [input tensors (..., width), one per call]}, filled as the model runs; the hooks are removed on exit.
    """
    seen: dict[Nonlinearity, list[Tensor]] = {m: [] for m in static_maps(model)}
    handles = [m.register_forward_pre_hook(lambda module, args: seen[module].append(args[0].detach()))
               for m in seen]
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


def map_slope_penalty(inputs: dict[Nonlinearity, list[Tensor]], reach: float) -> Tensor:
    """The penalty R of the module docstring.

    Args:
        inputs: recorded map inputs (``recorded_map_inputs``), each (..., width).
        reach: the points' largest multiple of a recorded input, > 0.

    Returns:
        () tensor in the maps' dtype, differentiable in the maps' parameters.

    Raises:
        ConfigError: no map recorded any input (none ran as a module: a fused or compiled engine).
    """
    terms = []
    for phi, calls in inputs.items():
        if not calls:
            continue
        eta = torch.cat([c.reshape(-1, c.shape[-1]) for c in calls])  # (points seen, width)
        pick = torch.randint(eta.shape[0], (min(POINTS, eta.shape[0]),), device=eta.device)
        z = eta[pick] * torch.rand(len(pick), 1, dtype=eta.dtype, device=eta.device) * reach
        d = torch.randn_like(z)
        d = d / d.norm(dim=1, keepdim=True).clamp_min(1e-12)
        slope = (phi(z + STEP * d) - phi(z - STEP * d)) / (2 * STEP)  # (points, width)
        terms.append(slope.pow(2).sum(1).mean())
    if not terms:
        raise ConfigError("map_slope: no static map ran as a module in the training step (a fused or compiled "
                          "engine computes them inside its kernel); train with mode 'scan' or 'loop', or set "
                          "map_slope to 0")
    return torch.stack(terms).mean()
