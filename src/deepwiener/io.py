"""Model files: ``save``/``load`` of a model of any registered kind as safetensors plus JSON metadata; atomic writes.

A model file (``*.dw``) is a plain safetensors file: what the model's kind puts into it (``Model.file_parts``:
for the built-in kinds the ``state_dict``, i.e. the weights and the scaler buffers ``u_mean, u_std, y_mean,
y_std``; for an ensemble its members' tensors) as tensors, and string metadata:

- ``format``: ``"deepwiener-model/1"``;
- ``kind``: the model's kind, a name of ``models.FILE_KINDS`` ("deepwiener", "lfr", "rnn", "linear", "ensemble",
  or a kind of your own; files without it hold a deep Wiener model);
- ``config``: the kind's config as JSON (architecture, ``dt``, seed; for an ensemble ``{"members": [{"kind",
  "dtype", "config"}, ...]}``);
- ``scaler``: the normalisation statistics as JSON (a readable copy of the scaler buffers; a list of them,
  one per member, for an ensemble);
- ``dtype``: ``"float32"`` or ``"float64"`` (for an ensemble, the widest of its members');
- ``versions``: JSON of the python, torch, numpy and deepwiener versions that wrote the file;
- ``sha256``: a SHA-256 over the tensor names, dtypes, shapes and bytes (detects silent corruption);
- ``extra``: JSON chosen by the caller (the command line stores the data's channel names and source).

Loading parses the header itself (so a foreign, truncated or corrupt file is named as such), never executes
code (no pickle), and rebuilds the model through its kind (``Model.from_file_parts``: the config, then the
tensors loaded strictly). Every file is written through :func:`atomic_write`: a temporary file in the same
folder, then ``os.replace``.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import struct
import uuid
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch

from deepwiener.errors import ModelFileError
from deepwiener.models import FILE_KINDS, Model, kind_class
from deepwiener.models.base import DTYPES, dtype_name

FORMAT = "deepwiener-model/1"
"""Format tag of the model files this version writes and reads."""

_MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit on the JSON header
_REQUIRED_METADATA = ("format", "config", "dtype", "sha256")
def atomic_write(path: str | Path, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``.

    Readers see either the old file or the complete new one, never a partial write. Parent folders are
    created. Text is written as UTF-8.

    Args:
        path: destination file.
        data: the whole content.

    Returns:
        The destination path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    handle = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, unlike mkstemp's 0600
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(payload)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def versions() -> dict[str, str]:
    """Versions of python, torch, numpy and deepwiener (recorded in model files and runs)."""
    try:
        own = metadata.version("deepwiener")
    except metadata.PackageNotFoundError:
        own = "unknown"
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "deepwiener": own}


def save(model: Model, path: str | Path, *, extra: Mapping[str, Any] | None = None) -> Path:
    """Save a model (what its kind stores, config, normalisation, versions) to a safetensors file, atomically.

    Args:
        model: a model of a registered kind (``deepwiener.models``; parameters float32 or float64, on any device).
        path: destination, conventionally ``*.dw``.
        extra: JSON-serialisable information stored with the model (returned by :func:`read_info`).

    Returns:
        The destination path.

    Raises:
        ModelFileError: an object that is not a model of a registered kind, a dtype other than float32/float64, or
            ``extra`` that is not JSON-serialisable.
    """
    if not isinstance(model, Model) or FILE_KINDS.get(model.kind) is not type(model):
        raise ModelFileError(f"{path}: cannot save a {type(model).__name__}; expected a model of a registered kind "
                             f"({', '.join(FILE_KINDS)})")
    config, tensors = model.file_parts()
    try:
        extra_json = json.dumps(dict(extra or {}))
    except TypeError as exc:
        raise ModelFileError(f"{path}: cannot store extra information: {exc}") from exc
    meta = {
        "format": FORMAT,
        "kind": model.kind,
        "config": json.dumps(config),
        "scaler": json.dumps(model.scaler_info()),
        "dtype": dtype_name(model.dtype),
        "versions": json.dumps(versions()),
        "sha256": _digest(tensors),
        "extra": extra_json,
    }
    return atomic_write(path, safetensors.torch.save(tensors, metadata=meta))


def load(path: str | Path, device: str | torch.device = "cpu") -> Model:
    """Load a model saved by :func:`save`; executes no code from the file.

    Args:
        path: the model file.
        device: where to put the model.

    Returns:
        The model of the file's kind in eval mode, with its config, dt and normalisation restored.

    Raises:
        ModelFileError: naming the file and the reason: missing file, not a safetensors file, truncated,
            missing metadata, another format version, unknown kind, invalid config, checksum mismatch, or
            tensors whose names, shapes or values do not match the config.
    """
    path = Path(path)
    meta, raw = _read(path)
    kind, config = _config(path, meta)
    try:
        tensors = safetensors.torch.load(raw)
    except Exception as exc:  # the safetensors parser raises its own error types on damaged data
        raise ModelFileError(f"{path}: damaged tensor data: {exc}") from exc
    if _digest(tensors) != meta["sha256"]:
        raise ModelFileError(f"{path}: checksum mismatch: the tensor data is corrupt")
    try:
        model = kind_class(kind).from_file_parts(config, DTYPES[meta["dtype"]], tensors)
    except ModelFileError as exc:
        raise ModelFileError(f"{path}: {exc}") from exc
    return model.to(device).eval()


def read_info(path: str | Path) -> dict[str, Any]:
    """The metadata of a model file without loading its weights.

    Args:
        path: the model file.

    Returns:
        ``{"format", "kind", "config", "scaler", "dtype", "versions", "extra"}`` with the JSON fields decoded.

    Raises:
        ModelFileError: as :func:`load` for the metadata.
    """
    path = Path(path)
    meta, _ = _read(path)
    kind, _ = _config(path, meta)
    info: dict[str, Any] = {"format": meta["format"], "kind": kind, "dtype": meta["dtype"]}
    for key in ("config", "scaler", "versions", "extra"):
        info[key] = _json(path, meta, key) if key in meta else {}
    return info


def _digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over the sorted tensor names, dtypes, shapes and raw bytes."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _read(path: Path) -> tuple[dict[str, str], bytes]:
    """Read the file, check the safetensors framing and the deepwiener metadata; return (metadata, bytes)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ModelFileError(f"{path}: no such model file") from None
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read model file: {exc}") from exc
    if len(raw) < 8:
        raise ModelFileError(f"{path}: not a safetensors file (only {len(raw)} bytes)")
    (n_header,) = struct.unpack("<Q", raw[:8])
    if n_header > _MAX_HEADER_BYTES or raw[8:9] != b"{":  # the header is a JSON object
        raise ModelFileError(f"{path}: not a safetensors file (no valid header)")
    if 8 + n_header > len(raw):
        raise ModelFileError(f"{path}: truncated: the header needs {8 + n_header} bytes, the file has "
                             f"{len(raw)}")
    try:
        header = json.loads(raw[8 : 8 + n_header])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ModelFileError(f"{path}: not a safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise ModelFileError(f"{path}: not a safetensors file (its header is not a JSON object)")
    ends = [entry["data_offsets"][1] for key, entry in header.items()
            if key != "__metadata__" and isinstance(entry, dict) and "data_offsets" in entry]
    available = len(raw) - 8 - n_header
    if ends and max(ends) > available:
        raise ModelFileError(f"{path}: truncated: the tensor data needs {max(ends)} bytes, the file holds "
                             f"{available}")
    meta = header.get("__metadata__") or {}
    missing = [key for key in _REQUIRED_METADATA if key not in meta]
    if missing:
        raise ModelFileError(f"{path}: missing metadata {missing}: not a deepwiener model file")
    if meta["format"] != FORMAT:
        raise ModelFileError(f"{path}: format {meta['format']!r} is not supported; this deepwiener reads "
                             f"{FORMAT!r}")
    if meta["dtype"] not in DTYPES:
        raise ModelFileError(f"{path}: unsupported dtype {meta['dtype']!r}; expected one of {list(DTYPES)}")
    return meta, raw


def _json(path: Path, meta: Mapping[str, str], key: str) -> Any:
    try:
        return json.loads(meta[key])
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{path}: metadata {key!r} is not valid JSON: {exc}") from exc


def _config(path: Path, meta: Mapping[str, str]) -> tuple[str, dict[str, Any]]:
    """The file's kind and its config as plain data, checked by the kind (``Model.config_from_file``)."""
    kind = meta.get("kind", "deepwiener")  # files written before kinds existed hold deep Wiener models
    if kind not in FILE_KINDS:
        raise ModelFileError(f"{path}: unknown model kind {kind!r}; this deepwiener reads {list(FILE_KINDS)}")
    data = _json(path, meta, "config")
    if not isinstance(data, dict):
        raise ModelFileError(f"{path}: metadata 'config' is not a JSON object")
    try:
        kind_class(kind).config_from_file(data)
    except ModelFileError as exc:
        raise ModelFileError(f"{path}: {exc}") from exc
    return kind, data
