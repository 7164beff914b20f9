"""Random problems for the op tests: shapes, covers, owners and layouts the ops must all handle."""

from __future__ import annotations

from dataclasses import dataclass

import torch

# The generators live in the package, shared with the benchmarks; the tests import them from here.
from ale_kernels.testing.problems import (  # noqa: F401
    Problem,
    diffusers_layout,
    make_problem,
    make_shared_qk_problem,
)


@dataclass
class FuzzCase:
    """One drawn case of :func:`fuzz_cases`: the problem, the mask value and the draws a test may reuse."""

    problem: Problem
    mask_value: float
    restrict: bool
    seed: int


def fuzz_cases(max_length: int):
    """A hypothesis strategy over the whole ``region_attention`` contract: batch, heads, ragged lengths up to
    ``max_length``, head dims, token counts, regions, keys per region, restriction, blind rows, broadcast
    routing, both mask kinds and a finite non-published one, and every layout."""
    from hypothesis import strategies as st

    @st.composite
    def cases(draw) -> FuzzCase:
        restrict = draw(st.booleans())
        seed = draw(st.integers(0, 2**16))
        problem = make_problem(
            draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, max_length)),
            draw(st.sampled_from([8, 16, 40, 80])), draw(st.integers(1, 80)), draw(st.integers(1, 7)),
            k_per_region=draw(st.booleans()), restrict=restrict,
            blind_rows=draw(st.integers(0, 5)) if restrict else 0, shared_routing=draw(st.booleans()),
            layout=draw(st.sampled_from(["contiguous", "diffusers", "sliced"])), seed=seed,
        )  # fmt: skip
        mask_value = draw(st.sampled_from([float("-inf"), -100.0, -1.5]))
        return FuzzCase(problem, mask_value, restrict, seed)

    return cases()


def _reference_and_oracle(op, args: tuple, kwargs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """``op`` with the reference backend at the inputs' precision, and on the inputs upcast to float64."""
    from ale_kernels.testing.tolerance import upcast

    reference = op(*args, backend="reference", **kwargs)
    oracle = op(*upcast(args), backend="reference", **dict(zip(kwargs, upcast(kwargs.values()), strict=True)))
    return reference, oracle


def assert_region_attention_matches(problem: Problem, backend: str, mask_value: float = float("-inf"), **extra) -> None:
    """``region_attention`` with ``backend`` is as close to the float64 oracle as the policy allows."""
    from ale_kernels import region_attention
    from ale_kernels.testing.tolerance import assert_close_to_oracle

    args = (problem.q, problem.k, problem.v, problem.q_region)
    kwargs = dict(problem.kwargs(), mask_value=mask_value, **extra)
    expected, oracle = _reference_and_oracle(region_attention, args, kwargs)
    got = region_attention(*args, backend=backend, **kwargs)
    assert got.shape == expected.shape and got.dtype == problem.q.dtype
    assert not torch.isnan(got).any()
    assert_close_to_oracle(got, expected, oracle, dtype=problem.q.dtype, name=f"region_attention[{backend}]")


def assert_token_softmax_matches(problem: Problem, backend: str, **kwargs) -> None:
    """``token_restricted_softmax`` with ``backend`` is as close to the float64 oracle as the policy allows."""
    from ale_kernels import token_restricted_softmax
    from ale_kernels.testing.tolerance import assert_close_to_oracle

    k = problem.k[:, 0] if problem.k.dim() == 5 else problem.k
    common = dict(q_cover=problem.q_cover, token_owner=problem.token_owner, **kwargs)
    expected, oracle = _reference_and_oracle(token_restricted_softmax, (problem.q, k), common)
    got = token_restricted_softmax(problem.q, k, backend=backend, **common)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    assert not torch.isnan(got).any()
    name = f"token_restricted_softmax[{backend}]"
    assert_close_to_oracle(got, expected, oracle, dtype=problem.q.dtype, name=name)


def assert_shared_qk_matches(problem: tuple, backend: str, **kwargs) -> None:
    """``shared_qk_attention`` with ``backend`` is as close to the float64 oracle as the policy allows, stream
    by stream."""
    from ale_kernels import shared_qk_attention
    from ale_kernels.testing.tolerance import assert_close_to_oracle

    q, k, vs = problem
    expected, oracle = _reference_and_oracle(shared_qk_attention, (q, k, vs), kwargs)
    got = shared_qk_attention(q, k, vs, backend=backend, **kwargs)
    assert isinstance(got, list) and len(got) == len(vs)
    for stream, (out, ref, exact) in enumerate(zip(got, expected, oracle, strict=True)):
        assert out.shape == q.shape and out.dtype == q.dtype
        assert out.transpose(1, 2).is_contiguous()  # stored as (B, L, H, D)
        assert not torch.isnan(out).any()
        assert_close_to_oracle(out, ref, exact, dtype=q.dtype, name=f"shared_qk_attention[{backend}] stream {stream}")
