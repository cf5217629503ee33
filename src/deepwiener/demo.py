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

``deepwiener demo`` writes the three records as CSV files into its run folder (``data/``) and trains on them like
``deepwiener train --csv data/train.csv --val-csv data/val.csv --test-csv data/test.csv``, with :func:`run_config`,
so the demo's folder is an ordinary complete run: ``evaluate``, ``inspect`` and ``report`` take it.
"""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType

import numpy as np
import scipy.signal

from deepwiener.config import RunConfig, resolve
from deepwiener.data import Benchmark, IOData, ValidationRecord
from deepwiener.files import write_file
from deepwiener.identification import identify_linear
from deepwiener.models import LinearModel
from deepwiener.training import TrainConfig

DT = 1e-3
"""Sampling time of the simulated system, in seconds."""

NOISE_LEVEL = 0.01
"""Output noise standard deviation as a fraction of the noise-free output's."""

INIT_WINDOW = 100
"""Samples at the start of the test record not counted in the errors (transient from the zero state)."""

MODEL = MappingProxyType({"layer": "lru", "d_model": 8, "d_state": 8, "n_layers": 2, "nonlinearity": "gelu"})
"""Architecture of the demo's deep Wiener model (the ``[model]`` table)."""
LAYER = MappingProxyType({"r_min": 0.7, "r_max": 0.99})
"""Its layer options (the ``[layer]`` table)."""

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


def write_records(folder: Path, seed: int = 0) -> dict[str, Path]:
    """Write the demo's records (:func:`make_data`) as CSV files ``train.csv``, ``val.csv``, ``test.csv`` (columns
    ``u`` and ``y``) into ``folder``; their paths by name."""
    paths = {}
    for name, record in zip(("train", "val", "test"), make_data(seed), strict=True):
        rows = "".join(f"{u!r},{y!r}\n" for u, y in zip(record.u[:, 0].tolist(), record.y[:, 0].tolist(), strict=True))
        paths[name] = write_file(folder / f"{name}.csv", "u,y\n" + rows)
    return paths


def run_config(folder: Path, max_minutes: float = 0.75, seed: int = 0, epochs: int = TRAIN.epochs) -> RunConfig:
    """The run configuration of the demo: its records in ``folder`` (:func:`write_records`), its model, and
    :data:`TRAIN` with the budget and seed."""
    data = {"csv": str(folder / "train.csv"), "val_csv": (str(folder / "val.csv"),),
            "test_csv": (str(folder / "test.csv"),), "u": ("u",), "y": ("y",), "dt": DT,
            "init_window": INIT_WINDOW, "y_unit": "V"}
    train = {**TRAIN.to_dict(), "max_minutes": max_minutes, "seed": seed, "epochs": epochs}
    return resolve(None, {"data": data, "model": {**MODEL, "seed": seed}, "layer": dict(LAYER), "train": train})


def best_linear_model(data: Benchmark) -> LinearModel:
    """The best linear model of the demo data (N4SID of orders up to 8, the order chosen on the validation record),
    the model the deep one is compared with."""
    validation = [ValidationRecord(record, INIT_WINDOW) for record in data.val]
    return LinearModel.from_state_space(identify_linear(data.train, validation, max_order=8))
