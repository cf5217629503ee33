"""Property-based tests of the readers (CSV, NPZ, MAT) and of the model-file reader: random bytes, random truncations
and random single-byte flips give a clear error (DataError, ModelFileError) or a valid result, never a traceback
of another kind or a hang, and never a silently different model from a sealed file."""

from __future__ import annotations

import io as stdio
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import deepwiener as dw
from deepwiener import io
from deepwiener.errors import DataError, ModelFileError

SETTINGS = settings(max_examples=60, deadline=5000, suppress_health_check=[HealthCheck.too_slow])


def _csv() -> bytes:
    rng = np.random.default_rng(0)
    rows = "".join(f"{a!r},{b!r}\n" for a, b in rng.normal(size=(40, 2)))
    return ("u,y\n" + rows).encode()


def _npz() -> bytes:
    buffer = stdio.BytesIO()
    np.savez(buffer, u=np.arange(40.0), y=np.sin(np.arange(40.0)))
    return buffer.getvalue()


def _mat() -> bytes:
    buffer = stdio.BytesIO()
    scipy.io.savemat(buffer, {"u": np.arange(40.0)[:, None], "y": np.cos(np.arange(40.0))[:, None]})
    return buffer.getvalue()


READERS: dict[str, tuple[Callable[..., dw.IOData], bytes]] = {
    ".csv": (dw.read_csv, _csv()), ".npz": (dw.read_npz, _npz()), ".mat": (dw.read_mat, _mat())}


def read(suffix: str, content: bytes) -> None:
    """Read ``content`` as a file of that kind: a valid record or a DataError, nothing else."""
    reader, _ = READERS[suffix]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"data{suffix}"
        path.write_bytes(content)
        try:
            record = reader(path, "u", "y", 0.1)
        except DataError:
            return
    assert record.u.shape == record.y.shape and np.isfinite(record.u).all() and np.isfinite(record.y).all()


@pytest.mark.parametrize("suffix", list(READERS))
@SETTINGS
@given(content=st.binary(max_size=2000))
def test_random_bytes_are_a_data_error(suffix: str, content: bytes) -> None:
    read(suffix, content)


@pytest.mark.parametrize("suffix", list(READERS))
@SETTINGS
@given(cut=st.floats(0, 1), flip=st.integers(0, 10**9), bit=st.integers(0, 7), truncate=st.booleans())
def test_damaged_files_are_a_data_error(suffix: str, cut: float, flip: int, bit: int, truncate: bool) -> None:
    content = bytearray(READERS[suffix][1])
    if truncate:
        content = content[: int(cut * len(content))]
    else:
        content[flip % len(content)] ^= 1 << bit
    read(suffix, bytes(content))


@pytest.fixture(scope="module")
def sealed(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, dict[str, torch.Tensor], dict]:
    """A sealed model file of a small ensemble, its tensors and its config."""
    member = dw.DeepWiener(n_u=1, n_y=1, d_model=3, d_state=2, n_layers=1, seed=1)
    member.with_dt(0.1)
    lfr = dw.LFRModel(1, 1, n_x=2, n_w=1, seed=2)
    lfr.with_dt(0.1)
    path = io.save(dw.Ensemble([member, lfr]), tmp_path_factory.mktemp("m") / "m.dw")
    return path.read_bytes(), io.load(path).state_dict(), io.read_info(path)["config"]


def load(content: bytes) -> dw.Model | None:
    """The model in ``content``, or None after a ModelFileError (any other exception fails the test)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "m.dw"
        path.write_bytes(content)
        try:
            return io.load(path)
        except ModelFileError:
            return None


@SETTINGS
@given(content=st.binary(max_size=4000))
def test_random_bytes_are_a_model_file_error(content: bytes) -> None:
    assert load(content) is None


@SETTINGS
@given(cut=st.integers(0, 10**9))
def test_a_truncated_sealed_file_never_loads(sealed: tuple[bytes, dict, dict], cut: int) -> None:
    content = sealed[0]
    assert load(content[: cut % len(content)]) is None


@SETTINGS
@given(position=st.integers(0, 10**9), bit=st.integers(0, 7))
def test_a_flipped_byte_never_gives_a_different_model(sealed: tuple[bytes, dict, dict], position: int,
                                                      bit: int) -> None:
    content, tensors, config = sealed
    damaged = bytearray(content)
    damaged[position % len(content)] ^= 1 << bit
    model = load(bytes(damaged))
    if model is not None:  # only a flip that changes nothing the seal covers (JSON whitespace) may load
        assert model.file_parts()[0] == config
        for name, tensor in model.state_dict().items():
            assert torch.equal(tensor, tensors[name]), name
