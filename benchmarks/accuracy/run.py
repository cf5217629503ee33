"""Accuracy benchmark: train on a benchmark's official training data, evaluate on every official test set.

One command per benchmark (configuration in ``configs/<name>.toml``)::

    python benchmarks/accuracy/run.py silverbox                      # headline configuration, seed 0
    python benchmarks/accuracy/run.py silverbox-paper-lru --seeds 0 1 2
    python benchmarks/accuracy/run.py silverbox --seeds 0 1 --workers 2 --threads 1   # two seeds at once, 2 cores
    python benchmarks/accuracy/run.py silverbox --seeds 0 1 2 3 --storage postgresql://me@db:5432/dw --study sb
                                      # the same command on several machines: each trains the seeds left
    python benchmarks/accuracy/run.py silverbox --seeds 1 --add --threads 1        # add seed 1 to the result
    python benchmarks/accuracy/run.py silverbox --rescore     # no training: headline and tables from the runs

The seeds are the trials of an Optuna study (``deepwiener.tune``): each seed is queued as a trial, and every
process that joins the study (``--workers`` on this machine, or the same command with the same ``--storage`` and
``--study`` on others) trains the seeds left; a seed whose process died runs again. The default storage is a journal
file in ``benchmarks/results/<name>/runs`` and a new study per command; with several machines,
``benchmarks/results/<name>/runs`` must be a shared folder (or copy the runs over and ``--rescore``).

For each seed it trains through the same code path as ``deepwiener train`` (a run directory under
``benchmarks/results/<name>/runs/seed<k>``, not committed), evaluates on every official test set with the
official initialisation window, fits a linear baseline (N4SID, order chosen on the held-out validation tail)
evaluated the same way, and writes ``benchmarks/results/<name>/results.json`` and ``results.md``.

The headline model, saved as ``benchmarks/results/<name>/best.dw``, is chosen on *validation* error alone:
the seed with the lowest one, or, with two seeds or more, the ensemble of all seeds (``deepwiener.Ensemble``,
the average of their simulations) when its validation error on the same held-out tails is lower still. Test
data never chooses a model, a checkpoint or a hyperparameter.

Two protocols are reported side by side: the *zero state* (simulate every record from the zero state; the init
window washes the transient out) and the *estimated state* (``x0="fit"``: the state that best explains the init
window's measured outputs, ``deepwiener.models.initial_state``). The headline is chosen on validation under each
protocol separately (the validation tails then start from the state estimated on the ``init_window`` samples
before them); when the two choices differ, the estimated-state one is saved as ``best-estimated.dw``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch

from deepwiener.config import RunConfig, resolve
from deepwiener.data import Benchmark, output_increments, split_validation
from deepwiener.evaluation import Simulator, evaluate_all
from deepwiener.identification import best_linear
from deepwiener.io import load, save
from deepwiener.models import Ensemble, LinearModel
from deepwiener.runs import RunDir, describe, train_run
from deepwiener.training import split_training, validation_rmse
from deepwiener.tune import open_storage, open_study, start_workers, work

ESTIMATED = "fit"
"""The initial-state method of the estimated-state protocol."""
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
RESULTS = HERE.parent / "results"

# Published references (from shared/data/README.md): RMSE in the benchmark's unit, per test set.
REFERENCES: dict[str, dict[str, dict[str, float]]] = {
    "silverbox": {
        "multisine": {"record": 0.30, "SUBNET": 0.36, "linear (published)": 6.96},
        "arrow_full": {"record": 0.26, "SUBNET": 1.4, "linear (published)": 14.4},
        "arrow_no_extrapolation": {"record": 0.26, "SUBNET": 0.32, "linear (published)": 6.58},
    },
    "wiener_hammerstein": {"test": {"record": 0.241, "linear (published)": 43.4}},
    "cascaded_tanks": {"test": {"record (black-box)": 0.306, "linear (published)": 0.588}},
    "emps": {"test": {"record": 2.64, "linear (published)": 5.53}},
}


# A second unit in the tables where the literature reports a benchmark in another unit than the registry's:
# benchmark -> (unit, factor from the registry's unit). Bouc-Wen's data and registry unit is the metre; its
# published results are RMSE in 1e-5 m.
ALSO_IN: dict[str, tuple[str, float]] = {"bouc_wen": ("1e-5 m", 1e5)}


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version()}


def git_commit(root: Path = ROOT) -> str:
    """The short commit of ``root``, with "+dirty" when code differs from it.

    Results being rewritten (``benchmarks/results``) and configurations (``benchmarks/accuracy/configs``, whose
    content each result stores in full) do not make the code dirty.
    """
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=root)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", ".", ":!benchmarks/results",
                                ":!benchmarks/accuracy/configs"], capture_output=True, text=True, cwd=root)
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except OSError:
        return "unknown"


def linear_baseline(data: Benchmark, val_fraction: float, integrator: bool) -> dict[str, Any]:
    """N4SID on the training part, order chosen on the validation tail, evaluated like the deep model.

    With ``integrator`` (the deep model's ``ModelConfig.integrator``) the linear model is identified on the
    output's increments and summed, like the deep model.
    """
    parts = [split_validation(rec, val_fraction) for rec in data.train]
    if integrator:
        parts = [(output_increments(fit_part), output_increments(val_part)) for fit_part, val_part in parts]
    model, val_rmse = best_linear([p[0] for p in parts], parts[0][1], orders=(2, 4, 6, 8, 10),
                                  n_skip=data.init_window)
    name = f"N4SID order {model.n_states}" + (" of the increments, summed" if integrator else "")
    return {"model": name, "val_rmse_by_order": {str(k): v for k, v in val_rmse.items()},
            "metrics": evaluate_all(LinearModel.from_state_space(model, integrator=integrator), data)}


def train_seed(name: str, config_file: Path, seed: int, max_minutes: float | None, out: Path) -> dict[str, Any]:
    """Train one seed through the CLI code path into ``out/runs/seed<k>``; returns its record for results.json."""
    overrides: dict[str, dict[str, Any]] = {"model": {"seed": seed}, "train": {"seed": seed}}
    if max_minutes is not None:
        overrides["train"]["max_minutes"] = max_minutes
    cfg = resolve(config_file, overrides)
    data = cfg.data.load()
    run_path = out / "runs" / f"seed{seed}"

    def progress(info: Any) -> None:
        if info.epoch % 25 == 0 or info.best:
            print(f"[{name} seed {seed}] epoch {info.epoch} loss {info.train_loss:.3g} "
                  f"val {info.val_rmse:.5g} lr {info.lr:.2g} {info.seconds:.0f}s", flush=True)

    start = time.monotonic()
    with RunDir.create(run_path, config=cfg, force=True) as run:
        outcome = train_run(run, cfg, data, on_epoch=progress)
    wall = time.monotonic() - start
    return {"seed": seed, "run": os.path.relpath(run_path, ROOT), "config": cfg.to_tables(),
            "n_parameters": outcome.model.n_parameters, "wall_seconds": round(wall, 1),
            "epochs": outcome.result.epochs_run, "best_epoch": outcome.result.best_epoch,
            "stopped": outcome.result.stopped, "best_val_rmse": outcome.result.best_val_rmse,
            "metrics": outcome.metrics, **estimated_state(outcome.model, cfg, data)}


def estimated_state(model: Simulator, cfg: RunConfig, data: Benchmark) -> dict[str, Any]:
    """The estimated-state protocol (module docstring): ``{"val_rmse_estimated", "metrics_estimated"}``."""
    _, val_records = split_training(list(data.train), None, cfg.train)
    return {"val_rmse_estimated": validation_rmse(model, val_records, x0=ESTIMATED, x0_window=data.init_window),
            "metrics_estimated": evaluate_all(model, data, x0=ESTIMATED)}


def merge_runs(results_file: Path, runs: list[dict[str, Any]], command: str) -> tuple[list[dict[str, Any]], str]:
    """``runs`` plus the runs of other seeds in an earlier ``results_file`` (each keeps its commit), by seed,
    and the commands of both."""
    if not results_file.exists():
        sys.exit(f"no earlier result {results_file} to add to or rescore")
    earlier = json.loads(results_file.read_text())
    new_seeds = {r["seed"] for r in runs}
    kept = [{**r, "commit": r.get("commit", earlier["commit"])} for r in earlier["runs"] if r["seed"] not in new_seeds]
    return sorted(kept + runs, key=lambda r: r["seed"]), f"{earlier['command']} && {command}"


def headline(runs: list[dict[str, Any]], cfg: RunConfig, data: Benchmark, out: Path,
             ensemble_candidate: bool = True) -> dict[str, Any]:
    """Choose the headline model on validation error, under each protocol, and save it as ``out/best.dw`` (and
    ``out/best-estimated.dw`` when the estimated-state protocol chooses another).

    The seed with the lowest validation RMSE, or the ensemble of all seeds when its validation RMSE (the same
    held-out tails, simulated the same way) is lower; with ``ensemble_candidate`` False (``--no-ensemble``, a rule
    that compares single models) the ensemble is scored and reported but never chosen. Returns ``{"model",
    "val_rmse"}``, ``"estimated"`` (the same choice under the estimated-state protocol) and, with two seeds or more,
    ``"ensemble"``: its seeds, validation RMSE and test metrics under both protocols, and its parameter count.
    """
    paths = [ROOT / r["run"] / "model.dw" for r in runs]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        sys.exit(f"model files missing (runs are not committed): {missing}; train those seeds again")
    candidates = {f"seed {r['seed']}": (r["best_val_rmse"], r.get("val_rmse_estimated", math.inf), path)
                  for r, path in zip(runs, paths, strict=True)}  # runs of older versions have no estimated state
    choice: dict[str, Any] = {"ensemble_candidate": ensemble_candidate}
    if len(runs) > 1:
        ensemble = Ensemble([load(p) for p in paths])
        _, val_records = split_training(list(data.train), None, cfg.train)
        choice["ensemble"] = {"seeds": [r["seed"] for r in runs], "val_rmse": validation_rmse(ensemble, val_records),
                              "n_parameters": ensemble.n_parameters, "metrics": evaluate_all(ensemble, data),
                              **estimated_state(ensemble, cfg, data)}
        extra = {**describe(data), "members": [str(p.relative_to(ROOT)) for p in paths]}
        if ensemble_candidate:
            candidates["ensemble"] = (choice["ensemble"]["val_rmse"], choice["ensemble"]["val_rmse_estimated"],
                                      save(ensemble, out / "ensemble.dw", extra=extra))
    zero = min(candidates, key=lambda name: candidates[name][0])
    choice.update(model=zero, val_rmse=candidates[zero][0])
    shutil.copyfile(candidates[zero][2], out / "best.dw")
    (out / "best-estimated.dw").unlink(missing_ok=True)
    if all("val_rmse_estimated" in r for r in runs):
        estimated = min(candidates, key=lambda name: candidates[name][1])
        choice["estimated"] = {"model": estimated, "val_rmse": candidates[estimated][1]}
        if estimated != zero:
            shutil.copyfile(candidates[estimated][2], out / "best-estimated.dw")
    (out / "ensemble.dw").unlink(missing_ok=True)
    return choice


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean, std, min and max of each test set's RMSE over the seeds."""
    out = {}
    for test in runs[0]["metrics"]:
        values = np.array([r["metrics"][test]["rmse"] for r in runs], dtype=float)
        out[test] = {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                     "min": float(values.min()), "max": float(values.max())}
    return out


def rmse_columns(tests: list[str], unit: str, benchmark: str) -> list[tuple[str, str, float]]:
    """The RMSE columns of the tables: ``(test set, header, factor from the benchmark's unit)``, every test set in
    the benchmark's unit, then again in its ``ALSO_IN`` unit where it has one."""
    def header(test: str, in_unit: str) -> str:
        return f"{test} RMSE [{in_unit}]" if in_unit else f"{test} RMSE"

    columns = [(t, header(t, unit), 1.0) for t in tests]
    if benchmark in ALSO_IN:
        other, factor = ALSO_IN[benchmark]
        columns += [(t, header(t, other), factor) for t in tests]
    return columns


def markdown(result: dict[str, Any]) -> str:
    """The results table: every seed, the spread, the linear baseline and the published references."""
    runs, unit = result["runs"], result["unit"]
    tests = list(runs[0]["metrics"])
    refs = REFERENCES.get(result["benchmark"], {})
    columns = rmse_columns(tests, unit, result["benchmark"])

    def rmse(metrics: dict[str, Any]) -> list[str]:
        return [f"{metrics[t]['rmse'] * k:.4g}" for t, _, k in columns]

    head = ["model", "seed", *[h for _, h, _ in columns], "FIT [%] (" + tests[0] + ")", "params",
            "train time [min]"]
    lines = [f"## {result['name']}", "", f"Machine: {result['machine']['processor']}, "
             f"{result['machine']['torch_threads']} torch threads; commit {result['commit']}.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    model = runs[0]["config"]["model"]
    layer = model.get("layer", model["kind"])  # an LRU/S5/... deep Wiener model, or another kind ("lfr")
    for r in runs:
        cells = [f"deepwiener {layer}", str(r["seed"]), *rmse(r["metrics"]),
                 f"{r['metrics'][tests[0]]['fit']:.2f}", str(r["n_parameters"]), f"{r['wall_seconds'] / 60:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    if len(runs) > 1:
        s = result["summary"]
        cells = [f"deepwiener {layer}", "mean ± std",
                 *[f"{s[t]['mean'] * k:.4g} ± {s[t]['std'] * k:.2g}" for t, _, k in columns],
                 "", "", ""]
        lines.append("| " + " | ".join(cells) + " |")
    ens = result["headline"].get("ensemble")
    if ens:
        cells = [f"deepwiener {layer}", "ensemble of " + ", ".join(map(str, ens["seeds"])),
                 *rmse(ens["metrics"]), f"{ens['metrics'][tests[0]]['fit']:.2f}",
                 str(ens["n_parameters"]), ""]
        lines.append("| " + " | ".join(cells) + " |")
    lin = result["linear"]
    cells = [f"linear ({lin['model']}, ours)", "", *rmse(lin["metrics"]),
             f"{lin['metrics'][tests[0]]['fit']:.2f}", "", ""]
    lines.append("| " + " | ".join(cells) + " |")
    for ref in sorted({k for t in tests for k in refs.get(t, {})}):
        cells = [f"{ref} (published)" if "published" not in ref else ref, "",
                 *[reference_cell(refs.get(t, {}).get(ref), k) for t, _, k in columns], "", "", ""]
        lines.append("| " + " | ".join(cells) + " |")
    if "metrics_estimated" in runs[0]:
        lines += ["", "Estimated state (x0 = fit on the init window):", "",
                  "| model | seed | " + " | ".join(h for _, h, _ in columns) + " | validation |",
                  "|" + "---|" * (len(columns) + 3)]
        rows = [(str(r["seed"]), r["metrics_estimated"], r["val_rmse_estimated"]) for r in runs]
        if ens:
            rows.append(("ensemble", ens["metrics_estimated"], ens["val_rmse_estimated"]))
        for label, metrics, val in rows:
            lines.append(f"| deepwiener {layer} | {label} | " + " | ".join(rmse(metrics)) + f" | {val:.5g} |")
    head = result["headline"]
    lines += ["", f"Best seed by validation RMSE: {result['best_seed']}."]
    if ens:
        in_unit = f" [{result['val_unit']}]" if result["val_unit"] else ""
        lines.append(f"Validation RMSE{in_unit}: best seed {min(r['best_val_rmse'] for r in runs):.5g}, "
                     f"ensemble {ens['val_rmse']:.5g}.")
    among = "" if head.get("ensemble_candidate", True) else ", among the seeds (--no-ensemble)"
    lines += [f"Headline (lowest validation RMSE{among}, saved as best.dw): {head['model']}."]
    if "estimated" in head:
        saved = "best-estimated.dw" if head["estimated"]["model"] != head["model"] else "best.dw"
        lines.append(f"Headline under the estimated-state protocol (lowest validation RMSE with x0 = fit): "
                     f"{head['estimated']['model']} ({saved}).")
    lines.append("")
    return "\n".join(lines)


def reference_cell(value: float | None, factor: float) -> str:
    """A published reference in a table column: as written for the benchmark's unit, else scaled to the column's."""
    if value is None:
        return ""
    return str(value) if factor == 1.0 else f"{value * factor:.4g}"


def set_threads(threads: int | None) -> None:
    """Use ``threads`` torch threads in this process (None: torch's choice)."""
    if threads:
        torch.set_num_threads(threads)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="configuration name: configs/<name>.toml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--max-minutes", type=float, default=None, help="override the training budget")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default: benchmarks/results/NAME)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per seed (default: torch's choice, "
                        "or this machine's cores shared among the workers)")
    parser.add_argument("--workers", type=int, default=1, help="seeds trained at once here, each in its own process")
    parser.add_argument("--storage", default=None, help="the study's storage: sqlite:///FILE or "
                        "postgresql://USER@HOST:PORT/DB (default: a journal file in the results' runs folder)")
    parser.add_argument("--study", default=None, help="the study's name (default: NAME and the time: a new study); "
                        "give it to resume, or to share the seeds with other machines")
    parser.add_argument("--add", action="store_true",
                        help="keep the runs of other seeds already in results.json (add seeds to a result)")
    parser.add_argument("--rescore", action="store_true",
                        help="train nothing: recompute the headline, the linear baseline and the tables from the "
                             "runs in results.json (their run directories must be present)")
    parser.add_argument("--no-ensemble", action="store_true",
                        help="the headline is the best seed by validation (the ensemble is scored, never chosen): "
                             "for rules that compare single models")
    args = parser.parse_args(argv)
    args.out = (args.out or RESULTS / args.name).absolute()
    if args.workers < 1:
        sys.exit(f"--workers must be >= 1, got {args.workers}")
    if args.rescore and args.add:
        sys.exit("--rescore trains nothing, so --add has no seeds to add; give one of them")
    if args.workers > 1 and not args.threads:
        args.threads = max(1, (os.cpu_count() or 1) // args.workers)  # each worker's share of the cores
    set_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    config_file = HERE / "configs" / f"{args.name}.toml"
    if not config_file.exists():
        names = sorted(p.stem for p in (HERE / "configs").glob("*.toml"))
        sys.exit(f"no configuration {config_file}; available: {names}")
    commit = git_commit()  # the code that trains, not whatever HEAD is when training ends
    command, out = " ".join(sys.argv), args.out
    args.study = args.study or f"{args.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if args.rescore:
        runs, command = merge_runs(out / "results.json", [], command)  # the earlier runs, none replaced
    else:
        runs = train_seeds(args, config_file)
        for run in runs:
            run["commit"] = commit
        if args.add:
            runs, command = merge_runs(out / "results.json", runs, command)
    cfg = resolve(config_file)
    data = cfg.data.load()
    out.mkdir(parents=True, exist_ok=True)
    result = {"name": args.name, "benchmark": data.name, "unit": data.unit, "val_unit": data.train[0].y_unit,
              "command": command, "machine": machine(), "commit": commit, "runs": runs, "summary": summarize(runs),
              **({"also_in": dict(zip(("unit", "factor"), ALSO_IN[data.name], strict=True))} if data.name in ALSO_IN
                 else {}),
              "best_seed": min(runs, key=lambda r: r["best_val_rmse"])["seed"],
              "headline": headline(runs, cfg, data, out, ensemble_candidate=not args.no_ensemble),
              "linear": linear_baseline(data, cfg.train.val_fraction, bool(cfg.model.get("integrator")))}
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "results.md").write_text(markdown(result))
    print(markdown(result))


def train_seeds(args: argparse.Namespace, config_file: Path) -> list[dict[str, Any]]:
    """Train ``args.seeds`` as the trials of a study (module docstring); their records for results.json."""
    study = seed_study(args, config_file)
    for seed in args.seeds:
        study.enqueue_trial({"seed": seed}, skip_if_exists=True)
    if args.workers == 1:
        run_seeds(args, config_file)
    else:
        start_workers(args.workers, run_seeds, (args, config_file), threads=args.threads)
    records = {}
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        records[trial.params["seed"]] = trial.user_attrs["record"]  # the latest run of each seed
    missing = [seed for seed in args.seeds if seed not in records]
    if missing:
        sys.exit(f"seeds {missing} did not train (see their errors above)")
    return [records[seed] for seed in args.seeds]


def seed_study(args: argparse.Namespace, config_file: Path) -> optuna.Study:
    """The study whose trials are the seeds: bound to the configuration and the training budget."""
    storage = open_storage(args.storage, args.out / "runs")
    identity = {"space": json.dumps({"config": config_file.read_text(), "max_minutes": args.max_minutes})}
    return open_study(storage, args.study, identity)


def run_seeds(args: argparse.Namespace, config_file: Path) -> None:
    """Train the seeds of the study that no process has trained (a worker: one process of ``--workers``, or of
    another machine)."""
    set_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = seed_study(args, config_file)

    queued = {t.params.get("seed", t.system_attrs.get("fixed_params", {}).get("seed"))
              for t in study.get_trials(deepcopy=False)}

    def objective(trial: optuna.Trial) -> float:
        seed = trial.suggest_int("seed", 0, 2**31 - 1)  # a queued trial's own seed
        if seed not in queued:
            raise optuna.TrialPruned("no seed left to train")
        record = train_seed(args.name, config_file, seed, args.max_minutes, args.out)
        record["host"], record["pid"] = platform.node(), os.getpid()
        trial.set_user_attr("record", record)
        return record["best_val_rmse"]

    work(study, objective, len(queued), poll=2.0)


if __name__ == "__main__":
    main()
