"""Fast streaming simulation of a trained ``DeepWiener`` model, one sample at a time (control loops).

``model.stepper()`` runs every block through PyTorch, so each sample pays the Python and dispatch
overhead of a few dozen small tensor operations (a few hundred microseconds). :func:`fast_stepper`
exports the model once to flat float64/complex128 numpy arrays and runs a whole sample, or a whole
record, in one numba-compiled function (a few microseconds per ``step`` call, about one per sample in
``run``; see ``benchmarks/speed``)::

    streamer = model.fast_stepper()        # or deepwiener.engines.streaming.fast_stepper(model)
    streamer.init_state()                  # zero state (also the state after construction)
    y_k = streamer.step(u_k)               # (n_u,) -> (n_y,), physical units, numpy float64
    y = streamer.run(u)                    # (T, n_u) -> (T, n_y), continues from the current state
    streamer.state                         # the model's state format (DeepWiener.init_state, batch 1)

What runs per sample (the scalers are folded into the encoder and decoder, exact up to rounding)::

    v   = W_enc' u + b_enc'                          the input scaler folded into the encoder
    block l:  w   = layer_norm(v) or v
              eta = Re(C x) + D w ; x <- A x + B w  (readout "current": read, then update)
              x <- A x + B w ; eta = Re(C x) + D w  (readout "next": update, then read)
              v   = sigma(eta + b) + F v             F = I, a matrix, or 0 (skip "none")
    y   = W_dec' v + b_dec'                          the output scaler folded into the decoder
    y   = y_sum <- y_sum + y                         with an output integrator (ModelConfig.integrator)

``A`` is block diagonal in the layer's own coordinates (so ``state`` interoperates with ``model.forward``):
1 x 1 blocks (the eigenvalues) for diagonal systems (LRU, S5, S4D), one dense n x n block per channel for
S4's DPLR systems (not diagonalised: its eigenvectors can be ill-conditioned). Supported nonlinearities are
the elementwise ones (gelu, exact or tanh-approximated; elu; tanh; relu; identity), poly and linear_tanh; a
model with another nonlinearity (glu, mlp), another norm or layer (the selective S6) gets
:class:`TorchStreamer`, the same interface around ``model.stepper()``. Dropout is ignored: streaming is inference.

Everything runs in float64 whatever the model's dtype, so a float64 model is reproduced to rounding (the
tests ask 1e-10) and a float32 one to float32 accuracy. Without numba the same kernel runs as plain
Python: identical results, about 30 times slower (115 us per sample for the paper model, about the speed
of ``model.stepper()``; a warning is logged).
"""

from __future__ import annotations

import abc
import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from deepwiener.errors import DataError
from deepwiener.model import ModelState, join_state, split_model_state
from deepwiener.nonlinearities import Elementwise, LinearTanh, Polynomial
from deepwiener.systems import DPLRSSM, DiagonalSSM, LinearSystem

try:
    import numba
except Exception:  # numba missing or broken: the kernel runs as plain Python
    numba = None

if TYPE_CHECKING:
    from deepwiener.model import Block, DeepWiener

__all__ = ["CompiledStreamer", "Streamer", "TorchStreamer", "fast_stepper"]

logger = logging.getLogger(__name__)


# Activation codes of the kernel (one per block).
_RELU, _TANH, _ELU, _GELU, _GELU_TANH, _POLY, _LINEAR_TANH, _IDENTITY = range(8)
# Skip codes.
_SKIP_NONE, _SKIP_IDENTITY, _SKIP_LINEAR = range(3)
# Columns of the per-block integer flags.
_F_NORM, _F_NEXT, _F_ACT, _F_SKIP = range(4)

_SQRT1_2 = 1.0 / math.sqrt(2.0)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


# --------------------------------------------------------------------------------------------------
# Kernel (plain Python here; numba-compiled at import when numba is available, lazily on first call)
# --------------------------------------------------------------------------------------------------


def _jit(fn: Any) -> Any:
    """numba.njit (cached on disk) when numba is available, else the plain function."""
    return fn if numba is None else numba.njit(cache=True)(fn)


