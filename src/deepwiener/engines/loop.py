"""The reference engine: the plain recurrence, one sample at a time.

Every other engine is tested against this one. It is deliberately simple and never optimised.
"""

from __future__ import annotations

import torch
from torch import Tensor

from deepwiener.systems import LinearSystem


def simulate_loop(system: LinearSystem, u: Tensor, x0: Tensor) -> tuple[Tensor, Tensor]:
    """Run x[k+1] = A x[k] + B u[k], eta[k] = Re(C x[k or k+1]) + D u[k] sample by sample.

    Args:
        system: the discrete-time system.
        u: (batch, time, d_in) real.
        x0: (batch, *state_shape) complex initial state.

    Returns:
        eta: (batch, time, d_out) real, and the final state (batch, *state_shape).
    """
    outputs = []
    x = x0
    for k in range(u.shape[1]):
        x_next = system.advance(x, u[:, k])
        outputs.append(system.output(x, x_next, u[:, k]))
        x = x_next
    if not outputs:
        return u.new_zeros(u.shape[0], 0, system.d_out), x
    return torch.stack(outputs, dim=1), x
