"""Helpers of the command-line tests: run ``deepwiener`` in-process, write CSV files.

Commands run through ``deepwiener.cli.main`` (the real error boundary), with output captured.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from deepwiener.cli import main

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


def one_error(result: Result, *fragments: str) -> str:
    """Exit code 2 and one ``error: ...`` line, the last on stderr (progress lines may precede it), holding every
    fragment; no traceback."""
    lines = result.err.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert result.code == 2 and errors == lines[-1:] and "Traceback" not in result.err, result.err
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]
