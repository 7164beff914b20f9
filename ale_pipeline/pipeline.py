"""``ALEEditPipeline``: multi-object, mask-guided editing without attribute leakage (ALE) on an LCM.

One edit (docs/method.md section 3): the prompts are the phrases joined with " and "; the source branch is
conditioned on the substituted source embedding, the target branch on the plain target prompt (its keys),
with RGB-CAM routing each object's pixels to that object's restricted embedding (ORE) values and
restricting its tokens to the dilated masks; self-attention Q/K injection from source to target during the
first ``self_replace_steps`` of the schedule; InfEdit's inversion-free DDCM update on the 4-entry batch
``[src_uncond, tgt_uncond, src_cond, tgt_cond]``; background blending from the second step on. Attention
runs on :mod:`ale_kernels`' processors, so no attention map is materialised (``attention_backend="reference"``
runs the published, materialised math instead).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput, logging
from PIL import Image

from ale_kernels.diffusers import TARGET_COND, ale_attention_kwargs, ale_region_spec

from .attention_maps import PhraseAttentionMaps
from .automask.attention import attention_masks as find_attention_masks
from .automask.result import AutoMasks
from .checks import check_callback, check_generator, check_output_type, check_prompts, check_settings, parse_edits
from .conditions import EditConditions, encode_conditions
from .config import (
    DEFAULT_MASK_RESOLUTIONS,
    DEFAULT_MASK_THRESHOLD,
    DEFAULT_MODEL,
    DEFAULTS,
    SETTINGS,
    EditConfig,
    resolve_config,
)
from .ddcm_loop import TENSOR_INPUTS, LoopState, ddcm_loop
from .images import check_image, edit_size, load_image
from .masks import EditMasks, prepare_masks
from .ore import clip_encoder
from .prompts import EditPrompts
from .sampling import background_blend_mask, injection_schedule, lcm_timesteps

logger = logging.get_logger(__name__)


@dataclass
class ALEEditOutput(BaseOutput):
    """``images``: the edited images (PIL list, numpy ``(1, H, W, 3)`` or a ``(1, 3, H, W)`` tensor in [0, 1]).
    ``masks``: the :class:`~ale_pipeline.masks.EditMasks` used, when ``return_masks``. ``attention_maps``:
    ``(N, H, W)`` in [0, 1], each target phrase's cross-attention in the target branch (averaged over heads,
    layers and steps, upsampled to the image), when ``return_attention_maps``. ``nsfw_content_detected``: one
    flag per image from the pipeline's ``safety_checker`` (a flagged image is returned black), ``None`` when the
    pipeline has no checker or for ``output_type="latent"``."""

    images: list[Image.Image] | np.ndarray | torch.Tensor
    masks: EditMasks | None = None
    attention_maps: torch.Tensor | None = None
    nsfw_content_detected: list[bool] | None = None


class ALEEditPipeline(DiffusionPipeline):
    """ALE editing on an SD1.5-family latent consistency model (default ``SimianLuo/LCM_Dreamshaper_v7``).

    ``ALEEditPipeline.from_pretrained(id_or_folder)`` loads any SD1.5-family checkpoint in diffusers layout.
    A checkpoint's ``safety_checker`` (diffusers' ``StableDiffusionSafetyChecker``, with its ``feature_extractor``)
    is loaded and run on every decoded edit as in diffusers' ``StableDiffusionPipeline``: flagged images come back
    black, with ``nsfw_content_detected``. Pass ``safety_checker=None`` to run without one; like diffusers, that
    logs one warning at construction unless ``requires_safety_checker=False``.
    """

    model_cpu_offload_seq = "text_encoder->unet->vae"
    _optional_components: ClassVar[list[str]] = ["safety_checker", "feature_extractor"]
    _exclude_from_cpu_offload: ClassVar[list[str]] = ["safety_checker"]
    #: What ``callback_on_step_end_tensor_inputs`` may name (see :meth:`__call__`).
    _callback_tensor_inputs: ClassVar[list[str]] = list(TENSOR_INPUTS)
    #: The settings a keyword left at its default takes (the SDXL pipeline has its own).
    defaults: ClassVar[EditConfig] = DEFAULTS

    def __init__(
        self,
        vae,
        text_encoder,
        tokenizer,
        unet,
        scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker: bool = True,
    ):
        super().__init__()
        if safety_checker is not None and feature_extractor is None:
            raise ValueError(
                "a safety_checker needs its feature_extractor (a CLIPImageProcessor): pass both, or "
                "safety_checker=None to run without one"
            )
        if safety_checker is None and requires_safety_checker:
            logger.warning(
                f"{type(self).__name__} runs without a safety checker (safety_checker=None): edited images are not "
                "filtered. Keep the filter in anything public facing (see the Stable Diffusion license); pass "
                "requires_safety_checker=False to silence this warning."
            )
        self.register_modules(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            safety_checker=safety_checker,
            feature_extractor=feature_extractor,
        )
        self.register_to_config(requires_safety_checker=requires_safety_checker)
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def original_inference_steps(self) -> int:
        """The LCM's origin steps (the scheduler's ``original_inference_steps``, 50): the most steps an edit has."""
        return int(self.scheduler.config.get("original_inference_steps", 50))

    def lcm_schedule(self, num_inference_steps: int) -> list[int]:
        """The timesteps of an edit (and of its attention-mask pass) with ``num_inference_steps`` steps."""
        return lcm_timesteps(num_inference_steps, self.original_inference_steps)

    def check_inputs(
        self,
        image,
        edits: Sequence[tuple[str, str] | str],
        masks: Sequence | AutoMasks | str,
        config: EditConfig | None = None,
        output_type: str = "pil",
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] | None = None,
        generator: torch.Generator | None = None,
        **settings,
    ) -> None:
        """Check an edit's inputs before any model runs, as :meth:`__call__` does first.

        Takes :meth:`__call__`'s arguments (``settings``: any :class:`~ale_pipeline.config.EditConfig` field, on
        top of ``config``). Raises ``ValueError``, ``TypeError`` or ``FileNotFoundError`` naming the argument and
        what it takes: the image (type, layout, missing file), the edits (pairs of non-empty phrases, 1 to 31,
        prompts within the text encoder's 77 tokens), the masks (one per edit, or ``"attention"``, or an
        ``AutoMasks`` found for the edits' source phrases), every setting's range, ``output_type``, the
        generator and the step-end callback with its tensor names.
        """
        self._checked_inputs(
            image, edits, masks, resolve_config(config, defaults=self.defaults, **settings), output_type,
            callback_on_step_end,
            callback_on_step_end_tensor_inputs, generator,
        )  # fmt: skip

    def _checked_inputs(
        self, image, edits, masks, settings: EditConfig, output_type, callback, tensor_inputs, generator
    ) -> tuple[EditPrompts, tuple[str, ...]]:
        """:meth:`check_inputs`'s work; returns what it derived on the way: the prompts and the callback's tensor
        names."""
        check_settings(settings, self.original_inference_steps)
        check_output_type(output_type)
        check_generator(generator)
        names = check_callback(callback, tensor_inputs, self._callback_tensor_inputs)
        check_image(image)
        pairs = parse_edits(edits)
        _check_masks(masks, [source for source, _ in pairs])
        return check_prompts(pairs, self.prompt_tokenizers), names

    @property
    def prompt_tokenizers(self) -> list:
        """The tokenizers every prompt of an edit must fit and agree under (SD1.5: its one)."""
        return [self.tokenizer]

    @torch.no_grad()
    def __call__(
        self,
        image,
        edits: Sequence[tuple[str, str] | str],
        masks: Sequence | AutoMasks | str,
        *,
        num_inference_steps: int = DEFAULTS.num_inference_steps,
        target_guidance_scale: float = DEFAULTS.target_guidance_scale,
        source_guidance_scale: float = DEFAULTS.source_guidance_scale,
        self_replace_steps: float | None = DEFAULTS.self_replace_steps,
        edit_type: str | None = DEFAULTS.edit_type,
        mask_value: float = DEFAULTS.mask_value,
        dilation: float = DEFAULTS.dilation,
        longest_side: int | None = DEFAULTS.longest_side,
        seed: int | None = DEFAULTS.seed,
        generator: torch.Generator | None = None,
        attention_backend: str = DEFAULTS.attention_backend,
        use_ore: bool = DEFAULTS.use_ore,
        use_rgb_cam: bool = DEFAULTS.use_rgb_cam,
        use_background_blend: bool = DEFAULTS.use_background_blend,
        use_qk_injection: bool = DEFAULTS.use_qk_injection,
        published_ore: bool = DEFAULTS.published_ore,
        config: EditConfig | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        return_masks: bool = False,
        return_attention_maps: bool = False,
        callback_on_step_end: Callable[[ALEEditPipeline, int, int, dict], dict | None] | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] | None = None,
    ):
        """Edit ``image``.

        Every keyword of :class:`~ale_pipeline.config.EditConfig` is a keyword here, with its published default;
        ``config`` gives them all at once, and a keyword that differs from its default overrides it.

        Args:
            image: a path, PIL image, ``(H, W, 3)`` uint8 array or ``(3, H, W)`` tensor in [0, 1].
            edits: ``(source, target)`` phrase pairs or ``"source=>target"`` strings, one per object.
            masks: one mask per edit (path, PIL, array or tensor, any size), the object of its source phrase; or
                an :class:`~ale_pipeline.automask.AutoMasks` found for the edits' source phrases (Grounding DINO +
                SAM, or :meth:`attention_masks`); or ``"attention"`` to find them with :meth:`attention_masks`
                (same steps, size, generator state and backend as the edit). Either way they are dilated as
                drawn masks are.
            self_replace_steps: fraction of the steps with Q/K injection; default the ``edit_type`` preset
                (color 1.0, object 0.5, material 0.6, color+object 0.5, object+material 0.5) or 0.5.
            mask_value: RGB-CAM's additive token mask (-100 as published; ``-inf`` restricts exactly).
            longest_side: the image's longest side after resizing (aspect kept, multiples of 8); ``None``
                keeps the size.
            seed / generator: a generator wins over a seed; the published default seed is 42.
            attention_backend: ``auto``, ``torch``, ``triton``, ``cpp`` or ``reference`` (published, materialised).
            use_ore, use_rgb_cam, use_background_blend, use_qk_injection: the paper's ablation switches.
            published_ore: index the substituted base embedding as the published code does (phrases after the
                first copy the rows at their prompt positions of their standalone encoding); it changes only the
                source condition and the background region's embedding (see :meth:`encode_prompt`).
            callback_on_step_end: ``fn(pipe, step, timestep, tensors) -> dict | None`` after every step.
                ``tensors`` holds the names in ``callback_on_step_end_tensor_inputs`` (default all of
                :attr:`_callback_tensor_inputs`): ``x0`` (the source's clean latent, ``(1, 4, h, w)``; ``x0_source``
                is the same), ``x0_target`` (the target's clean estimate, float32: the result after the last
                step), ``z_source``, ``z_target`` (the branches' next latents, after blending) and
                ``foreground`` (``(h, w)`` bool). A returned dict replaces ``z_source``, ``z_target`` or
                ``x0_target`` (same shape) for the rest of the loop, as in diffusers; any other key is an error
                unless it is the very tensor received (so ``return tensors`` is fine).

        Returns:
            :class:`ALEEditOutput`, or when ``return_dict`` is False the tuple ``(images, nsfw_content_detected)``
            as diffusers' ``StableDiffusionPipeline`` returns (the flags ``None`` without a safety checker or
            for ``output_type="latent"``).
        """
        given = locals()
        settings = resolve_config(config, defaults=self.defaults, **{name: given[name] for name in SETTINGS})
        prompts, tensor_inputs = self._checked_inputs(
            image, edits, masks, settings, output_type, callback_on_step_end, callback_on_step_end_tensor_inputs,
            generator,
        )  # fmt: skip
        device, dtype = self.unet.device, self.unet.dtype
        if generator is None:
            generator = _seeded(settings.seed)

        source = load_image(image)
        height, width = edit_size(source.width, source.height, settings.longest_side)
        labels = prompts.source_phrases
        if isinstance(masks, str):  # "attention", the one string the checks let through
            # A copy of the generator: the mask pass then draws exactly the edit's latents and noise.
            masks = self.attention_masks(source, labels, generator=_copy(generator), config=settings)
        if isinstance(masks, AutoMasks):
            masks = masks.masks
        edit_masks = prepare_masks(masks, (height, width), dilation=settings.dilation, labels=labels)

        conditions = self.encode_prompt(
            prompts, use_ore=settings.use_ore, published_ore=settings.published_ore, size=(height, width)
        )
        regions = None
        if settings.use_rgb_cam:
            regions = ale_region_spec(
                edit_masks.dilated, conditions.token_owner, conditions.region_embeds, settings.mask_value
            )
            regions.prepare((height // self.vae_scale_factor, width // self.vae_scale_factor), device)

        x0, start = self.prepare_latents(source, height, width, generator)
        latent_size = tuple(x0.shape[-2:])
        foreground = background_blend_mask(~edit_masks.background, latent_size).to(device)
        state = LoopState(x0=x0, z_source=start, z_target=start.clone(), foreground=foreground)
        steps = settings.num_inference_steps
        inject = injection_schedule(steps, settings.injection_fraction)
        probe = None
        if return_attention_maps:
            probe = PhraseAttentionMaps(
                prompts.target_spans, TARGET_COND, latent_size, regions, settings.attention_backend
            )

        def attention_kwargs(step: int) -> dict:
            kwargs = ale_attention_kwargs(regions, inject_qk=settings.use_qk_injection and inject[step])
            if probe is not None:
                kwargs["attention_probe"] = probe
            return kwargs

        on_step_end = None
        if callback_on_step_end is not None:

            def on_step_end(step: int, t: int, tensors: dict) -> dict | None:
                return callback_on_step_end(self, step, t, tensors)

        state = ddcm_loop(
            self.unet, self.scheduler.alphas_cumprod, self.lcm_schedule(steps), state,
            conditions.branches(), generator,
            source_guidance_scale=settings.source_guidance_scale, target_guidance_scale=settings.target_guidance_scale,
            attention_backend=settings.attention_backend, attention_kwargs=attention_kwargs,
            blend_background_from=1 if settings.use_background_blend else None,
            on_step_end=on_step_end, tensor_inputs=tensor_inputs, progress=self.progress_bar,
        )  # fmt: skip

        images, nsfw = self._decode(state.x0_target.to(dtype), output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images, nsfw)
        maps = probe.maps((height, width)) if probe is not None else None
        return ALEEditOutput(
            images=images, masks=edit_masks if return_masks else None, attention_maps=maps, nsfw_content_detected=nsfw
        )

    def attention_masks(
        self,
        image,
        phrases: Sequence[str],
        *,
        threshold: float | str = DEFAULT_MASK_THRESHOLD,
        exclusive: bool = True,
        steps: Sequence[int] | None = None,
        resolutions: Sequence[int] | None = DEFAULT_MASK_RESOLUTIONS,
        num_inference_steps: int = DEFAULTS.num_inference_steps,
        longest_side: int | None = DEFAULTS.longest_side,
        seed: int | None = DEFAULTS.seed,
        generator: torch.Generator | None = None,
        source_guidance_scale: float = DEFAULTS.source_guidance_scale,
        attention_backend: str = DEFAULTS.attention_backend,
        use_ore: bool = DEFAULTS.use_ore,
        published_ore: bool = DEFAULTS.published_ore,
        config: EditConfig | None = None,
        callback_on_step_end: Callable[[ALEEditPipeline, int, int, dict], dict | None] | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] | None = None,
        **settings,
    ) -> AutoMasks:
        """One mask per source phrase from this model's cross-attention in a source-only pass, no extra model.

        The pass is the edit's own sampling loop with the source branch alone: for the same settings and
        generator state it walks through exactly the edit's source latents. ``image`` as for an edit;
        ``phrases`` the edits' source phrases. ``threshold`` (a float in (0, 1] or ``"otsu"``), ``exclusive``,
        ``steps`` and ``resolutions`` are documented in :func:`ale_pipeline.automask.attention_masks`; the
        other keywords are the edit's (``config`` and every :class:`~ale_pipeline.config.EditConfig` field are
        accepted, so one configuration serves both; the target-only ones change nothing here).
        ``callback_on_step_end`` is called as in :meth:`__call__` with ``x0``, ``x0_source`` and ``z_source``.
        """
        # The explicit keywords carry this pipeline's defaults: resolve them here, against those.
        config = resolve_config(
            config, defaults=self.defaults, num_inference_steps=num_inference_steps, longest_side=longest_side,
            seed=seed, source_guidance_scale=source_guidance_scale, attention_backend=attention_backend,
            use_ore=use_ore, published_ore=published_ore,
        )  # fmt: skip
        return find_attention_masks(
            self, image, phrases, threshold=threshold, exclusive=exclusive, steps=steps, resolutions=resolutions,
            generator=generator, config=config, callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs, **settings,
        )  # fmt: skip

    # ------------------------------------------------------------------------------------------------------

    def prepare_latents(
        self, source: Image.Image, height: int, width: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The source image's clean latent ``x0`` and the branches' starting latent, both ``(1, 4, h, w)`` with
        ``(h, w)`` the ``(height, width)`` edit size over the VAE's factor.

        Draws from ``generator`` in a fixed order (the VAE sample, then the start), so the edit and the
        attention-mask pass get the same latents from the same generator state.
        """
        device, dtype = self.unet.device, self.unet.dtype
        pixels = torch.from_numpy(np.array(source.resize((width, height), Image.BICUBIC))).permute(2, 0, 1)
        with self.vae_precision():
            pixels = (pixels.float() / 127.5 - 1.0)[None].to(device, self.vae.dtype)
            posterior = self.vae.encode(pixels).latent_dist
        # latent_dist.sample() as published, with the noise drawn on the generator's device so that a seed gives
        # the same edit on any device.
        draw = torch.randn(posterior.mean.shape, generator=generator, device=generator.device, dtype=torch.float32)
        sample = posterior.mean + posterior.std * draw.to(posterior.mean.device, posterior.mean.dtype)
        x0 = (sample * self.vae.config.scaling_factor).to(dtype)
        start = torch.randn(x0.shape, generator=generator, device=generator.device, dtype=x0.dtype).to(device)
        return x0, start

    def encode_prompt(
        self,
        edits: EditPrompts | Sequence[tuple[str, str] | str],
        *,
        use_ore: bool = DEFAULTS.use_ore,
        published_ore: bool = DEFAULTS.published_ore,
        size: tuple[int, int] | None = None,
    ) -> EditConditions:
        """The text conditions of an edit, on the UNet's device and in its dtype: what the edit (and its
        attention-mask pass) condition on.

        Args:
            edits: the edit's phrase pairs (as for :meth:`__call__`), or their
                :func:`~ale_pipeline.prompts.build_prompts` result.
            use_ore: object-restricted embeddings (True) or the plain prompts (the ablation).
            published_ore: the published indexing of the substituted base; compared with False, only
                ``source`` and ``region_embeds[-1]`` (the background's) differ.
            size: the edit's ``(height, width)`` in pixels; SD1.5 has no size conditioning and ignores it
                (SDXL's time ids follow it; default there: the UNet's sample size, 1024 px for SDXL).

        Returns:
            :class:`~ale_pipeline.conditions.EditConditions`: ``uncond``, ``source``, ``target`` ``(1, S, C)``,
            ``region_embeds`` ``(N + 1, S, C)``, ``token_owner`` ``(S,)``; on SDXL ``C = C_1 + C_2`` (ORE on
            each encoder's half) and ``added`` holds each branch's pooled embedding and time ids (see
            :meth:`ALEEditXLPipeline._encode <ale_pipeline.pipeline_xl.ALEEditXLPipeline._encode>`).
        """
        prompts = self._prompts(edits)
        conditions = self._encode(prompts, use_ore, published_ore, size)
        return conditions.to(self.unet.device, self.unet.dtype)

    def _encode(
        self, prompts: EditPrompts, use_ore: bool, published_ore: bool, size: tuple[int, int] | None
    ) -> EditConditions:
        """:meth:`encode_prompt`'s conditions before the cast to the UNet's device and dtype."""
        encode = clip_encoder(self.text_encoder, self.tokenizer)
        return encode_conditions(encode, prompts, use_ore=use_ore, published_ore=published_ore)

    def _prompts(self, edits: EditPrompts | Sequence[tuple[str, str] | str]) -> EditPrompts:
        """``edits``' prompts, checked under :attr:`prompt_tokenizers` (a given :class:`EditPrompts` too)."""
        pairs = edits.edits if isinstance(edits, EditPrompts) else parse_edits(edits)
        if isinstance(edits, EditPrompts) and len(self.prompt_tokenizers) == 1:
            return edits
        return check_prompts(pairs, self.prompt_tokenizers)

    @contextlib.contextmanager
    def vae_precision(self) -> Iterator[None]:
        """The VAE runs in its own dtype here; the SDXL pipeline upcasts a float16 VAE to float32."""
        yield

    def _decode(self, latents: torch.Tensor, output_type: str) -> tuple:
        """``(images, nsfw_content_detected)`` in ``output_type``; latents skip the VAE and the safety checker."""
        if output_type == "latent":
            return latents, None
        with self.vae_precision():
            decoded = self.vae.decode(latents.to(self.vae.dtype) / self.vae.config.scaling_factor).sample
        images, nsfw = self.run_safety_checker((decoded.float() / 2 + 0.5).clamp(0, 1))
        if output_type == "pt":
            return images.cpu(), nsfw
        if output_type == "np":
            return images.permute(0, 2, 3, 1).cpu().numpy(), nsfw
        return _to_pil(images), nsfw

    def run_safety_checker(self, images: torch.Tensor) -> tuple[torch.Tensor, list[bool] | None]:
        """``(images, flags)`` for decoded ``(B, 3, H, W)`` images in [0, 1]: the ``safety_checker``'s verdict on
        each (its CLIP input made by ``feature_extractor``, in the checker's dtype and on its device), flagged
        images replaced by black ones; ``(images, None)`` without a checker."""
        if self.safety_checker is None:
            return images, None
        if self.feature_extractor is None:
            raise ValueError("the safety_checker needs a feature_extractor (a CLIPImageProcessor) to run")
        checker = self.safety_checker
        clip_input = self.feature_extractor(_to_pil(images), return_tensors="pt").pixel_values
        checked, flags = checker(images=images.clone(), clip_input=clip_input.to(checker.device, checker.dtype))
        return torch.as_tensor(checked, dtype=images.dtype, device=images.device), [bool(f) for f in flags]


