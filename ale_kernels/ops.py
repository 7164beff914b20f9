"""Public ops, their backend resolution, and their registration as ``torch.library`` custom ops.

Each public function checks shapes, dtypes and devices (metadata only, so ``torch.compile`` traces it),
fills in defaults, resolves the backend once (``ale_kernels.registry``) and calls the registered custom op
with the concrete backend's name. The custom op is opaque to ``torch.compile`` and holds everything that
reads tensor values: the routing plan of raw-tensor calls (value checks included) and the backend's own
work, so ``torch.compile(fullgraph=True)`` goes through a model that calls these ops without a graph break.

In eager mode (no ``torch.compile`` tracing, no dispatch mode such as FakeTensorMode active, the profiler
off) a public op calls its backend's implementation directly: the custom-op dispatcher costs about 50 us
per call on the host, more than the whole kernel of a small layer (``benchmarks/bench_overhead.py``).
While tracing, the call goes through the registered op: the opaque ``custom_op``, or for the Triton backend
on CUDA with a routing plan the ``triton_op`` of :mod:`ale_kernels.fused_ops`, whose kernels Inductor sees.

Routing comes either as maps (``q_region``, ``q_cover``, ``token_owner``) or as a
:class:`~ale_kernels.plan.RoutingPlan` built from them once. A plan's tensors go to the custom op as they
are: nothing is checked or derived per call. Raw maps are planned inside the op, memoised per unchanged set
of map tensors (``_memo.py``): a caller that passes the same maps to every layer and step (as code written
before plans existed does) pays the plan's host sync once, not per call.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence

import torch
from torch.utils._python_dispatch import _get_current_dispatch_mode

from . import _checks, backends, fused_ops, registry, torch_impl  # noqa: F401 (importing backends fills the registry's tables)
from ._memo import memoized
from .backends import SHARED_QK_TRITON_MAX_HEAD_DIM, triton_available
from .plan import RoutingPlan, check_token_maps
from .registry import resolve_backend

__all__ = [
    "SHARED_QK_TRITON_MAX_HEAD_DIM",
    "RoutingPlan",
    "region_attention",
    "resolve_backend",
    "shared_qk_attention",
    "token_restricted_softmax",
    "triton_available",
]


def _resolve(op: str, backend: str, q: torch.Tensor) -> str:
    """The one backend resolution of a call: ``backend`` for ``q``'s device, dtype and head dim."""
    return registry.narrow(op, backend, resolve_backend(backend, q.device, q.dtype), q.shape[-1])


def _resolve_shared_qk_backend(backend: str, q: torch.Tensor) -> str:
    return _resolve("shared_qk_attention", backend, q)


def _direct(q: torch.Tensor) -> bool:
    """Whether a call runs its implementation directly rather than through the registered op: in eager mode
    with plain tensors and the profiler off (a profiled call keeps its ``ale_kernels::`` range)."""
    return (
        not torch.compiler.is_compiling()
        and type(q) is torch.Tensor
        and _get_current_dispatch_mode() is None
        and not torch.autograd._profiler_enabled()
    )


def _fused(op: str, resolved: str, q: torch.Tensor):
    """The ``triton_op`` of ``op`` for a traced call on the Triton backend with CUDA tensors, else ``None``."""
    if resolved != "triton" or q.device.type != "cuda":
        return None
    return fused_ops.REGISTERED.get(op)


# ----------------------------------------------------------------------------------------------------------
# Custom ops: what torch.compile sees as single nodes. ``backend`` is always a concrete, resolved backend.


def _plan_of_maps(
    q_region: torch.Tensor, q_cover: torch.Tensor | None, token_owner: torch.Tensor | None, regions: int
) -> RoutingPlan:
    """The plan of raw routing maps, built once per unchanged set of map tensors."""

    def build() -> RoutingPlan:
        return RoutingPlan.build(q_region, q_cover=q_cover, token_owner=token_owner, regions=regions)

    return memoized(("routing plan", regions), build, q_region, q_cover, token_owner)


#: The plan of the last eager raw-map call, ``(weak references to the maps as passed, their versions,
#: regions, plan)``: a caller passing the same maps to every layer finds it with a few identity checks, where
#: the general memo (``_memo.py``) takes about 10 us to key three tensors.
_last_raw_plan: list = [None]


def _versions(maps: tuple) -> tuple | None:
    try:
        return tuple(None if t is None else t._version for t in maps)
    except RuntimeError:  # inference tensors carry no version counter: nothing is cached for them
        return None


def _same(ref: weakref.ref | None, t: object) -> bool:
    return t is None if ref is None else ref() is t


