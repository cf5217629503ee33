"""Nonlinear feedback models (LFR): a linear state-space system with a static map inside its feedback loop.

A deep Wiener stack is feedforward: its static maps act on the outputs of linear blocks and never feed back into
a state. A plant whose nonlinearity sits inside a loop (a hardening spring: the restoring force depends on the
position it moves) is then approximated, not represented, and outside the training amplitudes each static map
continues as it happens to (``benchmarks/extrapolation_study.py`` measures this). The nonlinear linear
fractional representation (NL-LFR) closes the loop through the static map, in normalised units::

    u_n[k]   = (u[k] - u_mean) / u_std                           input, (batch, n_u)
    z[k]     = F x[k] + G u_n[k]                                  the map's input, (batch, n_w)
    w[k]     = phi(z[k])                                          static map (``nonlinearities``), (batch, n_w)
    x[k+1]   = A x[k] + B u_n[k] + E w[k] + b_x                   real state, (batch, n_x)
    y[k]     = y_mean + y_std (C x[k] + D u_n[k] + H w[k] + b_y)  output, (batch, n_y)

There is no direct path from w to z (no algebraic loop), so simulation is explicit; the state map is nonlinear,
so it runs sequentially in time (no parallel scan or convolution). Engines (``mode``): "loop", a python loop of
torch operations (any map, any device), and "compiled", a numba kernel with an analytic backward
(:mod:`deepwiener.engines.feedback`; the "mlp" map on the CPU, tens of times faster); "auto" takes the compiled
one where it applies. With phi = 0 the model
is the linear system (A, B, C, D); a hardening spring is ``phi(z) = z^3`` with z the position and E the force
input column.

Linear start (``TrainConfig(init="linear")``, :meth:`LFRModel.start_linear`, :meth:`LFRModel.embed_linear`): (A, B,
C, D, b_x, b_y) become the best linear model's (N4SID of order at most n_x, chosen on validation; padded up to n_x
with uncoupled states: distinct stable poles, random input columns, unobserved), E = H = 0, so the output equals
the linear model's. The state coordinates are then whitened (a similarity transform
making the states' covariance on the training records the identity; directions with less than 1e-6 of the largest
variance are scaled as if they had that much): a subspace model's states may differ in scale by orders of magnitude,
and then a small step of E can close an unstable loop through a large entry of F. The rows of F are random
directions, scaled, and phi's bias set, so that each z channel has zero mean and unit rms on the training records.
Training then grows E and H from zero.

Stable by construction (``stable=True``): the loop's state map x -> A x + E phi(F x + G u_n) + ... has Lipschitz
constant at most ``||A|| + L_phi ||E|| ||F||`` (spectral norms; L_phi a global Lipschitz bound of the map). The
stable model keeps free parameters (A, E) and simulates with ``s A`` and ``s E``, where
``s = min(1, CONTRACTION / (||A|| + L_phi ||E|| ||F||))``: for every parameter value the state map is a contraction
with rate at most ``CONTRACTION`` < 1 in the Euclidean norm of the (normalised) state, so the model is
incrementally input-to-state stable (delta-ISS): two trajectories under one input approach each other at that rate,
and any bounded input gives a bounded state, ``||x|| <= sup_k ||f(0, u_k)|| / (1 - CONTRACTION)``. The model stays
explicit (one evaluation of the map per step), so streaming, the compiled kernel and export are unchanged; the
maps must have a global Lipschitz bound (``Nonlinearity.globally_lipschitz``: not poly or glu). Nothing is lost in
the restriction to the Euclidean norm: a model that contracts in any constant quadratic metric ``x^T P x`` is this
model in the coordinates ``P^(1/2) x``, which the free A, B, C, E, F can take. The linear start's whitened state
makes ``||A|| <= 1`` (the state covariance ``A A^T + B B^T`` is the identity), so it changes the start by the factor
``s`` only where ``||A||`` exceeds ``CONTRACTION``. ``analysis.loop_certificate`` gives the certificate's numbers
for any LFR (``deepwiener inspect`` prints them).

The small-gain bound adds the loop's gain to ``||A||`` whatever directions the loop acts in, so a model whose
slowest mode has ``||A||`` near 1 keeps almost nothing for its nonlinearity. ``certificate="iqc"`` (with
``stable=True``) scales by a less conservative condition, an incremental quadratic constraint (IQC) with a
multiplier, the S-procedure of the LMI conditions behind recurrent equilibrium networks. Write the map as
slope-restricted elementwise functions between linear maps (``Nonlinearity.slope_sector``: for "mlp" the hidden
gelu units, slopes in [-0.129, 1.129]), so that the loop is ``x+ = A x + Et p + ...``, ``p = s(Ft x + ...)``
with ``Ft = W1 F``, ``Et = E W2`` and each ``s_i`` slope-restricted in ``[a_i, b_i]``. Every increment then
satisfies ``(dp - a dq)^T Lam (b dq - dp) >= 0`` (dq = Ft dx) for any diagonal ``Lam > 0``, and the state map
contracts at rate ``rho`` if::

    [A Et]^T [A Et]  <=  M = [[rho^2 I + Ft^T Lam a b Ft,   -Ft^T Lam (a + b) / 2],
                              [-Lam (a + b) / 2 Ft,           Lam              ]]

(S-procedure; M > 0 needs ``||Lam^(1/2) (b - a) / 2 Ft|| < rho``, kept by shrinking Lam where it fails). With
``M = L L^T`` (Cholesky) the condition is ``||[A Et] L^-T|| <= 1``, so the stable model simulates with ``s A`` and
``s E``, ``s = min(1, 1 / ||[A Et] L^-T||)``, and learns the multiplier's shape ``exp(log_multiplier)`` with the
rest (its scale is searched at every evaluation); the parametrisation stays explicit and every parameter value
contracts at rate ``rho = CONTRACTION``. It also learns a metric ``P = R R^T`` (``metric``, P = I at the start):
the condition then reads ``[A Et]^T P [A Et] <= M`` with ``rho^2 P`` in M's corner, ``||R^T [A Et] L^-T|| <= 1``,
a contraction in ``||x||_P``; the free coordinates could take any metric too, but a learned one gives gradient
descent a direct path to it. Where the loop acts in directions the slow modes do not, the condition leaves A
alone (the small-gain bound cannot).

Reference: R. Vanbeylen, "Nonlinear LFR block-oriented model: potential benefits and improved, user-friendly
identification method", IEEE Trans. Instrumentation and Measurement 62(12), 2013.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from deepwiener.data import IOData, ValidationRecord
from deepwiener.engines import MODES, feedback, numba_runtime
from deepwiener.errors import ConfigError, check_positive_ints, unknown_name
from deepwiener.identification import LinearStateSpace, identify_linear
from deepwiener.models.base import Model
from deepwiener.nonlinearities import MLP, NONLINEARITIES, SlopeSector, make_nonlinearity
from deepwiener.options import DictConfig, check_sampling_time
from deepwiener.stepgraph import StepGraph

LFRState = tuple[Tensor]

CONTRACTION = 0.999
"""The stable LFR's bound on the contraction rate of its state map (module docstring)."""
CERTIFICATES = ("small_gain", "iqc")
"""The conditions a stable LFR can be built on (module docstring)."""
MULTIPLIER_LOG_RANGE = 10.0
"""The IQC multiplier's logarithm is clamped to +-this (a multiplier of 0 or inf makes M singular)."""
MULTIPLIER_SCALES = torch.logspace(-4, 4, 17, dtype=torch.float64)
"""Scales of the IQC multiplier tried at every evaluation (the best is taken): the learned multiplier sets its shape
across channels, the scale is searched, so a multiplier far off at the start costs nothing."""
METRIC_LOG_RANGE = 3.0
"""The log-diagonal of the IQC metric's factor is clamped to +-this (P's condition number at most e^12)."""
PD_MARGIN = 0.99
"""The IQC multiplier is shrunk so that ||Lam^(1/2) (b - a) / 2 Ft|| <= PD_MARGIN * rho (M stays positive definite)."""