@_jit
def _activation(z: float, kind: int, c1: float, c2: float) -> float:  # pragma: no cover - runs compiled
    """sigma(z) for an activation code; ``c1`` is ELU's alpha, poly's a2 or linear_tanh's a; ``c2`` poly's a3."""
    if kind == _RELU:
        return max(z, 0.0)
    if kind == _TANH:
        return math.tanh(z)
    if kind == _ELU:
        return z if z > 0.0 else c1 * math.expm1(z)
    if kind == _GELU:
        return 0.5 * z * (1.0 + math.erf(z * _SQRT1_2))
    if kind == _GELU_TANH:
        return 0.5 * z * (1.0 + math.tanh(_SQRT_2_OVER_PI * (z + 0.044715 * z * z * z)))
    if kind == _LINEAR_TANH:
        return z + c1 * math.tanh(z)
    if kind == _IDENTITY:
        return z
    return z + c1 * z * z + c2 * z * z * z


@_jit
def _readout(C, D, x, w, eta):  # pragma: no cover - runs compiled
    """eta = Re(C x) + D w. C: (d, N) complex, D: (d, d), x: (N,) complex, w: (d,) -> eta (d,)."""
    for i in range(eta.shape[0]):
        s = 0.0
        for k in range(x.shape[0]):
            s += C[i, k].real * x[k].real - C[i, k].imag * x[k].imag
        for j in range(w.shape[0]):
            s += D[i, j] * w[j]
        eta[i] = s


@_jit
def _sample(  # pragma: no cover - runs compiled
    u, y, x, xw, v, w, eta, enc_W, enc_b, dec_W, dec_b, flags, eps, norm, A, B, C, D, act, F
):
    """One sample through the whole model; updates ``x`` in place.

    Args:
        u: (n_u,) input, y: (n_y,) output (written).
        x: (L, N) complex state; xw: (N,) complex, v, w, eta: (d,) work buffers.
        enc_W, enc_b: (d, n_u), (d,); dec_W, dec_b: (n_y, d), (n_y,) (scalers folded in).
        flags: (L, 4) int64: layer norm on, readout "next", activation code, skip code.
        eps: (L,) layer-norm epsilon; norm: (L, 2, d) layer-norm weight and bias.
        A: (L, G, m, m) complex blocks (N = G m); B: (L, N, d) complex; C: (L, d, N) complex; D: (L, d, d).
        act: (L, 3, d) nonlinearity bias, c1, c2; F: (L, d, d) linear skip.
    """
    n_blocks, groups, m, _ = A.shape
    d = v.shape[0]
    for i in range(d):
        s = enc_b[i]
        for j in range(u.shape[0]):
            s += enc_W[i, j] * u[j]
        v[i] = s
    for layer in range(n_blocks):
        if flags[layer, _F_NORM]:
            mean = 0.0
            for i in range(d):
                mean += v[i]
            mean /= d
            var = 0.0
            for i in range(d):
                var += (v[i] - mean) * (v[i] - mean)
            scale = 1.0 / math.sqrt(var / d + eps[layer])
            for i in range(d):
                w[i] = (v[i] - mean) * scale * norm[layer, 0, i] + norm[layer, 1, i]
        else:
            for i in range(d):
                w[i] = v[i]
        xl = x[layer]
        if not flags[layer, _F_NEXT]:
            _readout(C[layer], D[layer], xl, w, eta)
        for g in range(groups):
            for i in range(m):
                k = g * m + i
                s = 0j
                for j in range(m):
                    s += A[layer, g, i, j] * xl[g * m + j]
                for j in range(d):
                    s += B[layer, k, j] * w[j]
                xw[k] = s
        for k in range(xl.shape[0]):
            xl[k] = xw[k]
        if flags[layer, _F_NEXT]:
            _readout(C[layer], D[layer], xl, w, eta)
        kind, skip = flags[layer, _F_ACT], flags[layer, _F_SKIP]
        for i in range(d):
            eta[i] = _activation(eta[i] + act[layer, 0, i], kind, act[layer, 1, i], act[layer, 2, i])
        if skip == _SKIP_LINEAR:
            for i in range(d):
                s = 0.0
                for j in range(d):
                    s += F[layer, i, j] * v[j]
                w[i] = s
            for i in range(d):
                v[i] = eta[i] + w[i]
        elif skip == _SKIP_IDENTITY:
            for i in range(d):
                v[i] += eta[i]
        else:
            for i in range(d):
                v[i] = eta[i]
    for o in range(y.shape[0]):
        s = dec_b[o]
        for i in range(d):
            s += dec_W[o, i] * v[i]
        y[o] = s


