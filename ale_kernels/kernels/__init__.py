"""Triton kernels. Importing this package needs Triton; :mod:`ale_kernels` imports it lazily."""

from .region_attention import region_attention_triton
from .shared_qk_attention import shared_qk_attention_triton
from .token_softmax import token_restricted_softmax_triton

__all__ = ["region_attention_triton", "shared_qk_attention_triton", "token_restricted_softmax_triton"]
