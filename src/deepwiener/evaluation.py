"""Evaluation by the official benchmark protocol: ``evaluate(model, data, init_window)``.

The protocol of nonlinearbenchmark.org: simulate the whole test record in free run; the model may use at
most the first ``init_window`` measured outputs to set its state (simulating from the zero state, as done
here, uses none); errors are counted from sample ``init_window`` on. RMSE is reported in the benchmark's
unit (``IOData.report_unit``, e.g. mV for Silverbox), else in the data's unit (``IOData.y_unit``).
NRMSE, FIT and R^2 are unitless. Any object with ``simulate(u) -> y`` and ``dt`` can be evaluated (a
model of any kind, an identified ``identification.LinearStateSpace``, ...).

A simulation that blows up (NaN or inf, as an unstable model can beyond its training amplitudes) is a result,
not an error: its metrics are rmse = nrmse = inf, fit = r2 = -inf, with ``diverged_at`` the first sample that
is not finite (JSON files write inf as ``Infinity``).

``input_reach(u, low, high)`` says whether a test input leaves the range of the training inputs, where any
identified model extrapolates (the command line prints it beside the metrics). ``evaluate(..., segments=n)``
also gives the RMSE of each of n consecutive parts of the counted samples: where in time the error lies (a
drift that grows, an input or output range reached only late in the record).
"""

from __future__ import annotations

import math
from typing import NamedTuple, NotRequired, Protocol, TypedDict

import numpy as np

from deepwiener.data import Benchmark, IOData
from deepwiener.data.iodata import check_dt
from deepwiener.errors import ConfigError, DataError, is_integer_in
from deepwiener.metrics import fit_percent, nrmse, r2, rmse


class Simulator(Protocol):
    """A model that simulates in free run from its zero state, in physical units."""

    @property
    def dt(self) -> float:
        """Sampling time in seconds."""
        ...

    def simulate(self, u: np.ndarray) -> np.ndarray:
        """u: (T, n_u) -> y: (T, n_y)."""
        ...


class Metrics(TypedDict):
    """Errors of one evaluation; per-output lists when n_y > 1, floats when n_y == 1.

    Keys:
        rmse: root-mean-square error in ``unit``.
        nrmse: RMSE divided by the standard deviation of the measured output (unitless).
        fit: FIT = 100 (1 - ||y - y_hat|| / ||y - mean(y)||), in percent.
        r2: coefficient of determination.
        unit: the unit of ``rmse`` ("" when unknown).
        n_samples: number of samples counted (T - init_window).
        segment_starts: only with ``segments``: first sample of each part (indices into the record).
        segment_rmse: only with ``segments``: RMSE in ``unit`` of each part, per-output lists when n_y > 1.
        diverged_at: only when the simulation is not finite everywhere: the first such sample (the error
            metrics are then inf, FIT and R^2 -inf, and so is the RMSE of every part from that sample on).
    """

    rmse: float | list[float]
    nrmse: float | list[float]
    fit: float | list[float]
    r2: float | list[float]
    unit: str
    n_samples: int
    segment_starts: NotRequired[list[int]]
    segment_rmse: NotRequired[list[float] | list[list[float]]]
    diverged_at: NotRequired[int]


