"""Extrapolation study: how does each static map of a deep Wiener model extrapolate beyond the training amplitudes?

The Silverbox arrow test records grow past the amplitudes of the training multisines, and a model's error there is
set by how its static maps continue outside the range they were fitted on. This study measures that on a simulated
system with the same structure as Silverbox, so that no benchmark test data takes part in choosing a map.

True system: a hardening Duffing oscillator (a mass, a damper and a cubic spring, driven by a force)::

    y'' + 2 zeta w0 y' + w0^2 (y + y^3 / (2 Y_KNEE^2)) = w0^2 u,    w0 = 2 pi F0

simulated with a classical Runge-Kutta scheme (``SUBSTEPS`` steps per sample, input held between samples) and
sampled at Silverbox's rate. At |y| = Y_KNEE the cubic force is half the linear one. The constants give
Silverbox-like records: output rms about 63 mV, peaks about 0.23 V, and a best linear model about 15 % off
(normalised RMSE; about 13 % on Silverbox).

Records (all from rest; the first period of each multisine is dropped, so its records are steady state):
- training: ``N_TRAIN`` random-phase multisines (band 0 to ``BAND_HZ``, rms ``U_RMS``), one period each;
- validation: one more realisation (the choice of epoch), test "multisine": another one;
- test "arrow_full": low-pass Gaussian noise (the same band) whose amplitude grows linearly from zero to
  ``ARROW_END`` times the training rms; "arrow_in_range": the arrow up to the first sample whose |y| exceeds
  the largest training |y| (Silverbox's "no extrapolation" part).
Test errors count from ``INIT_WINDOW`` on, as on Silverbox.

Models, one per name and seed, each trained for the same wall-clock budget (``--minutes``):
- a map name (``MAPS``): the Silverbox deep Wiener configuration (``accuracy/configs/silverbox-wiener.toml``:
  layer options, window, washout, schedule, engine, linear initialisation) made small (``--d-model``, ``--d-state``,
  ``--n-layers``), with that static map;
- "lfr": the nonlinear feedback model of ``accuracy/configs/silverbox.toml`` as it is (``deepwiener.lfr``);
- what the literature suggests to make the deep Wiener stack extrapolate (issue 21, item 3), each on the "mlp"
  model above, the map with the lowest arrow errors in the first study:
  - "mlp-varied": amplitude-varied training records (experiment design): the same ``N_TRAIN`` multisine
    realisations, the i-th scaled to ``VARIED_LEVELS[i]`` times ``U_RMS`` (0.4 to 1), so the model sees how the
    dynamics change with amplitude; the validation and test records, and the training range that defines
    "arrow_in_range", are the constant-level study's;
  - "mlp-slope-<weight>": the maps' slope penalty (``TrainConfig.map_slope``, :mod:`deepwiener.map_slope`) at
    ``SLOPE_WEIGHTS`` with reach ``SLOPE_REACH``; validation picks the weight;
  - "feedback": feedback inside each block (:class:`FeedbackStack`): every block is a nonlinear feedback loop
    (an LFR block, the map's output fed back into the block's state) with an identity skip, started as the best
    linear model through the first block.
The linear reference is N4SID with the order chosen on the validation record.

With ``--data silverbox`` the same models (at the Silverbox configurations' own sizes unless ``--d-model`` and
the like are given) train on the official Silverbox training record, validation on its held-out tail as in the
accuracy harness, and are scored on the official tests (the multisine, the arrow in range "arrow_no_extrapolation"
and the whole arrow "arrow_full"); "mlp-varied" needs records the benchmark does not have (its multisines are all
at one level) and is refused there. Results go to ``results/extrapolation_study-silverbox``.

One command::

    python benchmarks/extrapolation_study.py --threads 1 --jobs 2   # 6 models x 2 seeds x 4 minutes, 2 at once (25 min)
    python benchmarks/extrapolation_study.py --models lfr --add --threads 1 --jobs 2   # add a model to the results
    python benchmarks/extrapolation_study.py --minutes 0.05 --seeds 0 --models gelu   # a smoke test
    python benchmarks/extrapolation_study.py --models mlp mlp-varied mlp-slope-1e-06 mlp-slope-1e-05 \
        mlp-slope-0.0001 feedback lfr --add --threads 1 --jobs 2   # issue 21, item 3 (28 min)
    python benchmarks/extrapolation_study.py --data silverbox --minutes 25 --seeds 0 --models mlp mlp-slope-1e-06 \
        feedback --threads 1 --jobs 3   # the same on Silverbox (25 min)

Writes ``results/extrapolation_study/results.json`` and ``results.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np
import scipy.signal
from accuracy.run import git_commit, linear_baseline, machine, set_threads
from feedback_stack import FeedbackStack

from deepwiener.config import RunConfig, resolve
from deepwiener.data import Benchmark, IOData
from deepwiener.demo import multisine
from deepwiener.evaluation import evaluate_all
from deepwiener.identification import best_linear
from deepwiener.models import Model
from deepwiener.training import fit

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "extrapolation_study"
DATA = ("duffing", "silverbox")
"""The study's data: the simulated oscillator, or the Silverbox benchmark."""
STUDY_SIZES = {"d_model": 16, "d_state": 16, "n_layers": 3}
"""The deep Wiener model's size on the simulated data (on Silverbox: the configuration's own)."""
MAPS = ("gelu", "glu", "mlp", "linear_tanh", "poly")
"""Maps compared: those that can start from the best linear model, as the headline does (elu and tanh cannot)."""
LFR = "lfr"
"""The nonlinear feedback model, as configured for Silverbox."""
VARIED = "mlp-varied"
"""The mlp model trained on amplitude-varied records."""
VARIED_LEVELS = np.linspace(0.4, 1.0, 6)
"""Input rms of each amplitude-varied training record, as a multiple of ``U_RMS``."""
SLOPE_WEIGHTS = (1e-6, 1e-5, 1e-4)
"""Weights of the maps' slope penalty tried (the training NMSE of the mlp model is about 2e-5)."""
SLOPE_REACH = 3.0
"""Reach of the slope penalty: 3 times the maps' inputs in a batch (the arrow ends at 1.6 times the training rms)."""
SLOPE = {f"mlp-slope-{weight:g}": weight for weight in SLOPE_WEIGHTS}
FEEDBACK = "feedback"
"""The stack of feedback blocks."""
MODELS = (*MAPS, LFR, VARIED, *SLOPE, FEEDBACK)

