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


def skip_reason(report: pytest.TestReport) -> str:
    """The reason a skipped test gave (the message of its ``pytest.skip``)."""
    longrepr = report.longrepr
    return str(longrepr[2]).removeprefix("Skipped: ") if isinstance(longrepr, tuple) else str(longrepr)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say, in the last lines of the run, why every skipped test was skipped: one line per reason with its count;
    last, how many were skipped for want of benchmark data (and where to point) or of a PostgreSQL server."""
    reasons = [skip_reason(r) for r in terminalreporter.stats.get("skipped", [])]
    others: dict[str, int] = {}
    for reason in reasons:
        if DATA_SKIP not in reason and POSTGRES_SKIP not in reason:
            others[reason] = others.get(reason, 0) + 1
    for reason, count in sorted(others.items()):
        terminalreporter.write_line(f"{count} skipped: {reason}", yellow=True)
    data = sum(DATA_SKIP in reason for reason in reasons)
    if data:
        terminalreporter.write_line(f"{data} tests skipped: {DATA_SKIP}; set DEEPWIENER_DATA to the folder of "
                                    f"the benchmark data (now {os.environ.get('DEEPWIENER_DATA', SHARED_DATA)})",
                                    yellow=True, bold=True)
    postgres = sum(POSTGRES_SKIP in reason for reason in reasons)
    if postgres:
        terminalreporter.write_line(f"{postgres} tests skipped: {POSTGRES_SKIP}", yellow=True, bold=True)
