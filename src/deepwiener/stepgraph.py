"""The one-sample step of a model as a flat program of real operations: what ``deepwiener.export`` writes as ONNX
and as C.

Every model kind describes its step (``Model.export_step``) by adding operations to a :class:`StepGraph`; the
export package turns the same graph into an ONNX graph and into C source, so the two agree by construction. A
graph has one input vector ``u`` (n_u,) in physical units, one state vector (n_state,) made of named parts, and
computes the output ``y`` (n_y,) and the next state. Every value is a real vector of static size; every constant is
a float64 numpy array (cast to float32 by the emitters that ask for it). The zero state is the model's zero state.

Operations (:data:`Op`):

    Affine       out = sum_i M_i x_i + b       M_i dense (m, k), or block diagonal (G, p, q): G blocks p x q
    Map          out = f(x + bias; params)      per channel, f one of :data:`MAPS`
    Binary       out = a + b, a - b or a * b    elementwise
    Scale        out = scale * x + shift        elementwise, constant vectors
    Gather       out = x[index]                 constant integer index
    GroupSum     out[g] = sum of x[g m : (g + 1) m]
    LayerNorm    out = (x - mean) / sqrt(var + eps) * weight + bias

Complex states are written as (Re, Im) pairs and complex modes as real 2 x 2 blocks
(``systems.LinearSystem.real_blocks``), because ONNX runtimes and C support few complex operations. A dense term
whose entries outside G equal blocks are exactly zero (a bank of SISO systems, a diagonal feedthrough) is stored as
those blocks, so a bank of h channels costs h times less than its dense matrix.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

MAPS: dict[str, tuple[str, ...]] = {
    "identity": (),
    "relu": (),
    "tanh": (),
    "sigmoid": (),
    "exp": (),
    "softplus": (),  # log(1 + exp(z)), and z itself above 20 (torch's threshold)
    "gelu": (),  # z Phi(z), with the exact normal distribution function (erf)
    "gelu_tanh": (),  # torch's tanh approximation of gelu
    "elu": ("alpha",),  # z for z > 0, alpha (exp(z) - 1) else
    "poly": ("a2", "a3"),  # z + a2 z^2 + a3 z^3
    "linear_tanh": ("gain",),  # z + gain tanh(z)
}
"""The per-channel maps of :class:`Map` and the names of their per-channel parameters, z = x + bias."""
BINARY: tuple[str, ...] = ("add", "sub", "mul")

Array = np.ndarray


@dataclasses.dataclass(frozen=True)
class Affine:
    """out = sum_i M_i x_i (+ bias): each term's M (m, k) dense or (G, p, q) block diagonal (m = G p, k = G q)."""

    out: str
    terms: tuple[tuple[Array, str], ...]
    bias: Array | None


@dataclasses.dataclass(frozen=True)
class Map:
    """out = fn(x + bias; params), per channel; ``params`` holds the arrays named in ``MAPS[fn]``, each (width,)."""

    out: str
    fn: str
    x: str
    bias: Array | None
    params: dict[str, Array]


@dataclasses.dataclass(frozen=True)
class Binary:
    """out = a fn b elementwise, fn "add", "sub" or "mul"."""

    out: str
    fn: str
    a: str
    b: str


@dataclasses.dataclass(frozen=True)
class Scale:
    """out = scale * x + shift elementwise (either may be None: 1 and 0)."""

    out: str
    x: str
    scale: Array | None
    shift: Array | None


@dataclasses.dataclass(frozen=True)
class Gather:
    """out = x[index], index (size,) int64."""

    out: str
    x: str
    index: Array


@dataclasses.dataclass(frozen=True)
class GroupSum:
    """out[g] = sum_j x[g * group + j], for g < size(x) / group."""

    out: str
    x: str
    group: int


@dataclasses.dataclass(frozen=True)
class LayerNorm:
    """out = (x - mean(x)) / sqrt(var(x) + eps) * weight + bias, over the whole vector (biased variance)."""

    out: str
    x: str
    weight: Array
    bias: Array
    eps: float


Op = Affine | Map | Binary | Scale | Gather | GroupSum | LayerNorm


def inputs(op: Op) -> tuple[str, ...]:
    """The names of the vectors an operation reads."""
    if isinstance(op, Affine):
        return tuple(x for _, x in op.terms)
    if isinstance(op, Binary):
        return op.a, op.b
    return (op.x,)


