"""Command line: ``deepwiener demo | train | tune | evaluate | simulate | ensemble | inspect | reduce | report |
export`` (typer).

Every command is a thin call into the public API plus ``config`` and ``runs``. :func:`main` is the single
error boundary: a ``DeepWienerError`` becomes one line ``error: ...`` on stderr and exit code 2; any other
exception becomes ``internal error: ...`` with exit code 1 and its traceback in the log (``--debug`` prints it).
Tables go to stdout, progress and errors to stderr.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from deepwiener import analysis, export, plots
from deepwiener import config as config_mod
from deepwiener import demo as demo_mod
from deepwiener import distributed as distributed_mod
from deepwiener import report as report_mod
from deepwiener import training as training_mod
from deepwiener.data import Benchmark, IOData
from deepwiener.data.iodata import check_dt
from deepwiener.data.readers import as_vector, load_variables
from deepwiener.errors import ConfigError, DataError, DeepWienerError, Interrupted
from deepwiener.evaluation import Metrics, evaluate_all, input_reach
from deepwiener.files import STDOUT, write_file
from deepwiener.io import load, read_info, save
from deepwiener.layers import LAYERS
from deepwiener.models import MODEL_KINDS, Ensemble
from deepwiener.progress import TrainingProgress
from deepwiener.runs import (
    RunDir,
    describe,
    evaluation_data,
    merge_descriptions,
    resolve_target,
    train_replica,
    train_run,
)
from deepwiener.training import FINE_TUNE_LR_FACTOR, EpochInfo, FitResult, TrainConfig

logger = logging.getLogger(__name__)
PROGRESS_LINE_SECONDS = 5.0
"""When stderr is not a terminal, a progress line is printed at most this often."""
stdout = Console(width=None if sys.stdout.isatty() else 120)  # files and pipes: tables are not squeezed
stderr = Console(stderr=True)

app = typer.Typer(
    name="deepwiener",
    help="Nonlinear system identification with deep Wiener models (deep structured state-space models).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@dataclass
class Session:
    """Per-invocation state shared by the commands and :func:`main`.

    Attributes:
        debug: print tracebacks.
        log_path: the log of the run being written, where failures' tracebacks go.
    """

    debug: bool = False
    log_path: Path | None = None


# Options shared by several commands (typer reads the help from the annotations).
BenchmarkOpt = Annotated[str | None, typer.Option("--benchmark", help="Benchmark name, e.g. silverbox.")]
CsvOpt = Annotated[Path | None, typer.Option("--csv", help="CSV file with a header row.")]
UOpt = Annotated[str | None, typer.Option("--u", help="Input column name(s), comma-separated.")]
YOpt = Annotated[str | None, typer.Option("--y", help="Output column name(s), comma-separated.")]
DtOpt = Annotated[float | None, typer.Option("--dt", help="Sampling time of the CSV file in seconds.")]
CONFIG_HELP = "TOML file with \\[data] \\[model] \\[layer] \\[train] tables (flags override it)."
InitOpt = Annotated[int | None, typer.Option("--init-window", help="CSV records: leading samples not counted.")]


@app.callback()
def root(ctx: typer.Context,
         debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")] = False) -> None:
    """Nonlinear system identification with deep Wiener models (deep structured state-space models)."""
    ctx.ensure_object(Session).debug = debug


@app.command(epilog="Example: deepwiener demo --out runs/demo")
def demo(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("runs/demo"),
    max_minutes: Annotated[float, typer.Option(help="Training time budget in minutes.")] = 0.75,
    epochs: Annotated[int, typer.Option(help="Maximum number of epochs.")] = demo_mod.TRAIN.epochs,
    seed: Annotated[int, typer.Option(help="Seed of the data, the model and the training.")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Overwrite a complete run that is not a demo.")] = False,
) -> None:
    """Offline demo: identify a simulated Wiener-Hammerstein system; compare with the best linear model. The run
    folder is a complete run (its records are in OUT/data), which evaluate, inspect and report take."""
    start = time.monotonic()
    cfg = demo_mod.run_config((out / "data").absolute(), max_minutes=max_minutes, seed=seed, epochs=epochs)
    with RunDir.create(out, config=cfg, kind="demo", force=force) as run:
        ctx.ensure_object(Session).log_path = run.log_path
        demo_mod.write_records(run.file("data"), seed)
        data = cfg.data.load()
        with _progress(cfg.train) as on_epoch:
            outcome = train_run(run, cfg, data, on_epoch)
        linear = demo_mod.best_linear_model(data)
        _write_plots(run, outcome.result.history,
                     {name: (test, {"deep Wiener": outcome.model, "best linear": linear})
                      for name, test in data.tests.items()}, data.init_window)
        comparison = {"deep Wiener": outcome.metrics["test"], "best linear": evaluate_all(linear, data)["test"]}
        run.write_json("comparison.json", comparison)
    _print_stopped(outcome.result)
    _print_metrics(comparison, f"demo test record ({data.tests['test'].n_samples} samples): model comparison")
    stdout.print(f"done in {time.monotonic() - start:.0f} s; plots, data and model in {out}")


@app.command(epilog="Examples: deepwiener train --benchmark silverbox --layer lru --d-model 16 --n-layers 4 "
                    "--max-minutes 10 --out runs/sb-lru  |  deepwiener train --csv rig.csv --u V1 --y V2 "
                    "--dt 0.0016384 --config lru-small.toml --out runs/rig  |  deepwiener train --benchmark "
                    "silverbox --model lstm --hidden 32 --out runs/sb-lstm  |  deepwiener train --benchmark silverbox "
                    "--model lfr --n-x 8 --n-w 16 --init linear --out runs/sb-lfr")
def train(
    ctx: typer.Context,
    benchmark: BenchmarkOpt = None,
    csv: CsvOpt = None,
    u: UOpt = None,
    y: YOpt = None,
    dt: DtOpt = None,
    init_window: InitOpt = None,
    val_csv: Annotated[list[Path] | None, typer.Option(
        "--val-csv", help="CSV file of a validation record, same columns (repeatable); default: the tail of the "
        "training record.")] = None,
    test_csv: Annotated[list[Path] | None, typer.Option(
        "--test-csv", help="CSV file of a test record, same columns (repeatable); default: the training file "
        "itself, an in-sample fit.")] = None,
    model_kind: Annotated[str | None, typer.Option(
        "--model", help=f"Model kind: {', '.join(MODEL_KINDS)} (default deepwiener).")] = None,
    layer: Annotated[str | None, typer.Option(help=f"Layer: {', '.join(LAYERS)}.")] = None,
    d_model: Annotated[int | None, typer.Option(help="Channels between blocks.")] = None,
    d_state: Annotated[int | None, typer.Option(help="Complex modes per block.")] = None,
    n_layers: Annotated[int | None, typer.Option(help="Number of blocks.")] = None,
    nonlinearity: Annotated[str | None, typer.Option(help="Static map: gelu, tanh, mlp, linear_tanh, ...")] = None,
    hidden: Annotated[int | None, typer.Option(help="Width of each recurrent layer (lstm, gru).")] = None,
    n_x: Annotated[int | None, typer.Option(help="Real states of the linear part (lfr).")] = None,
    n_w: Annotated[int | None, typer.Option(help="Channels of the static map in the loop (lfr).")] = None,
    integrator: Annotated[bool | None, typer.Option(
        "--integrator/--no-integrator",
        help="Sum the model's output over time (plants with a pure integrator, e.g. a position).")] = None,
    init: Annotated[str | None, typer.Option(
        help="Initialisation: random, or linear (start as the best linear model of the data).")] = None,
    config: Annotated[Path | None, typer.Option(help=CONFIG_HELP)] = None,
    max_minutes: Annotated[float | None, typer.Option(help="Training time budget in minutes.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Maximum number of epochs.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the model and the training.")] = None,
    out: Annotated[Path | None, typer.Option(
        help="Run directory (default runs/<data>-<layer or model>-<time>).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite a complete run.")] = False,
    distributed: Annotated[bool, typer.Option(
        "--distributed", help="Data-parallel training under torchrun (torchrun --nproc_per_node N $(which "
        "deepwiener) train ... --distributed): each process takes a share of every batch (the batch size is the "
        "global batch); rank 0 writes the run.")] = False,
) -> None:
    """Train a deep Wiener model (or an lfr nonlinear feedback model, or an lstm, gru or linear baseline) and
    write a run directory; benchmarks are evaluated on every test set."""
    cfg = config_mod.resolve(config, {
        "data": {**_data_flags(benchmark, csv, u, y, dt, init_window), "val_csv": _paths(val_csv),
                 "test_csv": _paths(test_csv)},
        "model": {"kind": model_kind, "layer": layer, "d_model": d_model, "d_state": d_state, "n_layers": n_layers,
                  "nonlinearity": nonlinearity, "hidden": hidden, "n_x": n_x, "n_w": n_w, "integrator": integrator,
                  "seed": seed},
        "train": {"max_minutes": max_minutes, "epochs": epochs, "seed": seed, "init": init},
    })
    if not distributed:
        _train_and_report(ctx, cfg, cfg.data.load(), out, force)
        return
    with _process_group(cfg.train.device) as world:
        data = cfg.data.load()
        if world.is_main:
            _train_and_report(ctx, cfg, data, out, force)
        else:
            train_replica(cfg, data)


def _train_and_report(ctx: typer.Context, cfg: config_mod.RunConfig, data: Benchmark, out: Path | None,
                      force: bool) -> None:
    """``train``'s run: train, evaluate, plot, print the tables (rank 0 of a distributed training)."""
    out = out or Path("runs") / f"{data.name.replace(' ', '_')}-{cfg.label}-{time.strftime('%Y%m%d-%H%M%S')}"
    with RunDir.create(out, config=cfg, force=force) as run:
        ctx.ensure_object(Session).log_path = run.log_path
        with _progress(cfg.train) as on_epoch:
            outcome = train_run(run, cfg, data, on_epoch)
        _write_plots(run, outcome.result.history,
                     {name: (test, {outcome.model.title or cfg.kind: outcome.model})
                      for name, test in data.tests.items()},
                     data.init_window)
    _print_stopped(outcome.result)
    _print_metrics(outcome.metrics, f"{data.name}: {_metrics_title(data)}")
    _print_input_reach(read_info(run.model_path)["extra"],  # the range the model file stores
                       {name: test.u for name, test in data.tests.items()})
    stdout.print(f"run written to {out}")


