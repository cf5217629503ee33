"""What every trainable simulation model shares (``DeepWiener``, the RNN baselines): its config and scaling.

A simulation model maps an input record to an output record in free run, in **physical units** at every
public boundary. Inside, it works in normalised units::

    u_n = (u - u_mean) / u_std          (batch, time, n_u)
    y   = y_mean + y_std * y_n          (batch, time, n_y)

with the scaler buffers set by ``fit`` from the training data (``set_scaler``). ``fit``, ``evaluate`` and the
command line rely on this contract only:

- ``config``: a frozen dataclass with at least ``n_u``, ``n_y`` and ``dt`` (seconds) fields, and
  ``to_dict``/``from_dict`` (:class:`DictConfig`);
- ``forward(u, state=None, mode="auto") -> (y, state)``, ``init_state(batch)``, ``stepper()`` (an object with
  ``init_state(batch)`` and ``step(u_k, state) -> (y_k, state)``);
- from :class:`ScaledSimulator`: the scaler buffers ``u_mean, u_std, y_mean, y_std``, ``set_scaler``, ``dt``,
  ``with_dt``, ``n_parameters``, ``step`` and ``simulate`` (numpy in, numpy out).

This module depends only on ``errors``.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, Self

import numpy as np
import torch
from torch import Tensor, nn

from deepwiener.errors import ConfigError, DataError


class DictConfig:
    """Mixin for frozen config dataclasses: a plain-data form and its inverse with strict keys."""

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (JSON/TOML friendly)."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Inverse of ``to_dict``; unknown keys raise ConfigError listing the valid ones."""
        valid = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - valid)
        if unknown:
            raise ConfigError(f"unknown {cls.__name__} option(s) {unknown}; valid options: {sorted(valid)}")
        return cls(**data)


def check_sampling_time(dt: object) -> None:
    """Raise ConfigError unless ``dt`` is a finite positive number of seconds."""
    if isinstance(dt, bool) or not (isinstance(dt, int | float) and np.isfinite(dt) and dt > 0):
        raise ConfigError(f"dt must be a positive number of seconds, got {dt!r}")


class ScaledSimulator(nn.Module, abc.ABC):
    """Base of simulation models in physical units: scaler buffers, sampling time, numpy simulation.

    A subclass sets ``self.config`` (see the module docstring), calls ``register_scaler()`` in its
    ``__init__`` and implements ``forward``, ``init_state`` and ``stepper``.
    """

    config: Any
    u_mean: Tensor
    u_std: Tensor
    y_mean: Tensor
    y_std: Tensor

    def register_scaler(self) -> None:
        """Register the scaler buffers: identity scaling, (n_u,) and (n_y,) float."""
        self.register_buffer("u_mean", torch.zeros(self.config.n_u))
        self.register_buffer("u_std", torch.ones(self.config.n_u))
        self.register_buffer("y_mean", torch.zeros(self.config.n_y))
        self.register_buffer("y_std", torch.ones(self.config.n_y))

    @abc.abstractmethod
    def init_state(self, batch: int) -> Any:
        """The zero state of ``batch`` sequences."""

    @abc.abstractmethod
    def stepper(self) -> Any:
        """A one-sample-at-a-time simulator with ``init_state(batch)`` and ``step(u_k, state)``."""

    @property
    def dt(self) -> float:
        """Sampling time in seconds."""
        return self.config.dt

    @property
    def integrates_output(self) -> bool:
        """Whether the model sums its decoder's output over time (then the scaler describes the increments)."""
        return False

    @property
    def n_parameters(self) -> int:
        """Number of learnable real scalars."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def with_dt(self, dt: float) -> None:
        """Record the sampling time of the data the model is trained on."""
        self.config = dataclasses.replace(self.config, dt=float(dt))

    @torch.no_grad()
    def set_scaler(self, u_mean: Any, u_std: Any, y_mean: Any, y_std: Any) -> None:
        """Set the input/output normalisation (arrays of shapes (n_u,), (n_u,), (n_y,), (n_y,))."""
        for name, value in (("u_mean", u_mean), ("u_std", u_std), ("y_mean", y_mean), ("y_std", y_std)):
            buf = getattr(self, name)
            buf.copy_(torch.as_tensor(np.asarray(value), dtype=buf.dtype).reshape(buf.shape))

    def normalize_input(self, u: Tensor) -> Tensor:
        """Physical to normalised input: (..., n_u) -> (..., n_u)."""
        return (u - self.u_mean) / self.u_std

    def denormalize_output(self, y_n: Tensor) -> Tensor:
        """Normalised to physical output: (..., n_y) -> (..., n_y)."""
        return self.y_mean + self.y_std * y_n

    def check_input(self, u: Tensor) -> None:
        """Raise DataError unless ``u`` has shape (batch, time, n_u)."""
        if u.dim() != 3 or u.shape[-1] != self.config.n_u:
            raise DataError(f"u must have shape (batch, time, n_u={self.config.n_u}), got {tuple(u.shape)}")

    def step(self, u_k: Tensor, state: Any) -> tuple[Tensor, Any]:
        """One sample: u_k (batch, n_u) -> (y_k (batch, n_y), next state). Use ``stepper()`` in loops."""
        return self.stepper().step(u_k, state)

    @torch.no_grad()
    def simulate(self, u: np.ndarray, mode: str = "auto") -> np.ndarray:
        """Free-run simulation from the zero state in physical units.

        Args:
            u: (time, n_u) or (time,) for n_u = 1, numpy.
            mode: simulation engine, passed to ``forward``.

        Returns:
            y: (time, n_y) numpy float64.

        Raises:
            DataError: a wrong shape or NaN/inf in ``u``.
        """
        u_arr = np.asarray(u, dtype=np.float64)
        if u_arr.ndim == 1 and self.config.n_u == 1:
            u_arr = u_arr[:, None]
        if u_arr.ndim != 2 or u_arr.shape[1] != self.config.n_u:
            raise DataError(f"u must have shape (time, n_u={self.config.n_u}), got {u_arr.shape}")
        if not np.isfinite(u_arr).all():
            raise DataError(f"u contains {int((~np.isfinite(u_arr)).sum())} NaN/inf values")
        was_training = self.training
        self.eval()
        y, _ = self(torch.tensor(u_arr, dtype=self.u_mean.dtype, device=self.u_mean.device)[None], mode=mode)
        self.train(was_training)
        return y[0].double().cpu().numpy()


class SequenceStepper:
    """Streaming simulation by the model's own ``forward`` on length-1 sequences: ``step(u_k, state)``.

    For models whose ``forward`` is already a recurrence over time (the RNN baselines, LFR models), so that
    stepping costs no more than one sample of ``forward``.
    """

    def __init__(self, model: ScaledSimulator) -> None:
        self.model = model

    def init_state(self, batch: int) -> Any:
        """Zero state (the model's ``init_state``)."""
        return self.model.init_state(batch)

    def step(self, u_k: Tensor, state: Any) -> tuple[Tensor, Any]:
        """u_k: (batch, n_u) physical -> (y_k (batch, n_y) physical, next state)."""
        y, state = self.model(u_k[:, None], state)
        return y[:, 0], state
