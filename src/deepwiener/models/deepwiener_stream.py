"""The compiled streamer of a deep Wiener model: the model flattened into arrays, stepped by one numba function.

:func:`flatten` exports a ``DeepWiener`` model once to flat float64/complex128 numpy arrays
(``engines.stream_kernel.StreamParams``: the scalers folded into the encoder and decoder, exact up to rounding),
and :class:`CompiledStreamer` runs the kernel of ``engines.stream_kernel`` on them: a few microseconds per sample
(``benchmarks/speed``). The output integrator's running sum is kept here, in float64.

``A`` is block diagonal in the layer's own coordinates (so ``state`` interoperates with ``model.forward``):
1 x 1 blocks (the eigenvalues) for diagonal systems (LRU, S5, S4D), one dense m x m block per DPLR block of S4
(one per channel in its SISO bank, one per MIMO block with ``block_order``; not diagonalised: its eigenvectors
can be ill-conditioned), as ``system.blocks()`` gives them. Supported nonlinearities are
the elementwise ones (gelu, exact or tanh-approximated; elu; tanh; relu; identity), poly and linear_tanh; a
model with another nonlinearity (glu, mlp), another norm or layer (the selective S6) gets the
``TorchStreamer`` (the same interface around ``model.stepper()``), and so does every model when numba is
missing (``numba_runtime``'s policy: said once in the log). Dropout is ignored: streaming is inference.

Everything runs in float64 whatever the model's dtype, so a float64 model is reproduced to rounding (the tests
ask 1e-10) and a float32 one to float32 accuracy. The functions take a ``DeepWiener`` model (duck-typed:
``blocks``, ``encoder``, ``decoder``, the scaler buffers), which imports this module.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from deepwiener.engines import numba_runtime, stream_kernel
from deepwiener.engines.stream_kernel import ACTIVATIONS, SKIPS, StreamParams
from deepwiener.errors import DataError
from deepwiener.models.streamers import Streamer, TorchStreamer
from deepwiener.nonlinearities import Nonlinearity
from deepwiener.stepgraph import MAPS

__all__ = ["CompiledStreamer", "fast_stepper", "flatten"]

logger = logging.getLogger(__name__)


class _Unsupported(Exception):
    """A part of the model the kernel does not implement (the reason is the message)."""


def _np(t: Tensor, dtype: type = np.float64) -> np.ndarray:
    """A detached tensor as a C-contiguous numpy array of ``dtype`` (float64 or complex128)."""
    return np.ascontiguousarray(t.detach().cpu().resolve_conj().numpy(), dtype=dtype)


def _activation_params(sigma: nn.Module, width: int) -> tuple[int, np.ndarray]:
    """Activation code and its (3, d) parameters: bias, c1, c2 (``engines.stream_kernel``; c1 and c2 are the map's
    parameters in the order of ``stepgraph.MAPS``).

    Raises:
        _Unsupported: for a nonlinearity the kernel does not implement.
    """
    form = sigma.channel_map() if isinstance(sigma, Nonlinearity) else None
    if form is None or form[0] not in ACTIVATIONS:
        raise _Unsupported(f"the {type(sigma).__name__} nonlinearity")
    name, values = form
    params = np.zeros((3, width))
    for row, key in enumerate(("bias", *MAPS[name])):
        params[row] = _np(values[key])
    return ACTIVATIONS[name], params


def _block_params(block: nn.Module) -> dict[str, Any]:
    """One block's arrays (keys of ``StreamParams`` without the encoder/decoder); ``block`` is a deep Wiener
    model's ``Block``.

    Raises:
        _Unsupported: a layer, norm or nonlinearity the kernel does not implement.
    """
    if not hasattr(block.lti, "discretize"):
        raise _Unsupported(f"the {type(block.lti).__name__} layer (not LTI)")
    system = block.lti.discretize()
    width = system.d_in
    A, B, C = (_np(t, np.complex128) for t in system.blocks())
    kind, act = _activation_params(block.sigma, width)
    norm = np.stack([np.ones(width), np.zeros(width)])
    eps = 0.0
    if isinstance(block.norm, nn.LayerNorm):
        if block.norm.weight is not None:
            norm[0] = _np(block.norm.weight)
        if block.norm.bias is not None:
            norm[1] = _np(block.norm.bias)
        eps = block.norm.eps
    elif not isinstance(block.norm, nn.Identity):
        raise _Unsupported(f"the {type(block.norm).__name__} norm")
    if block.skip is not None:
        skip, F = SKIPS["linear"], _np(block.skip.weight)
    else:
        skip, F = SKIPS["identity" if block.use_skip else "none"], np.zeros((width, width))
    flags = [isinstance(block.norm, nn.LayerNorm), system.readout == "next", kind, skip]
    return {"flags": np.array(flags, dtype=np.int64), "eps": eps, "norm": norm, "A": A, "B": B, "C": C,
            "D": _np(system.D), "act": act, "F": F}


@torch.no_grad()
def flatten(model: Any) -> StreamParams:
    """A ``DeepWiener`` model as flat float64/complex128 arrays for the streaming kernel (a snapshot).

    Raises:
        _Unsupported: the model has a part the kernel does not implement.
    """
    blocks = [_block_params(block) for block in model.blocks]
    u_mean, u_std, y_mean, y_std = (_np(t) for t in (model.u_mean, model.u_std, model.y_mean, model.y_std))
    enc_W = _np(model.encoder.weight) / u_std  # (d, n_u)
    enc_b = _np(model.encoder.bias) - enc_W @ u_mean
    dec_W = y_std[:, None] * _np(model.decoder.weight)  # (n_y, d)
    dec_b = y_mean + y_std * _np(model.decoder.bias)
    stacked = {key: np.ascontiguousarray(np.stack([np.asarray(b[key]) for b in blocks])) for key in blocks[0]}
    return StreamParams(enc_W=enc_W, enc_b=enc_b, dec_W=dec_W, dec_b=dec_b, **stacked)


class CompiledStreamer(Streamer):
    """A ``DeepWiener`` model flattened into arrays, stepped by one compiled function (module docstring).

    Attributes:
        params: the exported arrays (a snapshot: later changes of the model are not seen).
    """

    def __init__(self, model: Any, params: StreamParams) -> None:
        super().__init__(model.config.n_u, model.config.n_y)
        self.params = params
        self._state_shapes = [tuple(block.lti.init_state(1).shape[1:]) for block in model.blocks]
        self._x = np.zeros(params.B.shape[:2], dtype=np.complex128)  # (L, N)
        self._total = np.zeros(self.n_y) if model.integrates_output else None  # the output integrator's sum
        self._split_state, self._join_state = model.split_state, model.join_state
        self._one = stream_kernel.bind(params, self._x)

    def reset(self, state: tuple[Tensor, ...] | None = None) -> None:
        if state is None:
            self._x[:] = 0
            if self._total is not None:
                self._total[:] = 0
            return
        blocks, total = self._split_state(state, len(self._state_shapes), 1, "one per block")
        for layer, (x, shape) in enumerate(zip(blocks, self._state_shapes, strict=True)):
            if tuple(x.shape) != (1, *shape):
                raise DataError(f"state {layer} must have shape {(1, *shape)}, got {tuple(x.shape)}")
            self._x[layer] = _np(x, np.complex128).reshape(-1)
        if total is not None:
            if tuple(total.shape) != (1, self.n_y):
                raise DataError(f"the integrator's sum must have shape (1, {self.n_y}), got {tuple(total.shape)}")
            self._total[:] = _np(total).reshape(-1)

    @property
    def state(self) -> tuple[Tensor, ...]:
        blocks = tuple(torch.from_numpy(x.copy()).reshape(1, *shape)
                       for x, shape in zip(self._x, self._state_shapes, strict=True))
        return self._join_state(blocks, None if self._total is None else torch.from_numpy(self._total.copy())[None])

    def step(self, u_k: Any) -> np.ndarray:
        """One sample: u_k (n_u,) -> y_k (n_y,) float64 (the streamer's own one-sample call: ``stream_kernel.bind``,
        no per-call allocation of the input)."""
        y = np.empty(self.n_y)
        self._one(np.ascontiguousarray(self.sample(u_k)), y)
        if self._total is None:
            return y
        self._total += y
        return self._total.copy()

    def advance(self, u: np.ndarray) -> np.ndarray:
        y = stream_kernel.run(self.params, u, self._x)
        if self._total is None:
            return y
        y = self._total + np.cumsum(y, axis=0)
        self._total[:] = y[-1]
        return y


def fast_stepper(model: Any) -> Streamer:
    """The fastest streamer for a ``DeepWiener`` model: compiled when every part is supported and numba runs, else
    the ``TorchStreamer``.

    For inference: dropout is not applied. The export is a snapshot of the current parameters; build a new
    streamer after training further. One streamer holds one state: use one per thread.
    """
    try:
        params = flatten(model)
    except _Unsupported as exc:
        logger.info("fast_stepper: %s is not compiled; streaming through model.stepper()", exc)
        return TorchStreamer(model)
    if numba_runtime.resolve("auto", "cpu", stream_kernel.KERNELS, fallback="torch stepper") != "compiled":
        return TorchStreamer(model)
    return CompiledStreamer(model, params)
