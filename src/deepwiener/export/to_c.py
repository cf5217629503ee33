"""C export: a model's one-sample step (``stepgraph``) as plain C99 source, libm only, no allocation.

:func:`c_sources` writes four files for a model named ``NAME`` (a C identifier):

- ``NAME.h``: ``NAME_real`` (double or float), ``NAME_state`` (the flat state vector ``x[NAME_N_STATE]``), the
  sizes ``NAME_N_U``, ``NAME_N_Y``, ``NAME_N_STATE`` and ``NAME_reset(NAME_state *)``,
  ``NAME_step(NAME_state *, const NAME_real *u, NAME_real *y)``;
- ``NAME.c``: every weight as a ``static const`` array, the maps as C functions, the step;
- ``main.c``: reads u from stdin (one sample per line, n_u comma-separated numbers, no header), simulates from the
  zero state and writes y to stdout in the same format (``%.17g`` in double, ``%.9g`` in float);
- ``README.md``: how to build and call it, the state layout and the model's description.

``cc -O2 -std=c99 -o simulate DIR/*.c -lm`` builds the program; the code compiles without warnings under
``-std=c99 -Wall -Wextra -pedantic``. The names carry the model's name so that several exported models link into
one program. Constants are written to round trip (17 significant digits in double, 9 in float).
"""

from __future__ import annotations

import json
import keyword
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from deepwiener.errors import ConfigError
from deepwiener.stepgraph import MAPS, Affine, Binary, Gather, GroupSum, LayerNorm, Map, Op, Scale, StepGraph

PRECISIONS: dict[str, str] = {"double": "double", "float": "float"}
"""The C type of ``NAME_real`` by the name of the precision."""
_C_KEYWORDS = frozenset(
    "auto break case char const continue default do double else enum extern float for goto if inline int long "
    "register restrict return short signed sizeof static struct switch typedef union unsigned void volatile while "
    "_Bool _Complex _Imaginary main".split())
_MATH = ("exp", "expm1", "log1p", "tanh", "erf", "sqrt")

# The maps as C functions of z = x + bias and their per-channel parameters (stepgraph.MAPS); "{f}" marks libm calls.
_MAP_BODIES: dict[str, str] = {
    "identity": "return z;",
    "relu": "return z > 0 ? z : 0;",
    "tanh": "return {tanh}(z);",
    "sigmoid": "return 1 / (1 + {exp}(-z));",
    "exp": "return {exp}(z);",
    "softplus": "return z > 20 ? z : {log1p}({exp}(z));",
    "gelu": "return (real)0.5 * z * (1 + {erf}(z * (real)0.70710678118654752440));",
    "gelu_tanh": "return (real)0.5 * z * (1 + {tanh}((real)0.79788456080286535588 * "
                 "(z + (real)0.044715 * z * z * z)));",
    "elu": "return z > 0 ? z : alpha * {expm1}(z);",
    "poly": "return z + z * z * (a2 + a3 * z);",
    "linear_tanh": "return z + gain * {tanh}(z);",
}


def check_name(name: str) -> str:
    """``name`` if it can prefix the C names of an export (an identifier, not a keyword, not "main").

    Raises:
        ConfigError: another name.
    """
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,30}", name) or name in _C_KEYWORDS or keyword.iskeyword(name):
        raise ConfigError(f"the name {name!r} cannot name C functions: use letters, digits and _ (not first a digit, "
                          "at most 31 characters, not a C keyword or 'main')")
    return name


def _literal(value: float, precision: str) -> str:
    """A C literal that reads back as ``value`` in the precision."""
    if not np.isfinite(value):
        raise ConfigError(f"cannot export a model with a non-finite parameter ({value})")
    if precision == "double":
        return repr(float(value))
    text = f"{float(np.float32(value)):.9g}"
    return (text if any(c in text for c in ".en") else text + ".0") + "f"