@app.command(epilog="Examples: deepwiener tune --config benchmarks/tuning/configs/smoke.toml --trials 4 --workers 2 "
                    "--out runs/tune-smoke  |  deepwiener tune --config space.toml --trials 100 --storage "
                    "postgresql://me@db.lan:5432/studies --study tanks --out runs/tanks   (the same command on every "
                    "machine)")
def tune(
    space: Annotated[Path, typer.Option("--config", help="SPACE.toml: a run configuration with a \\[tune] table of "
                                        "ranges over its keys.", show_default=False)],
    trials: Annotated[int, typer.Option(help="The study's total number of trials, shared by every process that "
                                        "joins it.", show_default=False)],
    out: Annotated[Path, typer.Option(help="Output folder: trials/, best/, summary.md, summary.json.",
                                      show_default=False)],
    benchmark: BenchmarkOpt = None,
    csv: CsvOpt = None,
    u: UOpt = None,
    y: YOpt = None,
    dt: DtOpt = None,
    init_window: InitOpt = None,
    workers: Annotated[int, typer.Option(help="Processes started here, each with its share of the cores.")] = 1,
    storage: Annotated[str | None, typer.Option(help="sqlite:///FILE or postgresql://USER@HOST:PORT/DBNAME (default: "
                                                "a journal file in --out).")] = None,
    study: Annotated[str | None, typer.Option(help="Study name; processes with the same storage and name join one "
                                              "study (default: the --config file's name).")] = None,
    max_minutes: Annotated[float | None, typer.Option(help="Start no trial after this many minutes (the running "
                                                      "ones finish).")] = None,
    heartbeat: Annotated[int | None, typer.Option(help="Seconds between a trial's heartbeats (sqlite, postgresql; "
                                                  "default 30); a trial silent for three is failed and runs "
                                                  "again.")] = None,
) -> None:
    """Search hyperparameters with Optuna: each trial is a run (trials/NNNN) scored on validation data; the best run
    is copied to OUT/best. Run it again to resume; run it on other machines with the same --storage and --study to
    share the work."""
    try:
        from deepwiener import tune as tune_mod
    except ImportError as exc:
        raise ConfigError(f"deepwiener tune needs optuna ({exc.name} is missing): pip install 'deepwiener[tune]'") \
            from None
    settings = tune_mod.TuneSettings(space=space, out=out, trials=trials, workers=workers, storage=storage,
                                     study=study, heartbeat=heartbeat or tune_mod.HEARTBEAT_SECONDS,
                                     max_minutes=max_minutes,
                                     data=_data_flags(benchmark, csv, u, y, dt, init_window))
    with _trial_lines():
        summary = tune_mod.tune(settings)
    rows = [[str(r["number"]), r["state"], f"{r['val_rmse']:.5g}" if r["val_rmse"] is not None else "",
             str(r["epochs"] if r["epochs"] is not None else ""), str(r["host"] or ""), str(r["pid"] or "")]
            for r in summary["trials"]]
    stdout.print(_table(f"study {summary['study']}: validation RMSE of each trial",
                        ("trial", "state", "validation RMSE", "epochs", "host", "pid"), rows, left=("state", "host")))
    best = summary["best"]
    if best is not None:
        stdout.print(f"best: trial {best['number']} ({summary['best_run']}), validation RMSE {best['val_rmse']:.5g} "
                     f"{best['unit']}", markup=False, soft_wrap=True)
    stdout.print(f"summary written to {out / 'summary.md'}", markup=False)


