"""Analysis of a trained deep Wiener model: each block's linear part, its nonlinearity, stability, reduction.

    blocks(model)                   -> [BlockSystem | NonLTIBlock]: poles, zeros, DC gain, frequency response,
                                       Hankel singular values, H-infinity norm, to_control(), to_dict()
    nonlinearity_curves(model, data) -> [NonlinearityCurve]: sigma over the range of eta seen on data
    certificate(model, data=None)   -> Certificate: delta-ISS verdict with per-block numbers and a gain bound
                                       (an LFR model: LoopCertificate, the contraction condition of its loop)
    reduce(model, order=|tol=, method="balanced"|"modal", data=None) -> ReductionResult (a new model)

Figures are drawn by ``deepwiener.analysis_plots`` (matplotlib, imported only there); python-control is
imported only by ``BlockSystem.to_control()``.
"""

from deepwiener.analysis.certificate import (
    BlockCertificate,
    Certificate,
    LoopCertificate,
    certificate,
    certify_block,
    loop_certificate,
)
from deepwiener.analysis.lti import BlockSystem, NonLTIBlock, blocks, frequency_grid, loop_system
from deepwiener.analysis.nonlinear import NonlinearityCurve, SignalRange, nonlinearity_curves, signal_ranges
from deepwiener.analysis.reduction import METHODS, ReductionResult, reduce

__all__ = [
    "METHODS",
    "BlockCertificate",
    "BlockSystem",
    "Certificate",
    "LoopCertificate",
    "NonLTIBlock",
    "NonlinearityCurve",
    "ReductionResult",
    "SignalRange",
    "blocks",
    "certificate",
    "certify_block",
    "frequency_grid",
    "loop_certificate",
    "loop_system",
    "nonlinearity_curves",
    "reduce",
    "signal_ranges",
]
