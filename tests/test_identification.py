"""Linear identification: simulation, FIR, ARX and subspace identification on known systems and on Silverbox."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.signal
from helpers import require_data

from deepwiener.errors import ConfigError, DataError
from deepwiener.identification import (
    LinearStateSpace,
    _stabilise,
    best_linear,
    fit_arx,
    fit_fir,
    fit_n4sid,
    simulate_state_space,
)

POLES_4 = np.array([0.9 * np.exp(0.3j), 0.9 * np.exp(-0.3j), 0.7 * np.exp(1.2j), 0.7 * np.exp(-1.2j)])
NUM_4 = np.array([0.0, 0.5, -0.2, 0.1, 0.05])  # strictly proper
POLES_2 = np.array([0.95 * np.exp(0.2j), 0.95 * np.exp(-0.2j)])
NUM_2 = np.array([0.3, 0.2, 0.1])  # with feedthrough


def system_data(
    num: np.ndarray, poles: np.ndarray, T: int, noise: float = 0.0, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(u (T, 1), y (T, 1)) of a known SISO system from zero state, with offsets and optional white noise."""
    rng = np.random.default_rng(seed)
    u = rng.standard_normal((T, 1)) + 0.3
    y = scipy.signal.lfilter(num, np.real(np.poly(poles)), u[:, 0])[:, None] - 1.0
    return u, y + noise * rng.standard_normal(y.shape)


def pole_error(estimated: np.ndarray, true: np.ndarray) -> float:
    return float(np.max(np.abs(np.sort_complex(estimated) - np.sort_complex(true))))


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x**2)))


def random_model(n: int, m: int, p: int, seed: int = 0) -> LinearStateSpace:
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, n))
    A *= 0.97 / np.max(np.abs(np.linalg.eigvals(A)))
    return LinearStateSpace(
        A,
        rng.standard_normal((n, m)),
        rng.standard_normal((p, n)),
        rng.standard_normal((p, m)),
        0.5,
        rng.standard_normal(m),
        rng.uniform(0.5, 2, m),
        rng.standard_normal(p),
        rng.uniform(0.5, 2, p),
    )


@pytest.mark.parametrize("T", [1, 7, 128, 777, 4096])
def test_simulate_matches_dlsim(T: int) -> None:
    model = random_model(5, 2, 3)
    rng = np.random.default_rng(T)
    u = rng.standard_normal((T, 2))
    x0 = rng.standard_normal(5)
    un = (u - model.u_mean) / model.u_std
    _, yn, _ = scipy.signal.dlsim((model.A, model.B, model.C, model.D, 1.0), un, x0=x0)
    y_ref = model.y_mean + model.y_std * yn.reshape(T, 3)
    np.testing.assert_allclose(model.simulate(u, x0), y_ref, rtol=1e-10, atol=1e-10)
    assert model.simulate(u).shape == (T, 3)


@pytest.mark.parametrize("T", [0, 1, 127, 128, 129, 777])
def test_simulation_returns_the_final_state(T: int) -> None:
    model = random_model(5, 2, 3)
    rng = np.random.default_rng(T)
    u, x = rng.standard_normal((T, 2)), rng.standard_normal(5)
    _, x_final = simulate_state_space(model.A, model.B, model.C, model.D, u, x)
    for u_k in u:
        x = model.A @ x + model.B @ u_k
    np.testing.assert_allclose(x_final, x, rtol=1e-10, atol=1e-10)


def test_model_properties_and_immutability() -> None:
    model = random_model(4, 1, 2)
    assert (model.n_states, model.n_u, model.n_y) == (4, 1, 2)
    np.testing.assert_allclose(np.sort_complex(model.poles), np.sort_complex(np.linalg.eigvals(model.A)))
    with pytest.raises(ValueError):
        model.A[0, 0] = 1.0
    with pytest.raises(ConfigError, match=r"LinearStateSpace.C must have shape \(2, 4\)"):
        LinearStateSpace(model.A, model.B, model.C[:, :3], model.D, 1.0, *(model.u_mean, model.u_std),
                         model.y_mean, model.y_std)  # fmt: skip
    with pytest.raises(ConfigError, match="dt must be"):
        LinearStateSpace(model.A, model.B, model.C, model.D, 0.0, model.u_mean, model.u_std,
                         model.y_mean, model.y_std)  # fmt: skip


