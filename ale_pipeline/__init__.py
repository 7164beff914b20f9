"""The ALE editing pipeline: object-restricted embeddings (ORE), region-guided cross-attention (RGB-CAM),
background blending and self-attention Q/K injection, on InfEdit's inversion-free DDCM sampling with an LCM.

Attention runs on :mod:`ale_kernels`' fused ops through its diffusers processors. The settings and their
published defaults are :class:`~ale_pipeline.config.EditConfig` (``DEFAULTS``; ``XL_DEFAULTS`` for
:class:`ALEEditXLPipeline`, the same edit on SDXL-family models).
"""

from __future__ import annotations

import importlib

from .config import DEFAULT_MODEL, DEFAULTS, XL_DEFAULTS, EditConfig

# Loaded on first use: ``ale_pipeline.config`` must import without torch or diffusers, so that a command can
# answer ``--help`` at once, and importing it runs this file first.
_LAZY = {
    "ALEEditOutput": ".pipeline",
    "ALEEditPipeline": ".pipeline",
    "ALEEditXLPipeline": ".pipeline_xl",
    "edit_size": ".images",
    "load_image": ".images",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULTS",
    "DEFAULT_MODEL",
    "XL_DEFAULTS",
    "ALEEditOutput",
    "ALEEditPipeline",
    "ALEEditXLPipeline",
    "EditConfig",
    "edit_size",
    "load_image",
]
