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
from diffusers.utils import BaseOutput
from PIL import Image

from ale_kernels.diffusers import TARGET_COND, ale_attention_kwargs, ale_region_spec, install_regional_processors

from .attention_maps import PhraseAttentionMaps
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

DEFAULT_MODEL = "SimianLuo/LCM_Dreamshaper_v7"


@dataclass
class ALEEditOutput(BaseOutput):
    """``images``: the edited images (PIL list, numpy ``(1, H, W, 3)`` or a ``(1, 3, H, W)`` tensor in [0, 1]).
    ``masks``: the :class:`~ale_pipeline.masks.EditMasks` used, when ``return_masks``. ``attention_maps``:
    ``(N, H, W)`` in [0, 1], each target phrase's cross-attention in the target branch (averaged over heads,
    layers and steps, upsampled to the image), when ``return_attention_maps``."""

    images: list[Image.Image] | np.ndarray | torch.Tensor
    masks: EditMasks | None = None
    attention_maps: torch.Tensor | None = None


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
    """

    model_cpu_offload_seq = "text_encoder->unet->vae"
    _optional_components: ClassVar[list[str]] = ["safety_checker", "feature_extractor"]

    def __init__(self, vae, text_encoder, tokenizer, unet, scheduler, safety_checker=None, feature_extractor=None):
        super().__init__()
        self.register_modules(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            safety_checker=safety_checker,
            feature_extractor=feature_extractor,
        )
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)

    @torch.no_grad()
    def __call__(
        self,
        image,
        edits: Sequence[tuple[str, str] | str],
        masks: Sequence,
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
            masks: one mask per edit (path, PIL, array or tensor, any size), the object of its source phrase.
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
            :class:`ALEEditOutput` (or a tuple ``(images,)`` when ``return_dict`` is False).
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
        edit_masks = prepare_masks(masks, (height, width), dilation=dilation, labels=labels, expected=len(pairs))

        embeds = self._encode(prompts, use_ore, device, dtype)
        regions = None
        if use_rgb_cam:
            regions = ale_region_spec(edit_masks.dilated, embeds["token_owner"], embeds["regions"], mask_value)
            regions.prepare((height // self.vae_scale_factor, width // self.vae_scale_factor), device)

        pixels = torch.from_numpy(np.array(source.resize((width, height), Image.BICUBIC))).permute(2, 0, 1)
        pixels = (pixels.float() / 127.5 - 1.0)[None].to(device, self.vae.dtype)
        posterior = self.vae.encode(pixels).latent_dist
        # latent_dist.sample() as published, with the noise drawn on the generator's device so that a seed gives
        # the same edit on any device.
        draw = torch.randn(posterior.mean.shape, generator=generator, device=generator.device, dtype=torch.float32)
        sample = posterior.mean + posterior.std * draw.to(posterior.mean.device, posterior.mean.dtype)
        x0 = (sample * self.vae.config.scaling_factor).to(dtype)
        z_source = torch.randn(x0.shape, generator=generator, device=generator.device, dtype=x0.dtype).to(device)
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

        images = self._decode(x0_target.to(dtype), output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        maps = probe.maps((height, width)) if probe is not None else None
        return ALEEditOutput(images=images, masks=edit_masks if return_masks else None, attention_maps=maps)

    # ------------------------------------------------------------------------------------------------------

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

    def _decode(self, latents: torch.Tensor, output_type: str):
        if output_type == "latent":
            return latents
        decoded = self.vae.decode(latents.to(self.vae.dtype) / self.vae.config.scaling_factor).sample
        images = (decoded.float() / 2 + 0.5).clamp(0, 1)
        if self.safety_checker is not None and self.feature_extractor is not None:
            features = self.feature_extractor(_to_pil(images), return_tensors="pt").to(self.device)
            images_np, _ = self.safety_checker(
                images=images.permute(0, 2, 3, 1).cpu().numpy(), clip_input=features.pixel_values
            )
            images = torch.from_numpy(np.asarray(images_np)).permute(0, 3, 1, 2)
        if output_type == "pt":
            return images.cpu()
        if output_type == "np":
            return images.permute(0, 2, 3, 1).cpu().numpy()
        return _to_pil(images)


def _to_pil(images: torch.Tensor) -> list[Image.Image]:
    arrays = (images.permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)
    return [Image.fromarray(a) for a in arrays]


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