@app.command(epilog="Example: deepwiener evaluate runs/sb-lru --json runs/sb-lru/metrics.json")
def evaluate(
    target: Annotated[Path, typer.Argument(help="Run directory or model file.", show_default=False)],
    benchmark: BenchmarkOpt = None,
    csv: CsvOpt = None,
    u: UOpt = None,
    y: YOpt = None,
    dt: DtOpt = None,
    init_window: InitOpt = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the metrics to this JSON file.")] = None,
    segments: Annotated[int, typer.Option(help="Also print the RMSE of this many consecutive parts of each test "
                                               "record: where in time the error lies.")] = 0,
    x0: Annotated[str, typer.Option(help="The state at the start: zero, or estimated from the init window's "
                                         "measured outputs: fit (the state that best explains them) or encoder "
                                         "(the model's trained state encoder).")] = "zero",
) -> None:
    """Evaluate a model by the official protocol (free-run simulation; errors after the init window)."""
    model_path, run = resolve_target(target)
    given = _given_data(_data_flags(benchmark, csv, u, y, dt, init_window))
    data = evaluation_data(run, given)
    results = evaluate_all(load(model_path), data, segments, x0)
    own = " (its training data: an in-sample fit)" if given is None and data.in_sample else ""
    state = "" if x0 == "zero" else f", the state estimated on the init window (x0 {x0})"
    _print_metrics(results, f"{target} on {data.name}{own}{state}")
    _print_segments(results)
    _print_input_reach(read_info(model_path)["extra"], {name: test.u for name, test in data.tests.items()})
    if json_path is not None:
        write_file(json_path, json.dumps(results, indent=2) + "\n")


