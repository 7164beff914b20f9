"""The ALE editing pipeline: object-restricted embeddings (ORE), region-guided cross-attention (RGB-CAM),
background blending and self-attention Q/K injection, on InfEdit's inversion-free DDCM sampling with an LCM.

Attention runs on :mod:`ale_kernels`' fused ops through its diffusers processors.
"""

from .pipeline import DEFAULT_MODEL, ALEEditOutput, ALEEditPipeline, edit_size, load_image

__all__ = ["DEFAULT_MODEL", "ALEEditOutput", "ALEEditPipeline", "edit_size", "load_image"]
