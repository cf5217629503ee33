"""The offline demo: identify a simulated Wiener-Hammerstein system, and compare with the best linear model.

The true system (sampling time ``DT`` = 1 ms)::

    u -> G1 -> x -> f(x) = tanh(1.5 x) / 1.5 + 0.1 x^2 -> w -> G2 -> y + e

- G1: 2nd-order Chebyshev type-I low-pass (1 dB ripple, cut-off 0.15 x Nyquist);
- f: a saturation with an even (quadratic) part, so the output holds harmonics and a DC shift that no linear
  model can produce;
- G2: 3rd-order Butterworth low-pass (cut-off 0.3 x Nyquist);
- e: white Gaussian output noise, 1 % of the noise-free output's standard deviation.

The input is a random-phase multisine over the band 0 to 0.2 x Nyquist (seeded), scaled to unit standard
deviation, so the static map is driven well into saturation. Training, validation and test records are
independent realisations.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.signal

from deepwiener.data import IOData
from deepwiener.evaluation import Metrics, evaluate
from deepwiener.identification import best_linear
from deepwiener.models import DeepWiener, LinearModel
from deepwiener.training import EpochInfo, FitResult, TrainConfig, fit

DT = 1e-3
"""Sampling time of the simulated system, in seconds."""

NOISE_LEVEL = 0.01
"""Output noise standard deviation as a fraction of the noise-free output's."""

INIT_WINDOW = 100
"""Samples at the start of the test record not counted in the errors (transient from the zero state)."""

MODEL = {"layer": "lru", "d_model": 8, "d_state": 8, "n_layers": 2, "nonlinearity": "gelu",
         "layer_options": {"r_min": 0.7, "r_max": 0.99}}
"""Architecture of the demo's deep Wiener model (keywords of ``DeepWiener``)."""

TRAIN = TrainConfig(window=256, washout=64, batch_size=16, epochs=300, lr=1e-2, patience=None, seed=0)
"""Training options of the demo; ``max_minutes`` is set by :func:`run_demo`."""


def true_system(u: np.ndarray) -> np.ndarray:
    """The noise-free Wiener-Hammerstein system, from rest.

    Args:
        u: (T,) input.

    Returns:
        (T,) output.
    """
    b1, a1 = scipy.signal.cheby1(2, 1.0, 0.15)
    b2, a2 = scipy.signal.butter(3, 0.3)
    x = scipy.signal.lfilter(b1, a1, u)
    w = np.tanh(1.5 * x) / 1.5 + 0.1 * x**2
    return scipy.signal.lfilter(b2, a2, w)


def multisine(n_samples: int, rng: np.random.Generator, band: float = 0.2) -> np.ndarray:
    """Random-phase multisine with flat amplitude on the DFT lines in (0, band x Nyquist], unit std.

    Args:
        n_samples: length T.
        rng: source of the random phases.
        band: upper band edge as a fraction of the Nyquist frequency.

    Returns:
        (T,) input signal.
    """
    n_lines = int(band * n_samples / 2)
    spectrum = np.zeros(n_samples // 2 + 1, dtype=complex)
    spectrum[1 : n_lines + 1] = np.exp(2j * np.pi * rng.random(n_lines))
    u = np.fft.irfft(spectrum, n=n_samples)
    return u / u.std()


def make_data(seed: int = 0, n_train: int = 6000, n_val: int = 2000, n_test: int = 3000
              ) -> tuple[IOData, IOData, IOData]:
    """Simulate independent training, validation and test records of the true system.

    Args:
        seed: seed of the input phases and the noise.
        n_train, n_val, n_test: record lengths in samples.

    Returns:
        ``(train, val, test)`` with u, y: (T, 1), dt = :data:`DT`, y in volts.
    """
    rng = np.random.default_rng(seed)
    records = []
    for name, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        u = multisine(n, rng)
        y = true_system(u)
        y = y + NOISE_LEVEL * y.std() * rng.standard_normal(n)
        records.append(IOData(u=u, y=y, dt=DT, name=f"demo {name}", u_names=("u",), y_names=("y",),
                              y_unit="V"))
    return records[0], records[1], records[2]


@dataclass(frozen=True)
class DemoResult:
    """Outcome of :func:`run_demo`.

    Attributes:
        model: the trained deep Wiener model.
        linear: the best linear state-space model (N4SID, order chosen on the validation record).
        fit_result: the training history of the deep model.
        test: the test record.
        metrics: ``{"deep Wiener": Metrics, "best linear": Metrics}`` on the test record.
    """

    model: DeepWiener
    linear: LinearModel
    fit_result: FitResult
    test: IOData
    metrics: dict[str, Metrics]


def run_demo(max_minutes: float = 0.75, seed: int = 0, epochs: int = TRAIN.epochs,
             on_epoch: Callable[[EpochInfo], None] | None = None) -> DemoResult:
    """Identify the demo system with a deep Wiener model and with the best linear model; test both.

    Args:
        max_minutes: training time budget of the deep model.
        seed: seed of the data, the model initialisation and the training.
        epochs: maximum number of training epochs (training stops at whichever limit comes first).
        on_epoch: progress callback of the training.

    Returns:
        The models, the training history, the test record and the test metrics.
    """
    train, val, test = make_data(seed)
    linear = LinearModel.from_state_space(best_linear([train], val, orders=(2, 4, 6, 8), n_skip=INIT_WINDOW)[0])
    model = DeepWiener(n_u=1, n_y=1, seed=seed, **MODEL)
    config = TrainConfig(**{**TRAIN.to_dict(), "max_minutes": max_minutes, "seed": seed, "epochs": epochs})
    result = fit(model, [train], config, val=[val], on_epoch=on_epoch)
    metrics = {"deep Wiener": evaluate(model, test, INIT_WINDOW), "best linear": evaluate(linear, test, INIT_WINDOW)}
    return DemoResult(model, linear, result, test, metrics)
