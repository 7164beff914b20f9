"""``ALEEditPipeline``: multi-object, mask-guided editing without attribute leakage (ALE) on an LCM.

One edit (ale-method.md section 3): the prompts are the phrases joined with " and "; the source branch is
conditioned on the substituted source embedding, the target branch on the plain target prompt (its keys),
with RGB-CAM routing each object's pixels to that object's restricted embedding (ORE) values and
restricting its tokens to the dilated masks; self-attention Q/K injection from source to target during the
first ``self_replace_steps`` of the schedule; InfEdit's inversion-free DDCM update on the 4-entry batch
``[src_uncond, tgt_uncond, src_cond, tgt_cond]``; background blending from the second step on. Attention
runs on :mod:`ale_kernels`' processors, so no attention map is materialised (``attention_backend="reference"``
runs the published, materialised math instead).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput, logging
from PIL import Image

from ale_kernels.diffusers import TARGET_COND, ale_attention_kwargs, ale_region_spec, install_regional_processors

from .attention_maps import PhraseAttentionMaps
from .automask.result import AutoMasks
from .config import DEFAULT_MODEL
from .masks import EditMasks, prepare_masks
from .ore import build_ore, clip_encoder
from .prompts import build_prompts
from .sampling import (
    DEFAULT_SELF_REPLACE_STEPS,
    SELF_REPLACE_PRESETS,
    background_blend_mask,
    blend_background,
    ddcm_step,
    injection_schedule,
    lcm_timesteps,
)

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


def edit_size(width: int, height: int, longest_side: int | None) -> tuple[int, int]:
    """``(height, width)`` for an image of ``width x height``: longest side scaled to ``longest_side`` (if
    given), aspect kept, both rounded to a multiple of 8 (the VAE's factor)."""
    if longest_side is not None:
        scale = longest_side / max(width, height)
        width, height = width * scale, height * scale
    return max(8, round(height / 8) * 8), max(8, round(width / 8) * 8)


def load_image(image: str | os.PathLike | Image.Image | np.ndarray | torch.Tensor) -> Image.Image:
    """An RGB PIL image from a path, a PIL image, a ``(H, W, 3)`` uint8 array or a ``(3, H, W)`` tensor in [0, 1]."""
    if isinstance(image, (str, os.PathLike)):
        if not os.path.exists(image):
            raise FileNotFoundError(f"image not found: {os.fspath(image)!r}")
        return Image.open(image).convert("RGB")
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, torch.Tensor):
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(
                f"an image tensor must have shape (3, H, W) with values in [0, 1], got {tuple(image.shape)}"
            )
        image = (image.detach().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"an image array must be uint8 of shape (H, W, 3), got {image.dtype} {image.shape}")
        return Image.fromarray(image)
    raise TypeError(f"image must be a path, PIL image, numpy array or tensor, got {type(image).__name__}")


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

    @torch.no_grad()
    def __call__(
        self,
        image,
        edits: Sequence[tuple[str, str] | str],
        masks: Sequence | AutoMasks | str,
        *,
        num_inference_steps: int = 15,
        target_guidance_scale: float = 2.0,
        source_guidance_scale: float = 1.0,
        self_replace_steps: float | None = None,
        edit_type: str | None = None,
        mask_value: float = -100.0,
        dilation: float = 0.04,
        longest_side: int | None = 768,
        seed: int | None = 42,
        generator: torch.Generator | None = None,
        attention_backend: str = "auto",
        use_ore: bool = True,
        use_rgb_cam: bool = True,
        use_background_blend: bool = True,
        use_qk_injection: bool = True,
        output_type: str = "pil",
        return_dict: bool = True,
        return_masks: bool = False,
        return_attention_maps: bool = False,
        callback_on_step_end: Callable[[ALEEditPipeline, int, int, dict], dict | None] | None = None,
    ):
        """Edit ``image``.

        Args:
            image: a path, PIL image, ``(H, W, 3)`` uint8 array or ``(3, H, W)`` tensor in [0, 1].
            edits: ``(source, target)`` phrase pairs or ``"source=>target"`` strings, one per object.
            masks: one mask per edit (path, PIL, array or tensor, any size), the object of its source phrase; or
                an :class:`~ale_pipeline.automask.AutoMasks` found for the edits' source phrases (Grounding DINO +
                SAM, or :meth:`attention_masks`); or ``"attention"`` to find them with :meth:`attention_masks`
                (same steps, size, seed and backend as the edit). Either way they are dilated as drawn masks are.
            self_replace_steps: fraction of the steps with Q/K injection; default the ``edit_type`` preset
                (color 1.0, object 0.5, material 0.6, color+object 0.5, object+material 0.5) or 0.5.
            mask_value: RGB-CAM's additive token mask (-100 as published; ``-inf`` restricts exactly).
            longest_side: the image's longest side after resizing (aspect kept, multiples of 8); ``None``
                keeps the size.
            seed / generator: a generator wins over a seed; the published default seed is 42.
            attention_backend: ``auto``, ``torch``, ``triton`` or ``reference`` (published, materialised).
            use_ore, use_rgb_cam, use_background_blend, use_qk_injection: the paper's ablation switches.
            callback_on_step_end: ``fn(pipe, step, timestep, tensors)`` with ``tensors`` holding ``x0``,
                ``x0_source`` (= ``x0``), ``x0_target``, ``z_source``, ``z_target``, ``foreground``
                (after blending).

        Returns:
            :class:`ALEEditOutput`, or when ``return_dict`` is False the tuple ``(images, nsfw_content_detected)``
            as diffusers' ``StableDiffusionPipeline`` returns (the flags ``None`` without a safety checker or
            for ``output_type="latent"``).
        """
        pairs = [_parse_edit(e) for e in edits]
        if output_type not in ("pil", "np", "pt", "latent"):
            raise ValueError(f"output_type must be 'pil', 'np', 'pt' or 'latent', got {output_type!r}")
        if self_replace_steps is None:
            self_replace_steps = SELF_REPLACE_PRESETS.get(edit_type, DEFAULT_SELF_REPLACE_STEPS)
        device, dtype = self.unet.device, self.unet.dtype
        if generator is None:
            generator = torch.Generator(device="cpu").manual_seed(42 if seed is None else seed)

        source = load_image(image)
        height, width = edit_size(source.width, source.height, longest_side)
        prompts = build_prompts(pairs, self.tokenizer)
        labels = [src for src, _ in pairs]
        if isinstance(masks, str) and masks == "attention":
            masks = self.attention_masks(
                source, labels, num_inference_steps=num_inference_steps, longest_side=longest_side,
                seed=42 if seed is None else seed, source_guidance_scale=source_guidance_scale,
                attention_backend=attention_backend,
            )  # fmt: skip
        if isinstance(masks, AutoMasks):
            masks = _auto_masks_for(masks, labels)
        elif isinstance(masks, str) and masks == "dino-sam":
            raise ValueError(
                'masks="dino-sam" needs the detector and segmenter: pass '
                "ale_pipeline.automask.GroundedSAM.from_pretrained(...)(image, source_phrases) as masks"
            )
        edit_masks = prepare_masks(masks, (height, width), dilation=dilation, labels=labels, expected=len(pairs))

        embeds = self._encode(prompts, use_ore, device, dtype)
        regions = None
        if use_rgb_cam:
            regions = ale_region_spec(edit_masks.dilated, embeds["token_owner"], embeds["regions"], mask_value)
            regions.prepare((height // self.vae_scale_factor, width // self.vae_scale_factor), device)

        x0, z_source = self._source_latents(source, height, width, generator)
        z_target = z_source.clone()
        foreground = background_blend_mask(~edit_masks.background, tuple(x0.shape[-2:])).to(device)

        timesteps = lcm_timesteps(num_inference_steps, self.scheduler.config.get("original_inference_steps", 50))
        alphas = self.scheduler.alphas_cumprod
        inject = injection_schedule(num_inference_steps, self_replace_steps)
        text = torch.cat([embeds["uncond"], embeds["uncond"], embeds["source"], embeds["target"]])
        probe = None
        if return_attention_maps:
            latent_size = tuple(x0.shape[-2:])
            probe = PhraseAttentionMaps(prompts.target_spans, TARGET_COND, latent_size, regions, attention_backend)
        x0_target = x0
        with install_regional_processors(self.unet, backend=attention_backend):
            for step, t in enumerate(self.progress_bar(timesteps)):
                kwargs = ale_attention_kwargs(regions, inject_qk=use_qk_injection and inject[step])
                if probe is not None:
                    kwargs["attention_probe"] = probe
                latents = torch.cat([z_source, z_target, z_source, z_target])
                noise_pred = self.unet(latents, t, encoder_hidden_states=text, cross_attention_kwargs=kwargs).sample
                e_su, e_tu, e_sc, e_tc = noise_pred.float().chunk(4)
                eps_source = e_su + source_guidance_scale * (e_sc - e_su)
                eps_target = e_tu + target_guidance_scale * (e_tc - e_tu)
                alpha_t = float(alphas[t])
                alpha_next = float(alphas[timesteps[step + 1]]) if step + 1 < len(timesteps) else alpha_t
                noise = torch.randn(x0.shape, generator=generator, device=generator.device, dtype=torch.float32)
                out = ddcm_step(
                    x0.float(), z_source.float(), z_target.float(), eps_source, eps_target, alpha_t, alpha_next,
                    noise.to(device),
                )  # fmt: skip
                x0_target = out.x0_target
                z_source, z_target = out.z_source.to(dtype), out.z_target.to(dtype)
                if use_background_blend and step > 0:
                    z_target = blend_background(z_source, z_target, foreground)
                if callback_on_step_end is not None:
                    tensors = dict(
                        x0=x0, x0_source=x0, x0_target=x0_target, z_source=z_source, z_target=z_target,
                        foreground=foreground,
                    )  # fmt: skip
                    callback_on_step_end(self, step, t, tensors)

        images, nsfw = self._decode(x0_target.to(dtype), output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images, nsfw)
        maps = probe.maps((height, width)) if probe is not None else None
        return ALEEditOutput(
            images=images, masks=edit_masks if return_masks else None, attention_maps=maps, nsfw_content_detected=nsfw
        )

    def attention_masks(self, image, phrases: Sequence[str], **kwargs) -> AutoMasks:
        """One mask per source phrase from this model's cross-attention in a source-only pass, no extra model.

        ``image`` as for an edit; ``phrases`` the edits' source phrases. Keyword arguments (``threshold=0.5`` or
        ``"otsu"``, ``num_inference_steps``, ``steps``, ``resolutions=(2, 4)``, ``longest_side``, ``seed``,
        ``attention_backend``, ...) are :func:`ale_pipeline.automask.attention_masks`'. Returns
        :class:`~ale_pipeline.automask.AutoMasks` with ``(N, H, W)`` masks at the edit size, to pass as ``masks=``.
        """
        from .automask.attention import attention_masks

        return attention_masks(self, image, phrases, **kwargs)

    # ------------------------------------------------------------------------------------------------------

    def _source_latents(
        self, source: Image.Image, height: int, width: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The source image's clean latent ``x0`` and the branches' starting latent, both ``(1, 4, h, w)``.

        Draws from ``generator`` in a fixed order (VAE sample, then the start), so the edit and the attention-mask
        pass see the same latents for a seed.
        """
        device, dtype = self.unet.device, self.unet.dtype
        pixels = torch.from_numpy(np.array(source.resize((width, height), Image.BICUBIC))).permute(2, 0, 1)
        pixels = (pixels.float() / 127.5 - 1.0)[None].to(device, self.vae.dtype)
        posterior = self.vae.encode(pixels).latent_dist
        # latent_dist.sample() as published, with the noise drawn on the generator's device so that a seed gives
        # the same edit on any device.
        draw = torch.randn(posterior.mean.shape, generator=generator, device=generator.device, dtype=torch.float32)
        sample = posterior.mean + posterior.std * draw.to(posterior.mean.device, posterior.mean.dtype)
        x0 = (sample * self.vae.config.scaling_factor).to(dtype)
        start = torch.randn(x0.shape, generator=generator, device=generator.device, dtype=x0.dtype).to(device)
        return x0, start

    def _encode(self, prompts, use_ore: bool, device, dtype) -> dict:
        encode = clip_encoder(self.text_encoder, self.tokenizer)
        edit = build_ore(encode, prompts)
        uncond = encode([""])
        if use_ore:
            source, regions = edit.source, edit.region_embeds
        else:
            # Without ORE the branches see their plain prompts, and every region reads the target's values.
            plain = encode([prompts.source_prompt, prompts.target_prompt])
            source, regions = plain[0], plain[1][None].expand(prompts.num_objects + 1, -1, -1)
        cast = dict(device=device, dtype=dtype)
        return dict(
            uncond=uncond.to(**cast),
            source=source[None].to(**cast),
            target=edit.target[None].to(**cast),
            regions=regions.to(**cast),
            token_owner=edit.token_owner,
        )

    def _decode(self, latents: torch.Tensor, output_type: str) -> tuple:
        """``(images, nsfw_content_detected)`` in ``output_type``; latents skip the VAE and the safety checker."""
        if output_type == "latent":
            return latents, None
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


def _auto_masks_for(found: AutoMasks, labels: list[str]) -> torch.Tensor:
    """``found``'s ``(N, H, W)`` masks, checked to be those of the edits' source phrases, in their order."""
    norm = lambda text: " ".join(text.lower().split())  # noqa: E731
    if [norm(p) for p in found.phrases] != [norm(p) for p in labels]:
        raise ValueError(
            f"the automatic masks were found for the phrases {list(found.phrases)}, but the edits' source phrases "
            f"are {labels}: find them for these phrases, in this order"
        )
    return found.masks


def _parse_edit(edit: tuple[str, str] | str) -> tuple[str, str]:
    if isinstance(edit, str):
        if "=>" not in edit:
            raise ValueError(f"an edit must be 'source=>target' or a (source, target) pair, got {edit!r}")
        source, target = edit.split("=>", 1)
        return source.strip(), target.strip()
    if isinstance(edit, (tuple, list)) and len(edit) == 2 and all(isinstance(p, str) for p in edit):
        return edit[0].strip(), edit[1].strip()
    raise ValueError(f"an edit must be 'source=>target' or a (source, target) pair, got {edit!r}")


__all__ = ["DEFAULT_MODEL", "ALEEditOutput", "ALEEditPipeline", "edit_size", "load_image"]
