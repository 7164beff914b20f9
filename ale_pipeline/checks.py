"""Checks of an edit's inputs, run once before any model work; each error names the argument and what it takes.

``ALEEditPipeline.check_inputs`` and the attention-mask pass call these. The functions they feed
(:func:`~ale_pipeline.prompts.build_prompts`, :func:`~ale_pipeline.masks.prepare_masks`, the ops) keep their
own contracts for direct callers; what is checked here is what only the pipeline knows (which setting a value
came from, how many objects the edit has) or what would otherwise fail after slow work.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence

import torch

from ale_kernels import BACKENDS

from .config import OUTPUT_TYPES, SELF_REPLACE_PRESETS, EditConfig
from .prompts import EditPrompts, build_prompts, build_prompts_for_all, check_pairs


def parse_edits(edits: object) -> list[tuple[str, str]]:
    """``edits`` as stripped ``(source, target)`` phrase pairs.

    Args:
        edits: 1 to ``MAX_OBJECTS`` edits, each a ``(source, target)`` pair of strings or a ``"source=>target"``
            string; no phrase may be empty (:func:`~ale_pipeline.prompts.check_pairs` checks the pairs).
    """
    if isinstance(edits, str) or not isinstance(edits, Sequence):
        raise TypeError(
            f"edits must be a list of 'source=>target' strings or (source, target) pairs, got {type(edits).__name__}"
        )
    pairs = []
    for k, edit in enumerate(edits):
        if isinstance(edit, str):
            if "=>" not in edit:
                raise ValueError(
                    f"edits[{k}]: an edit must be 'source=>target' or a (source, target) pair, got {edit!r}"
                )
            edit = tuple(edit.split("=>", 1))
        pairs.append(edit)
    return check_pairs(pairs)


def check_prompts(pairs: Sequence[tuple[str, str]], tokenizer, argument: str = "edits") -> EditPrompts:
    """The edit's prompts; a prompt over the text encoder's 77 tokens (or one the tokenizer merges across phrase
    boundaries) is a ``ValueError`` naming ``argument``. ``tokenizer`` may be a list of a model's tokenizers
    (SDXL's two), which must then place every token alike (see
    :func:`~ale_pipeline.prompts.build_prompts_for_all`)."""
    try:
        if isinstance(tokenizer, (list, tuple)):
            return build_prompts_for_all(pairs, tokenizer)
        return build_prompts(pairs, tokenizer)
    except ValueError as err:
        raise ValueError(f"{argument}: {err}") from None


def check_settings(config: EditConfig, max_steps: int = 50) -> None:
    """Every field of ``config`` in its range.

    Args:
        config: the call's settings.
        max_steps: the scheduler's ``original_inference_steps``, the most LCM steps it has.
    """
    if not isinstance(config, EditConfig):
        raise TypeError(f"config must be an ale_pipeline.config.EditConfig, got {type(config).__name__}")
    steps = config.num_inference_steps
    if not _is_int(steps) or not 1 <= steps <= max_steps:
        raise ValueError(f"num_inference_steps must be an int in [1, {max_steps}], got {steps!r}")
    for name in ("target_guidance_scale", "source_guidance_scale"):
        value = getattr(config, name)
        if not _is_real(value) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number (1: the conditional prediction alone), got {value!r}")
    fraction = config.self_replace_steps
    if fraction is not None and (not _is_real(fraction) or not 0.0 <= fraction <= 1.0):
        raise ValueError(f"self_replace_steps must be None or a fraction of the steps in [0, 1], got {fraction!r}")
    if config.edit_type is not None and config.edit_type not in SELF_REPLACE_PRESETS:
        raise ValueError(f"edit_type must be None or one of {tuple(SELF_REPLACE_PRESETS)}, got {config.edit_type!r}")
    if not _is_real(config.mask_value) or math.isnan(config.mask_value) or config.mask_value > 0:
        raise ValueError(
            f"mask_value must be a number <= 0 added to disallowed tokens' scores (-100 as published, -inf exact), "
            f"got {config.mask_value!r}"
        )
    if not _is_real(config.dilation) or not 0.0 <= config.dilation < 0.5:
        raise ValueError(f"dilation must be a fraction of the image height in [0, 0.5), got {config.dilation!r}")
    side = config.longest_side
    if side is not None and (not _is_int(side) or side < 8):
        raise ValueError(f"longest_side must be None (keep the size) or an int >= 8 (pixels), got {side!r}")
    if config.seed is not None and not _is_int(config.seed):
        raise TypeError(f"seed must be an int or None, got {type(config.seed).__name__}")
    if config.attention_backend not in BACKENDS:
        raise ValueError(f"attention_backend must be one of {BACKENDS}, got {config.attention_backend!r}")
    for name in ("use_ore", "use_rgb_cam", "use_background_blend", "use_qk_injection", "published_ore"):
        if not isinstance(getattr(config, name), bool):
            raise TypeError(f"{name} must be a bool, got {getattr(config, name)!r}")


def check_output_type(output_type: object) -> None:
    if output_type not in OUTPUT_TYPES:
        raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")


def check_callback(
    callback: Callable | None, tensor_inputs: Sequence[str] | None, available: Sequence[str]
) -> tuple[str, ...]:
    """The tensor names a step-end callback gets: ``tensor_inputs`` (or, when None, the callback's own
    ``tensor_inputs`` as diffusers' ``PipelineCallback`` has), checked to lie in ``available``; all of
    ``available`` when neither says.

    Args:
        callback: ``callback_on_step_end``, a callable or None.
        tensor_inputs: ``callback_on_step_end_tensor_inputs``.
        available: the names this pass can hand over.
    """
    if callback is not None and not callable(callback):
        raise TypeError(
            "callback_on_step_end must be a callable fn(pipe, step, timestep, tensors) -> dict | None, "
            f"got {type(callback).__name__}"
        )
    if tensor_inputs is None:
        # diffusers' PipelineCallback objects say which tensors they need.
        tensor_inputs = getattr(callback, "tensor_inputs", None)
    if tensor_inputs is None:
        return tuple(available)
    if isinstance(tensor_inputs, str) or not isinstance(tensor_inputs, Sequence):
        raise TypeError(f"callback_on_step_end_tensor_inputs must be a list of names, got {tensor_inputs!r}")
    unknown = [name for name in tensor_inputs if name not in available]
    if unknown:
        raise ValueError(f"callback_on_step_end_tensor_inputs must name tensors in {tuple(available)}, got {unknown}")
    return tuple(tensor_inputs)


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_generator(generator: object) -> None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
