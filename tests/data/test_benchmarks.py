"""Benchmark registry and loader: official splits on the real data, checksums, data dir, downloads."""

from __future__ import annotations

import hashlib
import re
import shutil
import urllib.error
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from deepwiener.data import BENCHMARKS, Benchmark, IOData, load_benchmark
from deepwiener.data import benchmarks as bm
from deepwiener.errors import ConfigError, DataError

# --- registry -----------------------------------------------------------------------------------------------


def test_registry_entries_are_complete() -> None:
    assert {"silverbox", "wiener_hammerstein", "cascaded_tanks", "emps"} <= set(BENCHMARKS)
    for name, spec in BENCHMARKS.items():
        assert spec.files, name
        assert any(f.url for f in spec.files), f"{name} has no official download"
        for file in spec.files:
            assert file.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", file.sha256), file
            assert file.url is None or file.url.startswith(("http://", "https://")), file


@pytest.mark.parametrize(("name", "init_window", "unit", "scale"), [
    ("silverbox", 50, "mV", 1000.0),
    ("wiener_hammerstein", 50, "mV", 1000.0),
    ("cascaded_tanks", 50, "V", 1.0),
    ("emps", 20, "mm", 1000.0),
    ("coupled_electric_drives", 10, "", 1.0),
    ("f16", 50, "", 1.0),
    ("bouc_wen", 50, "m", 1.0),
])
def test_registry_protocol_values(name: str, init_window: int, unit: str, scale: float) -> None:
    spec = BENCHMARKS[name]
    assert (spec.init_window, spec.unit, spec.scale) == (init_window, unit, scale)


def test_unknown_benchmark_name() -> None:
    with pytest.raises(ConfigError, match=r"unknown benchmark 'silverbx'.*did you mean 'silverbox'"):
        load_benchmark("silverbx")


# --- official splits on the real data -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def loaded(data_dir: Path) -> Callable[[str], Benchmark]:
    """Load each benchmark at most once per module, offline and without network."""
    cache: dict[str, Benchmark] = {}

    def get(name: str) -> Benchmark:
        if name not in cache:
            with pytest.MonkeyPatch.context() as mp:
                mp.setenv("DEEPWIENER_OFFLINE", "1")
                cache[name] = load_benchmark(name, data_dir)
        return cache[name]

    return get


def column(data: IOData, field: str) -> np.ndarray:
    return getattr(data, field)[:, 0]


def test_silverbox_split(loaded: Callable[[str], Benchmark], data_dir: Path) -> None:
    bench = loaded("silverbox")
    raw = scipy.io.loadmat(data_dir / "silverbox" / "SNLS80mV.mat")
    u, y = raw["V1"][0], raw["V2"][0]
    assert bench.name == "silverbox" and (bench.init_window, bench.unit, bench.scale) == (50, "mV", 1000.0)
    assert [len(d) for d in bench.train] == [65062]
    assert {k: len(v) for k, v in bench.tests.items()} == {
        "multisine": 21688, "arrow_full": 40475, "arrow_no_extrapolation": 32000}
    np.testing.assert_array_equal(column(bench.train[0], "u"), u[40650:105712])
    np.testing.assert_array_equal(column(bench.tests["multisine"], "y"), y[105712:127400])
    np.testing.assert_array_equal(column(bench.tests["arrow_full"], "y"), y[100:40575])
    np.testing.assert_array_equal(column(bench.tests["arrow_no_extrapolation"], "u"), u[100:32100])
    assert bench.train[0].u[0, 0] == u[40650] and bench.tests["arrow_full"].y[-1, 0] == y[40574]
    for data in (*bench.train, *bench.tests.values()):
        assert data.dt == 1 / 610.35 and data.y_unit == "V" and (data.n_u, data.n_y) == (1, 1)


def test_benchmark_is_immutable(loaded: Callable[[str], Benchmark]) -> None:
    bench = loaded("silverbox")
    with pytest.raises(TypeError):
        bench.tests["extra"] = bench.train[0]  # type: ignore[index]
    with pytest.raises(AttributeError):
        bench.init_window = 0  # type: ignore[misc]


