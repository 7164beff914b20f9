"""Tiny LEDITS++ pipelines (SD and SDXL) of random components built from configs: no weights, no hub.

Their UNets keep the real models' attention layout where LEDITS++ looks at it: cross-attention at 1/4 of the
latent's side (the only layers whose maps the attention store keeps) and at the finer levels (dropped), 2 heads.
The VAE has factor 2, so a 32 x 64 image gives 16 x 32 latents and 4 x 8 stored maps.
"""

from __future__ import annotations

import torch

from ale_pipeline.tokenizer import build_clip_tokenizer


def _vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=[8, 16],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        latent_channels=4,
        norm_num_groups=4,
        layers_per_block=1,
        sample_size=64,
    ).eval()


def _text_encoder(width: int, with_projection: bool = False):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        hidden_size=width, intermediate_size=2 * width, num_attention_heads=2, num_hidden_layers=1,
        projection_dim=width, vocab_size=49408, max_position_embeddings=77,
        bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
    )  # fmt: skip
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(config).eval()


def _scheduler():
    """The pipelines' own choice, SDE-DPM-Solver++ of order 2. (Not DDIM: diffusers 0.42.1's SD ``invert()``
    indexes DDIM's ``alphas_cumprod`` with a float tensor and fails, stock or not.)"""
    from diffusers import DPMSolverMultistepScheduler

    return DPMSolverMultistepScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, steps_offset=1,
        algorithm_type="sde-dpmsolver++", solver_order=2,
    )  # fmt: skip


def tiny_ledits_sd(seed: int = 0):
    """A ``LEditsPPPipelineStableDiffusion`` with SD1.5's block layout in small."""
    from diffusers import LEditsPPPipelineStableDiffusion, UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(16, 32, 32, 32),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        attention_head_dim=2,
        norm_num_groups=8,
        layers_per_block=1,
        cross_attention_dim=16,
        sample_size=16,
    ).eval()
    pipe = LEditsPPPipelineStableDiffusion(
        _vae(), _text_encoder(16), build_clip_tokenizer(), unet, _scheduler(),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_ledits_sdxl(seed: int = 0):
    """A ``LEditsPPPipelineStableDiffusionXL`` with SDXL's layout in small: no attention at full latent
    resolution, attention at 1/2 and 1/4, two transformer layers in the deepest block, two text encoders (the
    second with projection: pooled 16 + 6 time ids x 8 = 64 added-embedding features)."""
    from diffusers import LEditsPPPipelineStableDiffusionXL, UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(16, 32, 32),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=2,
        transformer_layers_per_block=(1, 1, 2),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=64,
        cross_attention_dim=32,
        norm_num_groups=8,
        layers_per_block=1,
        sample_size=16,
    ).eval()
    tokenizer = build_clip_tokenizer()
    pipe = LEditsPPPipelineStableDiffusionXL(
        _vae(), _text_encoder(16), _text_encoder(16, with_projection=True), tokenizer, tokenizer, unet,
        _scheduler(), add_watermarker=False,
    )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    return pipe