class _Code:
    """The step function's text and the constants and helpers it uses."""

    def __init__(self, precision: str) -> None:
        self.precision = precision
        self.constants: list[str] = []
        self.body: list[str] = []
        self.maps: set[str] = set()
        self.helpers: set[str] = set()

    def math(self, text: str) -> str:
        """Fill the libm names ({exp}, ...) of ``text`` for the precision."""
        suffix = "f" if self.precision == "float" else ""
        return text.format(**{f: f + suffix for f in _MATH})

    def const(self, name: str, values: np.ndarray, ctype: str = "real") -> str:
        flat = np.asarray(values).reshape(-1)
        items = [str(int(v)) for v in flat] if ctype == "int" else [_literal(v, self.precision) for v in flat]
        rows = ",\n    ".join(", ".join(items[k : k + 6]) for k in range(0, len(items), 6))
        self.constants.append(f"static const {ctype} k_{name}[{len(items)}] = {{\n    {rows}\n}};")
        return f"k_{name}"

    def emit(self, op: Op, sizes: Mapping[str, int]) -> None:
        out, n = f"v_{op.out}", sizes[op.out]
        if isinstance(op, Affine):
            self.helpers.add("affine")
            if op.bias is None:
                self.body.append(f"    memset({out}, 0, sizeof {out});")
            else:
                self.body.append(f"    memcpy({out}, {self.const(op.out + '_bias', op.bias)}, sizeof {out});")
            for k, (matrix, x) in enumerate(op.terms):
                name = self.const(f"{op.out}_M{k}", matrix)
                groups, rows, cols = matrix.shape if matrix.ndim == 3 else (1, *matrix.shape)
                self.body.append(f"    affine_add({out}, {name}, v_{x}, {groups}, {rows}, {cols});")
        elif isinstance(op, Map):
            self.maps.add(op.fn)
            z = f"v_{op.x}[i]" if op.bias is None else f"v_{op.x}[i] + {self.const(op.out + '_bias', op.bias)}[i]"
            params = "".join(f", {self.const(f'{op.out}_{key}', op.params[key])}[i]" for key in MAPS[op.fn])
            self.body.append(f"    for (i = 0; i < {n}; ++i) {out}[i] = map_{op.fn}({z}{params});")
        elif isinstance(op, Binary):
            sign = {"add": "+", "sub": "-", "mul": "*"}[op.fn]
            self.body.append(f"    for (i = 0; i < {n}; ++i) {out}[i] = v_{op.a}[i] {sign} v_{op.b}[i];")
        elif isinstance(op, Scale):
            value = f"v_{op.x}[i]"
            if op.scale is not None:
                value = f"{self.const(op.out + '_scale', op.scale)}[i] * {value}"
            if op.shift is not None:
                value = f"{value} + {self.const(op.out + '_shift', op.shift)}[i]"
            self.body.append(f"    for (i = 0; i < {n}; ++i) {out}[i] = {value};")
        elif isinstance(op, Gather):
            index = self.const(op.out + "_index", op.index, "int")
            self.body.append(f"    for (i = 0; i < {n}; ++i) {out}[i] = v_{op.x}[{index}[i]];")
        elif isinstance(op, GroupSum):
            self.helpers.add("group_sum")
            self.body.append(f"    group_sum({out}, v_{op.x}, {n}, {op.group});")
        elif isinstance(op, LayerNorm):
            self.helpers.add("layer_norm")
            weight, bias = self.const(op.out + "_weight", op.weight), self.const(op.out + "_bias", op.bias)
            self.body.append(f"    layer_norm({out}, v_{op.x}, {weight}, {bias}, {n}, "
                             f"{_literal(op.eps, self.precision)});")
        else:
            raise TypeError(f"no C form of {type(op).__name__}")

    def functions(self) -> list[str]:
        """The map functions and helpers the step uses, in a fixed order."""
        out = []
        for fn in MAPS:
            if fn in self.maps:
                params = "".join(f", real {key}" for key in MAPS[fn])
                out.append(f"static real map_{fn}(real z{params})\n{{\n    {self.math(_MAP_BODIES[fn])}\n}}")
        if "affine" in self.helpers:
            out.append("/* out += blockdiag(M) x: g blocks of rows x cols, M row-major (g = 1: a dense matrix). */\n"
                       "static void affine_add(real *out, const real *M, const real *x, int g, int rows, int cols)\n"
                       "{\n    int b, i, j;\n    for (b = 0; b < g; ++b) {\n"
                       "        for (i = 0; i < rows; ++i) {\n            real acc = 0;\n"
                       "            const real *row = M + (b * rows + i) * cols;\n"
                       "            for (j = 0; j < cols; ++j) acc += row[j] * x[b * cols + j];\n"
                       "            out[b * rows + i] += acc;\n        }\n    }\n}")
        if "group_sum" in self.helpers:
            out.append("static void group_sum(real *out, const real *x, int n, int group)\n"
                       "{\n    int g, j;\n    for (g = 0; g < n; ++g) {\n        real acc = 0;\n"
                       "        for (j = 0; j < group; ++j) acc += x[g * group + j];\n"
                       "        out[g] = acc;\n    }\n}")
        if "layer_norm" in self.helpers:
            out.append(self.math(
                "/* torch's LayerNorm: (x - mean) / sqrt(var + eps) * weight + bias, biased variance. */\n"
                "static void layer_norm(real *out, const real *x, const real *weight, const real *bias, int n, "
                "real eps)\n{{\n    int i;\n    real mean = 0, var = 0, scale;\n"
                "    for (i = 0; i < n; ++i) mean += x[i];\n    mean /= n;\n"
                "    for (i = 0; i < n; ++i) var += (x[i] - mean) * (x[i] - mean);\n"
                "    scale = 1 / {sqrt}(var / n + eps);\n"
                "    for (i = 0; i < n; ++i) out[i] = (x[i] - mean) * scale * weight[i] + bias[i];\n}}"))
        return out


