"""Triton kernel: self-attention with one softmax shared by two value streams.

In ALE's self-attention Q/K injection the target branch attends with the source branch's queries and keys
and its own values, so the source and target outputs share one probability matrix. One program owns
``BLOCK_M`` query pixels of one (batch, head) and sweeps the keys in ``BLOCK_N`` tiles: each key tile is
loaded once, its scores update one online softmax (base 2, as in Triton's fused-attention tutorial), and
the probabilities multiply both streams' value tiles into two float32 accumulators. That is one pass where
two attentions would compute the scores and exponentials twice.

``TWO_STREAMS=False`` is the same kernel for one stream; more than two streams run two at a time. Head dims
that are not powers of two (40/80/160) are padded to ``HEAD_DIM`` with load masks, and all loads use the
caller's strides, so diffusers' ``(B, L, H*D)`` projections viewed as ``(B, H, L, D)`` need no copy.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .common import dot, stride_alignment, tile_ptrs
from .configs import prune_shared_qk_configs, shared_qk_configs
from .launch import launch, padded_head_dim
from .region_attention import LOG2E


@triton.jit
def _shared_qk_fwd(
    Q,
    K,
    V0,
    V1,
    Out0,
    Out1,
    qk_scale,  # softmax scale * log2(e)
    stride_qb,
    stride_qh,
    stride_ql,
    stride_qd,
    stride_kb,
    stride_kh,
    stride_ks,
    stride_kd,
    stride_v0b,
    stride_v0h,
    stride_v0s,
    stride_v0d,
    stride_v1b,
    stride_v1h,
    stride_v1s,
    stride_v1d,
    stride_ob,  # both outputs are allocated alike: one set of strides
    stride_oh,
    stride_ol,
    stride_od,
    H,
    L,
    Lk,
    D: tl.constexpr,  # a constant, so the head-dim mask keeps loads vectorised (and pipelined) at D = 40
    HEAD_DIM: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    ALIGN: tl.constexpr,  # every batch, head and row stride is a multiple of this many elements
    TWO_STREAMS: tl.constexpr,  # False: V1 and Out1 are unused
    FP32_DOT: tl.constexpr,  # 3xTF32 tensor-core dots: fp32 accuracy for fp32 inputs
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_valid = offs_m < L
    offs_d = tl.arange(0, HEAD_DIM)
    d_valid = offs_d < D

    # Triton hints only strides divisible by 16; diffusers' head stride at D = 40 is 40, and without the
    # hint no load of the kernel would be vectorised or pipelined.
    q_base = Q + tl.multiple_of(b * stride_qb + h * stride_qh, ALIGN)
    k_base = K + tl.multiple_of(b * stride_kb + h * stride_kh, ALIGN)
    v0_base = V0 + tl.multiple_of(b * stride_v0b + h * stride_v0h, ALIGN)
    v1_base = V1 + tl.multiple_of(b * stride_v1b + h * stride_v1h, ALIGN)

    q_ptrs = tile_ptrs(q_base, offs_m, stride_ql, offs_d, stride_qd, ALIGN)
    q = tl.load(q_ptrs, mask=row_valid[:, None] & d_valid[None, :], other=0.0)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc0 = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    acc1 = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)

    for start_n in range(0, Lk, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        col_valid = offs_n < Lk
        kv_mask = col_valid[:, None] & d_valid[None, :]
        k = tl.load(tile_ptrs(k_base, offs_n, stride_ks, offs_d, stride_kd, ALIGN), mask=kv_mask, other=0.0)
        qk = dot(q, tl.trans(k), tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32), FP32_DOT) * qk_scale
        qk = tl.where(col_valid[None, :], qk, float("-inf"))

        # Online softmax. Every row sees key 0 in the first tile, so m_i is finite from then on and the
        # first tile's alpha = exp2(-inf) = 0 clears nothing but zeros.
        m_new = tl.maximum(m_i, tl.max(qk, axis=1))
        p = tl.math.exp2(qk - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        m_i = m_new

        v0 = tl.load(tile_ptrs(v0_base, offs_n, stride_v0s, offs_d, stride_v0d, ALIGN), mask=kv_mask, other=0.0)
        acc0 = dot(p.to(v0.dtype), v0, acc0 * alpha[:, None], FP32_DOT)
        if TWO_STREAMS:
            v1 = tl.load(tile_ptrs(v1_base, offs_n, stride_v1s, offs_d, stride_v1d, ALIGN), mask=kv_mask, other=0.0)
            acc1 = dot(p.to(v1.dtype), v1, acc1 * alpha[:, None], FP32_DOT)

    # l_i >= 1: the row maximum contributes exp2(0).
    inv_l = 1.0 / l_i
    out_mask = row_valid[:, None] & d_valid[None, :]
    out_offs = tl.multiple_of(b * stride_ob + h * stride_oh, ALIGN)
    out0_ptrs = tile_ptrs(Out0 + out_offs, offs_m, stride_ol, offs_d, stride_od, ALIGN)
    tl.store(out0_ptrs, (acc0 * inv_l[:, None]).to(Out0.dtype.element_ty), mask=out_mask)
    if TWO_STREAMS:
        out1_ptrs = tile_ptrs(Out1 + out_offs, offs_m, stride_ol, offs_d, stride_od, ALIGN)
        tl.store(out1_ptrs, (acc1 * inv_l[:, None]).to(Out1.dtype.element_ty), mask=out_mask)


_shared_qk_autotuned = triton.autotune(
    configs=shared_qk_configs(),
    key=["L", "Lk", "D", "ALIGN", "TWO_STREAMS"],
    prune_configs_by={"early_config_prune": prune_shared_qk_configs},
)(_shared_qk_fwd)


def shared_qk_attention_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    vs: list[torch.Tensor],
    scale: float,
    config: dict | None = None,
) -> list[torch.Tensor]:
    """Launch the fused kernel once per pair of value streams. Same arguments and result as the reference.

    Args:
        q: ``(B, H, L, D)``; k and each of ``vs``: ``(B, H, Lk, D)``; any strides.
        config: fixed ``{"BLOCK_M", "BLOCK_N"[, "num_warps", "num_stages"]}`` instead of autotuning
            (always fixed under the interpreter).

    Returns:
        one ``(B, H, L, D)`` per stream in ``q``'s dtype, stored as ``(B, L, H, D)``.
    """
    batch, heads, length, head_dim = q.shape
    n_keys = k.shape[2]
    outs = [torch.empty((batch, length, heads, head_dim), dtype=q.dtype, device=q.device).transpose(1, 2) for _ in vs]
    if length == 0:
        return outs
    for first in range(0, len(vs), 2):
        # An odd last stream runs alone; its V1/Out1 arguments repeat V0/Out0 and are never read.
        v0, out0 = vs[first], outs[first]
        two = first + 1 < len(vs)
        v1, out1 = (vs[first + 1], outs[first + 1]) if two else (v0, out0)
        args = (
            q, k, v0, v1, out0, out1, scale * LOG2E,
            *q.stride(), *k.stride(), *v0.stride(), *v1.stride(), *out0.stride(),
            heads, length, n_keys,
        )  # fmt: skip
        flags = dict(
            D=head_dim,
            HEAD_DIM=padded_head_dim(head_dim),
            ALIGN=stride_alignment(q, k, v0, v1, out0),
            TWO_STREAMS=two,
            FP32_DOT=q.dtype == torch.float32,
        )
        launch(
            _shared_qk_fwd, _shared_qk_autotuned, length, (batch * heads,), args, flags, config,
            interpreter_config="SHARED_QK_INTERPRETER_CONFIG",
        )  # fmt: skip
    return outs
