"""Speed benchmark: every simulation engine against the plain Python-loop reference, in one process.

    python benchmarks/speed/run.py                   # the full run (about 15 minutes on 2 cores)
    python benchmarks/speed/run.py --quick           # small sizes, to check the script (about a minute)
    python benchmarks/speed/run.py --only streaming  # one case, merged into the existing results

Cases (float32, the training dtype; ``DeepWiener(1, 1, ...)``):

- ``paper``: the Silverbox model of the paper (LRU, d_model 3, d_state 6, 4 blocks, ELU), batch 30 x 512;
- ``wide``: LRU, d_model 64, d_state 64, 4 blocks, ELU, batch 16 x 4096;
- ``simulation``: the paper model over 10^6 samples, batch 1, forward only;
- ``streaming``: the paper model and the Silverbox headline (``results/silverbox/best.dw``, an LFR model) one
  sample at a time: the exported C step compiled with ``cc -O2`` (double and float; a timing program around
  ``NAME_step``, no I/O in the loop), the exported ONNX step with onnxruntime (``session.run`` per sample, one
  thread), ``model.fast_stepper().step`` and, for the paper model, ``model.stepper().step``;
- ``lfr``: the nonlinear feedback model of ``accuracy/configs/silverbox.toml`` (``LFRModel``, 8 states closed
  through a 16-channel perceptron), batch 32 x 512: its torch loop against the compiled loop kernel;
- ``bandwidth``: the wide model's forward scan (one block's diagonal recurrence) against a memory-bandwidth
  bound. The scan reads bu and writes X, both (batch, T, n) complex64, so it moves
  ``bytes = 2 * 8 * batch * T * n`` and cannot take less than ``bytes / copy bandwidth``, the bandwidth
  measured here by copying a tensor of bu's size into a preallocated one (read + write).

For each training case: one step's forward + MSE loss + backward + a plain ``torch.optim.Adam`` step (foreach,
lr 1e-6), and the forward alone under no_grad, for each engine ("loop" = the plain recurrence = the reference,
"scan", "fft", "compiled" (per-block numba kernels), "fused" (the whole stack in one numba kernel pair,
``engines.fused``)) and, where installed,
the S5 layer of the PyPI package ``s5-pytorch`` in the same stack (encoder, 4 x [S5 -> ELU -> + skip],
decoder). Engines are timed round-robin (one call of each per round) after a warm-up call; the tables give
medians and ratios to the loop measured in the same process. Where the loop would take minutes it is timed
on a prefix and scaled linearly in T (marked): the simulation case's first 50,000 samples, a training case's
first 512 steps (a lower bound: the wide model's loop step measured 178 s at T = 4096 and 13 s scaled from 512).
``--only CASE ...`` runs some cases and merges them into the existing results; each case records the commit and
load it was measured at.

The arithmetic floor (issue 22): every run measures the machine's sustained float32 GFLOP/s with a large matrix
multiply (``torch.mm`` of two n x n float32 matrices, 2 n^3 FLOP, at the start and the end of the run; the floor
is the faster of the two). Each training case gives its FLOP count (:func:`stack_flops`: forward = the encoder,
per block the products B v, C x, D v (complex as real pairs), the recurrence (8 FLOP per complex mode), bias, map
and skip (3 per channel), the decoder; a training step = 3 x forward, the usual count of forward + backward) and
each engine's GFLOP/s as a fraction of the floor. The ``freerun`` case times the paper model over 40,000 samples,
batch 1 (scan, compiled, fused); ``coldstart`` runs a fresh process twice on an empty numba cache directory
(``NUMBA_CACHE_DIR``): the first fused training step of the first process compiles the kernels (cold), the
second process loads them from the cache (warm).

Environment: unless already set, OMP_WAIT_POLICY=PASSIVE and THP_MEM_ALLOC_ENABLE=1 are set before torch is
imported. On a shared machine, OpenMP threads that spin-wait make each parallel region wait out a
scheduler time slice whenever another process holds a core (a 700 kB clone measured 8 ms instead of
0.03 ms); THP_MEM_ALLOC_ENABLE lets torch back large tensors with huge pages, so a fresh 33 MB output no
longer costs 8,000 page faults (measured 24 ms -> 5 ms for a clone). Both apply to every engine and are
recorded in the results. Writes ``benchmarks/results/speed/results.json`` and ``results.md``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

import argparse
import dataclasses
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

import deepwiener as dw
from deepwiener.engines import compiled, feedback, fused, resolve_mode
from deepwiener.engines.scan import diagonal_recurrence_scan
from deepwiener.io import read_info
from deepwiener.models import DeepWiener, LFRModel, Model, deepwiener_fused
from deepwiener.models.streamers import TorchStreamer

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # benchmarks/: shares accuracy/run.py's provenance helpers
from accuracy.run import git_commit  # noqa: E402

RESULTS = HERE.parent / "results"
ENGINES = ("loop", "scan", "fft", "compiled", "fused")
PEER = "s5-pytorch"
ENV_VARS = ("OMP_WAIT_POLICY", "THP_MEM_ALLOC_ENABLE", "OMP_NUM_THREADS", "NUMBA_THREADING_LAYER")

PAPER = {"layer": "lru", "d_model": 3, "d_state": 6, "n_layers": 4, "nonlinearity": "elu"}
WIDE = {"layer": "lru", "d_model": 64, "d_state": 64, "n_layers": 4, "nonlinearity": "elu"}
LFR = {"n_x": 8, "n_w": 16, "nonlinearity": "mlp"}


@dataclasses.dataclass(frozen=True)
class Sizes:
    """Problem sizes and repeat counts of one run (full or quick)."""

    paper: tuple[int, int] = (30, 512)
    wide: tuple[int, int] = (16, 4096)
    lfr: tuple[int, int] = (32, 512)
    simulation: int = 1_000_000
    loop_prefix: int = 50_000  # samples the loop is timed on in the simulation case
    loop_train_prefix: int = 512  # steps the loop is timed on in a training case with more (scaled in T)
    stream_fast: int = 20_000  # samples stepped with the fast streamer
    stream_torch: int = 2_000  # samples stepped with the torch stepper
    stream_c: int = 1_000_000  # samples stepped by the exported C program, per repeat
    stream_onnx: int = 5_000  # samples stepped with onnxruntime
    copy_mb: int = 256  # size of the tensor copied to measure the copy bandwidth
    free_run: int = 40_000  # samples of the free-run case
    floor_n: int = 4096  # the matrix size of the matrix-multiply floor
    repeats: int = 5
    loop_repeats: int = 3


QUICK = Sizes(paper=(4, 128), wide=(2, 256), lfr=(4, 64), simulation=20_000, loop_prefix=2_000, stream_fast=2_000,
              stream_torch=200, stream_c=20_000, stream_onnx=500, copy_mb=16, free_run=4_000, floor_n=1024,
              repeats=2, loop_repeats=1)
SILVERBOX_HEADLINE = RESULTS / "silverbox" / "best.dw"


# --------------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------------


def time_round_robin(calls: dict[str, Callable[[], object]], repeats: dict[str, int]) -> dict[str, float]:
    """Median seconds of each call, timed one call of each per round after one warm-up call each.

    Args:
        calls: name -> zero-argument callable.
        repeats: name -> timed calls (a name takes part in the first ``repeats[name]`` rounds).
    """
    for fn in calls.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for round_ in range(max(repeats.values())):
        for name, fn in calls.items():
            if round_ < repeats[name]:
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def train_step(model: nn.Module, u: Tensor, target: Tensor, optimizer: torch.optim.Optimizer,
               **kwargs: Any) -> Callable[[], None]:
    """One training step: forward, MSE loss, backward and the optimiser's step."""

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        y, _ = model(u, **kwargs)
        torch.mean((y - target) ** 2).backward()
        optimizer.step()

    return step


