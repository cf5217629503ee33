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
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from deepwiener.errors import unknown_name

GELU_LIPSCHITZ = 1.1289  # max of d/dx [x Phi(x)]


class Nonlinearity(nn.Module):
    """Base class: ``forward(eta (..., h)) -> (..., h)``; ``lipschitz()`` a global bound (inf if none)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(width))

    def lipschitz(self) -> float:
        """A global Lipschitz constant in the 2-norm, or ``math.inf`` if the map is only locally Lipschitz."""
        raise NotImplementedError


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


class GLU(Nonlinearity):
    """Gated linear unit on eta: (W1 z + c1) * sigmoid(W2 z + c2), z = eta + b."""

    def __init__(self, width: int) -> None:
        super().__init__(width)
        self.proj = nn.Linear(width, 2 * width)

    def forward(self, eta: Tensor) -> Tensor:
        return nn.functional.glu(self.proj(eta + self.bias), dim=-1)

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

    @torch.no_grad()
    def lipschitz(self) -> float:
        norm1 = torch.linalg.matrix_norm(self.hidden.weight, ord=2).item()
        norm2 = torch.linalg.matrix_norm(self.out.weight, ord=2).item()
        return GELU_LIPSCHITZ * norm1 * norm2


class Polynomial(Nonlinearity):
    """z + a2 z^2 + a3 z^3 per channel, z = eta + b; starts as the identity."""

    def __init__(self, width: int) -> None:
        super().__init__(width)
        self.a2 = nn.Parameter(torch.zeros(width))
        self.a3 = nn.Parameter(torch.zeros(width))

    def forward(self, eta: Tensor) -> Tensor:
        z = eta + self.bias
        return z + self.a2 * z**2 + self.a3 * z**3

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

    @torch.no_grad()
    def lipschitz(self) -> float:
        """The slope 1 + a sech^2(z) lies between 1 and 1 + a, so |slope| <= max(1, |1 + a|)."""
        return max(1.0, float((1 + self.gain).abs().max()))


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
