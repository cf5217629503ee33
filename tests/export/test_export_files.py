"""The exported files: the ONNX sequence graph, the metadata and the state layout, the C program's input handling,
and the command line (outputs that exist, refusals, exit codes)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from cli.cli_helpers import run_cli
from export_helpers import FLOAT_TOL, build, onnx_session, run_onnx_step, run_program
from torch import Tensor, nn

import deepwiener as dw
from deepwiener.errors import ConfigError
from deepwiener.export import export_c, export_onnx
from deepwiener.layers import LAYERS, LayerOptions

EXTRA = {"u_names": ["V1", "V2"], "y_names": ["y1", "y2"], "u_low": [-1.5, -2.0], "u_high": [2.5, 0.5],
         "data": "rig", "y_unit": "V"}


def _model(seed: int = 0, **options: object) -> dw.DeepWiener:
    options = {"layer": "s4d", "d_model": 3, "d_state": 4, "n_layers": 2, "integrator": True, **options}
    model = dw.DeepWiener(2, 2, seed=seed, dt=0.01, **options)
    model.set_scaler([0.5, -1.0], [2.0, 0.5], [0.01, -0.03], [0.4, 0.25])
    return model.eval()


def _inputs(samples: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(samples, 2))


def test_the_sequence_graph_runs_the_step_over_a_record(tmp_path: Path) -> None:
    model = _model()
    u = _inputs(400)
    y_step, final_step = run_onnx_step(export_onnx(model, tmp_path / "step.onnx"), u)
    session = onnx_session(export_onnx(model, tmp_path / "sequence.onnx", sequence=True))
    assert [i.name for i in session.get_inputs()] == ["u", "state"]
    zero = np.zeros(final_step.shape, np.float32)
    y_seq, final_seq = session.run(None, {"u": u.astype(np.float32), "state": zero})
    tol = 1e-6 * np.abs(y_step).max()
    np.testing.assert_allclose(y_seq, y_step, rtol=0, atol=tol)
    np.testing.assert_allclose(final_seq, final_step, rtol=0, atol=1e-6 * np.abs(final_step).max())
    _, middle = session.run(None, {"u": u[:150].astype(np.float32), "state": zero})
    y_rest, _ = session.run(None, {"u": u[150:].astype(np.float32), "state": middle})  # continues from a state
    np.testing.assert_allclose(y_rest, y_step[150:], rtol=0, atol=tol)
    np.testing.assert_allclose(y_step, model.simulate(u), rtol=0, atol=FLOAT_TOL * np.abs(y_step).max())


def test_metadata_state_layout_and_c_files(tmp_path: Path) -> None:
    model = dw.Ensemble([_model(layer="s4"), dw.build_model("lfr", n_u=2, n_y=2, seed=1, dt=0.01)])
    path = export_onnx(model, tmp_path / "model.onnx", extra=EXTRA)
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert (props["kind"], props["n_u"], props["n_y"], float(props["dt"])) == ("ensemble", "2", "2", 0.01)
    assert props["deepwiener_version"] == dw.__version__ and props["producer"] == "deepwiener"
    assert {key: json.loads(props[key]) for key in ("u_names", "y_names", "u_low", "u_high")} == {
        key: EXTRA[key] for key in ("u_names", "y_names", "u_low", "u_high")}
    assert props["data"] == "rig" and "y_unit" not in props
    layout = json.loads(props["state_layout"])
    assert [p["offset"] for p in layout] == list(np.cumsum([0] + [p["size"] for p in layout[:-1]]))
    n_state = sum(p["size"] for p in layout)
    assert onnx_session(path).get_inputs()[1].shape == [n_state] == [int(props["n_state"])]
    assert [p["what"].split(" ")[:3] for p in layout] == [
        ["member0", "block0", "S4"], ["member0", "block1", "S4"], ["member0", "integrator:", "the"],
        ["member1", "LFR", "state"]]
    assert [p["size"] for p in layout] == [3 * 4 * 2, 3 * 4 * 2, 2, 8]
    folder = export_c(model, tmp_path / "c", name="rig", extra=EXTRA, precision="float")
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "main.c", "rig.c", "rig.h"]
    header = (folder / "rig.h").read_text()
    for line in (f"#define RIG_N_STATE {n_state}", "typedef float rig_real;", "void rig_reset(rig_state *state);",
                 "void rig_step(rig_state *state, const rig_real *u, rig_real *y);", "u_high: [2.5, 0.5]"):
        assert line in header, line
    readme = (folder / "README.md").read_text()
    assert all(f"| {p['offset']} | {p['size']} | {p['what']} |" in readme for p in layout)


def test_the_c_program_reads_one_sample_per_line_and_refuses_malformed_lines(tmp_path: Path) -> None:
    model = _model(integrator=False)
    program = build(export_c(model, tmp_path / "c"))
    u = _inputs(5)
    y = run_program(program, u)
    text = "\n".join(" , ".join(f"{v:.17g}" for v in row) for row in u)
    spaced = subprocess.run([str(program)], input=f"\n{text}\r\n\n", capture_output=True, text=True, check=True)
    np.testing.assert_array_equal(np.loadtxt(spaced.stdout.splitlines(), delimiter=",", ndmin=2), y)
    for bad, why in (("1.0\n", "too few numbers"), ("1,2,3\n", "too many numbers"), ("1,x\n", "not a number"),
                     ("0,0\n1;2\n", "line 2: too few")):
        result = subprocess.run([str(program)], input=bad, capture_output=True, text=True)
        assert result.returncode == 1 and why in result.stderr, (bad, result.stderr)


class ToyLayer(nn.Module):
    """A layer of one's own that does not describe its step: eta = u, no state worth the name."""

    Options = LayerOptions

    def __init__(self, d_in: int, d_out: int, d_state: int, options: LayerOptions, *,
                 generator: torch.Generator) -> None:
        super().__init__()
        self.d_in, self.d_out = d_in, d_out

    def init_state(self, batch: int) -> Tensor:
        return torch.zeros(batch, 1)

    def forward(self, u: Tensor, state: Tensor | None = None, mode: str = "auto") -> tuple[Tensor, Tensor]:
        return u, self.init_state(u.shape[0])


