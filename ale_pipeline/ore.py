"""Object-restricted embeddings (ORE): each object's text embedding carrying only its own phrase's meaning.

``E(s)`` is the text encoder's output for ``s`` padded to 77 tokens, ``(77, C)``. CLIP's text encoder is
causal, so in ``E("crimson-colored couch and lawn")`` the "lawn" tokens and every EOS/padding vector have
also seen "crimson-colored couch": the leakage ALE removes. With ``e_B`` the base prompt's EOS position and
``L_k`` the token count of phrase ``k`` (docs/method.md 3.3):

- the substituted base ``S(P)`` is ``E(P)`` with each phrase's span replaced by that phrase's own tokens
  from ``E(phrase_k)``;
- ``ORE_k`` keeps BOS (prompt-independent, the encoder is causal), zeroes every other word of the prompt,
  puts phrase ``k``'s own token vectors at its span, and fills ``e_B..76`` with the standalone phrase's EOS
  and padding vectors, shifted so that its EOS lands at ``e_B``.

RGB-CAM reads values from ``[ORE_1, ..., ORE_N, S(P_tgt)]`` (the background last); the keys stay ``E(P_tgt)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .prompts import EditPrompts, token_owner

Encode = Callable[[list[str]], torch.Tensor]


def _check_rows(name: str, embeds: torch.Tensor, length: int | None = None) -> None:
    if not isinstance(embeds, torch.Tensor) or embeds.dim() != 2:
        got = tuple(embeds.shape) if isinstance(embeds, torch.Tensor) else type(embeds).__name__
        raise ValueError(f"{name} must be a tensor of shape (S, C) (one prompt's text embedding), got {got}")
    if length is not None and embeds.shape[0] != length:
        raise ValueError(f"{name} must have S = {length} rows like the prompt's embedding, got {embeds.shape[0]}")


def _check_spans(prompt_embeds: torch.Tensor, phrase_embeds: Sequence[torch.Tensor], spans: Sequence[range]) -> None:
    _check_rows("prompt_embeds", prompt_embeds)
    if len(phrase_embeds) != len(spans):
        raise ValueError(f"phrase_embeds has {len(phrase_embeds)} entries but spans has {len(spans)}")
    length = prompt_embeds.shape[0]
    token_owner(spans, length)  # spans must be non-empty, inside the sequence and disjoint
    for k, (rows, span) in enumerate(zip(phrase_embeds, spans, strict=True)):
        _check_rows(f"phrase_embeds[{k}]", rows, length)
        if rows.shape[1] != prompt_embeds.shape[1]:
            raise ValueError(f"phrase_embeds[{k}] has C = {rows.shape[1]}, prompt_embeds has {prompt_embeds.shape[1]}")
        if span.start < 1:
            raise ValueError(f"spans[{k}] = {span} starts at the BOS position 0")


def substituted_base(
    prompt_embeds: torch.Tensor,
    phrase_embeds: Sequence[torch.Tensor],
    spans: Sequence[range],
    published_quirk: bool = False,
) -> torch.Tensor:
    """``S(P)``: ``E(P)`` with every phrase's span holding that phrase's own token embeddings.

    Args:
        prompt_embeds: ``(S, C)`` = ``E(P)``.
        phrase_embeds: ``N`` tensors ``(S, C)`` = ``E(phrase_k)``, each encoded alone (BOS at row 0, its
            ``L_k`` tokens at rows ``1..L_k``, then EOS and padding).
        spans: ``N`` ranges, phrase ``k``'s positions in ``P`` (from :func:`~ale_pipeline.prompts.build_prompts`).
        published_quirk: reproduce the published indexing: span rows are copied from the **same absolute
            rows** of ``E(phrase_k)``. That is the phrase's own tokens only for a phrase starting at position 1;
            for later phrases it copies whatever sits there in the standalone encoding, usually its EOS or
            padding vectors (docs/method.md 3.3 and 8.5). The default copies rows ``1..L_k``, the phrase's
            own tokens, which is what the method describes.

    Returns:
        ``(S, C)``, a new tensor.
    """
    _check_spans(prompt_embeds, phrase_embeds, spans)
    out = prompt_embeds.clone()
    for rows, span in zip(phrase_embeds, spans, strict=True):
        source = slice(span.start, span.stop) if published_quirk else slice(1, 1 + len(span))
        out[span.start : span.stop] = rows[source]
    return out


def object_restricted_embeds(
    target_prompt_embeds: torch.Tensor,
    phrase_embeds: Sequence[torch.Tensor],
    spans: Sequence[range],
    eos_position: int,
    published_quirk: bool = False,
) -> torch.Tensor:
    """``[ORE_1, ..., ORE_N, S(P_tgt)]``, the values RGB-CAM reads per region (the background last).

    Args:
        target_prompt_embeds: ``(S, C)`` = ``E(P_tgt)``.
        phrase_embeds: ``N`` tensors ``(S, C)`` = ``E(tgt_k)``, each target phrase encoded alone.
        spans: ``N`` ranges, each phrase's positions in ``P_tgt``.
        eos_position: ``e_B``, the EOS position of ``P_tgt`` (after every span).
        published_quirk: passed to :func:`substituted_base`; it changes only the background entry, since every
            row of ``ORE_k`` but BOS is overwritten.

    Returns:
        ``(N + 1, S, C)``. ``ORE_k``: row 0 of ``S(P_tgt)`` (BOS), zeros at ``1..e_B-1`` except span ``k``,
        which holds rows ``1..L_k`` of ``E(tgt_k)``, and rows ``L_k+1..L_k+S-e_B`` of ``E(tgt_k)`` at
        ``e_B..S-1``.
    """
    base = substituted_base(target_prompt_embeds, phrase_embeds, spans, published_quirk)
    length = base.shape[0]
    last = max(span.stop for span in spans)
    if not last <= eos_position < length:
        raise ValueError(f"eos_position must lie after every span ({last}) and before S = {length}, got {eos_position}")
    entries = []
    for rows, span in zip(phrase_embeds, spans, strict=True):
        ore = base.clone()
        ore[1:eos_position] = 0
        ore[span.start : span.stop] = rows[1 : 1 + len(span)]
        # The phrase's own EOS sits at row L_k + 1; length - eos_position rows from there reach at most row
        # length - 1 because L_k + 1 <= eos_position.
        tail = 1 + len(span)
        ore[eos_position:] = rows[tail : tail + length - eos_position]
        entries.append(ore)
    entries.append(base)
    return torch.stack(entries)


@dataclass(frozen=True)
class EditEmbeds:
    """The text conditions of one edit.

    ``source``: ``(S, C)`` = ``S(P_src)``, the source branch's condition. ``target``: ``(S, C)`` = ``E(P_tgt)``,
    the target branch's condition (the keys). ``region_embeds``: ``(N + 1, S, C)``, the ORE stack for
    RGB-CAM's values. ``token_owner``: ``(S,)`` owner of each target-prompt token.
    """

    source: torch.Tensor
    target: torch.Tensor
    region_embeds: torch.Tensor
    token_owner: torch.Tensor


def build_ore(encode: Encode, prompts: EditPrompts, published_quirk: bool = False) -> EditEmbeds:
    """Encode the prompts and phrases of an edit (one ``encode`` call) and assemble its text conditions.

    Args:
        encode: maps ``n`` strings to ``(n, S, C)`` embeddings, each padded to ``S = prompts.max_length``
            tokens as the pipeline's text encoder does (e.g. :func:`clip_encoder`).
        prompts: from :func:`~ale_pipeline.prompts.build_prompts` with the same tokenizer as ``encode``.
        published_quirk: see :func:`substituted_base`.
    """
    n = prompts.num_objects
    texts = [prompts.source_prompt, prompts.target_prompt, *prompts.source_phrases, *prompts.target_phrases]
    embeds = encode(texts)
    if (
        not isinstance(embeds, torch.Tensor)
        or embeds.dim() != 3
        or embeds.shape[:2] != (len(texts), prompts.max_length)
    ):
        got = tuple(embeds.shape) if isinstance(embeds, torch.Tensor) else type(embeds).__name__
        raise ValueError(
            f"encode must return ({len(texts)}, {prompts.max_length}, C) for {len(texts)} texts, got {got}"
        )
    source_phrases, target_phrases = list(embeds[2 : 2 + n]), list(embeds[2 + n :])
    source = substituted_base(embeds[0], source_phrases, prompts.source_spans, published_quirk)
    regions = object_restricted_embeds(
        embeds[1], target_phrases, prompts.target_spans, prompts.target_eos, published_quirk
    )
    return EditEmbeds(
        source=source,
        target=embeds[1].clone(),
        region_embeds=regions,
        token_owner=token_owner(prompts.target_spans, prompts.max_length),
    )


def clip_encoder(text_encoder, tokenizer, max_length: int | None = None) -> Encode:
    """An ``encode`` for :func:`build_ore`: tokenize padded to ``max_length`` (default the tokenizer's 77),
    run ``text_encoder`` without gradients, return its last hidden state ``(n, S, C)``."""
    length = max_length or tokenizer.model_max_length

    @torch.no_grad()
    def encode(texts: list[str]) -> torch.Tensor:
        return text_encoder(_tokens(tokenizer, texts, length, text_encoder.device))[0]

    return encode


def _tokens(tokenizer, texts: list[str], length: int, device) -> torch.Tensor:
    ids = tokenizer(texts, padding="max_length", max_length=length, truncation=True, return_tensors="pt")
    return ids.input_ids.to(device)


def sdxl_encoder(text_encoders: Sequence, tokenizers: Sequence, max_length: int | None = None) -> Encode:
    """An ``encode`` for :func:`build_ore` on SDXL's two text encoders, as SDXL conditions its UNet: each
    encoder's penultimate hidden state (its own tokenizer, padded to ``max_length``, default 77),
    concatenated along the channels: ``(n, S, C_1 + C_2)`` (768 + 1280 = 2048 for SDXL).

    Every ORE operation is row-wise, so ORE on the concatenation is ORE on each encoder separately: each half
    of ``ORE_k``'s tail holds that encoder's own encoding of phrase ``k`` after its EOS, which for
    ``tokenizer_2`` (it pads with ``"!"``) are its ``"!"`` padding vectors (docs/method.md, SDXL).
    """
    if len(text_encoders) != len(tokenizers):
        raise ValueError(f"got {len(text_encoders)} text encoders but {len(tokenizers)} tokenizers")
    length = max_length or tokenizers[0].model_max_length

    @torch.no_grad()
    def encode(texts: list[str]) -> torch.Tensor:
        states = []
        for text_encoder, tokenizer in zip(text_encoders, tokenizers, strict=True):
            out = text_encoder(_tokens(tokenizer, texts, length, text_encoder.device), output_hidden_states=True)
            states.append(out.hidden_states[-2])
        return torch.cat(states, dim=-1)

    return encode


@torch.no_grad()
def pooled_text_embeds(text_encoder, tokenizer, texts: list[str], max_length: int | None = None) -> torch.Tensor:
    """SDXL's pooled text embedding of each of ``texts``: ``(n, P)``, the projected pooled output
    (``text_embeds``) of ``text_encoder`` (SDXL's second encoder, a ``CLIPTextModelWithProjection``)."""
    length = max_length or tokenizer.model_max_length
    return text_encoder(_tokens(tokenizer, texts, length, text_encoder.device)).text_embeds