def test_wiener_hammerstein_split(loaded: Callable[[str], Benchmark], data_dir: Path) -> None:
    bench = loaded("wiener_hammerstein")
    with np.load(data_dir / "wiener_hammerstein" / "WienerHammerBenchMark.npz") as raw:
        u, y = raw["uBenchMark"], raw["yBenchMark"]
    assert [len(d) for d in bench.train] == [100000]
    assert list(bench.tests) == ["test"] and len(bench.tests["test"]) == 78800
    np.testing.assert_array_equal(column(bench.train[0], "u"), u[5200:105200])
    np.testing.assert_array_equal(column(bench.tests["test"], "y"), y[105200:184000])
    assert bench.tests["test"].dt == 1 / 51200 and (bench.init_window, bench.unit) == (50, "mV")


def test_cascaded_tanks_split(loaded: Callable[[str], Benchmark], data_dir: Path) -> None:
    bench = loaded("cascaded_tanks")
    raw = scipy.io.loadmat(data_dir / "cascaded_tanks" / "dataBenchmark.mat")
    assert [len(d) for d in bench.train] == [1024] and len(bench.tests["test"]) == 1024
    np.testing.assert_array_equal(column(bench.train[0], "u"), raw["uEst"][:, 0])
    np.testing.assert_array_equal(column(bench.train[0], "y"), raw["yEst"][:, 0])
    np.testing.assert_array_equal(column(bench.tests["test"], "u"), raw["uVal"][:, 0])
    np.testing.assert_array_equal(column(bench.tests["test"], "y"), raw["yVal"][:, 0])
    assert bench.train[0].dt == 4.0 and (bench.init_window, bench.unit, bench.scale) == (50, "V", 1.0)


def test_emps_split(loaded: Callable[[str], Benchmark], data_dir: Path) -> None:
    bench = loaded("emps")
    assert [len(d) for d in bench.train] == [24841] and len(bench.tests["test"]) == 24841
    for data, file in ((bench.train[0], "DATA_EMPS.mat"), (bench.tests["test"], "DATA_EMPS_PULSES.mat")):
        raw = scipy.io.loadmat(data_dir / "emps" / file)
        np.testing.assert_array_equal(column(data, "u"), raw["vir"][:, 0])
        np.testing.assert_array_equal(column(data, "y"), raw["qm"][:, 0])
        assert data.dt == raw["t"][1, 0] - raw["t"][0, 0]
    assert bench.train[0].dt == pytest.approx(0.0010000240583, rel=1e-10)
    assert (bench.init_window, bench.unit, bench.scale) == (20, "mm", 1000.0)


def test_coupled_electric_drives_split(loaded: Callable[[str], Benchmark], data_dir: Path) -> None:
    bench = loaded("coupled_electric_drives")
    text = (data_dir / "coupled_electric_drives" / "DATAUNIF.csv").read_text()
    lines = [line for line in text.splitlines() if line.strip()]
    u12 = [float(line.split(",")[1]) for line in lines[1:]]
    z11 = [float(line.split(",")[2]) for line in lines[1:]]
    assert [len(d) for d in bench.train] == [400, 400]
    assert {k: len(v) for k, v in bench.tests.items()} == {"low_amplitude": 100, "high_amplitude": 100}
    np.testing.assert_array_equal(column(bench.train[0], "y"), z11[:400])
    np.testing.assert_array_equal(column(bench.tests["high_amplitude"], "u"), u12[400:])
    assert bench.init_window == 10 and bench.train[1].dt == 0.02


def test_f16_split(loaded: Callable[[str], Benchmark], data_dir: Path) -> None:
    bench = loaded("f16")
    assert [len(d) for d in bench.train] == [73728] * 4
    assert sorted(bench.tests) == ["fullmsine_level2", "fullmsine_level4", "fullmsine_level6"]
    raw = scipy.io.loadmat(data_dir / "f16" / "F16Data_FullMSine_Level4_Validation.mat")
    np.testing.assert_array_equal(column(bench.tests["fullmsine_level4"], "u"), raw["Force"][0])
    np.testing.assert_array_equal(column(bench.tests["fullmsine_level4"], "y"), raw["Acceleration"][0])
    assert bench.train[0].dt == 1 / 400


