"""Initialisation study: does starting from the best linear model (``init="linear"``) train faster or better than
the random initialisation? Silverbox and Wiener-Hammerstein, small models, short budgets, several seeds.

One command::

    python benchmarks/init_study.py                           # 3 minutes per run, seeds 0 1, both benchmarks
    python benchmarks/init_study.py --minutes 0.2 --seeds 0   # a smoke test

Each benchmark takes its data, layer options and training options from ``accuracy/configs/<benchmark>.toml``;
the model is made small (``--d-model``, ``--d-state``, ``--n-layers``) and every run trains for the same
wall-clock budget (``--minutes``; no early stopping) through ``training.fit``, once per seed and
initialisation. The linear reference is the ``linear`` model kind fitted on the same split: the very model that
``init="linear"`` starts from (same data, same order selection on the validation tail).

Time axis: seconds of training; the curves of ``init="linear"`` are shifted right by the time of the linear
identification, which runs before the budget starts. Test sets are scored by the official protocol
(``evaluate_all``), but only the validation tail of the training record is used to compare the runs' progress.

Writes ``results/init_study/results.json`` (every history and metric), ``results.md`` (the table) and
``validation_curves.png`` (validation RMSE against time, per benchmark).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accuracy.run import git_commit, machine
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from deepwiener.config import RunConfig, resolve
from deepwiener.data import Benchmark
from deepwiener.evaluation import evaluate_all
from deepwiener.models import LinearModel
from deepwiener.training import EpochInfo, fit

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "init_study"
BENCHMARKS = ("silverbox", "wiener_hammerstein")
INITS = ("random", "linear")
CHECKPOINTS = (0.25, 0.5, 1.0)  # fractions of the budget at which the validation RMSE is tabulated


def study_config(benchmark: str, args: argparse.Namespace, seed: int, init: str) -> RunConfig:
    """The benchmark's accuracy configuration with a small model, the study's budget, seed and init."""
    return resolve(HERE / "accuracy" / "configs" / f"{benchmark}.toml", {
        "model": {"d_model": args.d_model, "d_state": args.d_state, "n_layers": args.n_layers, "seed": seed},
        "train": {"max_minutes": args.minutes, "epochs": 10**6, "patience": 10**6, "seed": seed, "init": init,
                  "device": args.device},
    })


def linear_reference(cfg: RunConfig, data: Benchmark) -> dict[str, Any]:
    """The linear model that init="linear" starts from, with its validation RMSE and test metrics."""
    first = data.train[0]
    linear = LinearModel(first.n_u, first.n_y)
    result = fit(linear, data.train, cfg.train)
    return {"model": result.stopped, "val_rmse": result.best_val_rmse, "seconds": result.seconds,
            "metrics": evaluate_all(linear, data)}


def train_one(cfg: RunConfig, data: Benchmark, label: str) -> dict[str, Any]:
    """Train one model for the budget; its history, best validation RMSE and test metrics."""
    first = data.train[0]
    model = cfg.build_model(first.n_u, first.n_y)

    def progress(info: EpochInfo) -> None:
        if info.best:
            print(f"[{label}] epoch {info.epoch} val {info.val_rmse:.5g} {info.seconds:.0f}s", flush=True)

    start = time.monotonic()
    result = fit(model, data.train, cfg.train, on_epoch=progress)
    return {"history": result.history, "epochs": result.epochs_run, "best_epoch": result.best_epoch,
            "best_val_rmse": result.best_val_rmse, "wall_seconds": time.monotonic() - start,
            "n_parameters": model.n_parameters, "metrics": evaluate_all(model.cpu(), data)}


def val_at(run: dict[str, Any], seconds: float) -> float:
    """Best validation RMSE reached within ``seconds`` of training (inf before the first epoch ends)."""
    values = [row["val_rmse"] for row in run["history"] if row["seconds"] <= seconds]
    return min(values) if values else float("inf")


def time_to_beat(run: dict[str, Any], target: float, offset: float) -> float | None:
    """First time (s, with ``offset``) at which the validation RMSE is below ``target``; None if never."""
    return next((row["seconds"] + offset for row in run["history"] if row["val_rmse"] < target), None)


def summarize(result: dict[str, Any], budget: float) -> None:
    """Add per-run and per-(benchmark, init) summary numbers to ``result`` (in place)."""
    for bench in result["benchmarks"].values():
        linear = bench["linear"]
        for init, runs in bench["runs"].items():
            offset = linear["seconds"] if init == "linear" else 0.0
            for run in runs:
                run["offset_seconds"] = offset
                run["val_at"] = {str(f): val_at(run, f * budget) for f in CHECKPOINTS}
                run["seconds_to_beat_linear"] = time_to_beat(run, linear["val_rmse"], offset)
            best = np.array([r["best_val_rmse"] for r in runs])
            bench.setdefault("summary", {})[init] = {
                "best_val_rmse_mean": float(best.mean()), "best_val_rmse_std": float(best.std()),
                "test_rmse_mean": {t: float(np.mean([r["metrics"][t]["rmse"] for r in runs]))
                                   for t in runs[0]["metrics"]},
            }


def markdown(result: dict[str, Any]) -> str:
    """The results table: one row per run, the mean per initialisation, the linear reference."""
    settings = result["settings"]
    lines = ["# Initialisation study: random vs linear (best linear model) initialisation", "",
             f"Small models (lru, gelu, d_model {settings['d_model']}, d_state {settings['d_state']}, "
             f"{settings['n_layers']} blocks), {settings['minutes']} min of training per run, seeds "
             f"{settings['seeds']}; machine: {result['machine']['processor']}, {result['machine']['torch_threads']} "
             f"torch threads, device {settings['device']}; commit {result['commit']}.", "",
             "*val @f*: best validation RMSE (held-out tail of the training record) within the fraction f of the "
             "training budget. *beat linear*: seconds until the validation RMSE is below the linear model's, "
             "counting the linear identification for the linear init. Test RMSE: the best validation epoch, "
             "official protocol.", ""]
    for name, bench in result["benchmarks"].items():
        tests, linear, y_unit = list(bench["linear"]["metrics"]), bench["linear"], bench["y_unit"]
        head = ["init", "seed", "epochs", *[f"val @{f:g} [{y_unit}]" for f in CHECKPOINTS], "beat linear [s]",
                *[f"{t} RMSE [{bench['unit']}]" for t in tests]]
        lines += [f"## {name}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        rows = []
        for init, runs in bench["runs"].items():
            for run in runs:
                beat = run["seconds_to_beat_linear"]
                rows.append([init, str(run["seed"]), str(run["epochs"]),
                             *[f"{run['val_at'][str(f)]:.4g}" for f in CHECKPOINTS],
                             "never" if beat is None else f"{beat:.0f}",
                             *[f"{run['metrics'][t]['rmse']:.4g}" for t in tests]])
            s = bench["summary"][init]
            rows.append([init, "mean", "", "", "", f"{s['best_val_rmse_mean']:.4g} ± {s['best_val_rmse_std']:.2g}",
                         "", *[f"{s['test_rmse_mean'][t]:.4g}" for t in tests]])
        rows.append([f"linear ({linear['model']})", "", "", "", "", f"{linear['val_rmse']:.4g}",
                     f"({linear['seconds']:.0f} to identify)", *[f"{linear['metrics'][t]['rmse']:.4g}" for t in tests]])
        lines += ["| " + " | ".join(row) + " |" for row in rows] + [""]
    return "\n".join(lines)


def figure(result: dict[str, Any]) -> Figure:
    """Validation RMSE against time, one panel per benchmark; the linear model as a dashed line."""
    benches = result["benchmarks"]
    fig = Figure(figsize=(6 * len(benches), 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    axes = np.atleast_1d(fig.subplots(1, len(benches)))
    for ax, (name, bench) in zip(axes, benches.items(), strict=True):
        for color, (init, runs) in zip(("C0", "C1"), bench["runs"].items(), strict=False):
            for style, run in zip(("-", "--", ":", "-."), runs, strict=False):
                t = [row["seconds"] + run["offset_seconds"] for row in run["history"]]
                ax.semilogy(t, [row["val_rmse"] for row in run["history"]], style, color=color,
                            label=f"{init} init, seed {run['seed']}")
        ax.axhline(bench["linear"]["val_rmse"], color="black", ls="--", lw=0.8, label="linear model")
        ax.set(title=name, xlabel="training time [s]", ylabel=f"validation RMSE [{bench['y_unit'] or '-'}]")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    return fig


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="training budget per run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--benchmarks", nargs="+", default=list(BENCHMARKS), choices=BENCHMARKS)
    parser.add_argument("--d-model", type=int, default=16)
    parser.add_argument("--d-state", type=int, default=16)
    parser.add_argument("--n-layers", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result: dict[str, Any] = {"command": " ".join(sys.argv), "machine": machine(), "commit": git_commit(),
                              "settings": {k: v for k, v in vars(args).items() if k != "out"}, "benchmarks": {}}
    for name in args.benchmarks:
        data = study_config(name, args, args.seeds[0], "random").data.load()
        bench = result["benchmarks"][name] = {
            "unit": data.unit, "y_unit": data.train[0].y_unit,
            "linear": linear_reference(study_config(name, args, args.seeds[0], "linear"), data),
            "runs": {init: [] for init in INITS},
        }
        for init in INITS:
            for seed in args.seeds:
                run = train_one(study_config(name, args, seed, init), data, f"{name} {init} seed {seed}")
                bench["runs"][init].append({"seed": seed, **run})
    summarize(result, args.minutes * 60)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "results.md").write_text(markdown(result))
    figure(result).savefig(args.out / "validation_curves.png", dpi=120)
    print(markdown(result))


if __name__ == "__main__":
    main()
