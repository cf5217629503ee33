"""The model protocol: what every kind of model implements, and what it gets for free.

A *kind* of model (deep Wiener stack, LFR, RNN, linear state space, ensemble, or one of your own) is a subclass
of :class:`Model` with a frozen config dataclass. Registering the class (``models.register_kind``) is all it takes
for ``fit``, ``evaluate``, model files, ensembles, run configurations and the command line to handle it; none of
them tests for a concrete kind.

A kind provides (class attributes and methods):

- ``config_class``: a frozen dataclass with :class:`~deepwiener.options.DictConfig`, a class constant ``kind``
  (its name in model files and registries) and the fields ``n_u``, ``n_y``, ``dt`` (seconds) and ``seed``. The
  model's constructor takes the config's fields as keywords (``from_config`` relies on it);
- ``forward(u, state=None, mode="auto") -> (y, state)`` in **physical units** (u: (batch, time, n_u)) and
  ``init_state(batch)``; optional: ``stepper()`` for one-sample streaming (default: ``forward`` on length-1
  sequences) and ``fast_stepper()`` (default: a numpy streamer around ``stepper()``);
- ``trainer``: "gradient" (``fit`` minimises the simulation error by gradient steps) or "identify" (``fit``
  calls :meth:`identify`, a direct identification such as N4SID); None for a kind that is not trained;
- :meth:`start_linear` for ``TrainConfig(init="linear")`` (default: refused);
- ``capabilities``: the analyses it supports, among "poles" (:meth:`poles`), "blocks" and "reduce"
  (``deepwiener.analysis``);
- :meth:`export_step` for ONNX and C export (``deepwiener.export``): the one-sample step as real operations on a
  ``stepgraph.StepGraph`` (default: refused);
- optional ``variants``: the names under which it is built with some options fixed, instead of its kind name
  (``lstm`` and ``gru`` are the variants of the kind ``rnn``), and ``title``: how plots name it (default: the
  name it was built as); ``buildable = False`` for a kind that is not built from defaults and a seed (an
  ensemble is made of trained models).

What goes into a model file is :meth:`file_parts` (the config as plain data, and the tensors of
``state_dict()``); :meth:`from_file_parts` rebuilds the model. Inside, a model works in normalised units::

    u_n = (u - u_mean) / u_std          (batch, time, n_u)
    y   = y_mean + y_std * y_n          (batch, time, n_y)

with the scaler buffers set by ``fit`` from the training data (:meth:`set_scaler`). A kind whose config has
``integrator = True`` sums its output over time (plants with a pure integrator); the running sum, kept in
float64, is the last tensor of its state, and the scaler then describes the output's increments
(:meth:`integrate`).
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Self

import numpy as np
import torch
from torch import Tensor, nn

from deepwiener.errors import ConfigError, DataError, DeepWienerError, ModelFileError
from deepwiener.models import initial_state
from deepwiener.models.streamers import Streamer, TorchStreamer
from deepwiener.stepgraph import StepGraph

if TYPE_CHECKING:
    from deepwiener.data import IOData, ValidationRecord
    from deepwiener.identification import LinearStateSpace

TRAINERS: tuple[str, ...] = ("gradient", "identify")
"""How ``fit`` trains a kind: by gradient steps on the simulation error, or by a direct identification."""
CAPABILITIES: tuple[str, ...] = ("poles", "blocks", "reduce")
"""The analyses a kind may support: ``poles()``; ``analysis.blocks``/``inspect``; ``analysis.reduce``."""
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float64": torch.float64}
"""The dtypes of models, by the names model files use."""
ENCODER_KEY = "x0_encoder"
"""The reserved config key of a model file under which a model's state encoder is described."""


