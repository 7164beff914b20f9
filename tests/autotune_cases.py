"""The every-autotune-config test, written once and run three ways.

Autotuning checks only the config that wins on the machine at hand, so each config of each Triton kernel's
autotune space is launched (or compiled) alone, at the SD head dims, by three runners:

- ``interpreter`` (tests/test_triton_interpreter.py): CPU tensors under ``TRITON_INTERPRET=1``, against the
  float64 oracle;
- ``compile`` (tests/test_triton_compile.py): lowered to a cubin for sm_80 and sm_90 with no GPU, and the
  shared memory checked against the chip's limit;
- ``cuda`` (tests/cuda): the cubins really run on a GPU, against the float64 oracle.

Each test module parametrizes :func:`check_autotune_config` over :func:`autotune_cases` with its runner's
dtypes; the case list and the checks live here only.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from ale_kernels.testing.tolerance import assert_close_to_oracle, upcast
from tests.problems import make_problem, make_shared_qk_problem

KERNELS = ("region_attention", "token_softmax", "shared_qk")
HEAD_DIMS = (40, 80, 160)  # SD1.5; padded to 64, 128, 256 (64 covers SD2/SDXL too)
CAPABILITIES = (80, 90)
# The softmax kernel's requested tokens: out of order, repeated, the last of S = 77 included.
SOFTMAX_TOKENS = (0, 3, 5, 76, 2)


@dataclass(frozen=True)
class AutotuneCase:
    """One config of one kernel's autotune space at one dtype and head dim."""

    kernel: str
    dtype: torch.dtype
    head_dim: int
    config: object  # a triton.Config; triton is imported lazily so that collecting this module stays cheap

    @property
    def id(self) -> str:
        c = self.config
        tiles = f"m{c.kwargs['BLOCK_M']}n{c.kwargs['BLOCK_N']}w{c.num_warps}s{c.num_stages}"
        return f"{self.kernel}-{str(self.dtype)[6:]}-d{self.head_dim}-{tiles}"

    def launch_config(self) -> dict:
        """The config as the ``*_triton`` wrappers take it."""
        return dict(self.config.kwargs, num_warps=self.config.num_warps, num_stages=self.config.num_stages)


# Each runner's dtypes. bfloat16 shares float16's tiles. It is left out of the interpreter: Triton's interpreter
# computes tl.dot on bfloat16 operands wrongly on CPU (a known interpreter gap; loads, stores and casts are
# right), so bfloat16 is proven by the compile and CUDA runners. Compiling takes seconds per config, and
# bfloat16 lowers through float16's code paths, so the compile runner takes each bfloat16 space's last config
# (the largest tiles, the most shared memory).
RUNNER_DTYPES = {
    "interpreter": (torch.float32, torch.float16),
    "compile": (torch.float16, torch.float32, torch.bfloat16),
    "cuda": (torch.float16, torch.bfloat16, torch.float32),
}
LAST_ONLY = {"compile": (torch.bfloat16,)}


def autotune_cases(runner: str) -> list:
    """Every (kernel, dtype, head dim, config) that ``runner`` checks, as ``pytest.param``, ids naming all four.

    Args:
        runner: ``interpreter``, ``compile`` or ``cuda``.
    """
    from ale_kernels.kernels import aot

    if runner not in RUNNER_DTYPES:
        raise ValueError(f"runner must be one of {sorted(RUNNER_DTYPES)}, got {runner!r}")
    params = []
    for kernel in KERNELS:
        for dtype in RUNNER_DTYPES[runner]:
            for head_dim in HEAD_DIMS:
                space = aot.autotune_space(kernel, dtype, head_dim)
                if dtype in LAST_ONLY.get(runner, ()):
                    space = space[-1:]
                for config in space:
                    case = AutotuneCase(kernel, dtype, head_dim, config)
                    params.append(pytest.param(case, id=case.id))
    return params


def to_device(t: torch.Tensor | None, device: torch.device | str) -> torch.Tensor | None:
    """``t`` on ``device`` with the same strides (a strided view moved with ``.to`` may become contiguous)."""
    if t is None:
        return None
    moved = torch.empty_strided(t.size(), t.stride(), dtype=t.dtype, device=device)
    moved.copy_(t)
    return moved


@dataclass(frozen=True)
class Sizes:
    """Problem sizes of a numeric runner: more pixels than the largest query tile and more keys than the
    largest key tile, so every config takes several tiles of each (mixed regions included)."""

    batch: int
    heads: int
    length: int
    n_keys: int  # shared_qk's keys; the other kernels take SD's 77 tokens


