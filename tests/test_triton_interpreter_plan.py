"""The Triton backend with routing plans and the shared launch helper, run by Triton's interpreter on CPU.

Run with ``TRITON_INTERPRET=1`` in the environment before Python starts, in the same pytest process as
``tests/test_triton_interpreter.py``. Shapes stay small: the interpreter executes every program in Python.
"""

from __future__ import annotations

import pytest
import torch

from ale_kernels._env import interpreting
from tests.problems import make_problem

pytestmark = pytest.mark.interpreter
if not interpreting():
    pytest.skip("Triton interpreter tests need TRITON_INTERPRET=1 (make test sets it)", allow_module_level=True)

from ale_kernels import RoutingPlan, region_attention, token_restricted_softmax  # noqa: E402
from ale_kernels.kernels import configs, launch  # noqa: E402


def plan_of(problem) -> RoutingPlan:
    return RoutingPlan.build(
        problem.q_region, q_cover=problem.q_cover, token_owner=problem.token_owner, regions=problem.v.shape[1]
    )


@pytest.mark.parametrize("mask_value", [float("-inf"), -100.0])
@pytest.mark.parametrize("shared_routing", [False, True])
def test_plan_gives_the_raw_maps_output(mask_value, shared_routing):
    problem = make_problem(length=37, head_dim=16, tokens=20, regions=4, shared_routing=shared_routing, blind_rows=3)
    args = (problem.q, problem.k, problem.v)
    raw = region_attention(*args, problem.q_region, **problem.kwargs(), mask_value=mask_value, backend="triton")
    planned = region_attention(*args, plan_of(problem), mask_value=mask_value, backend="triton")
    assert torch.equal(planned, raw)
    reference = region_attention(*args, plan_of(problem), mask_value=mask_value, backend="reference")
    torch.testing.assert_close(planned, reference, atol=1e-5, rtol=1e-5)


def test_plan_with_keys_per_region_and_no_restriction():
    problem = make_problem(batch=1, length=21, head_dim=16, tokens=9, regions=3, k_per_region=True, restrict=False)
    plan = RoutingPlan.build(problem.q_region, regions=3)
    raw = region_attention(problem.q, problem.k, problem.v, problem.q_region, backend="triton")
    assert torch.equal(region_attention(problem.q, problem.k, problem.v, plan, backend="triton"), raw)


def test_token_softmax_with_a_plan():
    problem = make_problem(batch=1, length=19, head_dim=16, tokens=12, shared_routing=True, blind_rows=2)
    common = dict(mask_value=-100.0, tokens=[0, 3, 5], backend="triton")
    maps = dict(q_cover=problem.q_cover, token_owner=problem.token_owner)
    raw = token_restricted_softmax(problem.q, problem.k, **maps, **common)
    assert torch.equal(token_restricted_softmax(problem.q, problem.k, plan=plan_of(problem), **common), raw)


class _Recording(dict):
    """A config that records the keys read from it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.read: list[str] = []

    def __getitem__(self, key):
        self.read.append(key)
        return super().__getitem__(key)


def test_launches_read_the_interpreter_config_from_configs(monkeypatch):
    recording = _Recording(BLOCK_M=16, BLOCK_N=16)
    monkeypatch.setattr(configs, "INTERPRETER_CONFIG", recording)
    problem = make_problem(batch=1, heads=1, length=20, head_dim=16, tokens=9, regions=2)
    region_attention(problem.q, problem.k, problem.v, plan_of(problem), backend="triton")
    assert "BLOCK_M" in recording.read


@pytest.mark.parametrize("head_dim, padded", [(1, 16), (16, 16), (17, 32), (40, 64), (80, 128), (160, 256)])
def test_padded_head_dim(head_dim, padded):
    assert launch.padded_head_dim(head_dim) == padded
