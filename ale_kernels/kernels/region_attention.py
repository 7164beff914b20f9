"""Triton kernel: region-routed, token-restricted cross-attention in one pass.

One program owns ``BLOCK_M`` query pixels of one (batch, head). Pixels are visited in region order (the
wrapper passes a stable argsort of ``q_region``), so almost every tile holds one region and a boundary tile
two. For each key tile the program

1. loads the keys once (or, with keys per region, once per region present in the tile) and computes the
   scores of all its pixels,
2. applies the token restriction from the pixel's cover bits and the token's owner, and the key tail mask,
3. updates the online softmax (base 2, as in Triton's fused-attention tutorial), and
4. for each region present in the tile, loads that region's values and adds ``P_r @ V_r``, where ``P_r``
   keeps only the rows of that region.

Regions absent from a tile are never touched. Head dims that are not powers of two (40/80/160) are padded
to ``HEAD_DIM`` with load masks, and all loads use the caller's strides, so diffusers' ``(B, L, H*D)``
projections viewed as ``(B, H, L, D)`` need no copy.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .common import dot, restrict_scores, stride_alignment, tile_ptrs
from .configs import (
    INTERPRETER_CONFIG,  # noqa: F401 (importable here for tests; launch reads configs')
    prune_region_configs,
    region_attention_configs,
)
from .launch import launch, padded_head_dim

LOG2E = 1.4426950408889634


@triton.jit
def _region_attention_fwd(
    Q,
    K,
    V,
    Out,
    RowOrder,
    QRegion,
    QCover,
    TokenOwner,
    qk_scale,  # softmax scale * log2(e)
    mask_value,  # mask_value * log2(e); unused when HARD_MASK
    stride_qb,
    stride_qh,
    stride_ql,
    stride_qd,
    stride_kb,
    stride_kr,
    stride_kh,
    stride_ks,
    stride_kd,
    stride_vb,
    stride_vr,
    stride_vh,
    stride_vs,
    stride_vd,
    stride_ob,
    stride_oh,
    stride_ol,
    stride_od,
    stride_order_b,
    stride_region_b,
    stride_cover_b,
    stride_owner_b,
    H,
    L,
    S,
    D: tl.constexpr,  # a constant, so the head-dim mask keeps loads vectorised at D = 40
    HEAD_DIM: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    K_PER_REGION: tl.constexpr,
    HAS_OWNER: tl.constexpr,
    HARD_MASK: tl.constexpr,
    FP32_DOT: tl.constexpr,  # 3xTF32 tensor-core dots: fp32 accuracy for fp32 inputs
    ALIGN: tl.constexpr,  # every batch, region, head and row stride is a multiple of this many elements
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_valid = offs_m < L
    offs_d = tl.arange(0, HEAD_DIM)
    d_valid = offs_d < D

    rows = tl.load(RowOrder + b * stride_order_b + offs_m, mask=row_valid, other=0).to(tl.int64)
    region = tl.load(QRegion + b * stride_region_b + rows, mask=row_valid, other=0)
    region_lo = tl.min(tl.where(row_valid, region, 2147483647), axis=0)
    region_hi = tl.max(tl.where(row_valid, region, -1), axis=0)
    cover = tl.zeros([BLOCK_M], dtype=tl.int32)
    if HAS_OWNER:
        cover = tl.load(QCover + b * stride_cover_b + rows, mask=row_valid, other=0)

    q_base = Q + tl.multiple_of(b * stride_qb + h * stride_qh, ALIGN)
    q = tl.load(
        tile_ptrs(q_base, rows, stride_ql, offs_d, stride_qd, ALIGN),
        mask=row_valid[:, None] & d_valid[None, :],
        other=0.0,
    )

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)

    k_base = K + tl.multiple_of(b * stride_kb + h * stride_kh, ALIGN)
    v_base = V + tl.multiple_of(b * stride_vb + h * stride_vh, ALIGN)
    for start_n in range(0, S, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        col_valid = offs_n < S
        kv_mask = col_valid[:, None] & d_valid[None, :]
        k_ptrs = tile_ptrs(k_base, offs_n, stride_ks, offs_d, stride_kd, ALIGN)

        if K_PER_REGION:
            qk = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
            for r in range(region_lo, region_hi + 1):
                k = tl.load(k_ptrs + tl.multiple_of(r * stride_kr, ALIGN), mask=kv_mask, other=0.0)
                qk_r = dot(q, tl.trans(k), tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32), FP32_DOT)
                qk = tl.where(region[:, None] == r, qk_r, qk)
        else:
            k = tl.load(k_ptrs, mask=kv_mask, other=0.0)
            qk = dot(q, tl.trans(k), tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32), FP32_DOT)
        qk = qk * qk_scale

        owner = tl.zeros([BLOCK_N], dtype=tl.int32)
        if HAS_OWNER:
            owner = tl.load(TokenOwner + b * stride_owner_b + offs_n, mask=col_valid, other=-1)
        qk = restrict_scores(qk, cover, owner, mask_value, HAS_OWNER, HARD_MASK)
        qk = tl.where(col_valid[None, :], qk, float("-inf"))

        # Online softmax. A row that has seen only -inf keeps m = -inf; shifting by 0 instead keeps
        # exp2 finite (0) so such a row ends with l = 0 and a zero output, never NaN.
        m_new = tl.maximum(m_i, tl.max(qk, axis=1))
        m_shift = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.math.exp2(qk - m_shift[:, None])
        alpha = tl.math.exp2(m_i - m_shift)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None]
        m_i = m_new

        v_ptrs = tile_ptrs(v_base, offs_n, stride_vs, offs_d, stride_vd, ALIGN)
        for r in range(region_lo, region_hi + 1):
            v = tl.load(v_ptrs + tl.multiple_of(r * stride_vr, ALIGN), mask=kv_mask, other=0.0)
            p_r = tl.where(region[:, None] == r, p, 0.0).to(v.dtype)
            acc = dot(p_r, v, acc, FP32_DOT)

    acc = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]
    o_base = Out + tl.multiple_of(b * stride_ob + h * stride_oh, ALIGN)
    o_ptrs = tile_ptrs(o_base, rows, stride_ol, offs_d, stride_od, ALIGN)
    tl.store(o_ptrs, acc.to(Out.dtype.element_ty), mask=row_valid[:, None] & d_valid[None, :])


_region_attention_autotuned = triton.autotune(
    configs=region_attention_configs(),
    # L is in the key: the 96 x 96 and 12 x 12 layers want different query tiles (programs to fill the GPU).
    key=["L", "S", "D", "ALIGN", "K_PER_REGION", "HAS_OWNER", "HARD_MASK"],
    prune_configs_by={"early_config_prune": prune_region_configs},
)(_region_attention_fwd)


def _batch_stride(t: torch.Tensor) -> int:
    return 0 if t.shape[0] == 1 else t.stride(0)


def _row_order(q_region: torch.Tensor) -> torch.Tensor:
    """Pixels in region order, ``(B, L)`` or ``(1, L)`` int32: a tile then skips the values of every region it
    does not hold. A routing plan carries it ready-made."""
    if q_region.shape[0] == 1 or q_region.stride(0) == 0:
        return torch.argsort(q_region[0], stable=True).to(torch.int32)[None]
    return torch.argsort(q_region, dim=1, stable=True).to(torch.int32)


def region_attention_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_region: torch.Tensor,
    q_cover: torch.Tensor | None,
    token_owner: torch.Tensor | None,
    scale: float,
    mask_value: float,
    config: dict | None = None,
    *,
    row_order: torch.Tensor | None = None,
) -> torch.Tensor:
    """Launch the fused kernel. Same arguments and result as the reference backend.

    Args:
        q: ``(B, H, L, D)``; k: ``(B, H, S, D)`` or ``(B, R, H, S, D)``; v: ``(B, R, H, S, D)``; any strides.
        q_region, q_cover: ``(B, L)``; token_owner: ``(B, S)`` or ``None``.
        config: fixed ``{"BLOCK_M", "BLOCK_N"[, "num_warps", "num_stages"]}`` instead of autotuning
            (always fixed under the interpreter).
        row_order: ``(B, L)`` or ``(1, L)`` int32 stable argsort of ``q_region`` per row (a routing plan's
            ``row_order``); computed here when ``None``.

    Returns:
        ``(B, H, L, D)`` in ``q``'s dtype, stored as ``(B, L, H, D)``.
    """
    batch, heads, length, head_dim = q.shape
    tokens = k.shape[-2]
    out = torch.empty((batch, length, heads, head_dim), dtype=q.dtype, device=q.device).transpose(1, 2)
    if length == 0:
        return out
    k_per_region = k.dim() == 5
    has_owner = token_owner is not None
    order = _row_order(q_region) if row_order is None else row_order
    region = q_region.to(torch.int32)
    # Unread by the kernel without an owner (HAS_OWNER=False): any int32 map of the right shape will do.
    cover = q_cover.to(torch.int32) if has_owner else region
    owner = token_owner.to(torch.int32) if has_owner else region
    k5 = k if k_per_region else k.unsqueeze(1)
    hard = mask_value == float("-inf")

    args = (
        q, k5, v, out, order, region, cover, owner,
        scale * LOG2E, 0.0 if hard else mask_value * LOG2E,
        *q.stride(), *k5.stride(), *v.stride(), *out.stride(),
        _batch_stride(order), _batch_stride(region), _batch_stride(cover), _batch_stride(owner),
        heads, length, tokens,
    )  # fmt: skip
    flags = dict(
        D=head_dim,
        HEAD_DIM=padded_head_dim(head_dim),
        K_PER_REGION=k_per_region,
        HAS_OWNER=has_owner,
        HARD_MASK=hard,
        FP32_DOT=q.dtype == torch.float32,
        ALIGN=stride_alignment(q, k5, v, out),
    )
    launch(_region_attention_fwd, _region_attention_autotuned, length, (batch * heads,), args, flags, config)
    return out
