"""Object masks from the diffusion model's own cross-attention: no detector, no segmenter.

A source-only pass of the edit (the source branch of InfEdit's DDCM sampling, same seed, same latents as the
edit's source branch) conditions the UNet on the source prompt ``"couch and floor"``. At the chosen
cross-attention resolutions and steps a probe asks :func:`~ale_kernels.token_restricted_softmax` for each
phrase's head-averaged attention probabilities (no ``L x S`` map is materialised); they are averaged over the
phrase's tokens, the layers and the steps, upsampled to the image, stretched to [0, 1] per phrase (its minimum
to its maximum), and thresholded into one mask per phrase; by default each pixel goes to at most one phrase,
the one whose map is highest there. The pipeline dilates these masks like drawn ones.

Defaults and why:

- ``resolutions=(2, 4)``: the layers at 1/2 and 1/4 of the latent (32² and 16² at 512 px, 48² and 24² at
  768 px). Cross-attention there is known to localise nouns best (prompt-to-prompt's maps use the 16² layers;
  the full-resolution layers are noisy, the 1/8 ones too coarse). ``None`` takes every layer.
- ``threshold=0.5``: a pixel belongs to a phrase where the phrase's stretched map reaches half way from its
  minimum to its maximum (a relative cut works for every model and step count; raw probabilities do not).
  ``"otsu"`` picks the cut per phrase from the map's histogram (Otsu's between-class variance) instead.
- ``exclusive=True``: where several phrases pass, the pixel goes to the one with the highest stretched map, so
  that objects do not swallow each other (RGB-CAM would send every overlap to the background). A phrase left
  with no pixel is a clear error.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import torch

from ale_kernels import MAX_OBJECTS
from ale_kernels.diffusers import latent_grid

from ..attention_maps import PhraseAttentionMaps
from ..checks import check_callback, check_generator, check_prompts, check_settings
from ..config import DEFAULT_MASK_RESOLUTIONS, DEFAULT_MASK_THRESHOLD, DEFAULTS, EditConfig, resolve_config
from ..ddcm_loop import SOURCE_ONLY_TENSOR_INPUTS, LoopState, ddcm_loop
from ..images import check_image, edit_size, load_image
from .result import AutoMasks

DEFAULT_RESOLUTIONS = DEFAULT_MASK_RESOLUTIONS
DEFAULT_THRESHOLD = DEFAULT_MASK_THRESHOLD


class SelectivePhraseMaps(PhraseAttentionMaps):
    """:class:`PhraseAttentionMaps` that listens only to the layers whose grid is ``1 / factor`` of the latent
    for a factor in ``resolutions`` (``None``: every layer).

    :attr:`factors_seen` records every layer factor met, so a choice that matches no layer is a clear error.
    """

    def __init__(self, *args, resolutions: Sequence[int] | None = DEFAULT_RESOLUTIONS, **kwargs):
        super().__init__(*args, **kwargs)
        self.resolutions = None if resolutions is None else {int(r) for r in resolutions}
        self.factors_seen: set[int] = set()

    def __call__(self, attn, q: torch.Tensor, k: torch.Tensor) -> None:
        height, _ = latent_grid(q.shape[2], self.latent_size[0] / self.latent_size[1])
        factor = max(1, round(self.latent_size[0] / height))
        self.factors_seen.add(factor)
        if self.resolutions is None or factor in self.resolutions:
            super().__call__(attn, q, k)


def otsu_threshold(values: torch.Tensor, bins: int = 256) -> float:
    """Otsu's threshold of ``values`` in [0, 1]: the cut that maximises the between-class variance."""
    hist = torch.histc(values.float().flatten(), bins=bins, min=0.0, max=1.0).double()
    centres = (torch.arange(bins, dtype=torch.float64) + 0.5) / bins
    weight = hist.cumsum(0)  # pixels at or below each cut
    total = weight[-1]
    mean_below = (hist * centres).cumsum(0)
    mean_all = mean_below[-1]
    between = (mean_all * weight - total * mean_below) ** 2 / (weight * (total - weight)).clamp(min=1e-12)
    between[weight >= total] = 0  # a cut above every value separates nothing
    return float((torch.argmax(between).item() + 1) / bins)


