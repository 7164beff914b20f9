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
from collections.abc import Sequence

import torch

from ale_kernels.diffusers import install_regional_processors, latent_grid

from ..attention_maps import PhraseAttentionMaps
from ..ore import clip_encoder, substituted_base
from ..prompts import build_prompts
from ..sampling import ddcm_step, lcm_timesteps
from .result import AutoMasks

DEFAULT_RESOLUTIONS = (2, 4)
DEFAULT_THRESHOLD = 0.5


class SelectivePhraseMaps(PhraseAttentionMaps):
    """:class:`PhraseAttentionMaps` that listens only while :attr:`active` and only to the layers whose grid is
    ``1 / factor`` of the latent for a factor in ``resolutions`` (``None``: every layer).

    :attr:`factors_seen` records every layer factor met, so a choice that matches no layer is a clear error.
    """

    def __init__(self, *args, resolutions: Sequence[int] | None = DEFAULT_RESOLUTIONS, **kwargs):
        super().__init__(*args, **kwargs)
        self.resolutions = None if resolutions is None else {int(r) for r in resolutions}
        self.active = True
        self.factors_seen: set[int] = set()

    def __call__(self, attn, q: torch.Tensor, k: torch.Tensor) -> None:
        if not self.active:
            return
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
    if threshold == "otsu":
        cuts = torch.tensor([otsu_threshold(m) for m in maps], dtype=maps.dtype)
    elif isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be a float in (0, 1] or 'otsu', got {threshold!r}")
    else:
        cuts = torch.full((len(maps),), float(threshold), dtype=maps.dtype)
    masks = maps >= cuts[:, None, None]
    if exclusive and len(maps) > 1:
        winner = maps.argmax(0)
        masks &= winner[None] == torch.arange(len(maps))[:, None, None]
    return masks


@torch.no_grad()
def attention_masks(
    pipe,
    image: str | os.PathLike | object,
    phrases: Sequence[str],
    *,
    threshold: float | str = DEFAULT_THRESHOLD,
    exclusive: bool = True,
    num_inference_steps: int = 15,
    steps: Sequence[int] | None = None,
    resolutions: Sequence[int] | None = DEFAULT_RESOLUTIONS,
    longest_side: int | None = 768,
    seed: int | None = 42,
    generator: torch.Generator | None = None,
    source_guidance_scale: float = 1.0,
    attention_backend: str = "auto",
) -> AutoMasks:
    """One mask per source phrase from ``pipe``'s cross-attention in a source-only pass.

    Args:
        pipe: an :class:`~ale_pipeline.ALEEditPipeline`.
        image: what the pipeline takes as an image.
        phrases: the ``N`` source phrases, e.g. ``["couch", "floor"]`` (the prompt is ``"couch and floor"``).
        threshold: the cut on each phrase's map stretched to [0, 1], in (0, 1]; or ``"otsu"``.
        exclusive: give each pixel to at most one phrase, the one whose stretched map is highest there.
        num_inference_steps: the LCM schedule, as in the edit (its timesteps and latents are the edit's).
        steps: which steps' maps to average (indices into the schedule); default all. The pass stops after
            the last one.
        resolutions: which cross-attention layers to average, as the factor their grid is below the latent
            (1: full latent resolution, 2: half, ...); ``None``: all.
        longest_side, seed, generator: as in the edit, so the pass sees the edit's image size and noise.
        source_guidance_scale: the source branch's guidance (1 as published: the conditional entry alone).

    Returns:
        :class:`AutoMasks` with ``masks`` ``(N, H, W)`` bool and ``scores`` ``(N, H, W)`` (the stretched maps)
        at the edit size ``(H, W)``; ``details`` holds the threshold(s), steps and resolutions used.

    Raises:
        ValueError: bad ``steps``/``resolutions``/``threshold``, no layer at ``resolutions``, or a phrase that gets
            no pixel (only possible with ``exclusive``).
    """
    from ..pipeline import edit_size, load_image

    phrases = [str(p).strip() for p in phrases]
    schedule = lcm_timesteps(num_inference_steps, pipe.scheduler.config.get("original_inference_steps", 50))
    chosen = sorted(set(range(len(schedule)) if steps is None else (int(s) for s in steps)))
    if not chosen or chosen[0] < 0 or chosen[-1] >= len(schedule):
        raise ValueError(f"steps must be step indices in [0, {len(schedule)}), got {steps!r}")
    if resolutions is not None and not resolutions:
        raise ValueError("resolutions is empty: give layer factors such as (2, 4), or None for every layer")
    if threshold != "otsu":
        threshold_maps(torch.zeros(1, 1, 1), threshold)  # validate before the slow pass

    device, dtype = pipe.unet.device, pipe.unet.dtype
    if generator is None:
        generator = torch.Generator(device="cpu").manual_seed(42 if seed is None else seed)
    source = load_image(image)
    height, width = edit_size(source.width, source.height, longest_side)
    prompts = build_prompts([(p, p) for p in phrases], pipe.tokenizer)
    encode = clip_encoder(pipe.text_encoder, pipe.tokenizer)
    embeds = encode([prompts.source_prompt, *prompts.source_phrases, ""])
    # The edit's source condition S(P_src): each phrase's span holds the phrase's own token embeddings.
    cond = substituted_base(embeds[0], list(embeds[1:-1]), prompts.source_spans)[None]
    guided = source_guidance_scale != 1.0
    text = (torch.cat([embeds[-1:], cond]) if guided else cond).to(device, dtype)

    x0, z_source = pipe._source_latents(source, height, width, generator)
    probe = SelectivePhraseMaps(
        prompts.source_spans, text.shape[0] - 1, tuple(x0.shape[-2:]), None, attention_backend,
        resolutions=resolutions,
    )  # fmt: skip
    alphas = pipe.scheduler.alphas_cumprod
    with install_regional_processors(pipe.unet, backend=attention_backend):
        for step, t in enumerate(schedule[: chosen[-1] + 1]):
            probe.active = step in chosen
            latents = z_source.expand(text.shape[0], -1, -1, -1)
            kwargs = {"attention_probe": probe}
            noise_pred = pipe.unet(latents, t, encoder_hidden_states=text, cross_attention_kwargs=kwargs).sample
            eps = noise_pred.float()
            eps = eps[:1] + source_guidance_scale * (eps[1:] - eps[:1]) if guided else eps
            alpha_t = float(alphas[t])
            alpha_next = float(alphas[schedule[step + 1]]) if step + 1 < len(schedule) else alpha_t
            # The edit draws one noise per step; drawing it here too keeps the source latents the edit's.
            noise = torch.randn(x0.shape, generator=generator, device=generator.device, dtype=torch.float32)
            z = z_source.float()
            z_source = ddcm_step(x0.float(), z, z, eps, eps, alpha_t, alpha_next, noise.to(device)).z_source.to(dtype)
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
