"""Model files: round trip, the seal, byte-identical files, and a clear ModelFileError for every kind of bad file."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from helpers import reseal

from deepwiener import io
from deepwiener.errors import ModelFileError
from deepwiener.identification import LinearStateSpace
from deepwiener.models import DeepWiener, Ensemble, LinearModel


def small_model(layer: str = "lru", dtype: torch.dtype = torch.float32) -> DeepWiener:
    model = DeepWiener(n_u=2, n_y=1, layer=layer, d_model=4, d_state=4, n_layers=2, seed=3).to(dtype)
    model.with_dt(0.01)
    model.set_scaler([0.5, -1.0], [2.0, 3.0], [0.1], [4.0])
    return model


@pytest.mark.parametrize(("layer", "dtype"),
                         [("lru", torch.float32), ("s4d", torch.float64), ("s4", torch.float32), ("s6", torch.float32)])
def test_round_trip(tmp_path: Path, layer: str, dtype: torch.dtype) -> None:
    model = small_model(layer, dtype)
    path = io.save(model, tmp_path / "m.dw", extra={"y_names": ["y"]})
    loaded = io.load(path)
    assert loaded.config == model.config and loaded.dt == 0.01
    assert loaded.u_mean.dtype == dtype
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    u = np.random.default_rng(0).normal(size=(50, 2))
    np.testing.assert_array_equal(loaded.simulate(u), model.simulate(u))
    info = io.read_info(path)
    assert info["format"] == io.FORMAT and info["extra"] == {"y_names": ["y"]}
    assert info["scaler"]["u_std"] == [2.0, 3.0] and "torch" in info["versions"]
    assert [p.name for p in tmp_path.iterdir()] == ["m.dw"]  # no temporary file left behind


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    return io.save(small_model(), tmp_path / "model.dw")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match=r"nothere\.dw: no such model file"):
        io.load(tmp_path / "nothere.dw")


@pytest.mark.parametrize("content", [b"", b"hello, this is not a model at all", b"PK\x03\x04" + bytes(100),
                                     (20).to_bytes(8, "little") + b"{not json at all!!!}"])
def test_not_safetensors(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "foreign.dw"
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match=r"foreign\.dw: not a safetensors file"):
        io.load(path)


def test_foreign_safetensors_without_metadata(tmp_path: Path) -> None:
    path = tmp_path / "other.safetensors"
    safetensors.torch.save_file({"w": torch.zeros(3)}, path)
    with pytest.raises(ModelFileError, match=r"other\.safetensors: missing metadata"):
        io.load(path)


def test_wrong_format_version(saved: Path) -> None:
    reseal(saved, format="deepwiener-model/3")
    with pytest.raises(ModelFileError, match=r"model\.dw: format 'deepwiener-model/3' is not supported"):
        io.load(saved)


@pytest.mark.parametrize("keep", [0.3, 0.99])
def test_truncated(saved: Path, keep: float) -> None:
    data = saved.read_bytes()
    saved.write_bytes(data[: int(keep * len(data))])
    with pytest.raises(ModelFileError, match=r"model\.dw: truncated"):
        io.load(saved)


def test_a_changed_tensor_breaks_the_seal(saved: Path) -> None:
    data = bytearray(saved.read_bytes())
    data[-3] ^= 0xFF  # flip bits inside the last tensor's bytes
    saved.write_bytes(bytes(data))
    for read in (io.load, io.read_info):
        with pytest.raises(ModelFileError, match=r"model\.dw: the seal does not match"):
            read(saved)


def test_changed_metadata_breaks_the_seal(saved: Path) -> None:
    """The failure of format 1: a map's name edited in the JSON loaded silently as another model."""
    header_len = int.from_bytes(saved.read_bytes()[:8], "little")
    meta = json.loads(saved.read_bytes()[8 : 8 + header_len])["__metadata__"]
    assert '"nonlinearity":"gelu"' in meta["config"]
    meta["config"] = meta["config"].replace('"nonlinearity":"gelu"', '"nonlinearity":"relu"')
    saved.write_bytes(safetensors.torch.save(safetensors.torch.load_file(saved), metadata=meta))
    with pytest.raises(ModelFileError, match=r"model\.dw: the seal does not match"):
        io.load(saved)


def test_equal_models_give_byte_identical_files(tmp_path: Path) -> None:
    a = io.save(small_model(), tmp_path / "a.dw", extra={"y_names": ["y"], "data": "x"})
    b = io.save(small_model(), tmp_path / "b.dw", extra={"data": "x", "y_names": ["y"]})
    assert a.read_bytes() == b.read_bytes()


