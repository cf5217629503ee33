"""benchmarks/accuracy/run.py: --add keeps other seeds' runs with their commit; the headline (best seed or the
ensemble of all seeds) is chosen on validation error and saved as best.dw."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from pathlib import Path
from types import MappingProxyType, SimpleNamespace

import numpy as np
import pytest

from deepwiener import Benchmark, DeepWiener, Ensemble, IOData, TrainConfig
from deepwiener.io import load, read_info, save
from deepwiener.runs import describe

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "accuracy" / "run.py"


def _script():
    spec = importlib.util.spec_from_file_location("accuracy_run", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_merge_runs_keeps_other_seeds_and_replaces_rerun_ones(tmp_path: Path) -> None:
    earlier = {"command": "run.py x --seeds 0 1", "commit": "aaa",
               "runs": [{"seed": 0, "best_val_rmse": 1.0}, {"seed": 1, "best_val_rmse": 2.0, "commit": "bbb"}]}
    results = tmp_path / "results.json"
    results.write_text(json.dumps(earlier))
    fresh = [{"seed": 2, "best_val_rmse": 0.5, "commit": "ccc"}, {"seed": 1, "best_val_rmse": 3.0, "commit": "ccc"}]
    runs, command = _script().merge_runs(results, fresh, "run.py x --seeds 2 1 --add")
    assert [(r["seed"], r["commit"], r["best_val_rmse"]) for r in runs] == [(0, "aaa", 1.0), (1, "ccc", 3.0),
                                                                              (2, "ccc", 0.5)]
    assert command == "run.py x --seeds 0 1 && run.py x --seeds 2 1 --add"


def test_merge_runs_without_an_earlier_result_exits(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no earlier result"):
        _script().merge_runs(tmp_path / "results.json", [], "run.py x --add")


def test_git_commit_is_dirty_for_code_changes_only(tmp_path: Path) -> None:
    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "code.py").write_text("x = 1\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "start")
    git_commit = _script().git_commit
    assert not git_commit(tmp_path).endswith("+dirty")
    for folder in ("benchmarks/accuracy/configs", "benchmarks/results/new"):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "new.toml").write_text("a = 1\n")
    assert not git_commit(tmp_path).endswith("+dirty")  # a new configuration or result is not a code change
    (tmp_path / "src" / "code.py").write_text("x = 2\n")
    assert git_commit(tmp_path).endswith("+dirty")


def _headline_case(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, val_rmse: tuple[float, float],
                   estimated: tuple[float, float] | None = None):
    """Two tiny saved models as the runs of seeds 0 and 1, their data, and the script module pointed at them."""
    script = _script()
    monkeypatch.setattr(script, "ROOT", tmp_path)
    rng = np.random.default_rng(0)
    u = rng.normal(size=(400, 1))
    record = IOData(u, np.convolve(u[:, 0], [0.5, 0.3, 0.1])[:400, None], dt=0.1)
    data = Benchmark(name="toy", train=(record,), tests=MappingProxyType({"test": record}), init_window=5, unit="",
                     scale=1.0)
    runs = []
    for seed, val in enumerate(val_rmse):
        model = DeepWiener(n_u=1, n_y=1, layer="lru", d_model=2, d_state=2, n_layers=1, seed=seed)
        model.with_dt(0.1)
        save(model, tmp_path / f"r{seed}" / "model.dw")
        runs.append({"seed": seed, "run": f"r{seed}", "best_val_rmse": val})
        if estimated is not None:
            runs[-1]["val_rmse_estimated"] = estimated[seed]
    out = tmp_path / "out"
    out.mkdir()
    return script, runs, SimpleNamespace(train=TrainConfig(val_fraction=0.25)), data, out


def test_headline_is_the_ensemble_when_its_validation_error_is_lower(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    script, runs, cfg, data, out = _headline_case(tmp_path, monkeypatch, (1e9, 2e9))  # members far worse
    choice = script.headline(runs, cfg, data, out)
    ensemble = load(out / "best.dw")
    assert choice["model"] == "ensemble" and isinstance(ensemble, Ensemble)
    split = 300  # the held-out tail of val_fraction 0.25, as fit makes it
    expected = np.sqrt(np.mean((data.train[0].y[split:] - ensemble.simulate(data.train[0].u)[split:]) ** 2))
    assert choice["val_rmse"] == pytest.approx(expected, rel=1e-12)
    assert choice["ensemble"]["seeds"] == [0, 1] and choice["ensemble"]["metrics"]["test"]["n_samples"] == 395
    extra = read_info(out / "best.dw")["extra"]  # the training data's description, the members
    assert extra == {**describe(data), "members": ["r0/model.dw", "r1/model.dw"]}
    assert extra["u_low"] == [float(data.train[0].u.min())]


def test_headline_is_the_best_seed_when_the_ensemble_validates_worse(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    script, runs, cfg, data, out = _headline_case(tmp_path, monkeypatch, (1e-9, 1e-12))  # seed 1 unbeatable
    choice = script.headline(runs, cfg, data, out)
    assert choice["model"] == "seed 1" and choice["val_rmse"] == 1e-12 and choice["ensemble"]["val_rmse"] > 1e-12
    assert (out / "best.dw").read_bytes() == (tmp_path / "r1" / "model.dw").read_bytes()


def test_headline_needs_every_model_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script, runs, cfg, data, out = _headline_case(tmp_path, monkeypatch, (1.0, 2.0))
    (tmp_path / "r0" / "model.dw").unlink()
    with pytest.raises(SystemExit, match=r"model files missing .*r0/model\.dw"):
        script.headline(runs, cfg, data, out)


def test_the_estimated_state_protocol_chooses_its_own_headline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script, runs, cfg, data, out = _headline_case(tmp_path, monkeypatch, (1e-12, 1e-9), estimated=(1e-9, 1e-12))
    choice = script.headline(runs, cfg, data, out)
    assert choice["model"] == "seed 0" and choice["estimated"] == {"model": "seed 1", "val_rmse": 1e-12}
    assert (out / "best.dw").read_bytes() == (tmp_path / "r0" / "model.dw").read_bytes()
    assert (out / "best-estimated.dw").read_bytes() == (tmp_path / "r1" / "model.dw").read_bytes()
    assert not (out / "ensemble.dw").exists()


def test_seeds_are_the_queued_trials_of_a_study_that_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = _script()
    trained = []

    def train_seed(name: str, config: Path, seed: int, max_minutes: float | None, out: Path) -> dict:
        trained.append(seed)
        return {"seed": seed, "best_val_rmse": 1.0 + seed}

    monkeypatch.setattr(script, "train_seed", train_seed)
    config = tmp_path / "x.toml"
    config.write_text("[train]\nepochs = 1\n")
    args = SimpleNamespace(name="x", seeds=[2, 0, 1], workers=1, storage=None, study="x-study", threads=None,
                           max_minutes=None, out=tmp_path)
    runs = script.train_seeds(args, config)
    assert [r["seed"] for r in runs] == [2, 0, 1] and sorted(trained) == [0, 1, 2]
    assert all(r["pid"] == os.getpid() for r in runs)
    args.seeds = [0, 3]  # the same study: seed 0 is done, seed 3 is new
    assert [r["seed"] for r in script.train_seeds(args, config)] == [0, 3] and sorted(trained) == [0, 1, 2, 3]


def _minimal_result(benchmark: str, unit: str) -> dict:
    metrics = {"multisine": {"rmse": 2.0e-5, "fit": 90.0}, "sinesweep": {"rmse": 3.0e-5, "fit": 80.0}}
    run = {"seed": 0, "config": {"model": {"kind": "lfr"}}, "metrics": metrics, "n_parameters": 10,
           "wall_seconds": 60.0, "best_val_rmse": 1.0e-5}
    return {"name": benchmark, "benchmark": benchmark, "unit": unit, "val_unit": unit, "runs": [run],
            "machine": {"processor": "x86_64", "torch_threads": 1}, "commit": "abc", "summary": {},
            "headline": {"model": "seed 0", "val_rmse": 1.0e-5}, "best_seed": 0,
            "linear": {"model": "N4SID order 2", "metrics": metrics}}


def test_bouc_wen_tables_add_the_literature_unit(monkeypatch: pytest.MonkeyPatch) -> None:
    script = _script()
    monkeypatch.setitem(script.REFERENCES, "bouc_wen", {"sinesweep": {"someone": 1.5e-5}})
    text = script.markdown(_minimal_result("bouc_wen", "m"))
    header = next(line for line in text.splitlines() if line.startswith("| model | seed"))
    assert "multisine RMSE [m]" in header and "sinesweep RMSE [1e-5 m]" in header
    seed_row = next(line for line in text.splitlines() if line.startswith("| deepwiener lfr | 0"))
    assert "| 2e-05 | 3e-05 | 2 | 3 |" in seed_row  # metres, then 1e-5 m
    reference_row = next(line for line in text.splitlines() if line.startswith("| someone"))
    assert "| 1.5e-05 | " in reference_row and "| 1.5 |" in reference_row


def test_tables_of_a_benchmark_without_a_unit_or_a_second_unit() -> None:
    script = _script()
    result = _minimal_result("coupled_electric_drives", "")
    metrics = result["runs"][0]["metrics"]
    result["headline"]["ensemble"] = {"seeds": [0, 1], "metrics": metrics, "n_parameters": 20, "val_rmse": 1.0e-5}
    text = script.markdown(result)
    header = next(line for line in text.splitlines() if line.startswith("| model | seed"))
    assert "| multisine RMSE | sinesweep RMSE | FIT" in header and "[" not in header.split("FIT")[0]
    assert "[]" not in text