DT = 1 / 610.35
"""Sampling time (Silverbox's), s."""
F0, ZETA, Y_KNEE = 60.0, 0.05, 0.35
"""Natural frequency (Hz), damping ratio and the amplitude where the cubic force is half the linear one."""
SUBSTEPS = 8
"""Runge-Kutta steps per sample."""
BAND_HZ = 200.0
"""Upper edge of the excited band, Hz."""
U_RMS = 0.03
"""Input rms of the training multisines."""
PERIOD, N_TRAIN = 8192, 6
"""Multisine period in samples and number of training realisations."""
N_ARROW, ARROW_END = 30000, 1.6
"""Arrow length in samples and its final input amplitude, as a multiple of ``U_RMS``."""
INIT_WINDOW = 50
"""Samples at the start of each test record not counted in the errors."""
UNITS: dict[str, Any] = {"y_unit": "V", "report_unit": "mV", "report_scale": 1000.0}
"""Units of every record: outputs in V, errors reported in mV (as on Silverbox)."""


def duffing(u: np.ndarray, dt: float = DT, substeps: int = SUBSTEPS) -> np.ndarray:
    """Simulate the hardening oscillator from rest.

    Args:
        u: (T,) input force, held constant over each sample.
        dt: sampling time, s.
        substeps: Runge-Kutta steps per sample.

    Returns:
        (T,) output y at the sampling instants, y[k] = y(k dt) (y[0] = 0: no direct feed-through).
    """
    w0 = 2 * np.pi * F0
    cubic = 1 / (2 * Y_KNEE**2)
    h = dt / substeps

    def rate(y: float, v: float, force: float) -> tuple[float, float]:
        return v, w0 * w0 * (force - y - cubic * y**3) - 2 * ZETA * w0 * v

    out = np.empty(len(u))
    y = v = 0.0
    for k, force in enumerate(u.tolist()):
        out[k] = y
        for _ in range(substeps):
            k1 = rate(y, v, force)
            k2 = rate(y + h / 2 * k1[0], v + h / 2 * k1[1], force)
            k3 = rate(y + h / 2 * k2[0], v + h / 2 * k2[1], force)
            k4 = rate(y + h * k3[0], v + h * k3[1], force)
            y += h / 6 * (k1[0] + 2 * k2[0] + 2 * k3[0] + k4[0])
            v += h / 6 * (k1[1] + 2 * k2[1] + 2 * k3[1] + k4[1])
    return out


