"""The fused path of a deep Wiener model: its whole stack handed to one autograd node (``engines.fused``).

Each step discretises every block once, in torch (so autograd runs through the discretisation), takes its modal
form (``LinearSystem.modal``: LRU, S5 and S4D are diagonal already, S4 is diagonalised per DPLR block like the
compiled engine does), stacks the discrete parameters of all blocks and calls :func:`engines.fused.stack`. The
scaler, the integrator and the states' change to and from modal coordinates stay in torch.

It applies to models whose blocks are LTI layers (not the selective S6), without a norm, with dropout off (p = 0,
or in eval mode), on the CPU in float32 or float64, with any map of ``nonlinearities`` and any skip.
:func:`applies` says whether a call runs here; ``mode="fused"`` on a model it does not apply to raises.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from deepwiener.engines import fused
from deepwiener.errors import ConfigError
from deepwiener.layers import LTILayer
from deepwiener.nonlinearities import GLU, MLP, Nonlinearity

__all__ = ["AUTO_MAX_WIDTH", "applies", "forward", "unsupported"]

AUTO_MAX_WIDTH = 8
"""The widest stack (``d_model``) that ``"auto"`` runs fused. Measured on an idle 2-core CPU (4 LRU blocks, float32,
fused against compiled, ms): a 20,000-sample simulation of batch 1 at width 3 / 8 / 16 / 32 / 64 took 6.0 / 17.5 /
36 / 76 / 154 against 6.5 / 18.5 / 15 / 23 / 32; a training step of 16 x 1024 took 6.8 / 17.5 / 29 / 57 / 129
against 12.2 / 25.6 / 33 / 45 / 88. The fused kernels parallelise over batch rows and compute the projections
themselves, which wins for narrow stacks and loses to PyTorch's matrix products for wide ones."""


def unsupported(model: Any) -> str | None:
    """Why the fused kernels cannot run ``model`` (a ``DeepWiener``) as it is now, or None if they can."""
    blocks = model.blocks
    if not all(isinstance(b.lti, LTILayer) for b in blocks):
        return f"layer {model.config.layer!r} is not LTI (the fused kernels run diagonal LTI blocks)"
    if any(not isinstance(b.norm, nn.Identity) for b in blocks):
        return "a norm inside the blocks (norm='layer')"
    if model.training and any(b.dropout.p > 0 for b in blocks):
        return "dropout in training mode"
    if model.u_mean.dtype not in (torch.float32, torch.float64):
        return f"dtype {model.u_mean.dtype}"
    kinds = {_map_kind(b.sigma) for b in blocks}
    if None in kinds:
        return f"nonlinearity {model.config.nonlinearity!r}"
    if len(kinds) > 1:  # the kernels take one map for the whole stack
        return f"blocks with different maps ({', '.join(sorted(kinds))})"
    return None


def applies(model: Any, mode: str, device_type: str) -> bool:
    """Whether ``model.forward(..., mode)`` runs fused on this device (``engines.fused.resolve``'s policy for the
    kernels; "auto" on a model the kernels do not implement, or wider than ``AUTO_MAX_WIDTH``, takes the per-block
    engines).

    Raises:
        ConfigError: "fused" on a model the kernels do not implement (the reason is said);
            ``numba_runtime.CompiledUnavailableError`` for "fused" off the CPU or without numba.
    """
    if mode not in ("auto", "fused") or (mode == "auto" and model.config.d_model > AUTO_MAX_WIDTH):
        return False
    reason = unsupported(model)
    if reason is not None:
        if mode == "fused":
            raise ConfigError(f"mode 'fused' cannot run this model: {reason}; use 'auto' or 'compiled'")
        return False
    return fused.resolve(mode, device_type)


def _map_kind(sigma: Nonlinearity) -> str | None:
    """The kernels' name of a map (``engines.fused.MAP_KINDS``), or None."""
    if isinstance(sigma, GLU):
        return "glu"
    if isinstance(sigma, MLP):
        return "mlp"
    form = sigma.channel_map()
    return form[0] if form is not None and form[0] in fused.MAP_KINDS else None