@app.command(epilog="Example: deepwiener simulate runs/rig --csv new_input.csv --u V1 --out y_hat.csv")
def simulate(
    target: Annotated[Path, typer.Argument(help="Run directory or model file.", show_default=False)],
    csv: Annotated[Path, typer.Option("--csv", help="Input file (CSV with a header row).", show_default=False)],
    out: Annotated[Path, typer.Option("--out", help="Output CSV file ('-': standard output).", show_default=False)],
    u: UOpt = None,
    dt: Annotated[float | None, typer.Option(help="Sampling time of the input in seconds (checked).")] = None,
    time_column: Annotated[str | None, typer.Option("--time", help="Time column; its step is checked.")] = None,
    y_init: Annotated[Path | None, typer.Option(
        "--y-init", help="CSV file of the measured outputs of the first samples (the init window; columns named as "
        "the model's outputs): the state is estimated on it (see --x0).")] = None,
    x0: Annotated[str | None, typer.Option(help="With --y-init: fit (default) or encoder.")] = None,
) -> None:
    """Simulate a model in free run on the inputs of a CSV file, from the zero state or from a state estimated on
    the measured outputs of its first samples (--y-init); write the outputs."""
    model_path, _ = resolve_target(target)
    info = read_info(model_path)
    model = load(model_path)
    columns = _columns(u) or tuple(info["extra"].get("u_names", ()))
    if not columns:
        raise DataError("give the input column(s) with --u COLS (the model file does not name them)")
    inputs, step = _read_inputs(csv, columns, time_column)
    for found in (dt, step):
        if found is not None:
            check_dt(found, model.dt, f"input {csv}", f"the model {model_path}")
    names = info["extra"].get("y_names") or [f"y{k + 1}" for k in range(model.config.n_y)]
    if y_init is None and x0 is not None:
        raise ConfigError("--x0 goes with --y-init (the measured outputs the state is estimated on)")
    window = None
    if y_init is not None:
        arrays = load_variables(y_init, names)
        window = np.column_stack([as_vector(arrays, name, y_init) for name in names])
    y_hat = model.simulate(inputs, y_init=window, x0="zero" if window is None else x0 or "fit")
    table = np.column_stack([np.arange(len(y_hat)) * model.dt, y_hat])
    lines = [",".join(["time", *names])] + [",".join(f"{v:.10g}" for v in row) for row in table]
    write_file(out, "\n".join(lines) + "\n")
    console = stderr if str(out) == STDOUT else stdout  # the table may be standard output itself
    _print_input_reach(info["extra"], {csv.name: inputs}, console)
    console.print(f"wrote {len(y_hat)} samples of {', '.join(names)} to {out}")


@app.command(epilog="Example: deepwiener ensemble runs/sb-seed0 runs/sb-seed1 runs/sb-seed2 --out sb-ensemble.dw")
def ensemble(
    targets: Annotated[list[Path], typer.Argument(help="Run directories or model files: two or more models of one "
                                                       "system.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", help="The ensemble's model file.", show_default=False)],
) -> None:
    """Average several models of one system (e.g. seeds): write one model file that simulates each and averages
    their outputs. Compare it with its members on validation data before using it."""
    paths = [resolve_target(target)[0] for target in targets]
    model = Ensemble([load(path) for path in paths])
    extra = {**merge_descriptions([read_info(path)["extra"] for path in paths]), "members": [str(p) for p in paths]}
    save(model, out, extra=extra)
    stdout.print(f"wrote an ensemble of {len(paths)} models ({model.n_parameters} parameters) to {out}")


@app.command(epilog="Examples: deepwiener inspect runs/sb-lru --out runs/sb-lru/inspect --json inspect.json  |  "
                    "deepwiener inspect model.dw --csv rig.csv --u V1 --y V2 --dt 0.0016384 --out inspect")