def test_bouc_wen_split(loaded: Callable[[str], Benchmark], data_dir: Path) -> None:
    bench = loaded("bouc_wen")
    folder = data_dir / "bouc_wen"
    # the two official test records, read from the official files
    assert {k: len(v) for k, v in bench.tests.items()} == {"multisine": 8192, "sinesweep": 153000}
    for kind in ("multisine", "sinesweep"):
        u = scipy.io.loadmat(folder / f"uval_{kind}.mat")[f"uval_{kind}"][0]
        y = scipy.io.loadmat(folder / f"yval_{kind}.mat")[f"yval_{kind}"][0]
        np.testing.assert_array_equal(column(bench.tests[kind], "u"), u)
        np.testing.assert_array_equal(column(bench.tests[kind], "y"), y)
        assert "third-party" not in bench.tests[kind].name
    # one training record: the third-party generated set, labelled so
    (train,) = bench.train
    raw = np.load(folder / "generated_training_dynonet" / "bouc_wen_train_generated.npz")
    assert len(train) == 40960 and "third-party" in train.name and "not official" in train.name
    np.testing.assert_array_equal(column(train, "y"), raw["y"])
    assert train.u.shape == (40960, 1) and train.y.shape == (40960, 1)
    # no official init window: 50, in metres, fs 750 Hz
    assert bench.init_window == 50 and (bench.unit, bench.scale) == ("m", 1.0)
    assert all(d.dt == 1 / 750 and d.y_unit == "m" for d in (train, *bench.tests.values()))
    # the training multisine is another realisation than the test multisine (no test data in training)
    assert not np.allclose(column(train, "u")[:8192], column(bench.tests["multisine"], "u"))


def test_bouc_wen_without_the_third_party_training_set(data_dir: Path, tmp_path: Path) -> None:
    copy_benchmark(data_dir, tmp_path, "bouc_wen", "uval_multisine.mat", "yval_multisine.mat", "uval_sinesweep.mat",
                   "yval_sinesweep.mat")
    with pytest.raises(DataError, match="bouc_wen_train_generated.npz is missing.*cannot be downloaded"):
        load_benchmark("bouc_wen", tmp_path)


# --- checksums, missing data, data directory ----------------------------------------------------------------


def copy_benchmark(data_dir: Path, root: Path, folder: str, *names: str) -> Path:
    (root / folder).mkdir(parents=True)
    for name in names:
        shutil.copyfile(data_dir / folder / name, root / folder / name)
    return root / folder


def test_checksum_mismatch_names_path_and_both_hashes(data_dir: Path, tmp_path: Path) -> None:
    folder = copy_benchmark(data_dir, tmp_path, "cascaded_tanks", "dataBenchmark.mat")
    path = folder / "dataBenchmark.mat"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    found = hashlib.sha256(raw).hexdigest()
    expected = BENCHMARKS["cascaded_tanks"].files[0].sha256
    with pytest.raises(DataError, match="checksum mismatch") as info:
        load_benchmark("cascaded_tanks", tmp_path)
    message = str(info.value)
    assert str(path) in message and f"expected SHA-256 {expected}" in message and f"found {found}" in message


def test_missing_data_offline_says_where_and_how(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_benchmark("silverbox", tmp_path)
    message = str(info.value)
    assert str(tmp_path / "silverbox" / "SNLS80mV.mat") in message
    assert "DEEPWIENER_DATA" in message and "DEEPWIENER_OFFLINE" in message
    assert BENCHMARKS["silverbox"].files[0].url in message  # type: ignore[operator]
    assert "\n" not in message


def test_missing_one_of_two_files(data_dir: Path, tmp_path: Path) -> None:
    copy_benchmark(data_dir, tmp_path, "emps", "DATA_EMPS.mat")
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "emps" / "DATA_EMPS_PULSES.mat"))):
        load_benchmark("emps", tmp_path)


def test_data_dir_from_environment(monkeypatch: pytest.MonkeyPatch, data_dir: Path) -> None:
    monkeypatch.setenv("DEEPWIENER_DATA", str(data_dir))
    assert len(load_benchmark("Cascaded-Tanks").train[0]) == 1024


def test_resolve_data_dir_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DEEPWIENER_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert bm.resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert bm.resolve_data_dir() == tmp_path / "env"
    monkeypatch.delenv("DEEPWIENER_DATA")
    assert bm.resolve_data_dir() == tmp_path / "xdg" / "deepwiener"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert bm.resolve_data_dir() == tmp_path / "home" / ".cache" / "deepwiener"


# --- downloads (with a fake fetch; the network is never touched) --------------------------------------------


def zip_with(path: Path, members: dict[str, bytes]) -> bytes:
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return path.read_bytes()


