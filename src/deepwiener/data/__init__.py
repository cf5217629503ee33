"""Input/output data: the IOData record, file readers, the benchmark registry, windowing and scaling."""

from deepwiener.data.benchmarks import BENCHMARKS, Benchmark, load_benchmark
from deepwiener.data.iodata import IOData
from deepwiener.data.readers import read_csv, read_mat, read_npz
from deepwiener.data.windows import ValidationRecord, fit_scaler, make_windows, output_increments, split_validation

__all__ = [
    "BENCHMARKS",
    "Benchmark",
    "IOData",
    "ValidationRecord",
    "fit_scaler",
    "load_benchmark",
    "make_windows",
    "output_increments",
    "read_csv",
    "read_mat",
    "read_npz",
    "split_validation",
]
