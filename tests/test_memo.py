"""The per-tensor memo that keeps host syncs out of every call: hits only for the same, unchanged tensors."""

from __future__ import annotations

import gc

import pytest
import torch

from ale_kernels import RoutingPlan, region_attention
from ale_kernels._memo import memoized
from tests.problems import make_problem


class Counter:
    def __init__(self):
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return self.calls


def test_same_tensor_and_views_of_it_hit():
    t, count = torch.arange(6), Counter()
    assert memoized("x", count, t) == 1
    assert memoized("x", count, t) == 1
    assert memoized("x", count, t[None].expand(3, 6)[0]) == 1  # a view with t's geometry: the same values
    assert memoized("x", count, t[1:]) == 2  # another view geometry: computed anew...
    assert memoized("x", count, t.unsqueeze(0)[0, 1:]) == 2  # ...and then found for that geometry
    assert memoized("y", count, t) == 3  # another tag


def test_in_place_change_invalidates():
    t, count = torch.arange(6), Counter()
    memoized("x", count, t)
    t[0] = 5
    assert memoized("x", count, t) == 2
    t.view(2, 3).add_(1)  # through a view: the version counter is shared
    assert memoized("x", count, t) == 3


def test_other_tensors_are_part_of_the_key_by_identity():
    t, a, b, count = torch.arange(6), torch.zeros(3), torch.zeros(3), Counter()
    assert memoized("x", count, t, a) == 1
    assert memoized("x", count, t, a) == 1
    assert memoized("x", count, t, b) == 2  # equal values, another tensor
    assert memoized("x", count, t, None) == 3


def test_a_new_tensor_never_sees_an_old_result():
    count = Counter()
    for _ in range(5):
        memoized("x", count, torch.arange(6))
        gc.collect()  # a new tensor may reuse the freed one's address and id
    assert count.calls == 5


def test_inference_tensors_are_computed_every_time():
    with torch.inference_mode():
        t = torch.arange(6)
    count = Counter()
    memoized("x", count, t)
    memoized("x", count, t)
    assert count.calls == 2


def test_raw_routing_maps_are_planned_once_per_unchanged_tensor(monkeypatch):
    """Raw-map calls build their routing plan (value checks, one host sync) once per unchanged set of maps."""
    problem = make_problem(length=20, regions=3)
    builds, build = [], RoutingPlan.build.__func__
    counted = classmethod(lambda cls, *a, **kw: builds.append(1) or build(cls, *a, **kw))
    monkeypatch.setattr(RoutingPlan, "build", counted)
    args = (problem.q, problem.k, problem.v, problem.q_region)
    for _ in range(3):
        region_attention(*args, **problem.kwargs(), backend="torch")
    assert len(builds) == 1
    problem.q_region[0, 0] = 7  # out of range, in place: planned and checked again, and refused
    with pytest.raises(ValueError, match=r"q_region values must lie in \[0, R\)"):
        region_attention(*args, **problem.kwargs(), backend="torch")
    assert len(builds) == 2
