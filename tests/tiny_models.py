"""Small UNets built from configs (no weights, no hub) with the attention shapes of real checkpoints."""

from __future__ import annotations

import torch

SD15_BLOCKS = dict(
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
)


def tiny_sd15_unet(sd15_head_dims: bool = True, seed: int = 0):
    """SD1.5's block layout. With ``sd15_head_dims`` the head dims are SD1.5's own 40/80/160 (2 heads),
    else 16/32 (a faster model for slow tests)."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    channels = (80, 160, 320, 320) if sd15_head_dims else (32, 64, 64, 64)
    return UNet2DConditionModel(
        block_out_channels=channels,
        attention_head_dim=2,
        norm_num_groups=16 if sd15_head_dims else 8,
        layers_per_block=1,
        cross_attention_dim=32,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        **SD15_BLOCKS,
    ).eval()


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
    """An ``ALEEditPipeline`` of random tiny components with SD1.5's layout and the real CLIP tokenizer."""
    from diffusers import AutoencoderKL, LCMScheduler
    from transformers import CLIPTextConfig, CLIPTextModel

    from ale_pipeline.pipeline import ALEEditPipeline
    from ale_pipeline.tokenizer import build_clip_tokenizer

    torch.manual_seed(seed)
    vae = AutoencoderKL(
        block_out_channels=[8, 16],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=32,
    ).eval()
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, vocab_size=49408,
            max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
        )
    ).eval()  # fmt: skip
    scheduler = LCMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    unet = tiny_sd15_unet(sd15_head_dims=False, seed=seed)
    return ALEEditPipeline(vae, text_encoder, build_clip_tokenizer(), unet, scheduler)
