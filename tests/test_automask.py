"""Grounding DINO + SAM masks: phrase matching and merging as pure functions, then the whole detection-to-mask path
on tiny random-weight models built from configs (steered detections), loading from folders, and the pipeline
taking automatic masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ale_pipeline.automask import (
    AutoMasks,
    GroundedSAM,
    ModelLoadError,
    NoDetectionError,
    label_similarity,
    match_detections,
    normalize_phrase,
    overlay_masks,
)
from ale_pipeline.automask.grounded_sam import detection_prompt
from tests.tiny_grounded_sam import steer_detector, tiny_models
from tests.tiny_models import tiny_ale_pipeline

HEIGHT, WIDTH = 48, 64
LOW = -10.0  # a token logit no threshold lets through (sigmoid 4.5e-5)


def image() -> Image.Image:
    return Image.fromarray((np.random.default_rng(0).random((HEIGHT, WIDTH, 3)) * 255).astype(np.uint8))


def masker(**thresholds) -> GroundedSAM:
    return GroundedSAM(*tiny_models(), **thresholds)


def steered(token_logits: dict[int, float], rows: int) -> torch.Tensor:
    """``(rows, 8)`` logits, LOW except ``{(row * 100 + token): logit}``."""
    logits = torch.full((rows, 8), LOW)
    for key, value in token_logits.items():
        logits[key // 100, key % 100] = value
    return logits


# Boxes (relative cx, cy, w, h): two couches side by side, the floor below.
BOXES = torch.tensor([[0.25, 0.3, 0.2, 0.2], [0.7, 0.3, 0.2, 0.2], [0.5, 0.8, 0.9, 0.3]])


# --- matching, as pure functions -------------------------------------------------------------------------------


def test_normalize_phrase_drops_case_articles_punctuation_special_tokens_and_plurals():
    assert normalize_phrase("The Couches . [SEP]") == ("couch",)
    assert normalize_phrase("crimson-colored couch") == ("crimson", "colored", "couch")
    assert normalize_phrase("a cup of glass") == ("cup", "of", "glass")  # "glass" keeps its s
    assert normalize_phrase(". .") == ()


@pytest.mark.parametrize(
    "label, phrase, matches",
    [
        ("couch", "couch", True),
        ("couches", "couch", True),
        ("the couch", "couch", True),
        ("couch", "red couch", True),  # the detector dropped the adjective
        ("bell pepper", "red bell pepper", True),
        ("spon", "spoon", True),  # a sub-word decoding slip
        ("floor", "couch", False),
        ("cup", "saucer", False),
        ("", "couch", False),
        (". [SEP]", "couch", False),
    ],
)
def test_label_similarity(label, phrase, matches):
    assert (label_similarity(label, phrase) >= 0.6) == matches
    assert label_similarity(phrase, phrase) == 1.0


def test_two_detections_of_one_phrase_and_differing_labels_are_grouped_by_phrase():
    phrases = ["red couch", "floor", "lamp"]
    labels = ["couch", "floor", "the red couches", "cup"]  # 'cup' matches nothing; 'lamp' gets nothing
    assert match_detections(phrases, labels) == [[0, 2], [1], []]


def test_ties_are_left_alone_without_scores_and_broken_by_the_detector_scores():
    phrases = ["yellow bell pepper", "red bell pepper"]
    labels = ["bell pepper", "bell pepper", "yellow bell pepper red bell pepper"]
    assert match_detections(phrases, labels) == [[], []]  # better no mask than the other object's
    scores = torch.tensor([[0.9, 0.5], [0.3, 0.8], [0.6, 0.7]])
    assert match_detections(phrases, labels, scores) == [[0], [1, 2]]


def test_labels_that_read_as_no_phrase_follow_the_detector_scores_over_the_text_threshold():
    scores = torch.tensor([[0.9, 0.1], [0.2, 0.3]])
    assert match_detections(["couch", "floor"], ["", ". ."], scores, text_threshold=0.4) == [[0], []]
    with pytest.raises(ValueError, match=r"phrase_scores must be \(detections, phrases\)"):
        match_detections(["couch", "floor"], ["couch"], torch.zeros(1, 3))


def test_detection_prompt_is_the_published_text_with_each_phrase_span():
    text, spans = detection_prompt(["Red  Couch", "floor"])
    assert text == "red couch. floor."
    assert [text[a:b] for a, b in spans] == ["red couch", "floor"]


# --- the whole path on tiny random-weight Grounding DINO and SAM ----------------------------------------------


def test_two_detections_of_one_phrase_become_the_union_of_their_sam_masks():
    det, *_ = tiny_models()
    # "couch. floor." tokenizes to [CLS] couch . floor . [SEP]: couch is token 1, floor token 3.
    with steer_detector(det, steered({1: 5.0, 101: 3.0, 203: 4.0}, 3), BOXES):
        found = masker()(image(), ["couch", "floor"])
    assert isinstance(found, AutoMasks) and found.method == "dino-sam" and found.phrases == ("couch", "floor")
    assert found.masks.shape == (2, HEIGHT, WIDTH) and found.masks.dtype == torch.bool
    assert [len(b) for b in found.details["boxes"]] == [2, 1]
    assert found.details["labels"] == [["couch", "couch"], ["floor"]]
    torch.testing.assert_close(found.details["boxes"][0][0], torch.tensor([9.6, 9.6, 22.4, 19.2]))  # pixels, xyxy
    per_box = masker().segment(image(), torch.cat([found.details["boxes"][0], found.details["boxes"][1]]))
    assert torch.equal(found.masks[0], per_box[0] | per_box[1])
    assert torch.equal(found.masks[1], per_box[2])


def test_a_label_that_differs_from_its_phrase_still_finds_it():
    det, *_ = tiny_models()
    # "red couch. floor." is [CLS] red couch . floor . [SEP]: only "couch" lights up, so the label is "couch".
    with steer_detector(det, steered({2: 5.0, 104: 4.0}, 2), BOXES[1:]):
        found = masker()(image(), ["red couch", "floor"])
    assert found.details["labels"] == [["couch"], ["floor"]]
    assert found.masks.shape == (2, HEIGHT, WIDTH)


def test_a_phrase_with_no_detection_is_an_error_naming_it():
    det, *_ = tiny_models()
    # The second box is kept (its "." token clears the box threshold) but reads as no phrase: no floor.
    with steer_detector(det, steered({1: 5.0, 104: 3.0}, 2), BOXES[:2]), pytest.raises(NoDetectionError) as err:
        masker()(image(), ["couch", "floor"])
    assert err.value.phrases == ("floor",)
    message = str(err.value)
    assert "'floor'" in message and "'couch'" not in message
    assert "--box-threshold" in message and "--mask" in message and "0.45" in message


def test_nothing_over_the_box_threshold_names_every_phrase():
    det, *_ = tiny_models()
    with steer_detector(det, steered({}, 1), BOXES[:1]), pytest.raises(NoDetectionError) as err:
        masker()(image(), ["couch", "floor"])
    assert err.value.phrases == ("couch", "floor")


def test_unsteered_random_detector_runs_the_real_post_processing():
    """No steering: the random model's own logits, every query kept (thresholds 0) and matched by its scores."""
    found = masker(box_threshold=0.0, text_threshold=0.0)(image(), ["couch", "floor"])
    assert found.masks.shape == (2, HEIGHT, WIDTH)
    assert sum(len(b) for b in found.details["boxes"]) == tiny_models()[0].config.num_queries