def _comment(info: Mapping[str, Any]) -> str:
    """The model's description as the lines of a C comment."""
    lines = [f"model kind {info['kind']}: {info['n_u']} inputs, {info['n_y']} outputs, {info['n_state']} states, "
             f"dt = {info['dt']!r} s; generated by deepwiener {info['deepwiener_version']}.", str(info["units"]) + "."]
    for key in ("u_names", "y_names", "u_low", "u_high", "data"):
        if key in info:
            lines.append(f"{key}: {json.dumps(info[key])}")
    return "\n".join(f" * {line}" for line in lines)


def c_sources(graph: StepGraph, name: str, precision: str, info: Mapping[str, Any]) -> dict[str, str]:
    """The C files of a step graph (module docstring) by file name.

    Args:
        graph: the model's step graph.
        name: the C name prefix (:func:`check_name`).
        precision: "double" or "float".
        info: the model's description (``common.describe``).

    Raises:
        ConfigError: an invalid name or precision, or a non-finite parameter.
    """
    check_name(name)
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    upper = name.upper()
    code = _Code(precision)
    used = graph.used()
    declarations = ["    const real *v_u = u;"] if graph.u in used else []
    for part in graph.parts:
        if part.name in used:
            declarations.append(f"    const real *v_{part.name} = state->x + {part.offset}; /* {part.what} */")
    for op in graph.ops:
        declarations.append(f"    real v_{op.out}[{graph.sizes[op.out]}];")
        code.emit(op, graph.sizes)
    updates = [f"    memcpy(state->x + {part.offset}, v_{graph.next[part.name]}, {part.size} * sizeof(real));"
               for part in graph.parts if graph.next[part.name] != part.name]
    uses_loop = any("[i]" in line for line in code.body)
    step = "\n".join([*declarations, *(["    int i;"] if uses_loop else []), "", *code.body, "", *updates,
                      f"    memcpy(y, v_{graph.output}, {graph.n_y} * sizeof(real));"])
    header = f"""/* {name}.h: the one-sample step of a deepwiener model, plain C99 ({precision}).
{_comment(info)}
 * See README.md: the state layout, the build, the program main.c. */
#ifndef {upper}_H
#define {upper}_H

#define {upper}_N_U {graph.n_u}
#define {upper}_N_Y {graph.n_y}
#define {upper}_N_STATE {graph.n_state}
#define {upper}_DT {info['dt']!r}

typedef {PRECISIONS[precision]} {name}_real;

/* The whole model state as one flat vector; all zeros is the model's zero state. */
typedef struct {{
    {name}_real x[{max(graph.n_state, 1)}];
}} {name}_state;

/* Set the state to the model's zero state. */
void {name}_reset({name}_state *state);

/* One sample: u[{upper}_N_U] -> y[{upper}_N_Y] in physical units; advances the state. */
void {name}_step({name}_state *state, const {name}_real *u, {name}_real *y);

#endif
"""
    source = "\n\n".join([
        f"/* {name}.c: the one-sample step of a deepwiener model ({precision}), generated: do not edit.\n"
        f"{_comment(info)} */\n#include <math.h>\n#include <string.h>\n\n#include \"{name}.h\"\n\n"
        f"typedef {name}_real real;",
        *code.constants, *code.functions(),
        f"void {name}_reset({name}_state *state)\n{{\n    memset(state->x, 0, sizeof state->x);\n}}",
        f"void {name}_step({name}_state *state, const real *u, real *y)\n{{\n{step}\n}}",
    ]) + "\n"
    return {f"{name}.h": header, f"{name}.c": source, "main.c": _main(name, precision),
            "README.md": _readme(graph, name, precision, info)}


