"""Test configuration: make ``tests/helpers.py`` importable and point the data directory at shared/."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The benchmark data directory: $DEEPWIENER_DATA, else ../shared/data beside the repository."""
    path = Path(os.environ.get("DEEPWIENER_DATA", SHARED_DATA))
    if not path.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"benchmark data not found at {path} (CI must have ../shared/data)")
        pytest.skip(f"benchmark data not found at {path}")
    return path
