"""Reduction study (issue 23): test error against states for truncated, fine-tuned and regularised deep Wiener models.

One command::

    python benchmarks/reduction_study.py --members silverbox=1   # the study as run: both headlines, the budgets below
    python benchmarks/reduction_study.py --benchmarks wiener_hammerstein --members wiener_hammerstein=1 \\
        --orders 8 --ft-minutes 0.2 \\
        --reg-minutes 0.2 --out /tmp/smoke                     # a smoke test

For each headline (``results/silverbox-wiener/best.dw``, an ensemble of 4 members;
``results/wiener_hammerstein-wiener/best.dw``, an ensemble of 2), each member used, and each variant:

* ``plain``: the trained member, balanced truncation of every block to K complex modes (``analysis.reduce``);
* ``plain+ft``: the same, then ``training.fine_tune`` for ``--ft-minutes`` (lr / 10, the model's own training
  data, configuration and validation; epoch 0 is the truncated model);
* ``reg``: the member first fine-tuned with the Hankel nuclear-norm penalty for ``--reg-minutes`` (lr times
  ``--reg-lr-factor``, the LAST epoch kept: validation, which measures accuracy only, would pick epoch 0), then
  truncated; ``reg+ft``: then fine-tuned as above. This is the cheap variant of the issue's "regularised training":
  a regularised fine-tune of the trained headline, not a regularised training from scratch (25-50 minutes per
  member, beyond this study's budget). The penalty's weight makes it ``--reg-ratio`` times the member's validation
  NMSE at the start: ``hankel_nuclear = ratio * NMSE_val / sum of the member's Hankel singular values``. The
  default ratio 1000 (lr factor 0.3) was chosen before the study from 40-second probes on Wiener-Hammerstein member
  0, by the validation RMSE of its order-8 truncation (ratio 1: 63 mV, unchanged; 10: 51; 100: 38; 1000: 24 mV).

Default budget (about 45 core-minutes): Wiener-Hammerstein with both members, Silverbox with member 0 only
(``--members silverbox=1``: its four members would double the study's training time).

The reduced members of one (variant, K) form an ensemble of the same size as the headline. States are counted
as the issue asks: real states of all blocks (2 per complex mode, padding included) of the largest member.

Selection rule (written before any run): among the candidates with at most a quarter of the headline's states,
the one with the lowest validation RMSE (the training records' held-out tails, as in training) is saved as
``results/<headline>-reduced/best.dw``. Test records choose nothing; they are scored for the table. A later run
of the study (another ``--tag``, e.g. more members) replaces that file only if its choice validates lower;
``selection.json`` beside it records which run's candidate it is.

Writes ``results/reduction_study/results.json`` (every candidate: variant, K, states, validation RMSE, test
metrics, fine-tuning epochs and seconds) and ``results.md`` (the table).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from accuracy.run import git_commit, machine

from deepwiener.analysis import reduce
from deepwiener.config import RunConfig, resolve
from deepwiener.data import Benchmark, ValidationRecord
from deepwiener.evaluation import evaluate_all
from deepwiener.io import load, save
from deepwiener.models import DeepWiener, Ensemble, Model
from deepwiener.runs import describe
from deepwiener.training import EpochInfo, fine_tune, fit, split_training, validation_rmse

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
HEADLINES = {"silverbox": ("silverbox-wiener", "silverbox-wiener"),
             "wiener_hammerstein": ("wiener_hammerstein-wiener", "wiener_hammerstein-wiener")}  # (results dir, config)


def states(model: Model) -> int:
    """Real states of all blocks (2 per complex mode) of a deep Wiener model, or of an ensemble's largest member."""
    members = list(model.members) if isinstance(model, Ensemble) else [model]
    return max(2 * sum(block.lti.d_state for block in m.blocks) for m in members)


def combine(members: list[DeepWiener]) -> Model:
    """One model of the members: an ensemble of two or more, the member itself when alone."""
    return Ensemble(members) if len(members) > 1 else members[0]


def score(model: Model, data: Benchmark, val_parts: list[ValidationRecord], mode: str) -> dict[str, Any]:
    """Validation RMSE (V, the training split's tails) and the test metrics (official protocol)."""
    return {"val_rmse": validation_rmse(model, val_parts, mode), "states": states(model),
            "tests": {name: m["rmse"] for name, m in evaluate_all(model, data).items()}}


