"""Model files: ``save``/``load`` of every model kind as safetensors plus JSON metadata; atomic writes.

Five kinds of model are stored: ``"deepwiener"`` (:class:`~deepwiener.model.DeepWiener`), ``"lfr"``
(:class:`~deepwiener.lfr.LFRModel`), ``"rnn"`` (:class:`~deepwiener.baselines.rnn.RNNModel`), ``"linear"``
(:class:`~deepwiener.baselines.linear.LinearStateSpace`) and ``"ensemble"``
(:class:`~deepwiener.ensemble.Ensemble` of models of the other kinds). A model file (``*.dw``) is a plain
safetensors file: the model's ``state_dict`` (weights and the scaler buffers ``u_mean, u_std, y_mean,
y_std``) as tensors (for a linear model: ``A, B, C, D`` and the scaler, float64), and string metadata:

- ``format``: ``"deepwiener-model/1"``;
- ``kind``: ``"deepwiener"``, ``"lfr"``, ``"rnn"``, ``"linear"`` or ``"ensemble"`` (files without it hold a
  deep Wiener model);
- ``config``: the model's config as JSON (``ModelConfig``, ``LFRConfig``, ``RNNConfig``, or
  :class:`LinearFileConfig`:
  architecture, ``dt``, seed); for an ensemble ``{"members": [{"kind", "dtype", "config"}, ...]}``, whose
  member ``i`` owns the tensors named ``member<i>.<name>``;
- ``scaler``: the normalisation statistics as JSON (a readable copy of the scaler buffers; a list of them,
  one per member, for an ensemble);
- ``dtype``: ``"float32"`` or ``"float64"`` (for an ensemble, the widest of its members');
- ``versions``: JSON of the python, torch, numpy and deepwiener versions that wrote the file;
- ``sha256``: a SHA-256 over the tensor names, dtypes, shapes and bytes (detects silent corruption);
- ``extra``: JSON chosen by the caller (the command line stores the data's channel names and source).

Loading parses the header itself (so a foreign, truncated or corrupt file is named as such), never executes
code (no pickle), rebuilds the model of the file's kind from its config and loads the tensors strictly. Every
file is written through :func:`atomic_write`: a temporary file in the same folder, then ``os.replace``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import struct
import uuid
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import safetensors.torch
import torch

from deepwiener.baselines.linear import LinearStateSpace
from deepwiener.baselines.rnn import RNNConfig, RNNModel
from deepwiener.ensemble import Ensemble, Member
from deepwiener.errors import DeepWienerError, ModelFileError, check_positive_ints
from deepwiener.lfr import LFRConfig, LFRModel
from deepwiener.model import DeepWiener, ModelConfig
from deepwiener.simulator import DictConfig, check_sampling_time

FORMAT = "deepwiener-model/1"
"""Format tag of the model files this version writes and reads."""

_MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit on the JSON header
_REQUIRED_METADATA = ("format", "config", "dtype", "sha256")
_DTYPES = {"float32": torch.float32, "float64": torch.float64}
_LINEAR_TENSORS = ("A", "B", "C", "D", "u_mean", "u_std", "y_mean", "y_std")

Model = DeepWiener | LFRModel | RNNModel | LinearStateSpace | Ensemble
"""What a model file holds."""


@dataclasses.dataclass(frozen=True)
class LinearFileConfig(DictConfig):
    """The ``config`` metadata of a linear model file: its sizes and sampling time (seconds)."""

    n_u: int
    n_y: int
    n_states: int
    dt: float

    def __post_init__(self) -> None:
        check_positive_ints(n_u=self.n_u, n_y=self.n_y, n_states=self.n_states)
        check_sampling_time(self.dt)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """The shapes of the stored tensors A, B, C, D, u_mean, u_std, y_mean, y_std."""
        n, m, p = self.n_states, self.n_u, self.n_y
        return {"A": (n, n), "B": (n, m), "C": (p, n), "D": (p, m), "u_mean": (m,), "u_std": (m,),
                "y_mean": (p,), "y_std": (p,)}


MemberConfig = ModelConfig | LFRConfig | RNNConfig | LinearFileConfig
_CONFIGS: dict[str, type[MemberConfig]] = {"deepwiener": ModelConfig, "lfr": LFRConfig, "rnn": RNNConfig,
                                           "linear": LinearFileConfig}
_NETWORKS: dict[str, type[DeepWiener] | type[LFRModel] | type[RNNModel]] = {"deepwiener": DeepWiener,
                                                                            "lfr": LFRModel, "rnn": RNNModel}
KINDS: tuple[str, ...] = (*_CONFIGS, "ensemble")
"""The model kinds a file may hold."""


class EnsembleMember(NamedTuple):
    """One member of an ensemble file: its kind, dtype name and validated config."""

    kind: str
    dtype: str
    config: MemberConfig


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
    """Save a model (weights, config, normalisation, versions) to a safetensors file, atomically.

    Args:
        model: a ``DeepWiener`` or ``RNNModel`` (parameters float32 or float64, on any device), a
            ``LinearStateSpace``, or an ``Ensemble`` of those.
        path: destination, conventionally ``*.dw``.
        extra: JSON-serialisable information stored with the model (returned by :func:`read_info`).

    Returns:
        The destination path.

    Raises:
        ModelFileError: another type of model, a dtype other than float32/float64, or ``extra`` that is not
            JSON-serialisable.
    """
    if isinstance(model, Ensemble):
        parts = [_parts(member, path) for member in model.members]
        kind = "ensemble"
        config: Any = {"members": [{"kind": k, "dtype": _dtype_name(t["u_mean"].dtype), "config": c}
                                   for k, c, t in parts]}
        tensors = {f"{_member_prefix(i)}{name}": t.clone()  # a model given twice must not share storage
                   for i, (_, _, own) in enumerate(parts) for name, t in own.items()}
        scaler: Any = [_scaler(own) for _, _, own in parts]
        dtype = max((entry["dtype"] for entry in config["members"]), key=lambda name: _DTYPES[name].itemsize)
    else:
        kind, config, tensors = _parts(model, path)
        scaler, dtype = _scaler(tensors), _dtype_name(tensors["u_mean"].dtype)
    try:
        extra_json = json.dumps(dict(extra or {}))
    except TypeError as exc:
        raise ModelFileError(f"{path}: cannot store extra information: {exc}") from exc
    meta = {
        "format": FORMAT,
        "kind": kind,
        "config": json.dumps(config),
        "scaler": json.dumps(scaler),
        "dtype": dtype,
        "versions": json.dumps(versions()),
        "sha256": _digest(tensors),
        "extra": extra_json,
    }
    return atomic_write(path, safetensors.torch.save(tensors, metadata=meta))


def load(path: str | Path, device: str | torch.device = "cpu") -> Model:
    """Load a model saved by :func:`save`; executes no code from the file.

    Args:
        path: the model file.
        device: where to put a torch model (a ``LinearStateSpace`` is numpy).

    Returns:
        The model of the file's kind: a ``DeepWiener`` or ``RNNModel`` in eval mode, a ``LinearStateSpace``,
        or an ``Ensemble`` of those, with configs, dt and normalisation restored.

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
    if not isinstance(config, list):
        return _build(path, kind, config, meta["dtype"], tensors, device)
    owned = {name for name in tensors if any(name.startswith(_member_prefix(i)) for i in range(len(config)))}
    if owned != set(tensors):
        raise ModelFileError(f"{path}: tensors of no ensemble member: {sorted(set(tensors) - owned)}")
    members = []
    for i, member in enumerate(config):
        prefix = _member_prefix(i)
        own = {name[len(prefix):]: t for name, t in tensors.items() if name.startswith(prefix)}
        members.append(_build(path, member.kind, member.config, member.dtype, own, device))
    try:
        return Ensemble(members)
    except DeepWienerError as exc:
        raise ModelFileError(f"{path}: invalid ensemble: {exc}") from exc