def test_models_load_from_local_folders_and_missing_ones_are_named(tmp_path):
    det, det_proc, sam, sam_proc = tiny_models()
    det.save_pretrained(tmp_path / "dino")
    det_proc.save_pretrained(tmp_path / "dino")
    sam.save_pretrained(tmp_path / "sam")
    sam_proc.save_pretrained(tmp_path / "sam")
    loaded = GroundedSAM.from_pretrained(str(tmp_path / "dino"), str(tmp_path / "sam"), box_threshold=0.0)
    assert loaded.box_threshold == 0.0 and loaded.text_threshold == 0.4
    theirs = loaded.detect(image(), ["couch", "floor"])
    ours = masker(box_threshold=0.0).detect(image(), ["couch", "floor"])
    torch.testing.assert_close(theirs.boxes, ours.boxes)

    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match=r"cannot load the detector .*empty"):
        GroundedSAM.from_pretrained(str(tmp_path / "empty"), str(tmp_path / "sam"))
    with pytest.raises(ModelLoadError, match=r"cannot load the segmenter .*no such folder"):
        GroundedSAM.from_pretrained(str(tmp_path / "dino"), str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="box_threshold must lie in"):
        masker(box_threshold=1.5)


def test_hub_ids_come_from_the_cache_alone_when_the_hub_does_not_answer(monkeypatch, tmp_path):
    """Offline, a hub id is read from the local cache only (no back-off retries); a folder never probes."""
    from ale_pipeline.automask import grounded_sam

    seen = []

    class Recorder:
        @classmethod
        def from_pretrained(cls, source, **options):
            seen.append((source, options))
            return cls()

    reachable = []
    monkeypatch.setattr(grounded_sam, "hub_reachable", lambda: bool(reachable))
    grounded_sam._load("detector", "org/dino", Recorder, Recorder)
    assert seen == [("org/dino", {"local_files_only": True})] * 2
    seen.clear()
    reachable.append(True)
    grounded_sam._load("detector", "org/dino", Recorder, Recorder)
    assert seen == [("org/dino", {})] * 2
    seen.clear()

    def probe():
        raise AssertionError("a local folder must not probe the hub")

    monkeypatch.setattr(grounded_sam, "hub_reachable", probe)
    grounded_sam._load("segmenter", str(tmp_path), Recorder, Recorder)
    assert seen == [(str(tmp_path), {})] * 2


