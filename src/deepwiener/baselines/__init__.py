"""Baseline models that share the ``Simulator`` protocol (``simulate(u) -> y`` and ``dt``)."""

from deepwiener.baselines.linear import (
    IORecord,
    LinearStateSpace,
    best_linear,
    fit_arx,
    fit_fir,
    fit_n4sid,
)

__all__ = ["IORecord", "LinearStateSpace", "best_linear", "fit_arx", "fit_fir", "fit_n4sid"]
