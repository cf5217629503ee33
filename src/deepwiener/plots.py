"""Figures of a run, as ``matplotlib.figure.Figure`` objects (Agg canvas; never pyplot's global state).

The functions draw data they are given and compute nothing but unit conversions. Only the command line
imports this module, so ``import deepwiener`` does not load matplotlib.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from deepwiener.data import IOData
from deepwiener.evaluation import report_units


def training_curves(history: Sequence[Mapping[str, float]], unit: str = "") -> Figure:
    """Training loss and validation RMSE per epoch (log scale).

    Args:
        history: one mapping per epoch with keys ``epoch``, ``train_loss`` (normalised MSE) and ``val_rmse``
            (physical units of the outputs).
        unit: unit of ``val_rmse`` (the data's ``y_unit``).
    """
    epochs = [row["epoch"] for row in history]
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    loss_ax, val_ax = fig.subplots(1, 2)
    loss_ax.semilogy(epochs, [row["train_loss"] for row in history], color="C0")
    loss_ax.set(xlabel="epoch", ylabel="training loss (MSE / var(y)) [-]", title="training loss")
    val_ax.semilogy(epochs, [row["val_rmse"] for row in history], color="C1")
    val_ax.set(xlabel="epoch", ylabel=f"validation RMSE [{unit or 'output units'}]",
               title="validation simulation error")
    for ax in (loss_ax, val_ax):
        ax.grid(True, which="both", alpha=0.3)
    return fig


def simulation(data: IOData, simulated: Mapping[str, np.ndarray], init_window: int = 0) -> Figure:
    """Measured vs simulated output, and the simulation error, of one record in its report units.

    Args:
        data: the record; its report unit (else ``y_unit``) labels the axes.
        simulated: ``{label: y_hat (T, n_y)}`` in the data's units, one or more models.
        init_window: samples at the start not counted in the errors (shaded).
    """
    unit = data.report_unit or data.y_unit
    label = f" [{unit}]" if unit else ""
    t = data.time
    y = report_units(data, data.y)
    fig = Figure(figsize=(10, 3 + 2.5 * data.n_y), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2 * data.n_y, 1, sharex=True, squeeze=False)[:, 0]
    for k in range(data.n_y):
        name = data.y_names[k] if data.y_names else f"y{k + 1}"
        out_ax, err_ax = axes[2 * k], axes[2 * k + 1]
        out_ax.plot(t, y[:, k], color="black", lw=0.8, label="measured")
        for i, (model, y_hat) in enumerate(simulated.items()):
            y_hat_r = report_units(data, np.asarray(y_hat))
            out_ax.plot(t, y_hat_r[:, k], color=f"C{i}", lw=0.8, alpha=0.8, label=f"simulated: {model}")
            err_ax.plot(t, y[:, k] - y_hat_r[:, k], color=f"C{i}", lw=0.6, label=model)
        out_ax.set(ylabel=f"{name}{label}", title=f"{data.name}: measured vs simulated")
        err_ax.set(ylabel=f"error{label}")
        out_ax.legend(loc="upper right", fontsize="small")
        for ax in (out_ax, err_ax):
            if init_window:
                ax.axvspan(t[0], t[init_window], color="grey", alpha=0.2)
            ax.grid(True, alpha=0.3)
    axes[-1].set_xlabel("time [s]")
    return fig


def optimization_history(trials: Sequence[int], values: Sequence[float], unit: str = "") -> Figure:
    """The validation RMSE of each complete trial of a study and the best so far (log scale).

    Args:
        trials: the trials' numbers.
        values: their validation RMSE (physical units of the outputs).
        unit: the unit of ``values``.
    """
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    order = np.argsort(trials)
    numbers, scores = np.asarray(trials)[order], np.asarray(values, dtype=float)[order]
    ax.plot(numbers, scores, "o", color="C0", label="trial")
    if len(scores):
        ax.step(numbers, np.minimum.accumulate(scores), where="post", color="C1", label="best so far")
        if np.all(scores > 0) and np.all(np.isfinite(scores)):
            ax.set_yscale("log")
    ax.set(xlabel="trial", ylabel=f"validation RMSE [{unit or 'output units'}]", title="optimisation history")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper right")
    return fig


def png_bytes(fig: Figure, dpi: int = 110) -> bytes:
    """Render a figure to PNG bytes (write them with ``RunDir.write_bytes``, which is atomic)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()
