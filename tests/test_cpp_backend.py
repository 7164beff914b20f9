"""The ``cpp`` backend (the C++ CPU kernel in ``csrc/``) against the reference, and its fallback.

The kernel is compiled on first use (about a minute, once per build cache) unless ``ale_kernels._C`` was
built at install time. A kernel that cannot be built fails these tests with the reason rather than
skipping them: the fallback is tested separately, by making the loader fail.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import given, settings

from ale_kernels import _cpp, region_attention, resolve_backend, shared_qk_attention, token_restricted_softmax
from ale_kernels.reference import region_attention_reference
from ale_kernels.testing.tolerance import assert_close_to_oracle, upcast
from tests.problems import (
    assert_region_attention_matches,
    fuzz_cases,
    make_problem,
    make_shared_qk_problem,
)

HEAD_DIMS = [16, 40, 64, 80, 128, 160]
TOKENS = [1, 16, 77, 154]
MASK_VALUES = [float("-inf"), -100.0]


@pytest.fixture(scope="session", autouse=True)
def cpp_kernel() -> None:
    """Build (or load) the kernel once per test process; a failure names its cause."""
    if not _cpp.load():
        pytest.fail(f"the C++ kernel did not build or load: {_cpp.failure()}")


def simd_levels() -> list[int]:
    """Every kernel copy this CPU runs (0 plain, 1 AVX2+FMA, 2 AVX-512)."""
    return list(range(_cpp.simd_level() + 1))


def run_op(problem, mask_value: float, **kwargs) -> tuple[torch.Tensor, tuple]:
    """The C++ kernel's function called directly (routing maps brought to ``(B, L)`` / ``(B, S)``): its output
    and the ``(q_region, q_cover, token_owner)`` it was given."""
    from ale_kernels.plan import default_cover

    batch, _, length, head_dim = problem.q.shape
    tokens = problem.v.shape[3]

    def per_batch(t, size):
        return None if t is None else (t if t.dim() == 2 else t[None].expand(batch, size))

    region = per_batch(problem.q_region, length)
    cover = per_batch(problem.q_cover, length)
    cover = default_cover(region) if cover is None else cover
    owner = per_batch(problem.token_owner, tokens)
    return _cpp.region_attention_cpp(
        problem.q, problem.k, problem.v, region, cover, owner, head_dim**-0.5, mask_value, **kwargs
    ), (region, cover, owner)


@pytest.mark.parametrize("tokens", TOKENS)
@pytest.mark.parametrize("head_dim", HEAD_DIMS)
@pytest.mark.parametrize("mask_value", MASK_VALUES)
def test_head_dims_and_token_counts(head_dim, tokens, mask_value):
    problem = make_problem(length=45, head_dim=head_dim, tokens=tokens, regions=3, seed=head_dim + tokens)
    assert_region_attention_matches(problem, "cpp", mask_value)


@pytest.mark.parametrize("length", [1, 7, 64, 65, 257])
@pytest.mark.parametrize("regions", [1, 2, 5, 8])
@pytest.mark.parametrize("k_per_region", [False, True])
def test_ragged_lengths_and_region_counts(length, regions, k_per_region):
    problem = make_problem(length=length, regions=regions, k_per_region=k_per_region, seed=length * regions)
    assert_region_attention_matches(problem, "cpp", -100.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mask_value", MASK_VALUES)
def test_dtypes(dtype, mask_value):
    problem = make_problem(length=70, head_dim=40, dtype=dtype, k_per_region=dtype == torch.bfloat16)
    assert_region_attention_matches(problem, "cpp", mask_value)


def test_auto_picks_cpp_on_cpu_unless_opted_out(monkeypatch):
    cpu = torch.device("cpu")
    assert resolve_backend("auto", cpu, torch.float32) == "cpp"
    assert resolve_backend("auto", cpu, torch.bfloat16) == "cpp"
    assert resolve_backend("auto", cpu, torch.float64) == "torch"
    monkeypatch.setattr(_cpp, "AUTO", False)  # ALE_KERNELS_CPP=0
    assert resolve_backend("auto", cpu, torch.float32) == "torch"
    assert resolve_backend("cpp", cpu, torch.float32) == "cpp"


def test_float64_is_a_clear_error():
    problem = make_problem(length=5, dtype=torch.float64)
    with pytest.raises(TypeError, match=r"backend='cpp' supports float16, bfloat16 and float32 inputs, got float64"):
        region_attention(problem.q, problem.k, problem.v, problem.q_region, backend="cpp")


def test_non_cpu_tensors_are_a_clear_error():
    q, k = torch.empty(1, 1, 4, 8, device="meta"), torch.empty(1, 1, 3, 8, device="meta")
    v = torch.empty(1, 2, 1, 3, 8, device="meta")
    region = torch.zeros(4, dtype=torch.int64, device="meta")
    with pytest.raises(ValueError, match=r"backend='cpp' runs CPU tensors"):
        region_attention(q, k, v, region, backend="cpp")


@pytest.mark.parametrize("layout", ["diffusers", "sliced"])
@pytest.mark.parametrize("shared_routing", [False, True])
@pytest.mark.parametrize("k_per_region", [False, True])
def test_layouts_and_broadcast_routing(layout, shared_routing, k_per_region):
    problem = make_problem(length=50, layout=layout, shared_routing=shared_routing, k_per_region=k_per_region)
    assert not problem.q.is_contiguous()
    assert_region_attention_matches(problem, "cpp", -100.0)


@pytest.mark.parametrize("mask_value", MASK_VALUES)
@pytest.mark.parametrize("blind_rows", [0, 6])
def test_overlaps_blind_rows_and_no_restriction(mask_value, blind_rows):
    for restrict in (True, False):
        problem = make_problem(length=60, regions=4, restrict=restrict, blind_rows=blind_rows if restrict else 0)
        assert_region_attention_matches(problem, "cpp", mask_value)


def test_blind_rows_are_zero_with_an_exact_mask():
    problem = make_problem(length=30, regions=3, blind_rows=5)
    out = region_attention(
        problem.q, problem.k, problem.v, problem.q_region, **problem.kwargs(), mask_value=float("-inf"), backend="cpp"
    )
    assert torch.equal(out[:, :, :5], torch.zeros_like(out[:, :, :5]))


@pytest.mark.parametrize("key_tile", [8, 16, 40, 256])
@pytest.mark.parametrize("mask_value", MASK_VALUES)
@pytest.mark.parametrize("k_per_region", [False, True])
def test_every_simd_copy_and_key_tile(key_tile, mask_value, k_per_region):
    """Each machine-code copy of the kernel; key tiles small enough that the online softmax crosses several
    (and that rows blind in the first tiles find keys in later ones)."""
    problem = make_problem(length=150, head_dim=40, tokens=77, regions=4, k_per_region=k_per_region, blind_rows=4)
    for simd in simd_levels():
        got, (region, cover, owner) = run_op(problem, mask_value, key_tile=key_tile, simd=simd)
        scale = problem.q.shape[-1] ** -0.5
        args = (problem.q, problem.k, problem.v, region, cover, owner, scale, mask_value)
        assert got.transpose(1, 2).is_contiguous()  # stored as (B, L, H, D)
        expected, oracle = region_attention_reference(*args), region_attention_reference(*upcast(args))
        assert_close_to_oracle(got, expected, oracle, name=f"simd {simd}")


@pytest.mark.parametrize("head_dim", [3, 8, 20, 40, 160])
def test_plain_copy_on_odd_head_dims(head_dim):
    """Head dims that are not whole vectors, on the portable copy (what non-x86 machines run)."""
    problem = make_problem(length=33, head_dim=head_dim, tokens=19, regions=3, blind_rows=2)
    got, (region, cover, owner) = run_op(problem, -100.0, simd=0)
    args = (problem.q, problem.k, problem.v, region, cover, owner, head_dim**-0.5, -100.0)
    expected, oracle = region_attention_reference(*args), region_attention_reference(*upcast(args))
    assert_close_to_oracle(got, expected, oracle, name=f"plain copy, head dim {head_dim}")


def test_empty_queries():
    problem = make_problem(length=0)
    out = region_attention(problem.q, problem.k, problem.v, problem.q_region, backend="cpp")
    assert out.shape == problem.q.shape


def test_other_ops_asked_for_cpp_match_the_reference():
    """``backend="cpp"`` is accepted by the two ops the C++ kernel does not implement (they run the torch
    backend's code, so comparing them with ``backend="torch"`` would compare a function with itself): their
    results are held to the materialised reference and its float64 oracle instead."""
    from ale_kernels.reference import shared_qk_attention_reference, token_restricted_softmax_reference

    problem = make_problem(length=20, head_dim=16, regions=3)
    scale = problem.q.shape[-1] ** -0.5
    probs = token_restricted_softmax(
        problem.q, problem.k, q_cover=problem.q_cover, token_owner=problem.token_owner, backend="cpp"
    )
    args = (problem.q, problem.k, problem.q_cover, problem.token_owner, scale, float("-inf"), None, True)
    expected = token_restricted_softmax_reference(*args)
    oracle = token_restricted_softmax_reference(*upcast(args))
    assert_close_to_oracle(probs, expected, oracle, name="token_restricted_softmax, backend cpp")
    q, k, vs = make_shared_qk_problem(length=9, n_keys=11, head_dim=16)
    got = shared_qk_attention(q, k, vs, backend="cpp")
    expected = shared_qk_attention_reference(q, k, vs, q.shape[-1] ** -0.5)
    oracle = shared_qk_attention_reference(*upcast((q, k, vs)), q.shape[-1] ** -0.5)
    for stream, (g, e, o) in enumerate(zip(got, expected, oracle, strict=True)):
        assert_close_to_oracle(g, e, o, name=f"shared_qk_attention stream {stream}, backend cpp")


@pytest.mark.parametrize("tokens", [300, 77 + 256])
@pytest.mark.parametrize("k_per_region", [False, True])
def test_default_key_tile_with_keys_past_one_tile(tokens, k_per_region):
    """At the default key tile (256) with S > 256 the online softmax crosses a tile boundary and must rescale
    the first tile's sums; rows blind in the first tile find keys only in the second."""
    problem = make_problem(length=70, head_dim=40, tokens=tokens, regions=4, k_per_region=k_per_region, blind_rows=4)
    for simd in simd_levels():
        got, (region, cover, owner) = run_op(problem, -100.0, simd=simd)
        args = (problem.q, problem.k, problem.v, region, cover, owner, problem.q.shape[-1] ** -0.5, -100.0)
        expected, oracle = region_attention_reference(*args), region_attention_reference(*upcast(args))
        assert_close_to_oracle(got, expected, oracle, name=f"simd {simd}, {tokens} keys")
    assert_region_attention_matches(problem, "cpp", float("-inf"))


def test_torch_compile_fullgraph():
    problem = make_problem(length=24, head_dim=16, regions=3)

    def attend(q, k, v, region, cover, owner):
        return region_attention(q, k, v, region, q_cover=cover, token_owner=owner, mask_value=-100.0, backend="cpp")

    args = (problem.q, problem.k, problem.v, problem.q_region, problem.q_cover, problem.token_owner)
    compiled = torch.compile(attend, fullgraph=True, backend="eager")
    assert torch.equal(compiled(*args), attend(*args))  # the eager backend runs the captured graph's same ops


def test_unavailable_kernel_falls_back_to_torch_with_one_notice(monkeypatch):
    """No compiler or no ninja: ``backend='cpp'`` runs the torch backend and says so once per process."""

    def no_build() -> None:
        raise RuntimeError("Ninja is required to load C++ extensions")

    def no_module() -> None:
        raise ImportError("No module named 'ale_kernels._C'")

    monkeypatch.setattr(_cpp, "_loaded", None)
    monkeypatch.setattr(_cpp, "_module", None)
    monkeypatch.setattr(_cpp, "_failure", None)
    monkeypatch.setattr(_cpp, "_warned", False)
    monkeypatch.setattr(_cpp, "_import_prebuilt", no_module)
    monkeypatch.setattr(_cpp, "_compile", no_build)
    problem = make_problem(length=40, regions=3)
    args = (problem.q, problem.k, problem.v, problem.q_region)
    with pytest.warns(RuntimeWarning, match=r"C\+\+ CPU kernel is unavailable .*Ninja is required") as record:
        got = region_attention(*args, **problem.kwargs(), mask_value=-100.0, backend="cpp")
    assert len(record) == 1 and len(str(record[0].message).splitlines()) == 1
    assert not _cpp.load() and _cpp.simd_level() == -1
    assert torch.equal(got, region_attention(*args, **problem.kwargs(), mask_value=-100.0, backend="torch"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second call is silent
        region_attention(*args, **problem.kwargs(), backend="cpp")


@settings(max_examples=40, deadline=None)
@given(case=fuzz_cases(max_length=140))
def test_fuzz_against_reference(case):
    assert_region_attention_matches(case.problem, "cpp", case.mask_value)
