"""Nonlinear feedback (LFR) model: forward against a numpy loop of its equations, chunks and streaming, the linear
start (``embed_linear``), config validation, model files and ensembles, run configs and ``fit`` (the command line:
``tests/cli/test_cli_lfr.py``)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import run_stepper

from deepwiener import config as config_mod
from deepwiener import io
from deepwiener.data import IOData, fit_scaler
from deepwiener.engines import feedback
from deepwiener.errors import ConfigError
from deepwiener.identification import LinearStateSpace, identify_linear
from deepwiener.models import DeepWiener, Ensemble
from deepwiener.models.lfr import LFRConfig, LFRModel, pad_poles
from deepwiener.training import TrainConfig, fit, split_training, validation_rmse

# ----------------------------------------------------------------------------------------------------------
# references


def _hand_set(model: LFRModel, seed: int = 0) -> dict[str, np.ndarray]:
    """Set every parameter of a float64 "poly" or "mlp" LFR by hand (E, F, G, H, biases and the map's parameters
    nonzero) and a non-identity scaler; return them as numpy arrays."""
    rng = np.random.default_rng(seed)
    cfg = model.config
    n_x, n_w, n_u, n_y = cfg.n_x, cfg.n_w, cfg.n_u, cfg.n_y
    A = rng.normal(size=(n_x, n_x))
    values = {
        "A": 0.7 * A / np.linalg.norm(A, 2),
        "B": rng.normal(size=(n_x, n_u)),
        "E": 0.2 * rng.normal(size=(n_x, n_w)),
        "b_x": 0.1 * rng.normal(size=n_x),
        "F": 0.5 * rng.normal(size=(n_w, n_x)),
        "G": 0.5 * rng.normal(size=(n_w, n_u)),
        "C": rng.normal(size=(n_y, n_x)),
        "D": rng.normal(size=(n_y, n_u)),
        "H": rng.normal(size=(n_y, n_w)),
        "b_y": rng.normal(size=n_y),
        "phi.bias": 0.2 * rng.normal(size=n_w),
    }
    if cfg.nonlinearity == "poly":
        values |= {"phi.a2": 0.3 * rng.normal(size=n_w), "phi.a3": -0.2 * np.abs(rng.normal(size=n_w))}
    else:
        values |= {"phi.hidden.weight": rng.normal(size=(2 * n_w, n_w)), "phi.hidden.bias": rng.normal(size=2 * n_w),
                   "phi.out.weight": 0.5 * rng.normal(size=(n_w, 2 * n_w)), "phi.out.bias": rng.normal(size=n_w)}
    assert set(values) == {name for name, _ in model.named_parameters()}
    with torch.no_grad():
        for name, value in values.items():
            model.get_parameter(name).copy_(torch.from_numpy(value))
    values |= {"u_mean": np.array([0.5, -1.0]), "u_std": np.array([2.0, 0.5]),
               "y_mean": np.array([3.0, -2.0]), "y_std": np.array([0.1, 10.0])}
    model.set_scaler(values["u_mean"], values["u_std"], values["y_mean"], values["y_std"])
    return values


_erf = np.vectorize(math.erf)


def _phi(p: dict[str, np.ndarray], z: np.ndarray) -> np.ndarray:
    """The static map on z (n_w,): z + a2 z^2 + a3 z^3 ("poly") or W2 gelu(W1 z + c1) + c2 ("mlp", exact gelu),
    both after phi's bias."""
    s = z + p["phi.bias"]
    if "phi.a2" in p:
        return s + p["phi.a2"] * s**2 + p["phi.a3"] * s**3
    a = p["phi.hidden.weight"] @ s + p["phi.hidden.bias"]
    return p["phi.out.weight"] @ (a * 0.5 * (1 + _erf(a / math.sqrt(2)))) + p["phi.out.bias"]