def _last_plan_of(q_region: object, q_cover: object, token_owner: object, regions: int) -> RoutingPlan | None:
    """The last eager call's plan if it was built from these very map objects, unchanged since."""
    last = _last_raw_plan[0]
    if last is None or last[2] != regions:
        return None
    region_ref, cover_ref, owner_ref = last[0]
    if not (_same(region_ref, q_region) and _same(cover_ref, q_cover) and _same(owner_ref, token_owner)):
        return None
    return last[3] if _versions((q_region, q_cover, token_owner)) == last[1] else None


def _plan_of_raw_maps(
    q_region: torch.Tensor, q_cover: torch.Tensor | None, token_owner: torch.Tensor | None, regions: int
) -> RoutingPlan:
    """:func:`_plan_of_maps` of the caller's own map tensors (eager calls), remembered as the last plan."""
    maps = (q_region, q_cover, token_owner)
    plan = _last_plan_of(*maps, regions)
    if plan is None:
        plan = _plan_of_maps(*maps, regions)
        versions = _versions(maps)
        if versions is not None:
            refs = tuple(None if t is None else weakref.ref(t) for t in maps)
            _last_raw_plan[0] = (refs, versions, regions, plan)
    return plan


@torch.library.custom_op("ale_kernels::region_attention", mutates_args=())
def _region_attention_op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_region: torch.Tensor,
    q_cover: torch.Tensor | None,
    token_owner: torch.Tensor | None,
    row_order: torch.Tensor | None,
    group_order: torch.Tensor | None,
    group_table: torch.Tensor | None,
    group_tokens: torch.Tensor | None,
    group_visible: torch.Tensor | None,
    scale: float,
    mask_value: float,
    backend: str,
) -> torch.Tensor:
    regions = v.shape[1]
    if row_order is None:  # raw maps
        plan = _plan_of_maps(q_region, q_cover, token_owner, regions)
    else:
        plan = RoutingPlan(
            q_region, q_cover, token_owner, row_order, group_order, group_table, group_tokens, group_visible, regions
        )
    return _run_region_attention(q, k, v, plan, scale, mask_value, backend)


def _run_region_attention(q, k, v, plan: RoutingPlan, scale: float, mask_value: float, backend: str) -> torch.Tensor:
    return registry.implementation("region_attention", backend)(q, k, v, plan, scale, mask_value)


@_region_attention_op.register_fake
def _(q, k, v, q_region, q_cover, token_owner, row_order, group_order, group_table, group_tokens, group_visible,
      scale, mask_value, backend):  # fmt: skip
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
    maps_checked: bool,
    backend: str,
) -> torch.Tensor:
    return _run_token_softmax(
        q, k, q_cover, token_owner, tokens, scale, mask_value, reduce_heads, maps_checked, backend
    )


def _run_token_softmax(q, k, q_cover, token_owner, tokens, scale, mask_value, reduce_heads, maps_checked, backend):
    if token_owner is not None and not maps_checked:
        memoized("token maps", lambda: check_token_maps(q_cover, token_owner), q_cover, token_owner)
    if tokens is not None and tokens.numel():
        _checks.check_tokens(tokens, k.shape[2])
    impl = registry.implementation("token_restricted_softmax", backend)
    return impl(q, k, q_cover, token_owner, scale, mask_value, tokens, reduce_heads)


@_token_softmax_op.register_fake
def _(q, k, q_cover, token_owner, tokens, scale, mask_value, reduce_heads, maps_checked, backend):
    batch, heads, length, _ = q.shape
    n_tokens = k.shape[2] if tokens is None else tokens.shape[0]
    shape = (batch, length, n_tokens) if reduce_heads else (batch, heads, length, n_tokens)
    dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    return torch.empty(shape, dtype=dtype, device=q.device)


@torch.library.custom_op("ale_kernels::shared_qk_attention", mutates_args=())
def _shared_qk_op(
    q: torch.Tensor, k: torch.Tensor, vs: list[torch.Tensor], scale: float, backend: str
) -> list[torch.Tensor]:
    return registry.implementation("shared_qk_attention", backend)(q, k, vs, scale)


@_shared_qk_op.register_fake
def _(q, k, vs, scale, backend):
    batch, heads, length, head_dim = q.shape
    return [torch.empty((batch, length, heads, head_dim), dtype=q.dtype, device=q.device).transpose(1, 2) for _ in vs]


# ----------------------------------------------------------------------------------------------------------
# Public API.


