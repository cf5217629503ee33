"""Static nonlinearities of the Wiener blocks, each with a Lipschitz bound for the stability certificate.

Every nonlinearity maps eta (..., h) -> (..., h) elementwise or per sample (no memory) and carries a
learnable bias inside: sigma(eta + b).

    gelu, elu, tanh, relu   elementwise activation (Lipschitz 1.13, 1, 1, 1)
    identity                no map: the whole model is linear (a linear state-space model trained by simulation
                            error, the output-error baseline)
    glu                     (W1 z + c1) * sigmoid(W2 z + c2): only locally Lipschitz
    mlp                     W2 gelu(W1 z + c1) + c2, hidden width 2h: Lipschitz <= 1.13 ||W2|| ||W1||
    poly                    z + a2 z^2 + a3 z^3 per channel (a2 = a3 = 0 at start): only locally Lipschitz
    linear_tanh             z + a tanh(z) per channel (a = 0 at start): linear plus a bounded part, so the
                            model extrapolates like a linear system (Lipschitz max(1, |1 + a|))

Each map describes itself for the compiled streamer and the export: ``channel_map()`` names a per-channel map
(``stepgraph.MAPS``) with its parameters, and ``export_step`` adds the map to a model's ``StepGraph``.
"""

from __future__ import annotations

import math
from typing import ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from deepwiener.errors import ConfigError, unknown_name
from deepwiener.stepgraph import StepGraph

GELU_LIPSCHITZ = 1.1289  # max of d/dx [x Phi(x)]
GELU_MIN_SLOPE = 1 - GELU_LIPSCHITZ  # min of d/dx [x Phi(x)] (gelu'(x) + gelu'(-x) = 1)


class SlopeSector(NamedTuple):
    """A map written as ``w = outer @ s(inner @ (eta + b) + c) + d`` with ``s`` elementwise (width h), each ``s_i``
    slope-restricted: ``low_i <= (s_i(a) - s_i(b)) / (a - b) <= high_i``. What the loop certificate of an LFR model
    (``models.lfr``, certificate "iqc") needs of its map.

    Attributes:
        inner: (h, width) or None (the identity, h = width).
        outer: (width, h) or None (the identity).
        low, high: (h,) slope bounds, low <= high (tensors: they may depend on the map's parameters).
    """

    inner: Tensor | None
    outer: Tensor | None
    low: Tensor
    high: Tensor


class Nonlinearity(nn.Module):
    """Base class: ``forward(eta (..., h)) -> (..., h)``; ``lipschitz()`` a global bound (inf if none).

    ``globally_lipschitz`` says whether every parameter value gives a finite global bound (False for maps that are
    only locally Lipschitz once trained, such as poly and glu); ``lipschitz_bound()`` is that bound as a tensor
    that carries gradients to the map's parameters (what a stable-by-construction parametrisation needs).
    """

    globally_lipschitz: ClassVar[bool] = True

    def __init__(self, width: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(width))

    def lipschitz(self) -> float:
        """A global Lipschitz constant in the 2-norm, or ``math.inf`` if the map is only locally Lipschitz."""
        raise NotImplementedError

    def lipschitz_bound(self) -> Tensor:
        """``lipschitz()`` as a 0-d tensor of the map's dtype, differentiable in the parameters where it depends
        on them."""
        return self.bias.new_tensor(self.lipschitz())

    def slope_sector(self) -> SlopeSector | None:
        """The map as slope-restricted elementwise functions between linear maps (:class:`SlopeSector`), or None
        for a map that has no such form with finite slopes (poly, glu)."""
        return None

    def channel_map(self) -> tuple[str, dict[str, Tensor]] | None:
        """The map as one function applied to each channel, sigma(eta)_i = f(eta_i + bias_i; params_i): the name
        of f in ``stepgraph.MAPS`` and its (h,) parameters (``bias`` and those MAPS names); None for a map that
        mixes channels."""
        return None

    def export_step(self, graph: StepGraph, eta: str) -> str:
        """Add the map to a model's step graph: eta (h,) -> sigma(eta) (h,); returns the output's name.

        Raises:
            ConfigError: a map that describes itself neither as a per-channel map nor by its own export_step.
        """
        form = self.channel_map()
        if form is None:
            raise ConfigError(f"the nonlinearity {type(self).__name__} cannot be exported: it does not describe its "
                              "step (channel_map or export_step)")
        fn, params = form
        return graph.map(fn, eta, **params)


