"""Randomly initialised SD1.5- and SDXL-shaped pipelines built from configs: no weights, no model hub.

For the demo when no checkpoint can be reached and for tests. ``"sd-shaped"`` keeps SD1.5's block layout,
its attention head dims 40/80/160 and the VAE's factor 8 at a fraction of the width; ``"tiny"`` is smaller
still (head dims 16/32, VAE factor 2) for fast tests; ``"sd15"`` is SD1.5 at full size (860M-parameter UNet
with 8 heads, the full VAE, a 768-wide text encoder), for GPU benchmarks whose costs match the real model's.

The SDXL kinds build an :class:`~ale_pipeline.ALEEditXLPipeline`: ``"sdxl"`` is SDXL base at full size (the
2.6B-parameter UNet with head dim 64, 1/2/10 transformer layers per level and text-time conditioning, the
768 + 1280 text encoders, the second with its projection), ``"sdxl-shaped"`` keeps that layout and head dim
64 at a fraction of the width, ``"tiny-xl"`` is smaller still for tests. All use the real CLIP tokenizer
(SDXL's second one padded with ``"!"``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

SD15_BLOCKS = dict(
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
)

_SD_KINDS = {
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


@dataclass(frozen=True)
class XLShape:
    """An SDXL-layout model's sizes: UNet widths per level, heads per level, transformer layers per level, UNet
    groups, VAE widths and groups, the two text encoders' widths and layers, the time-id embedding width."""

    channels: tuple[int, ...]
    heads: tuple[int, ...]
    transformer_layers: tuple[int, ...]
    layers_per_block: int
    norm_groups: int
    vae_channels: tuple[int, ...]
    vae_groups: int
    text_widths: tuple[int, int]
    text_layers: tuple[int, int]
    time_embed_dim: int


_XL_KINDS = {
    # SDXL base 1.0's own config (unet/config.json, text_encoder*/config.json).
    "sdxl": XLShape((320, 640, 1280), (5, 10, 20), (1, 2, 10), 2, 32, (128, 256, 512, 512), 32, (768, 1280), (12, 32),
                    256),
    "sdxl-shaped": XLShape((64, 128, 256), (1, 2, 4), (1, 1, 2), 1, 16, (32, 64, 64, 64), 4, (32, 64), (2, 2), 32),
    "tiny-xl": XLShape((32, 128), (2, 2), (1, 2), 1, 8, (8, 16), 4, (32, 32), (2, 2), 8),
}  # fmt: skip
#: Every random kind: the SD1.5-shaped ones build an ALEEditPipeline, the SDXL ones an ALEEditXLPipeline.
_KINDS = {**_SD_KINDS, **_XL_KINDS}


def random_sdxl_unet(shape: XLShape, pooled_dim: int):
    """SDXL's UNet layout (no attention at the top level, linear projections, text-time added conditioning:
    ``pooled_dim`` pooled text + 6 time ids) at ``shape``'s sizes, random weights."""
    from diffusers import UNet2DConditionModel

    levels = len(shape.channels)
    return UNet2DConditionModel(
        block_out_channels=shape.channels,
        layers_per_block=shape.layers_per_block,
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (levels - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (levels - 1) + ("UpBlock2D",),
        attention_head_dim=shape.heads,
        transformer_layers_per_block=shape.transformer_layers,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=shape.time_embed_dim,
        projection_class_embeddings_input_dim=pooled_dim + 6 * shape.time_embed_dim,
        cross_attention_dim=sum(shape.text_widths),
        norm_num_groups=shape.norm_groups,
        sample_size=128 if shape.channels[0] == 320 else 16,
        in_channels=4,
        out_channels=4,
    ).eval()


def random_sdxl_shaped_unet(kind: str = "sdxl", seed: int = 0):
    """The UNet alone of the SDXL ``kind`` (its pooled text as wide as the second encoder), random weights."""
    if kind not in _XL_KINDS:
        raise ValueError(f"kind must be one of {sorted(_XL_KINDS)}, got {kind!r}")
    torch.manual_seed(seed)
    shape = _XL_KINDS[kind]
    return random_sdxl_unet(shape, shape.text_widths[1])


def random_sdxl_vae(kind: str = "sdxl"):
    """SDXL's VAE at ``kind``'s sizes, random weights: its scaling factor, and ``force_upcast`` (it overflows
    in float16)."""
    shape = _XL_KINDS[kind]
    layers = 2 if kind == "sdxl" else 1
    return _random_vae(shape.vae_channels, shape.vae_groups, layers, scaling_factor=0.13025, force_upcast=True)


def _random_vae(channels: tuple[int, ...], groups: int, layers: int, **config):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=list(channels),
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * len(channels),
        up_block_types=["UpDecoderBlock2D"] * len(channels),
        latent_channels=4,
        norm_num_groups=groups,
        layers_per_block=layers,
        sample_size=32,
        **config,
    ).eval()