def regularise(member: DeepWiener, cfg: RunConfig, data: Benchmark, val_parts: list[ValidationRecord],
               args: argparse.Namespace, label: str) -> tuple[DeepWiener, dict[str, Any]]:
    """A copy of ``member`` fine-tuned with the Hankel nuclear-norm penalty; its last epoch."""
    model = copy.deepcopy(member)
    val = validation_rmse(model, val_parts, cfg.train.mode)
    nmse = float(((val / model.y_std.double()) ** 2).mean())
    with torch.no_grad():
        hsv = sum(float(b.lti.discretize().hankel_singular_values().sum()) for b in model.blocks)
    weight = args.reg_ratio * nmse / hsv
    train = dataclasses.replace(cfg.train, lr=cfg.train.lr * args.reg_lr_factor, max_minutes=args.reg_minutes,
                                init="random", hankel_nuclear=weight)
    last: dict[str, Any] = {}

    def keep_last(info: EpochInfo) -> None:
        last["state"] = copy.deepcopy(model.state_dict())
        last["epoch"] = info.epoch

    result = fit(model, data.train, train, val=list(data.val) or None, on_epoch=keep_last, progress=False)
    model.load_state_dict(last["state"])
    with torch.no_grad():
        hsv_after = sum(float(b.lti.discretize().hankel_singular_values().sum()) for b in model.blocks)
    print(f"[{label}] regularised: weight {weight:.3g}, HSV sum {hsv:.4g} -> {hsv_after:.4g}, "
          f"{result.epochs_run} epochs", flush=True)
    return model, {"weight": weight, "hsv_sum_before": hsv, "hsv_sum_after": hsv_after,
                   "epochs": result.epochs_run, "seconds": result.seconds, "val_rmse_start": val}


def study(benchmark: str, args: argparse.Namespace) -> dict[str, Any]:
    """Every candidate of one headline, and the one the selection rule picks."""
    folder, config_name = HEADLINES[benchmark]
    cfg = resolve(HERE / "accuracy" / "configs" / f"{config_name}.toml", {"train": {"device": "cpu"}})
    data = cfg.data.load()
    _, val_parts = split_training(list(data.train), list(data.val) or None, cfg.train)
    headline = load(RESULTS / folder / "best.dw")
    members = (list(headline.members) if isinstance(headline, Ensemble) else [headline])[: args.members.get(benchmark)]
    full = combine(members)
    limit = states(full) // 4
    K_full = members[0].config.d_state
    rows: list[dict[str, Any]] = [{"variant": "headline", "K": K_full,
                                   **score(headline, data, val_parts, cfg.train.mode)}]
    if isinstance(headline, Ensemble) and len(members) < len(headline.members):
        rows.append({"variant": "full", "K": K_full, **score(full, data, val_parts, cfg.train.mode)})
    print(f"[{benchmark}] full: {rows}", flush=True)
    bases = {"plain": members}
    regularisation = []
    if args.reg_minutes > 0:
        regs = [regularise(m, cfg, data, val_parts, args, f"{benchmark} member {i}") for i, m in enumerate(members)]
        bases["reg"] = [m for m, _ in regs]
        regularisation = [info for _, info in regs]
        rows.append({"variant": "reg", "K": K_full,
                     **score(combine(bases["reg"]), data, val_parts, cfg.train.mode)})
    for variant, base in bases.items():
        for K in args.orders:
            truncated = [reduce(m, order=K).model for m in base]
            rows.append({"variant": variant, "K": K, **score(combine(truncated), data, val_parts, cfg.train.mode)})
            print(f"[{benchmark}] {variant} K={K}: {rows[-1]}", flush=True)
            rows[-1]["model"] = combine(truncated)
            if K not in args.ft_orders or variant not in args.ft_variants or args.ft_minutes <= 0:
                continue
            tuned, info = [], []
            for m in (copy.deepcopy(t) for t in truncated):
                result = fine_tune(m, data.train, cfg.train, args.ft_minutes, val=list(data.val) or None)
                tuned.append(m)
                info.append({"start_val_rmse": result.start_val_rmse, "best_val_rmse": result.fit.best_val_rmse,
                             "best_epoch": result.fit.best_epoch, "epochs": result.fit.epochs_run,
                             "seconds": result.fit.seconds})
            rows.append({"variant": f"{variant}+ft", "K": K, "fine_tune": info,
                         **score(combine(tuned), data, val_parts, cfg.train.mode)})
            rows[-1]["model"] = combine(tuned)
            print(f"[{benchmark}] {variant}+ft K={K}: { {k: v for k, v in rows[-1].items() if k != 'model'} }",
                  flush=True)
    eligible = [row for row in rows if row["states"] <= limit and "model" in row]
    chosen = min(eligible, key=lambda row: row["val_rmse"])
    out = args.out / f"{folder}-reduced"
    out.mkdir(parents=True, exist_ok=True)
    selection = {"study": args.tag, "variant": chosen["variant"], "K": chosen["K"], "members": len(members),
                 "val_rmse": chosen["val_rmse"], "states": chosen["states"], "tests": chosen["tests"]}
    previous = json.loads((out / "selection.json").read_text()) if (out / "selection.json").exists() else None
    if previous is None or previous["study"] == args.tag or chosen["val_rmse"] < previous["val_rmse"]:
        save(chosen["model"], out / "best.dw", extra={**describe(data), "reduced_from": f"benchmarks/results/{folder}"})
        (out / "selection.json").write_text(json.dumps(selection, indent=2) + "\n")
    else:
        print(f"[{benchmark}] kept {out / 'best.dw'}: it validates lower ({previous['val_rmse']:.6g})", flush=True)
    for row in rows:
        row.pop("model", None)
    print(f"[{benchmark}] chosen: {chosen['variant']} K={chosen['K']} -> {out / 'best.dw'}", flush=True)
    return {"benchmark": benchmark, "headline": f"benchmarks/results/{folder}/best.dw", "members": len(members),
            "state_limit": limit, "unit": data.tests[next(iter(data.tests))].report_unit, "rows": rows,
            "regularisation": regularisation, "chosen": {"variant": chosen["variant"], "K": chosen["K"],
                                                         "path": str(out)}}