def inspect(
    target: Annotated[Path, typer.Argument(help="Run directory or model file.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", help="Folder for the PNG figures.", show_default=False)],
    benchmark: BenchmarkOpt = None,
    csv: CsvOpt = None,
    u: UOpt = None,
    y: YOpt = None,
    dt: DtOpt = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write poles, zeros, DC gains, Hankel singular "
                                                   "values and the certificate to this JSON file.")] = None,
) -> None:
    """Look inside a model: poles and zeros, Bode diagram, Hankel singular values, nonlinearities, certificate.

    The nonlinearity curves and the local Lipschitz constants use the first training record of the data given,
    else of the run's own data; a model file without data is analysed without them.
    """
    model_path, run = resolve_target(target)
    model = report_mod.require_capability(load(model_path), "blocks", model_path)
    data = _analysis_data(run, _given_data(_data_flags(benchmark, csv, u, y, dt, None)))
    inspection = report_mod.inspect_model(model, data)
    figures = inspection.figures()
    for name, figure in figures.items():
        write_file(out / f"{name}.png", plots.png_bytes(figure))
    if json_path is not None:
        write_file(json_path, json.dumps(inspection.to_dict(), indent=2) + "\n")
    stdout.print(_table(f"{target}: the LTI part of each block", report_mod.BLOCKS_HEADER,
                        report_mod.block_rows(inspection), left=("layer", "certificate")))
    for line in inspection.certificate.summary():
        stdout.print(line, markup=False, highlight=False, soft_wrap=True)
    note = "" if data else " (no data: nonlinearity curves left out; give --benchmark or --csv)"
    stdout.print(f"{len(figures)} figures written to {out}{note}", markup=False)


@app.command(epilog="Examples: deepwiener reduce runs/sb-lru --tol 1e-3 --out runs/sb-lru-reduced  |  "
                    "deepwiener reduce runs/sb-lru --order 8 --method modal --out runs/sb-lru-8  |  "
                    "deepwiener reduce runs/sb-lru --order 8 --fine-tune 5 --out runs/sb-lru-8-ft")
def reduce(
    ctx: typer.Context,
    target: Annotated[Path, typer.Argument(help="Complete run directory (lru or s5 layers).", show_default=False)],
    out: Annotated[Path, typer.Option("--out", help="Directory of the reduced run.", show_default=False)],
    tol: Annotated[float | None, typer.Option(help="Bound on each block's H-infinity error (LTI part, internal "
                                                   "units); every block keeps the modes the worst one needs.")] = None,
    order: Annotated[int | None, typer.Option(help="Complex modes kept in every block.")] = None,
    method: Annotated[str, typer.Option(help=f"Truncation: {' or '.join(analysis.METHODS)}.")] = "balanced",
    fine_tune: Annotated[float | None, typer.Option(
        "--fine-tune", help="Then retrain the reduced model for this many minutes on the run's training data, with "
        "its training options (learning rates times --lr-factor) and validation; the truncated model is epoch 0 and "
        "is kept unless an epoch validates better.", show_default=False)] = None,
    lr_factor: Annotated[float, typer.Option("--lr-factor", help="Learning-rate factor of --fine-tune.")] = \
        FINE_TUNE_LR_FACTOR,
    force: Annotated[bool, typer.Option("--force", help="Overwrite a complete run.")] = False,
) -> None:
    """Reduce the order of every block's LTI layer (and fine-tune it with --fine-tune); write a new run,
    re-evaluated on the run's test sets."""
    source = RunDir.open(target)
    if out.resolve() == source.path.resolve():
        raise ConfigError(f"--out {out} is the run being reduced; choose another folder")
    model = report_mod.require_capability(load(source.model_path), "reduce", source.model_path)
    config = source.config()
    data = config.data.load()
    if fine_tune is not None:
        training_mod.check_fine_tune(config.train, fine_tune, lr_factor, validation_records=bool(data.val))
    elif lr_factor != FINE_TUNE_LR_FACTOR:
        raise ConfigError("--lr-factor is the learning-rate factor of --fine-tune; give --fine-tune MINUTES too")
    result = analysis.reduce(model, order=order, tol=tol, method=method)
    before = evaluate_all(model, data)
    modes = {"d_state": result.model.config.d_state}
    reduced = dataclasses.replace(config, model=MappingProxyType({**config.model, **modes}))
    with RunDir.create(out, config=reduced, kind="reduce", force=force) as run:
        ctx.ensure_object(Session).log_path = run.log_path
        truncated = evaluate_all(result.model, data)
        after, history, tuning = truncated, source.read_history(), None
        if fine_tune is not None:
            with _progress(dataclasses.replace(config.train, max_minutes=fine_tune)) as on_epoch:
                tuning = training_mod.fine_tune(result.model, data.train, config.train, fine_tune,
                                                lr_factor=lr_factor, val=list(data.val) or None, on_epoch=on_epoch)
            after, history = evaluate_all(result.model, data), tuning.fit.history
        summary = report_mod.reduction_summary(result, before, after, source=source.path, order=order, tol=tol)
        if tuning is not None:
            summary["fine_tune"] = report_mod.fine_tune_summary(tuning, fine_tune, truncated)
        save(result.model, run.model_path, extra={**describe(data), "reduced_from": str(source.path)})
        run.write_history(history)
        run.write_json("metrics.json", after)
        run.write_json("reduction.json", summary)
        _write_plots(run, history, {name: (test, {"reduced": result.model, "original": model})
                                    for name, test in data.tests.items()}, data.init_window)
    blocks, tests = report_mod.reduction_rows(summary)
    stdout.print(_table(f"{method} truncation of {target}", report_mod.REDUCTION_BLOCKS_HEADER, blocks))
    if fine_tune is not None:
        info = summary["fine_tune"]
        kept = "the truncated model kept" if info["best_epoch"] == 0 else f"best epoch {info['best_epoch']}"
        stdout.print(f"fine-tuned {info['epochs']} epochs: validation RMSE {info['val_rmse_start']:.6g} -> "
                     f"{info['val_rmse_after']:.6g} ({kept})", markup=False)
    stdout.print(_table(f"{data.name}: test metrics before and after", report_mod.REDUCTION_TESTS_HEADER, tests,
                        left=("test", "unit")))
    stdout.print(f"reduced run written to {out}")


