"""Test configuration: make ``tests/helpers.py`` importable and point the data directory at shared/."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from helpers import DATA_SKIP, POSTGRES_SKIP, require_data  # noqa: E402 (importable once the path is set)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The benchmark data directory: $DEEPWIENER_DATA, else ../shared/data beside the repository."""
    return require_data(Path(os.environ.get("DEEPWIENER_DATA", SHARED_DATA)))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say, in the last lines of the run, how many tests were skipped for want of benchmark data (and where to point)
    or of a PostgreSQL server."""
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if DATA_SKIP in str(r.longrepr)]
    if skipped:
        terminalreporter.write_line(f"{len(skipped)} tests skipped: {DATA_SKIP}; set DEEPWIENER_DATA to the folder of "
                                    f"the benchmark data (now {os.environ.get('DEEPWIENER_DATA', SHARED_DATA)})",
                                    yellow=True, bold=True)
    postgres = [r for r in terminalreporter.stats.get("skipped", []) if POSTGRES_SKIP in str(r.longrepr)]
    if postgres:
        terminalreporter.write_line(f"{len(postgres)} tests skipped: {POSTGRES_SKIP}", yellow=True, bold=True)