def _main(name: str, precision: str) -> str:
    """main.c: the stdin -> stdout simulation program."""
    upper = name.upper()
    digits = 17 if precision == "double" else 9
    return f"""/* main.c: simulate {name} from the zero state. Reads u from stdin, one sample per line ({upper}_N_U
 * comma-separated numbers, no header); writes y to stdout in the same format. Generated by deepwiener. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "{name}.h"

#define LINE_CHARS (64 + 64 * {upper}_N_U)

static int fail(long line, const char *why)
{{
    fprintf(stderr, "line %ld: %s (expected %d comma-separated numbers)\\n", line, why, {upper}_N_U);
    return 1;
}}

int main(void)
{{
    static char line[LINE_CHARS];
    {name}_state state;
    {name}_real u[{upper}_N_U], y[{upper}_N_Y];
    long number = 0;
    int i;

    {name}_reset(&state);
    while (fgets(line, sizeof line, stdin) != NULL) {{
        char *p = line;
        ++number;
        if (strchr(line, '\\n') == NULL && !feof(stdin)) return fail(number, "line too long");
        while (*p == ' ' || *p == '\\t' || *p == '\\r' || *p == '\\n') ++p;
        if (*p == '\\0') continue; /* a blank line */
        for (i = 0; i < {upper}_N_U; ++i) {{
            char *end;
            double value = strtod(p, &end);
            if (end == p) return fail(number, "not a number");
            u[i] = ({name}_real)value;
            p = end;
            while (*p == ' ' || *p == '\\t') ++p;
            if (i + 1 < {upper}_N_U) {{
                if (*p != ',') return fail(number, "too few numbers");
                ++p;
            }}
        }}
        while (*p == ' ' || *p == '\\t' || *p == '\\r' || *p == '\\n') ++p;
        if (*p != '\\0') return fail(number, "too many numbers or trailing text");
        {name}_step(&state, u, y);
        for (i = 0; i < {upper}_N_Y; ++i) printf("%s%.{digits}g", i ? "," : "", (double)y[i]);
        putchar('\\n');
    }}
    return 0;
}}
"""


def _readme(graph: StepGraph, name: str, precision: str, info: Mapping[str, Any]) -> str:
    """README.md of the exported folder."""
    upper = name.upper()
    rows = "\n".join(f"| {p['offset']} | {p['size']} | {p['what']} |" for p in info["state_layout"])
    described = "\n".join(f"- `{key}`: `{json.dumps(info[key])}`" for key in ("u_names", "y_names", "u_low",
                                                                                  "u_high", "data") if key in info)
    return f"""# {name}: a deepwiener model as C

The one-sample step of a deepwiener model of kind `{info['kind']}` in plain C99 ({precision} precision), generated
by deepwiener {info['deepwiener_version']}: no dependency beyond libm, no allocation, every weight a `static const`
array. {info['units']}.

- inputs: {graph.n_u} (`{upper}_N_U`), outputs: {graph.n_y} (`{upper}_N_Y`), states: {graph.n_state}
  (`{upper}_N_STATE`), sampling time {info['dt']!r} s (`{upper}_DT`)
{described}

## Build and run

```sh
cc -O2 -std=c99 -o simulate {name}.c main.c -lm      # or: cc -O2 -std=c99 -o simulate DIR/*.c -lm
./simulate < u.csv > y.csv
```

`simulate` reads u from stdin, one sample per line ({graph.n_u} comma-separated numbers, no header), simulates
from the zero state and writes y to stdout in the same format (`%.{17 if precision == 'double' else 9}g`).

## In your program

```c
#include "{name}.h"

{name}_state state;
{name}_real u[{upper}_N_U], y[{upper}_N_Y];
{name}_reset(&state);              /* the zero state */
/* every sampling period: */
{name}_step(&state, u, y);         /* u in, y out, physical units */
```

`{name}.c` and `{name}.h` are all you need (`main.c` is the example program). One `{name}_state` holds one
simulated system; the functions keep no other data, so several states may be stepped independently.

## State layout

`state.x` is the model's whole state as one vector; all zeros is the model's zero state. Complex states are
written as (Re, Im) pairs.

| offset | size | what |
|---:|---:|---|
{rows}
"""
