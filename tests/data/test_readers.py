"""Readers: CSV/NPZ/MAT to IOData, and a DataError naming file and problem for every bad file."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from deepwiener.data import IOData, read_csv, read_mat, read_npz
from deepwiener.data.readers import load_variables, read_file
from deepwiener.errors import DataError

# The layout of the official CSVs: quoted header, trailing empty column, a scalar on the first row only.
OFFICIAL_CSV = ('"uEst","uVal","yEst","fs",\n'
                "3.2567,0.97619,5.205,4,\n3.2466,0.99921,5.2154,,\n3.25,1.0,5.3,,\n\n")


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --- CSV ----------------------------------------------------------------------------------------------------


def test_csv_official_format_quoted_header_and_trailing_empty_column(tmp_path: Path) -> None:
    path = write(tmp_path / "tanks.csv", OFFICIAL_CSV)
    data = read_csv(path, u=["uEst", "uVal"], y=["yEst"], dt=4.0, y_unit="V")
    assert isinstance(data, IOData) and data.u.shape == (3, 2) and data.y.shape == (3, 1)
    np.testing.assert_array_equal(data.u[:, 1], [0.97619, 0.99921, 1.0])
    np.testing.assert_array_equal(data.y[:, 0], [5.205, 5.2154, 5.3])
    assert (data.name, data.u_names, data.y_names, data.y_unit, data.dt) == (
        "tanks", ("uEst", "uVal"), ("yEst",), "V", 4.0)


def test_csv_single_names_and_delimiter(tmp_path: Path) -> None:
    path = write(tmp_path / "rig.csv", "a;b\n1;2\n3;4\n\n")
    data = read_csv(path, u="a", y="b", dt=0.1, name="rig run 1", delimiter=";")
    np.testing.assert_array_equal(data.y[:, 0], [2.0, 4.0])
    assert data.name == "rig run 1"


def test_csv_unknown_column_lists_available_and_suggests(tmp_path: Path) -> None:
    path = write(tmp_path / "tanks.csv", OFFICIAL_CSV)
    with pytest.raises(DataError, match=r"no column named 'yEts'; available: uEst, uVal, yEst, fs "
                                        r"\(did you mean 'yEst'\?\)") as info:
        read_csv(path, u=["uEst"], y=["yEts"], dt=4.0)
    assert str(path) in str(info.value)


def test_csv_empty_cell_in_a_chosen_column_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path / "tanks.csv", OFFICIAL_CSV)
    with pytest.raises(DataError, match=r"line 3, column 'fs': empty cell"):
        read_csv(path, u=["uEst"], y=["fs"], dt=4.0)


def test_csv_non_numeric_cell_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.csv", "u,y\n1,2\n3,oops\n")
    with pytest.raises(DataError, match=r"bad.csv: line 3, column 'y': non-numeric cell 'oops'"):
        read_csv(path, u=["u"], y=["y"], dt=1.0)


def test_csv_truncated_last_row(tmp_path: Path) -> None:
    path = write(tmp_path / "cut.csv", '"V1","V2",\n0.1,0.2,\n0.3,0.4,\n0.5')
    with pytest.raises(DataError, match=r"line 4, column 'V2': empty cell"):
        read_csv(path, u=["V1"], y=["V2"], dt=1.0)


def test_csv_nan_cell_is_rejected_by_iodata(tmp_path: Path) -> None:
    path = write(tmp_path / "nan.csv", "u,y\n1,2\n3,nan\n")
    with pytest.raises(DataError, match=r"field 'y' has 1 non-finite .*time index 1"):
        read_csv(path, u=["u"], y=["y"], dt=1.0)


@pytest.mark.parametrize(("content", "message"), [
    (b"", "no header row"),
    (b"\xff\xfe\x00\x81binary\x00\x9f", "not a readable text CSV"),
    (b"u,y,u\n1,2,3\n", "appears 2 times"),
])
def test_csv_corrupt_files(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        read_csv(path, u=["u"], y=["y"], dt=1.0)


@pytest.mark.parametrize("reader", [read_csv, read_npz, read_mat])
def test_missing_file(tmp_path: Path, reader: object) -> None:
    with pytest.raises(DataError, match=r"not found: .*nothing\.bin"):
        reader(tmp_path / "nothing.bin", u="u", y="y", dt=1.0)  # type: ignore[operator]


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a file"):
        read_csv(tmp_path, u="u", y="y", dt=1.0)


def test_official_silverbox_csv_is_the_mat_rounded_to_five_digits(data_dir: Path) -> None:
    folder = data_dir / "silverbox"
    from_csv = read_csv(folder / "SNLS80mV.csv", u=["V1"], y=["V2"], dt=1 / 610.35)
    mat = scipy.io.loadmat(folder / "SNLS80mV.mat")
    assert len(from_csv) == 131072
    for column, key in ((from_csv.u[:, 0], "V1"), (from_csv.y[:, 0], "V2")):
        rounded = np.array([float(f"{v:.5g}") for v in mat[key][0]])
        np.testing.assert_array_equal(column, rounded)


# --- NPZ ----------------------------------------------------------------------------------------------------


def test_npz_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    u1, u2, y = rng.normal(size=(3, 50))
    path = tmp_path / "exp.npz"
    np.savez(path, u1=u1, u2=u2[None, :], y=y[:, None], fs=np.float64(10.0))
    data = read_npz(path, u=["u1", "u2"], y="y", dt=0.1)
    np.testing.assert_array_equal(data.u, np.stack([u1, u2], axis=1))
    np.testing.assert_array_equal(data.y[:, 0], y)
    assert data.name == "exp" and data.u_names == ("u1", "u2")


def test_npz_unknown_array_and_non_vector(tmp_path: Path) -> None:
    path = tmp_path / "exp.npz"
    np.savez(path, u=np.zeros(5), y=np.zeros(5), acc=np.zeros((3, 5)))
    with pytest.raises(DataError, match=r"no array named 'yy'; available: .*\(did you mean 'y'\?\)"):
        read_npz(path, u="u", y="yy", dt=1.0)
    with pytest.raises(DataError, match=r"variable 'acc' has shape \(3, 5\); expected a vector"):
        read_npz(path, u="u", y="acc", dt=1.0)


def test_npz_different_lengths(tmp_path: Path) -> None:
    path = tmp_path / "exp.npz"
    np.savez(path, u=np.zeros(5), y=np.zeros(6))
    with pytest.raises(DataError, match=r"different lengths: \{'u': 5, 'y': 6\}"):
        read_npz(path, u="u", y="y", dt=1.0)


def test_npz_pickled_object_array_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "obj.npz"
    np.savez(path, u=np.array([{"a": 1}], dtype=object), y=np.zeros(1))
    with pytest.raises(DataError, match="cannot read .npz"):
        read_npz(path, u="u", y="y", dt=1.0)


def test_npz_single_npy_file(tmp_path: Path) -> None:
    path = tmp_path / "one.npz"
    with path.open("wb") as file:
        np.save(file, np.zeros(3))
    with pytest.raises(DataError, match="not an .npz archive"):
        read_npz(path, u="u", y="y", dt=1.0)


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.95])
def test_npz_truncated(tmp_path: Path, data_dir: Path, keep: float) -> None:
    raw = (data_dir / "cascaded_tanks" / "cascaded_tanks.npz").read_bytes()
    path = tmp_path / "cut.npz"
    path.write_bytes(raw[: int(keep * len(raw))])
    with pytest.raises(DataError, match=r"cut\.npz: cannot read .npz file"):
        read_npz(path, u="uEst", y="yEst", dt=4.0)


def test_npz_garbage(tmp_path: Path) -> None:
    path = tmp_path / "junk.npz"
    path.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 4)
    with pytest.raises(DataError, match="cannot read .npz"):
        read_npz(path, u="u", y="y", dt=1.0)


# --- MAT ----------------------------------------------------------------------------------------------------


def test_mat_row_and_column_vectors(tmp_path: Path) -> None:
    path = tmp_path / "exp.mat"
    u = np.arange(6.0)
    scipy.io.savemat(path, {"u_row": u[None, :], "y_col": (2 * u)[:, None], "Ts": 0.5})
    data = read_mat(path, u="u_row", y="y_col", dt=0.5, y_unit="m")
    np.testing.assert_array_equal(data.u[:, 0], u)
    np.testing.assert_array_equal(data.y[:, 0], 2 * u)
    assert data.y_unit == "m" and data.y_names == ("y_col",)


def test_mat_unknown_variable_and_non_numeric(tmp_path: Path) -> None:
    path = tmp_path / "exp.mat"
    scipy.io.savemat(path, {"uEst": np.zeros((4, 1)), "yEst": np.zeros((4, 1)), "label": "abc"})
    with pytest.raises(DataError, match=r"no variable named 'yest'; available: .*did you mean 'yEst'"):
        read_mat(path, u="uEst", y="yest", dt=1.0)
    with pytest.raises(DataError, match="'label' is not real numeric"):
        read_mat(path, u="uEst", y="label", dt=1.0)


def test_mat_real_emps_file_matches_loadmat(data_dir: Path) -> None:
    path = data_dir / "emps" / "DATA_EMPS.mat"
    data = read_mat(path, u="vir", y=["qm"], dt=1e-3)
    raw = scipy.io.loadmat(path)
    np.testing.assert_array_equal(data.u[:, 0], raw["vir"][:, 0])
    np.testing.assert_array_equal(data.y[:, 0], raw["qm"][:, 0])


@pytest.mark.parametrize("keep", [0.05, 0.5, 0.99])
def test_mat_truncated(tmp_path: Path, data_dir: Path, keep: float) -> None:
    raw = (data_dir / "cascaded_tanks" / "dataBenchmark.mat").read_bytes()
    path = tmp_path / "cut.mat"
    path.write_bytes(raw[: int(keep * len(raw))])
    with pytest.raises(DataError, match=r"cut\.mat: cannot read .mat file"):
        read_mat(path, u="uEst", y="yEst", dt=4.0)


@pytest.mark.parametrize("content", [b"", b"not a mat file at all" * 20, bytes(range(256)) * 2])
def test_mat_corrupt(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.mat"
    path.write_bytes(content)
    with pytest.raises(DataError, match="cannot read .mat file"):
        read_mat(path, u="u", y="y", dt=1.0)


# --- suffix dispatch ----------------------------------------------------------------------------------------


def test_read_file_and_load_variables_dispatch_on_suffix(tmp_path: Path) -> None:
    csv_path = write(tmp_path / "a.csv", "u,y\n1,2\n3,4\n")
    mat_path = tmp_path / "A.MAT"
    scipy.io.savemat(mat_path, {"u": np.array([[1.0, 3.0]]), "y": np.array([[2.0, 4.0]])})
    for path in (csv_path, mat_path):
        np.testing.assert_array_equal(read_file(path, "u", "y", 1.0).y[:, 0], [2.0, 4.0])
    assert load_variables(mat_path, ["u"])["u"].shape == (1, 2)
    with pytest.raises(DataError, match=r"unsupported file type '\.xlsx'"):
        load_variables(tmp_path / "a.xlsx", ["u"])


def test_csv_reference_parse_with_stdlib(tmp_path: Path) -> None:
    """Cross-check read_csv against the stdlib csv module on random data."""
    rng = np.random.default_rng(2)
    values = rng.normal(size=(200, 3))
    path = tmp_path / "r.csv"
    with path.open("w", newline="") as file:
        writer = csv.writer(file, quoting=csv.QUOTE_NONNUMERIC)
        writer.writerow(["x", "y1", "y2"])
        writer.writerows(values.tolist())
    data = read_csv(path, u=["x"], y=["y1", "y2"], dt=1.0)
    np.testing.assert_array_equal(np.hstack([data.u, data.y]), values)
