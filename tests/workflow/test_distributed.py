"""``deepwiener train --distributed`` under torchrun: two CPU processes (gloo) train the same model as one process
with the same global batch (float64, to 1e-6 relative), and rank 0 alone writes the run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from cli.cli_helpers import one_error, run_cli, write_csv

from deepwiener.io import load
from deepwiener.runs import RunDir

CONFIG = """
[model]
d_model = 4
d_state = 4
n_layers = 2

[train]
window = 64
washout = 10
stride = 40
batch_size = 5
epochs = 3
patience = 100
lr = 1e-2
dtype = "float64"
"""
"""A global batch of 5 windows: shares of 3 and 2, and a last batch whose second share is empty."""


PENALTIES = "modal_l1 = 1e-3\nhankel_nuclear = 1e-2\n"
"""The reducibility penalties (appended to the [train] table): every rank adds them whole to its part of the loss."""


@pytest.mark.skipif(not torch.distributed.is_available(), reason="this torch has no torch.distributed")
@pytest.mark.parametrize("penalties", ["", PENALTIES], ids=["plain", "penalties"])
def test_torchrun_on_two_processes_trains_the_model_of_one(tmp_path: Path, penalties: str) -> None:
    rng = np.random.default_rng(0)
    u = rng.normal(size=1400)
    data = write_csv(tmp_path / "train.csv", {"V1": u, "V2": np.convolve(np.tanh(u), [0.5, 0.3, 0.1])[:1400]})
    (tmp_path / "config.toml").write_text(CONFIG + penalties)
    args = ["train", "--csv", data, "--u", "V1", "--y", "V2", "--dt", 0.01, "--config", tmp_path / "config.toml"]
    assert run_cli([*args, "--out", tmp_path / "one"]).code == 0
    script = shutil.which("deepwiener") or str(Path(sys.executable).with_name("deepwiener"))
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", script]
    done = subprocess.run([*torchrun, *map(str, args), "--out", str(tmp_path / "two"), "--distributed"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("run written to") == 1  # rank 0 alone reports and writes
    one, two = (load(RunDir.open(tmp_path / name).model_path) for name in ("one", "two"))
    for (name, a), b in zip(one.state_dict().items(), two.state_dict().values(), strict=True):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-6 * float(a.abs().max())), name
    rows = [RunDir(tmp_path / name).read_history() for name in ("one", "two")]
    assert [r["epoch"] for r in rows[0]] == [r["epoch"] for r in rows[1]] == [1, 2, 3]
    np.testing.assert_allclose([r["val_rmse"] for r in rows[1]], [r["val_rmse"] for r in rows[0]], rtol=1e-6)


def test_distributed_without_torchrun_is_one_error_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RANK", raising=False)
    one_error(run_cli(["train", "--csv", tmp_path / "none.csv", "--u", "V1", "--y", "V2", "--dt", 0.01,
                       "--distributed"]), "--distributed runs under torchrun")
