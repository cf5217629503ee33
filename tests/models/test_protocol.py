"""The model protocol: every registered kind builds, simulates, steps, streams and round-trips through a model file
alike, and a kind defined here (a FIR model with one parameter tensor) registers with one call and then trains,
saves, evaluates, joins an ensemble, streams, and runs through the command line, with no change to the package."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
from cli.cli_helpers import run_cli, write_csv
from helpers import run_stepper
from torch import Tensor, nn

import deepwiener as dw
from deepwiener.errors import ConfigError
from deepwiener.models import registry
from deepwiener.options import DictConfig


@dataclasses.dataclass(frozen=True)
class FIRConfig(DictConfig):
    """A FIR model: y[k] = sum_{i < taps} h_i u[k - i], in normalised units."""

    kind: ClassVar[str] = "fir"

    n_u: int
    n_y: int
    taps: int = 6
    seed: int = 0
    dt: float = 1.0


class FIRModel(dw.Model):
    """A toy kind: one parameter tensor ``h`` (taps, n_y, n_u); the state is the last ``taps - 1`` inputs."""

    config_class = FIRConfig
    capabilities = frozenset()

    def __init__(self, n_u: int, n_y: int, taps: int = 6, seed: int = 0, dt: float = 1.0) -> None:
        super().__init__()
        self.config = FIRConfig(n_u=n_u, n_y=n_y, taps=taps, seed=seed, dt=dt)
        gen = torch.Generator().manual_seed(seed)
        self.h = nn.Parameter(0.1 * torch.randn(taps, n_y, n_u, generator=gen))
        self.register_scaler()

    def init_state(self, batch: int) -> tuple[Tensor]:
        return (self.h.new_zeros(batch, self.config.taps - 1, self.config.n_u),)

    def forward(self, u: Tensor, state: tuple[Tensor] | None = None, mode: str = "auto") -> tuple[Tensor, tuple]:
        self.check_input(u)
        past = self.init_state(u.shape[0])[0] if state is None else state[0]
        full = torch.cat([past, self.normalize_input(u)], dim=1)  # (b, taps - 1 + t, n_u)
        windows = full.unfold(1, self.config.taps, 1).flip(-1)  # (b, t, n_u, taps): u[k], u[k - 1], ...
        y_n = torch.einsum("btuk,kyu->bty", windows, self.h)
        return self.denormalize_output(y_n), (full[:, full.shape[1] - self.config.taps + 1 :],)


@pytest.fixture
def fir_registered() -> Iterator[None]:
    """Register the FIR kind for one test (with the one call a user makes), then restore the registry."""
    saved = [dict(table) for table in (registry._KINDS, registry._NAMES, registry._FIXED)]
    dw.register_kind(FIRModel)
    yield
    for table, before in zip((registry._KINDS, registry._NAMES, registry._FIXED), saved, strict=True):
        table.clear()
        table.update(before)


def fir_data(steps: int, seed: int) -> dw.IOData:
    """A FIR system with an offset and a little noise."""
    rng = np.random.default_rng(seed)
    u = rng.normal(size=steps)
    y = 2.0 + np.convolve(u, [0.5, 0.3, -0.2, 0.1])[:steps] + 0.01 * rng.normal(size=steps)
    return dw.IOData(u=u[:, None], y=y[:, None], dt=0.01, name=f"fir{seed}")


def test_a_kind_of_ones_own_through_fit_files_evaluation_ensembles_and_streaming(fir_registered: None,
                                                                                tmp_path: Path) -> None:
    assert "fir" in dw.MODEL_KINDS
    model = dw.build_model("fir", n_u=1, n_y=1, seed=1, taps=5)
    result = dw.fit(model, fir_data(2000, seed=0), dw.TrainConfig(window=100, washout=10, epochs=60, batch_size=8,
                                                                               lr=2e-2))
    test = fir_data(800, seed=1)
    metrics = dw.evaluate(model, test, init_window=10)
    assert result.epochs_run >= 1 and metrics["fit"] > 90  # it learned the system
    loaded = dw.load(dw.save(model, tmp_path / "fir.dw"))
    assert isinstance(loaded, FIRModel) and loaded.config == model.config
    np.testing.assert_array_equal(loaded.simulate(test.u), model.simulate(test.u))
    ensemble = dw.Ensemble([model, dw.build_model("fir", n_u=1, n_y=1, seed=2, dt=0.01)])
    again = dw.load(dw.save(ensemble, tmp_path / "ensemble.dw"))
    np.testing.assert_allclose(again.simulate(test.u), ensemble.simulate(test.u), rtol=1e-12)
    with torch.no_grad():
        stepped, _ = run_stepper(model.stepper(), torch.tensor(test.u, dtype=torch.float32)[None],
                                 model.init_state(1))
    np.testing.assert_allclose(stepped[0].numpy(), model.simulate(test.u), rtol=0, atol=1e-5)
    np.testing.assert_allclose(model.fast_stepper().run(test.u), model.simulate(test.u), rtol=0, atol=1e-5)
    with pytest.raises(ConfigError, match="init='linear' is not available for model kind 'fir'"):
        dw.fit(dw.build_model("fir", n_u=1, n_y=1), fir_data(500, 0),
               dw.TrainConfig(window=50, washout=5, init="linear"))


def test_a_kind_of_ones_own_through_the_command_line(fir_registered: None, tmp_path: Path) -> None:
    train, test = fir_data(2000, seed=0), fir_data(600, seed=1)
    write_csv(tmp_path / "train.csv", {"u": train.u[:, 0], "y": train.y[:, 0]})
    write_csv(tmp_path / "test.csv", {"u": test.u[:, 0], "y": test.y[:, 0]})
    (tmp_path / "fir.toml").write_text('[model]\nkind = "fir"\ntaps = 4\n\n[train]\nwindow = 100\nwashout = 10\n'
                                       "epochs = 40\nbatch_size = 8\nlr = 0.02\n")
    data = ["--csv", tmp_path / "train.csv", "--u", "u", "--y", "y", "--dt", 0.01]
    trained = run_cli(["train", *data, "--config", tmp_path / "fir.toml", "--seed", 3, "--out", tmp_path / "run"])
    assert trained.code == 0, trained.err
    resolved = (tmp_path / "run" / "config.toml").read_text()
    assert 'kind = "fir"' in resolved and "taps = 4" in resolved
    model = dw.load(tmp_path / "run" / "model.dw")
    assert isinstance(model, FIRModel) and model.config.seed == 3
    evaluated = run_cli(["evaluate", tmp_path / "run", "--csv", tmp_path / "test.csv", "--u", "u", "--y", "y",
                         "--dt", 0.01, "--json", tmp_path / "m.json"])
    assert evaluated.code == 0, evaluated.err
    simulated = run_cli(["simulate", tmp_path / "run", "--csv", tmp_path / "test.csv", "--out", tmp_path / "y.csv"])
    assert simulated.code == 0, simulated.err
    y_hat = np.loadtxt(tmp_path / "y.csv", delimiter=",", skiprows=1)[:, 1]
    np.testing.assert_allclose(y_hat, model.simulate(test.u)[:, 0], rtol=1e-8, atol=1e-9)
    exported = run_cli(["export", tmp_path / "run", "--format", "onnx", "--out", tmp_path / "fir.onnx"])
    assert exported.code == 2 and "error: model kind 'fir' cannot be exported" in exported.err  # no export_step


@pytest.mark.parametrize("kind", sorted(dw.MODEL_KINDS))
def test_every_kind_builds_simulates_steps_streams_and_round_trips(kind: str, tmp_path: Path) -> None:
    model = dw.build_model(kind, n_u=2, n_y=1, seed=3)
    again = dw.build_model(kind, n_u=2, n_y=1, seed=3)
    for name, tensor in model.state_dict().items():  # a seed gives the same model
        assert torch.equal(again.state_dict()[name], tensor), name
    model.set_scaler([0.5, -1.0], [2.0, 0.5], [1.0], [3.0])
    u = np.random.default_rng(0).normal(size=(80, 2))
    y = model.simulate(u)
    assert y.shape == (80, 1) and np.isfinite(y).all()
    with torch.no_grad():
        y_forward, _ = model(torch.tensor(u, dtype=model.dtype)[None])
        stepper = model.stepper()
        y_step, _ = run_stepper(stepper, torch.tensor(u, dtype=model.dtype)[None], stepper.init_state(1))
    tol = 1e-5 * max(1.0, float(np.abs(y).max()))
    np.testing.assert_allclose(y_forward[0].numpy(), y, rtol=0, atol=tol)
    np.testing.assert_allclose(y_step[0].numpy(), y, rtol=0, atol=tol)
    streamer = model.fast_stepper()
    first = np.stack([streamer.step(u_k) for u_k in u[:30]])
    np.testing.assert_allclose(np.concatenate([first, streamer.run(u[30:])]), y, rtol=0, atol=tol)
    streamer.reset()
    np.testing.assert_allclose(streamer.run(u[:30]), first, rtol=0, atol=1e-12)
    loaded = dw.load(dw.save(model, tmp_path / "m.dw"))
    assert type(loaded) is type(model) and loaded.config == model.config
    np.testing.assert_array_equal(loaded.simulate(u), y)


BUILDS = [{"layer": layer, **extra} for layer in dw.layers.LAYERS
          for extra in ({}, {"norm": "layer", "skip": "linear"}, {"integrator": True, "dropout": 0.1})]
BUILDS.append({"layer": "s4", "layer_options": {"block_order": 2}})


@pytest.mark.parametrize("options", BUILDS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_every_layer_builds_through_the_registry_as_directly(options: dict) -> None:
    """build_model first builds on the meta device (its memory check): every initialisation must allow that (S5's
    and the MIMO S4's once drew their random numbers there and crashed), and give the direct build's parameters."""
    with torch.device("meta"):
        probe = dw.DeepWiener(2, 1, seed=3, d_state=4, d_model=3, **options)  # what the memory check builds
    model = dw.build_model("deepwiener", n_u=2, n_y=1, seed=3, d_state=4, d_model=3, **options)
    reference = dw.DeepWiener(2, 1, seed=3, d_state=4, d_model=3, **options)
    for (name, p), q in zip(model.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=name)
    assert [p.shape for p in probe.parameters()] == [p.shape for p in model.parameters()]


class NumpyFIRModel(FIRModel):
    """A kind whose initialisation computes on concrete values (numpy): it cannot be built on the meta device."""

    def __init__(self, n_u: int, n_y: int, taps: int = 6, seed: int = 0, dt: float = 1.0) -> None:
        super().__init__(n_u, n_y, taps, seed, dt)
        with torch.no_grad():
            self.h.copy_(torch.as_tensor(np.linspace(0.0, 1.0, self.h.numel()).reshape(self.h.shape)))
        float(self.h.sum().detach().numpy())


def test_a_kind_that_cannot_build_on_the_meta_device_still_builds() -> None:
    saved = [dict(table) for table in (registry._KINDS, registry._NAMES, registry._FIXED)]
    dw.register_kind(NumpyFIRModel)
    try:
        model = dw.build_model("fir", n_u=1, n_y=1)
        assert isinstance(model, NumpyFIRModel) and float(model.h.detach().sum()) == pytest.approx(3.0)
    finally:
        for table, before in zip((registry._KINDS, registry._NAMES, registry._FIXED), saved, strict=True):
            table.clear()
            table.update(before)


def test_registry_refusals(fir_registered: None) -> None:
    with pytest.raises(ConfigError, match="'fir' is taken by FIRModel"):
        dw.register_kind(type("Other", (FIRModel,), {}))
    with pytest.raises(ConfigError, match="subclass of deepwiener.models.Model"):
        dw.register_kind(dict)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unknown model kind 'firr'.*did you mean 'fir'"):
        dw.build_model("firr", n_u=1, n_y=1)
    with pytest.raises(ConfigError, match="model kind 'lstm' fixes \\['cell'\\]"):
        dw.build_model("lstm", n_u=1, n_y=1, cell="gru")
    with pytest.raises(ConfigError, match="unknown option of model kind 'fir': 'tapz'; expected one of: dt, taps "
                                          "\\(did you mean 'taps'\\?\\)"):
        dw.build_model("fir", n_u=1, n_y=1, tapz=3)
