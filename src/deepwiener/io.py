"""Model files: ``save``/``load`` of a model of any registered kind as a sealed safetensors file.

A model file (``*.dw``) is a plain safetensors file: what the model's kind puts into it (``Model.file_parts``:
for the built-in kinds the ``state_dict``, i.e. the weights and the scaler buffers ``u_mean, u_std, y_mean,
y_std``; for an ensemble its members' tensors) as tensors, and string metadata:

- ``format``: ``"deepwiener-model/2"`` (this version writes it and reads ``/1`` too);
- ``kind``: the model's kind, a name of ``models.FILE_KINDS`` ("deepwiener", "lfr", "rnn", "linear", "ensemble",
  or a kind of your own; files without it hold a deep Wiener model);
- ``config``: the kind's config as JSON (architecture, ``dt``, seed; for an ensemble ``{"members": [{"kind",
  "dtype", "config"}, ...]}``);
- ``scaler``: the normalisation statistics as JSON (a readable copy of the scaler buffers; a list of them,
  one per member, for an ensemble);
- ``dtype``: ``"float32"`` or ``"float64"`` (for an ensemble, the widest of its members');
- ``versions``: JSON of the python, torch, numpy and deepwiener versions that wrote the file;
- ``extra``: JSON chosen by the caller (the command line stores the data's channel names and source);
- ``seal``: a SHA-256 over everything else in the file: the header (the metadata above and every tensor's name,
  dtype, shape and offsets) in canonical JSON, then the tensor bytes. Changing any byte that matters (a ``gelu``
  replaced by ``relu`` in the config, a weight) breaks the seal, and the file is refused.

Files of format ``deepwiener-model/1`` carried a checksum of the tensors only (``sha256``); they still load, with
a warning in the log that their metadata is not sealed (save the model again to seal it).

The bytes are written in a fixed order (metadata and tensors sorted), so equal models give byte-identical files.
Loading parses the header itself (so a foreign, truncated or corrupt file is named as such), never executes code
(no pickle), and rebuilds the model through its kind (``Model.from_file_parts``: the config, then the tensors
loaded strictly). Files are written with ``files.write_file``: completely or not at all.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import struct
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch

from deepwiener.errors import ModelFileError
from deepwiener.files import write_file
from deepwiener.models import FILE_KINDS, Model, kind_class
from deepwiener.models.base import DTYPES, dtype_name

logger = logging.getLogger(__name__)

FORMAT = "deepwiener-model/2"
"""Format tag of the model files this version writes."""
UNSEALED_FORMAT = "deepwiener-model/1"
"""The earlier format, still read: a checksum of the tensors only."""

_MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit on the JSON header
_REQUIRED_METADATA = {FORMAT: ("format", "config", "dtype", "seal"), UNSEALED_FORMAT: ("format", "config", "dtype",
                                                                                       "sha256")}
_TENSOR_DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
                  torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
                  torch.bool: "BOOL"}
def versions() -> dict[str, str]:
    """Versions of python, torch, numpy and deepwiener (recorded in model files and runs)."""
    try:
        own = metadata.version("deepwiener")
    except metadata.PackageNotFoundError:
        own = "unknown"
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "deepwiener": own}


def save(model: Model, path: str | Path, *, extra: Mapping[str, Any] | None = None) -> Path:
    """Save a model (what its kind stores, config, normalisation, versions) to a sealed safetensors file.

    Args:
        model: a model of a registered kind (``deepwiener.models``; parameters float32 or float64, on any device).
        path: destination, conventionally ``*.dw``; written completely or not at all (``files.write_file``).
        extra: JSON-serialisable information stored with the model (returned by :func:`read_info`).

    Returns:
        The destination path.

    Raises:
        ModelFileError: an object that is not a model of a registered kind, a dtype other than float32/float64, or
            ``extra`` that is not JSON-serialisable.
        WriteError: the file cannot be written.
    """
    if not isinstance(model, Model) or FILE_KINDS.get(model.kind) is not type(model):
        raise ModelFileError(f"{path}: cannot save a {type(model).__name__}; expected a model of a registered kind "
                             f"({', '.join(FILE_KINDS)})")
    config, tensors = model.file_parts()
    try:
        extra_json = _canonical(dict(extra or {}))
    except (TypeError, ValueError) as exc:
        raise ModelFileError(f"{path}: cannot store extra information: {exc}") from exc
    meta = {
        "format": FORMAT,
        "kind": model.kind,
        "config": _canonical(config),
        "scaler": _canonical(model.scaler_info()),
        "dtype": dtype_name(model.dtype),
        "versions": _canonical(versions()),
        "extra": extra_json,
    }
    return write_file(path, _serialize(meta, tensors))


def load(path: str | Path, device: str | torch.device = "cpu") -> Model:
    """Load a model saved by :func:`save`; executes no code from the file.

    Args:
        path: the model file.
        device: where to put the model.

    Returns:
        The model of the file's kind in eval mode, with its config, dt and normalisation restored.

    Raises:
        ModelFileError: naming the file and the reason: missing file, not a safetensors file, truncated,
            missing metadata, another format version, unknown kind, invalid config, a broken seal (or checksum),
            or tensors whose names, shapes or values do not match the config.
    """
    path = Path(path)
    meta, raw = _read(path)
    kind, config = _config(path, meta)
    try:
        tensors = safetensors.torch.load(raw)
    except Exception as exc:  # the safetensors parser raises its own error types on damaged data
        raise ModelFileError(f"{path}: damaged tensor data: {exc}") from exc
    if meta["format"] == UNSEALED_FORMAT:
        if _tensor_digest(tensors) != meta["sha256"]:
            raise ModelFileError(f"{path}: checksum mismatch: the tensor data is corrupt")
        logger.warning("%s is a %s file: its tensors are checked, its metadata is not sealed (save the model again "
                       "to seal it)", path, UNSEALED_FORMAT)
    try:
        model = kind_class(kind).from_file_parts(config, DTYPES[meta["dtype"]], tensors)
    except ModelFileError as exc:
        raise ModelFileError(f"{path}: {exc}") from exc
    return model.to(device).eval()


def read_info(path: str | Path) -> dict[str, Any]:
    """The metadata of a model file without building its model.

    Args:
        path: the model file.

    Returns:
        ``{"format", "kind", "config", "scaler", "dtype", "versions", "extra"}`` with the JSON fields decoded.

    Raises:
        ModelFileError: as :func:`load` for the metadata (and the seal).
    """
    path = Path(path)
    meta, _ = _read(path)
    kind, _ = _config(path, meta)
    info: dict[str, Any] = {"format": meta["format"], "kind": kind, "dtype": meta["dtype"]}
    for key in ("config", "scaler", "versions", "extra"):
        info[key] = _json(path, meta, key) if key in meta else {}
    return info


def _canonical(value: Any) -> str:
    """JSON with sorted keys and no spaces: one text for one value (strict: NaN and inf are refused)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _serialize(meta: Mapping[str, str], tensors: Mapping[str, torch.Tensor]) -> bytes:
    """A sealed safetensors file: the header (metadata with its ``seal``, the tensors sorted by element size, then
    name, so that every tensor is aligned) in canonical JSON, padded to 8 bytes, then the tensor bytes."""
    header: dict[str, Any] = {}
    chunks, offset = [], 0
    for name in sorted(tensors, key=lambda n: (-tensors[n].element_size(), n)):
        t = tensors[name].detach().cpu().contiguous()
        if t.dtype not in _TENSOR_DTYPES:
            raise ModelFileError(f"cannot store tensor {name!r} of dtype {t.dtype}")
        data = t.reshape(-1).view(torch.uint8).numpy().tobytes()
        header[name] = {"dtype": _TENSOR_DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    body = b"".join(chunks)
    header["__metadata__"] = {**meta, "seal": _seal(header, meta, body)}
    text = _canonical(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + body


def _seal(header: Mapping[str, Any], meta: Mapping[str, str], body: bytes) -> str:
    """SHA-256 of the canonical header without the seal (``meta`` as its metadata) and of the tensor bytes."""
    entries = {name: entry for name, entry in header.items() if name != "__metadata__"}
    unsealed = {**entries, "__metadata__": {key: value for key, value in meta.items() if key != "seal"}}
    return hashlib.sha256(_canonical(unsealed).encode() + b"\0" + body).hexdigest()


def _tensor_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """The checksum of format-1 files: SHA-256 over the sorted tensor names, dtypes, shapes and raw bytes."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _read(path: Path) -> tuple[dict[str, str], bytes]:
    """Read the file, check the safetensors framing, the deepwiener metadata and the seal; (metadata, bytes)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ModelFileError(f"{path}: no such model file") from None
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read model file: {exc.strerror or exc}") from exc
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
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise ModelFileError(f"{path}: not a safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise ModelFileError(f"{path}: not a safetensors file (its header is not a JSON object)")
    ends = [entry["data_offsets"][1] for key, entry in header.items()
            if key != "__metadata__" and isinstance(entry, dict) and isinstance(entry.get("data_offsets"), list)
            and len(entry["data_offsets"]) == 2 and isinstance(entry["data_offsets"][1], int)]
    available = len(raw) - 8 - n_header
    if ends and max(ends) > available:
        raise ModelFileError(f"{path}: truncated: the tensor data needs {max(ends)} bytes, the file holds "
                             f"{available}")
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise ModelFileError(f"{path}: not a deepwiener model file (its metadata is not a table of strings)")
    missing = [key for key in _REQUIRED_METADATA.get(meta.get("format", FORMAT), ()) if key not in meta]
    if missing:
        raise ModelFileError(f"{path}: missing metadata {missing}: not a deepwiener model file")
    if meta["format"] not in _REQUIRED_METADATA:
        raise ModelFileError(f"{path}: format {meta['format']!r} is not supported; this deepwiener reads "
                             f"{list(_REQUIRED_METADATA)}")
    if meta["format"] == FORMAT and _seal(header, meta, raw[8 + n_header :]) != meta["seal"]:
        raise ModelFileError(f"{path}: the seal does not match: the file was changed or damaged after it was "
                             "written")
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
