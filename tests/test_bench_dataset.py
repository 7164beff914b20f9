"""The ALE-Bench loader: the shared half-sample's cases, masks and order, and clear errors for malformed trees."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ale_pipeline.bench import EDIT_TYPES, BenchFormatError, load_bench, load_gt_masks
from ale_pipeline.bench.dataset import _case_order
from tests.bench_data import BENCH

SAMPLE_IMAGES = [f"{kind}_img{k:02d}" for kind in ("artificial", "natural") for k in (1, 3, 5, 7, 9)]


@pytest.fixture(scope="module")
def bench():
    return load_bench(BENCH)


# ---------------------------------------------------------------------------------------------- the sample


def test_the_sample_has_1500_cases_100_per_count_and_type(bench):
    assert len(bench.cases) == len(bench) == 1500
    assert sorted(bench.images) == SAMPLE_IMAGES
    assert bench.counts == [1, 2, 3] and bench.types == list(EDIT_TYPES)
    assert Counter(c.n_objects for c in bench.cases) == {1: 500, 2: 500, 3: 500}
    assert Counter(c.edit_type for c in bench.cases) == {t: 300 for t in EDIT_TYPES}
    assert set(Counter((c.n_objects, c.edit_type) for c in bench.cases).values()) == {100}
    assert Counter(c.image_name for c in bench.cases) == {name: 150 for name in SAMPLE_IMAGES}
    assert len({c.case_id for c in bench.cases}) == 1500


def test_cases_are_sorted_and_consistent(bench):
    assert bench.cases == sorted(bench.cases, key=_case_order)
    assert bench.cases[0].case_id == "1/color/artificial_img01/0"
    assert bench.cases[-1].case_id == "3/object+material/natural_img09/9"
    for case in bench.cases:
        assert len(case.edits) == len(case.mask_paths) == case.n_objects
        assert case.image_path == BENCH / "images" / f"{case.image_name}.jpg"
        assert case.prompt_file == BENCH / "prompts" / str(case.n_objects) / case.edit_type / (
            f"{case.image_name}_prompts.json"
        )
        assert "+".join(case.editing_types) == case.edit_type  # the entry's own types agree with its folder
        for source, mask in zip(case.source_phrases, case.mask_paths, strict=True):
            assert mask.parent == BENCH / "masks" / case.image_name and mask.name == f"{source}_mask.png"
        assert len(set(case.source_phrases)) == case.n_objects  # distinct objects within a case


def test_a_case_reads_as_its_prompt_file_says(bench):
    case = next(c for c in bench.cases if c.case_id == "2/color/artificial_img01/0")
    assert case.edits == (("floor", "navy-colored floor"), ("couch", "black-colored couch"))
    assert case.source_phrases == ("floor", "couch")
    assert case.target_phrases == ("navy-colored floor", "black-colored couch")
    assert case.result_path("results") == Path("results/2/color/artificial_img01/edit_0.png")


def test_object_names_with_spaces_find_their_masks(bench):
    case = next(c for c in bench.cases if c.image_name == "natural_img09" and "yoga mat" in c.source_phrases)
    k = case.source_phrases.index("yoga mat")
    assert case.mask_paths[k].name == "yoga mat_mask.png"
    assert set(bench.masks["natural_img09"]) == {"footwear", "man", "t-shirt", "yoga mat"}


def test_the_duplicate_target_case_is_found(bench):
    duplicates = [c for c in bench.cases if c.has_duplicate_targets]
    assert [c.case_id for c in duplicates] == ["3/object/natural_img01/2"]
    assert duplicates[0].target_phrases == ("traffic cone", "balloon", "balloon")


def test_gt_masks_are_the_files_thresholded_at_127(bench):
    case = next(c for c in bench.cases if c.case_id == "3/color/natural_img09/0")
    masks = load_gt_masks(case)
    assert masks.shape == (3, 1000, 1000) and masks.dtype == torch.float32
    assert set(masks.unique().tolist()) == {0.0, 1.0}
    for plane, path in zip(masks, case.mask_paths, strict=True):
        with Image.open(path) as image:
            expected = np.asarray(image.convert("L")) > 127
        assert torch.equal(plane.bool(), torch.from_numpy(expected))
    small = load_gt_masks(case, size=(48, 64))  # (height, width)
    assert small.shape == (3, 48, 64) and set(small.unique().tolist()) <= {0.0, 1.0}
    assert small.sum() > 0


def test_select_filters_in_order_and_limits(bench):
    picked = bench.select(counts=[2, 3], types=["material"], images=["natural_img03"])
    assert len(picked) == 20 and {(c.n_objects, c.edit_type, c.image_name) for c in picked} == {
        (2, "material", "natural_img03"),
        (3, "material", "natural_img03"),
    }
    assert picked == [c for c in bench.cases if c in picked]
    assert bench.select(counts=[2, 3], types=["material"], images=["natural_img03"], limit=3) == picked[:3]
    assert bench.select() == bench.cases and bench.select(limit=0) == []


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(counts=[4]), "no object count '4'"),
        (dict(types=["colour"]), "no edit type 'colour'"),
        (dict(images=["natural_img02"]), "no image 'natural_img02'"),
        (dict(limit=-1), "limit must be >= 0"),
    ],
)
def test_select_rejects_what_the_benchmark_lacks(bench, kwargs, message):
    with pytest.raises(ValueError, match=message):
        bench.select(**kwargs)


# ------------------------------------------------------------------------- layouts beyond the sample, errors


def _write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)


def make_bench(root: Path, n: int = 2, edit_type: str = "color", entries=None, image: str = "room") -> Path:
    """A small benchmark: one 16x16 image with three object masks ("couch", "floor", "yoga mat") and one
    prompt file ``prompts/<n>/<edit_type>/<image>_prompts.json``."""
    (root / "images").mkdir(parents=True)
    Image.fromarray(np.full((16, 16, 3), 128, np.uint8)).save(root / "images" / f"{image}.jpg")
    (root / "masks" / image).mkdir(parents=True)
    for k, name in enumerate(["couch", "floor", "yoga mat"]):
        mask = np.zeros((16, 16), np.uint8)
        mask[4 * k : 4 * k + 4] = 255
        Image.fromarray(mask).save(root / "masks" / image / f"{name}_mask.png")
    if entries is None:
        pairs = [["couch", "red couch"], ["floor", "floor made of wood"], ["yoga mat", "blue yoga mat"]][:n]
        entries = [{"index": i, "editing_types": [edit_type], "edits": pairs} for i in range(2)]
    _write_json(root / "prompts" / str(n) / edit_type / f"{image}_prompts.json", {"image": image, "prompts": entries})
    return root


def test_other_counts_types_and_the_published_repository_layout_load(tmp_path):
    # The full benchmark lives in ale_bench/ of the published repository, beside a .DS_Store in masks/.
    root = make_bench(tmp_path / "ALE" / "ale_bench", n=3, edit_type="style")
    (root / "masks" / ".DS_Store").write_bytes(b"\0")
    (root / "prompts" / "README.txt").write_text("not a case")
    bench = load_bench(tmp_path / "ALE")
    assert bench.root == root and len(bench) == 2
    assert bench.types == ["style"] and bench.counts == [3]
    assert [c.case_id for c in bench.cases] == ["3/style/room/0", "3/style/room/1"]
    assert bench.cases[0].mask_paths[2].name == "yoga mat_mask.png"
    assert load_gt_masks(bench.cases[0]).shape == (3, 16, 16)


def test_source_phrases_match_mask_names_ignoring_case_and_spacing(tmp_path):
    entries = [{"index": 0, "edits": [["Yoga  Mat", "blue yoga mat"], [" couch ", "red couch"]]}]
    bench = load_bench(make_bench(tmp_path, n=2, entries=entries))
    (case,) = bench.cases
    assert [p.name for p in case.mask_paths] == ["yoga mat_mask.png", "couch_mask.png"]
    assert case.edits[1] == ("couch", "red couch") and case.editing_types == ()


def _edit(root: Path, change) -> None:
    prompt_file = root / "prompts" / "2" / "color" / "room_prompts.json"
    data = json.loads(prompt_file.read_text())
    result = change(data)
    prompt_file.write_text(result if isinstance(result, str) else json.dumps(data))


PROMPT_FILE = "prompts/2/color/room_prompts.json"


@pytest.mark.parametrize(
    "change, where, message",
    [
        (lambda d: "{not json", PROMPT_FILE, "not valid JSON"),
        (lambda d: "[1, 2]", PROMPT_FILE, "expected an object"),
        (lambda d: d.update(image=7), PROMPT_FILE, '"image" must be the image name'),
        (lambda d: d.update(image="hall"), PROMPT_FILE, "the file name says 'room'"),
        (lambda d: d.update(prompts={"index": 0}), PROMPT_FILE, '"prompts" must be a list'),
        (lambda d: d["prompts"].append("case"), PROMPT_FILE, "prompts[2] must be an object"),
        (lambda d: d["prompts"][1].update(index="1"), PROMPT_FILE, '"index" must be a non-negative integer'),
        (lambda d: d["prompts"][1].update(index=True), PROMPT_FILE, '"index" must be a non-negative integer'),
        (lambda d: d["prompts"][1].update(index=0), PROMPT_FILE, '"index" 0 is repeated'),
        (lambda d: d["prompts"][0].update(edits=[["couch", "red couch"]]), PROMPT_FILE, "has 1 edits but is in"),
        (lambda d: d["prompts"][0].update(edits=[["couch"], ["floor", "x"]]), PROMPT_FILE, "[source, target] pairs"),
        (lambda d: d["prompts"][0].update(edits=[["couch", ""], ["floor", "x"]]), PROMPT_FILE, "non-empty"),
        (lambda d: d["prompts"][0].update(edits="couch"), PROMPT_FILE, '"edits" must be a list'),
        (lambda d: d["prompts"][0].update(editing_types="color"), PROMPT_FILE, '"editing_types" must be a list'),
        (
            lambda d: d["prompts"][1]["edits"][0].__setitem__(0, "sofa"),
            PROMPT_FILE,
            "no mask for source object 'sofa'",
        ),
    ],
)
def test_malformed_prompt_files_are_rejected_naming_file_and_problem(tmp_path, change, where, message):
    root = make_bench(tmp_path)
    _edit(root, change)
    with pytest.raises(BenchFormatError) as caught:
        load_bench(root)
    text = str(caught.value)
    assert str(root / where) in text and message in text, text


def test_a_missing_mask_names_the_phrase_and_the_masks_there(tmp_path):
    root = make_bench(tmp_path)
    (root / "masks" / "room" / "floor_mask.png").unlink()
    with pytest.raises(BenchFormatError) as caught:
        load_bench(root)
    text = str(caught.value)
    assert "case index 0: no mask for source object 'floor'" in text
    assert "expected floor_mask.png" in text and "'couch', 'yoga mat'" in text and PROMPT_FILE in text


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda root: (root / "images" / "room.jpg").unlink(), "its image 'room' is not in"),
        (lambda root: shutil.rmtree(root / "masks" / "room"), "no mask folder"),
        (lambda root: shutil.rmtree(root / "masks"), "it has no masks/ folder"),
        (lambda root: shutil.rmtree(root / "prompts" / "2"), "no prompts/<n>/<type>/<image>_prompts.json files"),
        (lambda root: (root / "prompts" / "two").mkdir(), "must be object counts"),
        (lambda root: shutil.rmtree(root), "benchmark folder not found"),
        (lambda root: Image.new("RGB", (4, 4)).save(root / "images" / "room.png"), "two images named 'room'"),
    ],
)
def test_missing_or_broken_parts_of_the_tree_are_rejected(tmp_path, damage, message):
    root = make_bench(tmp_path / "bench")
    damage(root)
    with pytest.raises(BenchFormatError, match=message):
        load_bench(root)


def test_unreadable_or_mismatched_masks_are_reported_when_loaded(tmp_path):
    root = make_bench(tmp_path)
    (case,) = load_bench(root).select(limit=1)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(case.mask_paths[1])
    with pytest.raises(BenchFormatError, match="different sizes"):
        load_gt_masks(case)
    assert load_gt_masks(case, size=(8, 8)).shape == (2, 8, 8)
    case.mask_paths[0].write_bytes(b"not a png")
    with pytest.raises(BenchFormatError, match="cannot read the mask"):
        load_gt_masks(case)