def evaluate(model: Simulator, data: IOData, init_window: int = 0, segments: int = 0, x0: str = "zero") -> Metrics:
    """Evaluate a model on one record by the official protocol.

    Args:
        model: any :class:`Simulator`, e.g. a trained model of any kind (``deepwiener.models``).
        data: the test record, u: (T, n_u), y: (T, n_y); its ``dt`` must equal the model's (relative
            tolerance 1e-3).
        init_window: leading samples whose errors are not counted, 0 <= init_window < T.
        segments: 0, or the number of consecutive parts (sizes differing by at most one sample) of the
            counted samples whose RMSE is also returned, 1 <= segments <= T - init_window.
        x0: how the model's state is set: "zero" (the zero state at the start; any Simulator), or "fit" or
            "encoder" (estimated from the init window's measured outputs ``y[:init_window]``, which only a model
            of a registered kind can do: ``Model.simulate(u, y_init=..., x0=...)``). What follows the init window
            is never read before the errors are computed.

    Returns:
        :class:`Metrics` in ``data.report_unit`` (times ``data.report_scale``) when set, else in
        ``data.y_unit``; with ``segments``, also ``segment_starts`` and ``segment_rmse``; for a simulation
        with NaN/inf, ``diverged_at`` and infinite errors (module docstring).

    Raises:
        DataError: dt mismatch (both values named), an invalid ``init_window``, or a simulated output of the
            wrong shape.
        ConfigError: ``segments`` is not an integer in [0, T - init_window].
    """
    check_dt(data.dt, model.dt, f"record {data.name!r}")
    if not is_integer_in(init_window, 0, len(data) - 1):
        raise DataError(f"init_window must be an integer in [0, {len(data)}) for record {data.name!r} "
                        f"({len(data)} samples); got {init_window!r}")
    n_counted = len(data) - init_window
    if n_counted < 2:
        raise DataError(f"record {data.name!r} has {len(data)} samples: after the init window of {init_window} that "
                        f"leaves {n_counted} to score; errors need at least 2")
    if not is_integer_in(segments, 0, n_counted):
        raise ConfigError(f"segments must be an integer in [0, {n_counted}] for record {data.name!r} ({n_counted} "
                          f"samples counted); got {segments!r}")
    y_hat = np.asarray(simulate_record(model, data, init_window, x0), dtype=np.float64)
    if y_hat.shape != data.y.shape:
        raise DataError(f"the model simulated an output of shape {y_hat.shape} for record {data.name!r}; "
                        f"expected {data.y.shape}")
    finite = np.isfinite(y_hat).all(axis=1)  # (T,)
    worst, best = (math.inf, -math.inf) if data.n_y == 1 else ([math.inf] * data.n_y, [-math.inf] * data.n_y)
    y, y_hat = report_units(data, data.y[init_window:]), report_units(data, y_hat[init_window:])
    if finite.all():
        metrics = Metrics(rmse=_plain(rmse(y, y_hat)), nrmse=_plain(nrmse(y, y_hat)),
                          fit=_plain(fit_percent(y, y_hat)), r2=_plain(r2(y, y_hat)),
                          unit=data.report_unit or data.y_unit, n_samples=len(y))
    else:
        metrics = Metrics(rmse=worst, nrmse=worst, fit=best, r2=best, unit=data.report_unit or data.y_unit,
                          n_samples=len(y), diverged_at=int(np.argmin(finite)))
    if segments:
        parts = np.array_split(np.arange(len(y)), segments)
        metrics["segment_starts"] = [init_window + int(part[0]) for part in parts]
        metrics["segment_rmse"] = [_plain(rmse(y[part], y_hat[part])) if finite[init_window + part].all()
                                   else worst for part in parts]
    return metrics


def simulate_record(model: Simulator, data: IOData, init_window: int, x0: str) -> np.ndarray:
    """The simulation of a record that ``evaluate`` scores: (T, n_y), from the zero state or from a state estimated
    on ``data.y[:init_window]``.

    Raises:
        ConfigError: an estimated state asked of a model that cannot estimate one, or without an init window.
    """
    if x0 == "zero":
        return model.simulate(data.u)
    if init_window < 1:
        raise ConfigError(f"x0={x0!r} sets the state from the init window, and init_window is 0")
    if not hasattr(model, "estimate_state") and not hasattr(model, "members"):
        raise ConfigError(f"x0={x0!r} needs a model of a registered kind; got a {type(model).__name__}")
    return model.simulate(data.u, y_init=data.y[:init_window], x0=x0)  # type: ignore[call-arg]


class InputReach(NamedTuple):
    """How far an input goes beyond the training inputs' range.

    Attributes:
        outside: share of samples with at least one channel outside the training range (0 .. 1).
        reach: the largest ``|u - centre| / half-width`` over channels and samples, with the training range's
            centre and half-width per channel: <= 1 inside the range, 2 at twice its half-width.
    """

    outside: float
    reach: float


def input_reach(u: np.ndarray, low: np.ndarray, high: np.ndarray) -> InputReach:
    """Compare an input with the range ``[low, high]`` of the training inputs.

    Args:
        u: (T, n_u) input.
        low, high: (n_u,) smallest and largest training input per channel.

    Returns:
        :class:`InputReach`; a channel that was constant in training has reach inf where it differs.

    Raises:
        DataError: ranges whose length differs from n_u, or low > high.
    """
    u, low, high = np.asarray(u, dtype=float), np.asarray(low, dtype=float), np.asarray(high, dtype=float)
    if low.shape != (u.shape[1],) or high.shape != low.shape or (low > high).any():
        raise DataError(f"the training input range must hold low <= high for each of the {u.shape[1]} inputs; "
                        f"got low {low.tolist()}, high {high.tolist()}")
    centre, half = (high + low) / 2, (high - low) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = np.where(u == centre, 0.0, np.abs(u - centre) / half)
    outside = ((u < low) | (u > high)).any(axis=1)
    return InputReach(outside=float(outside.mean()), reach=float(scaled.max(initial=0.0)))