@app.command(epilog="Example: deepwiener report runs/sb-lru --out runs/sb-lru/report.html")
def report(
    target: Annotated[Path, typer.Argument(help="Complete run directory.", show_default=False)],
    out: Annotated[Path | None, typer.Option("--out", help="HTML file (default RUN/report.html).")] = None,
) -> None:
    """Write one self-contained HTML page about a run: metrics, training, simulations, analysis, config."""
    run = RunDir.open(target)
    page = report_mod.render_report(run)
    path = write_file(out or run.file("report.html"), page)
    stdout.print(f"report written to {path} ({len(page.encode()) / 1e6:.2f} MB)")


EXPORT_FORMATS: tuple[str, ...] = ("onnx", "c")


@app.command(name="export", epilog="Examples: deepwiener export runs/sb-lru --format onnx --out sb.onnx  |  "
                                   "deepwiener export model.dw --format c --out sb_c --precision float --name silverbox"
                                   "  |  cc -O2 -std=c99 -o simulate sb_c/*.c -lm")
def export_model(
    target: Annotated[Path, typer.Argument(help="Run directory or model file.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", help="The ONNX file, or the folder of the C files.",
                                      show_default=False)],
    fmt: Annotated[str, typer.Option("--format", help=f"{' or '.join(EXPORT_FORMATS)}.")] = "onnx",
    sequence: Annotated[bool, typer.Option("--sequence", help="onnx: the simulation of a whole record (u of shape "
                                                              "(time, n_u)) instead of one step.")] = False,
    precision: Annotated[str, typer.Option(help=f"c: {' or '.join(export.PRECISIONS)}.")] = "double",
    name: Annotated[str | None, typer.Option(help="c: prefix of the C names and files (default: the model's "
                                                  "kind).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing output.")] = False,
) -> None:
    """Export a model's one-sample step for use outside Python: an ONNX graph (float32; inputs u and state,
    outputs y and next_state) or plain C99 with a simulation program (stdin -> stdout). Physical units in and out;
    the whole state is one vector whose zeros are the model's zero state."""
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")
    if fmt == "onnx" and (name is not None or precision != "double"):
        raise ConfigError("--name and --precision apply to --format c (ONNX graphs are float32)")
    if fmt == "c" and sequence:
        raise ConfigError("--sequence applies to --format onnx (the C program simulates whole records)")
    model_path, _ = resolve_target(target)
    model, extra = load(model_path), read_info(model_path)["extra"]
    if fmt == "onnx":
        path = export.export_onnx(model, out, sequence=sequence, extra=extra, force=force)
        stdout.print(f"wrote the {'sequence' if sequence else 'one-step'} ONNX graph of {model_path} to {path}")
    else:
        folder = export.export_c(model, out, precision=precision, name=name, extra=extra, force=force)
        stdout.print(f"wrote C ({precision}) to {folder}; build: cc -O2 -std=c99 -o simulate {folder}/*.c -lm")


def _columns(names: str | None) -> tuple[str, ...] | None:
    """``"V1, V2"`` -> ``("V1", "V2")``; None stays None."""
    return None if names is None else tuple(n.strip() for n in names.split(",") if n.strip())


def _paths(paths: Sequence[Path] | None) -> tuple[str, ...] | None:
    """Absolute file names of a repeatable path option; None when not given."""
    return tuple(os.path.abspath(p) for p in paths) if paths else None


def _metrics_title(data: Benchmark) -> str:
    """What the metrics on ``data.tests`` measure: held-out test records, or the fit to the training data."""
    return "fit on the training data (in-sample; give --test-csv for held-out data)" if data.in_sample \
        else "test metrics"


def _data_flags(benchmark: str | None, csv: Path | None, u: str | None, y: str | None, dt: float | None,
                init_window: int | None) -> dict[str, Any]:
    """The [data] overrides given on the command line (None: not given)."""
    return {"benchmark": benchmark, "csv": os.path.abspath(csv) if csv is not None else None,
            "u": _columns(u), "y": _columns(y), "dt": dt, "init_window": init_window}


