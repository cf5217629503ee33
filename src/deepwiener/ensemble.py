"""Ensembles: the average of the free-run simulations of several models of one system.

Models trained from different seeds make partly independent errors; their average has a lower variance
than any one of them (the bias stays). ``Ensemble(models)`` simulates each member from its zero state and
averages the outputs sample by sample, in physical units, so it can be evaluated, saved (``io.save``, kind
``"ensemble"``) and simulated from the command line like one model. Whether an ensemble is better than its
best member is a question for validation data, never for test data.

The members may be of any saved kind (deep Wiener, LFR, RNN, linear) but must agree on the number of inputs and
outputs and on the sampling time. An ensemble of deep Wiener models streams one sample at a time
(``fast_stepper``). An ensemble has no blocks to analyse or reduce: inspect its members.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

from deepwiener.baselines.linear import LinearStateSpace
from deepwiener.baselines.rnn import RNNModel
from deepwiener.errors import ConfigError
from deepwiener.lfr import LFRModel
from deepwiener.model import DeepWiener

if TYPE_CHECKING:
    from deepwiener.engines.streaming import EnsembleStreamer

Member = DeepWiener | LFRModel | RNNModel | LinearStateSpace
"""What an ensemble averages."""


def member_sizes(model: Member) -> tuple[int, int]:
    """(n_u, n_y) of a member."""
    if isinstance(model, LinearStateSpace):
        return model.n_u, model.n_y
    return model.config.n_u, model.config.n_y


class Ensemble:
    """The mean of the free-run simulations of ``members``.

    Args:
        members: two or more models with equal n_u, n_y and sampling time (relative tolerance 1e-9).

    Raises:
        ConfigError: fewer than two members, a member of another type (an ensemble in an ensemble included),
            or members that disagree on n_u, n_y or dt.
    """

    def __init__(self, members: Iterable[Member]) -> None:
        self.members: tuple[Member, ...] = tuple(members)
        if len(self.members) < 2:
            raise ConfigError(f"an ensemble needs at least two models, got {len(self.members)}")
        for k, model in enumerate(self.members):
            if not isinstance(model, Member):
                raise ConfigError(f"ensemble member {k} is of type {type(model).__name__}; expected a DeepWiener, "
                                  "LFRModel, RNNModel or LinearStateSpace")
        sizes = [member_sizes(m) for m in self.members]
        if len(set(sizes)) > 1:
            raise ConfigError(f"ensemble members disagree on (n_u, n_y): {sizes}")
        dts = [float(m.dt) for m in self.members]
        if any(not math.isclose(dt, dts[0], rel_tol=1e-9) for dt in dts):
            raise ConfigError(f"ensemble members disagree on the sampling time: {dts} s")
        self.n_u, self.n_y = sizes[0]

    @property
    def dt(self) -> float:
        """Sampling time in seconds (the first member's)."""
        return float(self.members[0].dt)

    @property
    def n_parameters(self) -> int:
        """Learnable real scalars of all members (a linear member counts its A, B, C, D entries)."""
        return sum(m.A.size + m.B.size + m.C.size + m.D.size if isinstance(m, LinearStateSpace) else m.n_parameters
                   for m in self.members)

    def simulate(self, u: np.ndarray) -> np.ndarray:
        """Free-run simulation of every member from its zero state, averaged.

        Args:
            u: (time, n_u), or (time,) when n_u = 1, in physical units.

        Returns:
            y: (time, n_y) float64, the mean of the members' outputs.

        Raises:
            DataError: a wrong shape or NaN/inf in ``u`` (from the members).
        """
        return np.mean([m.simulate(u) for m in self.members], axis=0)

    def fast_stepper(self) -> EnsembleStreamer:
        """Streaming simulation, one sample at a time: every member's ``fast_stepper()``, outputs averaged.

        Returns:
            A streamer (``deepwiener.engines.streaming``): ``step(u_k)`` (n_u,) -> (n_y,), ``run(u)``
            (T, n_u) -> (T, n_y), ``init_state()``; its ``state`` is the tuple of the members' states.

        Raises:
            ConfigError: a member that is not a deep Wiener model (only those stream).
        """
        from deepwiener.engines.streaming import EnsembleStreamer  # loads numba: only when streaming

        others = [type(m).__name__ for m in self.members if not isinstance(m, DeepWiener)]
        if others:
            raise ConfigError(f"only deep Wiener models stream; this ensemble also holds {others}")
        return EnsembleStreamer([m.fast_stepper() for m in self.members if isinstance(m, DeepWiener)])