def steady_multisine(rng: np.random.Generator, name: str, levels: tuple[float, ...] = (1.0,)) -> list[IOData]:
    """One period of a random-phase multisine (rms ``U_RMS`` times each level) and the oscillator's steady-state
    responses: one record per level, one realisation of the phases."""
    u = U_RMS * multisine(PERIOD, rng, band=BAND_HZ * 2 * DT)
    return [IOData(u=level * u, y=duffing(np.tile(level * u, 2))[PERIOD:], dt=DT, name=name, **UNITS)
            for level in levels]


def arrow(rng: np.random.Generator) -> IOData:
    """Low-pass Gaussian noise with an amplitude growing linearly to ``ARROW_END * U_RMS``, and the response."""
    b, a = scipy.signal.butter(6, BAND_HZ * 2 * DT)
    noise = scipy.signal.lfilter(b, a, rng.standard_normal(N_ARROW))
    u = ARROW_END * U_RMS * np.linspace(0.0, 1.0, N_ARROW) * noise / noise.std()
    return IOData(u=u, y=duffing(u), dt=DT, name="arrow_full", **UNITS)


def largest_output(records: tuple[IOData, ...]) -> float:
    """The largest |y| over the records, in V."""
    return float(max(np.abs(rec.y).max() for rec in records))


def make_benchmark(seed: int = 0) -> tuple[Benchmark, IOData, tuple[IOData, ...]]:
    """The study's data: ``(benchmark with train and tests, validation record, amplitude-varied training records)``;
    the i-th varied record is the i-th training record's multisine at level ``VARIED_LEVELS[i]``."""
    rng = np.random.default_rng(seed)
    pairs = [steady_multisine(rng, f"train {i}", (1.0, VARIED_LEVELS[i])) for i in range(N_TRAIN)]
    train, varied = tuple(p[0] for p in pairs), tuple(p[1] for p in pairs)
    val, = steady_multisine(rng, "validation")
    test, = steady_multisine(rng, "multisine")
    full = arrow(rng)
    y_max = largest_output(train)
    beyond = int(np.argmax(np.abs(full.y[:, 0]) > y_max))
    if beyond == 0:
        sys.exit("the arrow never leaves the training amplitudes: raise ARROW_END")
    in_range = IOData(u=full.u[:beyond], y=full.y[:beyond], dt=DT, name="arrow_in_range", **UNITS)
    tests = {"multisine": test, "arrow_full": full, "arrow_in_range": in_range}
    return Benchmark(name="duffing", train=train, tests=tests, init_window=INIT_WINDOW, unit="mV",
                     scale=1000.0), val, varied


def study_config(args: argparse.Namespace, name: str, seed: int) -> RunConfig:
    """The configuration of model ``name`` (module docstring) with the study's budget and the given seed."""
    train = {"max_minutes": args.minutes, "epochs": 10**6, "patience": 10**6, "seed": seed}
    if name in (LFR, FEEDBACK):
        return resolve(HERE / "accuracy" / "configs" / "silverbox.toml", {"model": {"seed": seed}, "train": train})
    if name in SLOPE:
        train.update(map_slope=SLOPE[name], map_slope_reach=SLOPE_REACH)
    sizes = {key: getattr(args, key) for key in STUDY_SIZES if getattr(args, key) is not None}
    return resolve(HERE / "accuracy" / "configs" / "silverbox-wiener.toml", {
        "model": {**sizes, "nonlinearity": name if name in MAPS else "mlp", "seed": seed}, "train": train})


