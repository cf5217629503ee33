"""A deep Wiener stack with feedback inside each block: the extrapolation study's candidate (issue 21, item 3).

A deep Wiener block maps v -> sigma(LTI(v)) + v: its static map never feeds back into a state. Here each block is a
nonlinear feedback loop instead, an LFR block (``deepwiener.models.lfr``, normalised units, identity scaler) with an
identity skip, in a stack between a linear encoder and decoder::

    v_0 = W_enc u_n + c_enc                                                        (batch, time, width)
    v_l = v_{l-1} + LFR_l(v_{l-1})     LFR_l: x+ = A x + B v + E phi(F x + G v) + b_x, out = C x + D v + H w + b_y
    y_n = W_dec v_L + c_dec

so each block's map sits inside its loop, as a hardening spring's force does. Every block runs on the compiled
LFR kernel (the perceptron map, CPU) or the torch loop.

Linear start (``init = "linear"``): block 1 starts as the best linear model of the data (the LFR kind's own start:
N4SID, order chosen on validation, whitened states, the feedback off) reading channel 0 of v_0 = (u_n, 0, ..., 0)
and writing channel 1, the later blocks start as their skip (C, D, H, b_y = 0: the identity), and the decoder reads
channel 1; so the stack's output starts as the linear model's.

This model lives with the study, not in ``deepwiener.models``, until it earns a place there: it has no model-file
form, export or streaming of its own (``Model``'s defaults simulate it sample by sample).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn

from deepwiener.data import IOData, ValidationRecord
from deepwiener.identification import LinearStateSpace
from deepwiener.models import LFRModel, Model
from deepwiener.options import DictConfig


@dataclasses.dataclass(frozen=True)
class FeedbackStackConfig(DictConfig):
    """The stack's architecture: ``n_blocks`` LFR blocks of ``n_x`` states and ``n_w`` map channels on ``width``
    channels (>= 2: the linear start uses channels 0 and 1)."""

    kind: ClassVar[str] = "feedback_stack"

    n_u: int
    n_y: int
    width: int = 4
    n_blocks: int = 2
    n_x: int = 8
    n_w: int = 16
    seed: int = 0
    dt: float = 1.0


class FeedbackStack(Model):
    """The stack of the module docstring, for n_u inputs and n_y outputs, physical units."""

    config_class = FeedbackStackConfig
    title = "feedback stack"

    def __init__(self, n_u: int, n_y: int, width: int = 4, n_blocks: int = 2, n_x: int = 8, n_w: int = 16,
                 seed: int = 0, dt: float = 1.0) -> None:
        super().__init__()
        self.config = FeedbackStackConfig(n_u, n_y, width, n_blocks, n_x, n_w, seed, dt)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.encoder = nn.Linear(n_u, width)
            self.blocks = nn.ModuleList(LFRModel(width, width, n_x, n_w, "mlp", seed=seed + 1 + i)
                                        for i in range(n_blocks))
            self.decoder = nn.Linear(width, n_y)
        self.register_scaler()

    def init_state(self, batch: int) -> tuple[Tensor, ...]:
        """Zero state: one (batch, n_x) state per block."""
        return tuple(block.init_state(batch)[0] for block in self.blocks)

    def forward(self, u: Tensor, state: tuple[Tensor, ...] | None = None,
                mode: str = "auto") -> tuple[Tensor, tuple[Tensor, ...]]:
        """u: (batch, time, n_u) physical -> (y (batch, time, n_y) physical, final states)."""
        self.check_input(u)
        states = self.init_state(u.shape[0]) if state is None else state
        v = self.encoder(self.normalize_input(u))
        finals = []
        for block, x0 in zip(self.blocks, states, strict=True):
            out, (x,) = block(v, (x0,), "loop" if mode in ("scan", "fft", "fused") else mode)
            v = v + out
            finals.append(x)
        return self.denormalize_output(self.decoder(v)), tuple(finals)

    def check_linear_start(self) -> None:
        """Every stack can start as a linear model (module docstring)."""

    @torch.no_grad()
    def start_linear(self, train: Sequence[IOData], val: Sequence[ValidationRecord]) -> LinearStateSpace:
        """Start as the best linear model (module docstring); returns it."""
        cfg = self.config
        like = self.decoder.weight
        head = LFRModel(cfg.n_u, cfg.n_y, cfg.n_x, cfg.n_w, "mlp").to(like)
        head.set_scaler(self.u_mean, self.u_std, self.y_mean, self.y_std)
        linear = head.start_linear(train, val)  # in the stack's normalised units: u_n -> y_n
        self.encoder.weight.zero_()
        self.encoder.bias.zero_()
        self.encoder.weight[:cfg.n_u, :cfg.n_u] = torch.eye(cfg.n_u)  # v_0 = (u_n, 0, ...)
        first = self.blocks[0]
        for name in ("A", "E", "F", "b_x"):
            getattr(first, name).copy_(getattr(head, name))
        first.phi.load_state_dict(head.phi.state_dict())
        for name in ("B", "G"):
            getattr(first, name).zero_()
            getattr(first, name)[:, :cfg.n_u] = getattr(head, name)
        rows = slice(cfg.n_u, cfg.n_u + cfg.n_y)  # block 1 writes the linear output on the channels after u_n
        for name in ("C", "D", "H", "b_y"):
            getattr(first, name).zero_()
        first.C[rows] = head.C
        first.D[rows, :cfg.n_u] = head.D
        first.H[rows] = head.H
        first.b_y[rows] = head.b_y
        for block in self.blocks[1:]:
            for name in ("C", "D", "H", "b_y", "E"):
                getattr(block, name).zero_()
        self.decoder.weight.zero_()
        self.decoder.bias.zero_()
        self.decoder.weight[:, rows] = torch.eye(cfg.n_y)
        return linear
