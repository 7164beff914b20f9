"""Named ranges around the attention processors' stages, for ``torch.profiler`` traces and Nsight (NVTX).

Off by default: a disabled :func:`stage` is a shared ``nullcontext`` and costs one function call. ``ale-profile``
turns the ranges on; a user profiling their own pipeline calls :func:`enable_stage_ranges` first. The range
names all start with ``ale::``, so a trace or an Nsight timeline can be filtered to them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

_enabled = False
_NULL = contextlib.nullcontext()

#: Stage names, in the order a processor call runs them.
STAGES = (
    "ale::projections",  # to_q / to_k / to_v
    "ale::attention_probe",  # attention-map pictures (token_restricted_softmax)
    "ale::cross_attention.regional",  # region_attention on the routed entries (RGB-CAM)
    "ale::self_attention.qk_injection",  # shared_qk_attention (Q/K injection)
    "ale::attention",  # plain attention of the remaining entries
    "ale::out_projection",  # to_out
)


def enable_stage_ranges(enabled: bool = True) -> None:
    """Turn the processors' ``ale::*`` ranges on (``torch.profiler.record_function`` + NVTX on CUDA) or off."""
    global _enabled
    _enabled = enabled


def stage_ranges_enabled() -> bool:
    """Whether :func:`stage` currently records ranges."""
    return _enabled


@contextlib.contextmanager
def _recorded(name: str) -> Iterator[None]:
    nvtx = torch.cuda.is_available() and torch.cuda.is_initialized()
    if nvtx:
        torch.cuda.nvtx.range_push(name)
    try:
        with torch.profiler.record_function(name):
            yield
    finally:
        if nvtx:
            torch.cuda.nvtx.range_pop()


def stage(name: str) -> contextlib.AbstractContextManager:
    """A context manager that marks ``name`` in profiler traces and NVTX when ranges are on, else does nothing."""
    return _recorded(name) if _enabled else _NULL