def _given_data(flags: Mapping[str, Any]) -> config_mod.DataConfig | None:
    """The data named by the [data] flags that were given (see :func:`_data_flags`); None when none was."""
    given = {k: v for k, v in flags.items() if v is not None}
    return config_mod.DataConfig(**given) if given else None


def _analysis_data(run: RunDir | None, given: config_mod.DataConfig | None) -> Benchmark | None:
    """The data to analyse a model on: ``given``, else the run's own data; None for a model file (or a run
    without config.toml, such as a demo) when no data is given."""
    if given is None and (run is None or not run.file("config.toml").exists()):
        return None
    return evaluation_data(run, given)


def _read_inputs(path: Path, columns: Sequence[str], time_column: str | None) -> tuple[np.ndarray, float | None]:
    """Read input columns (and optionally a time column) of a file; return (u (T, n_u), time step or None).

    Raises:
        DataError: unreadable file, unknown column, no samples, NaN/inf, or a non-uniform time column.
    """
    arrays = load_variables(path, [*columns, *([time_column] if time_column else [])])
    u = np.column_stack([as_vector(arrays, c, path) for c in columns])
    bad = ~np.isfinite(u)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise DataError(f"{path}: column {columns[col]!r} has {int(bad[:, col].sum())} NaN/inf value(s); the "
                        f"first is at row {row}")
    if time_column is None:
        return u, None
    steps = np.diff(np.asarray(arrays[time_column], dtype=np.float64).reshape(-1))
    if steps.size == 0 or not np.all(np.isfinite(steps)) or np.ptp(steps) > 1e-3 * abs(np.median(steps)):
        raise DataError(f"{path}: time column {time_column!r} is not uniformly sampled")
    return u, float(np.median(steps))


@contextmanager
def _progress(config: TrainConfig) -> Iterator[Callable[[EpochInfo], None]]:
    """The training progress on stderr (``progress.TrainingProgress``: a bar on a terminal, else a line every
    few seconds); yields the ``on_epoch`` callback for ``fit``. Every epoch is also logged (run.log)."""
    budget = config.max_minutes * 60 if config.max_minutes else None
    with TrainingProgress(config.epochs, budget, line_seconds=PROGRESS_LINE_SECONDS, console=stderr) as display:

        def on_epoch(info: EpochInfo) -> None:
            display.update(info)
            logger.info("epoch %d: %s", info.epoch, display.last_stats)

        yield on_epoch


@contextmanager
def _process_group(device: str) -> Iterator[distributed_mod.World]:
    """The process group of a torchrun launch while the block runs (``distributed.init``); after a block that ended
    well, the ranks leave it together."""
    ended_well = False
    try:
        yield distributed_mod.init(device)
        ended_well = True
    finally:
        distributed_mod.close(wait=ended_well)


@contextmanager
def _trial_lines() -> Iterator[None]:
    """Show the tuning's trial lines (logger ``deepwiener.tune``, level INFO) on stderr while the block runs."""
    lines = logging.StreamHandler(sys.stderr)
    lines.setFormatter(logging.Formatter("%(message)s"))
    lines.addFilter(lambda record: record.levelno == logging.INFO)
    tune_log = logging.getLogger("deepwiener.tune")
    previous = tune_log.level
    tune_log.addHandler(lines)
    tune_log.setLevel(logging.INFO)
    try:
        yield
    finally:
        tune_log.removeHandler(lines)
        tune_log.setLevel(previous)


def _write_plots(run: RunDir, history: Sequence[Mapping[str, float]],
                 records: Mapping[str, tuple[IOData, Mapping[str, Any]]], init_window: int) -> None:
    """Training curves and, per record, measured vs simulated output of each model, as PNG files in plots/."""
    unit = next(iter(records.values()))[0].y_unit
    run.write_bytes("plots/training.png", plots.png_bytes(plots.training_curves(history, unit)))
    for name, (data, models) in records.items():
        simulated = {label: model.simulate(data.u) for label, model in models.items()}
        figure = plots.simulation(data, simulated, init_window)
        run.write_bytes(f"plots/{name.replace(' ', '_')}.png", plots.png_bytes(figure))


