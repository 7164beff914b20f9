"""The error column: each implementation against a float64 oracle, judged by the project's tolerance policy."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ale_kernels.testing.tolerance import allowed_error, max_abs_error

Output = torch.Tensor | Sequence[torch.Tensor]


def flat(out: Output) -> torch.Tensor:
    """An op's output (one tensor, or one per value stream) as one 1-D float64 tensor on the CPU."""
    tensors = [out] if isinstance(out, torch.Tensor) else list(out)
    return torch.cat([t.detach().reshape(-1).double().cpu() for t in tensors])


def output_error(got: Output, oracle: Output) -> float:
    """Largest absolute difference between two outputs of the same shape(s)."""
    return max_abs_error(flat(got), flat(oracle))


def allowed(reference_error: float, dtype: torch.dtype, oracle: Output) -> float:
    """What an implementation with ``dtype`` inputs may be off from ``oracle`` by, given the error of the
    same-precision reference against it (the policy of :mod:`ale_kernels.testing.tolerance`)."""
    return allowed_error(reference_error, dtype, flat(oracle))
