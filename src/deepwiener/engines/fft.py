"""FFT convolution engine for LTI systems.

eta = h * u + free response of x0, where h is the exact impulse response of length T (no truncated
kernel, so slow poles are not aliased) and the convolution is zero-padded to 2T (no circular
wrap-around). The final state comes from the modal form: x[T] = lam^T x0 + sum_j lam^(T-1-j) B u[j].
"""

from __future__ import annotations

import torch
from torch import Tensor

from deepwiener.systems import LinearSystem


def simulate_fft(system: LinearSystem, u: Tensor, x0: Tensor) -> tuple[Tensor, Tensor]:
    """Simulate by FFT convolution.

    Args:
        system: any LTI system.
        u: (batch, time, d_in) real.
        x0: (batch, *state_shape) complex.

    Returns:
        eta: (batch, time, d_out) real, final state (batch, *state_shape).
    """
    T = u.shape[1]
    if T == 0:
        return u.new_zeros(u.shape[0], 0, system.d_out), x0
    h = system.impulse_response(T)  # (t, o, i)
    n_fft = 2 * T
    U = torch.fft.rfft(u, n=n_fft, dim=1)  # (b, f, i)
    H = torch.fft.rfft(h, n=n_fft, dim=0)  # (f, o, i)
    eta = torch.fft.irfft(torch.einsum("bfi,foi->bfo", U, H), n=n_fft, dim=1)[:, :T]
    diag, to_modal, from_modal = system.modal()
    z0 = to_modal(x0)
    eta = eta + diag.free_response(z0, T)
    x_final = from_modal(diag.final_state(z0, diag.drive(u)))
    return eta, x_final
