"""Ensembles: the average of the free-run simulations of several models of one system.

Models trained from different seeds make partly independent errors; their average has a lower variance
than any one of them (the bias stays). ``Ensemble(models)`` simulates each member from its zero state and
averages the outputs sample by sample, in physical units, so it can be evaluated, saved (kind ``"ensemble"``),
streamed and simulated from the command line like one model. Whether an ensemble is better than its best member
is a question for validation data, never for test data.

The members may be of any registered kind but an ensemble, and must agree on the number of inputs and outputs
and on the sampling time. An ensemble is not trained (train its members) and has no blocks to analyse or reduce
(inspect its members). Its state is the tuple of its members' states. A model file stores each member's kind,
dtype and config, and member ``i``'s tensors under the names ``member<i>.<name>``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from deepwiener.errors import ConfigError, DeepWienerError, ModelFileError
from deepwiener.models import registry
from deepwiener.models.base import DTYPES, Model, dtype_name
from deepwiener.models.streamers import EnsembleStreamer, Streamer
from deepwiener.stepgraph import StepGraph


@dataclasses.dataclass(frozen=True)
class EnsembleConfig:
    """The sizes and sampling time an ensemble's members share (their own configs are the members').

    Attributes:
        n_u, n_y: numbers of inputs and outputs.
        dt: sampling time in seconds.
        kind: the model kind, "ensemble" (a class constant, not a field).
    """

    kind: ClassVar[str] = "ensemble"

    n_u: int
    n_y: int
    dt: float


class Ensemble(Model):
    """The mean of the free-run simulations of ``members``.

    Args:
        members: two or more models with equal n_u, n_y and sampling time (relative tolerance 1e-9).

    Raises:
        ConfigError: fewer than two members, a member that is not a model (an ensemble in an ensemble included),
            or members that disagree on n_u, n_y or dt.
    """

    config_class = EnsembleConfig
    trainer = None
    buildable = False

    def __init__(self, members: Iterable[Model]) -> None:
        super().__init__()
        members = tuple(members)
        if len(members) < 2:
            raise ConfigError(f"an ensemble needs at least two models, got {len(members)}")
        for k, model in enumerate(members):
            if not isinstance(model, Model) or isinstance(model, Ensemble):
                raise ConfigError(f"ensemble member {k} is of type {type(model).__name__}; expected a model of a "
                                  f"registered kind other than an ensemble ({', '.join(registry.MODEL_KINDS)})")
        sizes = [(m.config.n_u, m.config.n_y) for m in members]
        if len(set(sizes)) > 1:
            raise ConfigError(f"ensemble members disagree on (n_u, n_y): {sizes}")
        dts = [float(m.dt) for m in members]
        if any(not math.isclose(dt, dts[0], rel_tol=1e-9) for dt in dts):
            raise ConfigError(f"ensemble members disagree on the sampling time: {dts} s")
        self.members = nn.ModuleList(members)
        self.config = EnsembleConfig(n_u=sizes[0][0], n_y=sizes[0][1], dt=dts[0])

    @property
    def n_u(self) -> int:
        """Number of inputs."""
        return self.config.n_u

    @property
    def n_y(self) -> int:
        """Number of outputs."""
        return self.config.n_y

    @property
    def dtype(self) -> torch.dtype:
        """The widest dtype of the members."""
        return max((m.dtype for m in self.members), key=lambda dtype: dtype.itemsize)

    def scaler_info(self) -> list[Any]:
        """Each member's normalisation statistics, in order."""
        return [m.scaler_info() for m in self.members]

    def init_state(self, batch: int) -> tuple[Any, ...]:
        """The members' zero states, in order."""
        return tuple(m.init_state(batch) for m in self.members)

    def forward(self, u: Tensor, state: tuple[Any, ...] | None = None, mode: str = "auto") -> tuple[Tensor, Any]:
        """Simulate every member and average: u (batch, time, n_u) -> (y (batch, time, n_y) in u's dtype, the
        members' final states)."""
        states = state if state is not None else (None,) * len(self.members)
        if len(states) != len(self.members):
            raise ConfigError(f"an ensemble state holds one state per member ({len(self.members)}), got {len(states)}")
        outputs, finals = [], []
        for member, member_state in zip(self.members, states, strict=True):
            y, final = member(u.to(member.dtype), member_state, mode)
            outputs.append(y.to(u.dtype))
            finals.append(final)
        return torch.stack(outputs).mean(0), tuple(finals)

    def export_step(self, graph: StepGraph, u: str) -> str:
        """The step as real operations (``Model.export_step``): every member's whole step (its integrator
        included), the outputs averaged; the state is the members' states in order."""
        outputs = []
        for index, member in enumerate(self.members):
            with graph.scope(f"member{index}"):
                outputs.append(member.add_step(graph, u))
        mean = np.eye(self.n_y) / len(outputs)
        return graph.affine([(mean, y) for y in outputs], hint="y")

    def stepper(self) -> EnsembleStepper:
        """One sample at a time: every member's stepper, the outputs averaged."""
        return EnsembleStepper(self)

    def fast_stepper(self) -> Streamer:
        """Streaming, one sample at a time: every member's ``fast_stepper()``, outputs averaged; its ``state`` is
        the tuple of the members' states."""
        return EnsembleStreamer([m.fast_stepper() for m in self.members])

    def simulate(self, u: np.ndarray, mode: str = "auto", *, y_init: np.ndarray | None = None,
                 x0: str = "zero") -> np.ndarray:
        """Free-run simulation of every member, averaged; with ``x0`` "fit" or "encoder" each member estimates its
        own state on the init window ``y_init`` (``Model.simulate``).

        Args:
            u: (time, n_u), or (time,) when n_u = 1, in physical units.
            mode: simulation engine, passed to every member.
            y_init: (n, n_y) measured outputs of the init window, for ``x0`` other than "zero".
            x0: "zero", "fit" or "encoder".

        Returns:
            y: (time, n_y) float64, the mean of the members' outputs.

        Raises:
            DataError: a wrong shape or NaN/inf in ``u`` or ``y_init`` (from the members).
        """
        return np.mean([m.simulate(u, mode=mode, y_init=y_init, x0=x0) for m in self.members], axis=0)

    def file_parts(self) -> tuple[dict[str, Any], dict[str, Tensor]]:
        """``{"members": [{"kind", "dtype", "config"}, ...]}`` and member ``i``'s tensors as ``member<i>.<name>``."""
        entries, tensors = [], {}
        for i, member in enumerate(self.members):
            config, own = member.file_parts()
            entries.append({"kind": member.kind, "dtype": dtype_name(member.dtype), "config": config})
            tensors.update({f"{_prefix(i)}{name}": t.clone() for name, t in own.items()})  # members may share storage
        return {"members": entries}, tensors

    @classmethod
    def config_from_file(cls, data: dict[str, Any]) -> list[tuple[type[Model], torch.dtype, Any]]:
        """Each member's class, dtype and validated config, from ``{"members": [{"kind", "dtype", "config"}]}``.

        Raises:
            ModelFileError: a malformed member list, a member of an unknown kind or dtype, or an invalid member
                config.
        """
        entries = data.get("members")
        if set(data) != {"members"} or not isinstance(entries, list) or len(entries) < 2:
            raise ModelFileError("an ensemble's config must be {\"members\": [two or more members]}")
        members = []
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict) or set(entry) != {"kind", "dtype", "config"}:
                raise ModelFileError(f"ensemble member {i} must have the keys kind, dtype and config")
            if entry["kind"] == cls.kind_name() or entry["kind"] not in registry.FILE_KINDS:
                kinds = [k for k in registry.FILE_KINDS if k != cls.kind_name()]
                raise ModelFileError(f"ensemble member {i} has kind {entry['kind']!r}; expected one of {kinds}")
            if entry["dtype"] not in DTYPES or not isinstance(entry["config"], dict):
                raise ModelFileError(f"ensemble member {i} has an unsupported dtype or a config that is not a JSON "
                                     "object")
            member_class = registry.kind_class(entry["kind"])
            members.append((member_class, DTYPES[entry["dtype"]], member_class.config_from_file(entry["config"])))
        return members

    @classmethod
    def from_file_parts(cls, config: dict[str, Any], dtype: torch.dtype, tensors: Mapping[str, Tensor]) -> Ensemble:
        """Rebuild an ensemble from :meth:`file_parts`.

        Raises:
            ModelFileError: an invalid member list (:meth:`config_from_file`), tensors of no member, or a member
                that cannot be rebuilt.
        """
        members = cls.config_from_file(config)
        owned = {name for name in tensors if any(name.startswith(_prefix(i)) for i in range(len(members)))}
        if owned != set(tensors):
            raise ModelFileError(f"tensors of no ensemble member: {sorted(set(tensors) - owned)}")
        models = []
        for i, (member_class, member_dtype, _) in enumerate(members):
            own = {name[len(_prefix(i)):]: t for name, t in tensors.items() if name.startswith(_prefix(i))}
            models.append(member_class.from_file_parts(config["members"][i]["config"], member_dtype, own))
        try:
            return cls(models)
        except DeepWienerError as exc:
            raise ModelFileError(f"invalid ensemble: {exc}") from exc


class EnsembleStepper:
    """Streaming simulation of an ensemble in torch: each member's stepper, the outputs averaged."""

    def __init__(self, ensemble: Ensemble) -> None:
        self.members = tuple(ensemble.members)
        self.steppers = [m.stepper() for m in self.members]

    def init_state(self, batch: int) -> tuple[Any, ...]:
        """The members' zero states, in order."""
        return tuple(s.init_state(batch) for s in self.steppers)

    def step(self, u_k: Tensor, state: tuple[Any, ...]) -> tuple[Tensor, tuple[Any, ...]]:
        """u_k: (batch, n_u) physical -> (y_k (batch, n_y) in u_k's dtype, the members' next states)."""
        outputs, finals = [], []
        for member, stepper, member_state in zip(self.members, self.steppers, state, strict=True):
            y_k, final = stepper.step(u_k.to(member.dtype), member_state)
            outputs.append(y_k.to(u_k.dtype))
            finals.append(final)
        return torch.stack(outputs).mean(0), tuple(finals)


def _prefix(index: int) -> str:
    """The prefix of the tensor names of ensemble member ``index`` in a model file."""
    return f"member{index}."
