"""Public ops, their backend dispatch, and their registration as ``torch.library`` custom ops.

Each public function checks shapes, dtypes and devices (metadata only, so ``torch.compile`` traces it),
fills in defaults, and calls the registered custom op. The custom op is opaque to ``torch.compile`` and
holds everything that reads tensor values: the range checks and the backend's own work, so
``torch.compile(fullgraph=True)`` goes through a model that calls these ops without a graph break.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache

import torch

from . import _checks, _cpp
from ._env import interpreting
from .reference import (
    region_attention_reference,
    shared_qk_attention_reference,
    token_restricted_softmax_reference,
)
from .torch_impl import region_attention_torch, shared_qk_attention_torch, token_restricted_softmax_torch


@cache
def triton_available() -> bool:
    """Whether Triton (and so the ``triton`` backend) can be imported here."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(backend: str, device: torch.device, dtype: torch.dtype) -> str:
    """The concrete backend (``reference``, ``torch``, ``triton`` or ``cpp``) that ``backend`` means for these
    inputs.

    ``auto`` is ``triton`` for CUDA tensors when Triton is importable, ``cpp`` for float16/bfloat16/float32
    CPU tensors (measured faster than ``torch`` at SD shapes, see ``csrc/README.md``; ``ALE_KERNELS_CPP=0``
    opts out), else ``torch``. ``cpp`` runs the ``torch`` backend, with one warning, where the C++ kernel
    cannot be built, and for the two ops it has no kernel for.
    """
    _checks.check_backend(backend)
    if backend == "cpp":
        # Whether the kernel loads is decided inside the custom op (it may compile on first use, which
        # torch.compile must not trace); if it does not, the torch backend runs with a warning.
        if device.type != "cpu":
            raise ValueError(f"backend='cpp' runs CPU tensors; got tensors on {device}: use 'torch' or 'auto'")
        if dtype == torch.float64:
            raise TypeError("backend='cpp' supports float16, bfloat16 and float32 inputs, got float64")
        return backend
    if backend == "auto":
        if device.type == "cuda" and triton_available() and dtype != torch.float64:
            return "triton"
        return "cpp" if device.type == "cpu" and dtype != torch.float64 and _cpp.AUTO else "torch"
    if backend == "triton":
        if not triton_available():
            raise RuntimeError("backend='triton' needs Triton installed (pip install triton); use 'torch' instead")
        if device.type != "cuda" and not interpreting():
            raise ValueError(
                f"backend='triton' runs CUDA tensors (or CPU tensors under TRITON_INTERPRET=1); "
                f"got tensors on {device}: use backend='torch' or 'auto'"
            )
        if dtype == torch.float64:
            raise TypeError("backend='triton' supports float16, bfloat16 and float32 inputs, got float64")
    return backend


def _region_attention_impl(backend: str) -> Callable[..., torch.Tensor]:
    if backend == "reference":
        return region_attention_reference
    if backend == "torch":
        return region_attention_torch
    if backend == "cpp":
        return _cpp.region_attention_impl()
    from .kernels import region_attention_triton

    return region_attention_triton


def _token_softmax_impl(backend: str) -> Callable[..., torch.Tensor]:
    if backend == "reference":
        return token_restricted_softmax_reference
    if backend in ("torch", "cpp"):  # the C++ kernel covers region_attention only
        return token_restricted_softmax_torch
    from .kernels import token_restricted_softmax_triton

    return token_restricted_softmax_triton


def _shared_qk_impl(backend: str) -> Callable[..., list[torch.Tensor]]:
    if backend == "reference":
        return shared_qk_attention_reference
    if backend in ("torch", "cpp"):  # the C++ kernel covers region_attention only
        return shared_qk_attention_torch
    from .kernels import shared_qk_attention_triton

    return shared_qk_attention_triton


# ----------------------------------------------------------------------------------------------------------
# Custom ops: what torch.compile sees as single nodes.


@torch.library.custom_op("ale_kernels::region_attention", mutates_args=())
def _region_attention_op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_region: torch.Tensor,
    q_cover: torch.Tensor,
    token_owner: torch.Tensor | None,
    scale: float,
    mask_value: float,
    backend: str,
) -> torch.Tensor:
    _checks.check_routing_values(q_region, q_cover if token_owner is not None else None, token_owner, v.shape[1])
    impl = _region_attention_impl(resolve_backend(backend, q.device, q.dtype))
    return impl(q, k, v, q_region, q_cover, token_owner, scale, mask_value)