def adam(model: nn.Module) -> torch.optim.Optimizer:
    """A plain Adam (multi-tensor), with a learning rate small enough to keep the model where it is."""
    return torch.optim.Adam(model.parameters(), lr=1e-6, foreach=True)


def stack_flops(config: dict[str, Any], samples: int) -> float:
    """Forward FLOPs of a ``DeepWiener(1, 1, **config)`` LRU stack (identity skip, elementwise map) over
    ``samples`` = batch x T samples (module docstring)."""
    d, n, layers = config["d_model"], config["d_state"], config["n_layers"]
    block = 2 * (2 * n) * d + 8 * n + 2 * d * (2 * n) + 2 * d * d + 3 * d
    return float(samples * (2 * d + layers * block + 2 * d))


def matmul_gflops(n: int, repeats: int) -> float:
    """Sustained float32 GFLOP/s of ``torch.mm`` on two n x n matrices (median of ``repeats`` after a warm-up)."""
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=gen), torch.randn(n, n, generator=gen)
    out = torch.empty(n, n)
    seconds = time_round_robin({"mm": lambda: torch.mm(a, b, out=out)}, {"mm": repeats})["mm"]
    return 2 * n**3 / seconds / 1e9


def forward_only(model: nn.Module, u: Tensor, **kwargs: Any) -> Callable[[], None]:
    """The forward pass without autograd."""

    def forward() -> None:
        with torch.no_grad():
            model(u, **kwargs)

    return forward


# --------------------------------------------------------------------------------------------------
# The peer package's S5 layer in the same stack
# --------------------------------------------------------------------------------------------------


class PeerStack(nn.Module):
    """encoder -> n_layers x [s5.S5 -> ELU(eta + b) -> + v] -> decoder, as ``DeepWiener`` with identity skips."""

    def __init__(self, s5_layer: type[nn.Module], d_model: int, d_state: int, n_layers: int) -> None:
        super().__init__()
        self.encoder = nn.Linear(1, d_model)
        self.layers = nn.ModuleList(s5_layer(d_model, state_width=d_state) for _ in range(n_layers))
        self.biases = nn.ParameterList(nn.Parameter(torch.zeros(d_model)) for _ in range(n_layers))
        self.decoder = nn.Linear(d_model, 1)

    def forward(self, u: Tensor) -> tuple[Tensor, None]:
        v = self.encoder(u)
        for layer, bias in zip(self.layers, self.biases, strict=True):
            v = nn.functional.elu(layer(v) + bias) + v
        return self.decoder(v), None


