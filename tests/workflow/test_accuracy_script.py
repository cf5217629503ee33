"""benchmarks/accuracy/run.py --add: runs of other seeds are kept with their commit; re-run seeds replace theirs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

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
