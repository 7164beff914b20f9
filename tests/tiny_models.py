"""Small UNets built from configs (no weights, no hub) with the attention shapes of real checkpoints."""

from __future__ import annotations

import numpy as np
import torch

from ale_pipeline.random_model import random_ale_pipeline, random_unet


def tiny_sd15_unet(sd15_head_dims: bool = True, seed: int = 0):
    """SD1.5's block layout. With ``sd15_head_dims`` the head dims are SD1.5's own 40/80/160 (2 heads),
    else 16/32 (a faster model for slow tests)."""
    torch.manual_seed(seed)
    if sd15_head_dims:
        return random_unet((80, 160, 320, 320), 16, cross_attention_dim=32)
    return random_unet((32, 64, 64, 64), 8, cross_attention_dim=32)


def tiny_sdxl_unet(seed: int = 0):
    """SDXL's layout in small: head dim 64 as in SDXL, linear projections, two transformer layers in the
    deeper block, the text-time added conditioning."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        block_out_channels=(32, 128),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 2),
        transformer_layers_per_block=(1, 2),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=80,
        cross_attention_dim=64,
        norm_num_groups=8,
        sample_size=16,
        in_channels=4,
        out_channels=4,
    ).eval()


def sdxl_added_cond(batch: int) -> dict:
    """The ``added_cond_kwargs`` the tiny SDXL UNet needs (pooled text 32 + 6 time ids x 8 = 80)."""
    return {"text_embeds": torch.randn(batch, 32), "time_ids": torch.randn(batch, 6)}


def tiny_ale_pipeline(seed: int = 0):
    """An ``ALEEditPipeline`` of random tiny components with SD1.5's layout and the real CLIP tokenizer, its
    progress bar off (tests print nothing)."""
    pipeline = random_ale_pipeline("tiny", seed=seed)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def tiny_ale_xl_pipeline(seed: int = 0):
    """An ``ALEEditXLPipeline`` of random tiny SDXL components (two CLIP text encoders, the second with its
    projection; both tokenizers built offline, the second padding with "!"; the text-time UNet of
    :func:`tiny_sdxl_unet`'s layout), its progress bar off."""
    pipeline = random_ale_pipeline("tiny-xl", seed=seed)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def random_image(height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    """A ``(height, width, 3)`` uint8 noise image; the default is non-square, 24 x 32 latents for the tiny VAE."""
    return (np.random.default_rng(seed).random((height, width, 3)) * 255).astype(np.uint8)


def tiny_added_kv_unet(mixed: bool = False, seed: int = 0):
    """A UNet whose attention layers project added keys and values (``attn.add_k_proj``, ``AttnAddedKVProcessor``):
    the ``SimpleCrossAttn`` blocks of DeepFloyd IF, unCLIP and Kandinsky 2.1. With ``mixed`` the outer blocks are
    SD's ``CrossAttn`` ones (ordinary self- and cross-attention layers) around added-KV inner blocks."""
    from diffusers import UNet2DConditionModel

    outer = "CrossAttn" if mixed else "SimpleCrossAttn"
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=(f"{outer}DownBlock2D", "SimpleCrossAttnDownBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        up_block_types=("SimpleCrossAttnUpBlock2D", f"{outer}UpBlock2D"),
        attention_head_dim=8,
        cross_attention_dim=16,
        norm_num_groups=8,
        sample_size=8,
        in_channels=4,
        out_channels=4,
    ).eval()
