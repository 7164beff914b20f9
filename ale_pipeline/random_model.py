"""Randomly initialised SD1.5-shaped pipelines built from configs: no weights, no model hub.

For the demo when no checkpoint can be reached and for tests. ``"sd-shaped"`` keeps SD1.5's block layout,
its attention head dims 40/80/160 and the VAE's factor 8 at a fraction of the width; ``"tiny"`` is smaller
still (head dims 16/32, VAE factor 2) for fast tests; ``"sd15"`` is SD1.5 at full size (860M-parameter UNet
with 8 heads, the full VAE, a 768-wide text encoder), for GPU benchmarks whose costs match the real model's.
All use the real CLIP tokenizer.
"""

from __future__ import annotations

import torch

SD15_BLOCKS = dict(
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
)

_KINDS = {
    # UNet widths, heads per attention layer, layers per block, UNet groups, VAE widths, VAE groups,
    # text width, text layers
    "sd-shaped": ((80, 160, 320, 320), 2, 1, 16, (32, 64, 64, 64), 4, 64, 2),
    "tiny": ((32, 64, 64, 64), 2, 1, 8, (8, 16), 4, 32, 2),
    "sd15": ((320, 640, 1280, 1280), 8, 2, 32, (128, 256, 512, 512), 32, 768, 12),
}


def random_unet(
    channels: tuple[int, ...], norm_groups: int, cross_attention_dim: int, heads: int = 2, layers_per_block: int = 1
):
    """SD1.5's UNet layout with ``heads`` heads per attention layer (head dims = channels / heads), random weights.

    (diffusers' SD1.5 config calls the head count ``attention_head_dim``.)
    """
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        block_out_channels=channels,
        attention_head_dim=heads,
        norm_num_groups=norm_groups,
        layers_per_block=layers_per_block,
        cross_attention_dim=cross_attention_dim,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        **SD15_BLOCKS,
    ).eval()


def random_ale_pipeline(kind: str = "sd-shaped", seed: int = 0):
    """An :class:`~ale_pipeline.ALEEditPipeline` of random components, its ``random_kind`` attribute set to ``kind``.

    ``kind``: ``sd-shaped``, ``tiny`` or ``sd15`` (see the module docstring)."""
    from diffusers import AutoencoderKL, LCMScheduler
    from transformers import CLIPTextConfig, CLIPTextModel

    from .pipeline import ALEEditPipeline
    from .tokenizer import build_clip_tokenizer

    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {sorted(_KINDS)}, got {kind!r}")
    unet_channels, heads, layers, unet_groups, vae_channels, vae_groups, text_width, text_layers = _KINDS[kind]
    torch.manual_seed(seed)
    vae = AutoencoderKL(
        block_out_channels=list(vae_channels),
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * len(vae_channels),
        up_block_types=["UpDecoderBlock2D"] * len(vae_channels),
        latent_channels=4,
        norm_num_groups=vae_groups,
        layers_per_block=2 if kind == "sd15" else 1,
        sample_size=32,
    ).eval()
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=text_width, intermediate_size=2 * text_width, num_attention_heads=4,
            num_hidden_layers=text_layers,
            vocab_size=49408, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
        )
    ).eval()  # fmt: skip
    scheduler = LCMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    unet = random_unet(unet_channels, unet_groups, text_width, heads, layers)
    pipe = ALEEditPipeline(vae, text_encoder, build_clip_tokenizer(), unet, scheduler, requires_safety_checker=False)
    # So that a command which fell back to a random model can say so (see ale_pipeline.commands.load_pipeline).
    pipe.random_kind = kind
    return pipe
