"""Baseline models: linear identification (FIR, ARX, N4SID; ``simulate(u) -> y`` and ``dt``) and LSTM/GRU
simulation models (``RNNModel``, trained by ``fit`` like ``DeepWiener``)."""

from deepwiener.baselines.linear import (
    IORecord,
    LinearStateSpace,
    SummedLinear,
    best_linear,
    fit_arx,
    fit_fir,
    fit_n4sid,
)
from deepwiener.baselines.rnn import CELLS, RNNConfig, RNNModel

__all__ = [
    "CELLS",
    "IORecord",
    "LinearStateSpace",
    "RNNConfig",
    "RNNModel",
    "SummedLinear",
    "best_linear",
    "fit_arx",
    "fit_fir",
    "fit_n4sid",
]
