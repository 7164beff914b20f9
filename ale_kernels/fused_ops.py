"""The Triton backend as ``torch.library.triton_op``s: ops whose kernels ``torch.compile`` sees into.

``ale_kernels.ops`` registers every op as an opaque ``custom_op``; ``torch.compile`` then keeps each call
as one node it cannot look into (and CUDA-graph capture treats it as a black box). The ``triton_op``
versions here hold the same Triton launches wrapped in ``torch.library.wrap_triton``, so that Inductor
sees the kernels: it lowers them as user-defined Triton kernels (autotuned at compile time, never inside a
captured graph), functionalises their output buffers and can capture the whole UNet step in one CUDA graph.

Only calls whose routing is a :class:`~ale_kernels.plan.RoutingPlan` (the processors' calls) and that run on
CUDA tensors come here, and only under ``torch.compile``: eager calls launch the kernels directly, and
raw routing maps, which need their values checked on the host, go through the opaque op.

Each op keeps a CPU implementation for the same signature, the reference math (traceable, no host read),
so the op and its fake are testable on a machine without a GPU (``tests/test_compile_ops.py``).

Registration needs ``torch.library.triton_op`` (PyTorch 2.6 or later) and imports Triton (about 0.2 s):
:func:`register` does it once, and importing ``ale_kernels`` calls it where CUDA and Triton are present.
On older PyTorch :func:`register` returns ``{}`` and the compiled path keeps the opaque ops.
"""

from __future__ import annotations

import importlib.util
from functools import cache

import torch

from .reference import region_attention_reference, shared_qk_attention_reference, token_restricted_softmax_reference

#: The registered ops by public op name; empty until :func:`register` ran (and on PyTorch < 2.6).
REGISTERED: dict[str, object] = {}


def _region_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_region: torch.Tensor,
    q_cover: torch.Tensor,
    token_owner: torch.Tensor | None,
    row_order: torch.Tensor,
    scale: float,
    mask_value: float,
) -> torch.Tensor:
    """``region_attention`` from a plan's tensors: ``q_region``, ``q_cover``, ``row_order`` ``(Br, L)`` and
    ``token_owner`` ``(Br, S)`` (``Br`` 1 or ``B``). Returns ``(B, H, L, D)`` stored as ``(B, L, H, D)``."""
    batch = q.shape[0]
    region, cover = q_region.expand(batch, -1), q_cover.expand(batch, -1)
    owner = None if token_owner is None else token_owner.expand(batch, -1)
    if q.device.type != "cuda":
        return region_attention_reference(q, k, v, region, cover, owner, scale, mask_value)
    from .kernels import region_attention_triton

    return region_attention_triton(q, k, v, region, cover, owner, scale, mask_value, row_order=row_order)


def _token_restricted_softmax(
    q: torch.Tensor,
    k: torch.Tensor,
    q_cover: torch.Tensor | None,
    token_owner: torch.Tensor | None,
    tokens: torch.Tensor | None,
    scale: float,
    mask_value: float,
    reduce_heads: bool,
) -> torch.Tensor:
    """``token_restricted_softmax`` with checked maps (a plan's): ``q_cover`` ``(Br, L)``, ``token_owner``
    ``(Br, S)``, ``tokens`` ``(T,)`` in ``[0, S)``. Returns float32 ``(B, L, T)`` or ``(B, H, L, T)``."""
    batch = q.shape[0]
    cover = None if q_cover is None else q_cover.expand(batch, -1)
    owner = None if token_owner is None else token_owner.expand(batch, -1)
    if q.device.type != "cuda":
        return token_restricted_softmax_reference(q, k, cover, owner, scale, mask_value, tokens, reduce_heads)
    from .kernels import token_restricted_softmax_triton

    return token_restricted_softmax_triton(q, k, cover, owner, scale, mask_value, tokens, reduce_heads)


def _shared_qk_attention(q: torch.Tensor, k: torch.Tensor, vs: list[torch.Tensor], scale: float) -> list[torch.Tensor]:
    """``shared_qk_attention``: ``q`` ``(B, H, L, D)``, ``k`` and each of ``vs`` ``(B, H, Lk, D)``."""
    if q.device.type != "cuda":
        return shared_qk_attention_reference(q, k, vs, scale)
    from .kernels import shared_qk_attention_triton

    return shared_qk_attention_triton(q, k, vs, scale)


@cache
def register() -> dict[str, object]:
    """Register the three ``ale_kernels::<op>_fused`` triton ops (once) and return them by public op name;
    ``{}`` where this PyTorch has no ``torch.library.triton_op`` or Triton is not installed."""
    triton_op = getattr(torch.library, "triton_op", None)
    if triton_op is None or importlib.util.find_spec("triton") is None:
        return REGISTERED
    for name, fn in (
        ("region_attention", _region_attention),
        ("token_restricted_softmax", _token_restricted_softmax),
        ("shared_qk_attention", _shared_qk_attention),
    ):
        REGISTERED[name] = triton_op(f"ale_kernels::{name}_fused", fn, mutates_args=())
    return REGISTERED


def wants_registration() -> bool:
    """Whether importing ``ale_kernels`` registers the triton ops: CUDA present and Triton installed."""
    return torch.cuda.is_available() and importlib.util.find_spec("triton") is not None
