"""ale-kernels: fused region-masked cross-attention and token-restricted softmax for mask-guided editing.

Ops (all take diffusers' natural ``(B, H, L, D)`` layouts and strides):

- :func:`region_attention`: each query pixel attends with its own region's values (and keys), restricted to
  the tokens its object cover allows. ALE's RGB-CAM in one pass.
- :func:`token_restricted_softmax`: the probabilities of that softmax for a few tokens, head-averaged, for
  attention-map pictures and masks, without the full ``(B, H, L, S)`` tensor.

Backends: ``reference`` (materialised, the oracle), ``torch`` (region-partitioned SDPA, any device),
``triton`` (fused kernels on CUDA, or on CPU under ``TRITON_INTERPRET=1``) and ``auto``.
"""

from ._checks import BACKENDS, MAX_OBJECTS
from .ops import region_attention, resolve_backend, token_restricted_softmax, triton_available

__version__ = "0.1.0"

__all__ = [
    "BACKENDS",
    "MAX_OBJECTS",
    "region_attention",
    "resolve_backend",
    "token_restricted_softmax",
    "triton_available",
]
