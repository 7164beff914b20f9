"""The one tolerance policy of the test suite and the benchmarks.

A fixed absolute tolerance does not scale with the problem: large scores carry large rounding errors even in
the reference, so a bound that holds on one machine's BLAS fails on another's. As flash-attention's tests do,
a backend is instead held to a small multiple of the error that the *same-precision reference* makes against
a float64 oracle on the same inputs, plus a tiny floor for the case where the reference is exact.

Three tensors take part in every check:

- ``got``: the output under test;
- ``reference``: the same quantity computed by the reference math at the precision ``got`` was computed in
  (its rounding error is the yardstick, measured on these very inputs, so it follows the machine and the
  problem rather than a constant);
- ``oracle``: the same quantity in float64, typically the reference backend on the inputs upcast to float64.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

#: How many times the same-precision reference's error a backend may make against the float64 oracle.
ERROR_FACTOR = 4.0

# Units of rounding in the floor. A float64 backend has no more precise oracle: its reference is the oracle
# (error zero), so the floor alone must hold the rounding of a reduction done in another order.
_FLOOR_ULPS = {torch.float64: 16.0}


def _check_tensor(name: str, value: object) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def max_abs_error(got: torch.Tensor, oracle: torch.Tensor) -> float:
    """The largest absolute difference, computed in float64 (infinities and NaNs count as infinite).

    Args:
        got: any shape; compared element by element with ``oracle``.
        oracle: the same shape as ``got``.
    """
    _check_tensor("got", got)
    _check_tensor("oracle", oracle)
    if got.shape != oracle.shape:
        raise ValueError(f"got has shape {tuple(got.shape)} but oracle has shape {tuple(oracle.shape)}")
    diff = (got.detach().double() - oracle.detach().double().to(got.device)).abs()
    if diff.numel() == 0:
        return 0.0
    # An infinite oracle value matched exactly gives inf - inf = NaN; that element agrees.
    both_inf = torch.isinf(got.detach().double()) & (got.detach().double() == oracle.detach().double().to(got.device))
    diff = torch.where(both_inf, torch.zeros_like(diff), diff)
    return float(torch.nan_to_num(diff, nan=float("inf"), posinf=float("inf")).max())


def error_floor(dtype: torch.dtype, oracle: torch.Tensor) -> float:
    """The smallest error ever demanded: a few units of ``dtype``'s rounding at the oracle's magnitude.

    Args:
        dtype: the floating dtype the checked output was computed from.
        oracle: the float64 oracle output, any shape; only its largest finite magnitude is used.
    """
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    _check_tensor("oracle", oracle)
    finite = oracle.detach().double()
    finite = finite[torch.isfinite(finite)]
    scale = float(finite.abs().max()) if finite.numel() else 0.0
    return _FLOOR_ULPS.get(dtype, 4.0) * torch.finfo(dtype).eps * max(scale, 1.0)


def allowed_error(
    reference_error: float, dtype: torch.dtype, oracle: torch.Tensor, factor: float = ERROR_FACTOR
) -> float:
    """What a backend may be off from ``oracle`` by, given ``reference_error``, the same-precision reference's
    error against that oracle, for outputs computed from ``dtype`` inputs.

    Args:
        reference_error: :func:`max_abs_error` of the same-precision reference against ``oracle``.
        dtype: the floating dtype the checked output was computed from.
        oracle: the float64 oracle output, any shape.
        factor: the multiple of ``reference_error`` allowed (2 to 4 in this project's tests).
    """
    if reference_error < 0 or reference_error != reference_error:
        raise ValueError(f"reference_error must be a non-negative number, got {reference_error}")
    if factor < 1:
        raise ValueError(f"factor must be at least 1, got {factor}")
    return factor * reference_error + error_floor(dtype, oracle)


def assert_close_to_oracle(
    got: torch.Tensor,
    reference: torch.Tensor,
    oracle: torch.Tensor,
    *,
    dtype: torch.dtype | None = None,
    name: str = "output",
    factor: float = ERROR_FACTOR,
) -> None:
    """Assert that ``got`` is within :func:`allowed_error` of ``oracle``.

    Args:
        got: the output under test, any shape.
        reference: the same output from the reference math at ``got``'s precision, ``got``'s shape.
        oracle: the same output in float64, ``got``'s shape.
        dtype: the dtype the inputs were in (sets the floor); ``got``'s dtype when omitted.
        name: what ``got`` is, for the failure message.
        factor: the multiple of the reference's error allowed.

    Raises:
        AssertionError: naming the backend's error, the reference's error and the bound.
    """
    _check_tensor("got", got)
    _check_tensor("reference", reference)
    _check_tensor("oracle", oracle)
    if reference.shape != got.shape:
        raise ValueError(f"reference has shape {tuple(reference.shape)} but got has shape {tuple(got.shape)}")
    dtype = got.dtype if dtype is None else dtype
    got_error = max_abs_error(got, oracle)
    reference_error = max_abs_error(reference, oracle)
    if reference_error == float("inf"):
        raise AssertionError(f"{name}: the reference itself is not finite where the float64 oracle is")
    bound = allowed_error(reference_error, dtype, oracle, factor)
    assert got_error <= bound, (
        f"{name}: error against the float64 oracle {got_error:.3e} > allowed {bound:.3e} "
        f"({factor:g} x the {dtype} reference's error {reference_error:.3e} + floor {error_floor(dtype, oracle):.3e})"
    )


def upcast(values: Iterable[Any]) -> list[Any]:
    """The oracle's inputs: every floating tensor in ``values`` as float64 (strides kept), the rest as given.

    Args:
        values: positional arguments of an op, e.g. ``(q, k, v, q_region)`` with ``q`` ``(B, H, L, D)``;
            integer tensors (routing), ``None`` and plain numbers pass through; lists and tuples are upcast
            element by element (the value streams of ``shared_qk_attention``).
    """
    out = []
    for value in values:
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            out.append(value.detach().to(torch.float64))
        elif isinstance(value, (list, tuple)):
            out.append(type(value)(upcast(value)))
        else:
            out.append(value)
    return out


def rounding_perturbation(run, modules: Iterable[torch.nn.Module], seed: int = 0) -> float:
    """How far ``run()``'s output moves when every floating parameter of ``modules`` moves by one unit in the
    last place, up or down at random: the size of float32 rounding noise at the output, for whole-model
    comparisons where a float64 oracle run is not possible (random draws that depend on the dtype).

    Args:
        run: a callable returning the output tensor, any shape (e.g. an edit's ``(B, 3, H, W)`` images).
        modules: the models whose parameters ``run`` uses; they are restored afterwards.
        seed: the seed of the random directions.
    """
    if not callable(run):
        raise TypeError(f"run must be callable, got {type(run).__name__}")
    params = [p for m in modules for p in m.parameters() if p.is_floating_point()]
    if not params:
        raise ValueError("modules must hold at least one floating parameter")
    baseline = run()
    saved = [p.detach().clone() for p in params]
    g = torch.Generator().manual_seed(seed)
    try:
        with torch.no_grad():
            for p in params:
                up = torch.rand(p.shape, generator=g) < 0.5
                target = torch.where(up.to(p.device), float("inf"), float("-inf")).to(p.dtype)
                p.copy_(torch.nextafter(p, target))
        perturbed = run()
    finally:
        with torch.no_grad():
            for p, original in zip(params, saved, strict=True):
                p.copy_(original)
    return max_abs_error(perturbed, baseline)


def assert_within_perturbation(
    got: torch.Tensor,
    reference: torch.Tensor,
    perturbation: float,
    *,
    dtype: torch.dtype | None = None,
    name: str = "output",
    factor: float = ERROR_FACTOR,
) -> None:
    """Assert that ``got`` differs from ``reference`` by at most ``factor`` times ``perturbation`` (see
    :func:`rounding_perturbation`) plus the floor: the tolerance policy with a measured same-precision
    perturbation standing in for the reference's error against a float64 oracle.

    Args:
        got, reference: the same shape, any.
        perturbation: the measured change of the reference's output under rounding-sized input changes.
        dtype: sets the floor; ``got``'s dtype when omitted.
    """
    dtype = got.dtype if dtype is None else dtype
    difference = max_abs_error(got, reference)
    bound = allowed_error(perturbation, dtype, reference, factor)
    assert difference <= bound, (
        f"{name}: differs from the reference by {difference:.3e} > allowed {bound:.3e} "
        f"({factor:g} x the measured {dtype} rounding perturbation {perturbation:.3e} + floor)"
    )