def stretch(maps: torch.Tensor) -> torch.Tensor:
    """``(N, H, W)`` maps scaled per map to [0, 1]: minimum to 0, maximum to 1 (a flat map becomes all ones)."""
    flat = maps.float().flatten(1)
    low, high = flat.amin(1)[:, None, None], flat.amax(1)[:, None, None]
    return ((maps.float() - low) / (high - low).clamp(min=1e-12)).where(high > low, torch.ones_like(maps.float()))


def threshold_maps(
    maps: torch.Tensor, threshold: float | str = DEFAULT_THRESHOLD, exclusive: bool = False
) -> torch.Tensor:
    """``(N, H, W)`` maps in [0, 1] to ``(N, H, W)`` bool masks.

    ``threshold``: a float in (0, 1] (inside where the map is >= it), or ``"otsu"`` (a cut per map).
    ``exclusive``: a pixel stays only in the mask whose map is highest there (the first on ties).
    """
    check_threshold(threshold)
    if threshold == "otsu":
        cuts = torch.tensor([otsu_threshold(m) for m in maps], dtype=maps.dtype)
    else:
        cuts = torch.full((len(maps),), float(threshold), dtype=maps.dtype)
    masks = maps >= cuts[:, None, None]
    if exclusive and len(maps) > 1:
        winner = maps.argmax(0)
        masks &= winner[None] == torch.arange(len(maps))[:, None, None]
    return masks


def check_threshold(threshold: object) -> None:
    if threshold == "otsu":
        return
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be a float in (0, 1] or 'otsu', got {threshold!r}")


def check_phrases(phrases: object) -> list[str]:
    """``phrases`` stripped: 1 to ``MAX_OBJECTS`` non-empty strings."""
    if isinstance(phrases, str) or not isinstance(phrases, Sequence):
        raise TypeError(f"phrases must be a list of source phrases, got {type(phrases).__name__}")
    if not 1 <= len(phrases) <= MAX_OBJECTS:
        raise ValueError(f"phrases must hold 1 to {MAX_OBJECTS} source phrases, got {len(phrases)}")
    if not all(isinstance(p, str) and p.strip() for p in phrases):
        raise ValueError(f"phrases must be non-empty strings, got {list(phrases)!r}")
    return [p.strip() for p in phrases]


def chosen_steps(steps: Sequence[int] | None, num_steps: int) -> list[int]:
    """The sorted, distinct step indices to average (all ``num_steps`` when None)."""
    chosen = sorted(set(range(num_steps) if steps is None else (int(s) for s in steps)))
    if not chosen or chosen[0] < 0 or chosen[-1] >= num_steps:
        raise ValueError(f"steps must be step indices in [0, {num_steps}), got {steps!r}")
    return chosen