def peer_layer() -> tuple[type[nn.Module] | None, str]:
    """The peer's S5 layer class and a note (its version, or why it is missing)."""
    try:
        from importlib.metadata import version

        from s5 import S5
    except ImportError as exc:
        return None, f"not installed ({exc}); pip install --no-deps s5-pytorch"
    return S5, f"s5-pytorch {version('s5-pytorch')} (S5 layer, its associative scan, P = d_state states)"


# --------------------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------------------


def training_case(config: dict[str, Any], batch: int, steps: int, sizes: Sizes, peer: type[nn.Module] | None
                  ) -> dict[str, Any]:
    """Forward+backward and forward-only time of every engine (and the peer) on one model and batch."""
    gen = torch.Generator().manual_seed(0)
    u = torch.randn(batch, steps, 1, generator=gen)
    target = torch.randn(batch, steps, 1, generator=gen)
    model = DeepWiener(1, 1, **config)
    optimizer = adam(model)
    calls_train = {e: train_step(model, u, target, optimizer, mode=e) for e in ENGINES}
    calls_fwd = {e: forward_only(model, u, mode=e) for e in ENGINES}
    loop_steps = min(steps, sizes.loop_train_prefix)  # the loop is linear in T: timed on a prefix, scaled
    calls_train["loop"] = train_step(model, u[:, :loop_steps], target[:, :loop_steps], optimizer, mode="loop")
    calls_fwd["loop"] = forward_only(model, u[:, :loop_steps], mode="loop")
    if peer is not None:
        stack = PeerStack(peer, config["d_model"], config["d_state"], config["n_layers"])
        calls_train[PEER], calls_fwd[PEER] = train_step(stack, u, target, adam(stack)), forward_only(stack, u)
    repeats = {name: sizes.loop_repeats if name == "loop" else sizes.repeats for name in calls_train}
    train = time_round_robin(calls_train, repeats)
    fwd = time_round_robin(calls_fwd, repeats)
    train["loop"] *= steps / loop_steps
    fwd["loop"] *= steps / loop_steps
    system = model.blocks[0].lti.discretize()
    flops = stack_flops(config, batch * steps)
    auto = "fused" if deepwiener_fused.applies(model, "auto", "cpu") else resolve_mode(system, "cpu", "auto")
    return {"config": config, "batch": batch, "steps": steps, "auto": auto, "loop_measured_on": loop_steps,
            "train_s": train, "forward_s": fwd,
            "train_speedup": {k: train["loop"] / v for k, v in train.items()},
            "forward_speedup": {k: fwd["loop"] / v for k, v in fwd.items()},
            "flops": {"forward": flops, "train": 3 * flops},
            "train_gflops": {k: 3 * flops / v / 1e9 for k, v in train.items()},
            "forward_gflops": {k: flops / v / 1e9 for k, v in fwd.items()}}


def lfr_case(batch: int, steps: int, sizes: Sizes) -> dict[str, Any]:
    """Forward+backward and forward-only time of the LFR model's two engines on one batch."""
    gen = torch.Generator().manual_seed(0)
    u = torch.randn(batch, steps, 1, generator=gen)
    target = torch.randn(batch, steps, 1, generator=gen)
    model = LFRModel(1, 1, **LFR)
    optimizer = adam(model)
    engines = ("loop", "compiled")
    repeats = {"loop": sizes.loop_repeats, "compiled": sizes.repeats}
    train = time_round_robin({e: train_step(model, u, target, optimizer, mode=e) for e in engines}, repeats)
    fwd = time_round_robin({e: forward_only(model, u, mode=e) for e in engines}, repeats)
    return {"config": LFR, "batch": batch, "steps": steps, "auto": model.engine("auto", "cpu"),
            "train_s": train, "forward_s": fwd,
            "train_speedup": {k: train["loop"] / v for k, v in train.items()},
            "forward_speedup": {k: fwd["loop"] / v for k, v in fwd.items()}}


