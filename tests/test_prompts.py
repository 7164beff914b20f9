"""The offline CLIP tokenizer gives SD's ids; ALE's prompts give every object its own token span."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from ale_pipeline import tokenizer as tokenizer_module
from ale_pipeline.prompts import build_prompts, token_owner
from ale_pipeline.tokenizer import VOCAB_SIZE, build_clip_tokenizer, load_tokenizer
from tests.bench_data import BENCH


@pytest.fixture(scope="module")
def tokenizer():
    return build_clip_tokenizer()


def bench_cases() -> list[tuple[str, int, list[tuple[str, str]]]]:
    """Every (file, case index, edits) of the ALE-Bench folder (``$ALE_BENCH_DIR``, else ``tests/data``)."""
    cases = []
    for path in sorted((BENCH / "prompts").glob("*/*/*_prompts.json")):
        for case in json.loads(path.read_text())["prompts"]:
            cases.append((str(path.relative_to(BENCH)), case["index"], [tuple(e) for e in case["edits"]]))
    return cases


@pytest.fixture(scope="module")
def cases():
    found = bench_cases()
    # The sample ships beside the repository in CI and on the development machines: missing is an error.
    assert found, f"no ALE-Bench prompts under {BENCH}: set ALE_BENCH_DIR to the benchmark folder"
    return found


def phrase_ids(tokenizer, phrase: str) -> list[int]:
    return tokenizer(phrase, add_special_tokens=False).input_ids


# Ids of the SD1.x tokenizer (openai/clip-vit-large-patch14), as SD pipelines produce them.
SD_IDS = {
    "a photo of a cat": [49406, 320, 1125, 539, 320, 2368, 49407],
    "a photo of a dog": [49406, 320, 1125, 539, 320, 1929, 49407],
    "an astronaut riding a horse on mars": [49406, 550, 18376, 6765, 320, 4558, 525, 7496, 49407],
}


@pytest.mark.parametrize("text", sorted(SD_IDS))
def test_tokenizer_gives_sd_ids(tokenizer, text):
    assert tokenizer(text).input_ids == SD_IDS[text]


def test_tokenizer_vocabulary_and_padding(tokenizer):
    assert len(tokenizer) == VOCAB_SIZE == 49408
    assert tokenizer.model_max_length == 77
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (49406, 49407, 49407)
    assert tokenizer.convert_ids_to_tokens([0, 256, 320, 537]) == ["!", "!</w>", "a</w>", "and</w>"]
    padded = tokenizer("a photo of a cat", padding="max_length", max_length=77).input_ids
    assert len(padded) == 77 and padded[:7] == SD_IDS["a photo of a cat"] and set(padded[7:]) == {49407}


def test_tokenizer_cache_and_local_checkpoint(tmp_path):
    fresh = build_clip_tokenizer(cache_dir=tmp_path / "cache")
    assert sorted(p.name for p in (tmp_path / "cache" / "clip-bpe-16e6").iterdir()) == ["merges.txt", "vocab.json"]
    assert fresh("a photo of a cat").input_ids == SD_IDS["a photo of a cat"]
    # A diffusers pipeline directory keeps its tokenizer in tokenizer/.
    fresh.save_pretrained(tmp_path / "model" / "tokenizer")
    loaded = load_tokenizer(tmp_path / "model")
    assert loaded("an astronaut riding a horse on mars").input_ids == SD_IDS["an astronaut riding a horse on mars"]
    with pytest.raises(FileNotFoundError, match=r"model_dir .* is not a directory"):
        load_tokenizer(tmp_path / "missing")


def test_missing_merges_file_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(tokenizer_module.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(tokenizer_module.importlib.metadata, "files", lambda name: [])
    with pytest.raises(FileNotFoundError, match=r"bpe_simple_vocab_16e6.txt.gz.*pip install --no-deps"):
        build_clip_tokenizer(cache_dir=tmp_path)


def test_every_bench_case_gets_its_own_spans(tokenizer, cases):
    assert len(cases) == 1500
    for where, index, edits in cases:
        p = build_prompts(edits, tokenizer)
        for side, phrases, spans, ids, eos, prompt in (
            ("source", p.source_phrases, p.source_spans, p.source_ids, p.source_eos, p.source_prompt),
            ("target", p.target_phrases, p.target_spans, p.target_ids, p.target_eos, p.target_prompt),
        ):
            msg = f"{where} case {index} {side}"
            assert len(spans) == len(edits), msg
            for phrase, span in zip(phrases, spans, strict=True):
                assert list(ids[span.start : span.stop]) == phrase_ids(tokenizer, phrase), msg
            starts = sorted(spans, key=lambda s: s.start)
            # Disjoint, with an "and" between neighbours.
            assert all(a.stop < b.start for a, b in itertools.pairwise(starts)), msg
            assert starts[0].start == 1 and starts[-1].stop == eos == len(ids) - 1, msg
            assert list(ids) == tokenizer(prompt).input_ids, msg


def test_duplicate_target_phrases_get_distinct_spans(tokenizer, cases):
    duplicates = [(w, i, e) for w, i, e in cases if len({t for _, t in e}) < len(e)]
    assert ("prompts/3/object/natural_img01_prompts.json", 2) in [(w, i) for w, i, _ in duplicates]
    edits = next(e for w, i, e in duplicates if (w, i) == ("prompts/3/object/natural_img01_prompts.json", 2))
    p = build_prompts(edits, tokenizer)
    assert p.target_phrases == ["traffic cone", "balloon", "balloon"]
    assert p.target_prompt == "traffic cone and balloon and balloon"
    assert p.target_spans == (range(1, 3), range(4, 5), range(6, 7))
    balloon = phrase_ids(tokenizer, "balloon")
    assert [p.target_ids[s.start : s.stop] for s in p.target_spans[1:]] == [tuple(balloon)] * 2
    owner = token_owner(p.target_spans)
    assert owner[:8].tolist() == [-1, 0, 0, -1, 1, -1, 2, -1]


def test_phrase_inside_an_earlier_phrase_gets_its_own_span(tokenizer, cases):
    # "tree" also occurs inside "Christmas tree": a first-occurrence search would point object 1 at token 2.
    edits = next(e for w, i, e in cases if (w, i) == ("prompts/2/object/natural_img01_prompts.json", 5))
    p = build_prompts(edits, tokenizer)
    assert p.target_phrases == ["Christmas tree", "tree"]
    assert p.target_spans == (range(1, 3), range(4, 5))
    assert p.target_ids[2] == p.target_ids[4] == phrase_ids(tokenizer, "tree")[0]


def test_prompt_fields(tokenizer):
    p = build_prompts([(" couch ", "crimson-colored couch"), ("floor", "lawn")], tokenizer)
    assert p.edits == (("couch", "crimson-colored couch"), ("floor", "lawn"))
    assert (p.source_prompt, p.target_prompt) == ("couch and floor", "crimson-colored couch and lawn")
    assert p.num_objects == 2 and p.max_length == 77
    assert p.source_spans == (range(1, 2), range(3, 4)) and p.source_eos == 4
    couch = len(phrase_ids(tokenizer, "crimson-colored couch"))
    assert p.target_spans == (range(1, 1 + couch), range(2 + couch, 3 + couch)) and p.target_eos == 3 + couch


def test_too_long_prompt_names_phrases_and_count(tokenizer):
    long_phrase = " ".join(["red"] * 72)  # BOS + 72 + "and" + 3 + EOS = 78
    with pytest.raises(ValueError, match=r"target prompt .*phrases \['red red.*', 'big red ball'\]\) is 78 tokens"):
        build_prompts([("cat", long_phrase), ("dog", "big red ball")], tokenizer)
    # 75 words fit exactly: BOS + 75 + EOS = 77.
    p = build_prompts([("cat", " ".join(["red"] * 75))], tokenizer)
    assert len(p.target_ids) == 77 and p.target_eos == 76


@pytest.mark.parametrize(
    "edits, pattern",
    [
        ([("cat", "dog"), ("  ", "bird")], r"edit 1 \('  ', 'bird'\) has an empty source phrase"),
        ([("cat", "")], r"edit 0 \('cat', ''\) has an empty target phrase"),
        ([], r"edits must hold 1 to \d+"),
        ("cat", r"edits must be a sequence"),
        ([("cat", "dog", "bird")], r"edit 0 must be a \(source phrase, target phrase\) pair"),
        ([("cat", 3)], r"edit 0 must be a \(source phrase, target phrase\) pair"),
    ],
)
def test_bad_edits_raise(tokenizer, edits, pattern):
    with pytest.raises(ValueError, match=pattern):
        build_prompts(edits, tokenizer)


class MergingTokenizer:
    """The real tokenizer, except that the joined prompt "ab and c" encodes as if "and c" were one token."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.bos_token_id, self.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id

    def __call__(self, text, add_special_tokens=True):
        out = self.tokenizer(text, add_special_tokens=add_special_tokens)
        if add_special_tokens and " and " in text:
            return {"input_ids": [*out.input_ids[:-3], 999, self.eos_token_id]}
        return out


def test_merge_across_phrase_boundaries_raises(tokenizer):
    with pytest.raises(ValueError, match=r"source prompt 'ab and c' tokenizes to .* merges across phrase boundaries"):
        build_prompts([("ab", "x"), ("c", "y")], MergingTokenizer(tokenizer))


def test_token_owner():
    owner = token_owner([range(1, 3), range(4, 7)], length=10)
    assert owner.dtype == torch.int64 and owner.shape == (10,)
    assert owner.tolist() == [-1, 0, 0, -1, 1, 1, 1, -1, -1, -1]
    assert token_owner([range(1, 2)]).shape == (77,)
    with pytest.raises(ValueError, match=r"spans\[1\] = range\(2, 4\) overlaps"):
        token_owner([range(1, 3), range(2, 4)])
    with pytest.raises(ValueError, match=r"spans\[0\] = range\(70, 80\) must be a non-empty range"):
        token_owner([range(70, 80)])