def test_format1_files_load_with_a_note(caplog: pytest.LogCaptureFixture) -> None:
    path = Path(__file__).parents[1] / "fixtures" / "format1" / "deepwiener-lru.dw"
    with caplog.at_level(logging.WARNING, logger="deepwiener"):
        model = io.load(path)
    assert isinstance(model, DeepWiener) and io.read_info(path)["format"] == io.UNSEALED_FORMAT
    assert any("its metadata is not sealed" in r.getMessage() for r in caplog.records)


def test_shape_mismatch(saved: Path) -> None:
    tensors = io.load(saved).state_dict()
    config = io.read_info(saved)["config"]
    config["d_state"] = 5
    reseal(saved, tensors=tensors, config=json.dumps(config))
    with pytest.raises(ModelFileError, match=r"model\.dw: shape mismatch: tensor 'blocks\.0\.lti\.\w+' has shape"):
        io.load(saved)


def test_invalid_config(saved: Path) -> None:
    reseal(saved, config=json.dumps({"n_u": 1, "n_y": 1, "layer": "lstm"}))
    with pytest.raises(ModelFileError, match=r"model\.dw: invalid model config: unknown layer 'lstm'"):
        io.load(saved)


def _ensemble() -> Ensemble:
    lin = LinearModel.from_state_space(LinearStateSpace(A=[[0.5]], B=[[1.0, 0.5]], C=[[2.0]], D=[[0.0, 0.1]], dt=0.01,
                                                        u_mean=[0.5, -1.0], u_std=[2.0, 3.0], y_mean=[0.1],
                                                        y_std=[4.0]))
    return Ensemble([small_model("lru"), small_model("s4d", torch.float64), lin])


def test_ensemble_round_trip(tmp_path: Path) -> None:
    ensemble = _ensemble()
    path = io.save(ensemble, tmp_path / "e.dw", extra={"members": ["a", "b", "c"]})
    loaded = io.load(path)
    assert isinstance(loaded, Ensemble)
    assert [type(m).__name__ for m in loaded.members] == ["DeepWiener", "DeepWiener", "LinearModel"]
    assert loaded.members[0].u_mean.dtype == torch.float32 and loaded.members[1].u_mean.dtype == torch.float64
    u = np.random.default_rng(0).normal(size=(60, 2))
    np.testing.assert_array_equal(loaded.simulate(u), ensemble.simulate(u))
    info = io.read_info(path)
    assert info["kind"] == "ensemble" and info["dtype"] == "float64" and info["extra"] == {"members": ["a", "b", "c"]}
    assert [m["kind"] for m in info["config"]["members"]] == ["deepwiener", "deepwiener", "linear"]
    assert len(info["scaler"]) == 3 and info["scaler"][2]["u_std"] == [2.0, 3.0]


def test_ensemble_of_one_model_twice(tmp_path: Path) -> None:
    model = small_model()
    loaded = io.load(io.save(Ensemble([model, model]), tmp_path / "e.dw"))
    assert loaded.members[0] is not loaded.members[1]
    u = np.random.default_rng(0).normal(size=(30, 2))
    np.testing.assert_array_equal(loaded.simulate(u), model.simulate(u))


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    return safetensors.torch.load(path.read_bytes())


@pytest.mark.parametrize(("config", "message"), [
    ({"members": []}, "an ensemble's config must be"),
    ({"members": [{"kind": "linear"}] * 2, "other": 1}, "an ensemble's config must be"),
    ({"members": [{"kind": "linear", "dtype": "float64"}] * 2}, "member 0 must have the keys kind, dtype and config"),
    ({"members": [{"kind": "ensemble", "dtype": "float64", "config": {}}] * 2}, "member 0 has kind 'ensemble'"),
    ({"members": [{"kind": "linear", "dtype": "int8", "config": {}}] * 2}, "member 0 has an unsupported dtype"),
])
def test_bad_ensemble_config(tmp_path: Path, config: dict, message: str) -> None:
    path = io.save(_ensemble(), tmp_path / "e.dw")
    reseal(path, config=json.dumps(config))
    with pytest.raises(ModelFileError, match=rf"e\.dw: (ensemble )?{message}"):
        io.load(path)


def test_ensemble_with_tensors_of_no_member(tmp_path: Path) -> None:
    path = io.save(_ensemble(), tmp_path / "e.dw")
    tensors = {**_tensors(path), "member7.A": torch.zeros(1, 1, dtype=torch.float64)}
    reseal(path, tensors=tensors)
    with pytest.raises(ModelFileError, match=r"e\.dw: tensors of no ensemble member: \['member7\.A'\]"):
        io.load(path)


def test_ensemble_member_that_does_not_fit(tmp_path: Path) -> None:
    path = io.save(_ensemble(), tmp_path / "e.dw")
    config = io.read_info(path)["config"]
    config["members"][2]["config"]["n_states"] = 2
    reseal(path, config=json.dumps(config))
    with pytest.raises(ModelFileError, match=r"e\.dw: shape mismatch: tensor 'A' has shape \(1, 1\)"):
        io.load(path)
