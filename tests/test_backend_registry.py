"""The backend registry: every (backend, device, dtype) resolves as the ops always resolved it, once per call."""

from __future__ import annotations

import itertools

import pytest
import torch

from ale_kernels import _cpp, backends, ops, region_attention, registry, shared_qk_attention, token_restricted_softmax
from tests.problems import make_problem, make_shared_qk_problem

DEVICES = [torch.device("cpu"), torch.device("cuda", 0), torch.device("meta")]
DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
BACKENDS = ["auto", "reference", "torch", "triton", "cpp"]


def expected_resolution(backend, device, dtype, *, triton: bool, interpreting: bool, cpp_auto: bool):
    """The rules of the ops' documentation, written out one by one: a backend name, or (error type, message)."""
    low_precision = dtype != torch.float64
    if backend == "auto":
        if device.type == "cuda" and triton and low_precision:
            return "triton"
        return "cpp" if device.type == "cpu" and low_precision and cpp_auto else "torch"
    if backend == "cpp":
        if device.type != "cpu":
            return ValueError, f"backend='cpp' runs CPU tensors; got tensors on {device}: use 'torch' or 'auto'"
        if not low_precision:
            return TypeError, "backend='cpp' supports float16, bfloat16 and float32 inputs, got float64"
    if backend == "triton":
        if not triton:
            return RuntimeError, "backend='triton' needs Triton installed (pip install triton); use 'torch' instead"
        if device.type != "cuda" and not interpreting:
            return ValueError, (
                f"backend='triton' runs CUDA tensors (or CPU tensors under TRITON_INTERPRET=1); got tensors on "
                f"{device}: use backend='torch' or 'auto'"
            )
        if not low_precision:
            return TypeError, "backend='triton' supports float16, bfloat16 and float32 inputs, got float64"
    return backend


@pytest.mark.parametrize("triton, interpreting, cpp_auto", list(itertools.product([True, False], repeat=3)))
def test_every_backend_device_and_dtype_resolves_as_documented(monkeypatch, triton, interpreting, cpp_auto):
    monkeypatch.setattr(backends, "triton_available", lambda: triton)
    monkeypatch.setattr(backends, "interpreting", lambda: interpreting)
    monkeypatch.setattr(_cpp, "AUTO", cpp_auto)
    for backend, device, dtype in itertools.product(BACKENDS, DEVICES, DTYPES):
        expected = expected_resolution(
            backend, device, dtype, triton=triton, interpreting=interpreting, cpp_auto=cpp_auto
        )
        if isinstance(expected, str):
            assert registry.resolve_backend(backend, device, dtype) == expected, (backend, device, dtype)
        else:
            error, message = expected
            with pytest.raises(error) as info:
                registry.resolve_backend(backend, device, dtype)
            assert str(info.value) == message


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(ValueError, match=r"backend must be one of \('auto', 'reference', 'torch', 'triton', 'cpp'\)"):
        registry.resolve_backend("flash", torch.device("cpu"), torch.float32)


def test_every_op_has_an_implementation_on_every_backend():
    table = registry.registered()
    for op, backend in itertools.product(registry.OPS, ["reference", "torch", "triton", "cpp"]):
        assert (op, backend) in table, (op, backend)
        assert table[(op, backend)].op == op and table[(op, backend)].backend == backend
    # The C++ kernel covers region_attention only: cpp runs the torch implementations of the others.
    for op in ("token_restricted_softmax", "shared_qk_attention"):
        assert registry.implementation(op, "cpp") is registry.implementation(op, "torch")
    with pytest.raises(ValueError, match=r"no implementation of 'region_attention' is registered for backend 'x'"):
        registry.implementation("region_attention", "x")


@pytest.mark.parametrize("head_dim, expected", [(40, "triton"), (64, "triton"), (80, "torch"), (160, "torch")])
def test_auto_narrows_shared_qk_to_torch_for_wide_heads_only(head_dim, expected):
    assert registry.narrow("shared_qk_attention", "auto", "triton", head_dim) == expected
    assert registry.narrow("shared_qk_attention", "triton", "triton", head_dim) == "triton"  # asked for by name
    assert registry.narrow("region_attention", "auto", "triton", head_dim) == "triton"  # no limit there


def test_each_call_resolves_its_backend_once(monkeypatch):
    calls = []
    resolve = ops.resolve_backend
    monkeypatch.setattr(ops, "resolve_backend", lambda *a: calls.append(a) or resolve(*a))
    problem = make_problem(length=12, head_dim=16, regions=3)
    region_attention(problem.q, problem.k, problem.v, problem.q_region, **problem.kwargs(), backend="torch")
    token_restricted_softmax(problem.q, problem.k, q_cover=problem.q_cover, token_owner=problem.token_owner)
    shared_qk_attention(*make_shared_qk_problem(length=5, n_keys=6, head_dim=16), backend="reference")
    assert [backend for backend, _, _ in calls] == ["torch", "auto", "reference"]


def test_the_custom_op_runs_the_resolved_backend(monkeypatch):
    """The op receives the concrete backend: the implementation of what the wrapper resolved runs."""
    ran = []
    torch_impl = registry.implementation("region_attention", "torch")
    info = registry.registered()[("region_attention", "torch")]
    counted = registry.ImplInfo("region_attention", "torch", lambda: lambda *a: ran.append(1) or torch_impl(*a))
    monkeypatch.setitem(registry._IMPLS, ("region_attention", "torch"), counted)
    monkeypatch.setattr(_cpp, "AUTO", False)  # auto on CPU: the torch backend
    problem = make_problem(length=12, head_dim=16, regions=3)
    region_attention(problem.q, problem.k, problem.v, problem.q_region, backend="auto")
    assert ran == [1] and info.load() is torch_impl