def build(args: argparse.Namespace, name: str, cfg: RunConfig) -> Model:
    """The untrained model ``name`` of configuration ``cfg``."""
    if name == FEEDBACK:  # the LFR's loop size in each block
        return FeedbackStack(1, 1, width=args.feedback_width, n_blocks=args.feedback_blocks, n_x=cfg.model["n_x"],
                             n_w=cfg.model["n_w"], seed=cfg.model.get("seed", 0))
    return cfg.build_model(1, 1)


def silverbox() -> Benchmark:
    """The Silverbox benchmark (official records, from ``DEEPWIENER_DATA``)."""
    return resolve(HERE / "accuracy" / "configs" / "silverbox.toml").data.load()


def train_one(args: argparse.Namespace, data: Benchmark | None, val: IOData | None, varied: tuple[IOData, ...],
              name: str, seed: int) -> dict[str, Any]:
    """Train one model for the budget (in a worker process); its validation RMSE and test metrics. ``data`` None:
    Silverbox, loaded here (a loaded benchmark does not pickle); ``val`` None: its held-out tails validate."""
    set_threads(args.threads)
    data = data or silverbox()
    cfg = study_config(args, name, seed)
    model = build(args, name, cfg)
    start = time.monotonic()
    result = fit(model, varied if name == VARIED else data.train, cfg.train, val=None if val is None else [val])
    row = {"model": name, "seed": seed, "commit": args.commit, "epochs": result.epochs_run,
           "best_val_rmse": result.best_val_rmse, "wall_seconds": round(time.monotonic() - start, 1),
           "n_parameters": model.n_parameters, "metrics": evaluate_all(model.cpu(), data)}
    print(f"[{name} seed {seed}] val {row['best_val_rmse']:.4g} " + " ".join(
        f"{name} {m['rmse']:.4g}" for name, m in row["metrics"].items()), flush=True)
    return row


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per model: the mean and spread over seeds of the validation RMSE and of each test RMSE."""
    out: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(r["model"] for r in runs):
        rows = [r for r in runs if r["model"] == name]
        val = np.array([r["best_val_rmse"] for r in rows])
        out[name] = {"val_rmse_mean": float(val.mean()), "val_rmse_std": float(val.std()),
                     "test_rmse_mean": {t: float(np.mean([r["metrics"][t]["rmse"] for r in rows]))
                                        for t in rows[0]["metrics"]},
                     "test_rmse_std": {t: float(np.std([r["metrics"][t]["rmse"] for r in rows]))
                                       for t in rows[0]["metrics"]}}
    return out


LABELS = {LFR: "LFR (silverbox.toml)", VARIED: "deep Wiener, mlp, amplitude-varied training records",
          **{name: f"deep Wiener, mlp, slope penalty {weight:g}" for name, weight in SLOPE.items()},
          FEEDBACK: "feedback stack (LFR blocks + skip)"}
"""Table labels of the models that are not a plain map name."""


def markdown(result: dict[str, Any]) -> str:
    """The results table: per model, mean +- std over seeds (mV)."""
    tests = list(result["linear"]["metrics"])
    commits = ", ".join(f"{name} {' '.join(sorted({r['commit'] for r in result['runs'] if r['model'] == name}))}"
                        for name in result["summary"])
    simulated = result["settings"].get("data", "duffing") == "duffing"
    ranges = (f" Largest training |y| {result['y_max']:.4f} V (amplitude-varied records: "
              f"{result.get('y_max_varied', math.nan):.4f} V); the arrow leaves it at sample {result['arrow_beyond']} "
              f"of {N_ARROW}." if simulated else "")
    lines = ["## Extrapolation study (" + ("simulated hardening oscillator" if simulated else "Silverbox") + ")", "",
             f"Machine: {result['machine']['processor']}, {result['settings']['threads'] or 'default'} torch "
             f"thread(s) per run; {result['settings']['minutes']} min per run, seeds "
             f"{' '.join(map(str, result['settings']['seeds']))}; commits: {commits}.{ranges}", "",
             "| model | validation RMSE [mV] | " + " | ".join(f"{t} RMSE [mV]" for t in tests) + " |",
             "|---" * (len(tests) + 2) + "|"]
    linear = result["linear"]  # the harness's linear baseline (Silverbox) keeps every order's validation RMSE
    val_lin = 1000 * (linear["val_rmse"] if "val_rmse" in linear else min(linear["val_rmse_by_order"].values()))
    lines.append(f"| linear ({result['linear']['model']}) | {val_lin:.3g} | "
                 + " | ".join(f"{result['linear']['metrics'][t]['rmse']:.3g}" for t in tests) + " |")
    for name, s in result["summary"].items():
        cells = [f"{s['test_rmse_mean'][t]:.3g} +- {s['test_rmse_std'][t]:.2g}" for t in tests]
        label = LABELS.get(name, f"deep Wiener, {name}")
        lines.append(f"| {label} | {s['val_rmse_mean'] * 1000:.3g} +- {s['val_rmse_std'] * 1000:.2g} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=4.0, help="training budget per run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS,
                        help="static maps of the deep Wiener model, and lfr (module docstring)")
    parser.add_argument("--add", action="store_true",
                        help="keep the runs of other (model, seed) pairs already in results.json")
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the simulated records")
    parser.add_argument("--data", choices=DATA, default="duffing", help="the simulated oscillator or Silverbox")
    for key, size in STUDY_SIZES.items():
        parser.add_argument(f"--{key.replace('_', '-')}", type=int, default=None,
                            help=f"deep Wiener size (default: {size} on the simulated data, the configuration's on "
                                 "Silverbox)")
    parser.add_argument("--feedback-width", type=int, default=4, help="channels between the feedback stack's blocks")
    parser.add_argument("--feedback-blocks", type=int, default=2, help="blocks of the feedback stack")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per run (default: torch's choice)")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at once, each in its own process")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default: results/"
                        "extrapolation_study, with -silverbox for --data silverbox)")
    args = parser.parse_args(argv)
    args.commit = git_commit()
    if args.data == "duffing":
        for key, size in STUDY_SIZES.items():
            setattr(args, key, size if getattr(args, key) is None else getattr(args, key))
    elif VARIED in args.models:
        parser.error(f"{VARIED!r} needs amplitude-varied records; Silverbox's training multisines are all at one level")
    args.out = args.out or (OUT if args.data == "duffing" else OUT.with_name(f"{OUT.name}-silverbox"))
    for name in args.models:  # fail before any training, not in a worker minutes later
        cfg = study_config(args, name, args.seeds[0])
        if cfg.train.init == "linear":
            build(args, name, cfg).check_linear_start()
    previous = json.loads((args.out / "results.json").read_text()) if args.add else None
    result: dict[str, Any] = {
        "command": " ".join(sys.argv), "machine": {**machine(), "torch_threads": args.threads},
        "commit": args.commit, "settings": {k: v for k, v in vars(args).items() if k not in ("out", "commit")}}
    if args.data == "duffing":
        data, val, varied = make_benchmark(args.data_seed)
        linear, val_by_order = best_linear(list(data.train), val, orders=(2, 4, 6, 8, 10), n_skip=INIT_WINDOW)
        result.update({
            "y_max": largest_output(data.train), "y_max_varied": largest_output(varied),
            "arrow_beyond": len(data.tests["arrow_in_range"]),
            "linear": {"model": f"N4SID order {linear.n_states}", "val_rmse": val_by_order[linear.n_states],
                       "metrics": evaluate_all(linear, data)}})
    else:
        data, val, varied = None, None, ()
        result["linear"] = linear_baseline(silverbox(), study_config(args, LFR, 0).train.val_fraction,
                                           integrator=False)
    jobs = [(name, seed) for name in args.models for seed in args.seeds]
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        runs = list(pool.map(train_one, repeat(args), repeat(data), repeat(val), repeat(varied),
                             *zip(*jobs, strict=True)))
    if previous is not None:
        runs = [r for r in previous["runs"] if (r["model"], r["seed"]) not in set(jobs)] + runs
        result["command"] = f"{previous['command']} ; {result['command']}"
    result["runs"] = runs
    result["summary"] = summarize(runs)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "results.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