def _table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]], left: Sequence[str] = ()) -> Table:
    """A rich table; the columns named in ``left`` are left-justified, the others right-justified."""
    table = Table(title=title)
    for column in header:
        table.add_column(column, justify="left" if column in left else "right", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    return table


def _percent(share: float) -> str:
    """A percentage for a note: two significant digits below 10 %, else whole percents."""
    return f"{share:.2g}" if share < 10 else f"{share:.0f}"


def _times(factor: float) -> str:
    """A factor for a note: two decimals, or three significant digits when it is large."""
    return f"{factor:.2f}" if factor < 1e3 else f"{factor:.3g}"


def _print_stopped(result: FitResult) -> None:
    """Why training stopped (the epoch budget, the time budget, early stopping) and the epoch kept."""
    kept = f"epoch {result.best_epoch}" if result.best_epoch else "the model before training (epoch 0)"
    stdout.print(f"stopped after {result.epochs_run} epochs ({result.stopped}); kept {kept}, the best on validation")


def _print_metrics(results: Mapping[str, Metrics], title: str) -> None:
    stdout.print(_table(title, report_mod.METRICS_HEADER, report_mod.metrics_rows(results), left=("test", "unit")))
    for name, m in results.items():
        if "diverged_at" in m:
            stdout.print(f"note: the simulation of {name!r} diverged (NaN/inf from sample {m['diverged_at']} on): "
                         "its errors are infinite", soft_wrap=True, markup=False)


def _print_segments(results: Mapping[str, Metrics]) -> None:
    """One line per test record and output with the RMSE of each part (``evaluate(..., segments=n)``)."""
    for name, m in results.items():
        if "segment_rmse" not in m:
            continue
        per_output = np.atleast_2d(np.array(m["segment_rmse"]).T)  # (n_y, segments)
        for k, values in enumerate(per_output):
            output = f", output {k + 1}" if len(per_output) > 1 else ""
            stdout.print(f"{name}{output}: RMSE [{m['unit'] or '-'}] of {len(values)} consecutive parts from sample "
                         f"{m['segment_starts'][0]}: " + " ".join(f"{v:.3g}" for v in values),
                         soft_wrap=True, markup=False)


def _print_input_reach(extra: Mapping[str, Any], inputs: Mapping[str, np.ndarray], console: Console = stdout) -> None:
    """A note for each input record (name -> (T, n_u)) that leaves the training inputs' range (stored in the model
    file by ``runs.describe``; older files without it get no note). Call it after simulating, which checks n_u."""
    if "u_low" not in extra or "u_high" not in extra:
        return
    for name, u in inputs.items():
        reach = input_reach(u, np.array(extra["u_low"]), np.array(extra["u_high"]))
        if reach.outside > 0:
            console.print(f"note: the input of {name!r} leaves the training inputs' range on "
                          f"{_percent(100 * reach.outside)} % of its samples, up to {_times(reach.reach)} times the "
                          "range's half-width from its centre: the model extrapolates there", soft_wrap=True)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: run the command line with the error boundary; exits with the command's status.

    A ``DeepWienerError`` or an operating-system error (a file that cannot be read or written) is one ``error:``
    line and exit code 2; Ctrl-C says what was interrupted and how to resume, exit code 130; anything else is an
    internal error, exit code 1, its traceback in the log. Library warnings are shown as ``warning:`` lines.
    """
    session = Session()
    warnings = _WarningLines()
    package = logging.getLogger("deepwiener")
    package.addHandler(warnings)
    previous_sigint = signal.signal(signal.SIGINT, _interrupt)  # click would swallow a KeyboardInterrupt
    try:
        typer.main.get_command(app).main(args=argv, prog_name="deepwiener", obj=session)
    except (DeepWienerError, OSError) as exc:
        if session.debug:
            traceback.print_exc()
        print(f"error: {_one_line(exc) if isinstance(exc, DeepWienerError) else _os_error(exc)}", file=sys.stderr)
        sys.exit(2)
    except (Interrupted, KeyboardInterrupt):
        where = (f": the run in {session.log_path.parent} is marked failed, and the same command resumes it from its "
                 "last epoch" if session.log_path is not None else "")
        print(f"\ninterrupted{where}", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:
        log = session.log_path or _error_log()
        if session.log_path is None:
            with log.open("a", encoding="utf-8") as file:
                file.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} deepwiener {' '.join(argv or sys.argv[1:])}\n")
                traceback.print_exc(file=file)
        if session.debug:
            traceback.print_exc()
        print(f"internal error: {type(exc).__name__}: {_one_line(exc)} (traceback in {log}; --debug shows it)",
              file=sys.stderr)
        sys.exit(1)
    finally:
        signal.signal(signal.SIGINT, previous_sigint)
        package.removeHandler(warnings)


def _interrupt(signum: int, frame: object) -> None:
    """SIGINT handler of the command line: raise :class:`~deepwiener.errors.Interrupted`."""
    raise Interrupted


class _WarningLines(logging.Handler):
    """Library warnings as ``warning: ...`` lines on stderr (the run log keeps every record)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.addFilter(lambda record: record.levelno == logging.WARNING)  # errors reach the user as ``error:``

    def emit(self, record: logging.LogRecord) -> None:
        stderr.print(f"warning: {record.getMessage()}", markup=False, highlight=False, soft_wrap=True)


def _os_error(exc: OSError) -> str:
    """An operating-system error in one line, naming the file: "cannot read|write PATH: cause"."""
    names = " -> ".join(str(name) for name in (exc.filename, exc.filename2) if name is not None)
    return f"{names}: {exc.strerror or exc}" if names else _one_line(exc)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _error_log() -> Path:
    return Path(tempfile.gettempdir()) / "deepwiener-error.log"

