"""Model kinds through the command line and model files: ``train --model lstm|gru|linear`` then ``evaluate`` on a
slice of Silverbox; save/load round trips of every model kind; old and corrupt kinds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from cli.cli_helpers import SILVERBOX_DT, run_cli, write_csv
from helpers import reseal

from deepwiener import io
from deepwiener.data import load_benchmark
from deepwiener.errors import ModelFileError
from deepwiener.identification import fit_n4sid
from deepwiener.models import MODEL_KINDS, DeepWiener, LinearModel, RNNModel


@pytest.fixture(scope="module")
def slices(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """CSV slices of the Silverbox training record (V1 input, V2 output): "train" 1500, "test" 500 samples."""
    record = load_benchmark("silverbox", data_dir).train[0]
    folder = tmp_path_factory.mktemp("csv")
    return {name: write_csv(folder / f"{name}.csv", {"V1": record.u[a:b, 0], "V2": record.y[a:b, 0]})
            for name, (a, b) in {"train": (0, 1500), "test": (1500, 2000)}.items()}


SIZES = {"deepwiener": ["--d-model", 4, "--d-state", 4, "--n-layers", 1], "lfr": ["--n-x", 3, "--n-w", 2],
         "lstm": ["--hidden", 8], "gru": ["--hidden", 8], "linear": []}
"""Small sizes for each built-in kind (a kind added to the registry must be added here)."""


def test_every_built_in_kind_has_sizes() -> None:
    assert set(SIZES) == set(MODEL_KINDS)


@pytest.mark.parametrize("kind", sorted(MODEL_KINDS))
def test_train_every_kind_then_evaluate(kind: str, slices: dict[str, Path], tmp_path: Path) -> None:
    config = tmp_path / "tiny.toml"
    config.write_text("[train]\nwindow = 64\nwashout = 10\nbatch_size = 64\n")
    out = tmp_path / kind
    data = ["--csv", slices["train"], "--u", "V1", "--y", "V2", "--dt", SILVERBOX_DT]
    train = run_cli(["train", *data, "--model", kind, *SIZES[kind], "--config", config, "--epochs", 1, "--seed", 1,
                     "--out", out])
    assert train.code == 0, train.err
    assert f'kind = "{kind}"' in (out / "config.toml").read_text()
    assert (out / "plots" / "training.png").is_file()
    model = io.load(out / "model.dw")
    assert isinstance(model, MODEL_KINDS[kind]) and model.config.seed == 1
    assert io.read_info(out / "model.dw")["kind"] == model.kind_name()
    if model.kind == "rnn":
        assert model.config.cell == kind and model.config.hidden == 8

    evaluate = run_cli(["evaluate", out / "model.dw", "--csv", slices["test"], "--u", "V1", "--y", "V2", "--dt",
                        SILVERBOX_DT, "--init-window", 50, "--json", tmp_path / "m.json"])
    assert evaluate.code == 0, evaluate.err
    metrics = json.loads((tmp_path / "m.json").read_text())["test"]
    u = np.loadtxt(slices["test"], delimiter=",", skiprows=1)
    y_hat = model.simulate(u[:, :1])[50:, 0]
    assert metrics["rmse"] == pytest.approx(np.sqrt(np.mean((u[50:, 1] - y_hat) ** 2)), rel=1e-9)
    assert metrics["fit"] > (50.0 if kind == "linear" else -100.0)  # the linear model fits Silverbox well


def test_baseline_options_are_checked(slices: dict[str, Path], tmp_path: Path) -> None:
    data = ["--csv", slices["train"], "--u", "V1", "--y", "V2", "--dt", SILVERBOX_DT]
    wrong = run_cli(["train", *data, "--model", "lstm", "--d-model", 4, "--out", tmp_path / "a"])
    assert wrong.code == 2 and "d_model" in wrong.err and "hidden" in wrong.err
    unknown = run_cli(["train", *data, "--model", "lstn", "--out", tmp_path / "b"])
    assert unknown.code == 2 and "'lstm'" in unknown.err
    init = run_cli(["train", *data, "--model", "gru", "--init", "linear", "--epochs", 1, "--out", tmp_path / "c"])
    assert init.code == 2 and "init='linear' is not available for model kind 'rnn'" in init.err


def _rnn(cell: str) -> RNNModel:
    model = RNNModel(2, 1, cell=cell, hidden=5, n_layers=2, seed=4).double()
    model.with_dt(0.01)
    model.set_scaler([0.5, -1.0], [2.0, 3.0], [0.1], [4.0])
    return model


def _linear() -> LinearModel:
    rng = np.random.default_rng(0)
    u = rng.normal(size=(400, 2))
    y = np.convolve(u[:, 0], [0.5, 0.3, 0.1])[:400, None] + 0.2 * u[:, 1:]
    return LinearModel.from_state_space(fit_n4sid([(u, y)], order=3, dt=0.01))


def _deep_wiener() -> DeepWiener:
    model = DeepWiener(n_u=2, n_y=1, d_model=4, d_state=3, n_layers=2, seed=3)
    model.with_dt(0.01)
    return model


@pytest.mark.parametrize(("make", "kind"), [(_deep_wiener, "deepwiener"), (lambda: _rnn("lstm"), "rnn"),
                                            (lambda: _rnn("gru"), "rnn"), (_linear, "linear")])
def test_round_trip_every_kind(make, kind: str, tmp_path: Path) -> None:
    model = make()
    path = io.save(model, tmp_path / "m.dw", extra={"y_names": ["y"]})
    loaded = io.load(path)
    assert type(loaded) is type(model) and loaded.dt == 0.01
    info = io.read_info(path)
    assert info["kind"] == kind and info["extra"] == {"y_names": ["y"]}
    u = np.random.default_rng(1).normal(size=(60, 2))
    np.testing.assert_array_equal(loaded.simulate(u), model.simulate(u))
    if kind == "linear":
        assert info["dtype"] == "float64" and info["config"]["n_states"] == 3
    assert loaded.config == model.config
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


def test_file_without_kind_is_a_deep_wiener_model(tmp_path: Path) -> None:
    path = io.save(_deep_wiener(), tmp_path / "m.dw")
    old = reseal(path, tmp_path / "old.dw", kind=None)
    assert isinstance(io.load(old), DeepWiener) and io.read_info(old)["kind"] == "deepwiener"


@pytest.mark.parametrize(("kind", "message"), [("transformer", "unknown model kind 'transformer'"),
                                               ("rnn", "invalid model config: .* kind 'rnn'"),
                                               ("linear", "invalid model config: .* kind 'linear'")])
def test_corrupt_kind_is_a_model_file_error(kind: str, message: str, tmp_path: Path) -> None:
    path = reseal(io.save(_deep_wiener(), tmp_path / "m.dw"), tmp_path / "bad.dw", kind=kind)
    for read in (io.load, io.read_info):
        with pytest.raises(ModelFileError, match=message):
            read(path)


def test_linear_file_with_bad_tensors_is_a_model_file_error(tmp_path: Path) -> None:
    path = io.save(_linear(), tmp_path / "m.dw")
    tensors = safetensors.torch.load_file(path)
    tensors["u_std"] = -tensors["u_std"]
    bad = reseal(path, tmp_path / "bad.dw", tensors)
    with pytest.raises(ModelFileError, match="invalid linear model: its scaler's u_std and y_std must be finite and "
                                             "positive"):
        io.load(bad)
    with pytest.raises(ModelFileError, match="cannot save a dict"):
        io.save({}, tmp_path / "x.dw")  # type: ignore[arg-type]
