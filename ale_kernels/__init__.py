"""ale-kernels: fused region-masked cross-attention, token-restricted softmax and shared-QK self-attention.

Ops (all take diffusers' natural ``(B, H, L, D)`` layouts and strides):

- :func:`region_attention`: each query pixel attends with its own region's values (and keys), restricted to
  the tokens its object cover allows. ALE's RGB-CAM in one pass.
- :func:`token_restricted_softmax`: the probabilities of that softmax for a few tokens, head-averaged, for
  attention-map pictures and masks, without the full ``(B, H, L, S)`` tensor.
- :func:`shared_qk_attention`: one self-attention softmax applied to several value streams. ALE's Q/K
  injection (source Q and K, source and target V) in one pass.

Backends: ``reference`` (materialised, the oracle), ``torch`` (SDPA-based, any device),
``triton`` (fused kernels on CUDA, or on CPU under ``TRITON_INTERPRET=1``), ``cpp`` (the fused C++ CPU
kernel of ``region_attention`` in ``csrc/``, compiled on first use) and ``auto``; ``ale_kernels.registry``
resolves them, ``ale_kernels.backends`` declares which function implements each op on each.

Routing: the maps (``q_region``, ``q_cover``, ``token_owner``) or a :class:`RoutingPlan` built from them
once per edit and attention resolution (value checks, the Triton pixel order and the torch groups).
"""

from . import fused_ops
from ._checks import BACKENDS, MAX_OBJECTS
from .ops import region_attention, resolve_backend, shared_qk_attention, token_restricted_softmax, triton_available
from .plan import RoutingPlan

__version__ = "0.1.0"

__all__ = [
    "BACKENDS",
    "MAX_OBJECTS",
    "RoutingPlan",
    "region_attention",
    "resolve_backend",
    "shared_qk_attention",
    "token_restricted_softmax",
    "triton_available",
]

if fused_ops.wants_registration():
    fused_ops.register()
