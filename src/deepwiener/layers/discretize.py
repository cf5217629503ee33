"""Discretisation of diagonal continuous-time systems (pure functions).

For x' = lam_c x + B_c u held over a step Delta (in samples):

* zero-order hold: lam = exp(lam_c Delta), B = (lam - 1) / lam_c * B_c
* bilinear (Tustin): lam = (1 + lam_c Delta/2) / (1 - lam_c Delta/2), B = Delta / (1 - lam_c Delta/2) * B_c

Both map Re(lam_c) < 0 into |lam| < 1, so stability is preserved.
"""

from __future__ import annotations

from torch import Tensor

from deepwiener.errors import unknown_name

DISCRETIZATIONS: tuple[str, ...] = ("zoh", "bilinear")


def zoh(lam_c: Tensor, delta: Tensor) -> tuple[Tensor, Tensor]:
    """Zero-order hold. lam_c: (n,) complex, delta: (n,) real -> (lam (n,), input gain (n,)) complex."""
    lam = (lam_c * delta).exp()
    return lam, (lam - 1) / lam_c


def bilinear(lam_c: Tensor, delta: Tensor) -> tuple[Tensor, Tensor]:
    """Bilinear transform. lam_c: (n,) complex, delta: (n,) real -> (lam (n,), input gain (n,)) complex."""
    half = lam_c * delta / 2
    return (1 + half) / (1 - half), delta / (1 - half)


def discretize(lam_c: Tensor, delta: Tensor, method: str) -> tuple[Tensor, Tensor]:
    """Dispatch on ``method`` ("zoh" or "bilinear"); the gain multiplies the rows of B_c."""
    if method == "zoh":
        return zoh(lam_c, delta)
    if method == "bilinear":
        return bilinear(lam_c, delta)
    raise unknown_name("discretization", method, DISCRETIZATIONS)


def continuous_from_discrete(lam: Tensor, delta: Tensor, method: str) -> tuple[Tensor, Tensor]:
    """Inverse of ``discretize``: (lam_c, gain) such that discretize(lam_c, delta) gives lam and gain."""
    if method == "zoh":
        lam_c = lam.log() / delta
        return lam_c, (lam - 1) / lam_c
    if method == "bilinear":
        lam_c = 2 / delta * (lam - 1) / (lam + 1)
        return lam_c, delta / (1 - lam_c * delta / 2)
    raise unknown_name("discretization", method, DISCRETIZATIONS)
