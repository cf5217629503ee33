"""What the ONNX and C exports share: the model's description (metadata), the refusal of existing outputs, and the
flat state vector of a model's state."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deepwiener.errors import ConfigError
from deepwiener.io import versions
from deepwiener.models import Model
from deepwiener.stepgraph import StepGraph

DESCRIBED_EXTRA: tuple[str, ...] = ("u_names", "y_names", "u_low", "u_high", "data")
"""The entries of a model file's ``extra`` information an export records (channel names, the training inputs'
range per channel, the data's name)."""


def describe(model: Model, graph: StepGraph, extra: Mapping[str, Any] | None) -> dict[str, Any]:
    """The metadata of an export: what the model is, its sizes, sampling time, state layout and training input range.

    Args:
        model: the exported model.
        graph: its step graph (``model.step_graph()``).
        extra: the model file's extra information (``io.read_info(path)["extra"]``), or None.

    Returns:
        ``{"producer", "deepwiener_version", "kind", "n_u", "n_y", "n_state", "dt", "units", "state_layout"}`` and
        those of :data:`DESCRIBED_EXTRA` that ``extra`` holds.
    """
    info: dict[str, Any] = {
        "producer": "deepwiener",
        "deepwiener_version": versions()["deepwiener"],
        "kind": model.kind,
        "n_u": model.config.n_u,
        "n_y": model.config.n_y,
        "n_state": graph.n_state,
        "dt": float(model.dt),
        "units": "physical units in and out (the model's normalisation is inside); the zero state is the model's "
                 "zero state",
        "state_layout": graph.layout(),
    }
    info.update({key: (extra or {})[key] for key in DESCRIBED_EXTRA if key in (extra or {})})
    return info


def metadata_strings(info: Mapping[str, Any]) -> dict[str, str]:
    """:func:`describe`'s dictionary with every value a string (JSON for what is not a string)."""
    return {key: value if isinstance(value, str) else json.dumps(value) for key, value in info.items()}


def check_output(path: Path, force: bool, what: str) -> None:
    """Refuse to overwrite ``path`` (a file, or a folder that is not empty) unless ``force``.

    Args:
        path: the output.
        force: overwrite it.
        what: "file" or "folder", what the output must be.

    Raises:
        ConfigError: the output exists and ``force`` is False, or it is a folder where a file is written or the
            other way round.
    """
    if (what == "file" and path.is_dir()) or (what == "folder" and path.is_file()):
        raise ConfigError(f"{path} is a {'folder' if path.is_dir() else 'file'}, not a {what}")
    if (path.is_file() or (path.is_dir() and any(path.iterdir()))) and not force:
        raise ConfigError(f"{path} exists; choose another {what} or pass --force (force=True) to overwrite it")


def flatten_state(state: Any) -> np.ndarray:
    """A model's state (``model.init_state(1)``'s format, e.g. a streamer's ``state``) as the exported flat state
    vector: its tensors in order (nested tuples depth first), each flattened, complex entries as (Re, Im) pairs.

    Args:
        state: a tensor or a (nested) tuple of tensors of batch 1.

    Returns:
        (n_state,) float64.
    """
    if isinstance(state, torch.Tensor):
        values = torch.view_as_real(state.resolve_conj()) if state.is_complex() else state
        return values.detach().cpu().double().numpy().reshape(-1)
    parts = [flatten_state(part) for part in state]
    return np.concatenate(parts) if parts else np.zeros(0)