def simulation_case(sizes: Sizes, peer: type[nn.Module] | None) -> dict[str, Any]:
    """Forward-only simulation of the paper model over ``sizes.simulation`` samples, batch 1."""
    model = DeepWiener(1, 1, **PAPER)
    u = torch.randn(1, sizes.simulation, 1, generator=torch.Generator().manual_seed(0))
    streamer = model.fast_stepper()
    u_np = u[0].numpy()
    calls = {e: forward_only(model, u, mode=e) for e in ENGINES if e != "loop"}
    calls["fast_stepper.run"] = lambda: (streamer.reset(), streamer.run(u_np))
    if peer is not None:
        calls[PEER] = forward_only(PeerStack(peer, PAPER["d_model"], PAPER["d_state"], PAPER["n_layers"]), u)
    times = time_round_robin(calls, dict.fromkeys(calls, max(1, sizes.repeats - 2)))
    prefix = u[:, : sizes.loop_prefix]
    loop = time_round_robin({"loop": forward_only(model, prefix, mode="loop")}, {"loop": sizes.loop_repeats})
    times = {"loop": loop["loop"] * sizes.simulation / sizes.loop_prefix, **times}
    return {"samples": sizes.simulation, "loop_measured_on": sizes.loop_prefix, "seconds": times,
            "speedup": {k: times["loop"] / v for k, v in times.items()}}


def freerun_case(sizes: Sizes) -> dict[str, Any]:
    """Forward-only simulation of the paper model over ``sizes.free_run`` samples, batch 1: scan, compiled, fused."""
    model = DeepWiener(1, 1, **PAPER)
    u = torch.randn(1, sizes.free_run, 1, generator=torch.Generator().manual_seed(0))
    engines = ("scan", "compiled", "fused")
    times = time_round_robin({e: forward_only(model, u, mode=e) for e in engines},
                             dict.fromkeys(engines, 4 * sizes.repeats + 1))
    return {"samples": sizes.free_run, "seconds": times, "vs_scan": {k: times["scan"] / v for k, v in times.items()}}


COLD_START = """
import json, sys, time
start = time.perf_counter()
import torch
from deepwiener.models import DeepWiener
imported = time.perf_counter()
model = DeepWiener(1, 1, **json.loads(sys.argv[1]))
u, target = torch.randn(30, 512, 1), torch.randn(30, 512, 1)
seconds = []
for _ in range(3):
    t = time.perf_counter()
    y, _ = model(u, mode="fused")
    torch.mean((y - target) ** 2).backward()
    seconds.append(time.perf_counter() - t)
print(json.dumps({"import_s": imported - start, "steps_s": seconds}))
"""


def coldstart_case(sizes: Sizes) -> dict[str, Any]:
    """First-call latency of the fused kernels in a fresh process: cold (an empty numba cache directory) and warm
    (the same directory, filled by the cold run)."""
    runs = {}
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        for name in ("cold", "warm"):
            out = subprocess.run([sys.executable, "-c", COLD_START, json.dumps(PAPER)], env=env, check=True,
                                 capture_output=True, text=True).stdout
            runs[name] = json.loads(out.splitlines()[-1])
    return {"model": "paper, batch 30 x 512, forward + backward", **runs,
            "first_call_s": {k: v["steps_s"][0] for k, v in runs.items()}}


TIMING_C = """#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "model.h"

static int by_value(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Reads n samples of u from stdin, then steps the model over them `repeats` times from the zero state;
   prints the median microseconds per sample and a checksum of y (so that the loop is not optimised away). */
int main(int argc, char **argv)
{
    long n = atol(argv[1]), repeats = atol(argv[2]), k, r;
    model_real *u = malloc(sizeof(model_real) * n * MODEL_N_U), y[MODEL_N_Y];
    double *times = malloc(sizeof(double) * repeats), sum = 0, value;
    model_state state;
    struct timespec t0, t1;
    for (k = 0; k < n * MODEL_N_U; ++k) {
        if (scanf("%lf", &value) != 1) return 1;
        u[k] = (model_real)value;
    }
    for (r = 0; r < repeats; ++r) {
        model_reset(&state);
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (k = 0; k < n; ++k) {
            model_step(&state, u + k * MODEL_N_U, y);
            sum += y[0];
        }
        clock_gettime(CLOCK_MONOTONIC, &t1);
        times[r] = ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / 1e3 / n;
    }
    qsort(times, repeats, sizeof(double), by_value);
    printf("%.6f %.17g\\n", times[repeats / 2], sum);
    return 0;
}
"""


def c_step_us(model: Model, u: np.ndarray, precision: str, sizes: Sizes, workdir: Path) -> float:
    """Median microseconds per sample of the exported C step (``cc -O2``) over ``u`` (cycled to sizes.stream_c)."""
    folder = dw.export_c(model, workdir / precision, precision=precision, name="model", force=True)
    (workdir / "timing.c").write_text(TIMING_C)
    program = workdir / f"timing_{precision}"
    subprocess.run(["cc", "-O2", "-std=c99", "-I", str(folder), "-o", str(program), str(folder / "model.c"),
                    str(workdir / "timing.c"), "-lm"], check=True)
    samples = np.resize(u, (sizes.stream_c, u.shape[1]))
    text = "\n".join(" ".join(f"{v:.17g}" for v in row) for row in samples)
    out = subprocess.run([str(program), str(sizes.stream_c), str(sizes.repeats)], input=text, capture_output=True,
                         text=True, check=True).stdout
    return float(out.split()[0])


