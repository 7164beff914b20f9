"""Ahead-of-time compilation of the kernels for a GPU architecture, with no GPU present.

``triton.compile`` builds PTX and a cubin for a target such as sm_90 on any machine. That proves every
kernel and autotune config lowers for real hardware (catching what the interpreter does not, such as dot
operand type mismatches) and reports the shared memory each config needs, which must fit the chip.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
from triton.backends.compiler import GPUTarget

from .configs import (
    SHARED_MEMORY_LIMIT,
    prune_region_configs,
    prune_softmax_configs,
    region_attention_configs,
    token_softmax_configs,
)
from .region_attention import _region_attention_fwd
from .token_softmax import _token_softmax_fwd, token_softmax_block_t

_POINTER = {torch.float16: "*fp16", torch.bfloat16: "*bf16", torch.float32: "*fp32"}

# Which pointer arguments hold the input dtype, which hold int32 routing data, which hold fp32 output.
_REGION_FLOAT_PTRS = ("Q", "K", "V", "Out")
_SOFTMAX_FLOAT_PTRS = ("Q", "K")
_FP32_PTRS = ("Out",)
_INT_PTRS = ("RowOrder", "QRegion", "QCover", "TokenOwner", "Tokens")
_FLOAT_SCALARS = ("qk_scale", "mask_value", "inv_heads")


@dataclass(frozen=True)
class CompiledKernel:
    """Result of one ahead-of-time compile: the target, the launch config and the resources it needs."""

    kernel: str
    capability: int
    config: dict
    shared_bytes: int
    num_warps: int
    ptx_chars: int

    @property
    def fits(self) -> bool:
        return self.shared_bytes <= SHARED_MEMORY_LIMIT[self.capability]


def _signature(fn, dtype: torch.dtype, float_ptrs: tuple[str, ...], fp32_ptrs: tuple[str, ...]) -> dict:
    signature = {}
    for param in fn.params:
        if param.is_constexpr:
            continue
        name = param.name
        if name in fp32_ptrs:
            signature[name] = "*fp32"
        elif name in float_ptrs:
            signature[name] = _POINTER[dtype]
        elif name in _INT_PTRS:
            signature[name] = "*i32"
        elif name in _FLOAT_SCALARS:
            signature[name] = "fp32"
        else:
            signature[name] = "i32"
    return signature


def _compile(fn, signature, constexprs, capability: int, num_warps: int, num_stages: int):
    source = triton.compiler.ASTSource(fn=fn, signature=signature, constexprs=constexprs)
    options = {"num_warps": num_warps, "num_stages": num_stages}
    return triton.compile(source, target=GPUTarget("cuda", capability, 32), options=options)


def compile_region_attention(
    capability: int,
    dtype: torch.dtype,
    head_dim: int,
    config: triton.Config,
    *,
    k_per_region: bool = False,
    has_owner: bool = True,
    hard_mask: bool = False,
) -> CompiledKernel:
    """Compile the region-attention kernel for ``sm_<capability>`` with one config and flag set."""
    constexprs = dict(
        HEAD_DIM=max(16, triton.next_power_of_2(head_dim)),
        K_PER_REGION=k_per_region,
        HAS_OWNER=has_owner,
        HARD_MASK=hard_mask,
        FP32_DOT=dtype == torch.float32,
        **config.kwargs,
    )
    signature = _signature(_region_attention_fwd, dtype, _REGION_FLOAT_PTRS, ())
    compiled = _compile(_region_attention_fwd, signature, constexprs, capability, config.num_warps, config.num_stages)
    return CompiledKernel(
        "region_attention", capability, dict(config.kwargs), compiled.metadata.shared, config.num_warps,
        len(compiled.asm["ptx"]),
    )  # fmt: skip


def compile_token_softmax(
    capability: int,
    dtype: torch.dtype,
    head_dim: int,
    config: triton.Config,
    *,
    n_tokens: int = 77,
    has_owner: bool = True,
    hard_mask: bool = False,
    reduce_heads: bool = True,
) -> CompiledKernel:
    """Compile the token-softmax kernel for ``sm_<capability>`` with one config and flag set."""
    constexprs = dict(
        HEAD_DIM=max(16, triton.next_power_of_2(head_dim)),
        BLOCK_T=token_softmax_block_t(n_tokens),
        HAS_OWNER=has_owner,
        HARD_MASK=hard_mask,
        REDUCE_HEADS=reduce_heads,
        FP32_DOT=dtype == torch.float32,
        **config.kwargs,
    )
    signature = _signature(_token_softmax_fwd, dtype, _SOFTMAX_FLOAT_PTRS, _FP32_PTRS)
    compiled = _compile(_token_softmax_fwd, signature, constexprs, capability, config.num_warps, config.num_stages)
    return CompiledKernel(
        "token_softmax", capability, dict(config.kwargs), compiled.metadata.shared, config.num_warps,
        len(compiled.asm["ptx"]),
    )  # fmt: skip


class _DtypeOnly:
    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype


def autotune_space(kernel: str, dtype: torch.dtype, head_dim: int, n_tokens: int = 77) -> list[triton.Config]:
    """The configs the autotuner tries for this kernel, input dtype and head dim (after pruning).

    ``n_tokens`` is the number of requested tokens of the softmax kernel (77 gives its largest token tile).
    """
    padded = max(16, triton.next_power_of_2(head_dim))
    named_args = {"Q": _DtypeOnly(dtype)}
    if kernel == "region_attention":
        return prune_region_configs(region_attention_configs(), named_args, HEAD_DIM=padded)
    block_t = token_softmax_block_t(n_tokens)
    return prune_softmax_configs(token_softmax_configs(), named_args, HEAD_DIM=padded, BLOCK_T=block_t)
