"""Benchmark registry and loader with the official splits of nonlinearbenchmark.org.

One table, :data:`BENCHMARKS`, describes each benchmark: the files it reads (with SHA-256), the official
download, the official train/test split, the state-initialisation window and the display unit.
:func:`load_benchmark` is the only entry point. The splits, sampling times and initialisation windows follow
the official loader ``nonlinear_benchmarks`` 1.0.1 as documented in ``shared/data/README.md``; indices are
zero-based and half-open.

Data directory: the ``data_dir`` argument, else the environment variable ``DEEPWIENER_DATA``, else
``$XDG_CACHE_HOME/deepwiener`` (``~/.cache/deepwiener``), with one sub-folder per benchmark (``silverbox/``,
...). Missing files are downloaded from the official source unless ``DEEPWIENER_OFFLINE`` is set to a value
other than "" or "0". Every file with a published checksum is verified before it is read.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType

import numpy as np

from deepwiener.data.iodata import IOData
from deepwiener.data.readers import as_vector, load_variables, read_file
from deepwiener.errors import DataError, unknown_name

logger = logging.getLogger(__name__)

DOWNLOAD_TIMEOUT_S = 30.0
"""Socket timeout of one download attempt, in seconds."""

Split = tuple[tuple[IOData, ...], dict[str, IOData]]


@dataclass(frozen=True, eq=False)
class Benchmark:
    """A loaded benchmark with its official split.

    Attributes:
        name: registry name, e.g. ``"silverbox"``.
        train: the official train/validation records; split validation off them yourself (time-contiguous).
        tests: test records by name (read-only mapping). Simulate the whole record; only the first
            ``init_window`` measured outputs may be used to set the state; errors count from that sample on.
        init_window: the state-initialisation window n_init of every test record, in samples.
        unit: display unit of the outputs in reports, e.g. ``"mV"``.
        scale: factor from data units (``IOData.y_unit``) to ``unit``, e.g. 1000 for V -> mV.
        val: validation records, when the data brings its own; empty: ``fit`` holds out the tail of each training
            record.
        in_sample: the test records are the training records themselves (a CSV file given without test files):
            their metrics measure the fit to the training data, not how the model generalises.
    """

    name: str
    train: tuple[IOData, ...]
    tests: Mapping[str, IOData]
    init_window: int
    unit: str
    scale: float
    val: tuple[IOData, ...] = ()
    in_sample: bool = False


@dataclass(frozen=True)
class DataFile:
    """One file a benchmark may read.

    Attributes:
        role: what the file provides to the split function; several files with one role are alternatives,
            preferred in table order (the first one present is used).
        name: file name inside the benchmark folder.
        sha256: published SHA-256 of the file, or None when no checksum is known (then it is not verified).
        url: official download (the file itself, or a zip archive holding it), or None.
        zipped: True when ``url`` is a zip archive; the member with this file's name is extracted.
    """

    role: str
    name: str
    sha256: str | None
    url: str | None = None
    zipped: bool = False


@dataclass(frozen=True)
class BenchmarkSpec:
    """Registry entry: where a benchmark's data lives and how it is split.

    Attributes:
        folder: sub-folder of the data directory.
        files: the files, see :class:`DataFile`.
        split: builds ``(train records, {test name: record})`` from ``{role: verified path}``.
        init_window: n_init of the test records, in samples.
        unit: display unit of the outputs.
        scale: factor from data units to ``unit``.
        page: the benchmark's official web page.
    """

    folder: str
    files: tuple[DataFile, ...]
    split: Callable[[Mapping[str, Path]], Split]
    init_window: int
    unit: str
    scale: float
    page: str


def _named(data: IOData, name: str) -> IOData:
    return replace(data, name=name)


def _split_silverbox(paths: Mapping[str, Path]) -> Split:
    # The official loader uses dt = 1/610.35 s (exact fs = 10^7 / 2^14 = 610.3515625 Hz).
    full = read_file(paths["data"], "V1", "V2", 1 / 610.35, name="silverbox", y_unit="V")
    tests = {
        "multisine": _named(full[105712:127400], "silverbox multisine"),
        "arrow_full": _named(full[100:40575], "silverbox arrow_full"),
        "arrow_no_extrapolation": _named(full[100:32100], "silverbox arrow_no_extrapolation"),
    }
    return (_named(full[40650:105712], "silverbox train"),), tests


def _split_wiener_hammerstein(paths: Mapping[str, Path]) -> Split:
    full = read_file(paths["data"], "uBenchMark", "yBenchMark", 1 / 51200, name="wiener_hammerstein",
                     y_unit="V")
    train = _named(full[5200:105200], "wiener_hammerstein train")
    return (train,), {"test": _named(full[105200:184000], "wiener_hammerstein test")}


def _split_cascaded_tanks(paths: Mapping[str, Path]) -> Split:
    path = paths["data"]
    train = read_file(path, "uEst", "yEst", 4.0, name="cascaded_tanks train", y_unit="V")
    test = read_file(path, "uVal", "yVal", 4.0, name="cascaded_tanks test", y_unit="V")
    return (train,), {"test": test}


def _emps_record(path: Path, name: str) -> IOData:
    arrays = load_variables(path, ["vir", "qm", "t"])
    t = as_vector(arrays, "t", path)
    return IOData(u=as_vector(arrays, "vir", path), y=as_vector(arrays, "qm", path), dt=float(t[1] - t[0]),
                  name=name, u_names=("vir",), y_names=("qm",), y_unit="m")


def _split_emps(paths: Mapping[str, Path]) -> Split:
    # Each record keeps its own dt = t[1] - t[0] (1.0000241e-3 s train, 1.0000080e-3 s test), as the
    # official loader does.
    train = _emps_record(paths["train"], "emps train")
    return (train,), {"test": _emps_record(paths["test"], "emps test")}


def _split_coupled_electric_drives(paths: Mapping[str, Path]) -> Split:
    train, tests = [], {}
    for level, (u, y) in {"low_amplitude": ("u11", "z11"), "high_amplitude": ("u12", "z12")}.items():
        full = read_file(paths["data"], u, y, 0.02, name=f"coupled_electric_drives {level}")
        train.append(_named(full[0:400], f"coupled_electric_drives train {level}"))
        tests[level] = _named(full[400:500], f"coupled_electric_drives test {level}")
    return tuple(train), tests


def _f16_record(path: Path, name: str) -> IOData:
    arrays = load_variables(path, ["Force", "Acceleration", "Fs"])
    acceleration = arrays["Acceleration"]
    if acceleration.ndim != 2 or acceleration.shape[0] != 3:
        raise DataError(f"{path}: variable 'Acceleration' has shape {acceleration.shape}; expected (3, N)")
    # The official loader's default output is the first accelerometer (output_index 0).
    return IOData(u=as_vector(arrays, "Force", path), y=acceleration[0], dt=1 / float(arrays["Fs"].item()),
                  name=name, u_names=("Force",), y_names=("Acceleration1",))


def _split_f16(paths: Mapping[str, Path]) -> Split:
    # The FullMSine records only: levels 1, 3, 5, 7 train, the three ``_Validation`` levels (2, 4, 6) test, as
    # the official loader splits them. The official archive also holds SineSw records (levels 1-7), which that
    # loader would add to the same split, and SpecialOddMSine records (which it drops); the data described in
    # shared/data/README.md has no SineSw record, so this split is FullMSine only.
    train = tuple(_f16_record(paths[f"level{k}"], f"f16 train fullmsine_level{k}") for k in (1, 3, 5, 7))
    tests = {f"fullmsine_level{k}": _f16_record(paths[f"level{k}"], f"f16 test fullmsine_level{k}")
             for k in (2, 4, 6)}
    return train, tests


def _f16_files() -> tuple[DataFile, ...]:
    url = "https://data.4tu.nl/file/b6dc643b-ecc6-437c-8a8a-1681650ec3fe/5414dfdc-6e8d-4208-be6e-fa553de9866f"
    hashes = {
        1: "30e7bec7115a117f1391466c1dce34d05c673054fd1a862c441bd4d45dc19b2b",
        2: "89e5add3e59b4406a62bd5dfe4c36bf28e5ad6bb34debb63d7c61756b824c488",
        3: "f06fcb7cc0486b50352c1d3a7045617ab24cad8fbe0f282c27baba1c3d139839",
        4: "594326ac0a01717e88e14119576bc5a1de851c3cc778453edb974995c198a6ed",
        5: "e92c8a6ad21d5d8af62741baa8dc6b667aa7332d0d8d79115849ba4ff42949b0",
        6: "594584a2c951cfb809b491584ad82205a875fb4aa51f47db9002094b4deecbb7",
        7: "bd6dedf8bf1aec4dbba40fb2b553592408dbd0043e11c87a6d8c6969086f46a0",
    }
    return tuple(
        DataFile(f"level{k}", f"F16Data_FullMSine_Level{k}{'_Validation' if k % 2 == 0 else ''}.mat", sha,
                 url, zipped=True)
        for k, sha in hashes.items()
    )


BOUC_WEN_TRAIN_LABEL = "third-party generated (dynoNet), not official"
"""Label in the name of the Bouc-Wen training record: it is not part of the benchmark (see :func:`_split_bouc_wen`)."""


def _bouc_wen_vector(path: Path, name: str) -> np.ndarray:
    return as_vector(load_variables(path, [name]), name, path)


def _split_bouc_wen(paths: Mapping[str, Path]) -> Split:
    """Bouc-Wen (simulated hysteretic oscillator): the two official test records and a third-party training set.

    The official archive brings only validation (test) records, multisine (8192 samples) and sine sweep (153000),
    and a MATLAB integrator with which users generate their own training data; it defines no train/test split and
    no init window (the official loader sets none). The training record here (40960 samples: 5 periods of a
    random-phase multisine, 5-150 Hz, 50 N rms) was generated with that integrator by the dynoNet authors
    (Forgione and Piga); it is **not** official, and its record name says so. Input: force in N; output:
    displacement in m; fs = 750 Hz.
    """
    dt = 1 / 750
    tests = {
        kind: IOData(u=_bouc_wen_vector(paths[f"{kind}_u"], f"uval_{kind}"),
                     y=_bouc_wen_vector(paths[f"{kind}_y"], f"yval_{kind}"), dt=dt,
                     name=f"bouc_wen test {kind}", u_names=("force",), y_names=("displacement",), y_unit="m")
        for kind in ("multisine", "sinesweep")
    }
    arrays = load_variables(paths["train"], ["u", "y", "fs"])
    if float(arrays["fs"]) != 750.0:
        raise DataError(f"{paths['train']}: sampling frequency {float(arrays['fs'])} Hz; expected 750 Hz")
    train = IOData(u=as_vector(arrays, "u", paths["train"]), y=as_vector(arrays, "y", paths["train"]), dt=dt,
                   name=f"bouc_wen train multisine ({BOUC_WEN_TRAIN_LABEL})", u_names=("force",),
                   y_names=("displacement",), y_unit="m")
    return (train,), tests


def _bouc_wen_files() -> tuple[DataFile, ...]:
    # The official archive (4TU.ResearchData), at the address the official loader uses; its validation records
    # sit in "BoucWenFiles/Test signals/Validation signals/".
    url = "https://data.4tu.nl/ndownloader/files/24703124"
    official = {
        ("multisine_u", "uval_multisine.mat"): "3eb9abc0aef66b97beaf003fbcb45b43a4e28d7e82db5bf8abc1c931b92106ed",
        ("multisine_y", "yval_multisine.mat"): "05e462f7c508c26c8e69549e2b80ff5acea2828b399175c8bdd3fa70eb9905bc",
        ("sinesweep_u", "uval_sinesweep.mat"): "fefd6c08bbf3b27f13f61a15ea0dd8c63211c5924e99f6ca43760d1f25ce9ed3",
        ("sinesweep_y", "yval_sinesweep.mat"): "52b49f7ff62487bf75efbed95bf759b06d8bad1127a8e63bc242e119d72bc57b",
    }
    files = [DataFile(role, name, sha, url, zipped=True) for (role, name), sha in official.items()]
    # Third-party training data (dynoNet's train.h5 as npz; shared/data/README.md): no download.
    files.append(DataFile("train", "generated_training_dynonet/bouc_wen_train_generated.npz",
                          "593d939c68bdcfd53f404af19d2ca7dfd1c46940e2ea94664e5bad5515136a48"))
    return tuple(files)


_GDRIVE = "https://drive.google.com/uc?export=download&id="

BENCHMARKS: Mapping[str, BenchmarkSpec] = MappingProxyType({
    "silverbox": BenchmarkSpec(
        folder="silverbox",
        files=(DataFile("data", "SNLS80mV.mat",
                        "5c7413a52255af0cb4e2f93fb6903beb92b08965ba1e6ad0a6ffedfed8477ed4",
                        _GDRIVE + "17iS-6oBUUgrmiAcrZoG9S5sOaljZnDSy", zipped=True),),
        split=_split_silverbox, init_window=50, unit="mV", scale=1000.0,
        page="https://www.nonlinearbenchmark.org/benchmarks/silverbox",
    ),
    "wiener_hammerstein": BenchmarkSpec(
        folder="wiener_hammerstein",
        files=(
            # Full-precision re-pack of the official data (checksummed); the official .mat has no published
            # hash but holds the same values.
            DataFile("data", "WienerHammerBenchMark.npz",
                     "db196d8c0c76ab4b97bb770f459d0cea537bdb4976b26c3352ba5689e57103df"),
            DataFile("data", "WienerHammerBenchMark.mat", None,
                     "http://www.ee.kth.se/~hjalmars/ifac_tc11_benchmarks/2009_wienerhammerstein/"
                     "WienerHammerBenchMark.mat"),
        ),
        split=_split_wiener_hammerstein, init_window=50, unit="mV", scale=1000.0,
        page="https://www.nonlinearbenchmark.org/benchmarks/wiener-hammerstein",
    ),
    "cascaded_tanks": BenchmarkSpec(
        folder="cascaded_tanks",
        files=(DataFile("data", "dataBenchmark.mat",
                        "cb2f88d4388be4d3f2a24c6402fba804976aac5f2e1f26cda59ea0a38d016eab",
                        "https://data.4tu.nl/file/d4810b78-6cdd-48fe-8950-9bd601e5f47f/"
                        "3b697e42-01a4-4979-a370-813a456c36f5", zipped=True),),
        split=_split_cascaded_tanks, init_window=50, unit="V", scale=1.0,
        page="https://www.nonlinearbenchmark.org/benchmarks/cascaded-tanks",
    ),
    "emps": BenchmarkSpec(
        folder="emps",
        files=(
            DataFile("train", "DATA_EMPS.mat",
                     "6cf6814ae14618795da0101aae2bb97ff0c6351b0501b5492751b02b07facf7e",
                     _GDRIVE + "1zwoXYa9-3f8NQ0ohzmjpF7UxbNgRTHkS", zipped=True),
            DataFile("test", "DATA_EMPS_PULSES.mat",
                     "0eab75bb1f6b16228ee78791343a88bf9bfd9a51036ac9807d7b5fc11c0e1704",
                     _GDRIVE + "1zwoXYa9-3f8NQ0ohzmjpF7UxbNgRTHkS", zipped=True),
        ),
        split=_split_emps, init_window=20, unit="mm", scale=1000.0,
        page="https://www.nonlinearbenchmark.org/benchmarks/emps",
    ),
    "coupled_electric_drives": BenchmarkSpec(
        folder="coupled_electric_drives",
        files=(
            # The official archive holds DATAUNIF.MAT (full precision, no published hash) and the 5-digit CSV.
            DataFile("data", "DATAUNIF.MAT", None,
                     "https://uu.diva-portal.org/smash/get/diva2:1165531/FULLTEXT01.zip", zipped=True),
            DataFile("data", "DATAUNIF.csv",
                     "9114f637f22ca826f03f066270cf68bd8cad686739a7fa4b471c14ccdbf66889",
                     "https://uu.diva-portal.org/smash/get/diva2:1165531/FULLTEXT01.zip", zipped=True),
        ),
        split=_split_coupled_electric_drives, init_window=10, unit="", scale=1.0,
        page="https://www.nonlinearbenchmark.org/benchmarks/coupled-electric-drives",
    ),
    "f16": BenchmarkSpec(
        folder="f16", files=_f16_files(), split=_split_f16, init_window=50, unit="", scale=1.0,
        page="https://www.nonlinearbenchmark.org/benchmarks/f-16-gvt",
    ),
    # No official init window: 50 samples, as for the other benchmarks with n_init = 50 (a choice of this
    # project). Errors in the data's unit, m; the literature reports them in 1e-5 m (see the accuracy harness).
    "bouc_wen": BenchmarkSpec(
        folder="bouc_wen", files=_bouc_wen_files(), split=_split_bouc_wen, init_window=50, unit="m", scale=1.0,
        page="https://www.nonlinearbenchmark.org/benchmarks/bouc-wen",
    ),
})
"""The benchmark registry: name -> :class:`BenchmarkSpec`."""


def load_benchmark(name: str, data_dir: str | Path | None = None) -> Benchmark:
    """Load a benchmark with its official train/test split.

    Args:
        name: a key of :data:`BENCHMARKS` (case and ``-``/``_`` are ignored), e.g. ``"silverbox"``.
        data_dir: folder holding one sub-folder per benchmark; see the module docstring for the default.

    Returns:
        The :class:`Benchmark` with its train records, test records, init window and display unit. Every
        record carries the benchmark's ``report_unit`` and ``report_scale``.

    Raises:
        ConfigError: unknown benchmark name (the message lists the valid ones).
        DataError: a file is missing and cannot be downloaded, fails its checksum, or cannot be read.
    """
    key = str(name).strip().lower().replace("-", "_")
    if key not in BENCHMARKS:
        raise unknown_name("benchmark", name, BENCHMARKS)
    spec = BENCHMARKS[key]
    folder = resolve_data_dir(data_dir) / spec.folder
    chosen = _locate_files(key, spec, folder)
    for file in chosen.values():
        verify_sha256(folder / file.name, file.sha256)
    train, tests = spec.split({role: folder / file.name for role, file in chosen.items()})
    logger.info("loaded benchmark %s from %s: %d train, %d test records", key, folder, len(train), len(tests))

    def in_report_units(data: IOData) -> IOData:
        return replace(data, report_unit=spec.unit, report_scale=spec.scale)

    return Benchmark(name=key, train=tuple(map(in_report_units, train)),
                     tests=MappingProxyType({name: in_report_units(d) for name, d in tests.items()}),
                     init_window=spec.init_window, unit=spec.unit, scale=spec.scale)


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    """Return the data directory: ``data_dir``, else ``$DEEPWIENER_DATA``, else the user cache folder.

    The cache folder is ``$XDG_CACHE_HOME/deepwiener``, or ``~/.cache/deepwiener`` when XDG_CACHE_HOME is
    unset.
    """
    if data_dir is not None:
        return Path(data_dir).expanduser()
    if os.environ.get("DEEPWIENER_DATA"):
        return Path(os.environ["DEEPWIENER_DATA"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "deepwiener"


def verify_sha256(path: Path, expected: str | None) -> None:
    """Check the SHA-256 of ``path`` (streamed); a None ``expected`` is logged and accepted.

    Raises:
        DataError: the file cannot be read, or the hash differs (the message gives the path and both hashes).
    """
    if expected is None:
        logger.warning("%s has no published SHA-256; it is used without verification", path)
        return
    digest = hashlib.sha256()
    try:
        with path.open("rb") as file:
            for chunk in iter(lambda: file.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    if digest.hexdigest() != expected:
        raise DataError(f"checksum mismatch for {path}: expected SHA-256 {expected}, found "
                        f"{digest.hexdigest()}; the file is corrupt or not the official one, delete it and "
                        f"load again")


def fetch_url(url: str, dest: Path, timeout: float) -> None:
    """Download ``url`` into the file ``dest`` (the one network access of the package; tests replace it).

    Raises:
        OSError: any network or file error (``urllib.error.URLError`` is an OSError).
    """
    request = urllib.request.Request(url, headers={"User-Agent": "deepwiener"})
    with urllib.request.urlopen(request, timeout=timeout) as response, dest.open("wb") as out:
        shutil.copyfileobj(response, out)


def _offline() -> bool:
    return os.environ.get("DEEPWIENER_OFFLINE", "").strip() not in ("", "0")


def _locate_files(key: str, spec: BenchmarkSpec, folder: Path) -> dict[str, DataFile]:
    """Return {role: file used for it}, downloading missing files when allowed."""
    chosen = {}
    for role in dict.fromkeys(f.role for f in spec.files):
        candidates = [f for f in spec.files if f.role == role]
        present = _first_present(candidates, folder)
        if present is None:
            _download_role(key, spec, candidates, folder)
            present = _first_present(candidates, folder)
        if present is None:
            raise _missing_error(key, spec, candidates, folder, "the official download did not provide it")
        chosen[role] = present
    return chosen


def _first_present(candidates: list[DataFile], folder: Path) -> DataFile | None:
    return next((f for f in candidates if (folder / f.name).is_file()), None)


def _download_role(key: str, spec: BenchmarkSpec, candidates: list[DataFile], folder: Path) -> None:
    """Download the first downloadable candidate, with every missing file from the same archive, or raise."""
    source = next((f for f in candidates if f.url), None)
    if source is None or source.url is None:
        raise _missing_error(key, spec, candidates, folder, "it cannot be downloaded automatically")
    if _offline():
        raise _missing_error(key, spec, candidates, folder, "download skipped: DEEPWIENER_OFFLINE is set")
    logger.info("downloading %s data from %s", key, source.url)
    try:
        if source.zipped:
            wanted = [f for f in spec.files if f.url == source.url and not (folder / f.name).is_file()]
            _download_zip(source.url, wanted, folder)
        else:
            _download_file(source.url, folder / source.name)
    except (OSError, DataError) as exc:
        raise _missing_error(key, spec, candidates, folder, f"download failed: {exc}") from exc


def _download_file(url: str, dest: Path) -> None:
    """Fetch ``url`` into ``dest`` through a temporary file, so a failed download leaves nothing behind."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        fetch_url(url, part, DOWNLOAD_TIMEOUT_S)
        os.replace(part, dest)
    finally:
        part.unlink(missing_ok=True)