class Elementwise(Nonlinearity):
    """sigma(eta + b) with a fixed elementwise activation."""

    def __init__(self, width: int, activation: nn.Module, lipschitz: float) -> None:
        super().__init__(width)
        self.activation = activation
        self._lipschitz = lipschitz

    def forward(self, eta: Tensor) -> Tensor:
        return self.activation(eta + self.bias)

    def lipschitz(self) -> float:
        return self._lipschitz

    def slope_sector(self) -> SlopeSector | None:
        """gelu's slopes lie in [1 - 1.1289, 1.1289]; elu's in [min(0, alpha), max(1, alpha)]; tanh's and relu's in
        [0, 1]; identity's are 1. None for another activation (gelu's tanh approximation included): slopes not
        known here are not guessed."""
        act = self.activation
        if isinstance(act, nn.GELU):
            bounds = (GELU_MIN_SLOPE, GELU_LIPSCHITZ) if act.approximate == "none" else None
        elif isinstance(act, nn.ELU):
            bounds = (min(0.0, act.alpha), max(1.0, act.alpha))
        else:
            bounds = {nn.Tanh: (0.0, 1.0), nn.ReLU: (0.0, 1.0), nn.Identity: (1.0, 1.0)}.get(type(act))
        if bounds is None:
            return None
        return SlopeSector(None, None, torch.full_like(self.bias, bounds[0]), torch.full_like(self.bias, bounds[1]))

    def channel_map(self) -> tuple[str, dict[str, Tensor]] | None:
        act = self.activation
        if isinstance(act, nn.GELU):
            return ("gelu_tanh" if act.approximate == "tanh" else "gelu"), {"bias": self.bias}
        if isinstance(act, nn.ELU):
            return "elu", {"bias": self.bias, "alpha": torch.full_like(self.bias, act.alpha)}
        names = {nn.ReLU: "relu", nn.Tanh: "tanh", nn.Identity: "identity"}
        return (names[type(act)], {"bias": self.bias}) if type(act) in names else None


class GLU(Nonlinearity):
    """Gated linear unit on eta: (W1 z + c1) * sigmoid(W2 z + c2), z = eta + b."""

    globally_lipschitz: ClassVar[bool] = False

    def __init__(self, width: int) -> None:
        super().__init__(width)
        self.proj = nn.Linear(width, 2 * width)

    def forward(self, eta: Tensor) -> Tensor:
        return nn.functional.glu(self.proj(eta + self.bias), dim=-1)

    def export_step(self, graph: StepGraph, eta: str) -> str:
        width = self.bias.shape[0]
        z = graph.scale(eta, shift=self.bias, hint="z")
        W, c = self.proj.weight, self.proj.bias
        value = graph.affine([(W[:width], z)], c[:width], hint="glu_value")
        gate = graph.map("sigmoid", graph.affine([(W[width:], z)], c[width:], hint="glu_gate"))
        return graph.mul(value, gate)

    def lipschitz(self) -> float:
        return math.inf


class MLP(Nonlinearity):
    """Two-layer perceptron W2 gelu(W1 z + c1) + c2 with hidden width 2h, z = eta + b."""

    def __init__(self, width: int) -> None:
        super().__init__(width)
        self.hidden = nn.Linear(width, 2 * width)
        self.out = nn.Linear(2 * width, width)

    def forward(self, eta: Tensor) -> Tensor:
        return self.out(nn.functional.gelu(self.hidden(eta + self.bias)))

    def export_step(self, graph: StepGraph, eta: str) -> str:
        z = graph.scale(eta, shift=self.bias, hint="z")
        hidden = graph.map("gelu", graph.affine([(self.hidden.weight, z)], self.hidden.bias, hint="mlp_hidden"))
        return graph.affine([(self.out.weight, hidden)], self.out.bias, hint="mlp_out")

    @torch.no_grad()
    def lipschitz(self) -> float:
        return float(self.lipschitz_bound())

    def slope_sector(self) -> SlopeSector:
        """The hidden gelu units, between the two weights."""
        hidden = self.hidden.bias
        return SlopeSector(self.hidden.weight, self.out.weight, torch.full_like(hidden, GELU_MIN_SLOPE),
                           torch.full_like(hidden, GELU_LIPSCHITZ))

    def lipschitz_bound(self) -> Tensor:
        """GELU's slope bound times the spectral norms of both weights."""
        norm1 = torch.linalg.matrix_norm(self.hidden.weight, ord=2)
        return GELU_LIPSCHITZ * norm1 * torch.linalg.matrix_norm(self.out.weight, ord=2)