@_region_attention_op.register_fake
def _(q, k, v, q_region, q_cover, token_owner, scale, mask_value, backend):
    batch, heads, length, head_dim = q.shape
    return torch.empty((batch, length, heads, head_dim), dtype=q.dtype, device=q.device).transpose(1, 2)


@torch.library.custom_op("ale_kernels::token_restricted_softmax", mutates_args=())
def _token_softmax_op(
    q: torch.Tensor,
    k: torch.Tensor,
    q_cover: torch.Tensor | None,
    token_owner: torch.Tensor | None,
    tokens: torch.Tensor | None,
    scale: float,
    mask_value: float,
    reduce_heads: bool,
    backend: str,
) -> torch.Tensor:
    if token_owner is not None:
        _checks.check_routing_values(token_owner.new_zeros(0), q_cover, token_owner, 1)
    if tokens is not None and tokens.numel():
        _checks.check_tokens(tokens, k.shape[2])
    impl = _token_softmax_impl(resolve_backend(backend, q.device, q.dtype))
    return impl(q, k, q_cover, token_owner, scale, mask_value, tokens, reduce_heads)


@_token_softmax_op.register_fake
def _(q, k, q_cover, token_owner, tokens, scale, mask_value, reduce_heads, backend):
    batch, heads, length, _ = q.shape
    n_tokens = k.shape[2] if tokens is None else tokens.shape[0]
    shape = (batch, length, n_tokens) if reduce_heads else (batch, heads, length, n_tokens)
    dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    return torch.empty(shape, dtype=dtype, device=q.device)


#: ``auto``'s widest head dim for the shared-QK Triton kernel on CUDA. Measured on an H100 (fp16, H = 8, one
#: source/target pair, benchmarks/bench_self_attention.py): against two flash SDPA calls it is 1.17x faster at
#: L = 9216, D = 40, but 0.89x at L = 2304, D = 80 and 0.08x at L = 576, D = 160 (its tiles pad D = 160 to
#: 256). Wider heads run the torch backend: one SDPA call per stream.
SHARED_QK_TRITON_MAX_HEAD_DIM = 64


def _resolve_shared_qk_backend(backend: str, q: torch.Tensor) -> str:
    resolved = resolve_backend(backend, q.device, q.dtype)
    if backend == "auto" and resolved == "triton" and q.shape[-1] > SHARED_QK_TRITON_MAX_HEAD_DIM:
        return "torch"
    return resolved


@torch.library.custom_op("ale_kernels::shared_qk_attention", mutates_args=())
def _shared_qk_op(
    q: torch.Tensor, k: torch.Tensor, vs: list[torch.Tensor], scale: float, backend: str
) -> list[torch.Tensor]:
    impl = _shared_qk_impl(_resolve_shared_qk_backend(backend, q))
    return impl(q, k, vs, scale)


@_shared_qk_op.register_fake
def _(q, k, vs, scale, backend):
    batch, heads, length, head_dim = q.shape
    return [torch.empty((batch, length, heads, head_dim), dtype=q.dtype, device=q.device).transpose(1, 2) for _ in vs]


# ----------------------------------------------------------------------------------------------------------
# Public API.


def _default_cover(q_region: torch.Tensor) -> torch.Tensor:
    """``1 << q_region``; regions past the last object bit own no token, so they get an empty cover."""
    region = q_region.to(torch.int32)
    bit = torch.bitwise_left_shift(torch.ones_like(region), region.clamp(0, _checks.MAX_OBJECTS - 1))
    return torch.where(region < _checks.MAX_OBJECTS, bit, torch.zeros_like(bit))