def _map_params(sigma: Nonlinearity, width: int, dtype: torch.dtype) -> tuple[Tensor, ...]:
    """(P (3, d), W1 (h, d), c1 (h,), W2 (d, h), c2 (d,)) of one block's map (``engines.fused.StackParams``)."""
    empty = torch.zeros(0, width, dtype=dtype)
    if isinstance(sigma, GLU):
        P = torch.cat([sigma.bias[None], torch.zeros(2, width, dtype=dtype)])
        return P, sigma.proj.weight, sigma.proj.bias, empty.T, torch.zeros(width, dtype=dtype)
    if isinstance(sigma, MLP):
        P = torch.cat([sigma.bias[None], torch.zeros(2, width, dtype=dtype)])
        return P, sigma.hidden.weight, sigma.hidden.bias, sigma.out.weight, sigma.out.bias
    form = sigma.channel_map()
    assert form is not None
    values = list(form[1].values())  # bias, then the map's parameters in the order of stepgraph.MAPS
    values += [torch.zeros(width, dtype=dtype)] * (3 - len(values))
    return torch.stack(values), empty, empty[:, 0], empty.T, torch.zeros(width, dtype=dtype)


def forward(model: Any, u: Tensor, states: tuple[Tensor | None, ...]) -> tuple[Tensor, list[Tensor]]:
    """The stack from the normalised input to the decoder's output, fused.

    Args:
        model: a ``DeepWiener`` model that :func:`applies`.
        u: (batch, time, n_u) physical units.
        states: one (batch, *state_shape) complex state per block, or None for zeros.

    Returns:
        y_n: (batch, time, n_y) the decoder's output (before the output scaler and integrator), and the blocks'
        final states, (batch, *state_shape) complex each.
    """
    blocks = model.blocks
    dtype = model.u_mean.dtype
    width = model.config.d_model
    batch = u.shape[0]
    systems = [b.lti.discretize() for b in blocks]
    modal = [s.modal() for s in systems]
    diags = [m[0] for m in modal]
    lam = torch.stack([torch.stack([s.lam.real, s.lam.imag]) for s in diags])  # (L, 2, n)
    Bs = torch.stack([torch.cat([s.B.real, s.B.imag]) for s in diags])  # (L, 2n, d)
    Cs = torch.stack([torch.cat([s.C.real, -s.C.imag], dim=1) for s in diags])  # (L, d, 2n)
    D = torch.stack([s.D for s in diags])
    F = (torch.stack([b.skip.weight for b in blocks]) if blocks[0].skip is not None
         else torch.zeros(len(blocks), 0, 0, dtype=dtype))
    maps = [torch.stack(parts) for parts in zip(*(_map_params(b.sigma, width, dtype) for b in blocks), strict=True)]
    params = fused.StackParams(model.encoder.weight, model.encoder.bias, lam, Bs, Cs, D, F, *maps,
                               model.decoder.weight, model.decoder.bias)
    n = lam.shape[2]
    if all(x is None for x in states):
        x0 = torch.zeros(len(blocks), 2 * n, batch, dtype=dtype)
    else:
        zs = [to_modal(x if x is not None else s.init_state(batch))
              for s, (_, to_modal, _), x in zip(systems, modal, states, strict=True)]
        x0 = torch.stack([torch.cat([z.real, z.imag], dim=1).T for z in zs]).to(dtype)
    skip = "linear" if blocks[0].skip is not None else ("identity" if blocks[0].use_skip else "none")
    y_n, xT = fused.stack(params, model.normalize_input(u), x0, _map_kind(blocks[0].sigma), skip,
                          diags[0].readout)
    finals = [from_modal(torch.complex(xT[i, :n].T, xT[i, n:].T)) for i, (_, _, from_modal) in enumerate(modal)]
    return y_n, finals
