"""Autotune spaces of the Triton kernels, their pruning, and the config used under the interpreter.

The spaces are plain data so that the compile tests can build every config for sm_80 and sm_90 and check
its shared memory against the chip, and so that the GPU check script can report which one won.

Why these spaces. Cross-attention keys are short (S = 77 for CLIP), so a program makes one to three trips
over the keys: software pipelining has nothing to overlap, and every config uses ``num_stages=1`` (which also
halves shared memory). The query tile and the key tile are what matter: big query tiles amortise the key
loads, small ones give enough programs to fill the GPU at the 12 x 12 and 24 x 24 layers.
"""

from __future__ import annotations

import torch
import triton

#: Shared memory per SM usable by one block (bytes): A100 (sm_80) and H100 (sm_90).
SHARED_MEMORY_LIMIT = {80: 166912, 90: 232448}

#: Every kept config must fit the smaller chip, so one space serves both.
_SHARED_MEMORY_BUDGET = min(SHARED_MEMORY_LIMIT.values())


def _configs() -> list[triton.Config]:
    return [
        triton.Config({"BLOCK_M": block_m, "BLOCK_N": block_n}, num_warps=num_warps, num_stages=1)
        for block_m in (32, 64, 128)
        for block_n in (32, 64)
        for num_warps in (4, 8)
    ]


def region_attention_configs() -> list[triton.Config]:
    """Autotune space of the region-attention kernel (pruned per call by :func:`prune_region_configs`)."""
    return _configs()


def token_softmax_configs() -> list[triton.Config]:
    """Autotune space of the token-restricted softmax kernel (pruned by :func:`prune_softmax_configs`)."""
    return _configs()


def _element_size(named_args: dict) -> int:
    q = named_args.get("Q")
    dtype = getattr(q, "dtype", torch.float16)
    return 4 if dtype == torch.float32 else 2


def _prune(
    configs: list[triton.Config], head_dim: int, element_size: int, extra_rows: int, fp32_factor: int
) -> list[triton.Config]:
    kept = []
    for c in configs:
        block_m, block_n = c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]
        # The fp32 accumulator (BLOCK_M x HEAD_DIM) lives in registers: at most 128 floats per thread,
        # else it spills to local memory.
        if block_m * head_dim > 128 * 32 * c.num_warps:
            continue
        # ... and 8 warps on a small tile leave most threads idle: one of the two warp counts is enough.
        if c.num_warps == 8 and block_m * head_dim <= 64 * 64:
            continue
        if c.num_warps == 4 and block_m * head_dim > 64 * 128:
            continue
        # An upper bound on shared memory (fitted to compiled kernels, checked by the compile tests): the
        # dot operand tiles, twice over for fp32 inputs, whose 3xTF32 dot splits each operand in two.
        factor = fp32_factor if element_size == 4 else 1
        shared = (block_m + max(block_n, extra_rows)) * head_dim * element_size * factor + 4096
        if shared > _SHARED_MEMORY_BUDGET:
            continue
        kept.append(c)
    return kept


def prune_region_configs(configs: list[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
    """Drop region-attention configs that would spill registers or overflow shared memory."""
    head_dim = kwargs.get("HEAD_DIM", named_args.get("HEAD_DIM"))
    return _prune(configs, head_dim, _element_size(named_args), 0, fp32_factor=2)


def prune_softmax_configs(configs: list[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
    """Drop token-softmax configs that would spill registers or overflow shared memory."""
    head_dim = kwargs.get("HEAD_DIM", named_args.get("HEAD_DIM"))
    block_t = kwargs.get("BLOCK_T", named_args.get("BLOCK_T"))
    return _prune(configs, head_dim, _element_size(named_args), block_t, fp32_factor=1)


#: Used under the interpreter, where autotuning would run every config through Python.
INTERPRETER_CONFIG = {"BLOCK_M": 16, "BLOCK_N": 32}
