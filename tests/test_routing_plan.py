"""The routing plan: the same outputs as raw maps on every CPU backend, built once, checked when built."""

from __future__ import annotations

import itertools

import pytest
import torch

from ale_kernels import RoutingPlan, region_attention, token_restricted_softmax
from ale_kernels.diffusers import RegionSpec, install_regional_processors
from tests.problems import make_problem
from tests.tiny_models import tiny_sd15_unet

MASK_VALUES = [float("-inf"), -100.0]


def plan_of(problem) -> RoutingPlan:
    return RoutingPlan.build(
        problem.q_region, q_cover=problem.q_cover, token_owner=problem.token_owner, regions=problem.v.shape[1]
    )


def count_builds(monkeypatch) -> list:
    """Record every RoutingPlan.build from now on (the op's own builds for raw maps included)."""
    builds, build = [], RoutingPlan.build.__func__
    monkeypatch.setattr(
        RoutingPlan, "build", classmethod(lambda cls, *a, **kw: builds.append(1) or build(cls, *a, **kw))
    )
    return builds


@pytest.mark.parametrize("backend", ["reference", "torch", "cpp"])
@pytest.mark.parametrize("mask_value", MASK_VALUES)
@pytest.mark.parametrize("shared_routing", [False, True])
@pytest.mark.parametrize("k_per_region", [False, True])
def test_plan_gives_the_raw_maps_output(backend, mask_value, shared_routing, k_per_region):
    problem = make_problem(length=70, regions=4, shared_routing=shared_routing, k_per_region=k_per_region, blind_rows=3)
    args = (problem.q, problem.k, problem.v)
    raw = region_attention(*args, problem.q_region, **problem.kwargs(), mask_value=mask_value, backend=backend)
    plan = plan_of(problem)
    positional = region_attention(*args, plan, mask_value=mask_value, backend=backend)
    keyword = region_attention(*args, plan=plan, mask_value=mask_value, backend=backend)
    assert torch.equal(positional, raw) and torch.equal(keyword, raw)
    assert positional.transpose(1, 2).is_contiguous()


@pytest.mark.parametrize("backend", ["reference", "torch", "cpp"])
def test_plan_without_token_restriction(backend):
    problem = make_problem(length=33, regions=3, restrict=False)
    plan = RoutingPlan.build(problem.q_region, regions=3)
    assert plan.tokens is None and plan.group_tokens is None
    raw = region_attention(problem.q, problem.k, problem.v, problem.q_region, backend=backend)
    assert torch.equal(region_attention(problem.q, problem.k, problem.v, plan, backend=backend), raw)


@pytest.mark.parametrize("backend", ["reference", "torch"])
@pytest.mark.parametrize("reduce_heads", [True, False])
def test_token_softmax_with_a_plan(backend, reduce_heads):
    problem = make_problem(length=40, head_dim=16, shared_routing=True, blind_rows=2)
    common = dict(mask_value=-100.0, tokens=[0, 3, 5], reduce_heads=reduce_heads, backend=backend)
    raw = token_restricted_softmax(
        problem.q, problem.k, q_cover=problem.q_cover, token_owner=problem.token_owner, **common
    )
    assert torch.equal(token_restricted_softmax(problem.q, problem.k, plan=plan_of(problem), **common), raw)


def test_a_plan_is_built_once_and_never_per_call(monkeypatch):
    problem = make_problem(length=30, regions=3)
    plan = plan_of(problem)
    builds = count_builds(monkeypatch)
    for backend in ("reference", "torch", "cpp"):
        region_attention(problem.q, problem.k, problem.v, plan, backend=backend)
    token_restricted_softmax(problem.q, problem.k, plan=plan, backend="torch")
    assert builds == []