def test_n4sid_noise_free_recovers_poles_and_simulates() -> None:
    u, y = system_data(NUM_4, POLES_4, 5000)
    model = fit_n4sid([(u, y)], order=4, horizon=10)
    assert pole_error(model.poles, POLES_4) < 1e-8
    u_val, y_val = system_data(NUM_4, POLES_4, 2000, seed=1)
    # the model starts at its operating point, the system at zero: compare after the transient
    assert rms(model.simulate(u_val)[300:] - y_val[300:]) < 1e-8


def test_n4sid_with_feedthrough_and_noise() -> None:
    u, y = system_data(NUM_2, POLES_2, 20000, noise=0.05)
    model = fit_n4sid([(u, y)], order=2)
    assert pole_error(model.poles, POLES_2) < 5e-3
    u_val, y_val = system_data(NUM_2, POLES_2, 3000, seed=1)
    assert rms(model.simulate(u_val)[300:] - y_val[300:]) < 0.01 * rms(y_val - y_val.mean())


def test_n4sid_multiple_records_and_io_objects() -> None:
    records = [system_data(NUM_4, POLES_4, T, seed=s) for s, T in enumerate((700, 1500, 2400))]
    objects = [SimpleNamespace(u=u, y=y, dt=0.01) for u, y in records]
    model = fit_n4sid(objects, order=4, horizon=8)
    assert model.dt == 0.01
    assert pole_error(model.poles, POLES_4) < 1e-8


def test_arx_noise_free_is_exact() -> None:
    u, y = system_data(NUM_4, POLES_4, 3000)
    model = fit_arx([(u, y)], na=4, nb=4, nk=1)
    assert model.n_states == 4
    assert pole_error(model.poles, POLES_4) < 1e-8
    u_val, y_val = system_data(NUM_4, POLES_4, 1000, seed=1)
    assert rms(model.simulate(u_val)[300:] - y_val[300:]) < 1e-8


def test_arx_mimo() -> None:
    rng = np.random.default_rng(3)
    A1 = np.array([[0.5, 0.2], [-0.1, 0.3]])
    A2 = np.array([[-0.2, 0.0], [0.1, 0.1]])
    B0 = rng.standard_normal((2, 3))
    B1 = rng.standard_normal((2, 3))
    u = rng.standard_normal((2000, 3))
    y = np.zeros((2000, 2))
    for k in range(2, 2000):
        y[k] = A1 @ y[k - 1] + A2 @ y[k - 2] + B0 @ u[k - 1] + B1 @ u[k - 2]
    model = fit_arx([(u, y)], na=2, nb=2, nk=1)
    assert (model.n_u, model.n_y, model.n_states) == (3, 2, 4)
    np.testing.assert_allclose(model.simulate(u)[100:], y[100:], atol=1e-8)


def test_fir_never_builds_regressors_across_records() -> None:
    h = np.array([0.5, 0.3, -0.2, 0.1, 0.05])
    rng = np.random.default_rng(4)
    records = []
    for T in (300, 500):
        u = rng.standard_normal((T, 1)) + 2.0
        records.append((u, scipy.signal.lfilter(h, [1.0], u[:, 0])[:, None]))
    # a regressor row spanning the boundary would mix the two records and spoil the exact fit
    model = fit_fir(records, n_taps=5)
    assert model.n_states == 4
    u_val = rng.standard_normal((400, 1))
    y_val = scipy.signal.lfilter(h, [1.0], u_val[:, 0])[:, None]
    np.testing.assert_allclose(model.simulate(u_val)[4:], y_val[4:], atol=1e-9)
    # ridge shrinks the taps, hence the output swing, but not the (unpenalised) operating point
    shrunk = fit_fir(records, n_taps=5, ridge=10.0)
    assert np.std(shrunk.simulate(u_val)) < 0.5 * np.std(model.simulate(u_val))
    np.testing.assert_allclose(shrunk.simulate(np.full((10, 1), 2.0))[4:], 1.5, atol=0.05)