@_jit
def _run(u, x, enc_W, enc_b, dec_W, dec_b, flags, eps, norm, A, B, C, D, act, F):  # pragma: no cover - compiled
    """All samples of ``u`` (T, n_u) from the state ``x`` (L, N) (updated in place) -> y (T, n_y)."""
    d = enc_b.shape[0]
    y = np.empty((u.shape[0], dec_b.shape[0]))
    xw = np.empty(x.shape[1], dtype=np.complex128)
    v, w, eta = np.empty(d), np.empty(d), np.empty(d)
    for t in range(u.shape[0]):
        _sample(u[t], y[t], x, xw, v, w, eta, enc_W, enc_b, dec_W, dec_b, flags, eps, norm, A, B, C, D, act, F)
    return y


# --------------------------------------------------------------------------------------------------
# Export of a model to flat arrays
# --------------------------------------------------------------------------------------------------


class _Unsupported(Exception):
    """A part of the model the kernel does not implement (the reason is the message)."""


class StreamParams(NamedTuple):
    """The model as flat arrays, in the kernel's argument order (shapes in :func:`_sample`)."""

    enc_W: np.ndarray
    enc_b: np.ndarray
    dec_W: np.ndarray
    dec_b: np.ndarray
    flags: np.ndarray
    eps: np.ndarray
    norm: np.ndarray
    A: np.ndarray
    B: np.ndarray
    C: np.ndarray
    D: np.ndarray
    act: np.ndarray
    F: np.ndarray


def _np(t: Tensor, dtype: type = np.float64) -> np.ndarray:
    """A detached tensor as a C-contiguous numpy array of ``dtype`` (float64 or complex128)."""
    return np.ascontiguousarray(t.detach().cpu().resolve_conj().numpy(), dtype=dtype)


def _blocks(system: LinearSystem) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The system's A as (G, m, m) diagonal blocks, B (N, d_in) and C (d_out, N), complex128, N = G m.

    Raises:
        _Unsupported: for a system of another structure.
    """
    if isinstance(system, DiagonalSSM):
        return _np(system.lam, np.complex128)[:, None, None], _np(system.B, np.complex128), _np(system.C, np.complex128)
    if isinstance(system, DPLRSSM):
        A, B = (_np(t, np.complex128) for t in system.discrete)  # (h, n, n), (h, n)
        C = _np(system.C, np.complex128)  # (h, n)
        h, n = B.shape
        eye = np.eye(h)
        B_flat = (B[:, :, None] * eye[:, None, :]).reshape(h * n, h)
        C_flat = (eye[:, :, None] * C[None, :, :]).reshape(h, h * n)
        return A, B_flat, C_flat
    raise _Unsupported(f"{type(system).__name__} systems")


def _activation_params(sigma: nn.Module, width: int) -> tuple[int, np.ndarray]:
    """Activation code and its (3, d) parameters: bias, c1, c2 (see :func:`_activation`).

    Raises:
        _Unsupported: for a nonlinearity the kernel does not implement.
    """
    params = np.zeros((3, width))
    if isinstance(sigma, Polynomial):
        params[:] = [_np(sigma.bias), _np(sigma.a2), _np(sigma.a3)]
        return _POLY, params
    if isinstance(sigma, LinearTanh):
        params[:2] = [_np(sigma.bias), _np(sigma.gain)]
        return _LINEAR_TANH, params
    if not isinstance(sigma, Elementwise):
        raise _Unsupported(f"the {type(sigma).__name__} nonlinearity")
    params[0] = _np(sigma.bias)
    activation = sigma.activation
    if isinstance(activation, nn.ReLU):
        return _RELU, params
    if isinstance(activation, nn.Tanh):
        return _TANH, params
    if isinstance(activation, nn.Identity):
        return _IDENTITY, params
    if isinstance(activation, nn.ELU):
        params[1] = activation.alpha
        return _ELU, params
    if isinstance(activation, nn.GELU):
        return (_GELU_TANH if activation.approximate == "tanh" else _GELU), params
    raise _Unsupported(f"the {type(activation).__name__} activation")


def _block_params(block: Block) -> dict[str, Any]:
    """One block's arrays (keys of :class:`StreamParams` without the encoder/decoder).

    Raises:
        _Unsupported: a layer, norm or nonlinearity the kernel does not implement.
    """
    if not hasattr(block.lti, "discretize"):
        raise _Unsupported(f"the {type(block.lti).__name__} layer (not LTI)")
    system = block.lti.discretize()
    width = system.d_in
    A, B, C = _blocks(system)
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
        skip, F = _SKIP_LINEAR, _np(block.skip.weight)
    else:
        skip, F = (_SKIP_IDENTITY if block.use_skip else _SKIP_NONE), np.zeros((width, width))
    flags = [isinstance(block.norm, nn.LayerNorm), system.readout == "next", kind, skip]
    return {"flags": np.array(flags, dtype=np.int64), "eps": eps, "norm": norm, "A": A, "B": B, "C": C,
            "D": _np(system.D), "act": act, "F": F}


@torch.no_grad()
def _export(model: DeepWiener) -> StreamParams:
    """The model as flat float64/complex128 arrays for the streaming kernel.

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