def test_groups_partition_the_pixels_in_region_order():
    problem = make_problem(length=50, regions=4)
    plan = plan_of(problem)
    assert plan.group_table.device.type == "cpu"  # read on the host by the torch backend: never a GPU sync
    for row in range(plan.routing_batch):
        groups = plan.groups(row)
        assert groups[0].start == 0 and groups[-1].end == 50
        assert all(a.end == b.start for a, b in itertools.pairwise(groups))
        assert [g.region for g in groups] == sorted(g.region for g in groups)
        region = plan.q_region[row][plan.group_order[row]]
        for g in groups:
            assert (region[g.start : g.end] == g.region).all()
            assert g.n_visible == int(g.tokens.sum()) and torch.equal(g.visible, g.tokens.nonzero().squeeze(1))
        sorted_region = plan.q_region[row][plan.row_order[row].long()]
        assert (sorted_region[1:] >= sorted_region[:-1]).all()


# --- a plan used with the wrong inputs ------------------------------------------------------------------------


@pytest.fixture
def problem():
    return make_problem(batch=2, heads=2, length=10, head_dim=16, tokens=7, regions=3)


@pytest.mark.parametrize(
    "make, error, pattern",
    [
        (lambda p: make_problem(batch=2, heads=2, length=12, head_dim=16, tokens=7, regions=3), ValueError,
         r"plan was built for L = 10 pixels but q has L = 12"),
        (lambda p: make_problem(batch=2, heads=2, length=10, head_dim=16, tokens=7, regions=4), ValueError,
         r"plan was built for R = 3 regions but v has R = 4"),
        (lambda p: make_problem(batch=2, heads=2, length=10, head_dim=16, tokens=9, regions=3), ValueError,
         r"plan was built for S = 7 tokens but k has S = 9"),
        (lambda p: make_problem(batch=3, heads=2, length=10, head_dim=16, tokens=7, regions=3), ValueError,
         r"plan was built for a batch of B = 2 but q has B = 3"),
    ],
)  # fmt: skip
def test_a_plan_for_other_inputs_is_a_clear_error(problem, make, error, pattern):
    plan, other = plan_of(problem), make(problem)
    with pytest.raises(error, match=pattern):
        region_attention(other.q, other.k, other.v, plan, backend="torch")


def test_a_plan_on_another_device_is_a_clear_error(problem):
    q, k = problem.q.to("meta"), problem.k.to("meta")
    with pytest.raises(ValueError, match=r"plan is on cpu but q is on meta"):
        region_attention(q, k, problem.v.to("meta"), plan_of(problem), backend="torch")


def test_a_plan_for_another_length_in_token_softmax_is_a_clear_error(problem):
    other = make_problem(batch=2, heads=2, length=11, head_dim=16, tokens=7, regions=3)
    with pytest.raises(ValueError, match=r"plan was built for L = 10 pixels but q has L = 11"):
        token_restricted_softmax(other.q, other.k, plan=plan_of(problem), backend="torch")


def test_a_plan_and_maps_together_are_a_clear_error(problem):
    plan = plan_of(problem)
    with pytest.raises(TypeError, match=r"either as a plan or as maps, not both: got a plan and token_owner"):
        region_attention(problem.q, problem.k, problem.v, plan, token_owner=problem.token_owner)
    with pytest.raises(TypeError, match=r"as the 4th argument or as plan=, not both"):
        region_attention(problem.q, problem.k, problem.v, plan, plan=plan)
    with pytest.raises(TypeError, match=r"got a plan and q_cover"):
        token_restricted_softmax(problem.q, problem.k, plan=plan, q_cover=problem.q_cover)
    with pytest.raises(TypeError, match=r"plan must be a RoutingPlan"):
        token_restricted_softmax(problem.q, problem.k, plan=problem.q_region)


# --- bad routing values are caught when the plan is built ---------------------------------------------------