class Polynomial(Nonlinearity):
    """z + a2 z^2 + a3 z^3 per channel, z = eta + b; starts as the identity."""

    globally_lipschitz: ClassVar[bool] = False

    def __init__(self, width: int) -> None:
        super().__init__(width)
        self.a2 = nn.Parameter(torch.zeros(width))
        self.a3 = nn.Parameter(torch.zeros(width))

    def forward(self, eta: Tensor) -> Tensor:
        z = eta + self.bias
        return z + self.a2 * z**2 + self.a3 * z**3

    def channel_map(self) -> tuple[str, dict[str, Tensor]]:
        return "poly", {"bias": self.bias, "a2": self.a2, "a3": self.a3}

    def lipschitz(self) -> float:
        if bool((self.a2 == 0).all() and (self.a3 == 0).all()):
            return 1.0
        return math.inf

    @torch.no_grad()
    def local_lipschitz(self, bound: float) -> float:
        """Lipschitz constant on |z| <= bound: max |1 + 2 a2 z + 3 a3 z^2| over the interval."""
        z = torch.linspace(-bound, bound, 2001, dtype=self.a2.dtype, device=self.a2.device)[:, None]
        return float((1 + 2 * self.a2 * z + 3 * self.a3 * z**2).abs().max())


class LinearTanh(Nonlinearity):
    """z + a tanh(z) per channel, z = eta + b; starts as the identity.

    The identity part carries the linear dynamics at every amplitude and the correction is bounded by |a|, so
    far outside the training amplitudes a stack of these blocks behaves as a linear system plus a bounded
    deviation (the shape of, e.g., Coulomb friction acting on a linear plant).
    """

    def __init__(self, width: int) -> None:
        super().__init__(width)
        self.gain = nn.Parameter(torch.zeros(width))

    def forward(self, eta: Tensor) -> Tensor:
        z = eta + self.bias
        return z + self.gain * torch.tanh(z)

    def channel_map(self) -> tuple[str, dict[str, Tensor]]:
        return "linear_tanh", {"bias": self.bias, "gain": self.gain}

    @torch.no_grad()
    def lipschitz(self) -> float:
        return float(self.lipschitz_bound())

    def slope_sector(self) -> SlopeSector:
        """Each channel's slope 1 + a sech^2(z) lies between 1 and 1 + a."""
        return SlopeSector(None, None, (1 + self.gain).clamp_max(1.0), (1 + self.gain).clamp_min(1.0))

    def lipschitz_bound(self) -> Tensor:
        """The slope 1 + a sech^2(z) lies between 1 and 1 + a, so |slope| <= max(1, |1 + a|)."""
        return (1 + self.gain).abs().max().clamp_min(1.0)


def _elementwise(activation: type[nn.Module], lipschitz: float):
    return lambda width: Elementwise(width, activation(), lipschitz)


NONLINEARITIES = {
    "gelu": _elementwise(nn.GELU, GELU_LIPSCHITZ),
    "elu": _elementwise(nn.ELU, 1.0),
    "tanh": _elementwise(nn.Tanh, 1.0),
    "relu": _elementwise(nn.ReLU, 1.0),
    "identity": _elementwise(nn.Identity, 1.0),
    "glu": GLU,
    "mlp": MLP,
    "poly": Polynomial,
    "linear_tanh": LinearTanh,
}


def make_nonlinearity(name: str, width: int) -> Nonlinearity:
    """Build the nonlinearity registered under ``name`` for ``width`` channels."""
    if name not in NONLINEARITIES:
        raise unknown_name("nonlinearity", name, NONLINEARITIES)
    return NONLINEARITIES[name](width)