def metric_factor(metric: Tensor) -> Tensor:
    """The lower-triangular factor R of the IQC certificate's metric ``P = R R^T`` from its free parameter
    (n_x, n_x): the strict lower triangle as it is, the diagonal ``exp`` of the parameter's (clamped to
    +-``METRIC_LOG_RANGE``); the zero parameter gives ``P = I``."""
    log_diag = metric.diagonal().clamp(-METRIC_LOG_RANGE, METRIC_LOG_RANGE)
    return metric.tril(-1) + torch.diag(log_diag.exp())


def iqc_norm(A: Tensor, E: Tensor, F: Tensor, sector: SlopeSector, log_multiplier: Tensor,
             metric: Tensor | None = None, rho: float = CONTRACTION) -> Tensor:
    """``||R^T [A Et] L^-T||``, ``M(rho, Lam, P) = L L^T``, ``P = R R^T`` (module docstring): at most 1 certifies
    that the loop's state map contracts at rate ``rho`` in the norm ``||x||_P = sqrt(x^T P x)``.

    Args:
        A: (n_x, n_x); E: (n_x, n_w); F: (n_w, n_x): the loop's matrices.
        sector: the map's slope sector (``Nonlinearity.slope_sector``), h elementwise functions.
        log_multiplier: (h,) log of the IQC multiplier's shape (clamped to +-``MULTIPLIER_LOG_RANGE``); each
            scale of ``MULTIPLIER_SCALES`` times it is tried and the lowest norm returned.
        metric: (n_x, n_x) the metric's free parameter (:func:`metric_factor`); None: ``P = I``.
        rho: the contraction rate certified.

    Returns:
        () tensor in A's dtype (computed in float64), differentiable in every argument; inf where no multiplier
        scale gives a positive definite M in floating point.
    """
    dtype = A.dtype
    A, E, F, log_multiplier = (t.double() for t in (A, E, F, log_multiplier))
    sector = SlopeSector(*(None if t is None else t.double() for t in sector))
    n_x = A.shape[0]
    R = torch.eye(n_x, dtype=A.dtype, device=A.device) if metric is None else metric_factor(metric.double())
    Ft = F if sector.inner is None else sector.inner @ F  # (h, n_x)
    Et = E if sector.outer is None else E @ sector.outer  # (n_x, h)
    shape = log_multiplier.clamp(-MULTIPLIER_LOG_RANGE, MULTIPLIER_LOG_RANGE).exp()
    lam = MULTIPLIER_SCALES.to(shape)[:, None] * shape  # (scales, h): the multiplier's shape at every scale
    half_width = (sector.high - sector.low) / 2
    Ft_metric = torch.linalg.solve_triangular(R, Ft.T, upper=False).T  # Ft R^-T
    spread = torch.linalg.matrix_norm((lam.sqrt() * half_width)[:, :, None] * Ft_metric, ord=2)  # (scales,)
    lam = lam * (PD_MARGIN * rho / spread.clamp_min(1e-30)).clamp(max=1.0)[:, None] ** 2  # keeps M positive definite
    top = rho**2 * R @ R.T + Ft.T @ ((lam * sector.low * sector.high)[:, :, None] * Ft)
    cross = -(lam * (sector.low + sector.high) / 2)[:, :, None] * Ft  # (scales, h, n_x)
    M = torch.cat([torch.cat([top, cross.mT], 2), torch.cat([cross, torch.diag_embed(lam)], 2)], 1)
    failed = torch.linalg.cholesky_ex(M.detach()).info != 0  # (scales,): rounding left M indefinite there
    L = torch.linalg.cholesky(torch.where(failed[:, None, None], torch.eye(M.shape[1]).to(M), M))
    loop = R.T @ torch.cat([A, Et], 1)  # R^T [A Et]
    K = torch.linalg.solve_triangular(L, loop.T.expand(len(lam), -1, -1), upper=False).mT
    norms = torch.linalg.matrix_norm(K, ord=2).masked_fill(failed, math.inf)
    return norms.min().to(dtype)  # R^T [A Et] L^-T at the best scale