@pytest.mark.parametrize(
    "overrides, error, pattern",
    [
        (lambda p: dict(q_region=p.q_region + 3), ValueError, r"q_region values must lie in \[0, R\) = \[0, 3\)"),
        (lambda p: dict(q_region=p.q_region - 1), ValueError, r"q_region values must lie in \[0, R\)"),
        (lambda p: dict(q_cover=p.q_cover - 100), ValueError, r"q_cover must be a non-negative int32 bit mask"),
        (lambda p: dict(token_owner=p.token_owner * 0 + 31), ValueError, r"token_owner values .* at most 31 objects"),
        (lambda p: dict(token_owner=p.token_owner * 0 - 2), ValueError, r"token_owner values must be -1"),
        (lambda p: dict(q_region=p.q_region.float()), TypeError, r"q_region must have an integer dtype"),
        (lambda p: dict(token_owner=p.token_owner.bool()), TypeError, r"token_owner must have an integer dtype"),
        (lambda p: dict(q_cover=p.q_cover.numpy()), TypeError, r"q_cover must be an integer torch.Tensor"),
        (lambda p: dict(q_region=p.q_region[None]), ValueError, r"q_region must have shape \(B, L\) or \(L,\)"),
        (lambda p: dict(q_cover=p.q_cover[:, :4]), ValueError, r"q_cover must have L = 10 pixels like q_region"),
        (lambda p: dict(token_owner=p.token_owner[:1].expand(3, 7).clone()), ValueError, r"disagree on the batch"),
        (lambda p: dict(q_cover=p.q_cover.to("meta")), ValueError, r"q_cover is on meta but q_region is on cpu"),
        (lambda p: dict(q_region=None), TypeError, r"q_region is required"),
        (lambda p: dict(regions=0), ValueError, r"regions must be a positive int"),
        (lambda p: dict(regions=3.0), ValueError, r"regions must be a positive int"),
    ],
)
def test_bad_routing_is_caught_at_build(problem, overrides, error, pattern):
    args = dict(q_region=problem.q_region, q_cover=problem.q_cover, token_owner=problem.token_owner, regions=3)
    args.update(overrides(problem))
    with pytest.raises(error, match=pattern):
        RoutingPlan.build(args.pop("q_region"), **args)


def test_a_cover_is_not_read_without_owners(problem):
    """As in the ops: without a token restriction the cover is ignored, so a bad one is no error."""
    plan = RoutingPlan.build(problem.q_region, q_cover=problem.q_cover - 100, regions=3)
    assert torch.equal(plan.q_cover, (1 << problem.q_region).to(torch.int32) * (problem.q_region < 31))


# --- the diffusers processors: plans built by RegionSpec.prepare, none per call -------------------------------


def test_after_prepare_processor_calls_build_no_plan(monkeypatch):
    unet = tiny_sd15_unet(sd15_head_dims=False)
    g = torch.Generator().manual_seed(0)
    masks = torch.zeros(2, 128, 128, dtype=torch.bool)
    masks[0, 20:90, 10:70], masks[1, 50:120, 40:110] = True, True
    owner = torch.full((77,), -1)
    owner[1:3], owner[4:6] = 0, 1
    spec = RegionSpec(masks, owner, torch.randn(3, 77, 32, generator=g), batch_index=[3], mask_value=-100.0)
    sample, text = torch.randn(4, 4, 16, 16, generator=g), torch.randn(4, 77, 32, generator=g)
    spec.prepare((16, 16), torch.device("cpu"))
    assert sorted(length for length, _ in spec._cache) == [4, 16, 64, 256]
    routing = spec.routing(256, torch.device("cpu"))
    assert routing.plan.regions == 3 and routing.plan.length == 256 and routing.plan.routing_batch == 1
    builds = count_builds(monkeypatch)
    kwargs = {"regions": spec}
    with install_regional_processors(unet, backend="torch"), torch.no_grad():
        for _ in range(2):
            unet(sample, 500, text, cross_attention_kwargs=kwargs)
    assert builds == []


def test_region_spec_routing_keeps_one_plan_per_resolution_and_device():
    masks = torch.zeros(1, 8, 8, dtype=torch.bool)
    masks[0, :4] = True
    spec = RegionSpec(masks, torch.tensor([-1, 0, -1]), torch.zeros(2, 3, 4), batch_index=[0])
    first = spec.routing(16, torch.device("cpu"))
    assert spec.routing(16, "cpu") is first and spec.routing(64, "cpu") is not first
    assert torch.equal(first.plan.q_region[0], first.q_region.to(torch.int32))