def onnx_step_us(model: Model, u: np.ndarray, sizes: Sizes, workdir: Path) -> float:
    """Median microseconds per sample of the exported ONNX step run by onnxruntime (session.run per sample)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(dw.export_onnx(model, workdir / "model.onnx", force=True)), options,
                                   providers=["CPUExecutionProvider"])
    u32 = np.resize(u, (sizes.stream_onnx, u.shape[1])).astype(np.float32)
    zero = np.zeros(session.get_inputs()[1].shape, np.float32)

    def run() -> None:
        state = zero
        for u_k in u32:
            _, state = session.run(None, {"u": u_k, "state": state})

    return time_round_robin({"onnx": run}, {"onnx": sizes.repeats})["onnx"] / sizes.stream_onnx * 1e6


def streaming_model(model: Model, u: np.ndarray, sizes: Sizes, workdir: Path, torch_stepper: bool) -> dict[str, Any]:
    """Microseconds per sample of one model stepped one sample at a time: exported C, onnxruntime, fast_stepper
    (and ``model.stepper()``)."""
    model = model.eval()
    streamer = model.fast_stepper()
    stepper = model.stepper()
    u_torch = torch.from_numpy(u).to(model.dtype)
    n_fast = sizes.stream_torch if isinstance(streamer, TorchStreamer) else sizes.stream_fast  # not compiled: slow

    def fast() -> None:
        streamer.reset()
        for k in range(n_fast):
            streamer.step(u[k % len(u)])

    @torch.no_grad()
    def reference() -> None:
        state = stepper.init_state(1)
        for k in range(sizes.stream_torch):
            _, state = stepper.step(u_torch[k % len(u) : k % len(u) + 1], state)

    calls = {"fast": fast, "torch": reference} if torch_stepper else {"fast": fast}
    times = time_round_robin(calls, dict.fromkeys(calls, sizes.repeats))
    per_sample = {"C -O2 (double)": c_step_us(model, u, "double", sizes, workdir),
                  "C -O2 (float)": c_step_us(model, u, "float", sizes, workdir),
                  "onnxruntime": onnx_step_us(model, u, sizes, workdir),
                  "fast_stepper.step": times["fast"] / n_fast * 1e6}
    if torch_stepper:
        per_sample["model.stepper().step"] = times["torch"] / sizes.stream_torch * 1e6
    return {"streamer": type(streamer).__name__, "us_per_sample": per_sample}


def streaming_case(sizes: Sizes) -> dict[str, Any]:
    """Microseconds per sample when stepping the paper model and the Silverbox headline one sample at a time."""
    import onnxruntime

    rng = np.random.default_rng(0)
    n = max(sizes.stream_fast, sizes.stream_torch)
    extra = read_info(SILVERBOX_HEADLINE)["extra"]
    low, high = np.array(extra["u_low"]), np.array(extra["u_high"])
    cases = {"paper": (DeepWiener(1, 1, **PAPER), rng.normal(size=(n, 1)), True),
             "silverbox headline": (dw.load(SILVERBOX_HEADLINE), low + (high - low) * rng.random((n, low.size)),
                                    False)}
    if shutil.which("cc") is None:
        raise SystemExit("the streaming case needs the C compiler cc")
    with tempfile.TemporaryDirectory() as tmp:
        result = {name: streaming_model(model, u, sizes, Path(tmp) / name.replace(" ", "_"), torch_stepper)
                  for name, (model, u, torch_stepper) in cases.items()}
    cc = subprocess.run(["cc", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    result["silverbox headline"]["model"] = f"{SILVERBOX_HEADLINE.relative_to(HERE.parents[1])} (kind " \
                                            f"{read_info(SILVERBOX_HEADLINE)['kind']})"
    return {**result, "cc": cc, "onnxruntime": onnxruntime.__version__,
            "speedup": result["paper"]["us_per_sample"]["model.stepper().step"]
            / result["paper"]["us_per_sample"]["fast_stepper.step"]}


def bandwidth_case(batch: int, steps: int, sizes: Sizes) -> dict[str, Any]:
    """The wide model's forward scan (block 0's recurrence on its real input) against the copy bounds.

    Copy bandwidth = 2 * bytes / time of copying a ``sizes.copy_mb`` MB float32 tensor (read + write), into a
    preallocated tensor (the bound) and into a fresh one (clone: also pays the page faults of its new output,
    as the scan does).
    """
    model = DeepWiener(1, 1, **WIDE)
    u = torch.randn(batch, steps, 1, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        system = model.blocks[0].lti.discretize()
        bu = system.drive(model.encoder(model.normalize_input(u))).contiguous()  # (b, T, n) complex64
    x0 = torch.zeros(batch, bu.shape[-1], dtype=bu.dtype)
    n_bytes = 2 * bu.element_size() * bu.numel()  # read bu + write X
    src = torch.randn(sizes.copy_mb * 2**18)  # copy_mb MB of float32
    dst = torch.empty_like(src)
    src_np, dst_np = src.numpy(), dst.numpy()
    copy_bytes = 2 * src.element_size() * src.numel()
    copies: dict[str, Callable[[], object]] = {
        "torch copy_ (preallocated)": lambda: dst.copy_(src),
        "numpy copyto (preallocated)": lambda: np.copyto(dst_np, src_np),
        "torch clone (allocating)": src.clone,
    }
    scans: dict[str, Callable[[], object]] = {
        "compiled scan": lambda: compiled.diagonal_recurrence(system.lam, bu, x0),
        "scan engine (torch)": lambda: diagonal_recurrence_scan(system.lam, bu, x0),
    }
    with torch.no_grad():
        times = time_round_robin(copies | scans, dict.fromkeys(copies | scans, 2 * sizes.repeats + 1))
    bandwidth = {k: copy_bytes / times[k] / 1e9 for k in copies}
    bound = n_bytes / (max(bandwidth[k] for k in copies if "preallocated" in k) * 1e9)
    bound_alloc = n_bytes / (bandwidth["torch clone (allocating)"] * 1e9)
    return {"shape": list(bu.shape), "dtype": str(bu.dtype), "bytes": n_bytes, "copy_bytes": copy_bytes,
            "formula": "bytes = 2 * 8 * batch * T * n (read bu, write X; complex64); bound = bytes / copy bandwidth",
            "copy_GBps": bandwidth, "scan_s": {k: times[k] for k in scans}, "bound_s": bound,
            "bound_allocating_s": bound_alloc, "ratio_to_bound": {k: times[k] / bound for k in scans},
            "ratio_to_allocating_bound": {k: times[k] / bound_alloc for k in scans}}


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """What the numbers were measured on, and under which load."""
    import numba

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {"platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "numpy": np.__version__,
            "numba": numba.__version__, "numba_threading_layer": numba.threading_layer(),
            "python": platform.python_version(), "env": {k: os.environ.get(k) for k in ENV_VARS}}


def _measured(case: dict[str, Any]) -> str:
    """The provenance line of a case measured on its own (``--only``), else an empty line."""
    m = case.get("measured")
    if not m:
        return ""
    return (f"Measured on its own (`--only`) at commit {m['commit']}, load average {m['load_average']['start']} at "
            f"start, {m['load_average']['end']} at end.\n")


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _training_table(name: str, case: dict[str, Any], floor: float) -> list[str]:
    b, t = case["batch"], case["steps"]
    lines = [f"### {name}: batch {b} x {t} (auto -> {case['auto']})", "", _measured(case),
             f"{case['flops']['train'] / 1e6:,.1f} MFLOP per training step, {case['flops']['forward'] / 1e6:,.1f} per "
             f"forward; floor {floor:.0f} GFLOP/s (float32 matrix multiply, the run's).", "",
             _row(["engine", "step vs loop", "step [ms]", "step GFLOP/s", "of floor", "forward vs loop",
                   "forward [ms]"]),
             "|---|---:|---:|---:|---:|---:|---:|"]
    for k in case["train_s"]:
        gf = case["train_gflops"][k]
        scaled = case.get("loop_measured_on", t) < t and k == "loop"
        lines.append(_row([k + (f" (timed on T = {case['loop_measured_on']}, scaled)" if scaled else ""),
                           f"{case['train_speedup'][k]:.1f}x", f"{case['train_s'][k] * 1e3:.1f}", f"{gf:.2f}",
                           f"{gf / floor:.3f}", f"{case['forward_speedup'][k]:.1f}x",
                           f"{case['forward_s'][k] * 1e3:.1f}"]))
    return [*lines, ""]


def floor_gflops(result: dict[str, Any]) -> float:
    """The run's matrix-multiply floor: the faster of its two measurements."""
    return max(result["floor"]["gflops"].values())


