"""The backends and the implementation of each op on each, declared as data in :mod:`ale_kernels.registry`.

Every ``region_attention`` implementation here takes ``(q, k, v, plan, scale, mask_value)``: the routing
comes as a checked :class:`~ale_kernels.plan.RoutingPlan`, and each backend reads the part of it that is
its own (the Triton kernel's pixel order, the torch backend's groups). The other ops take their arguments
as the reference functions do. Loaders import lazily: Triton only when a Triton kernel runs, and the C++
kernel is loaded (compiled on first use) inside the custom op, never while ``torch.compile`` traces.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import torch

from . import _cpp
from ._env import interpreting
from .plan import RoutingPlan
from .reference import (
    region_attention_reference,
    shared_qk_attention_reference,
    token_restricted_softmax_reference,
)
from .registry import BackendInfo, ImplInfo, register_backend, register_impl
from .torch_impl import region_attention_torch, shared_qk_attention_torch, token_restricted_softmax_torch

_LOW_PRECISION = (torch.float16, torch.bfloat16, torch.float32)

#: ``auto``'s widest head dim for the shared-QK Triton kernel on CUDA. Measured on an H100 (fp16, H = 8, one
#: source/target pair, benchmarks/bench_self_attention.py): against two flash SDPA calls it is 1.17x faster at
#: L = 9216, D = 40, but 0.89x at L = 2304, D = 80 and 0.08x at L = 576, D = 160 (its tiles pad D = 160 to
#: 256). Wider heads run the torch backend: one SDPA call per stream.
SHARED_QK_TRITON_MAX_HEAD_DIM = 64


@cache
def triton_available() -> bool:
    """Whether Triton (and so the ``triton`` backend) can be imported here."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


# ----------------------------------------------------------------------------------------------------------
# region_attention on each backend, from a plan.


def _region_reference(q, k, v, plan: RoutingPlan, scale: float, mask_value: float) -> torch.Tensor:
    return region_attention_reference(q, k, v, *plan.maps(q.shape[0]), scale, mask_value)


def _region_triton(q, k, v, plan: RoutingPlan, scale: float, mask_value: float) -> torch.Tensor:
    from .kernels import region_attention_triton

    region, cover, owner = plan.maps(q.shape[0])
    return region_attention_triton(q, k, v, region, cover, owner, scale, mask_value, row_order=plan.row_order)


def _region_cpp(q, k, v, plan: RoutingPlan, scale: float, mask_value: float) -> torch.Tensor:
    return _cpp.region_attention_cpp(q, k, v, *plan.maps(q.shape[0]), scale, mask_value)


def _load_region_cpp() -> Callable[..., torch.Tensor]:
    """The C++ kernel where it loads, else the torch backend (after one warning per process)."""
    return _region_cpp if _cpp.load() else _cpp.fallback(region_attention_torch)


def _loaded(fn: Callable) -> Callable[[], Callable]:
    return lambda: fn


def _load_triton(name: str) -> Callable[[], Callable]:
    def load() -> Callable:
        from . import kernels

        return getattr(kernels, name)

    return load


# ----------------------------------------------------------------------------------------------------------
# The tables.

register_backend(BackendInfo("reference"))
register_backend(BackendInfo("torch", auto=lambda device: True))
register_backend(
    BackendInfo(
        "cpp",
        runs_on=lambda device: device.type == "cpu",
        device_error="backend='cpp' runs CPU tensors; got tensors on {device}: use 'torch' or 'auto'",
        dtypes=_LOW_PRECISION,
        # Whether the kernel builds is decided inside the custom op (it may compile on first use, which
        # torch.compile must not trace); where it does not, the torch backend runs with a warning.
        auto=lambda device: device.type == "cpu" and _cpp.AUTO,
    )
)
register_backend(
    BackendInfo(
        "triton",
        runs_on=lambda device: device.type == "cuda" or interpreting(),
        device_error=(
            "backend='triton' runs CUDA tensors (or CPU tensors under TRITON_INTERPRET=1); "
            "got tensors on {device}: use backend='torch' or 'auto'"
        ),
        dtypes=_LOW_PRECISION,
        installed=lambda: triton_available(),  # looked up per call: tests stand in for a missing Triton
        missing_error="backend='triton' needs Triton installed (pip install triton); use 'torch' instead",
        auto=lambda device: device.type == "cuda",
    )
)

for _impl in (
    ImplInfo("region_attention", "reference", _loaded(_region_reference)),
    ImplInfo("region_attention", "torch", _loaded(region_attention_torch)),
    ImplInfo("region_attention", "triton", _loaded(_region_triton)),
    ImplInfo("region_attention", "cpp", _load_region_cpp),
    ImplInfo("token_restricted_softmax", "reference", _loaded(token_restricted_softmax_reference)),
    ImplInfo("token_restricted_softmax", "torch", _loaded(token_restricted_softmax_torch)),
    ImplInfo("token_restricted_softmax", "triton", _load_triton("token_restricted_softmax_triton")),
    # The C++ kernel covers region_attention only.
    ImplInfo("token_restricted_softmax", "cpp", _loaded(token_restricted_softmax_torch)),
    ImplInfo("shared_qk_attention", "reference", _loaded(shared_qk_attention_reference)),
    ImplInfo("shared_qk_attention", "torch", _loaded(shared_qk_attention_torch)),
    ImplInfo(
        "shared_qk_attention",
        "triton",
        _load_triton("shared_qk_attention_triton"),
        auto_max_head_dim=SHARED_QK_TRITON_MAX_HEAD_DIM,
        auto_fallback="torch",
    ),
    ImplInfo("shared_qk_attention", "cpp", _loaded(shared_qk_attention_torch)),
):
    register_impl(_impl)
