"""Object-restricted embeddings, row by row, on a tiny random CLIP text encoder and the real tokenizer."""

from __future__ import annotations

import pytest
import torch

from ale_pipeline.ore import build_ore, clip_encoder, object_restricted_embeds, substituted_base
from ale_pipeline.prompts import build_prompts
from ale_pipeline.tokenizer import build_clip_tokenizer

EDITS = [("couch", "crimson-colored couch"), ("floor", "floor made of sapphire"), ("tree", "birch tree")]
DUPLICATES = [("traffic cone", "traffic cone"), ("ball", "balloon"), ("kite", "balloon")]


@pytest.fixture(scope="module")
def tokenizer():
    return build_clip_tokenizer()


@pytest.fixture(scope="module")
def encode(tokenizer):
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    config = CLIPTextConfig(
        hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, vocab_size=49408,
        max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
    )  # fmt: skip
    return clip_encoder(CLIPTextModel(config).eval(), tokenizer)


class Recorder:
    """Wraps ``encode`` and keeps each call's texts and output, so expectations use the very same tensors."""

    def __init__(self, encode):
        self.encode, self.calls = encode, []

    def __call__(self, texts):
        out = self.encode(texts)
        self.calls.append((list(texts), out))
        return out

    def embeds(self, text: str) -> torch.Tensor:
        texts, out = self.calls[-1]
        return out[texts.index(text)]


def build(encode, tokenizer, edits, published_quirk=False):
    prompts = build_prompts(edits, tokenizer)
    recorder = Recorder(encode)
    return prompts, build_ore(recorder, prompts, published_quirk=published_quirk), recorder


@pytest.mark.parametrize("edits", [EDITS, DUPLICATES], ids=["distinct", "duplicate-targets"])
def test_object_restricted_rows(encode, tokenizer, edits):
    prompts, out, rec = build(encode, tokenizer, edits)
    n, e_b = len(edits), prompts.target_eos
    # The texts of one edit are encoded in one batch, in this order.
    assert rec.calls[0][0] == [
        prompts.source_prompt,
        prompts.target_prompt,
        *prompts.source_phrases,
        *prompts.target_phrases,
    ]
    base = rec.embeds(prompts.target_prompt)
    assert out.region_embeds.shape == (n + 1, 77, 32)
    for k, span in enumerate(prompts.target_spans):
        ore = out.region_embeds[k]
        # Duplicate phrases are the same text, hence the same encoding, placed at each one's own span.
        own = rec.embeds(prompts.target_phrases[k])
        length = len(span)
        assert torch.equal(ore[0], base[0])  # BOS kept
        assert torch.allclose(own[0], base[0], atol=1e-6)  # the causal encoder's BOS sees no prompt
        others = [i for i in range(1, e_b) if i not in span]
        assert torch.count_nonzero(ore[others]) == 0  # every other word and "and" zeroed
        assert torch.equal(ore[span.start : span.stop], own[1 : 1 + length])
        assert torch.count_nonzero(ore[span.start : span.stop].abs().sum(-1)) == length
        # EOS rows: the phrase's own EOS (at L_k + 1 in its standalone encoding) lands on e_B, padding after.
        assert tokenizer(prompts.target_phrases[k]).input_ids[length + 1] == tokenizer.eos_token_id
        assert torch.equal(ore[e_b:], own[length + 1 : length + 1 + 77 - e_b])
        assert not torch.equal(ore[e_b], base[e_b])