# --------------------------------------------------------------------------------------------------
# Streamers
# --------------------------------------------------------------------------------------------------


class Streamer(abc.ABC):
    """One-sample-at-a-time simulation of a model in physical units, numpy in and out (batch 1).

    The state lives in the streamer: ``step`` and ``run`` advance it, ``init_state`` resets it.
    """

    def __init__(self, n_u: int, n_y: int) -> None:
        self.n_u, self.n_y = n_u, n_y

    @abc.abstractmethod
    def init_state(self, state: ModelState | None = None) -> None:
        """Reset the state: zeros, or ``state`` in the model's format (``DeepWiener.init_state``, batch 1)."""

    @property
    @abc.abstractmethod
    def state(self) -> ModelState:
        """The current state in the model's format (``DeepWiener.init_state``, batch 1)."""

    @abc.abstractmethod
    def _advance(self, u: np.ndarray) -> np.ndarray:
        """Simulate validated input u (T, n_u) float64 -> y (T, n_y) float64, advancing the state."""

    def step(self, u_k: Any) -> np.ndarray:
        """One sample: u_k (n_u,) -> y_k (n_y,) float64, physical units."""
        u = np.asarray(u_k, dtype=np.float64).reshape(1, -1)
        if u.shape[1] != self.n_u:
            raise DataError(f"u_k must have shape (n_u,) = ({self.n_u},), got {np.shape(u_k)}")
        return self._advance(u)[0]

    def run(self, u: Any) -> np.ndarray:
        """A record: u (T, n_u) (or (T,) when n_u = 1) -> y (T, n_y) float64, from the current state."""
        arr = np.asarray(u, dtype=np.float64)
        if arr.ndim == 1 and self.n_u == 1:
            arr = arr[:, None]
        if arr.ndim != 2 or arr.shape[1] != self.n_u:
            raise DataError(f"u must have shape (T, n_u={self.n_u}), got {arr.shape}")
        return self._advance(np.ascontiguousarray(arr))


