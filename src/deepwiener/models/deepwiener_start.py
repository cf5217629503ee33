"""Data-driven initialisation: a deep Wiener model that starts as the best linear model of its training data.

``initialize_linear(model, train, val)`` (what ``DeepWiener.start_linear`` runs for ``TrainConfig(init="linear")``)
identifies a linear state-space model by subspace identification (``identification.identify_linear``: N4SID of
orders 1 .. ``max_order`` and ``2 d_state``, the order with the lowest simulation RMSE on the validation records
wins) and writes it into the model with :func:`embed_linear`, so that before training the model's free-run output
**equals** the linear model's (to round-off). Training then starts from the linear model.

Construction. With ``m = n_u``, ``p = n_y`` and ``h = d_model``, the channels are split into the inputs
``I = 0..m-1``, the *carrying* channels ``P = m..m+p-1`` and ``N = m+p..m+2p-1``, and the free rest. The
linear model ``x+ = A x + B u', y' = C x + D u'`` works on its own normalised signals
``u' = (u - a_mean) / a_std`` and ``y = b_mean + b_std y'``; the model's own scaling is
``u_n = (u - u_mean) / u_std`` and ``y = y_mean + y_std (W_dec v_L + b_dec)``.

* Encoder: rows I map ``u_n`` to ``u'`` exactly (weight ``diag(u_std / a_std)``, bias
  ``(u_mean - a_mean) / a_std``); rows P and N are zero; the free rows keep their random values.
* Block 0, LTI layer: ``A = V diag(lam) V^-1`` is diagonalised (``analysis.diagonal_from_real``: one complex
  mode per conjugate pair or real pole) into the first k <= ``d_state`` modes, which read the input channels
  only (their B columns of the other channels are 0), each scaled to ``||B_i|| = ||C_i||`` (eigenvectors fix a
  mode only up to a factor; unbalanced, the first optimiser steps, about lr per parameter, could change a mode
  by a large fraction). Rows P read ``+y'`` and rows N read ``-y'`` (``C = +-C_lin`` on the linear modes, 0 on
  the others; ``D = +-D_lin`` on the input columns, 0 elsewhere).
  The remaining modes keep the layer's random eigenvalues, B and the C rows of the other channels, so they
  start uncoupled from the carrying channels but alive (modes with B = C = 0 would never receive a gradient).
  The whole system is written back with ``type(layer).from_system`` (exact; S5 then has Delta = 1 for every
  mode).
* Block 0, nonlinearity: on P and N it is made to depend on its own channel only, ``sigma_c = f``, with
  ``f(y) - f(-y) = kappa y`` exactly: gelu and relu (``f(y) - f(-y) = y (Phi(y) + Phi(-y)) = y``, kappa 1),
  identity, poly with a2 = a3 = 0 and linear_tanh with a = 0 (``f(y) = y``, kappa 2), glu with value row ``e_c`` and a
  zero gate (``f(y) = y/2``, kappa 1), mlp with one hidden unit ``gelu(z_c)`` read by output c (kappa 1); every
  bias on P and N is 0. Since ``v0 = 0`` on P and N, the block's output there is ``f(+y')`` and ``f(-y')``.
* Blocks 1..L-1: their LTI rows P and N are zero (C and D) and their nonlinearity maps them to 0 (bias 0;
  glu: value rows 0; mlp: output rows 0), so the identity skip passes P and N through untouched (a learned
  skip gets identity rows on P and N).
* Decoder: ``W_dec[:, P] = diag(b_std / (kappa y_std)) = -W_dec[:, N]``, the other columns 0, and
  ``b_dec = (b_mean - y_mean) / y_std``, so ``y = b_mean + b_std (f(y') - f(-y')) / kappa = b_mean + b_std y'``.

The zero decoder columns of the free channels receive a gradient at the first step, after which the free
channels, the other blocks and the random modes of block 0 can add nonlinear dynamics. The first optimiser steps
also move the linear part: the validation error after the first epoch may exceed the linear model's by a few
percent before it falls (``TrainConfig.warmup_epochs`` softens this).

Requirements (else ConfigError): a ``DeepWiener`` model with layer lru or s5 (the layers with ``from_system``),
skip "identity" or "linear", norm "none" (LayerNorm mixes the channels), a nonlinearity among
:data:`LINEAR_INIT_NONLINEARITIES` (elu and tanh cannot pass a signal exactly), ``d_model >= n_u + 2 n_y`` and
validation records to select the order on. Dropout is allowed (it is off in evaluation).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from deepwiener.data import IOData, ValidationRecord, output_increments
from deepwiener.errors import ConfigError
from deepwiener.identification import LinearStateSpace, identify_linear
from deepwiener.layers import LTILayer
from deepwiener.nonlinearities import Nonlinearity
from deepwiener.systems import DiagonalSSM, diagonal_from_real

LINEAR_INIT_LAYERS: tuple[str, ...] = ("lru", "s5")
LINEAR_INIT_NONLINEARITIES: tuple[str, ...] = ("gelu", "relu", "identity", "poly", "linear_tanh", "glu", "mlp")


def initialize_linear(model: Any, train: Sequence[IOData], val: Sequence[ValidationRecord]) -> LinearStateSpace:
    """Identify the best linear model of the data and write it into ``model`` (see the module docstring).

    Call it after the model's scaler is set; the parameters keep the model's dtype and device.

    Args:
        model: a ``DeepWiener`` model meeting the requirements of the module docstring.
        train: training records (the linear model is fitted on them).
        val: validation records to choose the order on (``identification.identify_linear``).

    A model with an output integrator (``ModelConfig.integrator``) gets the linear model of the output's
    increments (identified and validated on ``data.output_increments`` of the records), so that its running
    sum reproduces the linear model's.

    Returns:
        The linear model, whose free-run output the model now reproduces (its increments, with an integrator).

    Raises:
        ConfigError: an unsupported model, or no validation records.
        DataError: too little data for the identification.
    """
    check_linear_init(model)
    if model.integrates_output:
        train = [output_increments(rec) for rec in train]
        val = [ValidationRecord(output_increments(rec), start) for rec, start in val]
    linear = identify_linear(train, val, max_modes=model.config.d_state)
    embed_linear(model, linear)
    return linear


def check_linear_init(model: Any) -> None:
    """Raise ConfigError unless a ``DeepWiener`` model can start as a linear model (requirements: module
    docstring)."""
    cfg = model.config
    problems = []
    if cfg.layer not in LINEAR_INIT_LAYERS:
        problems.append(f"layer {cfg.layer!r} (need one of {LINEAR_INIT_LAYERS}, which can be built from a system)")
    if cfg.skip == "none":
        problems.append("skip 'none' (need 'identity' or 'linear' to carry the linear output past later blocks)")
    if cfg.norm != "none":
        problems.append(f"norm {cfg.norm!r} (need 'none': a norm mixes the channels)")
    if cfg.nonlinearity not in LINEAR_INIT_NONLINEARITIES:
        problems.append(f"nonlinearity {cfg.nonlinearity!r} (need one of {LINEAR_INIT_NONLINEARITIES}, which can "
                        "pass a signal exactly)")
    if cfg.d_model < cfg.n_u + 2 * cfg.n_y:
        problems.append(f"d_model {cfg.d_model} (need >= n_u + 2 n_y = {cfg.n_u + 2 * cfg.n_y})")
    if problems:
        raise ConfigError("init='linear' is not possible with " + "; ".join(problems))


@torch.no_grad()
def embed_linear(model: Any, linear: LinearStateSpace) -> None:
    """Set ``model``'s parameters so that its output equals ``linear``'s (construction: module docstring).

    Args:
        model: a deep Wiener model meeting the requirements of the module docstring, its scaler set.
        linear: a stable linear model with the model's n_u and n_y, needing at most ``d_state`` complex modes.

    Raises:
        ConfigError: an unsupported model, mismatched channel counts, or a linear model needing more modes.
    """
    check_linear_init(model)
    cfg = model.config
    if (linear.n_u, linear.n_y) != (cfg.n_u, cfg.n_y):
        raise ConfigError(f"the linear model has n_u={linear.n_u}, n_y={linear.n_y}; the model has n_u={cfg.n_u}, "
                          f"n_y={cfg.n_y}")
    m, p = cfg.n_u, cfg.n_y
    inputs, plus, minus = slice(0, m), slice(m, m + p), slice(m + p, m + 2 * p)
    carry = slice(m, m + 2 * p)
    first = model.blocks[0]
    system = _balanced(diagonal_from_real(linear.A, linear.B, linear.C, linear.D, first.lti.options.readout))
    if system.lam.shape[0] > cfg.d_state:
        raise ConfigError(f"the linear model needs {system.lam.shape[0]} complex modes; d_state is {cfg.d_state}")
    _set_encoder(model, linear, inputs, carry)
    _load_system(first.lti, _first_system(first.lti.discretize(), system, inputs, plus, minus))
    kappa = _PASS[cfg.nonlinearity](first.sigma, carry)
    for block in model.blocks[1:]:
        for name in ("C_re", "C_im", "D"):  # lru and s5: C = C_re + i C_im and D are parameters
            getattr(block.lti, name)[carry] = 0
        _SILENCE[cfg.nonlinearity](block.sigma, carry)
    for block in model.blocks:
        if block.skip is not None:  # a learned skip F: identity rows on the carrying channels
            block.skip.weight[carry] = 0
            block.skip.weight[carry, carry] = _eye(block.skip.weight, 2 * p)
    scale = _as(model.decoder.weight, linear.y_std) / (kappa * model.y_std)  # (p,)
    model.decoder.weight.zero_()
    model.decoder.weight[:, plus] = torch.diag(scale)
    model.decoder.weight[:, minus] = -torch.diag(scale)
    model.decoder.bias.copy_((_as(model.decoder.bias, linear.y_mean) - model.y_mean) / model.y_std)


def _as(like: Tensor, value: np.ndarray) -> Tensor:
    return torch.as_tensor(np.array(value), dtype=like.dtype, device=like.device)  # a copy: value is read-only


def _eye(like: Tensor, n: int) -> Tensor:
    return torch.eye(n, dtype=like.dtype, device=like.device)


def _balanced(system: DiagonalSSM) -> DiagonalSSM:
    """The same system with every mode scaled to ``||B_i|| = ||C_i||`` (x_i -> a_i x_i, B_i a_i, C_i / a_i).

    Eigenvectors fix each mode's state only up to a factor; unbalanced, a mode may have a tiny B row and a huge
    C column, and the first optimiser steps (of about lr in every parameter) would change it by a large
    fraction. A mode with B_i = 0 or C_i = 0 is left as it is.
    """
    b, c = system.B.abs().norm(dim=1), system.C.abs().norm(dim=0)  # (k,) each
    scale = torch.where((b > 0) & (c > 0), torch.sqrt(c / b.clamp_min(1e-300)), torch.ones_like(b))
    return DiagonalSSM(system.lam, system.B * scale[:, None], system.C / scale, system.D, system.readout)


def _set_encoder(model: Any, linear: LinearStateSpace, inputs: slice, carry: slice) -> None:
    """Input rows: ``u' = (u - a_mean) / a_std`` from ``u_n``; carrying rows: 0; the other rows unchanged."""
    weight, bias = model.encoder.weight, model.encoder.bias
    a_mean, a_std = _as(bias, linear.u_mean), _as(bias, linear.u_std)
    weight[inputs] = torch.diag(model.u_std / a_std)
    bias[inputs] = (model.u_mean - a_mean) / a_std
    weight[carry], bias[carry] = 0, 0