def test_best_linear_picks_the_true_order() -> None:
    u, y = system_data(NUM_4, POLES_4, 12000, noise=0.02)
    u_val, y_val = system_data(NUM_4, POLES_4, 3000, noise=0.02, seed=1)
    model, scores = best_linear([(u, y)], (u_val, y_val), orders=(1, 2, 4), horizon=10, n_skip=100)
    assert set(scores) == {1, 2, 4}
    assert model.n_states == 4
    assert scores[4] < 0.03 < scores[2]


def test_stabilise_reflects_unstable_eigenvalues() -> None:
    A = np.array([[1.2, 0.0, 0.0], [0.0, 0.5, -0.9], [0.0, 0.9, 0.5]])  # 1.2 and 0.5 +- 0.9j (|.| 1.03)
    lam = np.linalg.eigvals(_stabilise(A))
    expected = [1 / 1.2, *(1 / np.conj(z) for z in (0.5 + 0.9j, 0.5 - 0.9j))]
    assert pole_error(lam, np.array(expected)) < 1e-12
    stable = np.diag([0.3, -0.8])
    assert _stabilise(stable) is stable


def test_bad_inputs() -> None:
    u, y = system_data(NUM_2, POLES_2, 500)
    with pytest.raises(DataError, match="non-empty list"):
        fit_n4sid([], order=2)
    with pytest.raises(DataError, match=r"record 0 must be a \(u, y\) pair"):
        fit_fir((u, y), n_taps=3)  # a bare pair, not a list of records
    with pytest.raises(DataError, match="record 0 y contains NaN"):
        fit_fir([(u, np.where(np.arange(500)[:, None] == 7, np.nan, y))], n_taps=3)
    with pytest.raises(DataError, match="u has 500 samples but y has 499"):
        fit_arx([(u, y[:-1])], na=2, nb=2)
    with pytest.raises(DataError, match="record 1 u must have 1 channel"):
        fit_fir([(u, y), (np.hstack([u, u]), y)], n_taps=3)
    with pytest.raises(DataError, match=r"shape \(T, channels\)"):
        fit_fir([(u[:, :, None], y)], n_taps=3)
    with pytest.raises(DataError, match="different dt"):
        fit_fir([SimpleNamespace(u=u, y=y, dt=1.0), SimpleNamespace(u=u, y=y, dt=2.0)], n_taps=3)
    with pytest.raises(ConfigError, match="n_taps must be an integer >= 1"):
        fit_fir([(u, y)], n_taps=0)
    with pytest.raises(ConfigError, match="na must be an integer >= 0"):
        fit_arx([(u, y)], na=-1, nb=2)
    with pytest.raises(ConfigError, match="ridge must be"):
        fit_arx([(u, y)], na=1, nb=2, ridge=-1.0)
    with pytest.raises(ConfigError, match="horizon=3 is too short for order=4"):
        fit_n4sid([(u, y)], order=4, horizon=3)
    with pytest.raises(DataError, match="not enough data for horizon 20"):
        fit_n4sid([(u[:60], y[:60])], order=2, horizon=20)
    with pytest.raises(DataError, match="not enough data"):
        fit_fir([(u[:20], y[:20])], n_taps=15)
    model = fit_n4sid([(u, y)], order=2, horizon=5)
    with pytest.raises(DataError, match="u must have 1 channel"):
        model.simulate(np.ones((10, 2)))
    with pytest.raises(ConfigError, match=r"x0 must be a finite array of shape \(2,\)"):
        model.simulate(u, x0=np.zeros(3))


@pytest.fixture(scope="module")
def silverbox(data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(require_data(data_dir / "silverbox" / "silverbox.npz")) as data:
        return data["u"], data["y"]


@pytest.mark.parametrize("fit", [lambda r: fit_fir(r, n_taps=100), lambda r: fit_n4sid(r, order=2)])
def test_silverbox_linear_baseline(
    silverbox: tuple[np.ndarray, np.ndarray], fit: Callable[[list], LinearStateSpace]
) -> None:
    u, y = silverbox
    train = slice(40650, 60650)  # the first 20000 samples of the official training part [40650, 105712)
    test = slice(105712, 127400)  # multisine test record; the first 50 samples initialise the state
    model = fit([(u[train], y[train])])
    rmse_mv = 1e3 * rms(model.simulate(u[test])[50:, 0] - y[test][50:])
    assert rmse_mv < 10.0  # published linear baseline: 6.96 mV