def read_info(path: str | Path) -> dict[str, Any]:
    """The metadata of a model file without loading its weights.

    Args:
        path: the model file.

    Returns:
        ``{"format", "kind", "config", "scaler", "dtype", "versions", "extra"}`` with the JSON fields decoded.

    Raises:
        ModelFileError: as :func:`load`.
    """
    path = Path(path)
    meta, _ = _read(path)
    kind, _ = _config(path, meta)
    info: dict[str, Any] = {"format": meta["format"], "kind": kind, "dtype": meta["dtype"]}
    for key in ("config", "scaler", "versions", "extra"):
        info[key] = _json(path, meta, key) if key in meta else {}
    return info


def _parts(model: Member, path: str | Path) -> tuple[str, dict[str, Any], dict[str, torch.Tensor]]:
    """(kind, config as plain data, tensors) of one model that is not an ensemble."""
    if isinstance(model, LinearStateSpace):
        config = LinearFileConfig(model.n_u, model.n_y, model.n_states, float(model.dt))
        return "linear", config.to_dict(), {name: torch.from_numpy(np.array(getattr(model, name), dtype=np.float64,
                                                                             order="C")) for name in _LINEAR_TENSORS}
    for kind, network in _NETWORKS.items():
        if isinstance(model, network):
            return kind, model.config.to_dict(), {name: t.detach().cpu().contiguous()
                                                  for name, t in model.state_dict().items()}
    raise ModelFileError(f"{path}: cannot save a {type(model).__name__}; expected a DeepWiener, LFRModel, "
                         "RNNModel, LinearStateSpace or Ensemble")