def _to_pil(images: torch.Tensor) -> list[Image.Image]:
    arrays = (images.permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)
    return [Image.fromarray(a) for a in arrays]


def _check_masks(masks: object, labels: list[str]) -> None:
    """``masks`` fits an edit whose source phrases are ``labels``: one mask per edit, ``"attention"``, or an
    :class:`AutoMasks` found for these phrases in this order. Each mask's content is checked as it is loaded."""
    if isinstance(masks, str):
        if masks == "dino-sam":
            raise ValueError(
                'masks="dino-sam" needs the detector and segmenter: pass '
                "ale_pipeline.automask.GroundedSAM.from_pretrained(...)(image, source_phrases) as masks"
            )
        if masks != "attention":
            raise ValueError(
                f"masks must be a list of masks (one per edit; wrap a single mask in a list), an AutoMasks or "
                f"'attention', got {masks!r}"
            )
        return
    if isinstance(masks, AutoMasks):
        norm = lambda text: " ".join(text.lower().split())  # noqa: E731
        if [norm(p) for p in masks.phrases] != [norm(p) for p in labels]:
            raise ValueError(
                f"masks: the automatic masks were found for the phrases {list(masks.phrases)}, but the edits' "
                f"source phrases are {labels}: find them for these phrases, in this order"
            )
        return
    if isinstance(masks, (np.ndarray, torch.Tensor)):
        if masks.ndim != 3:
            raise ValueError(f"masks given as one array must be an (N, H, W) stack, got shape {tuple(masks.shape)}")
        count = masks.shape[0]
    elif isinstance(masks, Sequence) and not isinstance(masks, (str, bytes)):
        count = len(masks)
    else:
        raise TypeError(
            "masks must be a list of masks (one per edit), an (N, H, W) stack, an AutoMasks or 'attention', "
            f"got {type(masks).__name__}"
        )
    if count != len(labels):
        raise ValueError(f"masks: got {count} masks but the edit has {len(labels)} objects: give one mask per object")


def _seeded(seed: int | None) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(DEFAULTS.seed if seed is None else seed)


def _copy(generator: torch.Generator) -> torch.Generator:
    twin = torch.Generator(device=generator.device)
    twin.set_state(generator.get_state())
    return twin


__all__ = ["DEFAULT_MODEL", "ALEEditOutput", "ALEEditPipeline", "edit_size", "load_image"]
