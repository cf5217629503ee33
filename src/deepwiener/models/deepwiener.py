"""The deep Wiener model: encoder -> L x [LTI -> static nonlinearity -> + skip] -> decoder.

    v0 = W_enc (u - u_mean) / u_std                   static linear encoder, n_u -> d_model
    block l:  eta = LTI_l(norm(v))                    linear time-invariant layer (LRU, S5, S4D, S4)
              v  <- dropout(sigma_l(eta)) + F v       static nonlinearity plus skip (F = I by default)
    y = y_mean + y_std * W_dec v_L                    static linear decoder, d_model -> n_y

With ``integrator=True`` (plants whose output integrates, e.g. a position driven by a force) the decoder gives
the output's increments and the model sums them, ``y_k = y_{k-1} + y_mean + y_std W_dec v_L[k]`` from
``y_{-1} = 0``; the scaler then describes the increments (``fit`` sets it from the first differences of the
training output) and the running sum is one more state, kept in float64.

Each block is a Wiener system with a bypass, so the whole stack is a deep Wiener model (Bonassi et al.,
"Structured state-space models are deep Wiener models", SYSID 2024). The model owns its scaling, so
``forward``, ``step`` and ``simulate`` take and return physical units. It is the model kind "deepwiener"
(``models.base``): trained by gradient steps, started from the best linear model by
``models.deepwiener_start``, streamed by a compiled kernel (``models.deepwiener_stream``), and open to the
analyses of ``deepwiener.analysis`` (blocks, poles, certificate, reduction).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from deepwiener.data import IOData, ValidationRecord
from deepwiener.errors import ConfigError, check_positive_ints, unknown_name
from deepwiener.identification import LinearStateSpace
from deepwiener.layers import LTILayer, layer_class, make_layer
from deepwiener.models import deepwiener_fused, deepwiener_start, deepwiener_stream
from deepwiener.models.base import Model
from deepwiener.models.streamers import Streamer
from deepwiener.nonlinearities import NONLINEARITIES, Nonlinearity, make_nonlinearity
from deepwiener.options import DictConfig, check_sampling_time
from deepwiener.stepgraph import StepGraph

NORMS: tuple[str, ...] = ("none", "layer")
SKIPS: tuple[str, ...] = ("identity", "linear", "none")
ModelState = tuple[Tensor, ...]


@dataclasses.dataclass(frozen=True)
class ModelConfig(DictConfig):
    """Everything that determines the architecture of a ``DeepWiener`` model.

    Attributes:
        n_u, n_y: numbers of inputs and outputs.
        layer: linear layer name ("lru", "s5", "s4d", "s4").
        d_model: channels between blocks.
        d_state: complex modes per block (per channel for s4d/s4).
        n_layers: number of blocks.
        nonlinearity: static map name ("gelu", "elu", "tanh", "relu", "identity", "glu", "mlp",
            "poly", "linear_tanh").
        layer_options: options of the layer's Options dataclass (e.g. {"r_min": 0.9} for LRU).
        norm: "none" or "layer" (LayerNorm before each LTI layer).
        dropout: dropout probability after each nonlinearity.
        skip: "identity" (F = I), "linear" (learned F) or "none".
        integrator: sum the decoder's output over time (a pure integrator at the output; module docstring).
        dt: sampling time of the data in seconds (set by ``fit``).
        seed: seed of the parameter initialisation.
        kind: the model kind, "deepwiener" (a class constant, not a field).
    """

    kind: ClassVar[str] = "deepwiener"

    n_u: int
    n_y: int
    layer: str = "lru"
    d_model: int = 16
    d_state: int = 32
    n_layers: int = 4
    nonlinearity: str = "gelu"
    layer_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    norm: str = "none"
    dropout: float = 0.0
    skip: str = "identity"
    integrator: bool = False
    dt: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        check_positive_ints(n_u=self.n_u, n_y=self.n_y, d_model=self.d_model, d_state=self.d_state,
                            n_layers=self.n_layers)
        layer_class(self.layer)
        if self.nonlinearity not in NONLINEARITIES:
            raise unknown_name("nonlinearity", self.nonlinearity, NONLINEARITIES)
        if self.norm not in NORMS:
            raise unknown_name("norm", self.norm, NORMS)
        if self.skip not in SKIPS:
            raise unknown_name("skip", self.skip, SKIPS)
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if not isinstance(self.integrator, bool):
            raise ConfigError(f"integrator must be true or false, got {self.integrator!r}")
        check_sampling_time(self.dt)
        layer_class(self.layer).Options.from_dict(dict(self.layer_options))


class Block(nn.Module):
    """One deep-Wiener block: v -> dropout(sigma(LTI(norm(v)))) + F v, all (batch, time, d_model)."""

    def __init__(self, lti: LTILayer, sigma: Nonlinearity, norm: str, dropout: float, skip: str) -> None:
        super().__init__()
        width = lti.d_in
        self.norm = nn.LayerNorm(width) if norm == "layer" else nn.Identity()
        self.lti = lti
        self.sigma = sigma
        self.dropout = nn.Dropout(dropout)
        self.skip = nn.Linear(width, width, bias=False) if skip == "linear" else None
        self.use_skip = skip != "none"

    def bypass(self, v: Tensor) -> Tensor:
        """The skip path F v."""
        if not self.use_skip:
            return torch.zeros_like(v)
        return self.skip(v) if self.skip is not None else v

    def forward(self, v: Tensor, state: Tensor | None = None, mode: str = "auto") -> tuple[Tensor, Tensor]:
        eta, state = self.lti(self.norm(v), state, mode)
        return self.dropout(self.sigma(eta)) + self.bypass(v), state

    def export_step(self, graph: StepGraph, v: str, layer: str) -> str:
        """Add the block's one-sample step (dropout off) to a step graph: v (width,) -> the block's output; the
        layer (registered as ``layer``) declares its state.

        Raises:
            ConfigError: a layer that does not describe its step (no ``export_step``).
        """
        if not hasattr(self.lti, "export_step"):
            raise ConfigError(f"layer {layer!r} cannot be exported: {type(self.lti).__name__} does not describe its "
                              "one-sample step (export_step)")
        x = v
        if isinstance(self.norm, nn.LayerNorm):
            x = graph.layer_norm(v, self.norm.weight, self.norm.bias, self.norm.eps)
        out = self.sigma.export_step(graph, self.lti.export_step(graph, x))
        if self.skip is not None:
            return graph.add(out, graph.affine([(self.skip.weight, v)], hint="skip"))
        return graph.add(out, v) if self.use_skip else out


class DeepWiener(Model):
    """A deep Wiener model (deep structured SSM) for n_u inputs and n_y outputs, in physical units.

    Build it with keywords (``DeepWiener(n_u=1, n_y=1, layer="lru", ...)``, the fields of ``ModelConfig``)
    or from a config (``DeepWiener.from_config(cfg)``).
    """

    config_class = ModelConfig
    capabilities = frozenset({"poles", "blocks", "reduce"})
    title = "deep Wiener"

    def __init__(self, n_u: int, n_y: int, **options: Any) -> None:
        super().__init__()
        self.config = ModelConfig(n_u=n_u, n_y=n_y, **options)
        cfg = self.config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            gen = torch.Generator().manual_seed(cfg.seed)
            self.encoder = nn.Linear(cfg.n_u, cfg.d_model)
            self.blocks = nn.ModuleList(
                Block(
                    make_layer(cfg.layer, cfg.d_model, cfg.d_model, cfg.d_state, cfg.layer_options, gen),
                    make_nonlinearity(cfg.nonlinearity, cfg.d_model),
                    cfg.norm,
                    cfg.dropout,
                    cfg.skip,
                )
                for _ in range(cfg.n_layers)
            )
            self.decoder = nn.Linear(cfg.d_model, cfg.n_y)
        self.register_scaler()

    @classmethod
    def label(cls, name: str, options: Mapping[str, Any]) -> str:
        """The layer's name (e.g. "lru")."""
        return str(options["layer"])

    @classmethod
    def options_table(cls, options: Mapping[str, Any]) -> tuple[str, type]:
        """``layer_options``, validated by the options dataclass of the chosen layer."""
        return "layer_options", layer_class(options.get("layer", ModelConfig.layer)).Options

    def init_state(self, batch: int) -> ModelState:
        """Zero state: one (batch, *state_shape) complex tensor per block, then, with an integrator, the
        running output sum (batch, n_y) float64."""
        blocks = tuple(block.lti.init_state(batch) for block in self.blocks)
        return self.join_state(blocks, self.zero_sum(batch) if self.integrates_output else None)

    def forward(
        self, u: Tensor, state: ModelState | None = None, mode: str = "auto"
    ) -> tuple[Tensor, ModelState]:
        """Simulate the model.

        Args:
            u: (batch, time, n_u) real, physical units.
            state: the model's state (``init_state``); zeros if None.
            mode: simulation engine ("auto", "loop", "scan", "fft", "compiled", "fused"): "fused" runs the whole
                stack in one kernel (``models.deepwiener_fused``; "auto" takes it on the CPU where it applies),
                the others run block after block.

        Returns:
            y: (batch, time, n_y) physical units, and the final state.
        """
        self.check_input(u)
        states, total = self.split_state(state, len(self.blocks), u.shape[0], "one per block")
        if deepwiener_fused.applies(self, mode, u.device.type):
            y_n, finals = deepwiener_fused.forward(self, u, states)
            y, total = self.integrate(self.denormalize_output(y_n), total)
            return y, self.join_state(finals, total)
        v = self.encoder(self.normalize_input(u))
        finals = []
        for block, x0 in zip(self.blocks, states, strict=True):
            v, x = block(v, x0, mode)
            finals.append(x)
        y, total = self.integrate(self.denormalize_output(self.decoder(v)), total)
        return y, self.join_state(finals, total)

    def export_step(self, graph: StepGraph, u: str) -> str:
        """The step as real operations (``Model.export_step``): the blocks' states in order, each as its layer
        declares it."""
        v = graph.affine([(self.encoder.weight, self.export_input(graph, u))], self.encoder.bias, hint="v")
        for index, block in enumerate(self.blocks):
            with graph.scope(f"block{index}"):
                v = block.export_step(graph, v, self.config.layer)
        return self.export_output(graph, graph.affine([(self.decoder.weight, v)], self.decoder.bias, hint="y_n"))

    def stepper(self) -> ModelStepper:
        """A one-sample-at-a-time simulator with every block discretised once."""
        return ModelStepper(self)

    def fast_stepper(self) -> Streamer:
        """A compiled one-sample-at-a-time simulator, numpy in and out (``models.deepwiener_stream``)."""
        return deepwiener_stream.fast_stepper(self)

    def check_linear_start(self) -> None:
        """Raise ConfigError unless this configuration can start as a linear model (``models.deepwiener_start``)."""
        deepwiener_start.check_linear_init(self)

    def start_linear(self, train: Sequence[IOData], val: Sequence[ValidationRecord]) -> LinearStateSpace:
        """Start as the best linear model of the data (``models.deepwiener_start``); returns it."""
        return deepwiener_start.initialize_linear(self, train, val)

    @torch.no_grad()
    def poles(self) -> np.ndarray:
        """The discrete-time poles of every LTI block, block after block (complex numpy; both members of a
        conjugate pair); selective (not LTI) blocks have none. ``deepwiener.analysis.blocks`` gives them per
        block, with zeros, gains and Hankel singular values."""
        systems = [block.lti.state_space() for block in self.blocks if isinstance(block.lti, LTILayer)]
        return np.concatenate([np.linalg.eigvals(s.A) for s in systems]) if systems else np.zeros(0, complex)


