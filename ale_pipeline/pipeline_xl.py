"""``ALEEditXLPipeline``: ALE's multi-object edit on an SDXL-family latent consistency model.

Everything but the model's conditioning is :class:`~ale_pipeline.ALEEditPipeline`'s: options, outputs,
ablation switches, masks (drawn or automatic), attention maps, callbacks, the safety checker and the DDCM loop
on the 4-entry batch. What SDXL changes (docs/method.md, "SDXL"):

- the text condition is both encoders' penultimate hidden states concatenated (768 + 1280 = 2048), and ORE is
  applied to each encoder's half with that encoder's own encodings (:func:`~ale_pipeline.ore.sdxl_encoder`);
- the UNet also takes ``added_cond_kwargs``: the pooled text embedding, global and not per region (the base
  source prompt's for the source branch, the base target prompt's for the target branch, zeros for the
  unconditional entries when ``force_zeros_for_empty_prompt``, as SDXL base sets), and the time ids
  ``(H, W, 0, 0, H, W)`` of the edit's size;
- a float16 VAE whose config says ``force_upcast`` (SDXL's, which overflows) runs in float32;
- the default size is 1024 px (:data:`~ale_pipeline.config.XL_DEFAULTS`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import types
from collections.abc import Iterator
from typing import ClassVar

import torch
from diffusers.loaders import StableDiffusionXLLoraLoaderMixin

from .conditions import EditConditions, encode_conditions
from .config import SETTINGS, XL_DEFAULTS, EditConfig
from .ore import pooled_text_embeds, sdxl_encoder
from .pipeline import ALEEditPipeline
from .prompts import EditPrompts

#: SDXL's size conditioning per image: original size, crop top-left, target size.
TIME_IDS = 6


def _with_defaults(method, defaults: EditConfig):
    """A copy of ``method`` (a method of :class:`ALEEditPipeline`, maybe under ``torch.no_grad``) whose keywords
    named like :class:`EditConfig` fields default to ``defaults``: a keyword equal to its default yields to
    ``config``, so the signature must carry this pipeline's defaults, not SD1.5's."""
    inner = getattr(method, "__wrapped__", method)
    copy = types.FunctionType(inner.__code__, inner.__globals__, inner.__name__, inner.__defaults__, inner.__closure__)
    functools.update_wrapper(copy, inner)
    del copy.__wrapped__  # inspect.signature would otherwise show the original's defaults
    copy.__kwdefaults__ = {
        name: getattr(defaults, name) if name in SETTINGS else value for name, value in inner.__kwdefaults__.items()
    }
    return torch.no_grad()(copy) if inner is not method else copy


class ALEEditXLPipeline(ALEEditPipeline, StableDiffusionXLLoraLoaderMixin):
    """ALE editing on an SDXL-family consistency model in diffusers layout.

    Load the full LCM-SDXL UNet into SDXL base, or fuse the LCM-LoRA, or point at any SDXL checkpoint with an
    LCM scheduler (README, "SDXL")::

        pipe = ALEEditXLPipeline.from_pretrained("stabilityai/stable-diffusion-xl-base-1.0", unet=lcm_unet,
                                                 scheduler=LCMScheduler.from_pretrained(...))

    Its call, options and outputs are :class:`ALEEditPipeline`'s; the defaults are
    :data:`~ale_pipeline.config.XL_DEFAULTS` (1024 px). ``force_zeros_for_empty_prompt`` (True, as in SDXL
    base) makes the unconditional entries' text and pooled embeddings zeros instead of the encoded empty
    prompt.
    """

    model_cpu_offload_seq = "text_encoder->text_encoder_2->unet->vae"
    defaults: ClassVar[EditConfig] = XL_DEFAULTS

    def __init__(
        self,
        vae,
        text_encoder,
        text_encoder_2,
        tokenizer,
        tokenizer_2,
        unet,
        scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker: bool = True,
        force_zeros_for_empty_prompt: bool = True,
    ):
        super().__init__(
            vae, text_encoder, tokenizer, unet, scheduler, safety_checker, feature_extractor, requires_safety_checker
        )
        self.register_modules(text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2)
        self.register_to_config(force_zeros_for_empty_prompt=force_zeros_for_empty_prompt)

    __call__ = _with_defaults(ALEEditPipeline.__call__, XL_DEFAULTS)
    attention_masks = _with_defaults(ALEEditPipeline.attention_masks, XL_DEFAULTS)

    @property
    def prompt_tokenizers(self) -> list:
        """Both tokenizers: every object's tokens must sit at the same positions for both encoders."""
        return [self.tokenizer, self.tokenizer_2]

    def _encode(
        self, prompts: EditPrompts, use_ore: bool, published_ore: bool, size: tuple[int, int] | None
    ) -> EditConditions:
        """SDXL's conditions for :meth:`encode_prompt`: ORE on the concatenated penultimate hidden states of
        both encoders (``C = C_1 + C_2``), and ``added``: per branch ``text_embeds`` ``(1, P)`` (``uncond``:
        zeros with ``force_zeros_for_empty_prompt``, else the empty prompt's; ``source``: the base source
        prompt's; ``target``: the base target prompt's) and ``time_ids`` ``(1, 6)`` = ``(H, W, 0, 0, H, W)``
        for ``size`` = ``(H, W)`` px (default the UNet's sample size times the VAE's factor)."""
        encoders, tokenizers = [self.text_encoder, self.text_encoder_2], self.prompt_tokenizers
        conditions = encode_conditions(
            sdxl_encoder(encoders, tokenizers), prompts, use_ore=use_ore, published_ore=published_ore
        )
        texts = ["", prompts.source_prompt, prompts.target_prompt]
        pooled = pooled_text_embeds(self.text_encoder_2, self.tokenizer_2, texts)
        uncond = conditions.uncond
        if self.config.force_zeros_for_empty_prompt:
            uncond, pooled[0] = torch.zeros_like(uncond), 0
        time_ids = self.time_ids(size, pooled.shape[-1])
        added = {
            branch: {"text_embeds": pooled[k : k + 1], "time_ids": time_ids}
            for k, branch in enumerate(("uncond", "source", "target"))
        }
        return dataclasses.replace(conditions, uncond=uncond, added=added)

    def time_ids(self, size: tuple[int, int] | None, pooled_dim: int) -> torch.Tensor:
        """``(1, 6)``: SDXL's size conditioning for an edit of ``size`` = ``(height, width)`` px: original size =
        target size = the edit's, no crop. A UNet whose added embedding does not take ``pooled_dim`` pooled
        channels and 6 time ids is a ``ValueError``."""
        if size is None:
            side = self.unet.config.sample_size * self.vae_scale_factor
            size = (side, side)
        expected = self.unet.add_embedding.linear_1.in_features
        given = self.unet.config.addition_time_embed_dim * TIME_IDS + pooled_dim
        if given != expected:
            raise ValueError(
                f"the UNet's added embedding takes {expected} channels, but text_encoder_2's pooled embedding "
                f"({pooled_dim}) and {TIME_IDS} time ids of {self.unet.config.addition_time_embed_dim} make "
                f"{given}: the UNet and text_encoder_2 are not from the same SDXL checkpoint"
            )
        height, width = size
        return torch.tensor([[height, width, 0, 0, height, width]], dtype=torch.float32)

    @contextlib.contextmanager
    def vae_precision(self) -> Iterator[None]:
        """A float16 VAE with ``force_upcast`` (SDXL's, which overflows to NaN in float16) runs in float32 and
        is cast back afterwards, as diffusers' SDXL pipelines do."""
        upcast = self.vae.dtype == torch.float16 and getattr(self.vae.config, "force_upcast", False)
        if upcast:
            self.vae.to(dtype=torch.float32)
        try:
            yield
        finally:
            if upcast:
                self.vae.to(dtype=torch.float16)


__all__ = ["ALEEditXLPipeline"]
