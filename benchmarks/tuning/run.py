"""Tuning benchmark: does a fixed-budget search beat the hand-written headline configuration?

One command per benchmark (search space in ``configs/<name>.toml``, hand-written headline in
``benchmarks/accuracy/configs/<name>.toml``)::

    python benchmarks/tuning/run.py cascaded_tanks --minutes 40 --workers 2 --seeds 0 1 2

1. Search: ``deepwiener tune`` on the space for ``--minutes`` with ``--workers`` processes (one core each on two
   cores; the running trials finish after the budget, each within its own training budget). Trials are scored on the
   validation tail alone.
2. The best trial's configuration (lowest validation RMSE) is written to
   ``benchmarks/accuracy/configs/<name>-tuned.toml``.
3. That configuration and the hand-written one are trained by the accuracy harness with the same seeds, training
   budget, workers and cores, one after the other (``benchmarks/accuracy/run.py NAME --seeds ... --workers ...
   --threads 1 --out benchmarks/results/tuning/<name>/{tuned,hand-written}``).
4. The rule, written before the benchmark ran: the tuned configuration *beats* the hand-written one when its
   headline's validation RMSE (the harness's headline: the best seed or the ensemble of the seeds, by validation)
   is lower. Test RMSE is reported after that, and chooses nothing.

Writes ``benchmarks/results/tuning/<name>/results.json`` and ``results.md`` (the search's summary is in
``tune/summary.md``; trial runs, the journal and the harness's runs are not committed).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from deepwiener.tune import TuneSettings, tune

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
ACCURACY = ROOT / "benchmarks" / "accuracy"
RESULTS = ROOT / "benchmarks" / "results" / "tuning"


def tuned_config(best_run: Path, summary: dict[str, Any], space: Path) -> str:
    """The best trial's resolved configuration as a harness configuration, with a header that says where it came
    from."""
    best = summary["best"]
    header = [f"# Found by benchmarks/tuning/run.py: trial {best['number']} of study {summary['study']} (search space "
              f"{space.relative_to(ROOT)}),", f"# validation RMSE {best['val_rmse']:.5g} {best['unit']} in the search; "
              "the seeds are set by the harness.", ""]
    return "\n".join(header) + (best_run / "config.toml").read_text()


def harness(name: str, seeds: list[int], workers: int, out: Path, minutes: float | None) -> dict[str, Any]:
    """Train configuration ``name`` with the accuracy harness (``minutes``: its budget, None: the configuration's);
    its results.json and the wall time."""
    start = time.monotonic()
    command = [sys.executable, str(ACCURACY / "run.py"), name, "--seeds", *map(str, seeds), "--workers", str(workers),
               "--threads", "1", "--out", str(out), *(["--max-minutes", str(minutes)] if minutes else [])]
    subprocess.run(command, check=True)
    result = json.loads((out / "results.json").read_text())
    return {"name": name, "command": " ".join(command[1:]).replace(str(ROOT) + "/", ""),
            "wall_minutes": round((time.monotonic() - start) / 60, 1), "result": result}


def headline(entry: dict[str, Any]) -> dict[str, Any]:
    """The harness's headline: its validation RMSE and test metrics."""
    result = entry["result"]
    head = result["headline"]
    if head["model"] == "ensemble":
        metrics = head["ensemble"]["metrics"]
    else:
        metrics = next(r for r in result["runs"] if f"seed {r['seed']}" == head["model"])["metrics"]
    return {"model": head["model"], "val_rmse": head["val_rmse"],
            "test_rmse": {t: m["rmse"] for t, m in metrics.items()},
            "seeds_val_rmse": {r["seed"]: r["best_val_rmse"] for r in result["runs"]},
            "seeds_test_rmse": {r["seed"]: {t: m["rmse"] for t, m in r["metrics"].items()} for r in result["runs"]},
            "epochs": {r["seed"]: r["epochs"] for r in result["runs"]}, "wall_minutes": entry["wall_minutes"],
            "command": entry["command"]}


def markdown(report: dict[str, Any]) -> str:
    """The comparison table."""
    unit, tuned, hand = report["unit"], report["tuned"], report["hand_written"]
    search = report["search"]
    lines = [f"## Tuning: {report['name']}", "",
             f"Search: {search['trials']} trials ({search['complete']} complete, {search['pruned']} pruned, "
             f"{search['failed']} failed) in {search['wall_minutes']:.1f} min with {report['workers']} workers on "
             f"{report['cpu_count']} shared cores (load average at the start {report['load_average']}); commit "
             f"{report['commit']}.", "",
             f"| configuration | headline | validation RMSE [{unit}] | test RMSE [{unit}] | seeds' validation | "
             "seeds' test | training wall time [min] |", "|---|---|---|---|---|---|---|"]
    for label, entry in (("tuned (best trial)", tuned), ("hand-written", hand)):
        test = " / ".join(f"{v:.4g}" for v in entry["test_rmse"].values())
        seeds_val = ", ".join(f"{v:.4g}" for v in entry["seeds_val_rmse"].values())
        seeds_test = ", ".join(" / ".join(f"{v:.4g}" for v in t.values()) for t in entry["seeds_test_rmse"].values())
        lines.append(f"| {label} | {entry['model']} | {entry['val_rmse']:.5g} | {test} | {seeds_val} | {seeds_test} | "
                     f"{entry['wall_minutes']:.1f} |")
    verdict = "beats" if report["tuned_beats_hand_written"] else "does not beat"
    lines += ["", f"Rule (validation only): the tuned configuration {verdict} the hand-written one "
                  f"({tuned['val_rmse']:.5g} against {hand['val_rmse']:.5g} {unit}).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="benchmark: configs/<name>.toml (search space) and the accuracy harness's "
                                     "<name>.toml (hand-written)")
    parser.add_argument("--minutes", type=float, default=40.0, help="search budget (wall time)")
    parser.add_argument("--workers", type=int, default=2, help="processes (search and harness), one core each")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of both trainings")
    parser.add_argument("--train-minutes", type=float, default=None,
                        help="budget of both trainings (default: the configurations' own; for a dry run)")
    args = parser.parse_args(argv)
    space = HERE / "configs" / f"{args.name}.toml"
    out = RESULTS / args.name
    load = os.getloadavg()[0]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=ROOT).stdout.strip()
    start = time.monotonic()
    summary = tune(TuneSettings(space=space, out=out / "tune", trials=100000, workers=args.workers,
                                study=f"{args.name}-{time.strftime('%Y%m%d-%H%M%S')}", max_minutes=args.minutes))
    search_minutes = (time.monotonic() - start) / 60
    if summary["best"] is None:
        sys.exit("no trial completed")
    tuned_name = f"{args.name}-tuned"
    (ACCURACY / "configs" / f"{tuned_name}.toml").write_text(tuned_config(out / "tune" / "best", summary, space))
    tuned = headline(harness(tuned_name, args.seeds, args.workers, out / "tuned", args.train_minutes))
    hand = headline(harness(args.name, args.seeds, args.workers, out / "hand-written", args.train_minutes))
    states = [t["state"] for t in summary["trials"]]
    report = {"name": args.name, "unit": summary["best"]["unit"], "workers": args.workers,
              "cpu_count": os.cpu_count(), "load_average": round(load, 1), "commit": commit,
              "search": {"minutes": args.minutes, "wall_minutes": search_minutes, "trials": len(states),
                         "complete": states.count("complete"), "pruned": states.count("pruned"),
                         "failed": states.count("fail"), "best": summary["best"],
                         "importances": summary["importances"]},
              "tuned": tuned, "hand_written": hand,
              "tuned_beats_hand_written": tuned["val_rmse"] < hand["val_rmse"]}
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "results.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
