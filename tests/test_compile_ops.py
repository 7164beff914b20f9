"""The ops' registered forms on the CPU: the triton ops (schema, fake, AOT dispatch) with their CPU
implementation, the routes a call takes (direct in eager mode, the registered op while traced), and the
torch backend's one-call path that runs on CUDA, checked here on CPU tensors against the oracle."""

from __future__ import annotations

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from ale_kernels import (
    RoutingPlan,
    fused_ops,
    ops,
    region_attention,
    shared_qk_attention,
    token_restricted_softmax,
    torch_impl,
)
from tests.problems import assert_region_attention_matches, make_problem, make_shared_qk_problem


def _planned(**kwargs):
    problem = make_problem(batch=2, heads=2, length=20, head_dim=16, tokens=9, regions=3, **kwargs)
    plan = RoutingPlan.build(
        problem.q_region, q_cover=problem.q_cover, token_owner=problem.token_owner, regions=problem.v.shape[1]
    )
    return problem, plan


@pytest.mark.parametrize("mask_value", [float("-inf"), -100.0])
def test_fused_region_attention_op_passes_opcheck_and_matches_the_public_op(mask_value):
    ops_by_name = fused_ops.register()
    problem, plan = _planned(shared_routing=True)
    args = (problem.q, problem.k, problem.v, plan.q_region, plan.q_cover, plan.token_owner, plan.row_order, 0.25)
    op = ops_by_name["region_attention"]
    torch.library.opcheck(op, (*args, mask_value))
    got = op(*args, mask_value)
    expected = region_attention(problem.q, problem.k, problem.v, plan, scale=0.25, mask_value=mask_value)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert got.stride() == expected.stride()  # (B, L, H, D) storage, as every backend returns


def test_fused_token_softmax_and_shared_qk_ops_pass_opcheck():
    ops_by_name = fused_ops.register()
    problem, plan = _planned()
    torch.library.opcheck(
        ops_by_name["token_restricted_softmax"],
        (problem.q, problem.k, plan.q_cover, plan.token_owner, None, 0.25, -100.0, True),
    )
    q, k, vs = make_shared_qk_problem(length=10, n_keys=12, head_dim=16)
    torch.library.opcheck(ops_by_name["shared_qk_attention"], (q, k, vs, 0.25))
    got = ops_by_name["shared_qk_attention"](q, k, vs, 0.25)
    for out, expected in zip(got, shared_qk_attention(q, k, vs, scale=0.25, backend="reference"), strict=True):
        torch.testing.assert_close(out, expected)


def test_eager_calls_skip_the_dispatcher_and_traced_calls_use_it(monkeypatch):
    """Eager: the implementation runs directly. Under a dispatch mode (FakeTensorMode, as torch.compile and
    the meta tests trace) and under the profiler, the registered op runs (its fake gives the shape)."""
    problem, plan = _planned()
    through_op = []
    real_op = ops._region_attention_op
    monkeypatch.setattr(ops, "_region_attention_op", lambda *a: through_op.append(1) or real_op(*a))
    eager = region_attention(problem.q, problem.k, problem.v, plan, backend="torch")
    assert through_op == []
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        profiled = region_attention(problem.q, problem.k, problem.v, plan, backend="torch")
    assert through_op == [1]
    assert any(e.name == "ale_kernels::region_attention" for e in prof.events())
    torch.testing.assert_close(profiled, eager, rtol=0, atol=0)
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        q, k, v = (mode.from_tensor(t) for t in (problem.q, problem.k, problem.v))
        fake = region_attention(q, k, v, plan, backend="torch")
        maps = token_restricted_softmax(q, k, plan=plan, backend="torch")
    assert through_op == [1, 1]
    assert fake.shape == eager.shape and fake.stride() == eager.stride()
    assert maps.shape == (2, 20, 9)


def test_raw_maps_reuse_the_last_plan_until_a_map_changes():
    """The eager raw-map path finds the last plan by identity and version: an in-place change of a map is seen."""
    problem = make_problem(batch=1, heads=2, length=20, head_dim=16, tokens=9, regions=3, shared_routing=True)
    args = (problem.q, problem.k, problem.v, problem.q_region)
    first = region_attention(*args, **problem.kwargs(), backend="torch")
    plan = ops._last_raw_plan[0][3]
    region_attention(*args, **problem.kwargs(), backend="torch")
    assert ops._last_raw_plan[0][3] is plan
    problem.q_region[:5] = (problem.q_region[:5] + 1) % 3
    changed = region_attention(*args, **problem.kwargs(), backend="torch")
    assert ops._last_raw_plan[0][3] is not plan
    assert not torch.equal(changed, first)
    assert_region_attention_matches(problem, "torch")
    with pytest.raises(ValueError, match="q_region values must lie in"):
        problem.q_region[0] = 7
        region_attention(*args, **problem.kwargs(), backend="torch")


@pytest.mark.parametrize("mask_value", [float("-inf"), -100.0])
@pytest.mark.parametrize(
    "case",
    [
        dict(),
        dict(k_per_region=True),
        dict(blind_rows=3),
        dict(restrict=False),
        dict(shared_routing=True, dtype=torch.float16),
        dict(regions=5, overlap=True),
    ],
    ids=["shared-keys", "keys-per-region", "blind-rows", "no-restriction", "broadcast-fp16", "five-regions"],
)
def test_one_call_path_matches_the_oracle(monkeypatch, case, mask_value):
    """The torch backend's CUDA path (one SDPA over every region's keys with an additive bias), run on CPU
    tensors: the same results as the reference, blind rows zeros with -inf."""
    monkeypatch.setattr(torch_impl, "ONE_CALL_DEVICES", ("cpu",))
    calls = []
    real = torch_impl.region_attention_one_call
    monkeypatch.setattr(torch_impl, "region_attention_one_call", lambda *a: calls.append(1) or real(*a))
    kwargs = dict(batch=2, heads=2, length=37, head_dim=16, tokens=11, regions=3)
    kwargs.update(case)
    assert_region_attention_matches(make_problem(**kwargs), "torch", mask_value)
    assert calls, "the one-call path did not run"


def test_one_call_bias_is_built_once_per_plan_dtype_and_mask():
    _, plan = _planned()
    first = torch_impl.one_call_bias(plan, 9, -100.0, torch.float32)
    assert torch_impl.one_call_bias(plan, 9, -100.0, torch.float32) is first
    assert torch_impl.one_call_bias(plan, 9, float("-inf"), torch.float32) is not first
    assert first.shape == (2, 1, 20, 3 * 9)
    # Each row: its own region's 9 columns finite, every other region's -inf.
    finite = torch.isfinite(first[:, 0]).view(2, 20, 3, 9).all(-1)
    own = torch.nn.functional.one_hot(plan.q_region.long(), 3).bool()
    assert torch.equal(finite, own)


def test_without_triton_op_the_compiled_path_keeps_the_opaque_ops(monkeypatch):
    """A PyTorch without ``torch.library.triton_op`` and ``wrap_triton`` (a custom build; releases before 2.6,
    below this package's floor): nothing is registered (a traced call on the Triton backend then finds no
    triton op and takes the opaque one), and the launch helper launches the kernel itself even while traced."""
    from ale_kernels.kernels import launch

    monkeypatch.delattr(torch.library, "triton_op")
    monkeypatch.delattr(torch.library, "wrap_triton")
    monkeypatch.setattr(fused_ops, "REGISTERED", {})
    assert fused_ops.register.__wrapped__() == {}
    kernel = object()
    with FakeTensorMode():
        assert launch._traceable(kernel) is kernel
