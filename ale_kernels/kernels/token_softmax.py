"""Triton kernel: probabilities of the token-restricted softmax for a few requested tokens.

For attention-map pictures and masks taken from attention maps, only a handful of the ``S`` token columns
are wanted, usually averaged over heads. One program owns ``BLOCK_M`` pixels of one batch entry (and one
head unless heads are reduced) and ``BLOCK_T`` requested tokens. Per head it makes two passes over the keys:
the first finds each row's softmax maximum and normaliser online, the second scores only the requested
tokens and writes ``exp2(s - m) / l``. The ``(B, H, L, S)`` probability tensor never exists; the output is
``(B, L, T)`` (or ``(B, H, L, T)``), always float32.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .common import dot, restrict_scores, stride_alignment, tile_ptrs
from .configs import (
    INTERPRETER_CONFIG,  # noqa: F401 (importable here for tests; launch reads configs')
    prune_softmax_configs,
    token_softmax_configs,
)
from .launch import launch, padded_head_dim
from .region_attention import LOG2E


@triton.jit
def _token_softmax_fwd(
    Q,
    K,
    Out,
    Tokens,
    QCover,
    TokenOwner,
    qk_scale,
    mask_value,
    stride_qb,
    stride_qh,
    stride_ql,
    stride_qd,
    stride_kb,
    stride_kh,
    stride_ks,
    stride_kd,
    stride_ob,
    stride_oh,
    stride_ol,
    stride_ot,
    stride_cover_b,
    stride_owner_b,
    H,
    L,
    S,
    T,
    inv_heads,
    D: tl.constexpr,  # a constant, so the head-dim mask keeps loads vectorised at D = 40
    HEAD_DIM: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_T: tl.constexpr,
    HAS_OWNER: tl.constexpr,
    HARD_MASK: tl.constexpr,
    REDUCE_HEADS: tl.constexpr,
    FP32_DOT: tl.constexpr,
    ALIGN: tl.constexpr,  # every batch, head and row stride of q and k is a multiple of this many elements
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    pid_t = tl.program_id(2)
    if REDUCE_HEADS:
        b = pid_bh.to(tl.int64)
        head_first = 0
        head_count = H
    else:
        b = (pid_bh // H).to(tl.int64)
        head_first = pid_bh % H
        head_count = 1

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_valid = offs_m < L
    offs_d = tl.arange(0, HEAD_DIM)
    d_valid = offs_d < D
    offs_t = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
    t_valid = offs_t < T
    token = tl.load(Tokens + offs_t, mask=t_valid, other=0).to(tl.int64)

    cover = tl.zeros([BLOCK_M], dtype=tl.int32)
    owner_t = tl.full([BLOCK_T], -1, dtype=tl.int32)
    if HAS_OWNER:
        cover = tl.load(QCover + b * stride_cover_b + offs_m, mask=row_valid, other=0)
        owner_t = tl.load(TokenOwner + b * stride_owner_b + token, mask=t_valid, other=-1)

    probs = tl.zeros([BLOCK_M, BLOCK_T], dtype=tl.float32)
    for hh in range(0, head_count):
        h = (head_first + hh).to(tl.int64)
        q_base = Q + tl.multiple_of(b * stride_qb + h * stride_qh, ALIGN)
        q = tl.load(
            tile_ptrs(q_base, offs_m, stride_ql, offs_d, stride_qd, ALIGN),
            mask=row_valid[:, None] & d_valid[None, :],
            other=0.0,
        )
        k_base = K + tl.multiple_of(b * stride_kb + h * stride_kh, ALIGN)

        # Pass 1: each row's maximum and normaliser over every token.
        m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
        for start_n in range(0, S, BLOCK_N):
            offs_n = start_n + tl.arange(0, BLOCK_N)
            col_valid = offs_n < S
            k = tl.load(
                tile_ptrs(k_base, offs_n, stride_ks, offs_d, stride_kd, ALIGN),
                mask=col_valid[:, None] & d_valid[None, :],
                other=0.0,
            )
            qk = dot(q, tl.trans(k), tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32), FP32_DOT) * qk_scale
            owner = tl.full([BLOCK_N], -1, dtype=tl.int32)
            if HAS_OWNER:
                owner = tl.load(TokenOwner + b * stride_owner_b + offs_n, mask=col_valid, other=-1)
            qk = restrict_scores(qk, cover, owner, mask_value, HAS_OWNER, HARD_MASK)
            qk = tl.where(col_valid[None, :], qk, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(qk, axis=1))
            m_shift = tl.where(m_new == float("-inf"), 0.0, m_new)
            l_i = l_i * tl.math.exp2(m_i - m_shift) + tl.sum(tl.math.exp2(qk - m_shift[:, None]), axis=1)
            m_i = m_new

        # Pass 2: only the requested tokens.
        k_t = tl.load(
            tile_ptrs(k_base, token, stride_ks, offs_d, stride_kd, ALIGN),
            mask=t_valid[:, None] & d_valid[None, :],
            other=0.0,
        )
        qk_t = dot(q, tl.trans(k_t), tl.zeros([BLOCK_M, BLOCK_T], dtype=tl.float32), FP32_DOT) * qk_scale
        qk_t = restrict_scores(qk_t, cover, owner_t, mask_value, HAS_OWNER, HARD_MASK)
        qk_t = tl.where(t_valid[None, :], qk_t, float("-inf"))
        m_shift = tl.where(m_i == float("-inf"), 0.0, m_i)
        p = tl.math.exp2(qk_t - m_shift[:, None]) / tl.where(l_i == 0.0, 1.0, l_i)[:, None]
        probs += p

    if REDUCE_HEADS:
        probs = probs * inv_heads
        out_base = Out + b * stride_ob
    else:
        out_base = Out + b * stride_ob + head_first.to(tl.int64) * stride_oh
    o_ptrs = out_base + offs_m[:, None] * stride_ol + offs_t[None, :] * stride_ot
    tl.store(o_ptrs, probs, mask=row_valid[:, None] & t_valid[None, :])


_token_softmax_autotuned = triton.autotune(
    configs=token_softmax_configs(),
    key=["L", "S", "T", "D", "ALIGN", "HAS_OWNER", "HARD_MASK", "REDUCE_HEADS"],
    prune_configs_by={"early_config_prune": prune_softmax_configs},
)(_token_softmax_fwd)

#: Requested tokens handled by one program; more tokens add programs along the grid's third axis.
MAX_BLOCK_T = 64


def token_softmax_block_t(n_tokens: int) -> int:
    """Token tile for ``n_tokens`` requested tokens (``tl.dot`` needs at least 16)."""
    return min(MAX_BLOCK_T, max(16, triton.next_power_of_2(n_tokens)))


def token_restricted_softmax_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    q_cover: torch.Tensor | None,
    token_owner: torch.Tensor | None,
    scale: float,
    mask_value: float,
    tokens: torch.Tensor | None,
    reduce_heads: bool,
    config: dict | None = None,
) -> torch.Tensor:
    """Launch the two-pass kernel. Same arguments and result as the reference backend.

    Args:
        q: ``(B, H, L, D)``; k: ``(B, H, S, D)``; q_cover ``(B, L)``; token_owner ``(B, S)`` or ``None``.
        tokens: ``(T,)`` token indices or ``None`` for all.
        config: fixed ``{"BLOCK_M", "BLOCK_N"}`` instead of autotuning (always fixed under the interpreter).

    Returns:
        float32 ``(B, L, T)`` when ``reduce_heads`` else ``(B, H, L, T)``.
    """
    batch, heads, length, head_dim = q.shape
    n_keys = k.shape[2]
    if tokens is None:
        tokens = torch.arange(n_keys, device=q.device)
    tokens = tokens.to(torch.int32)
    n_tokens = tokens.shape[0]
    shape = (batch, length, n_tokens) if reduce_heads else (batch, heads, length, n_tokens)
    out = torch.empty(shape, dtype=torch.float32, device=q.device)
    if length == 0 or n_tokens == 0:
        return out
    has_owner = token_owner is not None
    cover = q_cover.to(torch.int32) if has_owner else tokens
    owner = token_owner.to(torch.int32) if has_owner else tokens
    out4 = out.unsqueeze(1) if reduce_heads else out
    hard = mask_value == float("-inf")
    block_t = token_softmax_block_t(n_tokens)

    args = (
        q, k, out4, tokens, cover, owner,
        scale * LOG2E, 0.0 if hard else mask_value * LOG2E,
        *q.stride(), *k.stride(), *out4.stride(),
        0 if not has_owner or cover.shape[0] == 1 else cover.stride(0),
        0 if not has_owner or owner.shape[0] == 1 else owner.stride(0),
        heads, length, n_keys, n_tokens, 1.0 / heads,
    )  # fmt: skip
    flags = dict(
        D=head_dim,
        HEAD_DIM=padded_head_dim(head_dim),
        BLOCK_T=block_t,
        HAS_OWNER=has_owner,
        HARD_MASK=hard,
        REDUCE_HEADS=reduce_heads,
        FP32_DOT=q.dtype == torch.float32,
        ALIGN=stride_alignment(q, k),
    )
    programs = (batch if reduce_heads else batch * heads, triton.cdiv(n_tokens, block_t))
    launch(_token_softmax_fwd, _token_softmax_autotuned, length, programs, args, flags, config)
    return out