@dataclasses.dataclass(frozen=True)
class StatePart:
    """One part of the flat state vector: ``state[offset : offset + size]``, read as the vector ``name``.

    Attributes:
        name: the vector holding the part's current value.
        offset, size: where it lies in the state vector.
        what: what it holds, for people (e.g. "block 0: 32 complex modes as (Re, Im) pairs").
    """

    name: str
    offset: int
    size: int
    what: str


def array(value: Any, dtype: type = np.float64) -> Array:
    """A tensor or array-like as a contiguous read-only numpy array of ``dtype`` (a copy, detached)."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().resolve_conj().to(torch.float64).numpy()
    out = np.array(value, dtype=dtype)
    out.flags.writeable = False
    return out


def block_form(matrix: Array) -> Array:
    """``matrix`` (m, k) as G blocks (G, m / G, k / G) when it is exactly zero outside them, for the largest G among
    k (one column per block) and m (one row per block) that applies; else itself."""
    m, k = matrix.shape
    for groups in sorted({k, m}, reverse=True):
        if groups < 2 or m % groups or k % groups:
            continue
        p, q = m // groups, k // groups
        blocks = matrix.reshape(groups, p, groups, q)
        own = np.arange(groups)
        outside = blocks.copy()
        outside[own, :, own, :] = 0
        if not outside.any():
            return array(blocks[own, :, own, :])
    return matrix


class StepGraph:
    """A model's one-sample step under construction (module docstring): operations are added by the model's
    ``export_step`` through the methods below, each returning the name of the vector it computes.

    Args:
        n_u, n_y: sizes of the input and the output.

    Attributes:
        u: the name of the input vector (n_u,).
        ops: the operations in order.
        sizes: the size of every vector by name.
        parts: the parts of the state vector in order.
        next: the vector holding each part's next value, by the part's name.
        output: the name of the output vector (set by :meth:`finish`).
    """

    def __init__(self, n_u: int, n_y: int) -> None:
        self.n_u, self.n_y = n_u, n_y
        self.u = "u"
        self.ops: list[Op] = []
        self.sizes: dict[str, int] = {self.u: n_u}
        self.parts: list[StatePart] = []
        self.next: dict[str, str] = {}
        self.output: str | None = None
        self._scopes: list[str] = []

    @property
    def n_state(self) -> int:
        """Size of the flat state vector."""
        return sum(part.size for part in self.parts)

    @contextlib.contextmanager
    def scope(self, name: str) -> Iterator[None]:
        """Name the vectors made inside after ``name`` too (e.g. "block0"), as a prefix."""
        self._scopes.append(name)
        try:
            yield
        finally:
            self._scopes.pop()

    def _new(self, hint: str, size: int) -> str:
        base = re.sub(r"\W", "_", "_".join([*self._scopes, hint]))
        name, k = base, 1
        while name in self.sizes:
            k += 1
            name = f"{base}{k}"
        self.sizes[name] = int(size)
        return name

    def _size(self, name: str) -> int:
        if name not in self.sizes:
            raise ValueError(f"unknown vector {name!r}")
        return self.sizes[name]

    def _vector(self, value: Any, size: int, what: str) -> Array:
        out = array(value).reshape(-1)
        if out.shape != (size,):
            raise ValueError(f"{what} must have {size} entries, got {out.shape}")
        return out

    # ------------------------------------------------------------------------------------------- the state

    def state(self, size: int, what: str, hint: str = "x") -> str:
        """Declare the next part of the state vector (``what`` says what it holds); returns its current value's
        name. Give it its next value with :meth:`update`."""
        name = self._new(hint, size)
        self.parts.append(StatePart(name, self.n_state, int(size), " ".join([*self._scopes, what])))
        return name

    def update(self, part: str, value: str) -> None:
        """Set the next value of the state part ``part`` (a name returned by :meth:`state`)."""
        if part not in {p.name for p in self.parts} or part in self.next:
            raise ValueError(f"{part!r} is not a state part without a next value")
        if self._size(value) != self._size(part):
            raise ValueError(f"the next value of {part!r} has size {self._size(value)}, not {self._size(part)}")
        self.next[part] = value

    # ------------------------------------------------------------------------------------------- operations

    def affine(self, terms: Sequence[tuple[Any, str]], bias: Any = None, hint: str = "affine") -> str:
        """out = sum_i M_i x_i + bias; each M (m, k) is a tensor or array (stored as blocks where it is block
        diagonal, :func:`block_form`), or already (G, p, q) blocks."""
        stored = []
        m = None
        for matrix, x in terms:
            mat = array(matrix)
            mat = block_form(mat) if mat.ndim == 2 else mat
            rows, cols = (mat.shape if mat.ndim == 2 else (mat.shape[0] * mat.shape[1], mat.shape[0] * mat.shape[2]))
            if cols != self._size(x) or (m is not None and rows != m):
                raise ValueError(f"an affine term of shape {mat.shape} does not fit {x!r} ({self._size(x)}) or the "
                                 f"output ({m})")
            m = rows
            stored.append((mat, x))
        if m is None:
            raise ValueError("an affine operation needs at least one term")
        out = self._new(hint, m)
        self.ops.append(Affine(out, tuple(stored), None if bias is None else self._vector(bias, m, "the bias")))
        return out

    def map(self, fn: str, x: str, bias: Any = None, hint: str | None = None, **params: Any) -> str:
        """out = fn(x + bias; params) per channel (:data:`MAPS`; the parameters by name, each (width,) or a scalar
        for every channel)."""
        if fn not in MAPS or set(params) != set(MAPS[fn]):
            raise ValueError(f"map {fn!r} with parameters {sorted(params)}; known: {MAPS}")
        width = self._size(x)
        arrays = {key: self._vector(np.broadcast_to(array(v), (width,)), width, key) for key, v in params.items()}
        out = self._new(hint or fn, width)
        self.ops.append(Map(out, fn, x, None if bias is None else self._vector(bias, width, "the bias"), arrays))
        return out

    def _binary(self, fn: str, a: str, b: str) -> str:
        if self._size(a) != self._size(b):
            raise ValueError(f"{fn} of vectors of sizes {self._size(a)} and {self._size(b)}")
        out = self._new(fn, self._size(a))
        self.ops.append(Binary(out, fn, a, b))
        return out

    def add(self, a: str, b: str) -> str:
        """a + b."""
        return self._binary("add", a, b)

    def sub(self, a: str, b: str) -> str:
        """a - b."""
        return self._binary("sub", a, b)

    def mul(self, a: str, b: str) -> str:
        """a * b elementwise."""
        return self._binary("mul", a, b)

    def scale(self, x: str, scale: Any = None, shift: Any = None, hint: str = "scaled") -> str:
        """scale * x + shift elementwise (constants of x's size; None: 1 or 0)."""
        width = self._size(x)
        out = self._new(hint, width)
        self.ops.append(Scale(out, x, None if scale is None else self._vector(scale, width, "the scale"),
                              None if shift is None else self._vector(shift, width, "the shift")))
        return out

    def gather(self, x: str, index: Any) -> str:
        """x[index] (integer index into x)."""
        idx = array(index, np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self._size(x)):
            raise ValueError(f"index out of range for {x!r} ({self._size(x)})")
        out = self._new("gather", idx.size)
        self.ops.append(Gather(out, x, idx))
        return out

    def group_sum(self, x: str, group: int) -> str:
        """Sums of consecutive groups of ``group`` entries of x."""
        if self._size(x) % group:
            raise ValueError(f"{x!r} ({self._size(x)}) does not split into groups of {group}")
        out = self._new("sum", self._size(x) // group)
        self.ops.append(GroupSum(out, x, int(group)))
        return out

    def layer_norm(self, x: str, weight: Any, bias: Any, eps: float) -> str:
        """torch's LayerNorm over the whole vector x."""
        width = self._size(x)
        out = self._new("norm", width)
        self.ops.append(LayerNorm(out, x, self._vector(weight, width, "the weight"),
                                  self._vector(bias, width, "the bias"), float(eps)))
        return out

    # ------------------------------------------------------------------------------------------- the end

    def finish(self, output: str) -> StepGraph:
        """Set the output vector (n_y,), check that every state part has a next value and drop the operations
        whose results are not used; returns the graph."""
        if self._size(output) != self.n_y:
            raise ValueError(f"the output {output!r} has size {self._size(output)}, not n_y = {self.n_y}")
        missing = [p.name for p in self.parts if p.name not in self.next]
        if missing:
            raise ValueError(f"state parts without a next value: {missing}")
        self.output = output
        live = {output, *self.next.values()}
        kept = []
        for op in reversed(self.ops):
            if op.out in live:
                kept.append(op)
                live |= set(inputs(op))
        self.ops = kept[::-1]
        return self

    def used(self) -> set[str]:
        """The names of the vectors that operations, the output or the next state read."""
        return {name for op in self.ops for name in inputs(op)} | {self.output, *self.next.values()}

    def layout(self) -> list[dict[str, Any]]:
        """The state layout for people and metadata: ``[{"offset", "size", "what"}, ...]`` in order."""
        return [{"offset": p.offset, "size": p.size, "what": p.what} for p in self.parts]
