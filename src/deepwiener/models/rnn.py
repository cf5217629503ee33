"""Recurrent-network models (LSTM, GRU): the model kind "rnn", built as its variants "lstm" and "gru".

A black-box simulation model, recurrent over the input sequence::

    u_n[k]  = (u[k] - u_mean) / u_std                     normalised input, (batch, n_u)
    h[k]    = cell(u_n[k], h[k-1])                        n_layers stacked LSTM or GRU cells, width hidden
    y[k]    = y_mean + y_std * (W h_top[k] + b)           linear read-out of the top layer's hidden state

The state is ``(h,)`` for a GRU and ``(h, c)`` for an LSTM, each (batch, n_layers, hidden) (batch first, like
every state in the toolkit). ``fit``, ``evaluate``, ``simulate`` and streaming work as for every kind
(:class:`~deepwiener.models.base.Model`); the ``mode`` argument is accepted and ignored (cuDNN/ATen run the
recurrence). All parameters are "other" parameters for ``fit`` (no SSM group).

References: Hochreiter and Schmidhuber, "Long short-term memory", 1997; Cho et al., "Learning phrase
representations using RNN encoder-decoder", 2014 (GRU).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch
from torch import Tensor, nn

from deepwiener.errors import check_positive_ints, unknown_name
from deepwiener.models.base import Model
from deepwiener.options import DictConfig, check_sampling_time
from deepwiener.stepgraph import StepGraph

CELLS: dict[str, type[nn.LSTM] | type[nn.GRU]] = {"lstm": nn.LSTM, "gru": nn.GRU}

RNNState = tuple[Tensor, ...]


@dataclasses.dataclass(frozen=True)
class RNNConfig(DictConfig):
    """Everything that determines an ``RNNModel``.

    Attributes:
        n_u, n_y: numbers of inputs and outputs.
        cell: "lstm" or "gru".
        hidden: width of each recurrent layer.
        n_layers: number of stacked recurrent layers.
        seed: seed of the parameter initialisation.
        dt: sampling time of the data in seconds (set by ``fit``).
        kind: the model kind, "rnn" (a class constant, not a field); it is built as "lstm" or "gru" (its cell).
    """

    kind: ClassVar[str] = "rnn"

    n_u: int
    n_y: int
    cell: str = "lstm"
    hidden: int = 32
    n_layers: int = 1
    seed: int = 0
    dt: float = 1.0

    def __post_init__(self) -> None:
        check_positive_ints(n_u=self.n_u, n_y=self.n_y, hidden=self.hidden, n_layers=self.n_layers)
        if self.cell not in CELLS:
            raise unknown_name("cell", self.cell, CELLS)
        check_sampling_time(self.dt)


class RNNModel(Model):
    """An LSTM or GRU simulation model for n_u inputs and n_y outputs, in physical units.

    Args:
        n_u, n_y, cell, hidden, n_layers, seed, dt: the fields of :class:`RNNConfig`.
    """

    config_class = RNNConfig
    variants = {cell: {"cell": cell} for cell in CELLS}

    def __init__(
        self, n_u: int, n_y: int, cell: str = "lstm", hidden: int = 32, n_layers: int = 1, seed: int = 0,
        dt: float = 1.0,
    ) -> None:
        super().__init__()
        self.config = RNNConfig(n_u=n_u, n_y=n_y, cell=cell, hidden=hidden, n_layers=n_layers, seed=seed, dt=dt)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.rnn = CELLS[cell](n_u, hidden, num_layers=n_layers, batch_first=True)
            self.readout = nn.Linear(hidden, n_y)
        self.register_scaler()

    def init_state(self, batch: int) -> RNNState:
        """Zero state: ``(h,)`` (GRU) or ``(h, c)`` (LSTM), each (batch, n_layers, hidden)."""
        zero = self.u_mean.new_zeros(batch, self.config.n_layers, self.config.hidden)
        return (zero, zero.clone()) if self.config.cell == "lstm" else (zero,)

    def export_step(self, graph: StepGraph, u: str) -> str:
        """The step as real operations (``Model.export_step``, torch's LSTM and GRU cell equations); the state is
        h of every layer, then (LSTM) c of every layer, each (hidden,)."""
        cfg = self.config
        parts = ("h", "c") if cfg.cell == "lstm" else ("h",)
        states = {(part, layer): graph.state(cfg.hidden, f"{cfg.cell.upper()} {part} of layer {layer}", hint=part)
                  for part in parts for layer in range(cfg.n_layers)}
        x = self.export_input(graph, u)
        for layer in range(cfg.n_layers):
            with graph.scope(f"layer{layer}"):
                x = self._export_cell(graph, x, layer, states)
        return self.export_output(graph, graph.affine([(self.readout.weight, x)], self.readout.bias, hint="y_n"))

    def _export_cell(self, graph: StepGraph, x: str, layer: int, states: dict[tuple[str, int], str]) -> str:
        """One layer's cell: input x (width,) -> its new h (hidden,); sets the next values of its state parts."""
        W_ih, W_hh, b_ih, b_hh = (getattr(self.rnn, f"{name}_l{layer}")
                                  for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
        H = self.config.hidden
        h = states["h", layer]

        def gate(k: int, fn: str, hint: str) -> str:  # fn(W_ih x + W_hh h + b) on the k-th block of rows
            rows = slice(k * H, (k + 1) * H)
            pre = graph.affine([(W_ih[rows], x), (W_hh[rows], h)], b_ih[rows] + b_hh[rows], hint=f"{hint}_pre")
            return graph.map(fn, pre, hint=hint)

        if self.config.cell == "lstm":  # i, f, g, o; c' = f c + i g, h' = o tanh(c')
            c = states["c", layer]
            i, f, g, o = (gate(k, fn, hint) for k, (fn, hint) in enumerate(
                (("sigmoid", "i"), ("sigmoid", "f"), ("tanh", "g"), ("sigmoid", "o"))))
            c_next = graph.add(graph.mul(f, c), graph.mul(i, g))
            h_next = graph.mul(o, graph.map("tanh", c_next))
            graph.update(c, c_next)
        else:  # r, z, n; n = tanh(W_in x + b_in + r (W_hn h + b_hn)), h' = n + z (h - n)
            r, z = gate(0, "sigmoid", "r"), gate(1, "sigmoid", "z")
            recurrent = graph.affine([(W_hh[2 * H :], h)], b_hh[2 * H :], hint="n_hidden")
            n_pre = graph.add(graph.affine([(W_ih[2 * H :], x)], b_ih[2 * H :], hint="n_input"),
                              graph.mul(r, recurrent))
            n = graph.map("tanh", n_pre, hint="n")
            h_next = graph.add(n, graph.mul(z, graph.sub(h, n)))
        graph.update(h, h_next)
        return h_next

    def forward(self, u: Tensor, state: RNNState | None = None, mode: str = "auto") -> tuple[Tensor, RNNState]:
        """Simulate the model.

        Args:
            u: (batch, time, n_u) real, physical units.
            state: ``init_state``-shaped tuple; zeros if None.
            mode: accepted for interface compatibility and ignored.

        Returns:
            y: (batch, time, n_y) physical units, and the final state.
        """
        self.check_input(u)
        state = self.init_state(u.shape[0]) if state is None else state
        h0 = tuple(s.transpose(0, 1).contiguous() for s in state)  # (n_layers, b, hidden) each: torch's layout
        hidden, final = self.rnn(self.normalize_input(u), h0 if self.config.cell == "lstm" else h0[0])
        final = final if self.config.cell == "lstm" else (final,)
        return self.denormalize_output(self.readout(hidden)), tuple(s.transpose(0, 1) for s in final)