def _check_plan(plan: object, batch: int, length: int, n_keys: int, device: torch.device) -> RoutingPlan:
    """``plan`` fits queries of ``batch`` x ``length`` pixels and ``n_keys`` keys on ``device`` (metadata only)."""
    if not isinstance(plan, RoutingPlan):
        raise TypeError(f"plan must be a RoutingPlan (see RoutingPlan.build), got {type(plan).__name__}")
    if plan.length != length:
        raise ValueError(
            f"plan was built for L = {plan.length} pixels but q has L = {length}: build one plan per attention "
            "resolution"
        )
    if plan.tokens is not None and plan.tokens != n_keys:
        raise ValueError(f"plan was built for S = {plan.tokens} tokens but k has S = {n_keys}")
    if plan.routing_batch not in (1, batch):
        raise ValueError(f"plan was built for a batch of B = {plan.routing_batch} but q has B = {batch}")
    if plan.device != device:
        raise ValueError(f"plan is on {plan.device} but q is on {device}; they must match")
    return plan


def _no_maps_with_plan(**maps: object) -> None:
    given = [name for name, t in maps.items() if t is not None]
    if given:
        raise TypeError(f"pass the routing either as a plan or as maps, not both: got a plan and {', '.join(given)}")


def region_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_region: torch.Tensor | RoutingPlan | None = None,
    *,
    q_cover: torch.Tensor | None = None,
    token_owner: torch.Tensor | None = None,
    plan: RoutingPlan | None = None,
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
        q_region: ``(B, L)`` or ``(L,)`` integer region of each pixel, in ``[0, R)``; or a
            :class:`~ale_kernels.plan.RoutingPlan` (then ``q_cover`` and ``token_owner`` stay ``None``).
        q_cover: ``(B, L)`` or ``(L,)`` int32 bit mask, bit ``j`` set where object ``j`` covers the pixel.
            Defaults to ``1 << q_region``. Read only when ``token_owner`` is given.
        token_owner: ``(B, S)`` or ``(S,)`` integer: ``-1`` for tokens every pixel may see, else the object
            ``j < 31`` that owns the token. ``None`` means no token restriction.
        plan: the routing as a :class:`~ale_kernels.plan.RoutingPlan` built for ``L`` pixels and ``R``
            regions (and ``S`` tokens if it restricts them), instead of the maps: no value is checked or
            derived per call.
        scale: factor on ``q . k``; defaults to ``D ** -0.5``.
        mask_value: added to the scores of disallowed tokens. ``-inf`` restricts exactly (a row with no
            allowed token returns zeros); a finite value such as ``-100.0`` reproduces the published ALE code.
        backend: ``"auto"``, ``"reference"``, ``"torch"``, ``"triton"`` or ``"cpp"``.

    Returns:
        ``(B, H, L, D)`` in ``q``'s dtype, accumulated in float32, stored as ``(B, L, H, D)`` so that
        ``out.transpose(1, 2).reshape(B, L, H * D)`` (what a diffusers processor does next) is free.
    """
    _checks.check_backend(backend)
    if not _region_inputs_fit(q, k, v):
        _check_region_inputs(q, k, v)  # raises, naming what does not fit
    direct = _direct(q)
    batch, _, length, head_dim = q.shape
    regions, tokens = v.shape[1], v.shape[3]
    if isinstance(q_region, RoutingPlan):
        if plan is not None:
            raise TypeError("pass the plan once: as the 4th argument or as plan=, not both")
        plan, q_region = q_region, None
    if plan is not None:
        if q_region is not None or q_cover is not None or token_owner is not None:
            _no_maps_with_plan(q_region=q_region, q_cover=q_cover, token_owner=token_owner)
        if not _plan_fits(plan, batch, length, tokens, regions, q.device):
            _check_plan(plan, batch, length, tokens, q.device)
            if plan.regions != regions:
                raise ValueError(f"plan was built for R = {plan.regions} regions but v has R = {regions}")
    else:
        if q_region is None:
            raise TypeError("q_region is required: an integer tensor of shape (B, L) or (L,), or a RoutingPlan")
        # Maps seen unchanged by the last call were checked then; the plan built from them fitting q and v
        # means they fit too.
        plan = _last_plan_of(q_region, q_cover, token_owner, regions) if direct else None
        if plan is None or not _plan_fits(plan, batch, length, tokens, regions, q.device):
            plan = None
            _checks.check_routing_map("q_region", q_region, batch, length, q.device)
            _checks.check_routing_map("token_owner", token_owner, batch, tokens, q.device, axis="S")
            _checks.check_routing_map("q_cover", q_cover, batch, length, q.device)
    scale = _checks.check_scale(scale, head_dim)
    mask_value = _checks.check_mask_value(mask_value)
    resolved = _resolve("region_attention", backend, q)  # fails early and clearly, before any work
    if token_owner is None:
        q_cover = None  # read only with owners; leaving it out keeps the plan memo's key stable
    if direct:
        if plan is None:
            plan = _plan_of_raw_maps(q_region, q_cover, token_owner, regions)
        return _run_region_attention(q, k, v, plan, scale, mask_value, resolved)
    if plan is None:
        region = _checks.normalize_routing("q_region", q_region, batch, length, q.device)
        cover = _checks.normalize_routing("q_cover", q_cover, batch, length, q.device)
        owner = _checks.normalize_routing("token_owner", token_owner, batch, tokens, q.device, axis="S")
        return _region_attention_op(
            q, k, v, region, cover, owner, None, None, None, None, None, scale, mask_value, resolved
        )
    fused = _fused("region_attention", resolved, q)
    if fused is not None:
        return fused(q, k, v, plan.q_region, plan.q_cover, plan.token_owner, plan.row_order, scale, mask_value)
    # The torch backend's groups go to the op only where it reads them: their sizes follow the masks, so as
    # graph inputs they would make a compiled step's shapes (and a CUDA graph) differ from edit to edit.
    groups = (plan.group_order, plan.group_table, plan.group_tokens, plan.group_visible)
    if resolved != "torch" or q.device.type in torch_impl.ONE_CALL_DEVICES:
        groups = (None, None, None, None)
    routing = (plan.q_region, plan.q_cover, plan.token_owner, plan.row_order, *groups)
    return _region_attention_op(q, k, v, *routing, scale, mask_value, resolved)


def _region_inputs_fit(q: object, k: object, v: object) -> bool:
    """Whether ``q``, ``k``, ``v`` are a well-formed call's (every check of :func:`_check_region_inputs`, in one
    expression: the checks are most of a small call's host time)."""
    if type(q) is not torch.Tensor or type(k) is not torch.Tensor or type(v) is not torch.Tensor:
        return False
    dtype, device = q.dtype, q.device
    if dtype not in _checks.FLOAT_DTYPES or k.dtype != dtype or v.dtype != dtype:
        return False
    if k.device != device or v.device != device:
        return False
    q_shape, v_shape = q.shape, v.shape
    if len(q_shape) != 4 or len(v_shape) != 5 or v_shape[1] < 1 or v_shape[3] < 1:
        return False
    batch, heads, _, head_dim = q_shape
    if v_shape[0] != batch or v_shape[2] != heads or v_shape[4] != head_dim:
        return False
    k_shape = k.shape
    return k_shape == (batch, heads, v_shape[3], head_dim) or k_shape == v_shape