def _text_config(width: int, layers: int, pad_token_id: int = 49407, **extra):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        hidden_size=width, intermediate_size=2 * width if width < 768 else 4 * width,
        num_attention_heads=4 if width < 768 else width // 64, num_hidden_layers=layers,
        vocab_size=49408, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407,
        pad_token_id=pad_token_id, **extra,
    )  # fmt: skip


def _scheduler():
    from diffusers import LCMScheduler

    return LCMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)


def random_ale_pipeline(kind: str = "sd-shaped", seed: int = 0):
    """A pipeline of random components, its ``random_kind`` attribute set to ``kind``: an
    :class:`~ale_pipeline.ALEEditPipeline` for ``sd-shaped``, ``tiny`` and ``sd15``, an
    :class:`~ale_pipeline.ALEEditXLPipeline` for ``sdxl``, ``sdxl-shaped`` and ``tiny-xl`` (see the module
    docstring)."""
    from transformers import CLIPTextModel

    from .pipeline import ALEEditPipeline
    from .tokenizer import build_clip_tokenizer

    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {sorted(_KINDS)}, got {kind!r}")
    if kind in _XL_KINDS:
        return _random_xl_pipeline(kind, seed)
    unet_channels, heads, layers, unet_groups, vae_channels, vae_groups, text_width, text_layers = _SD_KINDS[kind]
    torch.manual_seed(seed)
    vae = _random_vae(vae_channels, vae_groups, 2 if kind == "sd15" else 1)
    text_encoder = CLIPTextModel(_text_config(text_width, text_layers)).eval()
    unet = random_unet(unet_channels, unet_groups, text_width, heads, layers)
    pipe = ALEEditPipeline(vae, text_encoder, build_clip_tokenizer(), unet, _scheduler(), requires_safety_checker=False)
    # So that a command which fell back to a random model can say so (see ale_pipeline.commands.load_pipeline).
    pipe.random_kind = kind
    return pipe


def _random_xl_pipeline(kind: str, seed: int):
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from .pipeline_xl import ALEEditXLPipeline
    from .tokenizer import SDXL_PAD_TOKEN, build_clip_tokenizer

    shape = _XL_KINDS[kind]
    torch.manual_seed(seed)
    vae = random_sdxl_vae(kind)
    first = CLIPTextModel(_text_config(shape.text_widths[0], shape.text_layers[0])).eval()
    # OpenCLIP bigG: pads with "!" (id 0) and projects its pooled output (SDXL's pooled text embedding).
    second = CLIPTextModelWithProjection(
        _text_config(shape.text_widths[1], shape.text_layers[1], pad_token_id=0, projection_dim=shape.text_widths[1])
    ).eval()
    unet = random_sdxl_unet(shape, shape.text_widths[1])
    pipe = ALEEditXLPipeline(
        vae, first, second, build_clip_tokenizer(), build_clip_tokenizer(pad_token=SDXL_PAD_TOKEN), unet,
        _scheduler(), requires_safety_checker=False,
    )  # fmt: skip
    pipe.random_kind = kind
    return pipe
