"""Parallel associative scan for the diagonal recurrence x[k+1] = a[k] x[k] + b[k].

The pairs (a, b) compose associatively: (a1, b1) then (a2, b2) is (a2 a1, a2 b1 + b2). The scan below
is the even/odd recursion (work O(T), depth O(log T)): combine neighbouring pairs, scan the half-length
sequence, then fill in the even positions. Any length works (odd lengths are padded with the identity
pair (1, 0)). It is plain PyTorch, so it runs on any device and autograd differentiates it.
"""

from __future__ import annotations

import torch
from torch import Tensor


def associative_scan(a: Tensor, b: Tensor) -> Tensor:
    """Inclusive scan: s[k] = a[k] s[k-1] + b[k], s[-1] = 0.

    Args:
        a: (..., time, n), broadcastable to ``b``.
        b: (..., time, n).

    Returns:
        s: (..., time, n), the shape of ``b``.
    """
    T = b.shape[-2]
    if T == 1:
        return b
    a = a.expand_as(b)
    if T % 2:
        a = torch.cat([a, torch.ones_like(a[..., :1, :])], dim=-2)
        b = torch.cat([b, torch.zeros_like(b[..., :1, :])], dim=-2)
    a_even, a_odd = a[..., 0::2, :], a[..., 1::2, :]
    b_even, b_odd = b[..., 0::2, :], b[..., 1::2, :]
    s_odd = associative_scan(a_odd * a_even, a_odd * b_even + b_odd)  # s[1], s[3], ...
    s_even = torch.cat([b_even[..., :1, :], a_even[..., 1:, :] * s_odd[..., :-1, :] + b_even[..., 1:, :]], dim=-2)
    s = torch.stack([s_even, s_odd], dim=-2).flatten(-3, -2)  # interleave
    return s[..., :T, :]


def diagonal_recurrence_scan(a: Tensor, bu: Tensor, x0: Tensor) -> Tensor:
    """States after each input of x[k+1] = a x[k] + bu[k].

    Args:
        a: (n,) or (batch, time, n).
        bu: (batch, time, n).
        x0: (batch, n).

    Returns:
        X: (batch, time, n) with X[:, k] = x[k+1].
    """
    if bu.shape[1] == 0:
        return bu
    a_seq = a if a.dim() == 3 else a.expand(1, 1, -1)
    first = bu[:, :1] + a_seq[:, :1] * x0[:, None, :]
    b = torch.cat([first, bu[:, 1:]], dim=1)
    return associative_scan(a_seq, b)
