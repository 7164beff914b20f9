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
    prune_shared_qk_configs,
    prune_softmax_configs,
    region_attention_configs,
    shared_qk_configs,
    token_softmax_configs,
)
from .launch import padded_head_dim
from .region_attention import _region_attention_fwd
from .shared_qk_attention import _shared_qk_fwd
from .token_softmax import _token_softmax_fwd, token_softmax_block_t

_POINTER = {torch.float16: "*fp16", torch.bfloat16: "*bf16", torch.float32: "*fp32"}

# Which pointer arguments hold the input dtype, which hold int32 routing data, which hold fp32 output.
_REGION_FLOAT_PTRS = ("Q", "K", "V", "Out")
_SOFTMAX_FLOAT_PTRS = ("Q", "K")
_SHARED_QK_FLOAT_PTRS = ("Q", "K", "V0", "V1", "Out0", "Out1")
_SHARED_QK_UNIT_STRIDES = ("stride_qd", "stride_kd", "stride_v0d", "stride_v1d", "stride_od")
_REGION_UNIT_STRIDES = ("stride_qd", "stride_kd", "stride_vd", "stride_od")
_SOFTMAX_UNIT_STRIDES = ("stride_qd", "stride_kd")
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


def _compile(fn, signature, constexprs, capability: int, num_warps: int, num_stages: int, attrs=None):
    source = triton.compiler.ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs)
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
    """Compile the region-attention kernel for ``sm_<capability>`` with one config and flag set, specialised
    as a launch on diffusers' projections (see :func:`compile_shared_qk`)."""
    flags = dict(K_PER_REGION=k_per_region, HAS_OWNER=has_owner, HARD_MASK=hard_mask)
    signature = _signature(_region_attention_fwd, dtype, _REGION_FLOAT_PTRS, ())
    return _compile_like_launch(
        "region_attention", _region_attention_fwd, signature, _REGION_UNIT_STRIDES, capability, dtype, head_dim,
        config, flags,
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
    """Compile the token-softmax kernel for ``sm_<capability>`` with one config and flag set, specialised as a
    launch on diffusers' projections (see :func:`compile_shared_qk`)."""
    flags = dict(
        BLOCK_T=token_softmax_block_t(n_tokens), HAS_OWNER=has_owner, HARD_MASK=hard_mask, REDUCE_HEADS=reduce_heads
    )
    signature = _signature(_token_softmax_fwd, dtype, _SOFTMAX_FLOAT_PTRS, _FP32_PTRS)
    return _compile_like_launch(
        "token_softmax", _token_softmax_fwd, signature, _SOFTMAX_UNIT_STRIDES, capability, dtype, head_dim, config,
        flags,
    )  # fmt: skip


def _compile_like_launch(
    name: str, fn, signature: dict, unit_strides: tuple[str, ...], capability: int, dtype: torch.dtype,
    head_dim: int, config: triton.Config, flags: dict,
) -> CompiledKernel:  # fmt: skip
    """Compile ``fn`` with one config and its kernel-specific ``flags``, plus the constexprs every kernel takes
    (head dim, padded head dim, stride alignment, fp32 dots), specialised as a launch on diffusers' tensors."""
    constexprs = dict(
        D=head_dim,
        HEAD_DIM=padded_head_dim(head_dim),
        ALIGN=_diffusers_alignment(head_dim),
        FP32_DOT=dtype == torch.float32,
        **flags,
        **config.kwargs,
    )
    attrs = _specialize_like_launch(fn, signature, constexprs, unit_strides)
    compiled = _compile(fn, signature, constexprs, capability, config.num_warps, config.num_stages, attrs=attrs)
    return CompiledKernel(
        name, capability, dict(config.kwargs), compiled.metadata.shared, config.num_warps, len(compiled.asm["ptx"])
    )


def _diffusers_alignment(head_dim: int) -> int:
    """``stride_alignment`` of diffusers' ``(B, L, H*D)`` projections: ``D``'s largest power-of-two factor, at
    most 16 (8 at ``D = 40``)."""
    return min(16, head_dim & -head_dim)


def _specialize_like_launch(fn, signature: dict, constexprs: dict, unit_strides: tuple[str, ...]) -> dict:
    """Specialise the compile as Triton specialises a launch on diffusers' tensors, returning ``attrs``.

    At launch, Triton turns integer arguments equal to 1 into constants and marks pointers divisible by 16.
    Without that, no load is vectorised, so none is pipelined, and the shared memory of ``num_stages > 1``
    would not show. ``unit_strides`` (the head-dim strides) become the constant 1.
    """
    attrs = {}
    for index, param in enumerate(fn.params):
        name = param.name
        if name in unit_strides:
            constexprs[name] = 1
            signature[name] = "constexpr"
        elif signature.get(name, "").startswith("*"):
            attrs[(index,)] = [["tt.divisibility", 16]]
    return attrs


def compile_shared_qk(
    capability: int, dtype: torch.dtype, head_dim: int, config: triton.Config, *, two_streams: bool = True
) -> CompiledKernel:
    """Compile the shared-QK self-attention kernel for ``sm_<capability>`` with one config.

    Specialised as a launch on diffusers' ``(B, L, H*D)`` projections: unit head-dim strides, and batch, head
    and row strides that are multiples of ``D``'s largest power-of-two factor (8 at ``D = 40``), so the
    loads vectorise and pipeline as they will on the GPU.
    """
    signature = _signature(_shared_qk_fwd, dtype, _SHARED_QK_FLOAT_PTRS, ())
    return _compile_like_launch(
        "shared_qk", _shared_qk_fwd, signature, _SHARED_QK_UNIT_STRIDES, capability, dtype, head_dim, config,
        dict(TWO_STREAMS=two_streams),
    )  # fmt: skip


class _DtypeOnly:
    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype


def autotune_space(kernel: str, dtype: torch.dtype, head_dim: int, n_tokens: int = 77) -> list[triton.Config]:
    """The configs the autotuner tries for this kernel, input dtype and head dim (after pruning).

    ``kernel`` is ``region_attention``, ``token_softmax`` or ``shared_qk``. ``n_tokens`` is the number of
    requested tokens of the softmax kernel (77 gives its largest token tile).
    """
    padded = padded_head_dim(head_dim)
    named_args = {"Q": _DtypeOnly(dtype)}
    if kernel == "region_attention":
        return prune_region_configs(region_attention_configs(), named_args, HEAD_DIM=padded)
    if kernel == "shared_qk":
        return prune_shared_qk_configs(shared_qk_configs(), named_args, HEAD_DIM=padded)
    if kernel != "token_softmax":
        raise ValueError(f"kernel must be 'region_attention', 'token_softmax' or 'shared_qk', got {kernel!r}")
    block_t = token_softmax_block_t(n_tokens)
    return prune_softmax_configs(token_softmax_configs(), named_args, HEAD_DIM=padded, BLOCK_T=block_t)
