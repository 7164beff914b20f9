"""Every Triton kernel and autotune config compiled for sm_80 (A100) and sm_90 (H100), with no GPU.

``triton.compile`` lowers each kernel through PTX to a cubin for the target chip. This catches what the
interpreter cannot (dot operand types, layouts, register and shared memory budgets), and the shared memory
each config needs is checked against the chip's per-block limit.

``test_every_autotune_config`` is the test the interpreter and CUDA runners share (tests/autotune_cases.py).
bfloat16 shares the float16 tiles and code paths; it is compiled at each space's last config (the one with the
largest tiles and shared memory).
"""

from __future__ import annotations

import pytest
import torch

from ale_kernels._env import interpreting

pytestmark = pytest.mark.compile
if interpreting():
    pytest.skip("compile tests need real @triton.jit functions: run without TRITON_INTERPRET", allow_module_level=True)

from ale_kernels.kernels import aot  # noqa: E402
from ale_kernels.kernels.configs import SHARED_MEMORY_LIMIT  # noqa: E402
from tests.autotune_cases import (  # noqa: E402
    CAPABILITIES,
    HEAD_DIMS,
    autotune_cases,
    check_autotune_config,
)

COMPILERS = {
    "region_attention": aot.compile_region_attention,
    "token_softmax": aot.compile_token_softmax,
    "shared_qk": aot.compile_shared_qk,
}


def _assert_fits(compiled) -> None:
    limit = SHARED_MEMORY_LIMIT[compiled.capability]
    assert compiled.shared_bytes <= limit, f"{compiled} needs more shared memory than sm_{compiled.capability} has"
    assert compiled.ptx_chars > 0


def test_every_head_dim_and_dtype_keeps_configs():
    for kernel in COMPILERS:
        for dtype in (torch.float16, torch.bfloat16, torch.float32):
            for head_dim in (16, *HEAD_DIMS, 64, 128):
                assert aot.autotune_space(kernel, dtype, head_dim), (kernel, dtype, head_dim)


@pytest.mark.parametrize("capability", CAPABILITIES)
@pytest.mark.parametrize("case", autotune_cases("compile"))
def test_every_autotune_config(case, capability):
    check_autotune_config("compile", case, capability)


# Each flag set once per chip, the two chips taking the two dtypes between them: a flag changes what comes
# before and after the dots (masking, key indexing, the head reduction), and the dots of every dtype on every
# chip are lowered by test_every_autotune_config already, so the full cross product would repeat them.
VARIANT_TARGETS = [pytest.param(80, torch.float32, id="sm80-fp32"), pytest.param(90, torch.float16, id="sm90-fp16")]


@pytest.mark.parametrize("capability, dtype", VARIANT_TARGETS)
@pytest.mark.parametrize(
    "flags",
    [
        dict(k_per_region=True, hard_mask=True),
        dict(k_per_region=True, hard_mask=False),
        dict(has_owner=False),
        dict(hard_mask=True),
    ],
    ids=["k-per-region-hard", "k-per-region-finite", "no-owner", "hard"],
)
def test_region_attention_variants_compile(flags, capability, dtype):
    config = aot.autotune_space("region_attention", dtype, 80)[-1]
    _assert_fits(aot.compile_region_attention(capability, dtype, 80, config, **flags))


@pytest.mark.parametrize("capability, dtype", VARIANT_TARGETS)
@pytest.mark.parametrize(
    "flags",
    [dict(reduce_heads=False), dict(has_owner=False), dict(hard_mask=True, n_tokens=3)],
    ids=["per-head", "no-owner", "hard-few-tokens"],
)
def test_token_softmax_variants_compile(flags, capability, dtype):
    config = aot.autotune_space("token_softmax", dtype, 80)[-1]
    _assert_fits(aot.compile_token_softmax(capability, dtype, 80, config, **flags))


@pytest.mark.parametrize("capability, dtype", VARIANT_TARGETS)
def test_shared_qk_one_stream_compiles(capability, dtype):
    config = aot.autotune_space("shared_qk", dtype, 80)[-1]
    _assert_fits(aot.compile_shared_qk(capability, dtype, 80, config, two_streams=False))


def test_shared_qk_compile_is_pipelined():
    """The compile is specialised like a diffusers launch, so loads pipeline: a third stage adds buffers.

    Without the specialisation (or with a runtime head dim) no load vectorises, nothing is pipelined, and the
    shared memory checks above would not see what ``num_stages`` costs on the GPU.
    """
    space = aot.autotune_space("shared_qk", torch.float16, 40)
    two, three = (next(c for c in space if c.num_stages == s and c.kwargs["BLOCK_N"] == 32) for s in (2, 3))
    assert two.kwargs == three.kwargs and two.num_warps == three.num_warps
    shared = [aot.compile_shared_qk(80, torch.float16, 40, c).shared_bytes for c in (two, three)]
    assert shared[1] > shared[0], shared