def targets(result: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """(target, measured, met) for each target of the issues (the speed issue, then issue 22)."""
    paper, wide = result["paper"]["train_speedup"], result["wide"]["train_speedup"]
    best_paper = max((k for k in paper if k in ENGINES[1:]), key=paper.get)
    best_wide = max((k for k in wide if k in ENGINES[1:]), key=wide.get)
    ratio = result["bandwidth"]["ratio_to_bound"]["compiled scan"]
    ratio_alloc = result["bandwidth"]["ratio_to_allocating_bound"]["compiled scan"]
    us = result["streaming"]["paper"]["us_per_sample"]["fast_stepper.step"]
    return [("paper fwd+bwd >= 20x loop", f"{paper[best_paper]:.1f}x ({best_paper})", paper[best_paper] >= 20),
            ("wide fwd+bwd >= 10x loop", f"{wide[best_wide]:.1f}x ({best_wide})", wide[best_wide] >= 10),
            ("wide forward scan <= 3x bandwidth bound", f"{ratio:.2f}x (compiled)", ratio <= 3),
            ("... bound with a fresh output (clone)", f"{ratio_alloc:.2f}x (compiled)", ratio_alloc <= 3),
            ("streaming <= 50 us/sample (paper model)", f"{us:.1f} us", us <= 50), *issue22(result)]


def issue22(result: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """The ratios of issue 22 (fused kernels), each measured in this process (None: a number without a target)."""
    paper = result["paper"]["train_s"]["scan"] / result["paper"]["train_s"]["fused"]
    free = result["freerun"]["vs_scan"]["fused"]
    floor = floor_gflops(result)
    wide = result["wide"]["train_gflops"]["fused"] / floor
    us = result["streaming"]["paper"]["us_per_sample"]["fast_stepper.step"]
    cold = result["coldstart"]["first_call_s"]
    return [("paper training step: fused >= 6x scan", f"{paper:.1f}x", paper >= 6),
            (f"free run {result['freerun']['samples']:,} samples, batch 1: fused >= 5x scan", f"{free:.1f}x",
             free >= 5),
            ("wide training step: fused >= 0.5 x matmul GFLOP/s",
             f"{wide:.2f} ({result['wide']['train_gflops']['fused']:.1f} of {floor:.0f} GFLOP/s)", wide >= 0.5),
            ("streaming <= 2 us/sample (paper model)", f"{us:.2f} us", us <= 2),
            ("first fused call, cold / warm numba cache (reported)", f"{cold['cold']:.1f} s / {cold['warm']:.2f} s",
             None)]


def markdown(result: dict[str, Any]) -> str:
    """results.md: ratios first, absolute times as context, then the machine."""
    m = result["machine"]
    lines = ["## Speed", "",
             f"Commit {result['commit']}; {m['cpu']}, {m['cpu_count']} cores, {m['torch_threads']} torch threads, "
             f"numba {m['numba']} ({m['numba_threading_layer']} layer), torch {m['torch']}; load average "
             f"{result['load_average']['start']} at start, {result['load_average']['end']} at end; "
             f"env {m['env']}. Medians of round-robin repeats; ratios are loop time / engine time in one process. "
             f"Training steps include a plain Adam step. Matrix-multiply floor (float32, n = "
             f"{result['floor']['n']}, measured by the latest run, at commit {result['floor']['commit']}): "
             f"{result['floor']['gflops']['start']:.0f} GFLOP/s at its start, {result['floor']['gflops']['end']:.0f} "
             "at its end. Cases measured on their own (`--only`) say so.",
             "", "### Targets", "", _row(["target", "measured", "met"]), "|---|---|---|"]
    lines += [_row([t, v, "-" if ok is None else "yes" if ok else "**no**"]) for t, v, ok in targets(result)]
    floor = floor_gflops(result)
    lines += ["", *_training_table("Paper model (LRU 4 x 3 channels x 6 states, ELU)", result["paper"], floor),
              *_training_table("Wide model (LRU 4 x 64 channels x 64 states, ELU)", result["wide"], floor),
              *_lfr_table(result["lfr"])]
    free = result["freerun"]
    lines += [f"### Free run: paper model, {free['samples']:,} samples, batch 1, forward only", "", _measured(free),
              _row(["engine", "vs scan", "time [ms]"]), "|---|---:|---:|"]
    lines += [_row([k, f"{free['vs_scan'][k]:.1f}x", f"{v * 1e3:.2f}"]) for k, v in free["seconds"].items()]
    cold = result["coldstart"]
    lines += ["", f"### First call of the fused kernels ({cold['model']}), fresh processes", "", _measured(cold),
              _row(["numba cache", "import [s]", "1st step [s]", "2nd step [s]", "3rd step [s]"]),
              "|---|---:|---:|---:|---:|"]
    lines += [_row([k, f"{cold[k]['import_s']:.2f}", *(f"{x:.3f}" for x in cold[k]["steps_s"])])
              for k in ("cold", "warm")]
    lines += [""]
    sim = result["simulation"]
    lines += [f"### Simulation: paper model, {sim['samples']:,} samples, batch 1, forward only", "",
              _row(["engine", "vs loop", "time [s]"]), "|---|---:|---:|"]
    for k, v in sim["seconds"].items():
        note = f" (timed on {sim['loop_measured_on']:,} samples, scaled)" if k == "loop" else ""
        lines.append(_row([k + note, f"{sim['speedup'][k]:.1f}x", f"{v:.2f}"]))
    st = result["streaming"]
    models = [k for k in st if isinstance(st[k], dict) and "us_per_sample" in st[k]]
    lines += ["", "### Streaming: one sample per call, batch 1", "", _measured(st),
              f"Exported C compiled with {st['cc']} -O2; onnxruntime {st['onnxruntime']} (one thread, session.run "
              f"per sample); the Silverbox headline is {st['silverbox headline']['model']}.", "",
              _row(["stepper", *[f"{m} [us / sample]" for m in models]]), "|---|" + "---:|" * len(models)]
    for stepper in st["paper"]["us_per_sample"]:
        lines.append(_row([stepper, *[f"{st[m]['us_per_sample'][stepper]:.2f}" if stepper in st[m]["us_per_sample"]
                                      else "-" for m in models]]))
    lines += ["", "fast_stepper: " + ", ".join(f"{st[m]['streamer']} ({m})" for m in models) + f"; on the paper "
              f"model it is {st['speedup']:.0f}x faster than model.stepper().", ""]
    bw = result["bandwidth"]
    lines += [f"### Memory-bandwidth bound: wide model's forward scan, one block, {tuple(bw['shape'])} {bw['dtype']}",
              "", f"{bw['formula']} = {bw['bytes'] / 1e6:.1f} MB. Copy bandwidth = 2 x {bw['copy_bytes'] / 2e6:.0f} MB "
              "/ time of one copy:", "", _row(["copy", "GB/s"]), "|---|---:|"]
    lines += [_row([k, f"{v:.1f}"]) for k, v in bw["copy_GBps"].items()]
    lines += ["", f"Bound: {bw['bound_s'] * 1e3:.2f} ms (best preallocated copy); "
              f"{bw['bound_allocating_s'] * 1e3:.2f} ms with a fresh output (clone).", "",
              _row(["forward scan", "time [ms]", "vs bound", "vs bound with fresh output"]), "|---|---:|---:|---:|"]
    ratios, ratios_alloc = bw["ratio_to_bound"], bw["ratio_to_allocating_bound"]
    lines += [_row([k, f"{v * 1e3:.2f}", f"{ratios[k]:.2f}x", f"{ratios_alloc[k]:.2f}x"])
              for k, v in bw["scan_s"].items()]
    lines += ["", f"Peer: {result['peer']}.", ""]
    return "\n".join(lines)


def _lfr_table(case: dict[str, Any]) -> list[str]:
    """The LFR case's table (no FLOP count: its map is not a deep Wiener stack)."""
    b, t = case["batch"], case["steps"]
    lines = [f"### LFR model (8 states, 16-channel perceptron in the loop): batch {b} x {t} (auto -> "
             f"{case['auto']})", "", _row(["engine", "step vs loop", "step [ms]", "forward vs loop", "forward [ms]"]),
             "|---|---:|---:|---:|---:|"]
    for k in case["train_s"]:
        lines.append(_row([k, f"{case['train_speedup'][k]:.1f}x", f"{case['train_s'][k] * 1e3:.1f}",
                           f"{case['forward_speedup'][k]:.1f}x", f"{case['forward_s'][k] * 1e3:.1f}"]))
    return [*lines, ""]


CASES: dict[str, Callable[[Sizes, type[nn.Module] | None], dict[str, Any]]] = {
    "streaming": lambda sizes, peer: streaming_case(sizes),
    "paper": lambda sizes, peer: training_case(PAPER, *sizes.paper, sizes, peer),
    "wide": lambda sizes, peer: training_case(WIDE, *sizes.wide, sizes, peer),
    "lfr": lambda sizes, peer: lfr_case(*sizes.lfr, sizes),
    "simulation": simulation_case,
    "bandwidth": lambda sizes, peer: bandwidth_case(*sizes.wide, sizes),
    "freerun": lambda sizes, peer: freerun_case(sizes),
    "coldstart": lambda sizes, peer: coldstart_case(sizes),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, to check the script")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: benchmarks/results/speed)")
    parser.add_argument("--only", nargs="+", choices=list(CASES), default=None,
                        help="run these cases and merge them into the existing results.json")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    sizes = QUICK if args.quick else Sizes()
    out = args.out or RESULTS / ("speed-quick" if args.quick else "speed")
    if not (compiled.available() and feedback.available() and fused.available()):
        raise SystemExit("the compiled engines are unavailable: pip install 'deepwiener[fast]'")
    peer, peer_note = peer_layer()
    if args.only:
        result = json.loads((out / "results.json").read_text())
    else:
        result = {"commit": git_commit(), "peer": peer_note, "sizes": dataclasses.asdict(sizes)}
    load_start = os.getloadavg()
    floor_start = matmul_gflops(sizes.floor_n, sizes.repeats)
    for name in args.only or CASES:
        start, case_load = time.perf_counter(), os.getloadavg()
        result[name] = CASES[name](sizes, peer)
        if args.only:
            result[name]["measured"] = {"commit": git_commit(), "sizes": dataclasses.asdict(sizes), "load_average": {
                "start": [round(x, 2) for x in case_load], "end": [round(x, 2) for x in os.getloadavg()]}}
        print(f"{name}: done in {time.perf_counter() - start:.0f} s", flush=True)
    result["floor"] = {"n": sizes.floor_n, "commit": git_commit(),
                       "gflops": {"start": floor_start, "end": matmul_gflops(sizes.floor_n, sizes.repeats)}}
    if not args.only:
        result["load_average"] = {"start": [round(x, 2) for x in load_start],
                                  "end": [round(x, 2) for x in os.getloadavg()]}
        result["machine"] = machine()
    result["targets"] = [{"target": t, "measured": v, "met": ok} for t, v, ok in targets(result)]
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    text = markdown(result)
    (out / "results.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
