"""``shared_qk_attention``: the reference against independent math, the torch backend against the reference,
layouts, and ``torch.compile``."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from ale_kernels import shared_qk_attention, torch_impl
from ale_kernels.testing.tolerance import assert_close_to_oracle, upcast
from tests.problems import assert_shared_qk_matches, make_shared_qk_problem

HEAD_DIMS = [16, 40, 64, 80, 128, 160]
LENGTHS = [1, 7, 77, 130]


def test_reference_matches_float64_softmax_and_sdpa_per_stream():
    q, k, vs = make_shared_qk_problem(batch=2, heads=3, length=19, n_keys=23, head_dim=16, streams=2)
    scale = 0.37
    got = shared_qk_attention(q, k, vs, scale=scale, backend="reference")
    # Written out here in float64, sharing no code with the library.
    probs = torch.softmax(scale * torch.einsum("bhld,bhsd->bhls", q.double(), k.double()), dim=-1)
    for out, v in zip(got, vs, strict=True):
        # float32 SDPA is the same-precision yardstick.
        same_precision = F.scaled_dot_product_attention(q, k, v, scale=scale)
        assert_close_to_oracle(out, same_precision, probs @ v.double(), name="reference backend")


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_default_scale_is_inverse_sqrt_head_dim(backend):
    q, k, vs = make_shared_qk_problem(head_dim=40, streams=1)
    got = shared_qk_attention(q, k, vs, backend=backend)[0]
    oracle = F.scaled_dot_product_attention(*upcast((q, k, vs[0])))
    assert_close_to_oracle(got, F.scaled_dot_product_attention(q, k, vs[0]), oracle, name=f"{backend} backend")


@pytest.mark.parametrize("streams", [1, 2, 3])
@pytest.mark.parametrize("head_dim", HEAD_DIMS)
def test_head_dims_and_stream_counts(head_dim, streams):
    assert_shared_qk_matches(
        make_shared_qk_problem(length=45, n_keys=70, head_dim=head_dim, streams=streams, seed=head_dim), "torch"
    )


@pytest.mark.parametrize("n_keys", LENGTHS)
@pytest.mark.parametrize("length", LENGTHS)
def test_ragged_lengths(length, n_keys):
    problem = make_shared_qk_problem(length=length, n_keys=n_keys, streams=2, seed=length * n_keys)
    assert_shared_qk_matches(problem, "torch")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("streams", [1, 2, 3])
def test_dtypes(dtype, streams):
    assert_shared_qk_matches(make_shared_qk_problem(length=70, n_keys=66, dtype=dtype, streams=streams), "torch")


@pytest.mark.parametrize("layout", ["diffusers", "sliced"])
@pytest.mark.parametrize("streams", [2, 3])
def test_layouts(layout, streams):
    q, k, vs = problem = make_shared_qk_problem(length=50, n_keys=50, streams=streams, layout=layout)
    assert not q.is_contiguous() and not k.is_contiguous() and not any(v.is_contiguous() for v in vs)
    assert_shared_qk_matches(problem, "torch")


def test_one_sdpa_per_stream_off_the_padded_devices(monkeypatch):
    """The per-stream path the torch backend takes on CUDA, run here on CPU."""
    monkeypatch.setattr(torch_impl, "CONCAT_STREAM_DEVICES", ())
    assert_shared_qk_matches(make_shared_qk_problem(length=33, n_keys=41, streams=3, layout="diffusers"), "torch")


def test_streams_share_nothing_but_the_softmax():
    """Each output depends on its own stream only: changing one stream leaves the others' outputs alone."""
    q, k, vs = make_shared_qk_problem(streams=3)
    for backend in ("reference", "torch"):
        before = shared_qk_attention(q, k, vs, backend=backend)
        after = shared_qk_attention(q, k, [vs[0], vs[1] * 0 + 1e3, vs[2]], backend=backend)
        assert torch.equal(before[0], after[0]) and torch.equal(before[2], after[2])
        # A constant stream comes back as that constant, up to float32 rounding of the probabilities' sum.
        constant = torch.full_like(after[1], 1e3)
        yardstick = F.scaled_dot_product_attention(q, k, constant)
        assert_close_to_oracle(after[1], yardstick, constant.double(), name=f"{backend} constant stream")


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_outputs_are_stored_blhd_and_fresh(backend):
    problems = [
        make_shared_qk_problem(batch=1, heads=1, length=1, streams=2),  # every layout is contiguous here
        make_shared_qk_problem(streams=3, layout="diffusers"),
    ]
    for q, k, vs in problems:
        outs = shared_qk_attention(q, k, tuple(vs), backend=backend)
        assert isinstance(outs, list) and len(outs) == len(vs)
        for out in outs:
            assert out.shape == q.shape and out.dtype == q.dtype
            assert out.transpose(1, 2).is_contiguous()
        pointers = {o.data_ptr() for o in outs} | {t.data_ptr() for t in (q, k, *vs)}
        assert len(pointers) == len(outs) + 2 + len(vs)


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_empty_queries(backend):
    q, k, vs = make_shared_qk_problem(length=0, n_keys=5, streams=2)
    outs = shared_qk_attention(q, k, vs, backend=backend)
    assert [tuple(o.shape) for o in outs] == [tuple(q.shape)] * 2