# Interpreted programs run in Python, so the interpreter's problems are the smallest that still cross tiles.
INTERPRETER_SIZES = Sizes(batch=1, heads=1, length=130, n_keys=150)
CUDA_SIZES = Sizes(batch=2, heads=3, length=301, n_keys=517)


def check_autotune_config(runner: str, case: AutotuneCase, capability: int | None = None) -> None:
    """The every-autotune-config test: ``case`` launched alone by ``runner`` and checked.

    Args:
        runner: ``interpreter`` (CPU tensors, needs ``TRITON_INTERPRET=1``), ``compile`` (no GPU; needs
            ``capability``) or ``cuda`` (needs a GPU).
        case: one of :func:`autotune_cases` ``(runner)``.
        capability: the compile runner's target, 80 or 90.
    """
    if runner == "compile":
        if capability not in CAPABILITIES:
            raise ValueError(f"capability must be one of {CAPABILITIES} for the compile runner, got {capability!r}")
        check_compiles(case, capability)
    elif runner == "interpreter":
        check_numerics(case, "cpu", INTERPRETER_SIZES)
    elif runner == "cuda":
        check_numerics(case, "cuda", CUDA_SIZES)
    else:
        raise ValueError(f"runner must be one of {sorted(RUNNER_DTYPES)}, got {runner!r}")


def check_numerics(case: AutotuneCase, device: torch.device | str, sizes: Sizes) -> None:
    """Launch ``case``'s kernel with its config alone on ``device`` and hold it to the tolerance policy."""
    from ale_kernels.kernels.region_attention import region_attention_triton
    from ale_kernels.kernels.shared_qk_attention import shared_qk_attention_triton
    from ale_kernels.kernels.token_softmax import token_restricted_softmax_triton
    from ale_kernels.reference import (
        region_attention_reference,
        shared_qk_attention_reference,
        token_restricted_softmax_reference,
    )

    scale, config = case.head_dim**-0.5, case.launch_config()
    if case.kernel == "shared_qk":
        q, k, vs = make_shared_qk_problem(
            sizes.batch, sizes.heads, sizes.length, sizes.n_keys, case.head_dim, dtype=case.dtype, layout="diffusers"
        )
        q, k, vs = to_device(q, device), to_device(k, device), [to_device(v, device) for v in vs]
        got = shared_qk_attention_triton(q, k, vs, scale, config=config)
        expected = shared_qk_attention_reference(q, k, vs, scale)
        oracle = shared_qk_attention_reference(*upcast((q, k, vs)), scale)
        for stream, (out, ref, exact) in enumerate(zip(got, expected, oracle, strict=True)):
            assert_close_to_oracle(out, ref, exact, dtype=case.dtype, name=f"{case.id} stream {stream}")
        return
    # The softmax kernel sums over heads: give it at least two to sum.
    heads = max(2, sizes.heads) if case.kernel == "token_softmax" else sizes.heads
    p = make_problem(sizes.batch, heads, sizes.length, case.head_dim, regions=3, dtype=case.dtype, layout="diffusers")
    routing = [to_device(t, device) for t in (p.q_region, p.q_cover, p.token_owner)]
    if case.kernel == "region_attention":
        args = (*(to_device(t, device) for t in (p.q, p.k, p.v)), *routing, scale, -100.0)
        kernel, reference = region_attention_triton, region_attention_reference
    else:
        tokens = torch.tensor(SOFTMAX_TOKENS, device=device)
        args = (to_device(p.q, device), to_device(p.k, device), *routing[1:], scale, -100.0, tokens, True)
        kernel, reference = token_restricted_softmax_triton, token_restricted_softmax_reference
    got = kernel(*args, config=config)
    assert_close_to_oracle(got, reference(*args), reference(*upcast(args)), dtype=case.dtype, name=case.id)


def check_compiles(case: AutotuneCase, capability: int) -> None:
    """Compile ``case``'s kernel for ``sm_<capability>`` and check it fits the chip's shared memory."""
    from ale_kernels.kernels import aot
    from ale_kernels.kernels.configs import SHARED_MEMORY_LIMIT

    compilers = {
        "region_attention": aot.compile_region_attention,
        "token_softmax": aot.compile_token_softmax,
        "shared_qk": aot.compile_shared_qk,
    }
    compiled = compilers[case.kernel](capability, case.dtype, case.head_dim, case.config)
    assert_fits(compiled, SHARED_MEMORY_LIMIT[capability])


def assert_fits(compiled, limit: int) -> None:
    """A compiled kernel produced PTX and needs at most ``limit`` bytes of shared memory per block."""
    assert compiled.shared_bytes <= limit, f"{compiled} needs more shared memory than sm_{compiled.capability} has"
    assert compiled.ptx_chars > 0
