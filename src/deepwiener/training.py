"""Training by simulation-error minimisation: ``fit(model, train, config)``.

Read top to bottom:

1. Hold out validation data: the time-contiguous tail of each training record (random windows would leak,
   because windows overlap), unless validation records are given.
2. Set the model's sampling time and its input/output normalisation from the training part; with
   ``init="linear"``, start the model as the best linear model of the data (the kind's ``start_linear``). A kind
   identified from data (``trainer = "identify"``, the linear model) is identified here instead, and the rest
   does not apply.
3. Cut overlapping windows; the first ``washout`` samples of each window warm the state up and are not
   counted in the loss.
4. Two parameter groups: the linear layers' parameters (``ssm_lr``, no weight decay) and the rest (``lr``).
5. Loop over epochs with a learning-rate schedule, gradient clipping, recovery from a non-finite loss (back
   to the epoch's start with half the learning rate, at most ``divergence_retries`` times, then a stop), a
   time budget, early stopping on the validation simulation error, and a resume checkpoint every epoch.
6. Restore the parameters of the best validation epoch.

The loss is the mean squared simulation error divided by the training output's variance (NMSE), so outputs
in different units weigh alike. A model with an output integrator (``config.integrator``) is normalised
by the statistics of the output's increments and scored on its output relative to the end of each window's
washout (``_train_step``). Validation is a free-run simulation from the zero state, reported as RMSE in
physical units: a held-out tail is scored after simulating its whole record (the training head, inputs only,
warms the state up, as a test record's initialisation window would); given validation records are scored
after the washout.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import logging
import math
import pickle
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from deepwiener.data import IOData, ValidationRecord, fit_scaler, make_windows, split_validation
from deepwiener.data.iodata import check_dt
from deepwiener.distributed import World, current
from deepwiener.engines import MODES
from deepwiener.errors import ConfigError, DataError, DeepWienerError, ModelFileError, is_integer_in, unknown_name
from deepwiener.files import write_file
from deepwiener.layers import LAYERS, LTILayer
from deepwiener.map_slope import map_slope_penalty, recorded_map_inputs, static_maps
from deepwiener.models import Model, initial_state
from deepwiener.options import DictConfig
from deepwiener.progress import TrainingProgress

log = logging.getLogger(__name__)

SCHEDULES: tuple[str, ...] = ("cosine", "plateau", "constant")
TRAIN_X0: tuple[str, ...] = ("zero", "encoder")
"""Values of ``TrainConfig.x0``."""
INITS: tuple[str, ...] = ("random", "linear")
"""Values of ``TrainConfig.init``: the model's own random start, or ``model.start_linear`` (the best linear model
of the training data, its order chosen on the validation records)."""


@dataclasses.dataclass(frozen=True)
class TrainConfig(DictConfig):
    """Training options.

    Attributes:
        window: samples per training window.
        washout: leading samples of each window (and of each validation record) not counted in the loss.
        stride: step between window starts (default window // 2, i.e. 50 % overlap).
        batch_size: windows per optimisation step: the global batch. In distributed training (``deepwiener train
            --distributed`` under torchrun) each of the N processes takes a disjoint share of every batch and
            the gradients are averaged, so a step sees the same windows and the same mean loss as in one process,
            and ``lr`` is the learning rate of that global batch: the same settings train the same model (up to
            rounding) on any number of processes.
        epochs: maximum number of passes over the windows.
        max_minutes: wall-clock budget (None: no budget).
        lr: learning rate of the non-SSM parameters (encoder, nonlinearities, decoder).
        ssm_lr: learning rate of the linear layers' parameters (None: same as lr).
        weight_decay: AdamW weight decay of the non-SSM parameters.
        schedule: "cosine" (decay to lr * min_lr_ratio over the epochs or the time budget, whichever ends
            first), "plateau" (multiply by plateau_factor after plateau_patience epochs without validation
            improvement) or "constant".
        min_lr_ratio: final learning rate of the cosine schedule, as a fraction of lr.
        warmup_epochs: linear warm-up epochs at the start.
        plateau_patience, plateau_factor: the "plateau" schedule.
        patience: early stopping after this many epochs without validation improvement (None: never).
        val_fraction: fraction of each training record held out (its tail) when no validation data is given.
        grad_clip: maximum gradient norm (None: no clipping).
        divergence_retries: how often a non-finite training loss (a simulation that blew up, as a model with a
            nonlinear feedback loop can after a large step) is recovered from: the parameters and optimiser
            state return to the start of the epoch, every later learning rate is halved, and the epoch is run
            again with new shuffling. One more raises DataError.
        seed: seed of the shuffling, dropout and any other randomness of training.
        device: torch device ("cpu", "cuda", ...).
        mode: simulation engine used in training ("auto", "scan", "compiled", ...).
        dtype: "float32" or "float64".
        init: "random" (the model's own initialisation) or "linear" (start as the best linear model of the
            training data, order chosen on the validation records: the kind's ``start_linear``).
        loss_decay: weight of the t-th scored sample of a window, ``loss_decay ** t`` (t = 0 after the washout),
            normalised to mean 1; 1 is the plain MSE. The seed paper's authors weighted by 0.9975^t, so that the
            start of a window, nearest its (unknown) initial state, counts most.
        x0: how a window's state is set in training: "zero" (the zero state, the washout not scored) or "encoder"
            (a state encoder, trained with the model, maps the first ``x0_window`` samples' inputs and outputs to
            the state there; the rest of the window is simulated and scored, the washout does not apply; the model
            keeps the encoder: ``simulate(..., x0="encoder")``). Validation then estimates the state the same way.
        x0_window: the encoder's init window, in samples.
        modal_l1: weight of the modal l1 penalty, added to the loss of every step: the sum over every LTI layer's
            modes of their H-infinity weights ``||c_i|| ||b_i|| / (1 - |lam_i|)`` (``DiagonalSSM.mode_weights``,
            the weight modal truncation ranks by), which drives modes that carry little to zero. 0: off.
        hankel_nuclear: weight of the Hankel nuclear-norm penalty, added likewise: the sum over every LTI layer of
            its Hankel singular values (``DiagonalSSM.hankel_singular_values``, the values balanced truncation
            discards from), which promotes low-order blocks. 0: off. Both penalties act on the normalised model
            (the layers' own units); the reported ``train_loss`` is the NMSE without them. Layers with another
            structure (S4's DPLR blocks) are penalised through their modal form (``LinearSystem.modal``).
        map_slope: weight of the maps' slope penalty (:mod:`deepwiener.map_slope`), added likewise: the mean
            squared slope of every static map at points up to ``map_slope_reach`` times the map inputs of the batch,
            for models that must extrapolate beyond the training amplitudes. 0: off. The maps must run as modules
            (not inside the fused kernel: use mode "scan", "compiled" or "loop" for deep Wiener models, "loop" for
            LFR models).
        map_slope_reach: how far beyond the batch's map inputs the slope is penalised, as a multiple (> 0).
    """

    window: int = 512
    washout: int = 100
    stride: int | None = None
    batch_size: int = 32
    epochs: int = 1000
    max_minutes: float | None = None
    lr: float = 3e-3
    ssm_lr: float | None = None
    weight_decay: float = 0.0
    schedule: str = "cosine"
    min_lr_ratio: float = 0.01
    warmup_epochs: int = 0
    plateau_patience: int = 50
    plateau_factor: float = 0.5
    patience: int | None = 100
    val_fraction: float = 0.2
    grad_clip: float | None = 1.0
    divergence_retries: int = 3
    seed: int = 0
    device: str = "cpu"
    mode: str = "auto"
    dtype: str = "float32"
    init: str = "random"
    loss_decay: float = 1.0
    x0: str = "zero"
    x0_window: int = 50
    modal_l1: float = 0.0
    hankel_nuclear: float = 0.0
    map_slope: float = 0.0
    map_slope_reach: float = 2.0

    def __post_init__(self) -> None:
        for name in ("window", "batch_size", "epochs"):
            _require(isinstance(getattr(self, name), int) and getattr(self, name) > 0, name, "a positive integer")
        _require(isinstance(self.washout, int) and 0 <= self.washout < self.window, "washout", "in [0, window)")
        _require(self.stride is None or (isinstance(self.stride, int) and self.stride > 0), "stride", "positive")
        _require(self.max_minutes is None or self.max_minutes > 0, "max_minutes", "positive")
        _require(self.lr > 0 and (self.ssm_lr is None or self.ssm_lr > 0), "lr/ssm_lr", "positive")
        _require(self.weight_decay >= 0, "weight_decay", ">= 0")
        _require(0 < self.min_lr_ratio <= 1, "min_lr_ratio", "in (0, 1]")
        _require(0 < self.plateau_factor < 1, "plateau_factor", "in (0, 1)")
        _require(self.patience is None or self.patience > 0, "patience", "positive or None")
        _require(0 <= self.val_fraction < 1, "val_fraction", "in [0, 1)")
        _require(0 < self.loss_decay <= 1, "loss_decay", "in (0, 1]")
        for name in ("modal_l1", "hankel_nuclear", "map_slope"):
            weight = getattr(self, name)
            _require(isinstance(weight, int | float) and not isinstance(weight, bool) and math.isfinite(weight)
                     and weight >= 0, name, "a finite number >= 0")
        _require(isinstance(self.map_slope_reach, int | float) and not isinstance(self.map_slope_reach, bool)
                 and math.isfinite(self.map_slope_reach) and self.map_slope_reach > 0, "map_slope_reach",
                 "a finite number > 0")
        if self.x0 not in TRAIN_X0:
            raise unknown_name("x0", self.x0, TRAIN_X0)
        _require(is_integer_in(self.x0_window, 1, self.window - 1 if self.x0 == "encoder" else math.inf),
                 "x0_window", "an integer in [1, window)" if self.x0 == "encoder" else "a positive integer")
        _require(self.grad_clip is None or self.grad_clip > 0, "grad_clip", "positive or None")
        _require(is_integer_in(self.divergence_retries, 0), "divergence_retries", "an integer >= 0")
        _require(self.dtype in ("float32", "float64"), "dtype", "'float32' or 'float64'")
        if self.schedule not in SCHEDULES:
            raise unknown_name("schedule", self.schedule, SCHEDULES)
        if self.mode not in MODES:
            raise unknown_name("mode", self.mode, MODES)
        if self.init not in INITS:
            raise unknown_name("init", self.init, INITS)


FINE_TUNE_LR_FACTOR = 0.1
"""Default learning-rate factor of :func:`fine_tune`: a truncated model is near a good optimum, and the full rate
of its training throws it out of that basin in the first epochs."""


@dataclasses.dataclass(frozen=True)
class FineTuneResult:
    """Outcome of :func:`fine_tune`.

    Attributes:
        fit: the fit of the fine-tuning (its ``best_epoch`` is 0 when no epoch validated better than the start).
        start_val_rmse: validation RMSE of the model as given (epoch 0), physical units, mean over outputs.
        config: the training options it ran with.
    """

    fit: FitResult
    start_val_rmse: float
    config: TrainConfig


def check_fine_tune(config: TrainConfig, minutes: float, lr_factor: float, *, validation_records: bool) -> None:
    """Check the arguments of :func:`fine_tune` (before a command does any work); ``validation_records``: whether
    validation records are given.

    Raises:
        ConfigError: bad ``minutes`` or ``lr_factor``, no validation data (``val_fraction`` 0 and no records: the
            start could not be kept), or ``x0="encoder"`` (the encoder would be trained afresh).
    """
    _require(isinstance(minutes, int | float) and math.isfinite(minutes) and minutes > 0, "fine-tuning minutes",
             "a positive number")
    _require(isinstance(lr_factor, int | float) and 0 < lr_factor <= 1, "lr_factor", "in (0, 1]")
    if config.x0 != "zero":
        raise ConfigError(f"fine-tuning supports x0='zero' training; the model was trained with x0={config.x0!r}")
    if not validation_records and config.val_fraction == 0:
        raise ConfigError("fine-tuning needs validation data (val_fraction > 0 or validation records): without it "
                          "the truncated model could not be kept when fine-tuning makes it worse")


def fine_tune(model: Model, train: IOData | Sequence[IOData], config: TrainConfig, minutes: float, *,
              lr_factor: float = FINE_TUNE_LR_FACTOR, val: Sequence[IOData] | None = None,
              on_epoch: Callable[[EpochInfo], None] | None = None) -> FineTuneResult:
    """Retrain a trained (e.g. truncated) model briefly from its own parameters, in place.

    ``config`` (the options the model was trained with) is run with ``lr`` and ``ssm_lr`` times ``lr_factor``, a
    budget of ``minutes``, ``init="random"`` (the model keeps its parameters) and no reducibility penalties; the
    windows, schedule and validation are the config's. The model as given is validated first and is the
    candidate of epoch 0 (as in ``fit``), so the model returned never validates worse than it started.

    Args:
        model: the model to fine-tune, trained on the same data (its normalisation is recomputed from it).
        train: the training records; ``val``: validation records (default: the held-out tails, as in ``fit``).
        config: the model's training options.
        minutes: wall-clock budget, > 0.
        lr_factor: factor on the learning rates, in (0, 1].
        on_epoch: called after every epoch.

    Returns:
        FineTuneResult (the fit, the starting validation RMSE and the options used).

    Raises:
        ConfigError: what :func:`check_fine_tune` refuses.
        DataError: bad data (as ``fit``).
    """
    check_fine_tune(config, minutes, lr_factor, validation_records=val is not None)
    tuned = dataclasses.replace(config, lr=config.lr * lr_factor, max_minutes=float(minutes), init="random",
                                ssm_lr=None if config.ssm_lr is None else config.ssm_lr * lr_factor,
                                modal_l1=0.0, hankel_nuclear=0.0)
    records = _as_records(train, "training")
    _, val_parts = split_training(records, val, tuned)
    model.eval()
    start = validation_rmse(model, val_parts, tuned.mode)
    result = fit(model, records, tuned, val=val, on_epoch=on_epoch, progress=False)
    log.info("fine-tuning: validation RMSE %.6g at the start, %.6g after (best epoch %d of %d)", start,
             result.best_val_rmse, result.best_epoch, result.epochs_run)
    return FineTuneResult(result, start, tuned)


def available_device(name: str) -> torch.device:
    """The torch device ``name`` if tensors can be made on it here.

    Raises:
        ConfigError: an invalid device name, or a device this machine or this torch build does not have (CUDA
            without a GPU or without a CUDA build, ...).
    """
    try:
        device = torch.device(name)
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError, ValueError) as exc:  # torch's own errors for missing devices
        raise ConfigError(f"device {name!r} is not available here: {' '.join(str(exc).split())}") from None
    return device


def _require(ok: bool, name: str, expected: str) -> None:
    if not ok:
        raise ConfigError(f"training option {name} must be {expected}")


class EpochInfo(NamedTuple):
    """What ``on_epoch`` receives after each epoch (val_rmse in physical units, mean over outputs).

    Epochs are counted from 1 everywhere (here, in ``FitResult``, history.csv, run.log and on screen); epoch 0 is
    the model before training (its own or its linear start).
    """

    epoch: int
    train_loss: float
    val_rmse: float
    lr: float
    seconds: float
    best: bool


@dataclasses.dataclass(frozen=True)
class FitResult:
    """Outcome of ``fit``: per-epoch history, the best epoch and why training stopped.

    Attributes:
        history: one row per epoch (``epoch`` counted from 1, ``train_loss``, ``val_rmse``, ``lr``, ``seconds``).
        best_epoch: the epoch whose parameters the model holds; 0 when no epoch validated better than the model
            before training.
        best_val_rmse: its validation RMSE.
        epochs_run: epochs run.
        seconds: training time.
        stopped: why training stopped ("epochs", "time budget", "early stopping", or what was identified).
    """

    history: list[dict[str, float]]
    best_epoch: int
    best_val_rmse: float
    epochs_run: int
    seconds: float
    stopped: str


def parameter_groups(model: nn.Module, config: TrainConfig) -> list[dict[str, Any]]:
    """State-space-layer parameters (ssm_lr, no weight decay) and all others (lr, weight_decay)."""
    ssm_types = tuple(LAYERS.values())
    ssm_ids = {id(p) for m in model.modules() if isinstance(m, ssm_types) for p in m.parameters()}
    ssm = [p for p in model.parameters() if id(p) in ssm_ids]
    other = [p for p in model.parameters() if id(p) not in ssm_ids]
    ssm_lr = config.ssm_lr if config.ssm_lr is not None else config.lr
    return [
        {"params": ssm, "lr": ssm_lr, "base_lr": ssm_lr, "weight_decay": 0.0},
        {"params": other, "lr": config.lr, "base_lr": config.lr, "weight_decay": config.weight_decay},
    ]


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW over :func:`parameter_groups`, as one fused kernel per step where PyTorch has one for the parameters'
    device and dtype (``fused=True``; the CPU and CUDA in float32 and float64), else multi-tensor (``foreach``)."""
    groups = parameter_groups(model, config)
    try:
        return torch.optim.AdamW(groups, fused=True)
    except RuntimeError:  # no fused kernel for this device or dtype
        return torch.optim.AdamW(groups, foreach=True)


def _check_records_dt(records: Sequence[IOData], reference: IOData) -> None:
    """Every record must share the sampling time of ``reference`` (see ``data.iodata.check_dt``)."""
    for rec in records:
        check_dt(rec.dt, reference.dt, f"record {rec.name!r}", f"record {reference.name!r}")


def _as_records(data: IOData | Sequence[IOData], what: str) -> list[IOData]:
    records = [data] if isinstance(data, IOData) else list(data)
    if not records:
        raise DataError(f"no {what} records given")
    return records


def split_training(records: list[IOData], val: Sequence[IOData] | None,
                   config: TrainConfig) -> tuple[list[IOData], list[ValidationRecord]]:
    """Training parts and validation records, as ``fit`` makes them (score other models on the same records).

    Held-out tails are validated by simulating the whole record (the training part warms the state up,
    using its inputs only) and scoring the tail; given validation records are scored after the washout.
    """
    if val is not None:
        return records, [ValidationRecord(rec, config.washout) for rec in _as_records(val, "validation")]
    if config.val_fraction == 0:
        return records, []
    train_parts = [split_validation(rec, config.val_fraction)[0] for rec in records]
    return train_parts, [ValidationRecord(rec, len(part)) for rec, part in zip(records, train_parts, strict=True)]


class _Schedule:
    """Learning-rate factor: warm-up, then cosine by progress, plateau steps or constant."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.factor = 1.0
        self.bad_epochs = 0

    def cosine(self, progress: float) -> float:
        floor = self.config.min_lr_ratio
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    def lr_factor(self, epoch: int, progress: float) -> float:
        warm = min(1.0, (epoch + 1) / self.config.warmup_epochs) if self.config.warmup_epochs else 1.0
        if self.config.schedule == "cosine":
            return warm * self.cosine(progress)
        return warm * self.factor

    def after_epoch(self, improved: bool) -> None:
        if self.config.schedule != "plateau":
            return
        self.bad_epochs = 0 if improved else self.bad_epochs + 1
        if self.bad_epochs >= self.config.plateau_patience:
            self.factor *= self.config.plateau_factor
            self.bad_epochs = 0


@torch.no_grad()
def validation_rmse(model: Model, records: Sequence[ValidationRecord], mode: str = "auto", x0: str = "zero",
                    x0_window: int = 0) -> float:
    """RMSE (physical units, mean over outputs) of free-run simulations, each scored from its start index, with
    the simulation engine ``mode``; with ``x0`` other than "zero", each record is simulated from the ``x0_window``
    samples before its start (or its first ones), the state estimated on them (``Model.simulate``)."""
    errors = []
    for rec in records:
        if x0 == "zero":
            y_hat = model.simulate(rec.data.u, mode=mode)[rec.start :]
            errors.append(rec.data.y[rec.start :] - y_hat)
            continue
        begin = max(rec.start - x0_window, 0)
        window = rec.data[begin:]
        y_hat = model.simulate(window.u, mode=mode, y_init=window.y[:x0_window], x0=x0)
        scored = max(x0_window, rec.start - begin)
        errors.append(window.y[scored:] - y_hat[scored:])
    err = np.concatenate(errors, axis=0)
    return float(np.sqrt(np.mean(err**2, axis=0)).mean())


def fit(
    model: Model,
    train: IOData | Sequence[IOData],
    config: TrainConfig | None = None,
    *,
    val: Sequence[IOData] | None = None,
    checkpoint: str | Path | None = None,
    on_epoch: Callable[[EpochInfo], None] | None = None,
    progress: bool | None = None,
) -> FitResult:
    """Train ``model`` in place by minimising the simulation error on windows of the training records, or, for a
    kind whose ``trainer`` is "identify" (the linear model), identify it from the training records.

    Args:
        model: the model to train, of any registered kind; its sampling time and normalisation are set from the
            data.
        train: one record or several, each u: (time, n_u), y: (time, n_y), all with the same dt.
        config: training options (defaults: ``TrainConfig()``).
        val: validation records; default: the tail ``val_fraction`` of each training record.
        checkpoint: resume file; training resumes from it if it exists, and it is removed at the end.
        on_epoch: called after every epoch with an ``EpochInfo``.
        progress: show a progress display on stderr (epochs, loss, validation, time left:
            ``progress.TrainingProgress``); None: only when stderr is an interactive terminal.

    Returns:
        FitResult; the model holds the parameters of the best validation epoch.

    Raises:
        DataError: bad data (dt mismatch, too short for the window, NaN loss).
        ConfigError: bad options, or a model that is not trained (an ensemble: train its members).
    """
    config = config or TrainConfig()
    if model.trainer not in ("gradient", "identify"):
        raise ConfigError(f"a model of kind {model.kind!r} is not trained (train the models it is made of)")
    if config.init == "linear" and model.trainer == "gradient":
        model.check_linear_start()  # before anything is identified
    records = _as_records(train, "training")
    _check_records_dt(records, records[0])
    for rec in records:
        if rec.n_u != model.config.n_u or rec.n_y != model.config.n_y:
            raise DataError(
                f"record {rec.name!r} has n_u={rec.n_u}, n_y={rec.n_y}; the model expects "
                f"n_u={model.config.n_u}, n_y={model.config.n_y}"
            )
    if (config.modal_l1 or config.hankel_nuclear) and not _lti_layers(model):
        raise ConfigError(f"a model of kind {model.kind!r} without LTI layers cannot be trained with modal_l1 or "
                          "hankel_nuclear (they penalise the modes of LTI layers); set them to 0")
    if config.map_slope and not static_maps(model):
        raise ConfigError(f"a model of kind {model.kind!r} without static maps cannot be trained with map_slope "
                          "(it penalises the maps' slopes); set it to 0")
    train_parts, val_parts = split_training(records, val, config)
    _check_records_dt([v.data for v in val_parts], records[0])
    model.with_dt(records[0].dt)
    if model.trainer == "identify":
        return _identify(model, train_parts, val_parts, config, on_epoch)
    stats = fit_scaler(train_parts)
    model.set_scaler(*(fit_scaler(train_parts, increments=True) if model.integrates_output else stats))
    dtype = torch.float64 if config.dtype == "float64" else torch.float32
    device = available_device(config.device)
    loss_scale = torch.as_tensor(stats.y_std, dtype=dtype, device=device)  # (n_y,) the output's std
    model.to(device=device, dtype=dtype)
    if config.init == "linear":
        model.start_linear(train_parts, val_parts)
    if config.x0 == "encoder":
        model.attach_state_encoder(config.x0_window)
    for record, part in zip(records, train_parts, strict=True):
        if len(part) < config.window:
            held = f" after its last {len(record) - len(part)} were held out for validation" if part is not record \
                else ""
            raise DataError(f"record {record.name!r} has {len(record)} samples, {len(part)} of them for training"
                            f"{held}: fewer than the window of {config.window}; use a shorter window")
    u_np, y_np = make_windows(train_parts, config.window, config.stride or max(config.window // 2, 1))
    u_win = torch.as_tensor(u_np, dtype=dtype, device=device)  # (n_win, window, n_u)
    y_win = torch.as_tensor(y_np, dtype=dtype, device=device)  # (n_win, window, n_y)
    world = current()
    if world.size > 1 and config.x0 == "encoder":
        raise ConfigError("x0='encoder' trains on one process (the encoder runs outside DistributedDataParallel); "
                          "train it without --distributed")
    shown = (sys.stderr.isatty() if progress is None else progress) and world.is_main
    budget = config.max_minutes * 60 if config.max_minutes else None
    with torch.random.fork_rng(devices=[]), TrainingProgress(config.epochs, budget) if shown else nullcontext() as bar:
        torch.manual_seed(config.seed)
        return _train_loop(model, u_win, y_win, loss_scale, val_parts, config, checkpoint,
                           _both(bar.update, on_epoch) if bar is not None else on_epoch, world)


def _both(first: Callable[[EpochInfo], None],
          second: Callable[[EpochInfo], None] | None) -> Callable[[EpochInfo], None]:
    """One ``on_epoch`` callback calling ``first``, then ``second`` if any."""
    def on_epoch(info: EpochInfo) -> None:
        first(info)
        if second is not None:
            second(info)
    return on_epoch


def _train_loop(
    model: Model,
    u_win: Tensor,
    y_win: Tensor,
    loss_scale: Tensor,
    val_parts: list[ValidationRecord],
    config: TrainConfig,
    checkpoint: str | Path | None,
    on_epoch: Callable[[EpochInfo], None] | None,
    world: World,
) -> FitResult:
    """The epochs of ``fit``. In distributed training rank 0 alone validates, writes the checkpoint and calls
    ``on_epoch``; the numbers that decide what comes next (time, training loss, validation RMSE, the checkpoint to
    resume) are rank 0's on every rank (``World.from_main``)."""
    net = world.wrap(model)
    optimizer = make_optimizer(model, config)
    schedule = _Schedule(config)
    gen = torch.Generator().manual_seed(config.seed)
    state: dict[str, Any] = {"epoch": 0, "history": [], "best_val": math.inf, "best_epoch": 0,
                             "best_params": None, "elapsed": 0.0, "bad_epochs": 0, "lr_halvings": 0}
    ckpt = Path(checkpoint) if checkpoint is not None and world.is_main else None
    saved = world.object_from_main(_read_checkpoint(ckpt) if ckpt is not None and ckpt.exists() else None)
    if saved is not None:
        state = _load_checkpoint(saved, checkpoint, model, optimizer, schedule, gen, config)
    elif val_parts:  # the starting model (e.g. a linear initialisation) is candidate -1
        model.eval()
        state["best_val"] = world.from_main(validation_rmse(model, val_parts, config.mode, config.x0, config.x0_window)
                                            if world.is_main else math.nan)[0]
        state["best_params"] = copy.deepcopy(model.state_dict())
    budget = config.max_minutes * 60 if config.max_minutes else math.inf
    start = time.monotonic() - state["elapsed"]
    stopped = "epochs"
    while state["epoch"] < config.epochs:
        epoch = state["epoch"]
        progress = max(epoch / config.epochs, world.from_main(time.monotonic() - start)[0] / budget)
        lr_factor = schedule.lr_factor(epoch, progress) * 0.5 ** state["lr_halvings"]
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * lr_factor
        model.train()
        start_of_epoch = _snapshot(model, optimizer) if config.divergence_retries else None
        train_loss = world.from_main(_train_epoch(model, net, optimizer, u_win, y_win, loss_scale, config, gen,
                                                  world))[0]
        if not math.isfinite(train_loss):
            if state["lr_halvings"] >= config.divergence_retries:
                raise DataError(f"training diverged in epoch {epoch + 1}: the loss is {train_loss} after "
                                f"{state['lr_halvings']} recoveries (lower the lr?)")
            model.load_state_dict(start_of_epoch[0])
            optimizer.load_state_dict(start_of_epoch[1])
            state["lr_halvings"] += 1
            log.warning("non-finite training loss in epoch %d: the epoch restarts with the learning rate halved "
                        "(%d of %d recoveries)", epoch + 1, state["lr_halvings"], config.divergence_retries)
            continue
        model.eval()
        val_rmse = validation_rmse(model, val_parts, config.mode, config.x0, config.x0_window) \
            if val_parts and world.is_main else train_loss
        val_rmse, elapsed = world.from_main(val_rmse, time.monotonic() - start)
        improved = val_rmse < state["best_val"]
        if improved:
            state["best_val"], state["best_epoch"] = val_rmse, epoch + 1
            state["best_params"] = copy.deepcopy(model.state_dict())
            state["bad_epochs"] = 0
        else:
            state["bad_epochs"] += 1
        schedule.after_epoch(improved)
        lr_now = optimizer.param_groups[1]["lr"]
        state["history"].append({"epoch": epoch + 1, "train_loss": train_loss, "val_rmse": val_rmse,
                                 "lr": lr_now, "seconds": elapsed})
        state["epoch"], state["elapsed"] = epoch + 1, elapsed
        if ckpt is not None:
            _save_checkpoint(ckpt, state, model, optimizer, schedule, gen, config)
        if on_epoch is not None:
            on_epoch(EpochInfo(epoch + 1, train_loss, val_rmse, lr_now, elapsed, improved))
        if config.patience is not None and state["bad_epochs"] >= config.patience:
            stopped = "early stopping"
            break
        if elapsed >= budget:
            stopped = "time budget"
            break
    if state["best_params"] is not None:
        model.load_state_dict(state["best_params"])
    if ckpt is not None and ckpt.exists():
        ckpt.unlink()
    log.info("training stopped (%s) after %d epochs; best epoch %d", stopped, state["epoch"], state["best_epoch"])
    return FitResult(state["history"], state["best_epoch"], state["best_val"], state["epoch"],
                     state["elapsed"], stopped)


def _snapshot(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict[str, Any], dict[str, Any]]:
    """Copies of the model's and the optimiser's state, to return to after a non-finite loss."""
    return copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict())


def _train_epoch(model: Model, net: nn.Module, optimizer: torch.optim.Optimizer, u_win: Tensor, y_win: Tensor,
                 scale: Tensor, config: TrainConfig, gen: torch.Generator, world: World) -> float:
    """One pass over the windows in a random order (the same on every rank); the mean batch loss, or the first
    non-finite one. In distributed training each rank takes its share of every batch (``_Share``)."""
    perm = torch.randperm(u_win.shape[0], generator=gen)
    losses = []
    for i in range(max(1, math.ceil(u_win.shape[0] / config.batch_size))):
        idx = perm[i * config.batch_size : (i + 1) * config.batch_size].to(u_win.device)
        share = _Share.of(idx, y_win.shape[1:], config, net, world) if world.size > 1 else None
        if share is not None:
            idx = share.idx
        losses.append(_train_step(model, optimizer, u_win[idx], y_win[idx], scale, config, share))
        if not math.isfinite(losses[-1]):
            return losses[-1]
    return float(np.mean(losses))


class _Share(NamedTuple):
    """One rank's share of a global batch in distributed training.

    Attributes:
        idx: its windows (a contiguous part of the batch; a rank left without any takes the batch's first window
            and weight 0, so that it still joins the gradients' average).
        weight: 1 / the number of scored errors in the whole batch (0 for a rank without windows).
        net: the model in ``DistributedDataParallel``.
        world: the process group.
    """

    idx: Tensor
    weight: float
    net: nn.Module
    world: World

    @classmethod
    def of(cls, idx: Tensor, window_shape: torch.Size, config: TrainConfig, net: nn.Module, world: World) -> _Share:
        mine = torch.tensor_split(idx, world.size)[world.rank]
        scored = len(idx) * (window_shape[0] - config.washout) * window_shape[1]  # errors after the washout
        return cls(mine, 1.0 / scored, net, world) if len(mine) else cls(idx[:1], 0.0, net, world)


def _train_step(model: Model, optimizer: torch.optim.Optimizer, u: Tensor, y: Tensor, scale: Tensor,
                config: TrainConfig, share: _Share | None = None) -> float:
    """One optimisation step on a batch u: (batch, window, n_u), y: (batch, window, n_y); returns the NMSE.

    The errors after the washout are divided by ``scale`` (n_y,), the training output's std. A model with an
    output integrator starts each window at 0, not at the measured output, and integrates whatever it gets
    wrong while its states warm up; so both outputs are taken relative to their value at the end of the
    washout (the integrator's offset and the washout's drift cancel).

    With a ``share`` (distributed training), the rank's sum of (weighted) squared errors times ``share.weight`` is
    its part of the batch's mean; DDP averages the ranks' gradients, so the part is scaled by their number, and the
    loss returned is the batch's mean, summed over the ranks.
    """
    optimizer.zero_grad(set_to_none=True)
    with recorded_map_inputs(model) if config.map_slope else nullcontext() as map_inputs:
        if config.x0 == "encoder":  # the window's head sets the state; its tail is simulated and scored
            head = config.x0_window
            encoded = model.state_encoder(model.normalize_input(u[:, :head]),
                                          (y[:, :head] - model.y_mean) / model.y_std)
            start = initial_state.unflatten_state(encoded.double(), model.init_state(u.shape[0]))
            y_hat, _ = model(u[:, head:], start, mode=config.mode)
            err = (y_hat - y[:, head:]) / scale  # (b, t, n_y)
        else:
            y_hat, _ = (share.net if share is not None else model)(u, mode=config.mode)
            if model.integrates_output:
                anchor = max(config.washout - 1, 0)
                y_hat, y = y_hat - y_hat[:, anchor : anchor + 1], y - y[:, anchor : anchor + 1]
            err = (y_hat - y)[:, config.washout :] / scale  # (b, t, n_y)
    weighted = err.pow(2) if config.loss_decay == 1 else err.pow(2) * loss_weights(err.shape[1], config.loss_decay,
                                                                                  err)[:, None]
    penalty = reducibility_penalty(model, config)
    extra = 0.0 if penalty is None else penalty.to(err.dtype)  # every rank adds it whole: DDP averages the ranks
    if config.map_slope:
        extra = extra + config.map_slope * map_slope_penalty(map_inputs, config.map_slope_reach).to(err.dtype)
    if share is None:
        loss = weighted.mean()
        (loss + extra).backward()
    else:
        part = weighted.sum() * share.weight
        (part * share.world.size + extra).backward()
    if config.grad_clip is not None:
        nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
    optimizer.step()
    return float(loss.detach()) if share is None else share.world.sum(part)


def _lti_layers(model: nn.Module) -> list[LTILayer]:
    """The LTI layers of a model, in module order."""
    return [module for module in model.modules() if isinstance(module, LTILayer)]


def reducibility_penalty(model: nn.Module, config: TrainConfig) -> Tensor | None:
    """``modal_l1 * sum of the modes' H-infinity weights + hankel_nuclear * sum of the Hankel singular values``
    over every LTI layer of ``model`` (each in modal form), or None when both weights are 0.

    Returns:
        () float64 tensor, differentiable in the layers' parameters.
    """
    if not (config.modal_l1 or config.hankel_nuclear):
        return None
    total = torch.zeros((), dtype=torch.float64)
    for layer in _lti_layers(model):
        system = layer.discretize().modal()[0]
        if config.modal_l1:
            total = total + config.modal_l1 * system.mode_weights().sum().to(torch.float64)
        if config.hankel_nuclear:
            total = total + config.hankel_nuclear * system.hankel_singular_values().sum()
    return total


def _identity(model: Model, config: TrainConfig) -> str:
    """What a checkpoint must match to be resumed: the model's kind and config and the training options."""
    return json.dumps({"kind": model.kind, "model": model.config.to_dict(), "train": config.to_dict()},
                      sort_keys=True)


def loss_weights(length: int, decay: float, like: Tensor) -> Tensor:
    """The weights of the scored samples of a window: ``decay ** t``, t = 0 .. length - 1, normalised to mean 1;
    (length,) in the dtype and on the device of ``like``."""
    weights = decay ** torch.arange(length, dtype=like.dtype, device=like.device)
    return weights / weights.mean()


def _save_checkpoint(path: Path, state: dict[str, Any], model: Model, optimizer: torch.optim.Optimizer,
                     schedule: _Schedule, gen: torch.Generator, config: TrainConfig) -> None:
    """Write the resume checkpoint, completely or not at all (tensors and primitives only: loads with
    weights_only=True), with the configuration it belongs to."""
    payload = {
        **{k: v for k, v in state.items() if k != "best_params"},
        "best_params": state["best_params"],
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "schedule": {"factor": schedule.factor, "bad_epochs": schedule.bad_epochs},
        "generator": gen.get_state(),
        "torch_rng": torch.get_rng_state(),
        "identity": _identity(model, config),
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_file(path, buffer.getvalue())


def _read_checkpoint(path: Path) -> bytes:
    """The bytes of a resume checkpoint.

    Raises:
        ModelFileError: it cannot be read.
    """
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ModelFileError(f"cannot resume from checkpoint {path}: {exc}") from exc


def _load_checkpoint(saved: bytes, path: str | Path | None, model: Model, optimizer: torch.optim.Optimizer,
                     schedule: _Schedule, gen: torch.Generator, config: TrainConfig) -> dict[str, Any]:
    """Restore a resume checkpoint (its bytes, read from ``path``) into the model, optimiser, schedule and generator;
    the training state.

    Raises:
        ConfigError: the checkpoint belongs to another model or training configuration.
        ModelFileError: it cannot be read.
    """
    try:
        payload = torch.load(io.BytesIO(saved), weights_only=True)
    except (RuntimeError, ValueError, EOFError, OSError, pickle.UnpicklingError) as exc:
        raise ModelFileError(f"cannot resume from checkpoint {path}: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("identity") != _identity(model, config):
        raise ConfigError(f"checkpoint {path} was written for another model or training configuration (or by an "
                          "older version); it cannot be resumed: remove it, or train with the configuration it "
                          "belongs to")
    try:
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
    except (DeepWienerError, KeyError, RuntimeError, ValueError) as exc:
        raise ModelFileError(f"cannot resume from checkpoint {path}: {exc}") from exc
    schedule.factor = payload["schedule"]["factor"]
    schedule.bad_epochs = payload["schedule"]["bad_epochs"]
    gen.set_state(payload["generator"])
    torch.set_rng_state(payload["torch_rng"])
    log.info("resuming from %s after epoch %d", path, payload["epoch"])
    keys = ("epoch", "history", "best_val", "best_epoch", "best_params", "elapsed", "bad_epochs", "lr_halvings")
    return {k: payload[k] for k in keys}


def _identify(model: Model, train_parts: list[IOData], val_parts: list[ValidationRecord], config: TrainConfig,
              on_epoch: Callable[[EpochInfo], None] | None) -> FitResult:
    """``fit`` for a kind identified from data: one "epoch" (its history row has the training NMSE after the washout
    and the validation RMSE; lr 0). A model with an output integrator is scored on the output it simulates."""
    start = time.monotonic()
    what = model.identify(train_parts, val_parts)
    val_rmse = validation_rmse(model, val_parts, config.mode) if val_parts else math.nan
    y_std = model.y_std.double().cpu().numpy()
    err = np.concatenate([(p.y - model.simulate(p.u, mode=config.mode))[config.washout :] / y_std
                          for p in train_parts])
    train_loss, seconds = float(np.mean(err**2)), time.monotonic() - start
    history = [{"epoch": 1, "train_loss": train_loss, "val_rmse": val_rmse, "lr": 0.0, "seconds": seconds}]
    if on_epoch is not None:
        on_epoch(EpochInfo(1, train_loss, val_rmse, 0.0, seconds, True))
    log.info("identified %s (%s)", model.kind, what)
    return FitResult(history, 1, val_rmse, 1, seconds, what)
