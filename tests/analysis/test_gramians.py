"""Gramians, Hankel singular values, balanced truncation, H-infinity norm and frequency response."""

from __future__ import annotations

import control
import numpy as np
import pytest
import scipy.linalg

from deepwiener.analysis.gramians import (
    balanced_truncation,
    controllability_gramian,
    diagonal_gramians,
    frequency_response,
    hankel_singular_values,
    hinf_norm,
    hsv_from_gramians,
    observability_gramian,
)
from deepwiener.errors import ConfigError


def random_system(
    n: int, m: int, p: int, radius: float = 0.95, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A random real system whose spectral radius is ``radius``."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, n))
    A *= radius / np.max(np.abs(np.linalg.eigvals(A)))
    return A, rng.standard_normal((n, m)), rng.standard_normal((p, n)), rng.standard_normal((p, m))


def real_block_realisation(lam: np.ndarray, B: np.ndarray, C: np.ndarray) -> tuple[np.ndarray, ...]:
    """Real realisation of ``x+ = diag(lam) x + B u, y = Re(C x)`` on the state ``[Re x; Im x]``."""
    A = np.block([[np.diag(lam.real), -np.diag(lam.imag)], [np.diag(lam.imag), np.diag(lam.real)]])
    return A, np.vstack([B.real, B.imag]), np.hstack([C.real, -C.imag])


def gain_on_grid(sys: tuple[np.ndarray, ...], omega: np.ndarray) -> np.ndarray:
    return np.linalg.norm(frequency_response(*sys, omega), ord=2, axis=(1, 2))


@pytest.mark.parametrize("radius", [0.5, 0.999])
def test_gramians_match_scipy(radius: float) -> None:
    A, B, C, _ = random_system(12, 2, 3, radius=radius)
    P = controllability_gramian(A, B)
    Q = observability_gramian(A, C)
    P_ref = scipy.linalg.solve_discrete_lyapunov(A, B @ B.T)
    Q_ref = scipy.linalg.solve_discrete_lyapunov(A.T, C.T @ C)
    assert P.dtype == np.float64 and Q.dtype == np.float64
    np.testing.assert_allclose(P, P_ref, rtol=1e-8, atol=1e-8 * np.abs(P_ref).max())
    np.testing.assert_allclose(Q, Q_ref, rtol=1e-8, atol=1e-8 * np.abs(Q_ref).max())
    np.testing.assert_allclose(P, P.T, atol=1e-12 * np.abs(P).max())


def test_gramian_of_complex_system_solves_stein_equation() -> None:
    rng = np.random.default_rng(1)
    A = rng.standard_normal((6, 6)) + 1j * rng.standard_normal((6, 6))
    A *= 0.9 / np.max(np.abs(np.linalg.eigvals(A)))
    B = rng.standard_normal((6, 2)) + 1j * rng.standard_normal((6, 2))
    P = controllability_gramian(A, B)
    np.testing.assert_allclose(P, A @ P @ A.conj().T + B @ B.conj().T, atol=1e-11)


def test_not_schur_stable_is_config_error() -> None:
    A = np.diag([0.5, 1.02])
    with pytest.raises(ConfigError, match="spectral radius 1.02"):
        controllability_gramian(A, np.ones((2, 1)))
    with pytest.raises(ConfigError, match="spectral radius"):
        hinf_norm(A, np.ones((2, 1)), np.ones((1, 2)), np.zeros((1, 1)))
    with pytest.raises(ConfigError, match="spectral radius 1"):
        diagonal_gramians(np.array([0.5, 1j]), np.ones((2, 1)), np.ones((1, 2)))


def test_shape_errors() -> None:
    A, B, C, D = random_system(3, 1, 1)
    with pytest.raises(ConfigError, match="B must have n=3 rows"):
        controllability_gramian(A, B[:2])
    with pytest.raises(ConfigError, match="A must be square"):
        observability_gramian(A[:2], C)
    with pytest.raises(ConfigError, match="D must have shape"):
        frequency_response(A, B, C, np.zeros((2, 2)), np.array([0.1]))
    with pytest.raises(ConfigError, match="NaN"):
        controllability_gramian(np.full((2, 2), np.nan), np.ones((2, 1)))


def test_diagonal_gramians_match_real_realisation() -> None:
    rng = np.random.default_rng(2)
    n, m, p = 5, 2, 3
    lam = rng.uniform(0.3, 0.98, n) * np.exp(1j * rng.uniform(0.1, 3.0, n))
    B = rng.standard_normal((n, m)) + 1j * rng.standard_normal((n, m))
    C = rng.standard_normal((p, n)) + 1j * rng.standard_normal((p, n))
    # conjugate-completed system: same transfer function as y = Re(C x)
    lam_c = np.concatenate([lam, lam.conj()])
    B_c = np.vstack([B, B.conj()])
    C_c = np.hstack([C, C.conj()]) / 2
    P_c, Q_c = diagonal_gramians(lam_c, B_c, C_c)
    np.testing.assert_allclose(P_c, controllability_gramian(np.diag(lam_c), B_c), atol=1e-12)
    np.testing.assert_allclose(Q_c, observability_gramian(np.diag(lam_c), C_c), atol=1e-12)

    A_r, B_r, C_r = real_block_realisation(lam, B, C)
    P_r = controllability_gramian(A_r, B_r)
    # x_c = T x_r with T = [[I, iI], [I, -iI]], so P_c = T P_r T^H
    T = np.block([[np.eye(n), 1j * np.eye(n)], [np.eye(n), -1j * np.eye(n)]])
    np.testing.assert_allclose(P_c, T @ P_r @ T.conj().T, atol=1e-10)
    np.testing.assert_allclose(
        hsv_from_gramians(P_c, Q_c), hankel_singular_values(A_r, B_r, C_r), rtol=1e-9, atol=1e-12
    )


def test_hsv_first_order_closed_form() -> None:
    a, b, c = 0.8, 2.0, -0.5
    hsv = hankel_singular_values(np.array([[a]]), np.array([[b]]), np.array([[c]]))
    np.testing.assert_allclose(hsv, [abs(b * c) / (1 - a**2)], rtol=1e-13)


def test_balanced_realisation_has_diagonal_gramians_and_invariant_hsv() -> None:
    A, B, C, D = random_system(8, 2, 2, seed=3)
    hsv = hankel_singular_values(A, B, C)
    assert np.all(np.diff(hsv) <= 0)
    Ab, Bb, Cb, Db, hsv_full = balanced_truncation(A, B, C, D, order=8)
    np.testing.assert_allclose(hsv_full, hsv)
    scale = hsv[0]
    np.testing.assert_allclose(controllability_gramian(Ab, Bb), np.diag(hsv), atol=1e-9 * scale)
    np.testing.assert_allclose(observability_gramian(Ab, Cb), np.diag(hsv), atol=1e-9 * scale)
    Tm = np.random.default_rng(4).standard_normal((8, 8)) + 3 * np.eye(8)
    Ti = np.linalg.inv(Tm)
    np.testing.assert_allclose(hankel_singular_values(Tm @ A @ Ti, Tm @ B, C @ Ti), hsv, rtol=1e-8)


def test_truncation_removes_uncontrollable_and_weak_modes() -> None:
    A1, B1, C1, D = random_system(4, 1, 1, radius=0.9, seed=5)
    # two extra modes: one exactly uncontrollable, one unobservable
    A = scipy.linalg.block_diag(A1, np.array([[0.7]]), np.array([[-0.5]]))
    B = np.vstack([B1, [[0.0]], [[1.0]]])
    C = np.hstack([C1, [[1.0]], [[0.0]]])
    Ar, Br, Cr, Dr, hsv = balanced_truncation(A, B, C, D, order=4)
    assert Ar.shape == (4, 4)
    assert hsv[4:].max() < 1e-12 * hsv[0]
    omega = np.linspace(0, np.pi, 301)
    np.testing.assert_allclose(
        frequency_response(Ar, Br, Cr, Dr, omega), frequency_response(A, B, C, D, omega), atol=1e-9
    )
    assert balanced_truncation(A, B, C, D, tol=1e-8)[0].shape == (4, 4)
    with pytest.raises(ConfigError, match="numerically minimal order is 4"):
        balanced_truncation(A, B, C, D, order=5)


@pytest.mark.parametrize("order", [1, 3, 6, 9])
def test_balanced_truncation_error_bound(order: int) -> None:
    sys = random_system(10, 2, 2, radius=0.97, seed=6)
    Ar, Br, Cr, Dr, hsv = balanced_truncation(*sys, order=order)
    assert np.max(np.abs(np.linalg.eigvals(Ar))) < 1
    omega = np.linspace(0, np.pi, 4001)
    err = np.linalg.norm(
        frequency_response(*sys, omega) - frequency_response(Ar, Br, Cr, Dr, omega), ord=2, axis=(1, 2)
    )
    bound = 2 * hsv[order:].sum()
    assert err.max() <= bound * (1 + 1e-9)
    # and the error system's H-infinity norm, computed by hinf_norm, respects it too
    A, B, C, D = sys
    A_e = scipy.linalg.block_diag(A, Ar)
    err_norm, _ = hinf_norm(A_e, np.vstack([B, Br]), np.hstack([C, -Cr]), D - Dr)
    assert err.max() <= err_norm * (1 + 1e-9) <= bound * (1 + 1e-9)


def test_balanced_truncation_tol_picks_smallest_order() -> None:
    sys = random_system(10, 1, 1, radius=0.9, seed=7)
    hsv = hankel_singular_values(*sys[:3])
    tol = 2 * hsv[5:].sum() * 1.0001
    Ar, *_ = balanced_truncation(*sys, tol=tol)
    assert Ar.shape == (5, 5)
    assert balanced_truncation(*sys, tol=1e9)[0].shape == (1, 1)


def test_balanced_truncation_argument_errors() -> None:
    sys = random_system(4, 1, 1)
    with pytest.raises(ConfigError, match="exactly one of order and tol"):
        balanced_truncation(*sys)
    with pytest.raises(ConfigError, match="exactly one of order and tol"):
        balanced_truncation(*sys, order=2, tol=0.1)
    for bad in (0, 5, 2.0, True):
        with pytest.raises(ConfigError, match=r"order must be an integer in \[1, 4\]"):
            balanced_truncation(*sys, order=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="tol must be > 0"):
        balanced_truncation(*sys, tol=0.0)


def test_frequency_response_matches_python_control() -> None:
    A, B, C, D = random_system(7, 3, 2, seed=8)
    omega = np.linspace(0.0, np.pi, 97)
    G = frequency_response(A, B, C, D, omega)
    ref = control.ss(A, B, C, D, 1.0)(np.exp(1j * omega), squeeze=False)  # (p, m, f)
    assert G.shape == (97, 2, 3)
    np.testing.assert_allclose(G, np.moveaxis(ref, -1, 0), rtol=1e-10, atol=1e-12)


def test_hinf_norm_matches_python_control() -> None:
    A, B, C, D = random_system(8, 2, 2, radius=0.95, seed=9)
    norm, omega = hinf_norm(A, B, C, D)
    ref = control.norm(control.ss(A, B, C, D, 1.0), "inf", tol=1e-10, method="scipy")
    np.testing.assert_allclose(norm, ref, rtol=1e-8)
    np.testing.assert_allclose(gain_on_grid((A, B, C, D), np.array([omega]))[0], norm, rtol=1e-12)


def test_hinf_norm_of_complex_system_searches_negative_frequencies() -> None:
    A, B, C, D = np.array([[0.9 * np.exp(-1j)]]), np.array([[2.0]]), np.array([[0.5j]]), np.zeros((1, 1))
    norm, omega = hinf_norm(A, B, C, D)
    np.testing.assert_allclose([norm, omega], [1.0 / (1 - 0.9), -1.0], rtol=1e-9)


def test_hinf_norm_finds_narrow_resonance() -> None:
    # |lam| = 0.9995: the peak is ~1e-3 rad wide, narrower than the coarse grid spacing
    lam = 0.9995 * np.exp(1j * 1.2345)
    A = np.array([[lam.real, -lam.imag], [lam.imag, lam.real]])
    B, C, D = np.array([[1.0], [0.0]]), np.array([[0.0, 1.0]]), np.zeros((1, 1))
    norm, omega = hinf_norm(A, B, C, D, n_grid=64)
    fine = np.linspace(1.2, 1.27, 700_001)
    ref = gain_on_grid((A, B, C, D), fine)
    assert abs(omega - fine[np.argmax(ref)]) < 1e-6
    assert ref.max() <= norm * (1 + 1e-12)
    np.testing.assert_allclose(norm, ref.max(), rtol=1e-8)  # grid spacing 1e-7 rad costs ~5e-9
