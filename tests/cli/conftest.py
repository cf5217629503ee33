"""Fixtures of the command-line tests: the data folder in DEEPWIENER_DATA, CSV slices of Silverbox, one tiny run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import SILVERBOX_DT, TINY_TOML, run_cli, write_csv

from deepwiener.data import load_benchmark


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