def _reference(p: dict[str, np.ndarray], u: np.ndarray, x0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The module docstring's equations, sample by sample: u (T, n_u), x0 (n_x,) -> (y (T, n_y), x[T])."""
    x = x0.copy()
    ys = []
    for u_k in u:
        u_n = (u_k - p["u_mean"]) / p["u_std"]
        w = _phi(p, p["F"] @ x + p["G"] @ u_n)
        ys.append(p["y_mean"] + p["y_std"] * (p["C"] @ x + p["D"] @ u_n + p["H"] @ w + p["b_y"]))
        x = p["A"] @ x + p["B"] @ u_n + p["E"] @ w + p["b_x"]
    return np.array(ys), x


def _hand_set_generic(model: LFRModel) -> None:
    """Non-trivial E, H, biases and scaler for any nonlinearity (E and H are tiny at the random start)."""
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name in ("E", "H", "b_x", "b_y", "D"):
            param = model.get_parameter(name)
            param.copy_(0.5 * torch.randn(param.shape, generator=gen, dtype=param.dtype))
        model.phi.bias.copy_(torch.randn(model.phi.bias.shape, generator=gen, dtype=model.phi.bias.dtype))
    model.set_scaler([0.2, -0.4], [1.5, 0.7], [1.0, -3.0], [2.0, 0.3])


def _numpy_params(model: LFRModel) -> dict[str, np.ndarray]:
    return {name: t.detach().double().numpy() for name, t in model.state_dict().items()}


def _linear_states(p: dict[str, np.ndarray], u: np.ndarray) -> np.ndarray:
    """x[k] (T, n_x) of x+ = A x + B u_n + b_x from x = 0 (the loop with E = 0)."""
    x = np.zeros(p["A"].shape[0])
    states = []
    for u_k in (u - p["u_mean"]) / p["u_std"]:
        states.append(x)
        x = p["A"] @ x + p["B"] @ u_k + p["b_x"]
    return np.array(states)


def _hand_linear() -> LinearStateSpace:
    """A 2-state, 2-input, 2-output linear model with its own (non-trivial) scaling."""
    rotation = np.array([[np.cos(0.4), -np.sin(0.4)], [np.sin(0.4), np.cos(0.4)]])
    return LinearStateSpace(A=0.9 * rotation, B=np.array([[1.0, -0.5], [0.3, 0.8]]),
                            C=np.array([[0.7, 0.2], [-0.4, 1.1]]), D=np.array([[0.1, 0.0], [-0.2, 0.3]]),
                            dt=0.01, u_mean=np.array([1.0, -0.3]), u_std=np.array([0.5, 2.0]),
                            y_mean=np.array([-4.0, 2.5]), y_std=np.array([3.0, 0.2]))


def _duffing(n: int, seed: int = 0, h: float = 0.1) -> IOData:
    """A hardening spring (Lur'e system): p'' = -p - 0.4 p' - 3 p^3 + u, semi-implicit Euler, y = p."""
    rng = np.random.default_rng(seed)
    e = rng.normal(size=n)
    u = np.zeros(n)
    for k in range(1, n):
        u[k] = 0.7 * u[k - 1] + 0.6 * e[k]
    p = v = 0.0
    y = np.zeros(n)
    for k in range(n):
        y[k] = p
        v = v + h * (-p - 0.4 * v - 3.0 * p**3 + u[k])
        p = p + h * v
    return IOData(u=u, y=y, dt=h, name=f"duffing{seed}")


# ----------------------------------------------------------------------------------------------------------
# simulation


@pytest.mark.parametrize(("nonlinearity", "mode"), [("poly", "auto"), ("mlp", "loop"), ("mlp", "auto")])
def test_forward_matches_numpy_loop_of_the_equations(nonlinearity: str, mode: str) -> None:
    model = LFRModel(2, 2, n_x=3, n_w=2, nonlinearity=nonlinearity, seed=1).double()
    params = _hand_set(model)
    rng = np.random.default_rng(2)
    u = params["u_mean"] + params["u_std"] * rng.normal(size=(2, 40, 2))
    x0 = 0.3 * rng.normal(size=(2, 3))
    compiled = nonlinearity == "mlp" and mode == "auto" and feedback.available()  # "auto": compiled where it runs
    assert model.engine(mode, "cpu") == ("compiled" if compiled else "loop")
    y, (x_final,) = model(torch.from_numpy(u), (torch.from_numpy(x0),), mode=mode)
    assert y.shape == (2, 40, 2) and x_final.shape == (2, 3)
    for b in range(2):
        y_ref, x_ref = _reference(params, u[b], x0[b])
        assert np.abs(y_ref).max() < 1e3  # a well-behaved trajectory, not a blow-up that hides errors
        np.testing.assert_allclose(y[b].detach().numpy(), y_ref, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(x_final[b].detach().numpy(), x_ref, rtol=1e-10, atol=1e-10)
    # state None is the zero state; simulate is forward on numpy in physical units
    y_ref, _ = _reference(params, u[0], np.zeros(3))
    np.testing.assert_allclose(model.simulate(u[0], mode=mode), y_ref, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(model.poles(), np.linalg.eigvals(params["A"]))
    assert model.n_parameters == sum(v.size for k, v in params.items() if not k.endswith(("_mean", "_std")))


def test_linear_only_modes_are_refused() -> None:
    model = LFRModel(1, 1, n_x=2, n_w=1, nonlinearity="tanh")
    for mode in ("scan", "fft"):
        with pytest.raises(ConfigError, match=f"mode '{mode}' simulates linear systems"):
            model.simulate(np.zeros(10), mode=mode)
    with pytest.raises(ConfigError, match="'compiled' runs LFR models with nonlinearity 'mlp' on the CPU only"):
        model.simulate(np.zeros(10), mode="compiled")


def test_chunks_and_stepper_equal_one_pass() -> None:
    model = LFRModel(2, 2, n_x=4, n_w=3, nonlinearity="tanh", seed=2).double()
    _hand_set_generic(model)
    u = torch.randn(3, 30, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y, state = model(u)
    y1, s1 = model(u[:, :7])
    y2, s2 = model(u[:, 7:19], s1)
    y3, s3 = model(u[:, 19:], s2)
    torch.testing.assert_close(torch.cat([y1, y2, y3], dim=1), y, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(s3[0], state[0], rtol=1e-12, atol=1e-12)
    stepper = model.stepper()
    streamed, final = run_stepper(stepper, u, stepper.init_state(3))
    torch.testing.assert_close(streamed, y, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(final[0], state[0], rtol=1e-12, atol=1e-12)
    y_k, _ = model.step(u[:, 0], model.init_state(3))
    torch.testing.assert_close(y_k, y[:, 0])


def test_same_seed_same_parameters_and_rng_untouched() -> None:
    rng_state = torch.get_rng_state()
    a, b, c = LFRModel(1, 1, seed=5), LFRModel(1, 1, seed=5), LFRModel(1, 1, seed=6)
    assert torch.equal(rng_state, torch.get_rng_state())
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters(), strict=True))
    rebuilt = LFRModel.from_config(LFRConfig.from_dict(a.config.to_dict()))
    assert rebuilt.config == a.config and a.config.kind == "lfr"
    poles = np.sort(a.poles().real)
    assert np.all((poles >= 0.5) & (poles <= 0.95)) and np.allclose(a.poles().imag, 0)


# ----------------------------------------------------------------------------------------------------------
# linear start


@pytest.mark.parametrize("nonlinearity", ["mlp", "poly", "tanh"])
def test_embed_linear_reproduces_the_linear_model(nonlinearity: str) -> None:
    linear = _hand_linear()
    model = LFRModel(2, 2, n_x=5, n_w=3, nonlinearity=nonlinearity, seed=3).double()
    _hand_set_generic(model)  # the embedding must overwrite all of this but phi's inner weights
    model.set_scaler([-0.5, 2.0], [1.3, 0.4], [1.0, -7.0], [5.0, 0.05])  # not the linear model's scaling
    rng = np.random.default_rng(0)
    inputs = [np.array([1.0, -0.3]) + rng.normal(size=(400, 2)) * [0.5, 2.0] for _ in range(2)]
    model.embed_linear(linear, inputs)
    assert model.A.dtype == torch.float64
    u_test = np.array([0.8, 0.0]) + rng.normal(size=(300, 2)) * [0.7, 1.5]  # not a training input
    y_lin = linear.simulate(u_test)
    y_lfr = model.simulate(u_test)
    scale = np.abs(y_lin).max(0)
    np.testing.assert_allclose(y_lfr / scale, y_lin / scale, rtol=0, atol=1e-8)
    # padding: the linear poles plus uncoupled states at distinct stable poles
    poles = model.poles()
    assert len(set(pad_poles(3))) == 3 and np.all(np.abs(pad_poles(3)) < 1)
    expected = np.concatenate([linear.poles, pad_poles(3)])
    np.testing.assert_allclose(np.sort_complex(poles), np.sort_complex(expected), atol=1e-12)

    p = _numpy_params(model)
    # z = F x + G u_n, biased by phi: zero mean and unit scale per channel on the given inputs
    z = np.concatenate([_linear_states(p, u) @ p["F"].T + ((u - p["u_mean"]) / p["u_std"]) @ p["G"].T
                        for u in inputs]) + p["phi.bias"]
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-9)
    np.testing.assert_allclose(z.std(0), 1.0, rtol=2e-3)  # unit rms (ddof 0 or 1: within 1/(2 * 800))
    np.testing.assert_array_equal(p["E"], 0.0)
    np.testing.assert_array_equal(p["H"], 0.0)


@pytest.mark.parametrize("n_x", [2, 3, 5])
def test_embed_linear_whitens_the_state(n_x: int) -> None:
    """The module docstring: the states are whitened, their covariance on the training records the identity.

    With n_x = 5 there are three padding states: they need distinct poles to be independent (with one pole for all,
    as first written, their covariance was singular and this case failed)."""
    linear = _hand_linear()
    model = LFRModel(2, 2, n_x=n_x, n_w=3, nonlinearity="tanh", seed=3).double()
    model.set_scaler([-0.5, 2.0], [1.3, 0.4], [1.0, -7.0], [5.0, 0.05])
    rng = np.random.default_rng(0)
    inputs = [np.array([1.0, -0.3]) + rng.normal(size=(400, 2)) * [0.5, 2.0] for _ in range(2)]
    model.embed_linear(linear, inputs)
    p = _numpy_params(model)
    states = np.concatenate([_linear_states(p, u) for u in inputs])
    np.testing.assert_allclose(np.cov(states.T), np.eye(n_x), atol=1e-4)
    u_test = rng.normal(size=(100, 2))
    np.testing.assert_allclose(model.simulate(u_test), linear.simulate(u_test), rtol=1e-8, atol=1e-8)


def test_embed_linear_keeps_float32() -> None:
    linear = _hand_linear()
    model = LFRModel(2, 2, n_x=2, n_w=2, nonlinearity="tanh", seed=0)
    model.set_scaler([1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [1.0, 1.0])
    u = np.random.default_rng(1).normal(size=(200, 2))
    model.embed_linear(linear, [u])
    assert all(p.dtype == torch.float32 for p in model.parameters())
    y_lin = linear.simulate(u)
    np.testing.assert_allclose(model.simulate(u), y_lin, rtol=1e-4, atol=1e-4 * np.abs(y_lin).max())


def test_embed_linear_refusals() -> None:
    linear = _hand_linear()
    u = [np.zeros((50, 2))]
    with pytest.raises(ConfigError, match="2 states; n_x is 1"):
        LFRModel(2, 2, n_x=1).embed_linear(linear, u)
    with pytest.raises(ConfigError, match=r"n_u=2, n_y=2; the model has n_u=1, n_y=2"):
        LFRModel(1, 2, n_x=4).embed_linear(linear, u)
    with pytest.raises(ConfigError, match=r"n_u=2, n_y=2; the model has n_u=2, n_y=1"):
        LFRModel(2, 1, n_x=4).embed_linear(linear, u)


def test_initialize_linear_caps_the_order_at_n_x() -> None:
    data = _duffing(1200)
    train, val = split_training([data], None, TrainConfig(window=100, washout=20))
    for n_x in (1, 3):
        model = LFRModel(1, 1, n_x=n_x, n_w=2, seed=0).double()
        model.with_dt(data.dt)
        model.set_scaler(*fit_scaler(train))
        linear = model.start_linear(train, val)
        assert 1 <= linear.n_states <= n_x
        np.testing.assert_allclose(model.simulate(data.u), linear.simulate(data.u), rtol=0,
                                   atol=1e-8 * np.abs(data.y).max())


# ----------------------------------------------------------------------------------------------------------
# configuration


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_x": 0}, "n_x must be a positive integer, got 0"),
        ({"n_x": True}, "n_x must be a positive integer, got True"),
        ({"n_w": 2.5}, "n_w must be a positive integer, got 2.5"),
        ({"nonlinearity": "tahn"}, "unknown nonlinearity 'tahn'.*did you mean 'tanh'"),
        ({"dt": 0.0}, "dt must be a positive number"),
    ],
)
def test_config_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        LFRConfig(n_u=1, n_y=1, **kwargs)
    with pytest.raises(ConfigError, match=match):
        LFRModel(1, 1, **kwargs)


def test_from_dict_rejects_unknown_keys() -> None:
    with pytest.raises(ConfigError, match=r"unknown LFRConfig option\(s\) \['nx'\]"):
        LFRConfig.from_dict({"n_u": 1, "n_y": 1, "nx": 4})


def test_run_config_builds_an_lfr(tmp_path: Path) -> None:
    path = tmp_path / "lfr.toml"
    path.write_text('[data]\nbenchmark = "silverbox"\n\n[model]\nkind = "lfr"\nn_x = 3\nn_w = 2\n'
                    'nonlinearity = "tanh"\nseed = 7\n\n[train]\nepochs = 2\n')
    cfg = config_mod.resolve(path)
    assert cfg.kind == "lfr" and cfg.label == "lfr" and cfg.train.epochs == 2
    assert dict(cfg.model) == {"n_x": 3, "n_w": 2, "nonlinearity": "tanh", "stable": False,
                                "certificate": "small_gain", "seed": 7}
    model = cfg.build_model(1, 1)
    assert isinstance(model, LFRModel)
    assert model.config == LFRConfig(n_u=1, n_y=1, n_x=3, n_w=2, nonlinearity="tanh", seed=7)
    for p, q in zip(model.parameters(), LFRModel(1, 1, n_x=3, n_w=2, nonlinearity="tanh", seed=7).parameters(),
                    strict=True):
        assert torch.equal(p, q)
    # overrides win over the file; defaults fill the rest; the TOML written back resolves to the same
    cfg2 = config_mod.resolve(path, {"model": {"n_x": 5, "seed": None}})
    assert cfg2.model["n_x"] == 5 and cfg2.model["seed"] == 7
    defaults = config_mod.resolve(overrides={"data": {"benchmark": "silverbox"}, "model": {"kind": "lfr"}})
    assert dict(defaults.model) == {"n_x": 8, "n_w": 4, "nonlinearity": "mlp", "stable": False,
                                     "certificate": "small_gain", "seed": 0}
    again = tmp_path / "again.toml"
    again.write_text(cfg.to_toml())
    assert config_mod.resolve(again) == cfg


@pytest.mark.parametrize(
    ("tables", "match"),
    [
        ({"model": {"kind": "lfr"}, "layer": {"r_min": 0.5}}, r"model kind 'lfr' has no layer \(got \['r_min'\]\)"),
        ({"model": {"kind": "lfr", "hidden": 8}}, "unknown \\[model\\] key 'hidden'; valid: n_x, n_w, nonlinearity, "
                                                  "stable, certificate, seed$"),
        ({"model": {"kind": "lfr", "n_xx": 8}}, "did you mean 'n_x'"),
        ({"model": {"kind": "lfr", "n_x": True}}, r"\[model\] n_x must be of type int"),
        ({"model": {"kind": "lfr", "n_w": 0}}, "n_w must be a positive integer"),
        ({"model": {"kind": "lfr", "nonlinearity": "tahn"}}, "unknown nonlinearity 'tahn'.*did you mean 'tanh'"),
        ({"model": {"kind": "lrf"}}, "unknown model kind 'lrf'.*did you mean 'lfr'"),
    ],
)
def test_run_config_errors(tables: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        config_mod.resolve(overrides={"data": {"benchmark": "silverbox"}, **tables})


# ----------------------------------------------------------------------------------------------------------
# model files and ensembles


def test_save_load_round_trip(tmp_path: Path) -> None:
    model = LFRModel(2, 2, n_x=3, n_w=2, nonlinearity="poly", seed=4).double()
    _hand_set(model)
    model.with_dt(0.01)
    path = io.save(model, tmp_path / "lfr.dw", extra={"note": "x"})
    loaded = io.load(path)
    assert isinstance(loaded, LFRModel) and loaded.config == model.config and loaded.dt == 0.01
    assert loaded.A.dtype == torch.float64 and not loaded.training
    info = io.read_info(path)
    assert info["kind"] == "lfr" and info["dtype"] == "float64" and info["extra"] == {"note": "x"}
    assert info["config"] == model.config.to_dict()
    assert info["scaler"]["y_std"] == [0.1, 10.0]
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    u = np.random.default_rng(1).normal(size=(60, 2))
    np.testing.assert_array_equal(loaded.simulate(u), model.simulate(u))


def test_ensemble_of_lfr_and_deep_wiener(tmp_path: Path) -> None:
    lfr = LFRModel(1, 1, n_x=3, n_w=2, nonlinearity="tanh", seed=1)
    _set_scaler_1d(lfr)
    lfr.with_dt(0.01)
    deep = DeepWiener(1, 1, d_model=4, d_state=3, n_layers=1, seed=2)
    deep.with_dt(0.01)
    ensemble = Ensemble([lfr, deep])
    u = np.random.default_rng(0).normal(size=(80, 1))
    np.testing.assert_allclose(ensemble.simulate(u), (lfr.simulate(u) + deep.simulate(u)) / 2, rtol=1e-12)
    assert ensemble.n_parameters == lfr.n_parameters + deep.n_parameters
    path = io.save(ensemble, tmp_path / "e.dw")
    info = io.read_info(path)
    assert info["kind"] == "ensemble"
    assert [m["kind"] for m in info["config"]["members"]] == ["lfr", "deepwiener"]
    loaded = io.load(path)
    assert isinstance(loaded, Ensemble)
    assert [type(m) for m in loaded.members] == [LFRModel, DeepWiener]
    assert loaded.members[0].config == lfr.config
    np.testing.assert_array_equal(loaded.simulate(u), ensemble.simulate(u))
    other_dt = LFRModel(1, 1, n_x=3, n_w=2, seed=1)
    other_dt.with_dt(0.02)
    with pytest.raises(ConfigError, match="sampling time"):
        Ensemble([other_dt, deep])


def _set_scaler_1d(model: LFRModel) -> None:
    model.set_scaler([0.3], [2.0], [-1.0], [4.0])


# ----------------------------------------------------------------------------------------------------------
# training


def test_fit_from_the_linear_start_does_not_get_worse() -> None:
    data = _duffing(1500)
    config = TrainConfig(init="linear", epochs=3, window=100, washout=20, batch_size=8, lr=1e-2, patience=None,
                         dtype="float64")
    # the linear start, found independently: N4SID on the same training part, scored on the same validation tail
    train, val = split_training([data], None, config)
    linear = identify_linear(train, [(v.data, v.start) for v in val], max_order=4)
    start = val[0].start
    linear_rmse = float(np.sqrt(np.mean((linear.simulate(data.u)[start:] - data.y[start:]) ** 2)))
    assert linear_rmse < 0.75 * data.y[start:].std()  # a useful linear model to start from

    model = LFRModel(1, 1, n_x=4, n_w=2, nonlinearity="poly", seed=0)
    result = fit(model, data, config)
    assert model.dt == data.dt and model.A.dtype == torch.float64
    assert len(result.history) == 3 and all(np.isfinite(h["val_rmse"]) for h in result.history)
    assert result.best_val_rmse <= linear_rmse * (1 + 1e-9)
    assert validation_rmse(model, val, config.mode) == pytest.approx(result.best_val_rmse, rel=1e-9)
    if result.best_epoch == 0:  # no epoch beat the start: the model is the linear start again
        np.testing.assert_allclose(model.simulate(data.u), linear.simulate(data.u), rtol=0,
                                   atol=1e-8 * np.abs(data.y).max())
    else:  # an epoch beat it (here, with this seed: epoch 1, RMSE about 0.74 of the linear model's)
        assert result.best_val_rmse < linear_rmse
        assert result.best_val_rmse == min(h["val_rmse"] for h in result.history)
        assert np.abs(model.E.detach().numpy()).max() > 0  # the feedback grew from zero