class CompiledStreamer(Streamer):
    """The model exported to flat arrays, stepped by one compiled function (see the module docstring).

    Attributes:
        params: the exported arrays (a snapshot: later changes of the model are not seen).
    """

    def __init__(self, model: DeepWiener, params: StreamParams) -> None:
        super().__init__(model.config.n_u, model.config.n_y)
        self.params = params
        self._state_shapes = [tuple(block.lti.init_state(1).shape[1:]) for block in model.blocks]
        self._x = np.zeros(params.B.shape[:2], dtype=np.complex128)  # (L, N)
        self._total = np.zeros(self.n_y) if model.integrates_output else None  # the output integrator's sum

    def init_state(self, state: ModelState | None = None) -> None:
        if state is None:
            self._x[:] = 0
            if self._total is not None:
                self._total[:] = 0
            return
        blocks, total = split_model_state(state, len(self._state_shapes), self._total is not None)
        for layer, (x, shape) in enumerate(zip(blocks, self._state_shapes, strict=True)):
            if tuple(x.shape) != (1, *shape):
                raise DataError(f"state {layer} must have shape {(1, *shape)}, got {tuple(x.shape)}")
            self._x[layer] = _np(x, np.complex128).reshape(-1)
        if total is not None:
            if tuple(total.shape) != (1, self.n_y):
                raise DataError(f"the integrator's sum must have shape (1, {self.n_y}), got {tuple(total.shape)}")
            self._total[:] = _np(total).reshape(-1)

    @property
    def state(self) -> ModelState:
        blocks = tuple(torch.from_numpy(x.copy()).reshape(1, *shape)
                       for x, shape in zip(self._x, self._state_shapes, strict=True))
        return join_state(blocks, None if self._total is None else torch.from_numpy(self._total.copy())[None])

    def _advance(self, u: np.ndarray) -> np.ndarray:
        y = _run(u, self._x, *self.params)
        if self._total is None:
            return y
        y = self._total + np.cumsum(y, axis=0)
        self._total[:] = y[-1]
        return y


class TorchStreamer(Streamer):
    """The same interface around ``model.stepper()`` for models the compiled kernel does not cover."""

    def __init__(self, model: DeepWiener) -> None:
        super().__init__(model.config.n_u, model.config.n_y)
        self._stepper = model.stepper()
        self._dtype = model.u_mean.dtype
        self._device = model.u_mean.device
        self._state = self._stepper.init_state(1)

    def init_state(self, state: ModelState | None = None) -> None:
        self._state = self._stepper.init_state(1) if state is None else tuple(state)

    @property
    def state(self) -> ModelState:
        return self._state

    @torch.no_grad()
    def _advance(self, u: np.ndarray) -> np.ndarray:
        u_t = torch.as_tensor(u, dtype=self._dtype, device=self._device)
        y = np.empty((u.shape[0], self.n_y))
        for k in range(u.shape[0]):
            y_k, self._state = self._stepper.step(u_t[k : k + 1], self._state)
            y[k] = y_k[0].double().cpu().numpy()
        return y


class EnsembleStreamer(Streamer):
    """Streaming simulation of an ensemble (``deepwiener.ensemble.Ensemble``): each member's streamer, the
    outputs averaged. Its ``state`` is the tuple of the members' states, in order."""

    def __init__(self, streamers: Sequence[Streamer]) -> None:
        super().__init__(streamers[0].n_u, streamers[0].n_y)
        self.streamers = tuple(streamers)

    def init_state(self, state: Sequence[ModelState] | None = None) -> None:  # type: ignore[override]
        if state is not None and len(state) != len(self.streamers):
            raise DataError(f"an ensemble state holds one state per member ({len(self.streamers)}), got "
                            f"{len(state)}")
        for k, streamer in enumerate(self.streamers):
            streamer.init_state(None if state is None else state[k])

    @property
    def state(self) -> tuple[ModelState, ...]:  # type: ignore[override]
        return tuple(streamer.state for streamer in self.streamers)

    def _advance(self, u: np.ndarray) -> np.ndarray:
        return np.mean([streamer._advance(u) for streamer in self.streamers], axis=0)


def fast_stepper(model: DeepWiener) -> Streamer:
    """The fastest streamer for ``model``: compiled when every part is supported, else :class:`TorchStreamer`.

    For inference: dropout is not applied. The export is a snapshot of the current parameters; build a new
    streamer after training further. One streamer holds one state: use one per thread.
    """
    try:
        params = _export(model)
    except _Unsupported as exc:
        logger.info("fast_stepper: %s is not compiled; streaming through model.stepper()", exc)
        return TorchStreamer(model)
    if numba is None:
        logger.warning("fast_stepper: numba is not installed; the streaming kernel runs as plain (slow) Python")
    return CompiledStreamer(model, params)
