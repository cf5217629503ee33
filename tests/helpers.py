"""Shared helpers for the tests: building layers with slow poles, random states, code run without numba, crafted
model files."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import safetensors.torch
import torch

from deepwiener import io
from deepwiener.layers import LAYERS, LTILayer, make_layer

LAYER_NAMES = tuple(name for name, cls in LAYERS.items() if issubclass(cls, LTILayer))
"""The registered LTI layers (the selective S6 is not one)."""

LAYER_VARIANTS: dict[str, tuple[str, dict[str, object]]] = {"s4-blocks": ("s4", {"block_order": 2})}
"""Layers of another structure than their default: test name -> (layer name, options)."""

LAYER_CASES = (*LAYER_NAMES, *LAYER_VARIANTS)
"""Every layer name and every variant: the names ``build_layer`` and ``layer_spec`` accept."""


def layer_spec(name: str, **options: object) -> tuple[str, dict[str, object]]:
    """(layer name, options) of a name of ``LAYER_CASES``, with ``options`` added."""
    layer, base = LAYER_VARIANTS.get(name, (name, {}))
    return layer, {**base, **options}


def build_layer(name: str, width: int = 3, d_state: int = 4, seed: int = 0, slow: bool = False) -> LTILayer:
    """A layer (a name of ``LAYER_CASES``) with random parameters; ``slow`` puts its poles at |lam| > 0.999."""
    layer_name, options = layer_spec(name)
    layer = make_layer(layer_name, width, width, d_state, options, torch.Generator().manual_seed(seed))
    if slow:
        with torch.no_grad():
            if name == "lru":
                layer.nu.fill_(math.log(-math.log(0.9995)))
            else:
                layer.log_dt.fill_(math.log(1e-3))
    return layer


def random_state(layer: LTILayer, batch: int, gen: torch.Generator) -> torch.Tensor:
    """A random complex state of the layer's shape and dtype."""
    zero = layer.init_state(batch)
    re = torch.randn(zero.shape, generator=gen, dtype=torch.float64)
    im = torch.randn(zero.shape, generator=gen, dtype=torch.float64)
    return torch.complex(re, im).to(zero.dtype)


def run_stepper(stepper: object, u: torch.Tensor, state: object) -> tuple[torch.Tensor, object]:
    """Feed u: (batch, time, d) one sample at a time through ``stepper.step``; returns (outputs stacked on
    the time axis, final state)."""
    outs = []
    for k in range(u.shape[1]):
        y_k, state = stepper.step(u[:, k], state)
        outs.append(y_k)
    return torch.stack(outs, dim=1), state


def run_without_numba(code: str) -> None:
    """Run ``code`` in a fresh Python process in which ``import numba`` fails; raise if it fails."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    subprocess.run([sys.executable, "-c", "import sys; sys.modules['numba'] = None\n" + code], check=True, env=env,
                   timeout=120)


def reseal(path: Path, target: Path | None = None, tensors: dict[str, torch.Tensor] | None = None,
           **changes: str | None) -> Path:
    """Rewrite a model file with other tensors and metadata entries (None: removed), sealed anew: a crafted file
    that passes the seal, to test the checks behind it. Written to ``target`` (default: ``path`` itself)."""
    header_len = int.from_bytes(path.read_bytes()[:8], "little")
    meta = json.loads(path.read_bytes()[8 : 8 + header_len])["__metadata__"]
    meta.pop("seal", None)
    for key, value in changes.items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    target = target or path
    target.write_bytes(io._serialize(meta, tensors if tensors is not None else safetensors.torch.load_file(path)))
    return target


DATA_SKIP = "benchmark data not found"
POSTGRES_SKIP = "PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin; apt-get install postgresql)"
"""Why the tests that need a PostgreSQL server skip (``tests/tune/conftest.py``); under CI they fail instead."""
"""How a test that needs benchmark data starts its skip reason (the summary at the end counts them)."""


def require_data(path: Path) -> Path:
    """``path`` when it exists; else skip the test, or fail it under CI (CI must have ../shared/data)."""
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{DATA_SKIP} at {path} (CI must have ../shared/data)")
        pytest.skip(f"{DATA_SKIP} at {path}")
    return path
