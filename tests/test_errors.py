"""Bad input gets a clear error that names the argument and what was expected."""

from __future__ import annotations

import pytest
import torch

from ale_kernels import region_attention, shared_qk_attention, token_restricted_softmax
from tests.problems import make_problem, make_shared_qk_problem


@pytest.fixture
def problem():
    return make_problem(batch=2, heads=2, length=10, head_dim=16, tokens=7, regions=3)


def call(problem, **overrides):
    args = dict(
        q=problem.q, k=problem.k, v=problem.v, q_region=problem.q_region,
        q_cover=problem.q_cover, token_owner=problem.token_owner, backend="torch",
    )  # fmt: skip
    args.update(overrides)
    q, k, v, region = args.pop("q"), args.pop("k"), args.pop("v"), args.pop("q_region")
    return region_attention(q, k, v, region, **args)


@pytest.mark.parametrize(
    "overrides, error, pattern",
    [
        (lambda p: dict(q=p.q[0]), ValueError, r"q must have shape \(B, H, L, D\)"),
        (lambda p: dict(q=p.q.numpy()), TypeError, r"q must be a torch.Tensor"),
        (lambda p: dict(v=p.v[:, 0]), ValueError, r"v must have shape \(B, R, H, S, D\)"),
        (
            lambda p: dict(v=p.v[..., :8]),
            ValueError,
            r"v must have shape \(B, R, H, S, D\) = \(2, 3, 2, 7, 16\)",
        ),
        (
            lambda p: dict(k=p.k[..., :5, :]),
            ValueError,
            r"k must have shape \(B, H, S, D\) = \(2, 2, 7, 16\)",
        ),
        (lambda p: dict(k=p.k[0]), ValueError, r"k must have shape \(B, H, S, D\) or \(B, R, H, S, D\)"),
        (
            lambda p: dict(k=p.k.expand(2, 2, 7, 16)[:, None].expand(2, 4, 2, 7, 16)),
            ValueError,
            r"k must have shape",
        ),
        (lambda p: dict(k=p.k.half()), TypeError, r"k has dtype torch.float16 but q has torch.float32"),
        (lambda p: dict(q=p.q.int()), TypeError, r"q must be float16, bfloat16, float32 or float64"),
        (
            lambda p: dict(q_region=p.q_region[:, :5]),
            ValueError,
            r"q_region must have shape \(B, L\) = \(2, 10\)",
        ),
        (lambda p: dict(q_region=p.q_region.float()), TypeError, r"q_region must have an integer dtype"),
        (
            lambda p: dict(q_region=p.q_region + 3),
            ValueError,
            r"q_region values must lie in \[0, R\) = \[0, 3\)",
        ),
        (lambda p: dict(q_region=p.q_region - 1), ValueError, r"q_region values must lie in \[0, R\)"),
        (lambda p: dict(q_cover=p.q_cover[0, :3]), ValueError, r"q_cover must have shape"),
        (
            lambda p: dict(q_cover=p.q_cover - 100),
            ValueError,
            r"q_cover must be a non-negative int32 bit mask",
        ),
        (
            lambda p: dict(token_owner=p.token_owner[:, :3]),
            ValueError,
            r"token_owner must have shape \(B, S\)",
        ),
        (
            lambda p: dict(token_owner=p.token_owner.float()),
            TypeError,
            r"token_owner must have an integer dtype",
        ),
        (lambda p: dict(token_owner=p.token_owner * 0 + 31), ValueError, r"at most 31 objects"),
        (lambda p: dict(token_owner=p.token_owner * 0 - 2), ValueError, r"token_owner values must be -1"),
        (lambda p: dict(mask_value=float("nan")), ValueError, r"mask_value must be -inf or finite"),
        (lambda p: dict(mask_value=float("inf")), ValueError, r"mask_value must be -inf or finite"),
        (lambda p: dict(mask_value="big"), TypeError, r"mask_value must be a float"),
        (lambda p: dict(scale=float("inf")), ValueError, r"scale must be a finite float"),
        (lambda p: dict(backend="cuda"), ValueError, r"backend must be one of"),
        (lambda p: dict(backend="triton"), ValueError, r"backend='triton' runs CUDA tensors"),
        (lambda p: dict(q_region=p.q_region.to("meta")), ValueError, r"q_region is on meta but q is on cpu"),
        (lambda p: dict(v=p.v.to("meta")), ValueError, r"v is on meta but q is on cpu"),
    ],
)
def test_region_attention_rejects(problem, overrides, error, pattern, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(error, match=pattern):
        call(problem, **overrides(problem))


def test_more_than_31_objects_is_rejected_even_with_many_regions():
    problem = make_problem(length=10, tokens=7, regions=40)
    owner = torch.full((7,), 35)
    with pytest.raises(ValueError, match=r"at most 31 objects"):
        region_attention(problem.q, problem.k, problem.v, problem.q_region, token_owner=owner, backend="torch")


def test_float64_is_rejected_by_triton(problem, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with pytest.raises(TypeError, match=r"backend='triton' supports float16, bfloat16 and float32"):
        call(problem, q=problem.q.double(), k=problem.k.double(), v=problem.v.double(), backend="triton")


@pytest.mark.parametrize(
    "overrides, error, pattern",
    [
        (dict(q_cover=None), ValueError, r"q_cover is required when token_owner is given"),
        (dict(tokens=[0, 7]), ValueError, r"tokens must lie in \[0, S\) = \[0, 7\)"),
        (dict(tokens=[-1]), ValueError, r"tokens must lie in \[0, S\)"),
        (dict(tokens=torch.zeros(2, 2, dtype=torch.long)), ValueError, r"tokens must be a 1-D integer"),
        (dict(tokens=torch.zeros(2)), ValueError, r"tokens must be a 1-D integer"),
        (dict(reduce_heads=1), TypeError, r"reduce_heads must be a bool"),
        (dict(k="keys"), TypeError, r"k must be a torch.Tensor"),
    ],
)
def test_token_softmax_rejects(problem, overrides, error, pattern):
    args = dict(k=problem.k, q_cover=problem.q_cover, token_owner=problem.token_owner, backend="torch")
    args.update(overrides)
    with pytest.raises(error, match=pattern):
        token_restricted_softmax(problem.q, **args)


def test_token_softmax_rejects_mismatched_keys(problem):
    with pytest.raises(ValueError, match=r"k must have shape \(B, H, S, D\) = \(2, 2, S >= 1, 16\)"):
        token_restricted_softmax(problem.q, problem.k[..., :8], backend="torch")


def test_inputs_are_left_untouched(problem):
    before = [t.clone() for t in (problem.q, problem.k, problem.v, problem.q_region, problem.q_cover)]
    for backend in ("reference", "torch"):
        call(problem, backend=backend, mask_value=-100.0)
    after = (problem.q, problem.k, problem.v, problem.q_region, problem.q_cover)
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))


