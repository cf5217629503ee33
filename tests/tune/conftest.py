"""Fixtures of the tuning tests: a throwaway PostgreSQL server, a tiny data set and search space, and helpers that run
``deepwiener tune`` in a subprocess and read its study.

PostgreSQL is a real server: ``initdb`` into a temporary folder, ``pg_ctl start`` on a free port on 127.0.0.1 (as the
``postgres`` user when the tests run as root: PostgreSQL refuses to run as root), one database, stopped and removed at
the end. Without the server binaries the tests that need it skip with the reason (and fail under CI, which installs
them: ``.ci/run``).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from cli.cli_helpers import write_csv
from helpers import POSTGRES_SKIP

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "benchmarks" / "tuning" / "configs" / "smoke.toml"
TINY_SPACE = """
[model]
d_model = 2
d_state = 2
n_layers = 1

[train]
window = 64
washout = 10
batch_size = 64
epochs = 20

[tune.train]
lr = { low = 1e-3, high = 1e-2, log = true }

[tune.model]
nonlinearity = { choices = ["gelu", "tanh"] }
"""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _postgres_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """The URL (``postgresql://postgres@127.0.0.1:PORT/deepwiener``) of a throwaway PostgreSQL server."""
    bin_dir = _postgres_bin()
    if bin_dir is None:
        if os.environ.get("CI"):
            pytest.fail(POSTGRES_SKIP)
        pytest.skip(POSTGRES_SKIP)
    folder = Path(tempfile.mkdtemp(prefix="deepwiener-pg-"))
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(folder, "postgres")
    port = free_port()

    def run(*args: str) -> None:
        subprocess.run([*as_user, *args], check=True, capture_output=True, timeout=120)

    run(str(bin_dir / "initdb"), "-D", str(folder / "data"), "-A", "trust", "-U", "postgres", "--no-sync")
    run(str(bin_dir / "pg_ctl"), "-D", str(folder / "data"), "-l", str(folder / "server.log"), "-w", "-o",
        f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
    try:
        run(str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "deepwiener")
        yield f"postgresql://postgres@127.0.0.1:{port}/deepwiener"
    finally:
        subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(folder / "data"), "-m", "immediate", "-w",
                        "stop"], capture_output=True, timeout=120)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A simulated plant as CSV (800 samples) and a search space whose trials take a second or two."""
    folder = tmp_path_factory.mktemp("tune")
    rng = np.random.default_rng(0)
    u = rng.normal(size=800)
    y = np.convolve(np.tanh(u), [0.5, 0.3, 0.1])[:800]
    (folder / "space.toml").write_text(TINY_SPACE)
    return {"csv": write_csv(folder / "train.csv", {"V1": u, "V2": y}), "space": folder / "space.toml"}


def csv_flags(tiny: dict[str, Path]) -> list[str]:
    return ["--csv", str(tiny["csv"]), "--u", "V1", "--y", "V2", "--dt", "0.01"]


@pytest.fixture
def start_tune(tmp_path: Path) -> Iterator[Callable[[Sequence[object]], subprocess.Popen]]:
    """Start ``deepwiener tune ARGS`` in its own process (one thread; stdout and stderr to ``tmp_path/tune-K.log``,
    printed when the test fails); the processes still alive at the end are killed."""
    started: list[subprocess.Popen] = []

    def start(args: Sequence[object]) -> subprocess.Popen:
        command = [sys.executable, "-c", "from deepwiener.cli import main; main()", "tune", *map(str, args)]
        with (tmp_path / f"tune-{len(started)}.log").open("w") as out:
            started.append(subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                            env={**os.environ, "OMP_NUM_THREADS": "1"}))
        return started[-1]

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()
    for log in sorted(tmp_path.glob("tune-*.log")):
        print(f"--- {log.name}\n{log.read_text()}")
