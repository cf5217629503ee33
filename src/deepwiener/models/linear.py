"""Linear state-space models: the model kind "linear", identified by N4SID instead of trained by gradient steps.

In normalised units (``u_n``, ``y_n``: the scaler of :mod:`deepwiener.models.base`)::

    x[k+1] = A x[k] + B u_n[k]          real state, (batch, n)
    y_n[k] = C x[k] + D u_n[k]          (batch, n_y)

``fit`` identifies it (``trainer = "identify"``): N4SID (``identification.identify_linear``) of the training
records, the order chosen among 1..``max_order`` on the validation records (or fixed by ``n_states``), then the
model holds the identified system (``A, B, C, D`` float64 and the identification's scaling). With
``integrator = True`` the system describes the output's increments and the model sums them (plants with a pure
integrator, the linear counterpart of ``ModelConfig.integrator``); it is identified on the increments.

Before identification, a model is a stable system of order ``n_states`` (or ``max_order``): poles uniform in
[0.5, 0.95] on the diagonal of A, Gaussian B and C with variance 1 / fan-in, D = 0, drawn from ``seed``.

Engines (``mode``): "loop", the recurrence as torch operations (differentiable, the reference), and every other
mode the exact block simulation of ``identification.simulate_state_space`` in float64 numpy, which is what
``simulate`` runs; ``forward`` uses it when no gradient is needed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from deepwiener.data import IOData, ValidationRecord, output_increments
from deepwiener.errors import ConfigError, check_positive_ints
from deepwiener.identification import LinearStateSpace, identify_linear, simulate_state_space
from deepwiener.models import initial_state
from deepwiener.models.base import Model
from deepwiener.options import DictConfig, check_sampling_time
from deepwiener.stepgraph import StepGraph

LinearState = tuple[Tensor, ...]


@dataclasses.dataclass(frozen=True)
class LinearConfig(DictConfig):
    """Everything that determines a ``LinearModel``.

    Attributes:
        n_u, n_y: numbers of inputs and outputs.
        n_states: model order (real states); None: identification chooses it among 1..max_order on validation
            data (an unidentified model then has max_order states).
        max_order: largest order identification tries.
        horizon: past/future block rows of the subspace step, with ``(horizon - 1) n_y >= order``.
        integrator: the system describes the output's increments, which the model sums (module docstring).
        seed: seed of the random stable system before identification.
        dt: sampling time of the data in seconds (set by ``fit``).
        kind: the model kind, "linear" (a class constant, not a field).
    """

    kind: ClassVar[str] = "linear"

    n_u: int
    n_y: int
    n_states: int | None = None
    max_order: int = 10
    horizon: int = 20
    integrator: bool = False
    seed: int = 0
    dt: float = 1.0

    def __post_init__(self) -> None:
        check_positive_ints(n_u=self.n_u, n_y=self.n_y, max_order=self.max_order, horizon=self.horizon)
        if self.n_states is not None:
            check_positive_ints(n_states=self.n_states)
        if self.horizon < 2:
            raise ConfigError(f"horizon must be >= 2, got {self.horizon}")
        if not isinstance(self.integrator, bool):
            raise ConfigError(f"integrator must be true or false, got {self.integrator!r}")
        check_sampling_time(self.dt)

    @property
    def order(self) -> int:
        """The number of states the model has: ``n_states``, else ``max_order``."""
        return self.n_states if self.n_states is not None else self.max_order


class LinearModel(Model):
    """A linear state-space model in physical units (module docstring); parameters and scaler are float64.

    Args:
        n_u, n_y, n_states, max_order, horizon, integrator, seed, dt: the fields of :class:`LinearConfig`.
    """

    config_class = LinearConfig
    trainer = "identify"
    capabilities = frozenset({"poles"})

    def __init__(self, n_u: int, n_y: int, n_states: int | None = None, max_order: int = 10, horizon: int = 20,
                 integrator: bool = False, seed: int = 0, dt: float = 1.0) -> None:
        super().__init__()
        self.config = LinearConfig(n_u=n_u, n_y=n_y, n_states=n_states, max_order=max_order, horizon=horizon,
                                   integrator=integrator, seed=seed, dt=dt)
        n = self.config.order
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            self.A = nn.Parameter(torch.diag(0.5 + 0.45 * torch.rand(n, generator=gen, dtype=torch.float64)))
            self.B = nn.Parameter(torch.randn(n, n_u, generator=gen, dtype=torch.float64) / n_u**0.5)
            self.C = nn.Parameter(torch.randn(n_y, n, generator=gen, dtype=torch.float64) / n**0.5)
            self.D = nn.Parameter(torch.zeros(n_y, n_u, dtype=torch.float64))
        self.register_scaler()
        self.double()

    @classmethod
    def from_state_space(cls, system: LinearStateSpace, **options: Any) -> LinearModel:
        """A model holding an identified system (``identification``: ``fit_n4sid``, ``fit_arx``, ...).

        Args:
            system: the system with its scaling, in physical units.
            options: further :class:`LinearConfig` fields (``integrator``, ``max_order``, ...).
        """
        model = cls(system.n_u, system.n_y, n_states=system.n_states, dt=float(system.dt), **options)
        model.load_state_space(system)
        return model

    @torch.no_grad()
    def load_state_space(self, system: LinearStateSpace) -> None:
        """Hold ``system`` (its order becomes the model's ``n_states``; sizes and dt must match).

        Raises:
            ConfigError: another number of inputs or outputs.
        """
        cfg = self.config
        if (system.n_u, system.n_y) != (cfg.n_u, cfg.n_y):
            raise ConfigError(f"the system has n_u={system.n_u}, n_y={system.n_y}; the model has n_u={cfg.n_u}, "
                              f"n_y={cfg.n_y}")
        self.config = dataclasses.replace(cfg, n_states=system.n_states, dt=float(system.dt))
        device = self.u_mean.device
        for name in ("A", "B", "C", "D"):
            setattr(self, name, nn.Parameter(torch.tensor(getattr(system, name), dtype=torch.float64,
                                                          device=device)))
        self.to(torch.float64)
        self.set_scaler(system.u_mean, system.u_std, system.y_mean, system.y_std)

    def state_space(self) -> LinearStateSpace:
        """The system as numpy arrays with its scaling (``identification.LinearStateSpace``)."""
        arrays = {name: getattr(self, name).detach().double().cpu().numpy()
                  for name in ("A", "B", "C", "D", "u_mean", "u_std", "y_mean", "y_std")}
        return LinearStateSpace(dt=self.dt, **arrays)

    def identify(self, train: Sequence[IOData], val: Sequence[ValidationRecord]) -> str:
        """N4SID of ``train``, the order chosen on ``val`` (or ``n_states``); of the increments with an integrator."""
        if self.integrates_output:
            train = [output_increments(rec) for rec in train]
            val = [ValidationRecord(output_increments(rec), start) for rec, start in val]
        cfg = self.config
        self.load_state_space(identify_linear(train, val, max_order=cfg.max_order, horizon=cfg.horizon,
                                              order=cfg.n_states))
        return f"N4SID, order {self.config.n_states}"

    def poles(self) -> np.ndarray:
        """(n,) complex eigenvalues of A (discrete-time poles)."""
        return np.linalg.eigvals(self.A.detach().double().cpu().numpy())

    def export_step(self, graph: StepGraph, u: str) -> str:
        """The step as real operations (``Model.export_step``); the state is x (n,)."""
        u_n = self.export_input(graph, u)
        x = graph.state(self.A.shape[0], "linear state x (normalised coordinates)")
        graph.update(x, graph.affine([(self.A, x), (self.B, u_n)], hint="x_next"))
        return self.export_output(graph, graph.affine([(self.C, x), (self.D, u_n)], hint="y_n"))

    def init_state(self, batch: int) -> LinearState:
        """Zero state: ``(x,)`` with x (batch, n) float64 in normalised coordinates, then the integrator's sum."""
        x = self.A.new_zeros(batch, self.A.shape[0])
        return self.join_state((x,), self.zero_sum(batch) if self.integrates_output else None)

    def forward(self, u: Tensor, state: LinearState | None = None, mode: str = "auto") -> tuple[Tensor, LinearState]:
        """Simulate the model.

        Args:
            u: (batch, time, n_u) real, physical units.
            state: ``init_state``-shaped tuple; zeros if None.
            mode: "loop" (torch recurrence), anything else the exact block simulation (module docstring).

        Returns:
            y: (batch, time, n_y) physical units, in the dtype of ``u``, and the final state.
        """
        self.check_input(u)
        (x,), total = self.split_state(state, 1, u.shape[0])
        x = self.A.new_zeros(u.shape[0], self.A.shape[0]) if x is None else x.to(self.A.dtype)
        u_n = self.normalize_input(u.to(self.A.dtype))
        needs_grad = torch.is_grad_enabled() and (u.requires_grad or x.requires_grad or self.A.requires_grad)
        if mode == "loop" or needs_grad:
            y_n, x = self._recurrence(u_n, x)
        else:
            y_n, x = self._blocks(u_n, x)
        y, total = self.integrate(self.denormalize_output(y_n).to(u.dtype), total)
        return y, self.join_state((x,), total)

    def _recurrence(self, u_n: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        """The reference: u_n (batch, time, n_u), x (batch, n) -> y_n (batch, time, n_y), final x."""
        outputs = []
        for k in range(u_n.shape[1]):
            outputs.append(x @ self.C.T + u_n[:, k] @ self.D.T)
            x = x @ self.A.T + u_n[:, k] @ self.B.T
        y_n = torch.stack(outputs, dim=1) if outputs else u_n.new_zeros(u_n.shape[0], 0, self.config.n_y)
        return y_n, x

    @torch.no_grad()
    def _blocks(self, u_n: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        """The exact block simulation, row by row in float64 numpy; shapes as :meth:`_recurrence`."""
        A, B, C, D = (t.detach().cpu().numpy() for t in (self.A, self.B, self.C, self.D))
        rows = [simulate_state_space(A, B, C, D, u_row, x_row)
                for u_row, x_row in zip(u_n.detach().cpu().numpy(), x.detach().cpu().numpy(), strict=True)]
        y_n = torch.as_tensor(np.stack([y for y, _ in rows]), device=u_n.device)
        return y_n, torch.as_tensor(np.stack([x_T for _, x_T in rows]), device=u_n.device)

    def fit_state_vector(self, u_init: Tensor, y_init: Tensor, mode: str) -> Tensor:
        """The start state that best explains a window, in closed form: the output is affine in the (flattened)
        state, so its columns are simulated one unit state at a time and the minimum-norm least-squares solution
        taken (exact for a noiseless window of an observable model; the penalty of "fit" is not needed)."""
        template = self.init_state(1)
        size = initial_state.flatten_state(template).shape[1]
        scale = self.y_std.double()
        with torch.no_grad():
            base, _ = self(u_init, None, mode=mode)
            columns = []
            for unit in torch.eye(size, dtype=torch.float64, device=u_init.device):
                y_unit, _ = self(u_init, initial_state.unflatten_state(unit[None], template), mode=mode)
                columns.append(((y_unit - base).double() / scale).reshape(-1))
        target = ((y_init.double() - base.double()) / scale).reshape(-1)
        solution = np.linalg.lstsq(torch.stack(columns, dim=1).cpu().numpy(), target.cpu().numpy(), rcond=None)[0]
        return torch.as_tensor(solution, device=u_init.device)[None]

    @torch.no_grad()
    def simulate(self, u: np.ndarray, mode: str = "auto", *, y_init: np.ndarray | None = None,
                 x0: str = "zero") -> np.ndarray:
        """Free-run simulation in physical units: u (time, n_u) or (time,) -> y (time, n_y) float64 (mode: as
        :meth:`forward`; ``y_init`` and ``x0``: ``Model.simulate``)."""
        u_arr = self.check_numpy_input(u)
        if mode == "loop" or x0 != "zero":
            return super().simulate(u_arr, mode, y_init=y_init, x0=x0)
        y = self.state_space().simulate(u_arr)
        return np.cumsum(y, axis=0) if self.integrates_output else y
