"""ALE's prompts, and each object's token positions, located by position while the prompt is built.

An edit is up to a few (source phrase, target phrase) pairs. ALE joins the phrases with " and " (no
"a photo of"): ``[("couch", "crimson-colored couch"), ("floor", "lawn")]`` gives the source prompt
"couch and floor" and the target prompt "crimson-colored couch and lawn".

The published code finds an object's tokens by searching the joined prompt for the first occurrence of
the phrase's token ids. Duplicate target phrases ("balloon and balloon") and phrases contained in an
earlier one ("Christmas tree and tree") then map several objects to the same tokens (docs/method.md 8.4).
Here the prompt's ids are assembled from each phrase's own ids and the joiner's, so every object's span is
known by construction; the joined prompt is then re-tokenized and must give exactly those ids, which
proves the tokenizer does not merge across the boundaries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ale_kernels import MAX_OBJECTS

JOINER = " and "
MAX_LENGTH = 77


@dataclass(frozen=True)
class EditPrompts:
    """The prompts of one edit and where each object's tokens sit in them.

    Positions index the tokenized prompt ``[BOS, tokens..., EOS, padding...]`` of ``max_length`` tokens.
    ``*_ids`` hold BOS through EOS, without padding, so ``*_eos == len(*_ids) - 1``. Span ``k`` belongs to
    edit ``k`` (the order of the edits is the order of the objects and of their masks).
    """

    edits: tuple[tuple[str, str], ...]
    source_prompt: str
    target_prompt: str
    source_ids: tuple[int, ...]
    target_ids: tuple[int, ...]
    source_spans: tuple[range, ...]
    target_spans: tuple[range, ...]
    source_eos: int
    target_eos: int
    max_length: int = MAX_LENGTH

    @property
    def num_objects(self) -> int:
        return len(self.edits)

    @property
    def source_phrases(self) -> list[str]:
        return [src for src, _ in self.edits]

    @property
    def target_phrases(self) -> list[str]:
        return [tgt for _, tgt in self.edits]


def _ids(tokenizer, text: str, special: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def _assemble(side: str, phrases: list[str], tokenizer, max_length: int) -> tuple[str, list[int], list[range]]:
    """The joined prompt, its ids (BOS..EOS) and each phrase's span, checked against the tokenizer's own."""
    joiner = _ids(tokenizer, JOINER, special=False)
    ids, spans = [tokenizer.bos_token_id], []
    for k, phrase in enumerate(phrases):
        if k:
            ids += joiner
        own = _ids(tokenizer, phrase, special=False)
        if not own:
            raise ValueError(f"{side} phrase {k} ({phrase!r}) tokenizes to no tokens")
        spans.append(range(len(ids), len(ids) + len(own)))
        ids += own
    ids.append(tokenizer.eos_token_id)
    prompt = JOINER.join(phrases)
    if len(ids) > max_length:
        raise ValueError(
            f"the {side} prompt {prompt!r} (phrases {phrases}) is {len(ids)} tokens with BOS and EOS, "
            f"more than the text encoder's {max_length}"
        )
    encoded = _ids(tokenizer, prompt, special=True)
    if encoded != ids:
        # A tokenizer that merges tokens across a phrase boundary would shift every later span.
        raise ValueError(
            f"the {side} prompt {prompt!r} tokenizes to {encoded}, not to its phrases' own tokens joined "
            f"by {JOINER!r}: {ids}; the tokenizer merges across phrase boundaries"
        )
    return prompt, ids, spans


def check_pairs(edits: object) -> list[tuple[str, str]]:
    """``edits`` as stripped ``(source, target)`` pairs: 1 to ``MAX_OBJECTS`` pairs of non-empty strings."""
    if isinstance(edits, str) or not isinstance(edits, Sequence):
        raise ValueError(
            f"edits must be a sequence of (source phrase, target phrase) pairs, got {type(edits).__name__}"
        )
    if not 1 <= len(edits) <= MAX_OBJECTS:
        raise ValueError(f"edits must hold 1 to {MAX_OBJECTS} (source, target) pairs, got {len(edits)}")
    pairs = []
    for k, edit in enumerate(edits):
        if isinstance(edit, str) or len(edit) != 2 or not all(isinstance(p, str) for p in edit):
            raise ValueError(f"edit {k} must be a (source phrase, target phrase) pair of strings, got {edit!r}")
        src, tgt = edit[0].strip(), edit[1].strip()
        if not src or not tgt:
            raise ValueError(f"edit {k} {tuple(edit)!r} has an empty {'source' if not src else 'target'} phrase")
        pairs.append((src, tgt))
    return pairs


def build_prompts(edits: Sequence[tuple[str, str]], tokenizer, max_length: int = MAX_LENGTH) -> EditPrompts:
    """ALE's source and target prompts for ``edits`` ((source phrase, target phrase) pairs), with token spans.

    Phrases are stripped of surrounding whitespace. Nothing is dropped: an empty phrase is an error (the
    published code silently skips such pairs, which shifts the objects' indices against their masks).

    Args:
        edits: 1 to ``MAX_OBJECTS`` pairs; pair ``k`` is object ``k``.
        tokenizer: a CLIP tokenizer (``ale_pipeline.tokenizer.load_tokenizer``): callable, with
            ``bos_token_id`` and ``eos_token_id``.
        max_length: the text encoder's positions (77 for CLIP), BOS and EOS included.
    """
    pairs = check_pairs(edits)
    source_prompt, source_ids, source_spans = _assemble("source", [s for s, _ in pairs], tokenizer, max_length)
    target_prompt, target_ids, target_spans = _assemble("target", [t for _, t in pairs], tokenizer, max_length)
    return EditPrompts(
        edits=tuple(pairs),
        source_prompt=source_prompt,
        target_prompt=target_prompt,
        source_ids=tuple(source_ids),
        target_ids=tuple(target_ids),
        source_spans=tuple(source_spans),
        target_spans=tuple(target_spans),
        source_eos=len(source_ids) - 1,
        target_eos=len(target_ids) - 1,
        max_length=max_length,
    )


def token_owner(spans: Sequence[range], length: int = MAX_LENGTH) -> torch.Tensor:
    """``(length,)`` int64: ``k`` at object ``k``'s span positions, ``-1`` (shared: BOS, "and", EOS, padding)
    elsewhere. This is :class:`~ale_kernels.diffusers.RegionSpec`'s ``token_owner`` for the target spans."""
    owner = torch.full((length,), -1, dtype=torch.int64)
    for k, span in enumerate(spans):
        if len(span) == 0 or span.start < 0 or span.stop > length:
            raise ValueError(f"spans[{k}] = {span} must be a non-empty range inside [0, {length})")
        if (owner[span.start : span.stop] != -1).any():
            raise ValueError(f"spans[{k}] = {span} overlaps an earlier span")
        owner[span.start : span.stop] = k
    return owner


def build_prompts_for_all(
    edits: Sequence[tuple[str, str]], tokenizers: Sequence, max_length: int = MAX_LENGTH
) -> EditPrompts:
    """:func:`build_prompts` under each of a model's tokenizers (SDXL has two), which must all place every
    token, and so every span, at the same positions; the first one's result.

    SDXL's tokenizers share CLIP's vocabulary and differ in their padding (``tokenizer_2`` pads with ``"!"``),
    which the prompts' ids (BOS..EOS) do not include; a checkpoint whose tokenizers disagree is an error,
    since each encoder's rows would then belong to different words.
    """
    first = build_prompts(edits, tokenizers[0], max_length)
    for k, tokenizer in enumerate(tokenizers[1:], start=2):
        other = build_prompts(edits, tokenizer, max_length)
        for side in ("source", "target"):
            ours, theirs = getattr(first, f"{side}_ids"), getattr(other, f"{side}_ids")
            if ours != theirs:
                raise ValueError(
                    f"the {side} prompt {getattr(first, f'{side}_prompt')!r} tokenizes differently under tokenizer "
                    f"{k} ({list(theirs)}) than under the first ({list(ours)}): ORE needs every token at the same "
                    "position in both encoders"
                )
    return first