@pytest.mark.parametrize("edits", [EDITS, DUPLICATES], ids=["distinct", "duplicate-targets"])
def test_substituted_base_and_conditions(encode, tokenizer, edits):
    prompts, out, rec = build(encode, tokenizer, edits)
    for side, embeds, phrases, spans in (
        ("target", out.region_embeds[-1], prompts.target_phrases, prompts.target_spans),
        ("source", out.source, prompts.source_phrases, prompts.source_spans),
    ):
        prompt = prompts.target_prompt if side == "target" else prompts.source_prompt
        base = rec.embeds(prompt)
        covered = set()
        for phrase, span in zip(phrases, spans, strict=True):
            assert torch.equal(embeds[span.start : span.stop], rec.embeds(phrase)[1 : 1 + len(span)]), side
            covered |= set(span)
        rest = [i for i in range(77) if i not in covered]
        assert torch.equal(embeds[rest], base[rest]), side
        # Later phrases really change: their standalone rows differ from the in-context ones.
        later = spans[-1]
        assert not torch.equal(embeds[later.start : later.stop], base[later.start : later.stop]), side
    assert torch.equal(out.target, rec.embeds(prompts.target_prompt))
    owner = [-1] * 77
    for k, span in enumerate(prompts.target_spans):
        for i in span:
            owner[i] = k
    assert out.token_owner.tolist() == owner


def test_published_quirk_copies_same_absolute_rows(encode, tokenizer):
    prompts, quirk, rec = build(encode, tokenizer, EDITS, published_quirk=True)
    _, fixed, _ = build(encode, tokenizer, EDITS)
    base = quirk.region_embeds[-1]
    first, second = prompts.target_spans[0], prompts.target_spans[1]
    assert first.start == 1 and second.start > 1
    for k, span in enumerate(prompts.target_spans):
        own = rec.embeds(prompts.target_phrases[k])
        assert torch.equal(base[span.start : span.stop], own[span.start : span.stop])
    # The first phrase starts at 1: the quirk and the fix agree there and nowhere after.
    assert torch.equal(base[first.start : first.stop], fixed.region_embeds[-1][first.start : first.stop])
    assert not torch.equal(base[second.start : second.stop], fixed.region_embeds[-1][second.start : second.stop])
    # The second span's absolute rows lie past "floor made of sapphire"'s own tokens in its standalone
    # encoding: the quirk copies that encoding's EOS/padding vectors there.
    padded = tokenizer(prompts.target_phrases[1], padding="max_length", max_length=77).input_ids
    assert all(padded[i] == tokenizer.eos_token_id for i in second)
    # Only the background changes: every ORE_k row but BOS is overwritten.
    assert torch.equal(quirk.region_embeds[:-1], fixed.region_embeds[:-1])
    source_phrases = [rec.embeds(p) for p in prompts.source_phrases]
    src_quirk = substituted_base(
        rec.embeds(prompts.source_prompt), source_phrases, prompts.source_spans, published_quirk=True
    )
    assert torch.equal(quirk.source, src_quirk)


def test_bad_inputs_raise():
    rows = torch.randn(77, 8)
    phrases = [torch.randn(77, 8), torch.randn(77, 8)]
    spans = [range(1, 3), range(4, 5)]
    with pytest.raises(ValueError, match="eos_position must lie after every span"):
        object_restricted_embeds(rows, phrases, spans, eos_position=4)
    with pytest.raises(ValueError, match="phrase_embeds has 1 entries but spans has 2"):
        substituted_base(rows, phrases[:1], spans)
    with pytest.raises(ValueError, match=r"prompt_embeds must be a tensor of shape \(S, C\)"):
        substituted_base(rows[None], phrases, spans)
    with pytest.raises(ValueError, match=r"phrase_embeds\[1\] must have S = 77 rows"):
        substituted_base(rows, [phrases[0], phrases[1][:10]], spans)
    with pytest.raises(ValueError, match=r"spans\[0\] = range\(0, 2\) starts at the BOS position"):
        substituted_base(rows, phrases, [range(0, 2), range(4, 5)])
    with pytest.raises(ValueError, match="overlaps"):
        substituted_base(rows, phrases, [range(1, 3), range(2, 5)])


def test_encode_shape_is_checked(tokenizer):
    prompts = build_prompts(EDITS, tokenizer)
    with pytest.raises(ValueError, match=r"encode must return \(8, 77, C\) for 8 texts"):
        build_ore(lambda texts: torch.zeros(len(texts), 64, 8), prompts)
