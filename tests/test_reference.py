"""The reference backend against an independent per-pixel oracle, and the contract's exact properties."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ale_kernels import region_attention, token_restricted_softmax
from ale_kernels.testing.tolerance import assert_close_to_oracle, upcast
from tests.problems import make_problem


def pixel_oracle(problem, scale: float, mask_value: float, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The contract's formula, one pixel at a time in ``dtype`` (float64: the oracle), sharing no code with the
    library."""
    q, k, v = problem.q.to(dtype), problem.k.to(dtype), problem.v.to(dtype)
    batch, heads, length, _ = q.shape
    tokens = k.shape[-2]
    regions = problem.q_region.reshape(-1, length).expand(batch, length)
    out = torch.zeros(q.shape, dtype=dtype)
    for b in range(batch):
        for p in range(length):
            r = int(regions[b, p])
            keys = k[b, r] if k.dim() == 5 else k[b]
            bias = torch.zeros(tokens, dtype=dtype)
            if problem.token_owner is not None:
                owners = problem.token_owner.reshape(-1, tokens).expand(batch, tokens)[b].tolist()
                cover = int(problem.q_cover.reshape(-1, length).expand(batch, length)[b, p])
                for t, owner in enumerate(owners):
                    if owner >= 0 and not (cover >> owner) & 1:
                        bias[t] = mask_value
            for h in range(heads):
                scores = scale * (keys[h] @ q[b, h, p]) + bias
                if torch.isinf(scores).all():
                    continue  # nothing allowed under the hard mask: the row stays zero
                out[b, h, p] = torch.softmax(scores, 0) @ v[b, r, h]
    return out


@pytest.mark.parametrize("mask_value", [float("-inf"), -100.0, -3.0])
@pytest.mark.parametrize("k_per_region", [False, True])
@pytest.mark.parametrize("blind_rows", [0, 4])
def test_reference_matches_pixel_oracle(mask_value, k_per_region, blind_rows):
    problem = make_problem(
        length=19, head_dim=16, tokens=9, regions=3, k_per_region=k_per_region, blind_rows=blind_rows
    )
    scale = 0.37
    expected = pixel_oracle(problem, scale, mask_value)
    got = region_attention(
        problem.q, problem.k, problem.v, problem.q_region, scale=scale, mask_value=mask_value, backend="reference",
        **problem.kwargs(),
    )  # fmt: skip
    # The same formula in float32 is the yardstick: scores shifted by -100 keep only ~1e-5 absolute precision
    # (the ulp of 100 is 7.6e-6), in the library and in the per-pixel loop alike.
    same_precision = pixel_oracle(problem, scale, mask_value, torch.float32)
    assert_close_to_oracle(got, same_precision, expected, name="reference backend")


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_blind_rows_give_zeros_with_hard_mask_and_plain_attention_with_finite_mask(backend):
    problem = make_problem(length=23, blind_rows=5, regions=2)
    hard = region_attention(problem.q, problem.k, problem.v, problem.q_region, backend=backend, **problem.kwargs())
    assert not torch.isnan(hard).any()
    assert torch.equal(hard[:, :, :5], torch.zeros_like(hard[:, :, :5]))
    soft = region_attention(
        problem.q,
        problem.k,
        problem.v,
        problem.q_region,
        mask_value=-100.0,
        backend=backend,
        **problem.kwargs(),
    )
    # Every score of a blind row is shifted by the same -100: softmax is unchanged, so plain attention.
    for b in range(2):
        for p in range(5):
            r = int(problem.q_region[b, p])
            q, k, v = problem.q[b, :, p : p + 1], problem.k[b], problem.v[b, r]
            # The float32 yardstick shifts every score by -100 too (it costs float32 precision); the float64
            # oracle need not, softmax being shift-invariant.
            shifted = F.scaled_dot_product_attention(q, k, v, attn_mask=torch.full((1, k.shape[-2]), -100.0))
            plain = F.scaled_dot_product_attention(*upcast((q, k, v)))
            assert_close_to_oracle(soft[b, :, p : p + 1], shifted, plain, name=f"blind row {p} of entry {b}")


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_single_region_without_restriction_is_plain_sdpa(backend):
    problem = make_problem(length=40, regions=1, restrict=False)
    got = region_attention(problem.q, problem.k, problem.v, problem.q_region, backend=backend)
    expected = F.scaled_dot_product_attention(problem.q, problem.k, problem.v[:, 0])
    oracle = F.scaled_dot_product_attention(*upcast((problem.q, problem.k, problem.v[:, 0])))
    assert_close_to_oracle(got, expected, oracle, name=f"{backend} backend")


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_each_pixel_reads_only_its_own_region_values(backend):
    """Values of a region no pixel belongs to cannot change any output."""
    problem = make_problem(length=30, regions=4)
    problem.q_region.clamp_(max=2)
    before = region_attention(problem.q, problem.k, problem.v, problem.q_region, backend=backend, **problem.kwargs())
    problem.v[:, 3] = 1e3
    after = region_attention(problem.q, problem.k, problem.v, problem.q_region, backend=backend, **problem.kwargs())
    assert torch.equal(before, after)


def test_softmax_rows_sum_to_one_or_zero():
    problem = make_problem(length=31, blind_rows=3)
    probs = token_restricted_softmax(
        problem.q, problem.k, q_cover=problem.q_cover, token_owner=problem.token_owner, backend="reference",
        reduce_heads=False,
    )  # fmt: skip
    owner, cover = problem.token_owner, problem.q_cover
    owned_bit = (cover[:, :, None].long() >> owner.clamp(min=0)[:, None, :].long()) & 1
    allowed = (owner[:, None, :] < 0) | (owned_bit == 1)  # (B, L, S), computed here independently
    sees_something = allowed.any(-1)[:, None].expand(-1, 2, -1)
    assert not sees_something[:, :, :3].any()  # the blind rows are blind
    sums = probs.sum(-1)
    # The sums of float32 probabilities against the exact 1 or 0; the yardstick is the float32 sum of the
    # float64 probabilities, rounded.
    exact = dict(q_cover=cover, token_owner=owner, backend="reference", reduce_heads=False)
    oracle = token_restricted_softmax(problem.q.double(), problem.k.double(), **exact)
    assert_close_to_oracle(sums, oracle.float().sum(-1), sees_something.double(), name="row sums")
    # Disallowed tokens get exactly zero probability under the hard mask.
    assert torch.equal(probs * ~allowed[:, None], torch.zeros_like(probs))


def test_output_layout_is_blhd_so_diffusers_reshape_is_free():
    problem = make_problem()
    for backend in ("reference", "torch"):
        out = region_attention(problem.q, problem.k, problem.v, problem.q_region, backend=backend, **problem.kwargs())
        assert out.transpose(1, 2).is_contiguous()
