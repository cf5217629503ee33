"""Fixtures of the command-line tests: the data folder in DEEPWIENER_DATA, CSV slices of Silverbox, one tiny run.

Commands run in-process through ``deepwiener.cli.main`` (the real error boundary), with output captured.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from deepwiener.cli import main
from deepwiener.data import load_benchmark

SILVERBOX_DT = 1 / 610.35

TINY_TOML = """
[model]
d_model = 4
d_state = 4
n_layers = 1

[train]
window = 64
washout = 10
batch_size = 64
"""


@dataclass(frozen=True)
class Result:
    """Exit code, stdout and stderr of one command."""

    code: int
    out: str
    err: str


def run_cli(args: Sequence[str]) -> Result:
    """Run ``deepwiener ARGS`` in-process; return its exit code and output."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exit_:
        main([str(a) for a in args])
    code = exit_.value.code
    return Result(code if isinstance(code, int) else 0, out.getvalue(), err.getvalue())


def write_csv(path: Path, columns: dict[str, np.ndarray | list]) -> Path:
    """Write a CSV file with a header; cells are written as given (strings allowed, '' for empty)."""
    names = list(columns)
    rows = zip(*(columns[n] for n in names), strict=True)
    path.write_text(",".join(names) + "\n" + "".join(",".join(
        v if isinstance(v, str) else repr(float(v)) for v in row) + "\n" for row in rows))
    return path


@pytest.fixture(scope="session")
def cli_env(data_dir: Path) -> Iterator[Path]:
    """DEEPWIENER_DATA points at the data folder and downloads are off, for the whole CLI session."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DEEPWIENER_DATA", str(data_dir))
        mp.setenv("DEEPWIENER_OFFLINE", "1")
        yield data_dir


@pytest.fixture(scope="session")
def silverbox_slices(cli_env: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two CSV slices of the Silverbox training record (V1 input, V2 output): "train" 3000, "test" 1000."""
    record = load_benchmark("silverbox").train[0]
    folder = tmp_path_factory.mktemp("csv")
    return {name: write_csv(folder / f"{name}.csv", {"V1": record.u[a:b, 0], "V2": record.y[a:b, 0]})
            for name, (a, b) in {"train": (0, 3000), "test": (3000, 4000)}.items()}


@pytest.fixture(scope="session")
def tiny_toml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "tiny.toml"
    path.write_text(TINY_TOML)
    return path


@pytest.fixture(scope="session")
def csv_run(silverbox_slices: dict[str, Path], tiny_toml: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete run trained for one epoch on the 3000-sample CSV slice."""
    out = tmp_path_factory.mktemp("runs") / "csv-run"
    result = run_cli(["train", "--csv", silverbox_slices["train"], "--u", "V1", "--y", "V2", "--dt", SILVERBOX_DT,
                      "--init-window", 20, "--config", tiny_toml, "--epochs", 1, "--out", out])
    assert result.code == 0, result.err
    return out