def pad_poles(count: int) -> np.ndarray:
    """Poles of the ``count`` uncoupled states that pad a linear start of lower order than n_x: distinct, spread
    over [0.3, 0.7], so that the padding states' responses are linearly independent and can be whitened."""
    return np.linspace(0.3, 0.7, count) if count > 1 else np.full(count, 0.5)


@dataclasses.dataclass(frozen=True)
class LFRConfig(DictConfig):
    """Everything that determines an ``LFRModel``.

    Attributes:
        n_u, n_y: numbers of inputs and outputs.
        n_x: real states of the linear part.
        n_w: channels of the static map (its input z and output w).
        nonlinearity: the static map phi, a name in ``nonlinearities.NONLINEARITIES``.
        stable: contracting for every parameter value (module docstring; phi needs a global Lipschitz bound).
        certificate: the condition a stable model is built on: "small_gain" (``||A|| + L_phi ||E|| ||F||``) or
            "iqc" (the IQC with a learned multiplier; phi needs a slope sector: not poly or glu).
        seed: seed of the parameter initialisation.
        dt: sampling time of the data in seconds (set by ``fit``).
        kind: the model family, "lfr" (a class constant, not a field).
    """

    kind: ClassVar[str] = "lfr"

    n_u: int
    n_y: int
    n_x: int = 8
    n_w: int = 4
    nonlinearity: str = "mlp"
    stable: bool = False
    certificate: str = "small_gain"
    seed: int = 0
    dt: float = 1.0

    def __post_init__(self) -> None:
        check_positive_ints(n_u=self.n_u, n_y=self.n_y, n_x=self.n_x, n_w=self.n_w)
        if self.nonlinearity not in NONLINEARITIES:
            raise unknown_name("nonlinearity", self.nonlinearity, NONLINEARITIES)
        if self.certificate not in CERTIFICATES:
            raise unknown_name("certificate", self.certificate, CERTIFICATES)
        check_sampling_time(self.dt)