def markdown(result: dict[str, Any]) -> str:
    """The study's table: one row per candidate, test RMSE per record and its ratio to the full-size headline
    (the first row; "full" is the members used, when fewer than the headline's)."""
    lines = ["## reduction study", "", f"Machine: {result['machine']['processor']}, "
             f"{result['machine']['torch_threads']} torch thread(s); commit {result['commit']}; "
             f"wall time {result['wall_seconds'] / 60:.1f} min.", ""]
    for bench in result["benchmarks"]:
        full = bench["rows"][0]
        tests = list(full["tests"])
        lines += [f"### {bench['benchmark']} ({bench['members']} member(s); at most {bench['state_limit']} states)", "",
                  "| variant | K (modes/block) | states | val RMSE [V] | "
                  + " | ".join(f"{t} RMSE [{bench['unit']}] (x full)" for t in tests) + " |",
                  "|---|---|---|---|" + "---|" * len(tests)]
        for row in bench["rows"]:
            cells = " | ".join(f"{row['tests'][t]:.4g} ({row['tests'][t] / full['tests'][t]:.3f})" for t in tests)
            mark = " **chosen**" if (row["variant"], row["K"]) == (bench["chosen"]["variant"], bench["chosen"]["K"]) \
                else ""
            lines.append(f"| {row['variant']}{mark} | {row['K']} | {row['states']} | {row['val_rmse']:.5g} | {cells} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmarks", nargs="+", default=list(HEADLINES), choices=list(HEADLINES))
    parser.add_argument("--members", nargs="*", default=[], metavar="BENCHMARK=N",
                        help="Use the first N members of a headline (default: all).")
    parser.add_argument("--orders", type=int, nargs="+", default=[4, 8, 12, 16, 24])
    parser.add_argument("--ft-orders", type=int, nargs="+", default=[8])
    parser.add_argument("--ft-variants", nargs="+", default=["plain", "reg"], choices=["plain", "reg"],
                        help="The variants whose order-K truncations are fine-tuned.")
    parser.add_argument("--ft-minutes", type=float, default=4.0)
    parser.add_argument("--reg-minutes", type=float, default=5.0)
    parser.add_argument("--reg-lr-factor", type=float, default=0.3)
    parser.add_argument("--reg-ratio", type=float, default=1000.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--tag", default="reduction_study", help="Folder of the results under --out.")
    args = parser.parse_args(argv)
    args.members = {name: int(n) for name, n in (item.split("=") for item in args.members)}
    torch.set_num_threads(args.threads)
    start = time.monotonic()
    result: dict[str, Any] = {"command": " ".join(["benchmarks/reduction_study.py", *sys.argv[1:]]),
                              "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                              "machine": machine(), "commit": git_commit(), "benchmarks": []}
    folder = args.out / args.tag
    folder.mkdir(parents=True, exist_ok=True)
    for benchmark in args.benchmarks:
        result["benchmarks"].append(study(benchmark, args))
        result["wall_seconds"] = time.monotonic() - start
        (folder / "results.json").write_text(json.dumps(result, indent=2) + "\n")
        (folder / "results.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
