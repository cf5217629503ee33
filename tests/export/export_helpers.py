"""Helpers of the export tests: run an exported ONNX step with onnxruntime and an exported C program compiled with
``cc``, and compare both with ``model.simulate``."""

from __future__ import annotations

import copy
import io
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from deepwiener.export import export_c, export_onnx, flatten_state
from deepwiener.models import Model

CFLAGS = ("-O2", "-std=c99", "-Wall", "-Wextra", "-pedantic", "-Werror")
"""The compiler flags of every test build: warnings are errors."""
FLOAT_TOL = 1e-4
"""float32 exports (ONNX, C float) agree with the float32 model to this fraction of the output's peak."""
DOUBLE_TOL = 1e-9
"""The double C program agrees with the model in float64 to this fraction of the output's peak."""
SAMPLES = 10_000


def compiler() -> str:
    """The system C compiler ``cc``; the test is skipped when it is missing."""
    cc = shutil.which("cc")
    if cc is None:
        pytest.skip("the C compiler cc is not installed")
    return cc


def build(folder: Path) -> Path:
    """Compile an exported C folder (``cc`` with :data:`CFLAGS`); returns the program."""
    program = folder / "simulate"
    sources = sorted(str(p) for p in folder.glob("*.c"))
    result = subprocess.run([compiler(), *CFLAGS, "-o", str(program), *sources, "-lm"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0 and not result.stderr, f"cc failed or warned:\n{result.stderr}"
    return program


def run_program(program: Path, u: np.ndarray) -> np.ndarray:
    """Run a built C program on u (T, n_u) through stdin; returns y (T, n_y) from stdout."""
    text = io.StringIO()
    np.savetxt(text, u, fmt="%.17g", delimiter=",")
    result = subprocess.run([str(program)], input=text.getvalue(), capture_output=True, text=True, check=True,
                            timeout=120)
    return np.loadtxt(io.StringIO(result.stdout), delimiter=",", ndmin=2)


def onnx_session(path: Path) -> ort.InferenceSession:
    """An onnxruntime session on one thread."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_onnx_step(path: Path, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Step an exported one-step ONNX graph over u (T, n_u) from the zero state: (y (T, n_y), final state)."""
    session = onnx_session(path)
    state = np.zeros(session.get_inputs()[1].shape, np.float32)
    u32 = u.astype(np.float32)
    y = []
    for u_k in u32:
        y_k, state = session.run(None, {"u": u_k, "state": state})
        y.append(y_k)
    return np.array(y, dtype=np.float64), state


def peak_error(y: np.ndarray, reference: np.ndarray) -> float:
    """max |y - reference| as a fraction of the reference's peak."""
    assert y.shape == reference.shape
    return float(np.abs(y - reference).max() / np.abs(reference).max())


@dataclass(frozen=True)
class Agreement:
    """The errors of one model's exports, as fractions of the output's peak."""

    onnx: float
    c_float: float
    c_double: float
    state: float


def check_exports(model: Model, u: np.ndarray, folder: Path) -> Agreement:
    """Export ``model`` (in eval mode, in its own dtype: float32, or float64 for linear models) to ONNX, C float and
    C double; run each on u and assert the agreement of the issue: ONNX and C float with the model to
    :data:`FLOAT_TOL` of the output's peak, C double with the model in float64 to :data:`DOUBLE_TOL`, and ONNX's
    final state with the model's (flattened) to :data:`FLOAT_TOL` of its peak."""
    reference = model.simulate(u)
    assert np.isfinite(reference).all() and np.abs(reference).max() > 0
    y_onnx, state = run_onnx_step(export_onnx(model, folder / "model.onnx"), u)
    with torch.no_grad():
        _, final = model(torch.tensor(u, dtype=model.dtype)[None])
    expected_state = flatten_state(final)
    y_float = run_program(build(export_c(model, folder / "c_float", precision="float", name="m32")), u)
    model64 = copy.deepcopy(model).double()
    y_double = run_program(build(export_c(model64, folder / "c_double")), u)
    errors = Agreement(onnx=peak_error(y_onnx, reference), c_float=peak_error(y_float, reference),
                       c_double=peak_error(y_double, model64.simulate(u)),
                       state=float(np.abs(state - expected_state).max() / max(np.abs(expected_state).max(), 1e-30)))
    assert errors.onnx <= FLOAT_TOL and errors.c_float <= FLOAT_TOL and errors.state <= FLOAT_TOL, errors
    assert errors.c_double <= DOUBLE_TOL, errors
    return errors