@pytest.fixture
def qkv():
    return make_shared_qk_problem(batch=2, heads=2, length=10, n_keys=7, head_dim=16, streams=2)


@pytest.mark.parametrize(
    "overrides, error, pattern",
    [
        (lambda q, k, vs: dict(q=q[0]), ValueError, r"q must have shape \(B, H, L, D\) \(4 dims\), got \(2, 10, 16\)"),
        (lambda q, k, vs: dict(k=k[..., :8]), ValueError, r"k must have shape \(B, H, Lk, D\) = \(2, 2, Lk >= 1, 16\)"),
        (lambda q, k, vs: dict(k=k[:1]), ValueError, r"k must have shape \(B, H, Lk, D\) = \(2, 2, Lk >= 1, 16\)"),
        (lambda q, k, vs: dict(k=k[:, :, :0], vs=[v[:, :, :0] for v in vs]), ValueError, r"Lk >= 1"),
        (lambda q, k, vs: dict(q=q[..., :0]), ValueError, r"q must have a head dim D >= 1"),
        (lambda q, k, vs: dict(k="keys"), TypeError, r"k must be a torch.Tensor of shape \(B, H, Lk, D\)"),
        (lambda q, k, vs: dict(k=k.half()), TypeError, r"k has dtype torch.float16 but q has torch.float32"),
        (lambda q, k, vs: dict(vs=[]), ValueError, r"vs must hold at least one value tensor .* = \(2, 2, 7, 16\)"),
        (lambda q, k, vs: dict(vs=vs[0]), TypeError, r"vs must be a list or tuple .* got a single Tensor"),
        (lambda q, k, vs: dict(vs=iter(vs)), TypeError, r"vs must be a list or tuple .* got list_iterator"),
        (
            lambda q, k, vs: dict(vs=[vs[0], vs[1][:, :, :5]]),
            ValueError,
            r"vs\[1\] must have shape \(B, H, Lk, D\) = \(2, 2, 7, 16\) like k, got \(2, 2, 5, 16\)",
        ),
        (
            lambda q, k, vs: dict(vs=[vs[0], vs[1][0]]),
            ValueError,
            r"vs\[1\] must have shape \(B, H, Lk, D\) \(4 dims\)",
        ),
        (lambda q, k, vs: dict(vs=[vs[0], vs[1].half()]), TypeError, r"vs\[1\] has dtype torch.float16 but k has"),
        (lambda q, k, vs: dict(vs=[vs[0].to("meta"), vs[1]]), ValueError, r"vs\[0\] is on meta but k is on cpu"),
        (lambda q, k, vs: dict(vs=[vs[0], vs[1].int()]), TypeError, r"vs\[1\] must be float16, bfloat16, float32"),
        (lambda q, k, vs: dict(vs=[vs[0], None]), TypeError, r"vs\[1\] must be a torch.Tensor"),
        (lambda q, k, vs: dict(scale=float("nan")), ValueError, r"scale must be a finite float"),
        (lambda q, k, vs: dict(backend="flash"), ValueError, r"backend must be one of"),
        (lambda q, k, vs: dict(backend="triton"), ValueError, r"backend='triton' runs CUDA tensors"),
    ],
)
def test_shared_qk_attention_rejects(qkv, overrides, error, pattern, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    q, k, vs = qkv
    args = dict(q=q, k=k, vs=vs, backend="torch")
    args.update(overrides(q, k, vs))
    with pytest.raises(error, match=pattern):
        shared_qk_attention(args.pop("q"), args.pop("k"), args.pop("vs"), **args)


def test_shared_qk_float64_is_rejected_by_triton(qkv, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    q, k, vs = qkv
    with pytest.raises(TypeError, match=r"backend='triton' supports float16, bfloat16 and float32"):
        shared_qk_attention(q.double(), k.double(), [v.double() for v in vs], backend="triton")


def test_shared_qk_inputs_are_left_untouched(qkv):
    before = [t.clone() for t in (qkv[0], qkv[1], *qkv[2])]
    for backend in ("reference", "torch"):
        shared_qk_attention(*qkv, backend=backend)
    after = (qkv[0], qkv[1], *qkv[2])
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
