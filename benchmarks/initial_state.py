"""The committed headline models under both protocols, and their k-step-ahead prediction errors.

For every benchmark headline (``benchmarks/results/<name>/best.dw``) this evaluates the same model file on the
official test records twice: from the zero state (the init window washes the transient out) and from the state
estimated on the init window (``x0="fit"``: ``deepwiener.models.initial_state``); it also times the estimation and
scores k-step-ahead predictions (windows of ``init_window + horizon`` samples moved by ``horizon``, each from the
state estimated on its own init window). Nothing here is trained or chosen: the models were chosen on validation
by ``benchmarks/accuracy/run.py``. One command::

    python benchmarks/initial_state.py --threads 1

writes ``benchmarks/results/initial_state/results.json`` and ``results.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from accuracy.run import RESULTS, git_commit, machine, set_threads

from deepwiener import evaluate, evaluate_prediction, load, load_benchmark

HERE = Path(__file__).resolve().parent

HEADLINES = {"silverbox": "silverbox", "wiener_hammerstein": "wiener_hammerstein", "cascaded_tanks": "cascaded_tanks",
             "emps": "emps"}
"""Benchmark -> the results folder of its headline."""
HORIZONS = {"silverbox": 100, "wiener_hammerstein": 100, "cascaded_tanks": 100, "emps": 500}
"""Prediction horizons (identibench's: Silverbox and Wiener-Hammerstein 100, EMPS 500, the others 100)."""


def study(benchmark: str, folder: str) -> dict[str, Any]:
    """Both protocols, the estimation's time, and the prediction errors of one headline."""
    bench = load_benchmark(benchmark)
    model = load(RESULTS / folder / "best.dw")
    rows = {}
    for name, test in bench.tests.items():
        zero = evaluate(model, test, bench.init_window)
        start = time.process_time()
        estimated = evaluate(model, test, bench.init_window, x0="fit")
        seconds = time.process_time() - start
        start = time.process_time()
        prediction = evaluate_prediction(model, test, bench.init_window, HORIZONS[benchmark], x0="fit")
        rows[name] = {"zero": zero["rmse"], "estimated": estimated["rmse"], "unit": zero["unit"],
                      "fit_cpu_seconds": round(seconds, 3), "prediction": prediction,
                      "prediction_cpu_seconds": round(time.process_time() - start, 1)}
        print(f"{benchmark} {name}: zero {zero['rmse']:.5g}, estimated {estimated['rmse']:.5g} {zero['unit']}; "
              f"prediction {prediction['rmse']:.5g} over {prediction['windows']} windows", flush=True)
    return {"model": str((RESULTS / folder / "best.dw").relative_to(HERE.parent)), "init_window": bench.init_window,
            "horizon": HORIZONS[benchmark], "tests": rows}


def markdown(result: dict[str, Any]) -> str:
    """The two tables: zero against estimated state, and the k-step-ahead prediction errors."""
    lines = ["## Initial state: the headlines under both protocols", "",
             f"Commit {result['commit']}; {result['machine']['processor']}, {result['machine']['torch_threads']} "
             "torch threads.", "",
             "| benchmark | test | zero state | estimated state (x0 = fit) | change | unit | fit time [CPU s] |",
             "|---|---|---|---|---|---|---|"]
    for benchmark, entry in result["benchmarks"].items():
        for test, row in entry["tests"].items():
            change = 100 * (row["estimated"] / row["zero"] - 1)
            lines.append(f"| {benchmark} | {test} | {row['zero']:.4g} | {row['estimated']:.4g} | {change:+.1f} % | "
                         f"{row['unit']} | {row['fit_cpu_seconds']:.2f} |")
    lines += ["", "k-step-ahead prediction (each window from the state estimated on its own init window):", "",
              "| benchmark | test | init window | horizon | windows | RMSE, all steps | RMSE at step 1 / H/2 / H "
              "| unit |",
              "|---|---|---|---|---|---|---|---|"]
    for benchmark, entry in result["benchmarks"].items():
        for test, row in entry["tests"].items():
            p = row["prediction"]
            steps = p["rmse_by_step"]
            lines.append(f"| {benchmark} | {test} | {p['init_window']} | {p['horizon']} | {p['windows']} | "
                         f"{p['rmse']:.4g} | {steps[0]:.3g} / {steps[len(steps) // 2 - 1]:.3g} / {steps[-1]:.3g} | "
                         f"{p['unit']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--benchmarks", nargs="+", default=list(HEADLINES), choices=list(HEADLINES))
    args = parser.parse_args(argv)
    set_threads(args.threads)
    result = {"command": " ".join(sys.argv), "commit": git_commit(), "machine": machine(),
              "benchmarks": {name: study(name, HEADLINES[name]) for name in args.benchmarks}}
    out = RESULTS / "initial_state"
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "results.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
