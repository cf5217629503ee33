"""Fixtures for the data tests. ``data_dir`` (the benchmark folder) comes from ``tests/conftest.py``."""

from __future__ import annotations

from pathlib import Path

import pytest

from deepwiener.data import benchmarks


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never touch the network: DEEPWIENER_OFFLINE is set and any download attempt fails the test.

    Download tests delete the variable and replace ``fetch_url`` with a local fake.
    """

    def refuse(url: str, dest: Path, timeout: float) -> None:
        raise AssertionError(f"a test tried to download {url}")

    monkeypatch.setattr(benchmarks, "fetch_url", refuse)
    monkeypatch.setenv("DEEPWIENER_OFFLINE", "1")
