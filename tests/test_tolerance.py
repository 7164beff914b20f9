"""The tolerance policy itself: it scales with the reference's error, catches real errors, says why."""

from __future__ import annotations

import pytest
import torch

from ale_kernels import region_attention
from ale_kernels.testing.tolerance import (
    ERROR_FACTOR,
    allowed_error,
    assert_close_to_oracle,
    assert_within_perturbation,
    error_floor,
    max_abs_error,
    rounding_perturbation,
    upcast,
)
from tests.problems import make_problem


def _reference_and_oracle(dtype: torch.dtype, scale: float = 1.0):
    p = make_problem(dtype=dtype)
    args, kwargs = (p.q * scale, p.k * scale, p.v, p.q_region), dict(p.kwargs(), mask_value=-100.0)
    reference = region_attention(*args, backend="reference", **kwargs)
    return reference, region_attention(*upcast(args), backend="reference", **kwargs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_the_reference_passes_and_an_error_of_a_few_times_its_own_fails(dtype):
    reference, oracle = _reference_and_oracle(dtype)
    assert_close_to_oracle(reference, reference, oracle)
    bound = allowed_error(max_abs_error(reference, oracle), dtype, oracle)
    wrong = reference.clone()
    wrong[0, 0, 0, 0] += 2 * bound
    with pytest.raises(AssertionError, match=r"error against the float64 oracle .* > allowed .* reference's error"):
        assert_close_to_oracle(wrong, reference, oracle, name="wrong")


def test_the_bound_grows_with_the_scores_where_a_fixed_tolerance_does_not():
    """Inputs scaled by 30 (as in the large-scores tests): the float32 reference's own error grows, and so
    does what a backend may make; the floor alone stays at the scale of the outputs."""
    small = _reference_and_oracle(torch.float32)
    large = _reference_and_oracle(torch.float32, scale=30.0)
    small_error, large_error = (max_abs_error(*pair) for pair in (small, large))
    assert large_error > 10 * small_error
    assert allowed_error(large_error, torch.float32, large[1]) >= ERROR_FACTOR * large_error


def test_float64_has_a_floor_since_its_reference_is_its_oracle():
    oracle = torch.ones(3, dtype=torch.float64)
    assert error_floor(torch.float64, oracle) > 4 * torch.finfo(torch.float64).eps
    assert error_floor(torch.float32, 100 * oracle) == pytest.approx(100 * error_floor(torch.float32, oracle))


def test_nan_and_mismatched_infinities_count_as_infinite_errors():
    oracle = torch.tensor([0.0, float("inf")], dtype=torch.float64)
    assert max_abs_error(torch.tensor([0.0, float("inf")]), oracle) == 0.0
    assert max_abs_error(torch.tensor([float("nan"), float("inf")]), oracle) == float("inf")
    assert max_abs_error(torch.tensor([0.0, float("-inf")]), oracle) == float("inf")


def test_bad_arguments_are_named():
    x = torch.zeros(2)
    with pytest.raises(ValueError, match="got has shape"):
        max_abs_error(x, torch.zeros(3))
    with pytest.raises(TypeError, match=r"oracle must be a torch\.Tensor"):
        assert_close_to_oracle(x, x, [0.0, 0.0])
    with pytest.raises(TypeError, match="dtype must be a floating"):
        error_floor(torch.int32, x)
    with pytest.raises(ValueError, match="reference_error must be"):
        allowed_error(-1.0, torch.float32, x)


def test_rounding_perturbation_measures_one_ulp_and_restores_the_weights():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    before = [p.detach().clone() for p in model.parameters()]
    x = torch.randn(4, 8)
    with torch.no_grad():
        noise = rounding_perturbation(lambda: model(x), [model])
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert 0 < noise < 1e-5
    out = model(x).detach()
    assert_within_perturbation(out, out, noise)
    with pytest.raises(AssertionError, match="rounding perturbation"):
        assert_within_perturbation(out + 1e-3, out, noise)
