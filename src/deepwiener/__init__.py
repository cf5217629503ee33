"""deepwiener: nonlinear system identification with deep structured state-space models (deep Wiener models).

The public API is the names in ``__all__``; everything else may change. ``import deepwiener`` loads neither
matplotlib nor python-control.

Example::

    import deepwiener as dw

    bench = dw.load_benchmark("silverbox")
    model = dw.DeepWiener(n_u=1, n_y=1, layer="lru", d_model=16, d_state=32, n_layers=4, seed=0)
    result = dw.fit(model, bench.train, dw.TrainConfig(window=1024, washout=200, max_minutes=10, seed=0))
    metrics = dw.evaluate(model, bench.tests["multisine"], init_window=bench.init_window)
    dw.save(model, "silverbox-lru.dw")
    dw.export_onnx(model, "silverbox-lru.onnx"); dw.export_c(model, "silverbox_lru_c")   # deploy
"""

from importlib import metadata

from deepwiener import analysis
from deepwiener.data import BENCHMARKS, Benchmark, IOData, load_benchmark, read_csv, read_mat, read_npz
from deepwiener.errors import ConfigError, DataError, DeepWienerError, ModelFileError
from deepwiener.evaluation import Metrics, Prediction, Simulator, evaluate, evaluate_all, evaluate_prediction
from deepwiener.export import export_c, export_onnx
from deepwiener.io import load, save
from deepwiener.metrics import fit_percent, nrmse, r2, rmse
from deepwiener.models import (
    MODEL_KINDS,
    DeepWiener,
    Ensemble,
    LFRConfig,
    LFRModel,
    LinearModel,
    Model,
    ModelConfig,
    build_model,
    register_kind,
)
from deepwiener.training import EpochInfo, FitResult, TrainConfig, fit

try:
    __version__ = metadata.version("deepwiener")
except metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = [
    "BENCHMARKS",
    "Benchmark",
    "ConfigError",
    "DataError",
    "DeepWiener",
    "DeepWienerError",
    "Ensemble",
    "EpochInfo",
    "FitResult",
    "IOData",
    "LFRConfig",
    "LFRModel",
    "LinearModel",
    "MODEL_KINDS",
    "Metrics",
    "Prediction",
    "Model",
    "ModelConfig",
    "ModelFileError",
    "Simulator",
    "TrainConfig",
    "__version__",
    "analysis",
    "build_model",
    "evaluate",
    "evaluate_all",
    "evaluate_prediction",
    "export_c",
    "export_onnx",
    "fit",
    "fit_percent",
    "load",
    "load_benchmark",
    "nrmse",
    "r2",
    "read_csv",
    "read_mat",
    "read_npz",
    "register_kind",
    "rmse",
    "save",
]