def _first_system(current: DiagonalSSM, linear: DiagonalSSM, inputs: slice, plus: slice,
                  minus: slice) -> DiagonalSSM:
    """Block 0's system: the linear modes first (inputs -> +-y' on P/N), the layer's other modes after them.

    Args:
        current: the layer's system, (n,) modes, d_in = d_out = d_model.
        linear: the linear model in half-pair form, k <= n modes, d_in = n_u, d_out = n_y.
    """
    k = linear.lam.shape[0]
    lam, B, C = (t.detach().to(torch.complex128).cpu().clone() for t in (current.lam, current.B, current.C))
    D = current.D.detach().to(torch.float64).cpu().clone()
    lam[:k] = linear.lam
    B[:k] = 0
    B[:k, inputs] = linear.B
    C[plus], C[minus], D[plus], D[minus] = 0, 0, 0, 0
    C[plus, :k], C[minus, :k] = linear.C, -linear.C
    D[plus, inputs], D[minus, inputs] = linear.D, -linear.D
    return DiagonalSSM(lam, B, C, D, current.readout)


def _load_system(layer: LTILayer, system: DiagonalSSM) -> None:
    """Copy the parameters of ``type(layer).from_system(system)`` into ``layer`` (its dtype and device)."""
    layer.load_state_dict(type(layer).from_system(system, layer.options).state_dict())


