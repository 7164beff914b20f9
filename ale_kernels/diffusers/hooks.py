"""Making :class:`RegionalAttnProcessor` known to diffusers' hooks that look processors up by class.

``diffusers.hooks.apply_layer_skip`` (perturbed-attention guidance, skip-layer guidance, the guiders) asks
diffusers' ``AttentionProcessorRegistry`` for the processor class's "skipped output" function and refuses a
class it does not know. Our processor's contract there is ``AttnProcessor2_0``'s: skipping a self-attention layer
returns its input ``hidden_states`` unchanged, and its plain path calls ``F.scaled_dot_product_attention``, which
the ``skip_attention_scores`` mode intercepts. Not intercepted (they do not call SDPA): the Q/K-injection path,
the regional cross-attention path (diffusers skips only self-attention layers anyway) and the ``"reference"``
backend's materialised attention. See docs/design.md section 3.
"""

from __future__ import annotations

import functools


def _skipped_attention_output(attn, *args, **kwargs):
    """An ``Attention.forward`` call skipped entirely: its output is its input ``hidden_states``."""
    return kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]


@functools.cache
def register_with_diffusers_hooks(processor_class: type) -> bool:
    """Register ``processor_class`` in diffusers' ``AttentionProcessorRegistry`` (once per class); ``False``
    where this diffusers has no such registry (older versions: nothing looks processors up there)."""
    try:
        from diffusers.hooks._helpers import AttentionProcessorMetadata, AttentionProcessorRegistry
    except ImportError:
        return False
    # Written into the table directly: ``register`` first imports every transformer model diffusers ships (the
    # stock entries), seconds per process for an entry that needs none of them. Those come on first lookup.
    registry = getattr(AttentionProcessorRegistry, "_registry", None)
    if not isinstance(registry, dict):
        return False
    registry[processor_class] = AttentionProcessorMetadata(skip_processor_output_fn=_skipped_attention_output)
    return True