def evaluate_all(model: Simulator, bench: Benchmark, segments: int = 0, x0: str = "zero") -> dict[str, Metrics]:
    """Evaluate on every test record of a benchmark with its ``init_window`` (and ``segments`` and ``x0``, see
    :func:`evaluate`).

    Returns:
        ``{test name: Metrics}`` in the order of ``bench.tests``.
    """
    return {name: evaluate(model, test, bench.init_window, segments, x0) for name, test in bench.tests.items()}


class Prediction(TypedDict):
    """k-step-ahead prediction errors of one record (``evaluate_prediction``); per-output lists when n_y > 1.

    Keys:
        rmse: RMSE over every predicted sample, in ``unit``.
        rmse_by_step: RMSE of the k-th predicted sample of the windows, k = 1 .. horizon (a list; per output a list
            of lists when n_y > 1).
        unit: the unit of the errors.
        windows: number of windows.
        horizon, step, init_window: the evaluation's settings.
    """

    rmse: float | list[float]
    rmse_by_step: list[float] | list[list[float]]
    unit: str
    windows: int
    horizon: int
    step: int
    init_window: int


def evaluate_prediction(model: Simulator, data: IOData, init_window: int, horizon: int, step: int | None = None,
                        x0: str = "fit") -> Prediction:
    """k-step-ahead prediction errors, in the identibench style: windows of ``init_window + horizon`` samples,
    moved by ``step``; each sets the model's state on its own init window (``x0``) and predicts the next
    ``horizon`` outputs from the inputs alone.

    Args:
        model: a model of a registered kind (``x0`` "fit" or "encoder"), or any :class:`Simulator` with "zero".
        data: the record.
        init_window: samples of each window that set the state, >= 1 for "fit" and "encoder".
        horizon: samples predicted after each init window, >= 1.
        step: distance between window starts (default: ``horizon``).
        x0: how each window's state is set (see :func:`evaluate`).

    Returns:
        :class:`Prediction` in the record's report unit.

    Raises:
        DataError: a dt mismatch, or a record shorter than one window.
        ConfigError: invalid ``horizon``, ``step`` or ``init_window``.
    """
    check_dt(data.dt, model.dt, f"record {data.name!r}")
    step = horizon if step is None else step
    if not (is_integer_in(horizon, 1) and is_integer_in(step, 1) and is_integer_in(init_window, 0)):
        raise ConfigError(f"horizon and step must be integers >= 1 and init_window >= 0; got {horizon}, {step}, "
                          f"{init_window}")
    length = init_window + horizon
    if len(data) < length:
        raise DataError(f"record {data.name!r} has {len(data)} samples, fewer than one window of {length}")
    errors = []
    for start in range(0, len(data) - length + 1, step):
        window = data[start : start + length]
        y_hat = simulate_record(model, window, init_window, x0)[init_window:]
        errors.append(report_units(data, window.y[init_window:]) - report_units(data, y_hat))
    err = np.stack(errors)  # (windows, horizon, n_y)
    by_step = np.sqrt(np.mean(err**2, axis=0))  # (horizon, n_y)
    overall = np.sqrt(np.mean(err**2, axis=(0, 1)))  # (n_y,)
    return Prediction(rmse=_plain(overall) if data.n_y > 1 else float(overall[0]),
                      rmse_by_step=by_step.T.tolist() if data.n_y > 1 else by_step[:, 0].tolist(),
                      unit=data.report_unit or data.y_unit, windows=len(errors), horizon=horizon, step=step,
                      init_window=init_window)


def report_units(data: IOData, y: np.ndarray) -> np.ndarray:
    """Convert an output signal of ``data``'s units into the units its errors are reported in.

    Args:
        data: the record whose unit convention applies.
        y: (T, n_y) output in ``data.y_unit``.

    Returns:
        (T, n_y) in ``data.report_unit`` (scaled) when set, else unchanged.
    """
    return y * (data.report_scale if data.report_unit else 1.0)


def _plain(value: float | np.ndarray) -> float | list[float]:
    return [float(v) for v in value] if isinstance(value, np.ndarray) else float(value)

