"""Triton helpers shared by the kernels: the dot product they all use and the token restriction."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def dot(a, b, acc, FP32_DOT: tl.constexpr):
    """``acc + a @ b`` in float32. Float32 inputs use 3xTF32 tensor-core products, accurate to float32;
    float16/bfloat16 inputs use the native tensor-core product."""
    if FP32_DOT:
        return tl.dot(a, b, acc, input_precision="tf32x3")
    else:
        return tl.dot(a, b, acc)


@triton.jit
def restrict_scores(qk, cover, owner, mask_value, HAS_OWNER: tl.constexpr, HARD_MASK: tl.constexpr):
    """Mask scores ``qk`` ``(M, N)`` of tokens a pixel may not see.

    A token is allowed iff its ``owner`` ``(N,)`` is negative or the owner's bit is set in the pixel's
    ``cover`` ``(M,)``. Disallowed scores become ``-inf`` (``HARD_MASK``) or are shifted by ``mask_value``.
    """
    if HAS_OWNER:
        owned_bit = (cover[:, None] >> tl.maximum(owner, 0)[None, :]) & 1
        allowed = (owner[None, :] < 0) | (owned_bit != 0)
        if HARD_MASK:
            qk = tl.where(allowed, qk, float("-inf"))
        else:
            qk = tl.where(allowed, qk, qk + mask_value)
    return qk


@triton.jit
def tile_ptrs(base, rows, stride_row, cols, stride_col, ALIGN: tl.constexpr):
    """Pointers of the ``(rows, cols)`` tile at ``base``. Row offsets are multiples of ``ALIGN`` elements (the
    wrapper checks), which lets the compiler vectorise the loads when ``stride_col`` is 1."""
    return base + tl.multiple_of(rows * stride_row, ALIGN)[:, None] + cols[None, :] * stride_col


def stride_alignment(*tensors: torch.Tensor) -> int:
    """The largest power of two up to 16 dividing every stride of ``tensors`` except the head dim's (last).

    Dims of size 1 are skipped: their offset is always 0, whatever stride PyTorch reports. Triton itself
    only marks strides divisible by 16; diffusers' head stride at ``D = 40`` is 40, and without this hint no
    load of a kernel would be vectorised.
    """
    align = 16
    for t in tensors:
        for size, stride in zip(t.shape[:-1], t.stride()[:-1], strict=True):
            while size > 1 and stride % align:
                align //= 2
    return align