def region_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_region: torch.Tensor,
    *,
    q_cover: torch.Tensor | None = None,
    token_owner: torch.Tensor | None = None,
    scale: float | None = None,
    mask_value: float = float("-inf"),
    backend: str = "auto",
) -> torch.Tensor:
    """Cross-attention where each query pixel reads the values (and optionally keys) of its own region,
    restricted to the tokens its cover allows.

    ``out[b,h,p] = softmax(scale * q[b,h,p] . k_r[b,h]^T + mask[p]) @ v[b,r,h]`` with ``r = q_region[b,p]``.

    Args:
        q: ``(B, H, L, D)`` queries (any strides, e.g. a ``(B, L, H*D)`` projection viewed per head).
        k: ``(B, H, S, D)`` keys shared by all regions, or ``(B, R, H, S, D)`` keys per region.
        v: ``(B, R, H, S, D)`` values per region (in ALE: each object's ORE values, the background last).
        q_region: ``(B, L)`` or ``(L,)`` integer region of each pixel, in ``[0, R)``.
        q_cover: ``(B, L)`` or ``(L,)`` int32 bit mask, bit ``j`` set where object ``j`` covers the pixel.
            Defaults to ``1 << q_region``. Read only when ``token_owner`` is given.
        token_owner: ``(B, S)`` or ``(S,)`` integer: ``-1`` for tokens every pixel may see, else the object
            ``j < 31`` that owns the token. ``None`` means no token restriction.
        scale: factor on ``q . k``; defaults to ``D ** -0.5``.
        mask_value: added to the scores of disallowed tokens. ``-inf`` restricts exactly (a row with no
            allowed token returns zeros); a finite value such as ``-100.0`` reproduces the published ALE code.
        backend: ``"auto"``, ``"reference"``, ``"torch"``, ``"triton"`` or ``"cpp"``.

    Returns:
        ``(B, H, L, D)`` in ``q``'s dtype, accumulated in float32, stored as ``(B, L, H, D)`` so that
        ``out.transpose(1, 2).reshape(B, L, H * D)`` (what a diffusers processor does next) is free.
    """
    _checks.check_backend(backend)
    q = _checks.check_float_tensor("q", q, 4, "(B, H, L, D)")
    batch, heads, length, head_dim = q.shape
    v = _checks.check_float_tensor("v", v, 5, "(B, R, H, S, D)")
    if not isinstance(k, torch.Tensor) or k.dim() not in (4, 5):
        got = tuple(k.shape) if isinstance(k, torch.Tensor) else type(k).__name__
        raise ValueError(f"k must have shape (B, H, S, D) or (B, R, H, S, D), got {got}")
    k = _checks.check_float_tensor("k", k, k.dim(), "(B, H, S, D) or (B, R, H, S, D)")
    _checks.check_same_dtype_device(q=q, k=k, v=v)
    regions, tokens = v.shape[1], v.shape[3]
    if regions < 1 or tokens < 1:
        raise ValueError(f"v must have at least one region and one token, got shape {tuple(v.shape)}")
    expected_v = (batch, regions, heads, tokens, head_dim)
    if tuple(v.shape) != expected_v:
        raise ValueError(
            f"v must have shape (B, R, H, S, D) = {expected_v} to match q {tuple(q.shape)}, got {tuple(v.shape)}"
        )
    expected_k = (batch, heads, tokens, head_dim) if k.dim() == 4 else expected_v
    if tuple(k.shape) != expected_k:
        layout = "(B, H, S, D)" if k.dim() == 4 else "(B, R, H, S, D)"
        raise ValueError(f"k must have shape {layout} = {expected_k} to match q and v, got {tuple(k.shape)}")
    q_region = _checks.normalize_routing("q_region", q_region, batch, length, q.device)
    if q_region is None:
        raise TypeError("q_region is required: an integer tensor of shape (B, L) or (L,)")
    token_owner = _checks.normalize_routing("token_owner", token_owner, batch, tokens, q.device, axis="S")
    q_cover = _checks.normalize_routing("q_cover", q_cover, batch, length, q.device)
    if q_cover is None:
        q_cover = _default_cover(q_region)
    scale = _checks.check_scale(scale, head_dim)
    mask_value = _checks.check_mask_value(mask_value)
    resolve_backend(backend, q.device, q.dtype)  # fail early and clearly, before any work
    return _region_attention_op(q, k, v, q_region, q_cover, token_owner, scale, mask_value, backend)


