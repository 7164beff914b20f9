"""What every Triton kernel's launch shares: the padded head dim, the grid, and the choice of config.

A launch runs one of three ways: with the caller's fixed config (tests and the GPU check script pin one),
under the interpreter with the small config named in :mod:`.configs` (read there at each launch, so tests
may swap it), or autotuned over the kernel's pruned space with a grid that follows the winning ``BLOCK_M``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import triton
from torch.utils._python_dispatch import _get_current_dispatch_mode

from .._env import interpreting
from . import configs


def padded_head_dim(head_dim: int) -> int:
    """The kernels' head-dim tile: the next power of two, at least 16 (``tl.dot``'s smallest operand)."""
    return max(16, triton.next_power_of_2(head_dim))


def _traceable(kernel):
    """``kernel`` as ``torch.library.wrap_triton`` sees it while a graph is traced (``torch.compile``, or the
    fake and functional modes a ``triton_op`` runs under), so that the launch becomes a node Inductor
    lowers; else ``kernel`` itself: in eager mode the wrapper would only add a dispatch (about 1 ms)."""
    wrap = getattr(torch.library, "wrap_triton", None)
    if wrap is None or interpreting():
        return kernel
    if torch.compiler.is_compiling() or _get_current_dispatch_mode() is not None:
        return wrap(kernel)
    return kernel


def launch(
    kernel: triton.JITFunction,
    autotuned: Callable,
    length: int,
    programs: tuple[int, ...],
    args: tuple,
    flags: dict,
    config: dict | None,
    interpreter_config: str = "INTERPRETER_CONFIG",
) -> None:
    """Launch ``kernel`` over ``cdiv(length, BLOCK_M)`` query tiles times ``programs`` on the other grid axes.

    Args:
        kernel: the ``@triton.jit`` kernel, run with a fixed config; autotuned: its ``triton.autotune`` wrapper.
        length: the query rows ``L``, tiled by ``BLOCK_M``.
        programs: the grid's other axes (e.g. ``(B * H,)``).
        args, flags: the kernel's positional arguments and its ``constexpr`` keywords.
        config: a fixed ``{"BLOCK_M", "BLOCK_N"[, "num_warps", "num_stages"]}``, or ``None`` to autotune
            (under the interpreter: the config named ``interpreter_config`` in :mod:`.configs`).
    """
    if config is None and interpreting():
        config = getattr(configs, interpreter_config)
    if config is None:
        _traceable(autotuned)[lambda meta: (triton.cdiv(length, meta["BLOCK_M"]), *programs)](*args, **flags)
    else:
        _traceable(kernel)[(triton.cdiv(length, config["BLOCK_M"]), *programs)](*args, **flags, **config)
