"""Tiny random-weight stand-ins for the evaluation's models, built from configs and saved to a folder (no hub):
a CLIP (ViT-L/14's layout in small, SD's real CLIP tokenizer), a DINO-like ViT with 8-pixel patches, and a
SqueezeNet 1.1 backbone file in torchvision's state-dict format."""

from __future__ import annotations

from pathlib import Path

import torch


def save_tiny_metric_models(root: Path, seed: int = 0) -> dict[str, Path]:
    """Write ``root/clip`` (model + tokenizer + image processor), ``root/dino`` and ``root/squeezenet.pth``."""
    import transformers
    from transformers import CLIPConfig, CLIPModel, ViTConfig, ViTModel

    from ale_pipeline.bench.lpips import squeezenet1_1_features
    from ale_pipeline.tokenizer import build_clip_tokenizer

    torch.manual_seed(seed)
    clip = root / "clip"
    config = CLIPConfig(
        text_config=dict(
            vocab_size=49408,
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=77,
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=224,
            patch_size=32,
        ),
        projection_dim=16,
    )
    CLIPModel(config).save_pretrained(clip)
    build_clip_tokenizer().save_pretrained(clip)
    processor_cls = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    processor_cls().save_pretrained(clip)  # CLIP's defaults: shortest edge 224, centre crop 224, CLIP mean/std

    dino = root / "dino"
    vit = ViTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, image_size=224, patch_size=8
    )
    ViTModel(vit, add_pooling_layer=False).save_pretrained(dino)

    squeezenet = root / "squeezenet.pth"
    # torchvision's layout: features.* plus a classifier the loader must drop.
    state = {f"features.{k}": v for k, v in squeezenet1_1_features().state_dict().items()}
    state["classifier.1.weight"] = torch.randn(1000, 512, 1, 1)
    state["classifier.1.bias"] = torch.zeros(1000)
    torch.save(state, squeezenet)
    return {"clip": clip, "dino": dino, "lpips": squeezenet}
