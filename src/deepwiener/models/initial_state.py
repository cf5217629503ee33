"""The initial state from an initialisation window: what a model's state is, given the first inputs and outputs.

The official benchmark protocol lets a model use the input and the first ``n`` measured outputs of a test record to
set its state, and scores the samples after them. Three ways (``X0_METHODS``), for every kind:

- ``"zero"``: the zero state at the start of the record, the init window washing the transient out (the default);
- ``"fit"``: the state ``x0`` at the start of the window that minimises, the model frozen,
  ``mean(((y_hat - y) / y_std)^2) + penalty * mean(x0^2)`` over the window: a few L-BFGS iterations on the state
  only (``fit_state``; complex states as (Re, Im) pairs, the output integrator's sum included), or a closed form
  where the model is linear in its state (the linear kind: a minimum-norm least-squares solution, exact for a
  noiseless, observable window);
- ``"encoder"``: a small network trained jointly with the model (``TrainConfig(x0="encoder")``) maps the window's
  inputs and outputs to the state at its end (:class:`StateEncoder`, stored in the model file).

Every method returns the state at the *end* of the window, from which the rest of the record is simulated; the
window's own outputs are simulated from the estimated start ("fit"), from zero ("zero", "encoder": not scored).
Only ``y[:n]`` is ever read, so what follows the window cannot leak into the simulation.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from deepwiener.errors import ConfigError, DataError, is_integer_in, unknown_name

X0_METHODS: tuple[str, ...] = ("zero", "fit", "encoder")
"""How a model's state is set from an initialisation window."""

PENALTY = 1e-4
"""Weight of the state's mean square in the "fit" objective (normalised output errors count 1)."""
ITERATIONS = 50
"""Most L-BFGS iterations of "fit"."""


def check_method(x0: str) -> str:
    """``x0`` itself when it names a method; ConfigError otherwise."""
    if x0 not in X0_METHODS:
        raise unknown_name("x0", x0, X0_METHODS)
    return x0


def flatten_state(state: Any) -> Tensor:
    """A state (a tensor or nested tuples of tensors, batch first) as one real (batch, n_state) float64 tensor:
    its tensors in order, each flattened per batch row, complex entries as (Re, Im) pairs. Differentiable."""
    if isinstance(state, Tensor):
        values = torch.view_as_real(state.resolve_conj()) if state.is_complex() else state
        return values.reshape(values.shape[0], -1).double()
    return torch.cat([flatten_state(part) for part in state], dim=1)


def unflatten_state(vector: Tensor, like: Any) -> Any:
    """The inverse of :func:`flatten_state`: ``vector`` (batch, n_state) shaped, typed and nested like ``like``
    (a state of the same batch). Differentiable."""
    offset = 0

    def take(template: Tensor) -> Tensor:
        nonlocal offset
        width = template[0].numel() * (2 if template.is_complex() else 1)
        chunk = vector[:, offset : offset + width]
        offset += width
        if template.is_complex():
            real = torch.view_as_real(template).dtype
            return torch.view_as_complex(chunk.to(real).reshape(*template.shape, 2).contiguous())
        return chunk.to(template.dtype).reshape(template.shape)

    def build(template: Any) -> Any:
        return take(template) if isinstance(template, Tensor) else tuple(build(part) for part in template)

    rebuilt = build(like)
    if offset != vector.shape[1]:
        raise DataError(f"a state vector of {vector.shape[1]} numbers for a state of {offset}")
    return rebuilt


def check_window(u_init: Tensor, y_init: Tensor, n_u: int, n_y: int) -> None:
    """Raise DataError unless u_init (1, n, n_u) and y_init (1, n, n_y) are one window of n >= 1 samples."""
    if u_init.dim() != 3 or y_init.dim() != 3 or u_init.shape[:2] != y_init.shape[:2] or u_init.shape[1] < 1 \
            or u_init.shape[2] != n_u or y_init.shape[2] != n_y:
        raise DataError(f"an init window needs u (1, n, n_u={n_u}) and y (1, n, n_y={n_y}) with n >= 1; got "
                        f"{tuple(u_init.shape)} and {tuple(y_init.shape)}")


def fit_state(model: Any, u_init: Tensor, y_init: Tensor, mode: str = "auto", penalty: float = PENALTY,
              iterations: int = ITERATIONS) -> Tensor:
    """The start state that best explains a window (module docstring), by L-BFGS on the flattened state.

    Args:
        model: a model (``models.base.Model``); its parameters are not changed.
        u_init: (1, n, n_u) inputs, physical units, in the model's dtype.
        y_init: (1, n, n_y) measured outputs, physical units.
        mode: the simulation engine (it must pass gradients to the initial state; every engine does).
        penalty: weight of the state's mean square.
        iterations: most L-BFGS iterations.

    Returns:
        The flattened start state (1, n_state) float64.
    """
    template = model.init_state(1)
    vector = torch.zeros_like(flatten_state(template), requires_grad=True)
    scale = model.y_std.double()
    optimizer = torch.optim.LBFGS([vector], lr=1, max_iter=iterations, tolerance_grad=1e-12, tolerance_change=1e-14,
                                  history_size=20, line_search_fn="strong_wolfe")

    def objective() -> Tensor:
        optimizer.zero_grad()
        y_hat, _ = model(u_init, unflatten_state(vector, template), mode=mode)
        loss = ((y_hat.double() - y_init.double()) / scale).pow(2).mean() + penalty * vector.pow(2).mean()
        (grad,) = torch.autograd.grad(loss, vector)
        vector.grad = grad
        return loss

    with torch.enable_grad():
        optimizer.step(objective)
    return vector.detach()


class StateEncoder(nn.Module):
    """The state at the end of an init window from its inputs and outputs: a perceptron, trained with the model.

    ``x = W2 tanh(W1 [u_n; y_n] + b1) + b2`` on the window's normalised inputs and outputs (the model's scaler),
    flattened; W2 and b2 start at zero, so an untrained encoder gives the zero state.

    Args:
        n_u, n_y: numbers of inputs and outputs.
        window: the init window's length n, in samples.
        n_state: the number of real numbers in the model's flattened state.
        hidden: width of the hidden layer.
    """

    def __init__(self, n_u: int, n_y: int, window: int, n_state: int, hidden: int = 64) -> None:
        super().__init__()
        if not (is_integer_in(window, 1) and is_integer_in(hidden, 1) and is_integer_in(n_state, 1)):
            raise ConfigError(f"a state encoder needs positive window, hidden and n_state; got {window}, {hidden}, "
                              f"{n_state}")
        self.spec = {"window": window, "hidden": hidden, "n_state": n_state}
        self.layer_in = nn.Linear(window * (n_u + n_y), hidden)
        self.layer_out = nn.Linear(hidden, n_state)
        nn.init.zeros_(self.layer_out.weight)
        nn.init.zeros_(self.layer_out.bias)

    @property
    def window(self) -> int:
        """The init window's length."""
        return int(self.spec["window"])

    def forward(self, u_n: Tensor, y_n: Tensor) -> Tensor:
        """u_n: (batch, n, n_u), y_n: (batch, n, n_y) normalised -> the flattened state (batch, n_state)."""
        features = torch.cat([u_n, y_n], dim=2).reshape(u_n.shape[0], -1)
        return self.layer_out(torch.tanh(self.layer_in(features)))