def _zero_bias(sigma: Nonlinearity, rows: slice) -> None:
    sigma.bias[rows] = 0


def _pass_elementwise(sigma: Nonlinearity, rows: slice) -> float:
    """gelu, relu: f = sigma with f(y) - f(-y) = y."""
    _zero_bias(sigma, rows)
    return 1.0


def _pass_identity(sigma: Nonlinearity, rows: slice) -> float:
    """identity: f(y) = y, so f(y) - f(-y) = 2 y."""
    _zero_bias(sigma, rows)
    return 2.0


def _pass_poly(sigma: Nonlinearity, rows: slice) -> float:
    """poly: f(y) = y (a2 = a3 = 0), so f(y) - f(-y) = 2 y."""
    _zero_bias(sigma, rows)
    sigma.a2[rows], sigma.a3[rows] = 0, 0
    return 2.0


def _pass_linear_tanh(sigma: Nonlinearity, rows: slice) -> float:
    """linear_tanh: f(y) = y (a = 0), so f(y) - f(-y) = 2 y."""
    _zero_bias(sigma, rows)
    sigma.gain[rows] = 0
    return 2.0


def _pass_glu(sigma: Nonlinearity, rows: slice) -> float:
    """glu: value row e_c, gate 0, so f(y) = y sigmoid(0) = y / 2."""
    _zero_bias(sigma, rows)
    width = sigma.bias.shape[0]
    gate = slice(width + rows.start, width + rows.stop)  # proj's rows: value 0..h-1, gate h..2h-1
    sigma.proj.weight[rows], sigma.proj.bias[rows] = 0, 0
    sigma.proj.weight[rows, rows] = _eye(sigma.proj.weight, rows.stop - rows.start)
    sigma.proj.weight[gate], sigma.proj.bias[gate] = 0, 0
    return 1.0


