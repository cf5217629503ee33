"""Run configuration: precedence, the resolved TOML round trip, and errors for unknown keys and bad values."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from deepwiener.config import DataConfig, resolve
from deepwiener.errors import ConfigError
from deepwiener.layers import LAYERS
from deepwiener.training import TrainConfig

SILVERBOX = {"data": {"benchmark": "silverbox"}}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.toml"
    path.write_text(text)
    return path


def test_defaults_then_file_then_flags(tmp_path: Path) -> None:
    path = write(tmp_path, '[model]\nd_model = 8\nn_layers = 2\n[layer]\nr_min = 0.9\n[train]\nwindow = 256\nlr = 1\n')
    cfg = resolve(path, {**SILVERBOX, "model": {"d_model": 12, "d_state": None}, "train": {"epochs": 3}})
    assert cfg.model["d_model"] == 12  # flag beats file
    assert cfg.model["n_layers"] == 2  # file beats default
    assert cfg.model["d_state"] == 32  # None flag = not given: default
    assert cfg.model["layer_options"] == {"readout": "next", "r_min": 0.9, "r_max": 0.99,
                                          "max_phase": pytest.approx(3.14159265)}
    assert cfg.train == TrainConfig(window=256, lr=1, epochs=3)
    assert cfg.build_model(n_u=2, n_y=1).config.layer_options["r_min"] == 0.9


def test_resolved_toml_round_trip(tmp_path: Path) -> None:
    cfg = resolve(None, {"data": {"csv": "rig.csv", "u": ("a", "b"), "y": ("c",), "dt": 0.5},
                         "model": {"layer": "s5"}, "train": {"max_minutes": 2.5}})
    text = cfg.to_toml()
    assert "# ssm_lr is unset (None)" in text and "dt_min = 0.01" in text and 'u = [\n    "a",' in text
    again = resolve(write(tmp_path, text))
    assert again == cfg and again.to_toml() == text


def test_new_data_source_replaces_the_files(tmp_path: Path) -> None:
    path = write(tmp_path, '[data]\ncsv = "rig.csv"\nu = ["a"]\ny = ["b"]\ndt = 1.0\n')
    assert resolve(path, SILVERBOX).data == DataConfig(benchmark="silverbox")
    assert resolve(path, {"data": {"dt": 2.0}}).data.dt == 2.0


@pytest.mark.parametrize(("text", "message"), [
    ("[train]\nwindw = 5\n", r"unknown \[train\] key 'windw'; valid: window, .* \(did you mean 'window'\?\)"),
    ("[model]\nlayers = 2\n", r"unknown \[model\] key 'layers'; valid: layer, d_model, .*n_layers"),
    ("[model]\nn_u = 2\n", r"unknown \[model\] key 'n_u'"),
    ("[layer]\ndt_min = 0.1\n", r"unknown \[layer\] key 'dt_min'; valid: readout, r_min, r_max, max_phase"),
    ("[trian]\nlr = 1\n", r"unknown .*table 'trian'; valid: data, model, layer, train \(did you mean 'train'\?\)"),
    ("[train]\nlr = \"fast\"\n", r"\[train\] lr must be of type float, got 'fast'"),
    ("[model]\nd_model = 4.5\n", r"\[model\] d_model must be of type int, got 4.5"),
    ("[train]\nepochs = true\n", r"\[train\] epochs must be of type int, got True"),
    ("[model]\nlayer = \"lstm\"\n", r"unknown layer 'lstm'; expected one of: lru, s4, s4d, s5"),
    ("[train]\nwindow = \n", r"invalid TOML"),
])
def test_bad_config_files(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve(write(tmp_path, text), SILVERBOX)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml: no such configuration file"):
        resolve(tmp_path / "nope.toml", SILVERBOX)


@pytest.mark.parametrize(("data", "message"), [
    ({}, "exactly one of --benchmark NAME or --csv FILE"),
    ({"benchmark": "silverbox", "csv": "x.csv"}, "exactly one of"),
    ({"benchmark": "silverbx"}, r"unknown benchmark 'silverbx'.*did you mean 'silverbox'"),
    ({"csv": "x.csv", "u": ["a"]}, r"--csv x\.csv also needs --y --dt"),
    ({"benchmark": "silverbox", "init_window": -1}, "init_window must be >= 0"),
])
def test_bad_data_config(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve(None, {"data": data})


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_every_layer_round_trips(tmp_path: Path, layer: str) -> None:
    cfg = resolve(None, {**SILVERBOX, "model": {"layer": layer}})
    assert resolve(write(tmp_path, cfg.to_toml())) == cfg
    assert set(cfg.model["layer_options"]) == {f.name for f in dataclasses.fields(LAYERS[layer].Options)}