def fake_fetch(payload: bytes, calls: list[str]) -> Callable[[str, Path, float], None]:
    def fetch(url: str, dest: Path, timeout: float) -> None:
        calls.append(url)
        dest.write_bytes(payload)

    return fetch


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv("DEEPWIENER_OFFLINE", raising=False)
    return monkeypatch


def test_download_extracts_member_from_zip(online: pytest.MonkeyPatch, data_dir: Path,
                                           tmp_path: Path) -> None:
    mat = (data_dir / "cascaded_tanks" / "dataBenchmark.mat").read_bytes()
    payload = zip_with(tmp_path / "a.zip", {"__MACOSX/CascadedTanksFiles/._dataBenchmark.mat": b"junk",
                                            "CascadedTanksFiles/dataBenchmark.mat": mat})
    calls: list[str] = []
    online.setattr(bm, "fetch_url", fake_fetch(payload, calls))
    bench = load_benchmark("cascaded_tanks", tmp_path / "cache")
    assert calls == [BENCHMARKS["cascaded_tanks"].files[0].url]
    assert len(bench.tests["test"]) == 1024
    assert sorted(p.name for p in (tmp_path / "cache" / "cascaded_tanks").iterdir()) == ["dataBenchmark.mat"]


def test_download_fetches_a_shared_archive_once(online: pytest.MonkeyPatch, data_dir: Path,
                                                tmp_path: Path) -> None:
    names = ("DATA_EMPS.mat", "DATA_EMPS_PULSES.mat")
    members = {f"EMPS/{n}": (data_dir / "emps" / n).read_bytes() for n in names}
    calls: list[str] = []
    online.setattr(bm, "fetch_url", fake_fetch(zip_with(tmp_path / "e.zip", members), calls))
    assert len(load_benchmark("emps", tmp_path / "cache").tests["test"]) == 24841
    assert len(calls) == 1


def test_downloaded_file_without_published_hash(online: pytest.MonkeyPatch, data_dir: Path, tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    """WH: the npz is absent, so the official .mat is downloaded (not zipped, no published checksum)."""
    with np.load(data_dir / "wiener_hammerstein" / "WienerHammerBenchMark.npz") as raw:
        content = {"uBenchMark": raw["uBenchMark"][:, None], "yBenchMark": raw["yBenchMark"][:, None]}
    scipy.io.savemat(tmp_path / "wh.mat", content)
    calls: list[str] = []
    online.setattr(bm, "fetch_url", fake_fetch((tmp_path / "wh.mat").read_bytes(), calls))
    bench = load_benchmark("wiener_hammerstein", tmp_path / "cache")
    assert calls[0].endswith("WienerHammerBenchMark.mat")
    assert len(bench.train[0]) == 100000 and bench.train[0].u[0, 0] == content["uBenchMark"][5200, 0]
    assert "no published SHA-256" in caplog.text


def test_download_failure(online: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def fail(url: str, dest: Path, timeout: float) -> None:
        raise urllib.error.URLError("no route to host")

    online.setattr(bm, "fetch_url", fail)
    with pytest.raises(DataError, match=r"SNLS80mV\.mat is missing.*download failed: .*no route to host"):
        load_benchmark("silverbox", tmp_path)
    assert not any((tmp_path / "silverbox").iterdir())


def test_download_that_is_not_a_zip(online: pytest.MonkeyPatch, tmp_path: Path) -> None:
    online.setattr(bm, "fetch_url", fake_fetch(b"<html>quota exceeded</html>", []))
    with pytest.raises(DataError, match="download failed: .*not a zip archive"):
        load_benchmark("silverbox", tmp_path)


def test_download_archive_without_the_file(online: pytest.MonkeyPatch, tmp_path: Path) -> None:
    online.setattr(bm, "fetch_url", fake_fetch(zip_with(tmp_path / "x.zip", {"readme.txt": b"hi"}), []))
    with pytest.raises(DataError, match="dataBenchmark.mat is missing.*did not provide it"):
        load_benchmark("cascaded_tanks", tmp_path / "cache")


def test_downloaded_file_with_wrong_content_fails_checksum(online: pytest.MonkeyPatch,
                                                           tmp_path: Path) -> None:
    payload = zip_with(tmp_path / "x.zip", {"SilverboxFiles/SNLS80mV.mat": b"tampered"})
    online.setattr(bm, "fetch_url", fake_fetch(payload, []))
    with pytest.raises(DataError, match="checksum mismatch"):
        load_benchmark("silverbox", tmp_path / "cache")