def _pass_mlp(sigma: Nonlinearity, rows: slice) -> float:
    """mlp: output c reads only hidden unit c = gelu(z_c), so f = gelu."""
    _zero_bias(sigma, rows)
    eye = _eye(sigma.hidden.weight, rows.stop - rows.start)
    sigma.hidden.weight[rows], sigma.hidden.bias[rows] = 0, 0
    sigma.hidden.weight[rows, rows] = eye
    sigma.out.weight[rows], sigma.out.bias[rows] = 0, 0
    sigma.out.weight[rows, rows] = eye
    return 1.0


def _silence_glu(sigma: Nonlinearity, rows: slice) -> None:
    """glu: value rows 0, so the output rows are 0."""
    sigma.proj.weight[rows], sigma.proj.bias[rows] = 0, 0


def _silence_mlp(sigma: Nonlinearity, rows: slice) -> None:
    """mlp: output rows 0."""
    sigma.out.weight[rows], sigma.out.bias[rows] = 0, 0


_PASS: dict[str, Callable[[Nonlinearity, slice], float]] = {
    "gelu": _pass_elementwise, "relu": _pass_elementwise, "identity": _pass_identity, "poly": _pass_poly,
    "linear_tanh": _pass_linear_tanh, "glu": _pass_glu, "mlp": _pass_mlp,
}
"""Per nonlinearity: make f on the carrying rows depend on its own channel with f(y) - f(-y) = kappa y; kappa."""

_SILENCE: dict[str, Callable[[Nonlinearity, slice], None]] = {
    "gelu": _zero_bias, "relu": _zero_bias, "identity": _zero_bias, "poly": _zero_bias, "linear_tanh": _zero_bias,
    "glu": _silence_glu, "mlp": _silence_mlp,
}
"""Per nonlinearity: make the carrying rows 0 when their input rows are 0 (later blocks)."""