class LFRModel(Model):
    """A nonlinear LFR simulation model for n_u inputs and n_y outputs, in physical units (module docstring).

    Args:
        n_u, n_y, n_x, n_w, nonlinearity, stable, certificate, seed, dt: the fields of :class:`LFRConfig`.

    Raises:
        ConfigError: ``stable`` with a map that has no global Lipschitz bound (no slope sector, for "iqc").

    The random start: A diagonal with poles uniform in [0.5, 0.95], B, C, F, G Gaussian with variance 1/fan-in,
    D = 0, E and H small (std 0.01), biases 0.
    """

    config_class = LFRConfig
    capabilities = frozenset({"poles", "blocks"})
    title = "LFR"

    def __init__(self, n_u: int, n_y: int, n_x: int = 8, n_w: int = 4, nonlinearity: str = "mlp",
                 stable: bool = False, certificate: str = "small_gain", seed: int = 0, dt: float = 1.0) -> None:
        super().__init__()
        self.config = LFRConfig(n_u=n_u, n_y=n_y, n_x=n_x, n_w=n_w, nonlinearity=nonlinearity, stable=stable,
                                certificate=certificate, seed=seed, dt=dt)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.A = nn.Parameter(torch.diag(torch.empty(n_x).uniform_(0.5, 0.95)))
            self.B = nn.Parameter(torch.randn(n_x, n_u) / n_u**0.5)
            self.E = nn.Parameter(0.01 * torch.randn(n_x, n_w))
            self.b_x = nn.Parameter(torch.zeros(n_x))
            self.F = nn.Parameter(torch.randn(n_w, n_x) / n_x**0.5)
            self.G = nn.Parameter(torch.randn(n_w, n_u) / n_u**0.5)
            self.C = nn.Parameter(torch.randn(n_y, n_x) / n_x**0.5)
            self.D = nn.Parameter(torch.zeros(n_y, n_u))
            self.H = nn.Parameter(0.01 * torch.randn(n_y, n_w))
            self.b_y = nn.Parameter(torch.zeros(n_y))
            self.phi = make_nonlinearity(nonlinearity, n_w)
        if stable and not self.phi.globally_lipschitz:
            raise ConfigError(f"a stable LFR needs a map with a global Lipschitz bound; {nonlinearity!r} is only "
                              "locally Lipschitz (use mlp, linear_tanh, tanh, elu, gelu, relu or identity)")
        self.log_multiplier = self.metric = None
        if stable and certificate == "iqc":  # the IQC multiplier (one per elementwise function) and metric
            self.log_multiplier = nn.Parameter(torch.zeros(self.phi.slope_sector().low.shape[0]))
            self.metric = nn.Parameter(torch.zeros(n_x, n_x))
        self.register_scaler()

    def init_state(self, batch: int) -> LFRState:
        """Zero state: ``(x,)`` with x (batch, n_x) in normalised coordinates."""
        return (self.A.new_zeros(batch, self.config.n_x),)

    def poles(self) -> np.ndarray:
        """(n_x,) complex eigenvalues of A (the stable model's scaled A): the poles of the linear part with the loop
        open (w held at zero)."""
        return np.linalg.eigvals(self.loop_matrices()[0].detach().double().cpu().numpy())

    def loop_matrices(self) -> tuple[Tensor, Tensor]:
        """The A (n_x, n_x) and E (n_x, n_w) the model simulates: the parameters themselves, or for a stable model
        both scaled by ``min(1, CONTRACTION / (||A|| + L_phi ||E|| ||F||))`` (small gain) or by
        ``min(1, 1 / iqc_norm)`` (IQC) (module docstring; differentiable)."""
        if not self.config.stable:
            return self.A, self.E
        if self.log_multiplier is not None:
            scale = 1 / self.iqc_norm(self.A, self.E).clamp(min=1.0)
            return scale * self.A, scale * self.E
        norm_a, norm_e, norm_f = (torch.linalg.matrix_norm(m, ord=2) for m in (self.A, self.E, self.F))
        scale = (CONTRACTION / (norm_a + self.phi.lipschitz_bound() * norm_e * norm_f)).clamp(max=1.0)
        return scale * self.A, scale * self.E

    def iqc_norm(self, A: Tensor, E: Tensor) -> Tensor:
        """:func:`iqc_norm` of the loop with these A and E, the model's F, map, multiplier and metric (for a model
        without them: the multiplier's shape 1, P = I); () tensor.

        Raises:
            ConfigError: the map has no slope sector (poly, glu).
        """
        sector = self.phi.slope_sector()
        if sector is None:
            raise ConfigError(f"the IQC certificate needs a map with a slope sector; {self.config.nonlinearity!r} "
                              "has none")
        log_multiplier = self.log_multiplier if self.log_multiplier is not None else sector.low.new_zeros(
            sector.low.shape)
        return iqc_norm(A, E, self.F, sector, log_multiplier, self.metric)

    def engine(self, mode: str, device_type: str) -> str:
        """The engine ("loop" or "compiled") that ``mode`` means for this model on this device type.

        Raises:
            ConfigError: an unknown mode, "scan"/"fft" (linear systems only), or "compiled" where it cannot run.
        """
        if mode not in MODES:
            raise unknown_name("mode", mode, MODES)
        if mode in ("scan", "fft"):
            raise ConfigError(f"mode {mode!r} simulates linear systems; an LFR model's loop is nonlinear: use "
                              "'auto', 'loop' or 'compiled'")
        if not isinstance(self.phi, MLP):  # the kernel implements the perceptron map only
            if mode in ("compiled", "fused"):
                raise ConfigError(f"mode {mode!r} runs LFR models with nonlinearity 'mlp' on the CPU only (got "
                                  f"{self.config.nonlinearity!r} on {device_type!r})")
            return "loop"
        return numba_runtime.resolve(mode, device_type, feedback.KERNELS, fallback="loop")

    def trajectory(self, u_n: Tensor, x: Tensor, mode: str = "auto",
                   loop: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Run the loop on a normalised input.

        Args:
            u_n: (batch, time, n_u) normalised input.
            x: (batch, n_x) initial state.
            mode: "auto", "loop" or "compiled" (module docstring).
            loop: the (A, E) to simulate with; default :meth:`loop_matrices`.

        Returns:
            states x[k]: (batch, time, n_x), map outputs w[k]: (batch, time, n_w), final state x[T]: (batch, n_x).
        """
        n_x = self.config.n_x
        drive = nn.functional.linear(u_n, self.B, self.b_x)  # (batch, time, n_x)
        direct = nn.functional.linear(u_n, self.G)  # (batch, time, n_w)
        A, E = self.loop_matrices() if loop is None else loop
        if self.engine(mode, u_n.device.type) == "compiled":
            mlp = self.phi
            return feedback.perceptron_loop(drive, direct, x, A, self.F, E, mlp.bias, mlp.hidden.weight,
                                            mlp.hidden.bias, mlp.out.weight, mlp.out.bias)
        state_map = torch.cat([A, self.F]).T  # (n_x, n_x + n_w): x -> [A x, F x]
        states, maps = [], []
        for k in range(u_n.shape[1]):
            states.append(x)
            mixed = x @ state_map
            w = self.phi(mixed[:, n_x:] + direct[:, k])
            maps.append(w)
            x = torch.addmm(mixed[:, :n_x] + drive[:, k], w, E.T)
        return torch.stack(states, 1), torch.stack(maps, 1), x

    def forward(self, u: Tensor, state: LFRState | None = None, mode: str = "auto") -> tuple[Tensor, LFRState]:
        """Simulate the model.

        Args:
            u: (batch, time, n_u) real, physical units.
            state: ``init_state``-shaped tuple; zeros if None.
            mode: "auto", "loop" or "compiled" (module docstring).

        Returns:
            y: (batch, time, n_y) physical units, and the final state ``(x,)``.
        """
        self.check_input(u)
        x0 = self.init_state(u.shape[0])[0] if state is None else state[0]
        u_n = self.normalize_input(u)
        states, maps, final = self.trajectory(u_n, x0, mode)
        y_n = (nn.functional.linear(states, self.C, self.b_y) + nn.functional.linear(u_n, self.D)
               + nn.functional.linear(maps, self.H))
        return self.denormalize_output(y_n), (final,)

    def export_step(self, graph: StepGraph, u: str) -> str:
        """The step as real operations (``Model.export_step``); the state is x (n_x,)."""
        u_n = self.export_input(graph, u)
        x = graph.state(self.config.n_x, "LFR state x (normalised coordinates)")
        w = self.phi.export_step(graph, graph.affine([(self.F, x), (self.G, u_n)], hint="z"))
        A, E = (m.detach() for m in self.loop_matrices())
        graph.update(x, graph.affine([(A, x), (self.B, u_n), (E, w)], self.b_x, hint="x_next"))
        return self.export_output(graph, graph.affine([(self.C, x), (self.D, u_n), (self.H, w)], self.b_y,
                                                      hint="y_n"))

    def check_linear_start(self) -> None:
        """Every LFR model can start as a linear model: its feedback starts switched off."""

    def start_linear(self, train: Sequence[IOData], val: Sequence[ValidationRecord]) -> LinearStateSpace:
        """Start as the best linear model of order at most n_x (:func:`~deepwiener.identification.identify_linear`,
        order chosen on ``val``), the feedback switched off (:meth:`embed_linear`); returns it."""
        linear = identify_linear(train, val, max_order=min(10, self.config.n_x))
        self.embed_linear(linear, [rec.u for rec in train])
        return linear

    @torch.no_grad()
    def embed_linear(self, linear: LinearStateSpace, inputs: Sequence[np.ndarray]) -> None:
        """Start as ``linear`` (module docstring): the output equals its output, the feedback is off.

        Call it after the model's scaler is set; the parameters keep their dtype and device.

        Args:
            linear: a linear model with the model's n_u and n_y and at most n_x states.
            inputs: training input records, each (T, n_u) physical: they set the scale of z.

        Raises:
            ConfigError: mismatched channel counts or a linear model with more than n_x states.
        """
        cfg = self.config
        if (linear.n_u, linear.n_y) != (cfg.n_u, cfg.n_y):
            raise ConfigError(f"the linear model has n_u={linear.n_u}, n_y={linear.n_y}; the model has "
                              f"n_u={cfg.n_u}, n_y={cfg.n_y}")
        n = linear.n_states
        if n > cfg.n_x:
            raise ConfigError(f"the linear model has {n} states; n_x is {cfg.n_x}")
        like = self.A

        def tensor(value: np.ndarray) -> Tensor:
            return torch.as_tensor(np.array(value, dtype=np.float64), dtype=like.dtype, device=like.device)

        # the linear model's normalised input u' = (u - a_mean) / a_std = in_gain * u_n + in_shift
        in_gain = tensor(self.u_std.double().cpu().numpy() / linear.u_std)
        in_shift = tensor((self.u_mean.double().cpu().numpy() - linear.u_mean) / linear.u_std)
        out_gain = tensor(linear.y_std) / self.y_std  # (n_y,): model-normalised output per linear-normalised one
        A, B, C, D = (tensor(m) for m in (linear.A, linear.B, linear.C, linear.D))
        self.A.copy_(torch.diag(tensor(np.concatenate([np.zeros(n), pad_poles(cfg.n_x - n)]))))
        self.A[:n, :n] = A
        self.B[:n] = B * in_gain
        self.b_x.zero_()
        self.b_x[:n] = B @ in_shift
        self.C.zero_()
        self.C[:, :n] = out_gain[:, None] * C
        self.D.copy_(out_gain[:, None] * D * in_gain)
        self.b_y.copy_(out_gain * (D @ in_shift) + (tensor(linear.y_mean) - self.y_mean) / self.y_std)
        self.E.zero_()
        self.H.zero_()
        self.G.zero_()
        states = torch.cat([self.trajectory(self.normalize_input(tensor(u))[None], self.init_state(1)[0],
                                            loop=(self.A, self.E))[0][0]
                            for u in inputs])  # (samples, n_x): the states under the linear model (unscaled A)
        variances, axes = torch.linalg.eigh(torch.cov(states.T).reshape(cfg.n_x, cfg.n_x))
        floored = axes * variances.clamp_min(1e-6 * variances.max()) @ axes.T  # the covariance, no direction flat
        root = torch.linalg.cholesky(floored)  # floored = root root^T
        whiten = torch.linalg.solve_triangular(root, torch.eye(cfg.n_x, dtype=like.dtype, device=like.device),
                                               upper=False)  # x' = whiten x
        self.A.copy_(whiten @ self.A @ root)
        self.B.copy_(whiten @ self.B)
        self.b_x.copy_(whiten @ self.b_x)
        self.C.copy_(self.C @ root)
        z = (states @ whiten.T) @ self.F.T  # (samples, n_w): z under the linear model
        z_std = z.std(0).clamp_min(1e-12)
        self.F.div_(z_std[:, None])
        self.phi.bias.copy_(-z.mean(0) / z_std)

