"""ONNX export: a model's one-sample step (``stepgraph``) as an ONNX graph, float32, static shapes.

The step graph has the inputs ``u`` (n_u,) and ``state`` (n_state,) and the outputs ``y`` (n_y,) and
``next_state`` (n_state,); the sequence graph (``sequence=True``) runs the same step over a record with an ONNX
``Scan``: inputs ``u`` (time, n_u) and ``state`` (n_state,), outputs ``y`` (time, n_y) and ``next_state`` (the state
after the last sample). Opset 17, IR version 8, standard operators only (onnxruntime, and runtimes such as tract or
ONNX Runtime's C/C++/Rust bindings). The model's description (``common.describe``) is stored as metadata_props.

The graph is written directly with ``onnx.helper`` from the step graph the C export also reads, instead of
tracing a torch module with ``torch.onnx.export``: one description for both exports, and no dependence on torch's
exporters (the default one needs onnxscript).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from deepwiener.errors import ConfigError
from deepwiener.stepgraph import Affine, Binary, Gather, GroupSum, LayerNorm, Map, Op, Scale, StepGraph

OPSET = 17
IR_VERSION = 8


def _onnx() -> Any:
    """The onnx module, or ConfigError naming the extra that installs it."""
    try:
        import onnx
    except ImportError as exc:
        raise ConfigError("ONNX export needs the onnx package: pip install 'deepwiener[export]'") from exc
    return onnx


class _Emitter:
    """Nodes and initializers of one ONNX graph, the step graph's vectors named ``prefix + "v_" + name``."""

    def __init__(self, onnx: Any, prefix: str, u: str) -> None:
        self.onnx, self.prefix = onnx, prefix
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.names = {"u": u}
        self._count = 0

    def _fresh(self, hint: str) -> str:
        self._count += 1
        return f"{self.prefix}{hint}__{self._count}"

    def const(self, value: Any, dtype: type = np.float32) -> str:
        name = self._fresh("const")
        self.inits.append(self.onnx.numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def node(self, op_type: str, inputs: list[str], out: str | None = None, **attrs: Any) -> str:
        out = out or self._fresh(op_type.lower())
        self.nodes.append(self.onnx.helper.make_node(op_type, inputs, [out], **attrs))
        return out

    def vector(self, name: str) -> str:
        return self.names[name]

    def emit(self, op: Op) -> None:
        out = self.names[op.out] = f"{self.prefix}v_{op.out}"
        if isinstance(op, Affine):
            self._affine(op, out)
        elif isinstance(op, Map):
            z = self.vector(op.x) if op.bias is None else self.node("Add", [self.vector(op.x), self.const(op.bias)])
            self._map(op, z, out)
        elif isinstance(op, Binary):
            self.node({"add": "Add", "sub": "Sub", "mul": "Mul"}[op.fn], [self.vector(op.a), self.vector(op.b)], out)
        elif isinstance(op, Scale):
            x = self.vector(op.x)
            if op.scale is not None:
                x = self.node("Mul", [x, self.const(op.scale)], None if op.shift is not None else out)
            if op.shift is not None:
                self.node("Add", [x, self.const(op.shift)], out)
            elif op.scale is None:
                self.node("Identity", [x], out)
        elif isinstance(op, Gather):
            self.node("Gather", [self.vector(op.x), self.const(op.index, np.int64)], out, axis=0)
        elif isinstance(op, GroupSum):
            groups = self.node("Reshape", [self.vector(op.x), self.const([-1, op.group], np.int64)])
            self.node("ReduceSum", [groups, self.const([1], np.int64)], out, keepdims=0)
        elif isinstance(op, LayerNorm):
            self.node("LayerNormalization", [self.vector(op.x), self.const(op.weight), self.const(op.bias)], out,
                      axis=-1, epsilon=op.eps)
        else:
            raise TypeError(f"no ONNX form of {type(op).__name__}")

    def _affine(self, op: Affine, out: str) -> None:
        parts = []
        for matrix, x in op.terms:
            if matrix.ndim == 2:
                parts.append(self.node("MatMul", [self.const(matrix), self.vector(x)]))
                continue
            groups, rows, cols = matrix.shape
            column = self.node("Reshape", [self.vector(x), self.const([groups, cols, 1], np.int64)])
            product = self.node("MatMul", [self.const(matrix), column])  # (G, p, 1)
            parts.append(self.node("Reshape", [product, self.const([groups * rows], np.int64)]))
        if op.bias is not None:
            parts.append(self.const(op.bias))
        if len(parts) == 1:
            self.node("Identity", parts, out)
            return
        total = parts[0]
        for k, part in enumerate(parts[1:], start=2):
            total = self.node("Add", [total, part], out if k == len(parts) else None)

    def _map(self, op: Map, z: str, out: str) -> None:
        fn, p = op.fn, op.params
        if fn in ("identity", "relu", "tanh", "sigmoid", "exp"):
            op_type = {"identity": "Identity", "relu": "Relu", "tanh": "Tanh", "sigmoid": "Sigmoid", "exp": "Exp"}[fn]
            self.node(op_type, [z], out)
            return
        if fn == "gelu":  # z Phi(z) = z (1 + erf(z / sqrt 2)) / 2, in the node pattern onnxruntime fuses into Gelu
            erf = self.node("Erf", [self.node("Div", [z, self.const(math.sqrt(2.0))])])
            product = self.node("Mul", [z, self.node("Add", [erf, self.const(1.0)])])
            self.node("Mul", [product, self.const(0.5)], out)
        elif fn == "gelu_tanh":  # z (1 + tanh(sqrt(2/pi) (z + 0.044715 z^3))) / 2
            cube = self.node("Mul", [self.node("Mul", [z, z]), z])
            inner = self.node("Add", [z, self.node("Mul", [self.const(0.044715), cube])])
            tanh = self.node("Tanh", [self.node("Mul", [self.const(math.sqrt(2 / math.pi)), inner])])
            product = self.node("Mul", [z, self.node("Add", [tanh, self.const(1.0)])])
            self.node("Mul", [product, self.const(0.5)], out)
        elif fn == "softplus":  # torch's threshold: z itself above 20
            big = self.node("Greater", [z, self.const(20.0)])
            self.node("Where", [big, z, self.node("Softplus", [z])], out)
        elif fn == "elu" and np.all(p["alpha"] == p["alpha"][0]):  # one alpha (torch's ELU): ONNX's Elu
            self.node("Elu", [z], out, alpha=float(p["alpha"][0]))
        elif fn == "elu":  # an alpha per channel
            negative = self.node("Mul", [self.const(p["alpha"]), self.node("Sub", [self.node("Exp", [z]),
                                                                                  self.const(1.0)])])
            self.node("Where", [self.node("Greater", [z, self.const(0.0)]), z, negative], out)
        elif fn == "poly":  # z + z^2 (a2 + a3 z)
            inner = self.node("Add", [self.const(p["a2"]), self.node("Mul", [self.const(p["a3"]), z])])
            self.node("Add", [z, self.node("Mul", [self.node("Mul", [z, z]), inner])], out)
        elif fn == "linear_tanh":
            self.node("Add", [z, self.node("Mul", [self.const(p["gain"]), self.node("Tanh", [z])])], out)
        else:
            raise TypeError(f"no ONNX form of the map {fn!r}")


def _step_graph(onnx: Any, graph: StepGraph, prefix: str, names: Mapping[str, str], shapes: Mapping[str, list[Any]],
                scan_body: bool) -> Any:
    """The ONNX graph of the step: inputs names["u"], names["state"] and outputs names["y"], names["next_state"],
    with the given shapes (a Scan body takes the state first: inputs state, u and outputs next_state, y)."""
    emitter = _Emitter(onnx, prefix, names["u"])
    used = graph.used()
    for part in graph.parts:
        emitter.names[part.name] = f"{prefix}v_{part.name}"
        if part.name in used:
            emitter.node("Slice", [names["state"], emitter.const([part.offset], np.int64),
                                   emitter.const([part.offset + part.size], np.int64)], emitter.vector(part.name))
    for op in graph.ops:
        emitter.emit(op)
    nexts = [emitter.vector(graph.next[part.name]) for part in graph.parts]
    emitter.node("Concat", nexts, names["next_state"], axis=0)
    emitter.node("Identity", [emitter.vector(graph.output)], names["y"])
    tensor = onnx.helper.make_tensor_value_info
    order = (("state", "u"), ("next_state", "y")) if scan_body else (("u", "state"), ("y", "next_state"))
    inputs, outputs = ([tensor(names[k], onnx.TensorProto.FLOAT, shapes[k]) for k in keys] for keys in order)
    return onnx.helper.make_graph(emitter.nodes, "step", inputs, outputs, emitter.inits)


def onnx_model(graph: StepGraph, metadata: Mapping[str, str], sequence: bool = False) -> Any:
    """The ONNX model (``onnx.ModelProto``, checked) of a step graph: the step, or with ``sequence`` the whole-record
    graph (module docstring); ``metadata`` becomes its metadata_props.

    Raises:
        ConfigError: the onnx package is missing.
    """
    onnx = _onnx()
    n_u, n_y, n_state = graph.n_u, graph.n_y, graph.n_state
    names = {"u": "u", "state": "state", "y": "y", "next_state": "next_state"}
    step_shapes = {"u": [n_u], "state": [n_state], "y": [n_y], "next_state": [n_state]}
    if not sequence:
        main = _step_graph(onnx, graph, "", names, step_shapes, scan_body=False)
    else:
        body_names = {key: f"step_{key}" for key in names}
        body = _step_graph(onnx, graph, "step_", body_names, step_shapes, scan_body=True)
        scan = onnx.helper.make_node("Scan", ["state", "u"], ["next_state", "y"], body=body, num_scan_inputs=1)
        tensor = onnx.helper.make_tensor_value_info
        main = onnx.helper.make_graph(
            [scan], "sequence",
            [tensor("u", onnx.TensorProto.FLOAT, ["time", n_u]), tensor("state", onnx.TensorProto.FLOAT, [n_state])],
            [tensor("y", onnx.TensorProto.FLOAT, ["time", n_y]),
             tensor("next_state", onnx.TensorProto.FLOAT, [n_state])])
    model = onnx.helper.make_model(main, producer_name="deepwiener", producer_version=metadata.get(
        "deepwiener_version", ""), opset_imports=[onnx.helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    model.doc_string = ("The one-sample step" if not sequence else "The simulation of a record") + (
        f" of a deepwiener model ({metadata.get('kind', '')}): {metadata.get('units', '')}.")
    onnx.helper.set_model_props(model, dict(metadata))
    onnx.checker.check_model(model, full_check=True)
    return model