@torch.no_grad()
def attention_masks(
    pipe,
    image: str | os.PathLike | object,
    phrases: Sequence[str],
    *,
    threshold: float | str = DEFAULT_THRESHOLD,
    exclusive: bool = True,
    steps: Sequence[int] | None = None,
    resolutions: Sequence[int] | None = DEFAULT_RESOLUTIONS,
    generator: torch.Generator | None = None,
    config: EditConfig | None = None,
    callback_on_step_end: Callable | None = None,
    callback_on_step_end_tensor_inputs: Sequence[str] | None = None,
    **settings,
) -> AutoMasks:
    """One mask per source phrase from ``pipe``'s cross-attention in a source-only pass.

    The pass runs the edit's sampling loop (:func:`~ale_pipeline.ddcm_loop.ddcm_loop`) with the source branch
    alone, on the edit's source condition (:meth:`~ale_pipeline.ALEEditPipeline.encode_prompt` of the pairs
    ``(phrase, phrase)``) and latents (:meth:`~ale_pipeline.ALEEditPipeline.prepare_latents`): from the same
    generator state it sees exactly the edit's source latents at every step.

    Args:
        pipe: an :class:`~ale_pipeline.ALEEditPipeline`.
        image: what the pipeline takes as an image.
        phrases: the ``N`` source phrases, e.g. ``["couch", "floor"]`` (the prompt is ``"couch and floor"``).
        threshold: the cut on each phrase's map stretched to [0, 1], in (0, 1]; or ``"otsu"``.
        exclusive: give each pixel to at most one phrase, the one whose stretched map is highest there.
        steps: which steps' maps to average (indices into the schedule); default all. The pass stops after
            the last one.
        resolutions: which cross-attention layers to average, as the factor their grid is below the latent
            (1: full latent resolution, 2: half, ...); ``None``: all.
        generator: the noise; default one seeded with ``seed``.
        config, settings: the edit's settings (:class:`~ale_pipeline.config.EditConfig`; keywords that differ
            from their defaults override ``config``). ``num_inference_steps``, ``longest_side``, ``seed``,
            ``source_guidance_scale``, ``attention_backend``, ``use_ore`` and ``published_ore`` shape the pass;
            the target branch's settings are accepted and change nothing.
        callback_on_step_end, callback_on_step_end_tensor_inputs: as for the edit, with ``x0``, ``x0_source``
            and ``z_source``; a returned ``z_source`` replaces the source latent.

    Returns:
        :class:`AutoMasks` with ``masks`` ``(N, H, W)`` bool and ``scores`` ``(N, H, W)`` (the stretched maps)
        at the edit size ``(H, W)``; ``details`` holds the threshold(s), steps and resolutions used.

    Raises:
        ValueError: a bad setting, ``steps``/``resolutions``/``threshold``, no layer at ``resolutions``, or a phrase
            that gets no pixel (only possible with ``exclusive``).
    """
    settings = resolve_config(config, **settings)
    check_settings(settings, pipe.original_inference_steps)
    check_image(image)
    phrases = check_phrases(phrases)
    check_threshold(threshold)
    if not isinstance(exclusive, bool):
        raise TypeError(f"exclusive must be a bool, got {exclusive!r}")
    chosen = chosen_steps(steps, settings.num_inference_steps)
    if resolutions is not None and not resolutions:
        raise ValueError("resolutions is empty: give layer factors such as (2, 4), or None for every layer")
    check_generator(generator)
    tensor_inputs = check_callback(callback_on_step_end, callback_on_step_end_tensor_inputs, SOURCE_ONLY_TENSOR_INPUTS)
    prompts = check_prompts([(p, p) for p in phrases], pipe.tokenizer, argument="phrases")

    if generator is None:
        generator = torch.Generator(device="cpu").manual_seed(DEFAULTS.seed if settings.seed is None else settings.seed)
    source = load_image(image)
    height, width = edit_size(source.width, source.height, settings.longest_side)
    conditions = pipe.encode_prompt(
        prompts, use_ore=settings.use_ore, published_ore=settings.published_ore, size=(height, width)
    )
    x0, start = pipe.prepare_latents(source, height, width, generator)
    texts = conditions.branches(with_target=False)
    probe = SelectivePhraseMaps(
        prompts.source_spans, texts.source_cond_entry(settings.source_guidance_scale), tuple(x0.shape[-2:]), None,
        settings.attention_backend, resolutions=resolutions,
    )  # fmt: skip
    on_step_end = None
    if callback_on_step_end is not None:

        def on_step_end(step: int, t: int, tensors: dict) -> dict | None:
            return callback_on_step_end(pipe, step, t, tensors)

    ddcm_loop(
        pipe.unet, pipe.scheduler.alphas_cumprod, pipe.lcm_schedule(settings.num_inference_steps),
        LoopState(x0=x0, z_source=start), texts, generator, source_guidance_scale=settings.source_guidance_scale,
        attention_backend=settings.attention_backend,
        attention_kwargs=lambda step: {"attention_probe": probe if step in chosen else None},
        on_step_end=on_step_end, tensor_inputs=tensor_inputs, num_steps=chosen[-1] + 1,
    )  # fmt: skip
    if probe.calls == 0:
        raise ValueError(
            f"no cross-attention layer has a grid at the resolutions {sorted(probe.resolutions)}; this UNet's "
            f"layers are at factors {sorted(probe.factors_seen)} below the latent (pass resolutions=None for all)"
        )
    maps = stretch(probe.maps((height, width)))  # (N, H, W)
    masks = threshold_maps(maps, threshold, exclusive)
    empty = [p for p, m in zip(phrases, masks, strict=True) if not m.any()]
    if empty:
        raise ValueError(
            f"the attention maps give no pixel to {', '.join(map(repr, empty))}: every pixel over the threshold "
            "attends more to another phrase; lower the threshold, pass exclusive=False, or give a mask for it"
        )
    cuts = [otsu_threshold(m) for m in maps] if threshold == "otsu" else [float(threshold)] * len(phrases)
    return AutoMasks(
        masks=masks,
        phrases=tuple(phrases),
        method="attention",
        scores=maps,
        details=dict(
            thresholds=cuts, exclusive=exclusive, steps=chosen, resolutions=resolutions, probed_calls=probe.calls
        ),
    )
