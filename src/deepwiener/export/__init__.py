"""Deploy a model outside Python: its one-sample step as an ONNX graph or as dependency-free C.

    dw.export_onnx(model, "model.onnx")              # the step: u (n_u,), state (n_state,) -> y, next_state
    dw.export_onnx(model, "seq.onnx", sequence=True) # a whole record: u (time, n_u), state -> y (time, n_y), ...
    dw.export_c(model, "model_c", precision="double") # NAME.h, NAME.c, main.c, README.md

Both are written from one description, the model's ``step_graph()`` (``stepgraph``): every kind implements
``Model.export_step``, complex modes become real 2 x 2 blocks, the normalisation is inside (physical units in and
out), and the whole state is one flat vector whose zeros are the model's zero state (:func:`flatten_state` turns a
model's state into it). The metadata (kind, sizes, dt, state layout, the training input range when the model file
records it, the deepwiener version) go into the ONNX metadata_props and the C header and README. ONNX needs the
``export`` extra (``pip install 'deepwiener[export]'``: onnx; onnxruntime runs the graphs).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from deepwiener.export.common import check_output, describe, flatten_state, metadata_strings
from deepwiener.export.to_c import PRECISIONS, c_sources, check_name
from deepwiener.export.to_onnx import onnx_model
from deepwiener.files import write_file
from deepwiener.models import Model

__all__ = ["PRECISIONS", "export_c", "export_onnx", "flatten_state"]


def export_onnx(model: Model, path: str | Path, *, sequence: bool = False, extra: Mapping[str, Any] | None = None,
                force: bool = False) -> Path:
    """Write a model's one-sample step (or, with ``sequence``, its simulation of a record) as an ONNX file, float32.

    Args:
        model: a model of any kind whose parts all describe their step.
        path: the ONNX file to write.
        sequence: write the whole-record graph (``u`` (time, n_u)) instead of the step.
        extra: the model file's extra information (``io.read_info(file)["extra"]``): channel names and the training
            input range go into the metadata.
        force: overwrite an existing file.

    Returns:
        The path written.

    Raises:
        ConfigError: the file exists (without ``force``), a part of the model cannot be exported (naming it), or
            onnx is not installed.
    """
    path = Path(path)
    check_output(path, force, "file")
    graph = model.step_graph()
    proto = onnx_model(graph, metadata_strings(describe(model, graph, extra)), sequence=sequence)
    return write_file(path, proto.SerializeToString())


def export_c(model: Model, folder: str | Path, *, precision: str = "double", name: str | None = None,
             extra: Mapping[str, Any] | None = None, force: bool = False) -> Path:
    """Write a model's one-sample step as plain C99 (``NAME.h``, ``NAME.c``, ``main.c``, ``README.md``) into a folder.

    Args:
        model: a model of any kind whose parts all describe their step.
        folder: the folder to write (created; refused when it holds files, unless ``force``).
        precision: "double" or "float": the type of ``NAME_real``.
        name: the prefix of the C names and files, a C identifier (default: the model's kind).
        extra: the model file's extra information, as for :func:`export_onnx`.
        force: write into a folder that holds files (overwriting those of the same names).

    Returns:
        The folder.

    Raises:
        ConfigError: the folder holds files (without ``force``), an invalid name or precision, or a part of the
            model cannot be exported (naming it).
    """
    folder = Path(folder)
    name = check_name(name or model.kind)
    check_output(folder, force, "folder")
    graph = model.step_graph()
    for file, text in c_sources(graph, name, precision, describe(model, graph, extra)).items():
        write_file(folder / file, text)
    return folder