def _download_zip(url: str, files: list[DataFile], folder: Path) -> None:
    """Fetch the zip archive at ``url`` once and extract the members named like ``files`` into ``folder``.

    Members are matched by file name (case-insensitive) in any sub-folder; names the archive lacks are
    skipped.
    """
    folder.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(dir=folder, suffix=".zip.part")
    os.close(handle)
    archive_path = Path(tmp_name)
    try:
        fetch_url(url, archive_path, DOWNLOAD_TIMEOUT_S)
        if not zipfile.is_zipfile(archive_path):
            raise DataError(f"the download from {url} is not a zip archive")
        with zipfile.ZipFile(archive_path) as archive:
            members = {Path(m).name.lower(): m for m in archive.namelist() if not m.startswith("__MACOSX/")}
            for file in files:
                if file.name.lower() in members:
                    _extract(archive, members[file.name.lower()], folder / file.name)
    finally:
        archive_path.unlink(missing_ok=True)


def _extract(archive: zipfile.ZipFile, member: str, dest: Path) -> None:
    part = dest.with_name(dest.name + ".part")
    try:
        with archive.open(member) as src, part.open("wb") as out:
            shutil.copyfileobj(src, out)
        os.replace(part, dest)
    finally:
        part.unlink(missing_ok=True)


def _missing_error(key: str, spec: BenchmarkSpec, candidates: list[DataFile], folder: Path,
                   why: str) -> DataError:
    wanted = candidates[0]
    also = [f.name for f in candidates[1:]]
    url = next((f.url for f in candidates if f.url), None) or spec.page
    return DataError(
        f"benchmark {key!r}: data file {folder / wanted.name} is missing"
        + (f" (or use {' or '.join(also)} in the same folder)" if also else "")
        + f"; put it there, or set DEEPWIENER_DATA to a folder holding {spec.folder}/{wanted.name}"
        + f"; official source: {url} ({why})"
    )
