"""Tiny random-weight Grounding DINO and SAM built from configs, with their processors (no hub, no downloads)."""

from __future__ import annotations

import contextlib
import functools

import torch

#: The tiny BERT vocabulary: special tokens, the prompt's period, and the words the tests' phrases use.
WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "couch", "floor", "red", "lamp", "cup", "saucer", "##s"]


def tiny_bert_tokenizer():
    """A ``BertTokenizerFast`` over :data:`WORDS`, built in memory with the tokenizers library."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertTokenizerFast

    vocab = {word: i for i, word in enumerate(WORDS)}
    backend = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    return BertTokenizerFast(
        tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]",
    )  # fmt: skip


def tiny_grounding_dino(seed: int = 0):
    """``(model, processor)``: Grounding DINO with a tiny ResNet backbone and a 1-layer BERT, 10 queries."""
    from transformers import (
        BertConfig,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoProcessor,
        ResNetConfig,
    )
    from transformers.models.grounding_dino.image_processing_pil_grounding_dino import (
        GroundingDinoImageProcessorPil,
    )

    config = GroundingDinoConfig(
        backbone_config=ResNetConfig(
            num_channels=3, embedding_size=8, hidden_sizes=[8, 16, 16, 16], depths=[1, 1, 1, 1],
            out_features=["stage2", "stage3", "stage4"],
        ),
        use_timm_backbone=False,
        use_pretrained_backbone=False,
        text_config=BertConfig(
            vocab_size=len(WORDS), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
            max_position_embeddings=64,
        ),
        num_queries=10, encoder_layers=1, decoder_layers=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
        encoder_attention_heads=2, decoder_attention_heads=2, d_model=32, num_feature_levels=3,
        encoder_n_points=1, decoder_n_points=1, max_text_len=32,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = GroundingDinoForObjectDetection(config).eval()
    processor = GroundingDinoProcessor(
        image_processor=GroundingDinoImageProcessorPil(size={"shortest_edge": 64, "longest_edge": 96}),
        tokenizer=tiny_bert_tokenizer(),
    )
    return model, processor


def tiny_sam(seed: int = 0):
    """``(model, processor)``: SAM with a 1-layer ViT on 64 px inputs."""
    from transformers import (
        SamConfig,
        SamMaskDecoderConfig,
        SamModel,
        SamProcessor,
        SamPromptEncoderConfig,
        SamVisionConfig,
    )
    from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil

    config = SamConfig(
        vision_config=SamVisionConfig(
            hidden_size=16, num_hidden_layers=1, num_attention_heads=2, mlp_dim=32, output_channels=16,
            image_size=64, patch_size=8, window_size=2, global_attn_indexes=[0], num_pos_feats=8,
        ),
        prompt_encoder_config=SamPromptEncoderConfig(
            hidden_size=16, image_size=64, patch_size=8, mask_input_channels=4
        ),
        mask_decoder_config=SamMaskDecoderConfig(
            hidden_size=16, mlp_dim=32, num_hidden_layers=1, num_attention_heads=2, iou_head_hidden_dim=16
        ),
    )  # fmt: skip
    torch.manual_seed(seed)
    model = SamModel(config).eval()
    processor = SamProcessor(
        image_processor=SamImageProcessorPil(
            size={"longest_edge": 64}, pad_size={"height": 64, "width": 64}, mask_size={"longest_edge": 16},
            mask_pad_size={"height": 16, "width": 16},
        )
    )  # fmt: skip
    return model, processor


@functools.cache
def tiny_models():
    """``(detector, detector_processor, segmenter, segmenter_processor)``, built once per test process (the
    tests never change their weights; :func:`steer_detector`'s hook is removed on exit)."""
    return (*tiny_grounding_dino(), *tiny_sam())


@contextlib.contextmanager
def steer_detector(model, logits: torch.Tensor, boxes: torch.Tensor):
    """Within the block, ``model`` outputs the given ``(Q, T)`` token logits and ``(Q, 4)`` relative cxcywh boxes,
    padded to its query count and text length with "nothing here" (-inf logits), whatever the image.

    Random weights detect arbitrary things; this makes the detections, labels and phrase scores a test's choice
    while the processor, post-processing, matching, SAM and merging all run for real.
    """
    queries, text_len = model.config.num_queries, model.config.max_text_len

    def hook(_module, _args, output):
        full = torch.full((1, queries, text_len), float("-inf"))
        full[0, : logits.shape[0], : logits.shape[1]] = logits
        place = torch.full((1, queries, 4), 0.5)
        place[0, : boxes.shape[0]] = boxes
        output.logits, output.pred_boxes = full, place
        return output

    handle = model.register_forward_hook(hook)
    try:
        yield model
    finally:
        handle.remove()