def test_the_command_line_exports_refuses_existing_outputs_and_unexportable_layers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model()
    path = dw.save(model, tmp_path / "model.dw", extra=EXTRA)
    onnx_args = ["export", path, "--format", "onnx", "--out", tmp_path / "model.onnx"]
    assert run_cli(onnx_args).code == 0
    again = run_cli(onnx_args)
    assert again.code == 2 and again.err.startswith("error: ") and "exists" in again.err and "--force" in again.err
    assert again.err.count("\n") == 1
    assert run_cli([*onnx_args, "--force"]).code == 0
    c_args = ["export", path, "--format", "c", "--out", tmp_path / "c", "--precision", "float", "--name", "rig"]
    done = run_cli(c_args)
    assert done.code == 0 and "cc -O2 -std=c99" in done.out
    u = _inputs(300)
    np.testing.assert_allclose(run_program(build(tmp_path / "c"), u), model.simulate(u), rtol=0,
                               atol=FLOAT_TOL * np.abs(model.simulate(u)).max())
    assert run_cli(c_args).code == 2
    assert run_cli([*c_args, "--force"]).code == 0
    for args, message in (([*onnx_args[:3], "xml", "--out", tmp_path / "x"], "--format must be one of"),
                          ([*c_args[:6], "--sequence"], "--sequence applies to --format onnx"),
                          ([*onnx_args, "--force", "--precision", "float"], "--name and --precision apply"),
                          ([*c_args[:6], "--name", "3d", "--force"], "cannot name C functions"),
                          ([*c_args[:6], "--precision", "half", "--force"], "precision must be one of")):
        result = run_cli(args)
        assert result.code == 2 and message in result.err, (args, result.err)
    monkeypatch.setitem(LAYERS, "toy", ToyLayer)
    toy = dw.save(dw.DeepWiener(1, 1, layer="toy", d_model=2, n_layers=1), tmp_path / "toy.dw")
    refused = run_cli(["export", toy, "--format", "c", "--out", tmp_path / "toy"])
    assert refused.code == 2 and refused.err.count("\n") == 1
    assert "error: layer 'toy' cannot be exported: ToyLayer does not describe its one-sample step" in refused.err
    with pytest.raises(ConfigError, match="layer 'toy' cannot be exported"):
        export_onnx(dw.load(toy), tmp_path / "toy.onnx")
    assert not (tmp_path / "toy.onnx").exists() and not (tmp_path / "toy").exists()
