"""The reference backend against an independent per-pixel oracle, and the contract's exact properties."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ale_kernels import region_attention, token_restricted_softmax
from tests.problems import make_problem


def pixel_oracle(problem, scale: float, mask_value: float) -> torch.Tensor:
    """The contract's formula, one pixel at a time in float64, sharing no code with the library."""
    q, k, v = problem.q.double(), problem.k.double(), problem.v.double()
    batch, heads, length, _ = q.shape
    tokens = k.shape[-2]
    regions = problem.q_region.reshape(-1, length).expand(batch, length)
    out = torch.zeros(q.shape, dtype=torch.float64)
    for b in range(batch):
        for p in range(length):
            r = int(regions[b, p])
            keys = k[b, r] if k.dim() == 5 else k[b]
            bias = torch.zeros(tokens, dtype=torch.float64)
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
    # float32 scores shifted by -100 keep ~1e-5 absolute precision (the ulp of 100 is 7.6e-6).
    torch.testing.assert_close(got.double(), expected, atol=2e-5, rtol=1e-5)


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
            plain = F.scaled_dot_product_attention(problem.q[b, :, p : p + 1], problem.k[b], problem.v[b, r])
            torch.testing.assert_close(soft[b, :, p : p + 1], plain, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_single_region_without_restriction_is_plain_sdpa(backend):
    problem = make_problem(length=40, regions=1, restrict=False)
    got = region_attention(problem.q, problem.k, problem.v, problem.q_region, backend=backend)
    expected = F.scaled_dot_product_attention(problem.q, problem.k, problem.v[:, 0])
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


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
    torch.testing.assert_close(sums, sees_something.to(sums.dtype))
    # Disallowed tokens get exactly zero probability under the hard mask.
    assert torch.equal(probs * ~allowed[:, None], torch.zeros_like(probs))


def test_output_layout_is_blhd_so_diffusers_reshape_is_free():
    problem = make_problem()
    for backend in ("reference", "torch"):
        out = region_attention(problem.q, problem.k, problem.v, problem.q_region, backend=backend, **problem.kwargs())
        assert out.transpose(1, 2).is_contiguous()
