"""The one tolerance policy of the test suite and the benchmarks.

A fixed absolute tolerance does not scale with the problem: large scores carry large rounding errors even in
the reference, so a bound that holds on one machine's BLAS fails on another's. As flash-attention's tests do,
a backend is instead held to a small multiple of the error that the *same-precision reference* makes against
a float64 oracle on the same inputs, plus a tiny floor for the case where the reference is exact.
"""

from __future__ import annotations

import torch

#: How many times the same-precision reference's error a backend may make against the float64 oracle.
ERROR_FACTOR = 4.0


def max_abs_error(got: torch.Tensor, oracle: torch.Tensor) -> float:
    """The largest absolute difference, computed in float64 (infinities and NaNs count as infinite)."""
    diff = (got.double() - oracle.double()).abs()
    if diff.numel() == 0:
        return 0.0
    return float(torch.nan_to_num(diff, nan=float("inf")).max())


def error_floor(dtype: torch.dtype, oracle: torch.Tensor) -> float:
    """The smallest error ever demanded: a few units of ``dtype``'s rounding at the oracle's magnitude."""
    scale = float(oracle.double().abs().max()) if oracle.numel() else 0.0
    return 4.0 * torch.finfo(dtype).eps * max(scale, 1.0)


def allowed_error(
    reference_error: float, dtype: torch.dtype, oracle: torch.Tensor, factor: float = ERROR_FACTOR
) -> float:
    """What a backend may be off from ``oracle`` by, given ``reference_error``, the same-precision reference's
    error against that oracle, for outputs computed from ``dtype`` inputs."""
    return factor * reference_error + error_floor(dtype, oracle)