class Model(nn.Module, abc.ABC):
    """Base of every model kind: a simulation model in physical units (module docstring)."""

    config_class: ClassVar[type]
    trainer: ClassVar[str | None] = "gradient"
    capabilities: ClassVar[frozenset[str]] = frozenset()
    variants: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    title: ClassVar[str] = ""
    buildable: ClassVar[bool] = True

    config: Any
    u_mean: Tensor
    u_std: Tensor
    y_mean: Tensor
    y_std: Tensor

    # ---------------------------------------------------------------------------------------------- the kind

    @classmethod
    def kind_name(cls) -> str:
        """The kind's name in model files and registries (``config_class.kind``)."""
        return cls.config_class.kind

    @property
    def kind(self) -> str:
        """This model's kind name."""
        return self.kind_name()

    @classmethod
    def from_config(cls, config: Any) -> Self:
        """A freshly initialised model (parameters from ``config.seed``) of this config."""
        return cls(**config.to_dict())

    @classmethod
    def label(cls, name: str, options: Mapping[str, Any]) -> str:
        """A short name of a model built as ``name`` with ``options`` (run folder names): the name itself."""
        return name

    @classmethod
    def options_table(cls, options: Mapping[str, Any]) -> tuple[str, type] | None:
        """The config field filled from the ``[layer]`` table of a run configuration and the options dataclass
        that validates it, for the model ``options`` describe; None when the kind has no such table."""
        return None

    # ---------------------------------------------------------------------------------------------- simulation

    @abc.abstractmethod
    def forward(self, u: Tensor, state: Any = None, mode: str = "auto") -> tuple[Tensor, Any]:
        """Simulate: u (batch, time, n_u) physical -> (y (batch, time, n_y) physical, final state)."""

    @abc.abstractmethod
    def init_state(self, batch: int) -> Any:
        """The zero state of ``batch`` sequences."""

    def stepper(self) -> Any:
        """A one-sample-at-a-time simulator with ``init_state(batch)`` and ``step(u_k, state) -> (y_k, state)``
        (torch, functional). Default: ``forward`` on length-1 sequences."""
        return SequenceStepper(self)

    def fast_stepper(self) -> Streamer:
        """A stateful numpy streamer: ``step(u_k) -> y_k``, ``run(u)``, ``reset()``, ``state``. Default: around
        :meth:`stepper`."""
        return TorchStreamer(self)

    def step(self, u_k: Tensor, state: Any) -> tuple[Tensor, Any]:
        """One sample: u_k (batch, n_u) -> (y_k (batch, n_y), next state). Use ``stepper()`` in loops."""
        return self.stepper().step(u_k, state)

    @torch.no_grad()
    def simulate(self, u: np.ndarray, mode: str = "auto", *, y_init: np.ndarray | None = None,
                 x0: str = "zero") -> np.ndarray:
        """Free-run simulation in physical units, from the zero state or from a state estimated on an init window.

        Args:
            u: (time, n_u) or (time,) for n_u = 1, numpy.
            mode: simulation engine, passed to ``forward``.
            y_init: (n, n_y) (or (n,) for n_y = 1) measured outputs of the first n samples, 0 < n < time: the init
                window; only these outputs are read. Needed by ``x0`` "fit" and "encoder".
            x0: how the state is set (``models.initial_state``): "zero" (the zero state at the start, ``y_init``
                unused), "fit" (the start state that best explains the window) or "encoder" (the state at the
                window's end from the model's trained state encoder).

        Returns:
            y: (time, n_y) numpy float64; with an estimated state, the window's samples are simulated from the
            estimated start ("fit") or from zero ("encoder"), the rest from the state at the window's end.

        Raises:
            DataError: a wrong shape or NaN/inf in ``u`` or ``y_init``, or a missing or too long ``y_init``.
            ConfigError: an unknown ``x0``, or "encoder" for a model without a state encoder (or one trained on
                another window length).
        """
        u_arr = self.check_numpy_input(u)
        if initial_state.check_method(x0) != "zero":
            return self._simulate_from_window(u_arr, y_init, x0, mode)
        was_training = self.training
        self.eval()
        try:
            y, _ = self(torch.tensor(u_arr, dtype=self.u_mean.dtype, device=self.u_mean.device)[None], mode=mode)
        finally:
            self.train(was_training)
        return y[0].double().cpu().numpy()

    def _simulate_from_window(self, u: np.ndarray, y_init: np.ndarray | None, x0: str, mode: str) -> np.ndarray:
        """:meth:`simulate` with a state estimated on the window ``y_init`` (validated u (T, n_u))."""
        window = self.check_init_window(y_init, len(u), x0)
        like = self.u_mean
        u_t = torch.tensor(u, dtype=like.dtype, device=like.device)[None]
        y_t = torch.tensor(window, dtype=like.dtype, device=like.device)[None]
        was_training = self.training
        self.eval()
        try:
            head, state = self.estimate_state(u_t[:, : len(window)], y_t, x0, mode)
            tail, _ = self(u_t[:, len(window) :], state, mode=mode)
        finally:
            self.train(was_training)
        return torch.cat([head, tail], dim=1)[0].double().cpu().numpy()

    def check_init_window(self, y_init: np.ndarray | None, length: int, x0: str) -> np.ndarray:
        """``y_init`` as a finite (n, n_y) float64 array with 0 < n < ``length``.

        Raises:
            DataError: a missing window, a wrong shape, NaN/inf, or a window as long as the record.
        """
        if y_init is None:
            raise DataError(f"x0={x0!r} sets the state from measured outputs: give y_init, the first n samples of y")
        window = np.asarray(y_init, dtype=np.float64)
        if window.ndim == 1 and self.config.n_y == 1:
            window = window[:, None]
        if window.ndim != 2 or window.shape[1] != self.config.n_y or not 0 < len(window) < length:
            raise DataError(f"y_init must have shape (n, n_y={self.config.n_y}) with 0 < n < {length} (the record's "
                            f"length); got {window.shape}")
        if not np.isfinite(window).all():
            raise DataError(f"y_init contains {int((~np.isfinite(window)).sum())} NaN/inf values")
        return window

    def estimate_state(self, u_init: Tensor, y_init: Tensor, x0: str = "fit",
                       mode: str = "auto") -> tuple[Tensor, Any]:
        """The state at the end of an init window (``models.initial_state``).

        Args:
            u_init: (1, n, n_u) inputs of the window, physical units, the model's dtype.
            y_init: (1, n, n_y) measured outputs of the window.
            x0: "zero", "fit" or "encoder".
            mode: simulation engine.

        Returns:
            The simulated outputs over the window (1, n, n_y), and the state at its end.
        """
        initial_state.check_window(u_init, y_init, self.config.n_u, self.config.n_y)
        if initial_state.check_method(x0) == "fit":
            start = initial_state.unflatten_state(self.fit_state_vector(u_init, y_init, mode), self.init_state(1))
            return self(u_init, start, mode=mode)
        head, state = self(u_init, None, mode=mode)
        if x0 == "encoder":
            encoder = self.require_state_encoder(u_init.shape[1])
            flat = encoder(self.normalize_input(u_init), (y_init - self.y_mean) / self.y_std)
            state = initial_state.unflatten_state(flat.double(), self.init_state(1))
        return head, state

    def fit_state_vector(self, u_init: Tensor, y_init: Tensor, mode: str) -> Tensor:
        """The flattened start state that best explains a window ("fit": ``initial_state.fit_state``); a kind that
        is linear in its state may solve it in closed form."""
        return initial_state.fit_state(self, u_init, y_init, mode)

    @property
    def state_encoder(self) -> initial_state.StateEncoder | None:
        """The trained state encoder (``x0="encoder"``), or None."""
        return self._modules.get("x0_encoder")  # type: ignore[return-value]

    def attach_state_encoder(self, window: int, hidden: int = 64) -> initial_state.StateEncoder:
        """Give the model a fresh state encoder for init windows of ``window`` samples (``fit`` trains it with the
        model for ``TrainConfig(x0="encoder")``); in the model's dtype and on its device."""
        n_state = initial_state.flatten_state(self.init_state(1)).shape[1]
        encoder = initial_state.StateEncoder(self.config.n_u, self.config.n_y, window, n_state, hidden)
        self.add_module("x0_encoder", encoder.to(self.u_mean))
        return encoder

    def require_state_encoder(self, window: int) -> initial_state.StateEncoder:
        """The state encoder, trained for windows of ``window`` samples.

        Raises:
            ConfigError: the model has none, or one for another window length.
        """
        encoder = self.state_encoder
        if encoder is None:
            raise ConfigError(f"x0='encoder' needs a model trained with a state encoder (TrainConfig(x0='encoder')); "
                              f"this {self.kind} model has none")
        if encoder.window != window:
            raise ConfigError(f"the model's state encoder reads init windows of {encoder.window} samples, not "
                              f"{window}")
        return encoder

    def check_numpy_input(self, u: np.ndarray) -> np.ndarray:
        """``u`` as a finite (time, n_u) float64 array ((time,) is accepted when n_u = 1).

        Raises:
            DataError: a wrong shape or NaN/inf.
        """
        u_arr = np.asarray(u, dtype=np.float64)
        if u_arr.ndim == 1 and self.config.n_u == 1:
            u_arr = u_arr[:, None]
        if u_arr.ndim != 2 or u_arr.shape[1] != self.config.n_u:
            raise DataError(f"u must have shape (time, n_u={self.config.n_u}), got {u_arr.shape}")
        if not np.isfinite(u_arr).all():
            raise DataError(f"u contains {int((~np.isfinite(u_arr)).sum())} NaN/inf values")
        return u_arr

    def check_input(self, u: Tensor) -> None:
        """Raise DataError unless ``u`` has shape (batch, time, n_u)."""
        if u.dim() != 3 or u.shape[-1] != self.config.n_u:
            raise DataError(f"u must have shape (batch, time, n_u={self.config.n_u}), got {tuple(u.shape)}")

    # ---------------------------------------------------------------------------------------------- scaling

    def register_scaler(self) -> None:
        """Register the scaler buffers: identity scaling, (n_u,) and (n_y,) float. Call it in ``__init__``."""
        self.register_buffer("u_mean", torch.zeros(self.config.n_u))
        self.register_buffer("u_std", torch.ones(self.config.n_u))
        self.register_buffer("y_mean", torch.zeros(self.config.n_y))
        self.register_buffer("y_std", torch.ones(self.config.n_y))

    @property
    def dt(self) -> float:
        """Sampling time in seconds."""
        return self.config.dt

    @property
    def dtype(self) -> torch.dtype:
        """The model's floating-point dtype (its scaler's)."""
        return self.u_mean.dtype

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
            buf.copy_(torch.as_tensor(np.array(value), dtype=buf.dtype).reshape(buf.shape))  # a copy: may be read-only

    def normalize_input(self, u: Tensor) -> Tensor:
        """Physical to normalised input: (..., n_u) -> (..., n_u)."""
        return (u - self.u_mean) / self.u_std

    def denormalize_output(self, y_n: Tensor) -> Tensor:
        """Normalised to physical output: (..., n_y) -> (..., n_y)."""
        return self.y_mean + self.y_std * y_n

    # ---------------------------------------------------------------------------------------------- integrator

    @property
    def integrates_output(self) -> bool:
        """Whether the model sums its output over time (``config.integrator``; the scaler describes increments)."""
        return bool(getattr(self.config, "integrator", False))

    def zero_sum(self, batch: int) -> Tensor:
        """The integrator's zero state: (batch, n_y) float64."""
        return torch.zeros(batch, self.config.n_y, dtype=torch.float64, device=self.u_mean.device)

    def integrate(self, increments: Tensor, total: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """The output from the physical output before integration: itself, or its running sum after ``total``.

        Args:
            increments: (batch, time, n_y) physical units.
            total: (batch, n_y) float64 sum so far (the integrator's state), or None without integrator.

        Returns:
            y: (batch, time, n_y) in the dtype of ``increments``, and the new sum (or None).
        """
        if total is None:
            return increments, None
        sums = total[:, None, :] + torch.cumsum(increments.double(), dim=1)
        return sums.to(increments.dtype), sums[:, -1]

    def split_state(self, state: tuple[Any, ...] | None, parts: int, batch: int,
                    what: str = "the model's own") -> tuple[tuple[Any, ...], Tensor | None]:
        """(the kind's own ``parts`` state tensors, the integrator's sum or None) of a state; None gives
        ``(None,) * parts`` and a zero sum. ``what`` names the kind's tensors in messages ("one per block").

        Raises:
            DataError: a state with another number of tensors.
        """
        integrator = self.integrates_output
        if state is None:
            return (None,) * parts, self.zero_sum(batch) if integrator else None
        expected = parts + int(integrator)
        if len(state) != expected:
            held = f"{what} and the integrator's sum" if integrator else what
            raise DataError(f"state must hold {expected} tensors ({held}), got {len(state)}")
        return tuple(state[:parts]), state[parts] if integrator else None

    @staticmethod
    def join_state(parts: Sequence[Any], total: Tensor | None) -> tuple[Any, ...]:
        """The inverse of :meth:`split_state`: the kind's state tensors, then the integrator's sum if any."""
        return (*parts, total) if total is not None else tuple(parts)

    # ---------------------------------------------------------------------------------------------- export

    def export_step(self, graph: StepGraph, u: str) -> str:
        """Add the kind's one-sample step, without the output integrator, to a step graph: declare its state parts
        (``graph.state``, zeros being the zero state; in the order and layout of ``init_state(1)``'s tensors,
        flattened, complex entries as (Re, Im) pairs), compute its output and give each part its next value.

        Args:
            graph: the graph under construction (``stepgraph.StepGraph``).
            u: the name of the input vector (n_u,), physical units.

        Returns:
            The name of the output vector (n_y,), physical units (the increments, with an integrator).

        Raises:
            ConfigError: the kind, or a part of this model, cannot be written as real operations.
        """
        raise ConfigError(f"model kind {self.kind!r} cannot be exported: it does not describe its one-sample step "
                          "(Model.export_step)")

    @torch.no_grad()
    def add_step(self, graph: StepGraph, u: str) -> str:
        """Add the whole one-sample step to ``graph``: :meth:`export_step`, then the output integrator's running
        sum (one more state part, n_y) when the model has one. Returns the output's name (n_y,), physical."""
        y = self.export_step(graph, u)
        if not self.integrates_output:
            return y
        total = graph.state(self.config.n_y, "integrator: the running sum of the output", hint="total")
        y = graph.add(total, y)
        graph.update(total, y)
        return y

    def step_graph(self) -> StepGraph:
        """The model's one-sample step as a flat real program (``stepgraph``): u (n_u,), state (n_state,) ->
        y (n_y,), next state, physical units; the zero state is the model's. A snapshot of the parameters.

        Raises:
            ConfigError: the kind, or a part of this model, cannot be written as real operations.
        """
        graph = StepGraph(self.config.n_u, self.config.n_y)
        return graph.finish(self.add_step(graph, graph.u))

    def export_input(self, graph: StepGraph, u: str) -> str:
        """The normalised input u_n = (u - u_mean) / u_std as a step-graph vector (n_u,)."""
        return graph.scale(u, 1 / self.u_std.double(), -self.u_mean.double() / self.u_std.double(), hint="u_n")

    def export_output(self, graph: StepGraph, y_n: str) -> str:
        """The physical output y = y_mean + y_std * y_n as a step-graph vector (n_y,)."""
        return graph.scale(y_n, self.y_std, self.y_mean, hint="y")

    # ---------------------------------------------------------------------------------------------- training

    def identify(self, train: Sequence[IOData], val: Sequence[ValidationRecord]) -> str:
        """Identify the model in place from data (kinds whose ``trainer`` is "identify"); its dt is set.

        Args:
            train: training records (the training parts, after the validation split).
            val: validation records (simulated in full, scored from their start index), for choices such as the
                order.

        Returns:
            A short description of what was identified (``FitResult.stopped``).
        """
        raise ConfigError(f"model kind {self.kind!r} is trained by gradient steps, not identified")

    def check_linear_start(self) -> None:
        """Raise ConfigError unless the model can start as a linear model (before anything is identified).

        Raises:
            ConfigError: the kind (or this configuration of it) cannot start from a linear model.
        """
        raise ConfigError(f"init='linear' is not available for model kind {self.kind!r}")

    def start_linear(self, train: Sequence[IOData], val: Sequence[ValidationRecord]) -> LinearStateSpace:
        """Start as the best linear model of the data (``TrainConfig(init="linear")``); the scaler is set.

        Returns:
            The linear model the model now reproduces.

        Raises:
            ConfigError: the kind (or this configuration of it) cannot start from a linear model.
        """
        self.check_linear_start()
        raise NotImplementedError(f"{type(self).__name__} allows a linear start but does not implement it")

    def poles(self) -> np.ndarray:
        """The poles of the model's linear part (kinds with the "poles" capability), complex numpy."""
        raise ConfigError(f"model kind {self.kind!r} has no poles to report")

    # ---------------------------------------------------------------------------------------------- files

    def scaler_info(self) -> Any:
        """A readable copy of the normalisation statistics (the ``scaler`` metadata of model files)."""
        return {name: getattr(self, name).double().tolist() for name in ("u_mean", "u_std", "y_mean", "y_std")}

    def file_parts(self) -> tuple[dict[str, Any], dict[str, Tensor]]:
        """What a model file stores: the config as plain data (with the state encoder's shape under the reserved key
        ``"x0_encoder"`` when the model has one) and the tensors (``state_dict``, CPU, contiguous)."""
        config = self.config.to_dict()
        if self.state_encoder is not None:
            config[ENCODER_KEY] = dict(self.state_encoder.spec)
        return config, {name: t.detach().cpu().contiguous() for name, t in self.state_dict().items()}

    @classmethod
    def config_from_file(cls, data: dict[str, Any]) -> Any:
        """The validated config of a model file's plain data (a kind may translate older files' fields here).

        Raises:
            ModelFileError: an invalid config.
        """
        kind_fields = {key: value for key, value in data.items() if key != ENCODER_KEY}  # the encoder is the base's
        try:
            return cls.config_class.from_dict(kind_fields)
        except (DeepWienerError, TypeError) as exc:
            raise ModelFileError(f"invalid model config: {exc} (model kind {cls.kind_name()!r})") from exc

    @classmethod
    def from_file_parts(cls, config: dict[str, Any], dtype: torch.dtype, tensors: Mapping[str, Tensor]) -> Self:
        """Rebuild a model from :meth:`file_parts`.

        Raises:
            ModelFileError: an invalid config, tensors whose names or shapes do not match it, or a scaler that is
                not finite and positive.
        """
        config = dict(config)
        encoder = config.pop(ENCODER_KEY, None)
        model = cls.from_config(cls.config_from_file(config)).to(dtype)
        if encoder is not None:
            try:
                model.attach_state_encoder(encoder["window"], encoder["hidden"])
            except (KeyError, TypeError, DeepWienerError) as exc:
                raise ModelFileError(f"invalid state encoder {encoder!r}: {exc}") from exc
        check_tensors({name: tuple(t.shape) for name, t in model.state_dict().items()}, tensors)
        model.load_state_dict(dict(tensors), strict=True)
        scales = torch.cat([model.u_std.flatten(), model.y_std.flatten()])
        if not (torch.isfinite(scales).all() and (scales > 0).all()):
            raise ModelFileError(f"invalid {cls.kind_name()} model: its scaler's u_std and y_std must be finite and "
                                 "positive")
        return model


def dtype_name(dtype: torch.dtype) -> str:
    """The name of a model dtype in :data:`DTYPES`.

    Raises:
        ModelFileError: another dtype (models are float32 or float64).
    """
    names = [name for name, value in DTYPES.items() if value == dtype]
    if not names:
        raise ModelFileError(f"cannot save a model of dtype {dtype}; expected one of {list(DTYPES)}")
    return names[0]


def check_tensors(expected: Mapping[str, tuple[int, ...]], found: Mapping[str, Tensor]) -> None:
    """Compare the names and shapes of a file's tensors with those the config builds.

    Raises:
        ModelFileError: missing or unexpected names, or a shape mismatch.
    """
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    if missing or unexpected:
        raise ModelFileError(f"tensors do not match the config: missing {missing}, unexpected {unexpected}")
    for name, shape in expected.items():
        if tuple(found[name].shape) != shape:
            raise ModelFileError(f"shape mismatch: tensor {name!r} has shape {tuple(found[name].shape)}, the config "
                                 f"expects {shape}")


class SequenceStepper:
    """Streaming simulation by the model's own ``forward`` on length-1 sequences: ``step(u_k, state)``.

    For models whose ``forward`` is already a recurrence over time (RNN, LFR, linear models), so that stepping
    costs no more than one sample of ``forward``.
    """

    def __init__(self, model: Model) -> None:
        self.model = model

    def init_state(self, batch: int) -> Any:
        """Zero state (the model's ``init_state``)."""
        return self.model.init_state(batch)

    def step(self, u_k: Tensor, state: Any) -> tuple[Tensor, Any]:
        """u_k: (batch, n_u) physical -> (y_k (batch, n_y) physical, next state)."""
        y, state = self.model(u_k[:, None], state)
        return y[:, 0], state