class ModelStepper:
    """Streaming simulation of a ``DeepWiener`` model: every block's system is discretised once.

    ``step(u_k, state)`` runs the encoder, each block's one-step update and nonlinearity, the decoder and, with
    an integrator, the running sum.
    """

    def __init__(self, model: DeepWiener) -> None:
        self.model = model
        self.steppers = [block.lti.stepper() for block in model.blocks]

    def init_state(self, batch: int) -> ModelState:
        """Zero state, in the model's format (``DeepWiener.init_state``)."""
        blocks = tuple(s.init_state(batch) for s in self.steppers)
        return self.model.join_state(blocks, self.model.zero_sum(batch) if self.model.integrates_output else None)

    def step(self, u_k: Tensor, state: ModelState) -> tuple[Tensor, ModelState]:
        """u_k: (batch, n_u) physical -> (y_k (batch, n_y) physical, next state)."""
        m = self.model
        states, total = m.split_state(state, len(m.blocks), u_k.shape[0], "one per block")
        v = m.encoder(m.normalize_input(u_k))
        finals = []
        for block, stepper, x in zip(m.blocks, self.steppers, states, strict=True):
            eta, x_next = stepper.step(block.norm(v), x)
            v = block.dropout(block.sigma(eta)) + block.bypass(v)
            finals.append(x_next)
        y, total = m.integrate(m.denormalize_output(m.decoder(v))[:, None], total)
        return y[:, 0], m.join_state(finals, total)