def test_triton_stride_alignment_hint():
    """The alignment the Triton kernel promises the compiler must divide every stride it multiplies."""
    from ale_kernels.kernels.common import stride_alignment

    q, _, _ = make_shared_qk_problem(heads=8, head_dim=40, layout="diffusers")  # head stride 40, row stride 320
    assert stride_alignment(q) == 8
    assert stride_alignment(q, torch.randn(2, 8, 37, 64)) == 8
    assert stride_alignment(torch.randn(2, 8, 37, 64)) == 16
    assert stride_alignment(make_shared_qk_problem(layout="sliced")[0]) == 16  # the head-dim stride 2 is not used
    assert stride_alignment(torch.randn(2, 3, 5, 7)) == 1
    # A size-1 dim's offset is always 0, whatever its stride.
    assert stride_alignment(torch.randn(3 * 5 * 16).as_strided((1, 3, 5, 16), (7, 80, 16, 1))) == 16


@settings(max_examples=60, deadline=None)
@given(
    batch=st.integers(1, 3),
    heads=st.integers(1, 4),
    length=st.integers(1, 90),
    n_keys=st.integers(1, 90),
    head_dim=st.sampled_from([8, 16, 40, 80]),
    streams=st.integers(1, 4),
    layout=st.sampled_from(["contiguous", "diffusers", "sliced"]),
    scale=st.sampled_from([None, 0.05, 1.0]),
    seed=st.integers(0, 2**16),
)
def test_fuzz_against_reference(batch, heads, length, n_keys, head_dim, streams, layout, scale, seed):
    problem = make_shared_qk_problem(batch, heads, length, n_keys, head_dim, streams=streams, layout=layout, seed=seed)
    assert_shared_qk_matches(problem, "torch", scale=scale)


class InjectedSelfAttention(torch.nn.Module):
    """ALE's Q/K injection as a diffusers-like block: the target uses the source's Q and K with its own V."""

    def __init__(self, dim: int = 32, heads: int = 2):
        super().__init__()
        self.heads = heads
        self.to_q = torch.nn.Linear(dim, dim, bias=False)
        self.to_k = torch.nn.Linear(dim, dim, bias=False)
        self.to_v = torch.nn.Linear(dim, dim, bias=False)
        self.to_out = torch.nn.Linear(dim, dim)

    def forward(self, source, target):
        batch, length, dim = source.shape

        def heads(x):
            return x.view(batch, length, self.heads, dim // self.heads).transpose(1, 2)

        q, k = heads(self.to_q(source)), heads(self.to_k(source))
        outs = shared_qk_attention(q, k, [heads(self.to_v(source)), heads(self.to_v(target))], backend="torch")
        return [self.to_out(o.transpose(1, 2).reshape(batch, length, dim)) for o in outs]


@pytest.mark.parametrize("compile_backend", ["aot_eager", "inductor"])
def test_fullgraph_compile_matches_eager(compile_backend):
    torch.manual_seed(0)
    module = InjectedSelfAttention().eval()
    source, target = torch.randn(2, 36, 32), torch.randn(2, 36, 32)
    torch._dynamo.reset()
    compiled = torch.compile(module, fullgraph=True, backend=compile_backend)
    with torch.no_grad():
        expected = module(source, target)
        got = compiled(source, target)
    assert len(got) == 2
    with torch.no_grad():
        oracle = copy.deepcopy(module).double()(source.double(), target.double())
    for out, ref, exact in zip(got, expected, oracle, strict=True):
        assert_close_to_oracle(out, ref, exact, name=f"{compile_backend} compiled")
