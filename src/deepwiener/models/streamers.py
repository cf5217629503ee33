"""Stateful numpy streamers: one sample in, one sample out, for control loops (``model.fast_stepper()``).

A streamer holds the state of one simulated system (batch 1)::

    s = model.fast_stepper()
    y_k = s.step(u_k)          # (n_u,) -> (n_y,), physical units, numpy float64
    y = s.run(u)               # (T, n_u) -> (T, n_y), continuing from the current state
    s.reset()                  # back to the zero state (or s.reset(state), a state in the model's format)
    s.state                    # the current state in the model's format (``model.init_state(1)``)

:class:`TorchStreamer` runs any model's ``stepper()`` (every kind has one); deep Wiener models have a compiled one
(``models.deepwiener_stream``); :class:`EnsembleStreamer` averages its members'. This module depends only on
``errors``.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from deepwiener.errors import DataError

__all__ = ["EnsembleStreamer", "Streamer", "TorchStreamer"]


class Streamer(abc.ABC):
    """One-sample-at-a-time simulation of a model in physical units, numpy in and out (batch 1).

    The state lives in the streamer: ``step`` and ``run`` advance it, ``reset`` sets it.
    """

    def __init__(self, n_u: int, n_y: int) -> None:
        self.n_u, self.n_y = n_u, n_y

    @abc.abstractmethod
    def reset(self, state: Any = None) -> None:
        """Reset the state: zeros, or ``state`` in the model's format (``model.init_state(1)``)."""

    @property
    @abc.abstractmethod
    def state(self) -> Any:
        """The current state in the model's format (``model.init_state(1)``)."""

    @abc.abstractmethod
    def advance(self, u: np.ndarray) -> np.ndarray:
        """Simulate validated input u (T, n_u) float64 -> y (T, n_y) float64, advancing the state."""

    def step(self, u_k: Any) -> np.ndarray:
        """One sample: u_k (n_u,) -> y_k (n_y,) float64, physical units."""
        return self.advance(self.sample(u_k)[None])[0]

    def sample(self, u_k: Any) -> np.ndarray:
        """``u_k`` as the (n_u,) float64 array ``step`` takes.

        Raises:
            DataError: u_k does not hold n_u values.
        """
        u = np.asarray(u_k, dtype=np.float64).reshape(-1)
        if u.shape[0] != self.n_u:
            raise DataError(f"u_k must have shape (n_u,) = ({self.n_u},), got {np.shape(u_k)}")
        return u

    def run(self, u: Any) -> np.ndarray:
        """A record: u (T, n_u) (or (T,) when n_u = 1) -> y (T, n_y) float64, from the current state."""
        arr = np.asarray(u, dtype=np.float64)
        if arr.ndim == 1 and self.n_u == 1:
            arr = arr[:, None]
        if arr.ndim != 2 or arr.shape[1] != self.n_u:
            raise DataError(f"u must have shape (T, n_u={self.n_u}), got {arr.shape}")
        return self.advance(np.ascontiguousarray(arr))


class TorchStreamer(Streamer):
    """A streamer around ``model.stepper()`` (any kind; a few hundred microseconds per sample).

    Args:
        model: a model (``models.base.Model``) in eval mode; dropout is not applied.
    """

    def __init__(self, model: Any) -> None:
        super().__init__(model.config.n_u, model.config.n_y)
        self._stepper = model.stepper()
        self._dtype = model.u_mean.dtype
        self._device = model.u_mean.device
        self._state = self._stepper.init_state(1)

    def reset(self, state: Any = None) -> None:
        self._state = self._stepper.init_state(1) if state is None else tuple(state)

    @property
    def state(self) -> Any:
        return self._state

    @torch.no_grad()
    def advance(self, u: np.ndarray) -> np.ndarray:
        u_t = torch.tensor(u, dtype=self._dtype, device=self._device)  # a copy: u may be read-only
        y = np.empty((u.shape[0], self.n_y))
        for k in range(u.shape[0]):
            y_k, self._state = self._stepper.step(u_t[k : k + 1], self._state)
            y[k] = y_k[0].double().cpu().numpy()
        return y


class EnsembleStreamer(Streamer):
    """Streaming simulation of an ensemble: each member's streamer, the outputs averaged. Its ``state`` is the tuple
    of the members' states, in order."""

    def __init__(self, streamers: Sequence[Streamer]) -> None:
        super().__init__(streamers[0].n_u, streamers[0].n_y)
        self.streamers = tuple(streamers)

    def reset(self, state: Sequence[Any] | None = None) -> None:
        if state is not None and len(state) != len(self.streamers):
            raise DataError(f"an ensemble state holds one state per member ({len(self.streamers)}), got "
                            f"{len(state)}")
        for k, streamer in enumerate(self.streamers):
            streamer.reset(None if state is None else state[k])

    @property
    def state(self) -> tuple[Any, ...]:
        return tuple(streamer.state for streamer in self.streamers)

    def advance(self, u: np.ndarray) -> np.ndarray:
        return np.mean([streamer.advance(u) for streamer in self.streamers], axis=0)