def test_overlay_tints_only_the_masks_and_outlines_them():
    masks = torch.zeros(2, HEIGHT, WIDTH, dtype=torch.bool)
    masks[0, 10:20, 10:30] = True
    masks[1, 30:40, 5:60] = True
    picture = np.asarray(overlay_masks(image(), masks)).astype(int)
    changed = (picture != np.asarray(image()).astype(int)).any(-1)
    assert picture.shape == (HEIGHT, WIDTH, 3)
    assert torch.equal(torch.from_numpy(changed), masks.any(0))
    assert tuple(picture[10, 15]) == (230, 25, 75)  # the first object's outline, in its colour
    half = overlay_masks(image().resize((32, 24)), masks)  # the image follows the masks' size
    assert half.size == (WIDTH, HEIGHT)


# --- the pipeline takes automatic masks -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pipe():
    pipeline = tiny_ale_pipeline()
    return pipeline


def test_the_pipeline_takes_grounded_sam_masks_like_drawn_ones(pipe):
    det, *_ = tiny_models()
    with steer_detector(det, steered({1: 5.0, 101: 3.0, 203: 4.0}, 3), BOXES):
        found = masker()(image(), ["couch", "floor"])
    edits = ["couch=>red couch", "floor=>marble floor"]
    args = dict(longest_side=None, num_inference_steps=2, output_type="pt", return_masks=True)
    # The random SAM's masks may cover the whole image, which leaves no background: keep them inside boxes.
    boxes = torch.zeros_like(found.masks)
    boxes[0, 8:20, 8:52], boxes[1, 30:46, 4:60] = True, True
    found = AutoMasks(found.masks & boxes, found.phrases, found.method)
    assert found.masks.flatten(1).any(1).all()
    auto = pipe(image(), edits, found, **args)
    drawn = pipe(image(), edits, list(found.masks.numpy()), **args)
    assert torch.equal(auto.masks.raw, found.masks) and torch.equal(auto.images, drawn.images)
    with pytest.raises(ValueError, match=r"found for the phrases \['couch', 'floor'\].*source phrases are"):
        pipe(image(), ["floor=>marble floor", "couch=>red couch"], found, **args)
    with pytest.raises(ValueError, match='masks="dino-sam" needs the detector and segmenter'):
        pipe(image(), edits, "dino-sam", **args)