def _build(path: Path, kind: str, config: MemberConfig, dtype: str, tensors: Mapping[str, torch.Tensor],
           device: str | torch.device) -> Member:
    """The model of one kind (not an ensemble) from its validated config and its tensors."""
    if isinstance(config, LinearFileConfig):
        _check_tensors(path, config.shapes(), tensors)
        try:
            return LinearStateSpace(**{name: tensors[name].numpy() for name in _LINEAR_TENSORS}, dt=config.dt)
        except DeepWienerError as exc:
            raise ModelFileError(f"{path}: invalid linear model: {exc}") from exc
    model = _NETWORKS[kind].from_config(config).to(_DTYPES[dtype])
    _check_tensors(path, {name: tuple(t.shape) for name, t in model.state_dict().items()}, tensors)
    model.load_state_dict(tensors, strict=True)
    return model.to(device).eval()


def _scaler(tensors: Mapping[str, torch.Tensor]) -> dict[str, list[float]]:
    """A readable copy of a model's normalisation statistics."""
    return {name: tensors[name].double().tolist() for name in ("u_mean", "u_std", "y_mean", "y_std")}


def _member_prefix(index: int) -> str:
    """The prefix of the tensor names of ensemble member ``index``."""
    return f"member{index}."


def _dtype_name(dtype: torch.dtype) -> str:
    for name, value in _DTYPES.items():
        if value == dtype:
            return name
    raise ModelFileError(f"cannot save a model of dtype {dtype}; expected float32 or float64")


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
    if meta["dtype"] not in _DTYPES:
        raise ModelFileError(f"{path}: unsupported dtype {meta['dtype']!r}; expected one of {list(_DTYPES)}")
    return meta, raw


def _json(path: Path, meta: Mapping[str, str], key: str) -> Any:
    try:
        return json.loads(meta[key])
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{path}: metadata {key!r} is not valid JSON: {exc}") from exc


def _config(path: Path, meta: Mapping[str, str]) -> tuple[str, MemberConfig | list[EnsembleMember]]:
    """The file's kind and its validated config (for an ensemble: each member's kind, dtype and config)."""
    kind = meta.get("kind", "deepwiener")  # files written before kinds existed hold deep Wiener models
    if kind not in KINDS:
        raise ModelFileError(f"{path}: unknown model kind {kind!r}; this deepwiener reads {list(KINDS)}")
    data = _json(path, meta, "config")
    if not isinstance(data, dict):
        raise ModelFileError(f"{path}: metadata 'config' is not a JSON object")
    if kind != "ensemble":
        return kind, _member_config(path, kind, data)
    entries = data.get("members")
    if set(data) != {"members"} or not isinstance(entries, list) or len(entries) < 2:
        raise ModelFileError(f"{path}: an ensemble's config must be {{\"members\": [two or more members]}}")
    members = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or set(entry) != {"kind", "dtype", "config"}:
            raise ModelFileError(f"{path}: ensemble member {i} must have the keys kind, dtype and config")
        if entry["kind"] not in _CONFIGS:
            raise ModelFileError(f"{path}: ensemble member {i} has kind {entry['kind']!r}; expected one of "
                                 f"{list(_CONFIGS)}")
        if entry["dtype"] not in _DTYPES or not isinstance(entry["config"], dict):
            raise ModelFileError(f"{path}: ensemble member {i} has an unsupported dtype or a config that is not a "
                                 "JSON object")
        members.append(EnsembleMember(entry["kind"], entry["dtype"],
                                      _member_config(path, entry["kind"], entry["config"])))
    return kind, members


def _member_config(path: Path, kind: str, data: dict[str, Any]) -> MemberConfig:
    try:
        return _CONFIGS[kind].from_dict(data)
    except (DeepWienerError, TypeError) as exc:
        raise ModelFileError(f"{path}: invalid model config: {exc} (model kind {kind!r})") from exc


def _check_tensors(path: Path, expected: Mapping[str, tuple[int, ...]], found: Mapping[str, torch.Tensor]) -> None:
    """Compare names and shapes of the stored tensors with those the config builds."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    if missing or unexpected:
        raise ModelFileError(f"{path}: tensors do not match the config: missing {missing}, unexpected "
                             f"{unexpected}")
    for name, shape in expected.items():
        if tuple(found[name].shape) != shape:
            raise ModelFileError(f"{path}: shape mismatch: tensor {name!r} has shape {tuple(found[name].shape)}, "
                                 f"the config expects {shape}")