def _check_region_inputs(q: object, k: object, v: object) -> None:
    """The checks of ``region_attention``'s tensors, each raising with a message naming the argument."""
    q = _checks.check_float_tensor("q", q, 4, "(B, H, L, D)")
    batch, heads, _, head_dim = q.shape
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


def _plan_fits(plan: object, batch: int, length: int, n_keys: int, regions: int, device: torch.device) -> bool:
    """Whether ``plan`` passes :func:`_check_plan` and has ``regions`` regions (the quick test of a call)."""
    if type(plan) is not RoutingPlan or plan.regions != regions:
        return False
    shape = plan.q_region.shape
    if shape[1] != length or (shape[0] != 1 and shape[0] != batch) or plan.q_region.device != device:
        return False
    owner = plan.token_owner
    return owner is None or owner.shape[1] == n_keys


def token_restricted_softmax(
    q: torch.Tensor,
    k: torch.Tensor,
    *,
    q_cover: torch.Tensor | None = None,
    token_owner: torch.Tensor | None = None,
    plan: RoutingPlan | None = None,
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
        plan: a :class:`~ale_kernels.plan.RoutingPlan` built for ``L`` pixels, instead of ``q_cover`` and
            ``token_owner`` (its regions are not read; a plan without owners restricts nothing).
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
    if plan is not None:
        _no_maps_with_plan(q_cover=q_cover, token_owner=token_owner)
        plan = _check_plan(plan, batch, length, n_keys, q.device)
        token_owner = plan.token_owner
        q_cover = None if token_owner is None else plan.q_cover
    else:
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
    resolved = _resolve("token_restricted_softmax", backend, q)
    call = (q, k, q_cover, token_owner, tokens, scale, mask_value, reduce_heads, plan is not None, resolved)
    if _direct(q):
        return _run_token_softmax(*call)
    # Requested tokens are range-checked on the host: only calls without them take the fused op.
    fused = None if plan is None or tokens is not None else _fused("token_restricted_softmax", resolved, q)
    if fused is not None:
        return fused(q, k, q_cover, token_owner, None, scale, mask_value, reduce_heads)
    return _token_softmax_op(*call)


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
    resolved = _resolve_shared_qk_backend(backend, q)
    if _direct(q):
        return registry.implementation("shared_qk_attention", resolved)(q, k, list(vs), scale)
    fused = _fused("shared_qk_attention", resolved, q)
    if fused is not None:
        return fused(q, k, list(vs), scale)
    return _shared_qk_op(q, k, list(vs), scale, resolved)