def token_restricted_softmax(
    q: torch.Tensor,
    k: torch.Tensor,
    *,
    q_cover: torch.Tensor | None = None,
    token_owner: torch.Tensor | None = None,
    scale: float | None = None,
    mask_value: float = float("-inf"),
    tokens: torch.Tensor | Sequence[int] | None = None,
    reduce_heads: bool = True,
    backend: str = "auto",
) -> torch.Tensor:
    """Probabilities of the token-restricted softmax for the tokens in ``tokens``, optionally head-averaged.

    The same softmax as :func:`region_attention` uses, for attention-map pictures and masks from attention
    maps. The fused paths never hold the full ``(B, H, L, S)`` probability tensor.

    Args:
        q: ``(B, H, L, D)`` queries; k: ``(B, H, S, D)`` keys.
        q_cover: ``(B, L)`` or ``(L,)`` int32 object bit mask per pixel; required with ``token_owner``.
        token_owner: ``(B, S)`` or ``(S,)``: ``-1`` for shared tokens, else the owning object (< 31).
        scale: factor on ``q . k``; defaults to ``D ** -0.5``.
        mask_value: added to disallowed scores; ``-inf`` restricts exactly.
        tokens: ``T`` token indices in ``[0, S)`` to return (a tensor or a sequence), ``None`` for all.
        reduce_heads: average over heads.
        backend: ``"auto"``, ``"reference"``, ``"torch"``, ``"triton"`` or ``"cpp"``.

    Returns:
        float32 ``(B, L, T)`` if ``reduce_heads`` else ``(B, H, L, T)`` (float64 for float64 inputs).
    """
    _checks.check_backend(backend)
    q, k = _checks.check_queries_and_keys(q, k, "S")
    batch, _, length, head_dim = q.shape
    n_keys = k.shape[2]
    token_owner = _checks.normalize_routing("token_owner", token_owner, batch, n_keys, q.device, axis="S")
    q_cover = _checks.normalize_routing("q_cover", q_cover, batch, length, q.device)
    if token_owner is not None and q_cover is None:
        raise ValueError("q_cover is required when token_owner is given: an int32 bit mask of shape (B, L) or (L,)")
    if tokens is not None:
        if not isinstance(tokens, torch.Tensor):
            tokens = torch.as_tensor(list(tokens), dtype=torch.int64, device=q.device)
        if tokens.dim() != 1 or tokens.dtype.is_floating_point or tokens.dtype == torch.bool:
            raise ValueError(
                f"tokens must be a 1-D integer tensor or sequence of ints, got {tokens.dtype} {tuple(tokens.shape)}"
            )
        if tokens.device != q.device:
            raise ValueError(f"tokens is on {tokens.device} but q is on {q.device}; they must match")
    scale = _checks.check_scale(scale, head_dim)
    mask_value = _checks.check_mask_value(mask_value)
    if not isinstance(reduce_heads, bool):
        raise TypeError(f"reduce_heads must be a bool, got {reduce_heads!r}")
    resolve_backend(backend, q.device, q.dtype)
    return _token_softmax_op(q, k, q_cover, token_owner, tokens, scale, mask_value, reduce_heads, backend)


def shared_qk_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    vs: Sequence[torch.Tensor],
    *,
    scale: float | None = None,
    backend: str = "auto",
) -> list[torch.Tensor]:
    """Self-attention whose softmax is computed once and applied to each value stream in ``vs``.

    ``outs[i] = softmax(scale * q k^T) @ vs[i]``. In ALE's self-attention Q/K injection the target branch
    attends with the source branch's queries and keys and its own values: passing ``vs = [v_src, v_tgt]``
    gives both branches' outputs from one softmax, where two attentions would compute it twice.

    Args:
        q: ``(B, H, L, D)`` queries (any strides, e.g. a ``(B, L, H*D)`` projection viewed per head).
        k: ``(B, H, Lk, D)`` keys, ``Lk >= 1``.
        vs: a list or tuple of one or more value tensors, each ``(B, H, Lk, D)`` with ``k``'s dtype and device.
        scale: factor on ``q . k``; defaults to ``D ** -0.5``.
        backend: ``"auto"``, ``"reference"``, ``"torch"``, ``"triton"`` or ``"cpp"``.

    Returns:
        a list with one ``(B, H, L, D)`` output per value stream, in ``q``'s dtype, accumulated in float32,
        each stored as ``(B, L, H, D)`` so that ``out.transpose(1, 2).reshape(B, L, H * D)`` is free.
    """
    _checks.check_backend(backend)
    q = _checks.check_float_tensor("q", q, 4, "(B, H, L, D)")
    if q.shape[3] < 1:
        raise ValueError(f"q must have a head dim D >= 1, got shape {tuple(q.shape)}")
    q, k = _checks.check_queries_and_keys(q, k, "Lk")
    head_dim = q.shape[3]
    if not isinstance(vs, (list, tuple)):
        got = "a single Tensor (pass [v])" if isinstance(vs, torch.Tensor) else type(vs).__name__
        raise TypeError(f"vs must be a list or tuple of (B, H, Lk, D) value tensors, got {got}")
    if not vs:
        raise ValueError(f"vs must hold at least one value tensor of shape (B, H, Lk, D) = {tuple(k.shape)}")
    for i, v in enumerate(vs):
        name = f"vs[{i}]"
        _checks.check_float_tensor(name, v, 4, "(B, H, Lk, D)")
        _checks.check_same_dtype_device(k=k, **{name: v})
        if v.shape != k.shape:
            raise ValueError(f"{name} must have shape (B, H, Lk, D) = {tuple(k.shape)} like k, got {tuple(v.shape)}")
    scale = _checks.check_scale(scale, head_dim)
    resolve_backend(backend, q.device, q.dtype)
    return _shared_qk_op(q, k, list(vs), scale, backend)
