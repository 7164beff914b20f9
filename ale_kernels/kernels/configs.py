"""Autotune spaces of the Triton kernels, their pruning, and the config used under the interpreter.

The spaces are plain data so that the compile tests can build every config for sm_80 and sm_90 and check
its shared memory against the chip, and so that the GPU check script can report which one won.

Why these spaces. Cross-attention keys are short (S = 77 for CLIP), so a program makes one to three trips
over the keys: software pipelining has nothing to overlap, and every config uses ``num_stages=1`` (which also
halves shared memory). The query tile and the key tile are what matter: big query tiles amortise the key
loads, small ones give enough programs to fill the GPU at the 12 x 12 and 24 x 24 layers.

Self-attention (the shared-QK kernel) is the opposite case: thousands of keys, so it pipelines its loads,
and its two value streams double the accumulators and the value tiles, which its pruning accounts for.
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


def shared_qk_configs() -> list[triton.Config]:
    """Autotune space of the shared-QK self-attention kernel (pruned by :func:`prune_shared_qk_configs`).

    Unlike cross-attention, self-attention sweeps many key tiles (Lk up to 9216 at 96 x 96 latents), so
    software pipelining has loads to overlap and ``num_stages`` is part of the space.
    """
    return [
        triton.Config({"BLOCK_M": block_m, "BLOCK_N": block_n}, num_warps=num_warps, num_stages=num_stages)
        for block_m in (64, 128)
        for block_n in (32, 64)
        for num_warps in (4, 8)
        for num_stages in (1, 2, 3)
    ]


#: Live fp32 words per thread a shared-QK config may need: of the 255 registers, the rest hold addresses,
#: offsets and the softmax statistics. Fitted to ptxas register and spill reports for sm_80.
_SHARED_QK_WORDS_PER_THREAD = 184


def _shared_qk_words(config: triton.Config, num_warps: int, head_dim: int, element_size: int, streams: int) -> float:
    """Registers per thread (in 32-bit words) of the values a shared-QK program keeps live."""
    block_m, block_n = config.kwargs["BLOCK_M"], config.kwargs["BLOCK_N"]
    # fp32 inputs hold each dot operand as a high and a low tf32 part (3xTF32).
    operand_words = element_size / 4 * (2 if element_size == 4 else 1)
    words = streams * block_m * head_dim  # the fp32 accumulators, one per value stream
    words += block_m * block_n  # scores / probabilities
    words += (block_m + block_n) * head_dim * operand_words  # q and one key or value tile as dot operands
    return words / (32 * num_warps)


def _shared_qk_shared_bytes(config: triton.Config, num_stages: int, head_dim: int, element_size: int, streams: int):
    """An upper bound on shared memory for sm_80 and sm_90 (fitted to compiled kernels, checked by the
    compile tests).

    The q tile, ``num_stages`` buffers of the key tile and of every value tile (sm_90 keeps that many, sm_80
    one fewer), and layout-conversion scratch, which fp32's 3xTF32 operand split makes larger.
    """
    block_m, block_n = config.kwargs["BLOCK_M"], config.kwargs["BLOCK_N"]
    tiles = (block_m + (1 + streams) * num_stages * block_n) * head_dim * element_size
    if element_size == 4:
        return tiles + (block_n * head_dim + block_m * block_n) * element_size * block_m // 64
    return tiles + block_m * block_n * element_size


def prune_shared_qk_configs(configs: list[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
    """Drop shared-QK configs that would spill registers or overflow shared memory.

    Rules, in order: a third stage only for 32-key tiles (a 64-key tile already gives the loads a whole
    tile of work to hide behind); a single stage only where two stages overflow shared memory; 8 warps only
    where 4 would run out of registers (else half the threads idle); every kept config must fit the smaller
    chip. Where nothing passes (fp32 at head dim 256: 3xTF32 operands and two value tiles), the config with
    the least shared memory is kept: it spills registers but runs, and the compile tests check it fits.
    """
    head_dim = kwargs.get("HEAD_DIM", named_args.get("HEAD_DIM"))
    streams = 2 if kwargs.get("TWO_STREAMS", named_args.get("TWO_STREAMS", True)) else 1
    element_size = _element_size(named_args)

    def shared(c: triton.Config, num_stages: int | None = None) -> int:
        stages = c.num_stages if num_stages is None else num_stages
        return _shared_qk_shared_bytes(c, stages, head_dim, element_size, streams)

    def words(c: triton.Config, num_warps: int | None = None) -> float:
        warps = c.num_warps if num_warps is None else num_warps
        return _shared_qk_words(c, warps, head_dim, element_size, streams)

    kept = []
    for c in configs:
        if c.num_stages == 3 and c.kwargs["BLOCK_N"] != 32:
            continue
        if c.num_stages == 1 and shared(c, 2) <= _SHARED_MEMORY_BUDGET:
            continue
        if words(c) > _SHARED_QK_WORDS_PER_THREAD:
            continue
        if c.num_warps == 8 and words(c, 4) <= _SHARED_QK_WORDS_PER_THREAD:
            continue
        if shared(c) > _SHARED_MEMORY_BUDGET:
            continue
        kept.append(c)
    return kept or [min(configs, key=lambda c: (shared(c), words(c)))]


#: Under the interpreter: tiles small enough that the tests' short sequences span several key tiles.
SHARED_QK_INTERPRETER_CONFIG = {"BLOCK_M": 16, "BLOCK_N": 16}
