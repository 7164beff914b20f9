"""The ``torch`` backend against the reference over the grid of shapes, dtypes, masks and layouts."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings

from ale_kernels import torch_impl
from tests.problems import assert_region_attention_matches, assert_token_softmax_matches, fuzz_cases, make_problem

HEAD_DIMS = [16, 40, 64, 80, 128, 160]
TOKENS = [1, 16, 77, 154]
MASK_VALUES = [float("-inf"), -100.0]


@pytest.mark.parametrize("tokens", TOKENS)
@pytest.mark.parametrize("head_dim", HEAD_DIMS)
@pytest.mark.parametrize("mask_value", MASK_VALUES)
def test_head_dims_and_token_counts(head_dim, tokens, mask_value):
    problem = make_problem(length=45, head_dim=head_dim, tokens=tokens, regions=3, seed=head_dim + tokens)
    assert_region_attention_matches(problem, "torch", mask_value)


@pytest.mark.parametrize("length", [1, 7, 64, 257])
@pytest.mark.parametrize("regions", [1, 2, 5, 8])
@pytest.mark.parametrize("k_per_region", [False, True])
def test_ragged_lengths_and_region_counts(length, regions, k_per_region):
    problem = make_problem(length=length, regions=regions, k_per_region=k_per_region, seed=length * regions)
    assert_region_attention_matches(problem, "torch", -100.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("mask_value", MASK_VALUES)
def test_dtypes(dtype, mask_value):
    problem = make_problem(length=70, head_dim=40, dtype=dtype)
    assert_region_attention_matches(problem, "torch", mask_value)


@pytest.mark.parametrize("layout", ["diffusers", "sliced"])
@pytest.mark.parametrize("shared_routing", [False, True])
def test_layouts_and_broadcast_routing(layout, shared_routing):
    problem = make_problem(length=50, layout=layout, shared_routing=shared_routing, k_per_region=True)
    assert not problem.q.is_contiguous()
    assert_region_attention_matches(problem, "torch", -100.0)


@pytest.mark.parametrize("mask_value", MASK_VALUES)
@pytest.mark.parametrize("blind_rows", [0, 6])
def test_overlaps_blind_rows_and_no_restriction(mask_value, blind_rows):
    for restrict in (True, False):
        problem = make_problem(length=60, regions=4, restrict=restrict, blind_rows=blind_rows if restrict else 0)
        assert_region_attention_matches(problem, "torch", mask_value)


@pytest.mark.parametrize("mask_value", MASK_VALUES)
def test_many_cover_groups_take_the_per_row_path(monkeypatch, mask_value):
    """Covers with more distinct groups than MAX_GROUPS run per region with a per-row bias."""
    monkeypatch.setattr(torch_impl, "MAX_GROUPS", 2)
    problem = make_problem(length=80, regions=5, blind_rows=5)
    assert_region_attention_matches(problem, "torch", mask_value)


@pytest.mark.parametrize("reduce_heads", [True, False])
@pytest.mark.parametrize("mask_value", MASK_VALUES)
@pytest.mark.parametrize("tokens", [None, [0], [3, 1, 3, 76]])
def test_token_softmax(reduce_heads, mask_value, tokens, monkeypatch):
    monkeypatch.setattr(torch_impl, "_SOFTMAX_CHUNK", 16)  # several row chunks
    problem = make_problem(length=45, head_dim=80, blind_rows=3)
    assert_token_softmax_matches(problem, "torch", reduce_heads=reduce_heads, mask_value=mask_value, tokens=tokens)


@settings(max_examples=60, deadline=None)
@given(case=fuzz_cases(max_length=90))
def test_fuzz_against_reference(case):
    assert_region_attention_matches(case.problem, "torch", case.mask_value)
    if case.restrict and case.problem.k.dim() == 4:
        reduce_heads = case.seed % 2 == 0
        assert_token_softmax_matches(case.problem, "torch", mask_value=case.mask_value, reduce_heads=reduce_heads)
