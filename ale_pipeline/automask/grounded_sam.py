"""Text-prompted object masks: Grounding DINO boxes for each source phrase, SAM masks inside them (ALE §3.2).

The published code (docs/method.md 3.2) prompts Grounding DINO with ``"couch. floor."``, keeps boxes over the
box threshold 0.45 whose label (tokens over the text threshold 0.4) is **exactly** a source phrase, runs SAM on
them and merges same-label masks. Exact label equality drops phrases DINO shortens or joins ("bell pepper" for
"red bell pepper", "couch floor" for a box that lit up both phrases), and a phrase with no detection crashes or
shifts every later mask (docs/method.md 8.1-8.3). Here:

- a label is matched to the phrase it is most similar to (normalised words, containment, difflib ratio), see
  :func:`label_similarity`; where two phrases are equally similar, the detection's own per-phrase scores (the
  highest token probability inside each phrase's span of the prompt) decide;
- every detection of a phrase is kept and their SAM masks are unioned;
- a phrase with no detection is a :class:`NoDetectionError` that names it and says what to do.

Models load through transformers' auto classes, so any Grounding DINO checkpoint and any of its SAM family
(``SamModel``; ``Sam2Model`` and others that take ``input_boxes`` alike) work, by hub id or local folder.
"""

from __future__ import annotations

import difflib
import inspect
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import is_load_error, one_line
from ..hub import hub_reachable
from .result import AutoMasks

DEFAULT_DETECTOR = "IDEA-Research/grounding-dino-base"
#: SAM ViT-H in transformers' format. The published code uses SAM 2.1-L (not a transformers checkpoint there);
#: ``facebook/sam2.1-hiera-large`` in transformers' format may be passed instead.
DEFAULT_SEGMENTER = "facebook/sam-vit-huge"
#: The published thresholds (docs/method.md 3.2).
BOX_THRESHOLD = 0.45
TEXT_THRESHOLD = 0.4
#: A label must be at least this similar to a phrase to count as a detection of it.
MIN_SIMILARITY = 0.6
#: Two phrases whose similarity to a label differs by less than this are a tie.
TIE_MARGIN = 0.05

_SPECIAL = re.compile(r"\[(?:cls|sep|pad|unk|mask)\]|<\|?[a-z_]+\|?>|</?s>", re.IGNORECASE)
_ARTICLES = {"a", "an", "the"}


class ModelLoadError(OSError):
    """A detector or segmenter could not be found or fetched; the message names which and says why."""


class NoDetectionError(ValueError):
    """Some source phrases got no detection; ``phrases`` lists them."""

    def __init__(self, phrases: Sequence[str], box_threshold: float, text_threshold: float):
        self.phrases = tuple(phrases)
        names = ", ".join(repr(p) for p in self.phrases)
        super().__init__(
            f"Grounding DINO found no {names} in the image (box threshold {box_threshold:g}, text threshold "
            f"{text_threshold:g}): lower the box threshold (--box-threshold), reword the phrase, or pass a mask for "
            "it (--mask)"
        )


def _singular(word: str) -> str:
    """A crude English singular so "couches"/"couch" and "spoons"/"spoon" compare equal (both sides get it)."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("ches", "shes", "xes", "sses", "zes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def normalize_phrase(text: str) -> tuple[str, ...]:
    """Lower-case words of ``text`` without special tokens, punctuation, articles or plural ``s``.

    ``"The couches . [SEP]"`` gives ``("couch",)``; ``"crimson-colored couch"`` gives
    ``("crimson", "colored", "couch")``.
    """
    text = _SPECIAL.sub(" ", text.lower()).replace("##", "")
    words = re.findall(r"[a-z0-9]+", text)
    return tuple(_singular(w) for w in words if w not in _ARTICLES)


def label_similarity(label: str, phrase: str) -> float:
    """How much a detector's ``label`` reads as ``phrase``, in [0, 1] (1: the same words).

    The best of: the words' F1 overlap; ``0.5 + 0.5 * F1`` when one side's words all occur in the other
    (the detector dropped an adjective, "pepper" for "red bell pepper", or joined two phrases); and difflib's
    character ratio of the normalised strings (sub-word and spelling differences).
    """
    words_l, words_p = normalize_phrase(label), normalize_phrase(phrase)
    if not words_l or not words_p:
        return 0.0
    if words_l == words_p:
        return 1.0
    set_l, set_p = set(words_l), set(words_p)
    common = len(set_l & set_p)
    f1 = 2 * common / (len(set_l) + len(set_p))
    contained = 0.5 + 0.5 * f1 if common and (set_l <= set_p or set_p <= set_l) else 0.0
    ratio = difflib.SequenceMatcher(None, " ".join(words_l), " ".join(words_p)).ratio()
    return max(f1, contained, ratio)


def match_detections(
    phrases: Sequence[str],
    labels: Sequence[str],
    phrase_scores: torch.Tensor | np.ndarray | None = None,
    *,
    min_similarity: float = MIN_SIMILARITY,
    text_threshold: float = TEXT_THRESHOLD,
) -> list[list[int]]:
    """Which detections belong to which phrase.

    Args:
        phrases: the ``N`` source phrases.
        labels: the ``D`` detections' labels (Grounding DINO's text labels).
        phrase_scores: optional ``(D, N)``: each detection's score for each phrase (its highest token probability
            in the phrase's span). Decides ties between equally similar phrases, and labels that match no phrase
            by string (e.g. empty), where the best phrase scores at least ``text_threshold``.
        min_similarity: the least :func:`label_similarity` that counts as a match.

    Returns:
        ``N`` lists of detection indices (ascending); a detection goes to at most one phrase, and may go to none.
    """
    groups: list[list[int]] = [[] for _ in phrases]
    if phrase_scores is not None:
        phrase_scores = torch.as_tensor(np.asarray(phrase_scores), dtype=torch.float32)
        if tuple(phrase_scores.shape) != (len(labels), len(phrases)):
            raise ValueError(
                f"phrase_scores must be (detections, phrases) = {(len(labels), len(phrases))}, "
                f"got {tuple(phrase_scores.shape)}"
            )
    for d, label in enumerate(labels):
        similarity = [label_similarity(label, p) for p in phrases]
        best = max(similarity, default=0.0)
        candidates = [k for k, s in enumerate(similarity) if s >= min_similarity and best - s < TIE_MARGIN]
        if len(candidates) == 1:
            groups[candidates[0]].append(d)
            continue
        if phrase_scores is None:
            continue  # unmatched, or a tie nothing can break: better no mask than the wrong object's
        # Ties go to the tied phrase the detector scored highest; a label that reads as no phrase goes to the
        # phrase the detector scored highest, if that score clears the text threshold.
        pool = candidates or range(len(phrases))
        k = max(pool, key=lambda i: float(phrase_scores[d, i]))
        if candidates or float(phrase_scores[d, k]) >= text_threshold:
            groups[k].append(d)
    return groups


def detection_prompt(phrases: Sequence[str]) -> tuple[str, list[tuple[int, int]]]:
    """Grounding DINO's text, ``"couch. floor."`` as published (lower case), and each phrase's character span."""
    text, spans = "", []
    for phrase in phrases:
        clean = " ".join(phrase.lower().split())
        if text:
            text += " "
        spans.append((len(text), len(text) + len(clean)))
        text += clean + "."
    return text, spans


def _phrase_token_masks(offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]) -> torch.Tensor:
    """``(N, T)`` bool: which tokens (by their character ``offsets``) fall inside each phrase's span."""
    out = torch.zeros(len(spans), len(offsets), dtype=torch.bool)
    for k, (lo, hi) in enumerate(spans):
        for t, (a, b) in enumerate(offsets):
            out[k, t] = b > a and a >= lo and b <= hi
    return out


@dataclass
class Detections:
    """Grounding DINO's kept boxes for one image: ``boxes`` ``(D, 4)`` xyxy pixels, ``scores`` ``(D,)``,
    ``labels`` (``D`` strings) and ``phrase_scores`` ``(D, N)``."""

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: list[str]
    phrase_scores: torch.Tensor


class GroundedSAM:
    """Grounding DINO + SAM, loaded once, finding one mask per phrase.

    Args:
        detector, detector_processor: a zero-shot detection model (``GroundingDinoForObjectDetection``) and its
            processor.
        segmenter, segmenter_processor: a SAM-family model taking ``input_boxes`` and its processor.
        box_threshold, text_threshold: Grounding DINO's post-processing thresholds (published 0.45 / 0.4).
    """

    def __init__(
        self,
        detector,
        detector_processor,
        segmenter,
        segmenter_processor,
        box_threshold: float = BOX_THRESHOLD,
        text_threshold: float = TEXT_THRESHOLD,
    ):
        for name, value in (("box_threshold", box_threshold), ("text_threshold", text_threshold)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {value!r}")
        self.detector, self.detector_processor = detector.eval(), detector_processor
        self.segmenter, self.segmenter_processor = segmenter.eval(), segmenter_processor
        self.box_threshold, self.text_threshold = box_threshold, text_threshold

    @classmethod
    def from_pretrained(
        cls,
        detector: str = DEFAULT_DETECTOR,
        segmenter: str = DEFAULT_SEGMENTER,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        **thresholds,
    ) -> GroundedSAM:
        """Load both models by hub id or local folder (transformers' auto classes).

        Raises:
            ModelLoadError: a model cannot be found or fetched (offline, a wrong id, a folder without a model);
                the message names the detector or segmenter.
        """
        from transformers import AutoModelForMaskGeneration, AutoModelForZeroShotObjectDetection, AutoProcessor
        from transformers.utils import logging as transformers_logging

        level = transformers_logging.get_verbosity()
        bars = transformers_logging.is_progress_bar_enabled()
        transformers_logging.set_verbosity_error()  # offline, the hub's retries print several lines first
        transformers_logging.disable_progress_bar()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                det, det_proc = _load("detector", detector, AutoModelForZeroShotObjectDetection, AutoProcessor)
                seg, seg_proc = _load("segmenter", segmenter, AutoModelForMaskGeneration, AutoProcessor)
        finally:
            transformers_logging.set_verbosity(level)
            if bars:
                transformers_logging.enable_progress_bar()
        det, seg = det.to(device), seg.to(device, dtype)
        # Grounding DINO's deformable attention stays in float32: its half-precision path is fragile on CPU.
        return cls(det, det_proc, seg, seg_proc, **thresholds)

    # ------------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def detect(self, image: Image.Image, phrases: Sequence[str]) -> Detections:
        """Grounding DINO's boxes over ``box_threshold`` for the prompt of ``phrases``, at the image's size."""
        text, spans = detection_prompt(phrases)
        processor = self.detector_processor
        inputs = processor(images=image, text=text, return_tensors="pt")
        device = self.detector.device
        inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        outputs = self.detector(**inputs)
        post_process = processor.post_process_grounded_object_detection
        # transformers < 4.51 calls the box threshold ``box_threshold``.
        box_key = "threshold" if "threshold" in inspect.signature(post_process).parameters else "box_threshold"
        results = post_process(
            outputs,
            inputs["input_ids"],
            text_threshold=self.text_threshold,
            target_sizes=[(image.height, image.width)],
            **{box_key: self.box_threshold},
        )[0]
        # The post-processing keeps queries whose best token beats the box threshold, in query order; the same
        # selection here gives each kept box its per-phrase scores.
        probs = outputs.logits[0].float().sigmoid()  # (queries, max_text_len)
        keep = probs.max(-1).values > self.box_threshold
        offsets = processor.tokenizer(text, return_offsets_mapping=True)["offset_mapping"]
        tokens = _phrase_token_masks(offsets, spans).to(probs.device)  # (N, T)
        kept = probs[keep][:, : tokens.shape[1]]  # (D, T)
        phrase_scores = (kept[:, None, :] * tokens[None, :, : kept.shape[1]]).amax(-1)  # (D, N), 0 where no token
        # "text_labels" where transformers has it ("labels" warns that it will become ids), else "labels".
        labels = results["text_labels"] if "text_labels" in results else results["labels"]
        return Detections(
            boxes=results["boxes"].float().cpu(),
            scores=results["scores"].float().cpu(),
            labels=[str(label) for label in labels],
            phrase_scores=phrase_scores.cpu(),
        )

    @torch.no_grad()
    def segment(self, image: Image.Image, boxes: torch.Tensor) -> torch.Tensor:
        """SAM's single mask per box (``multimask_output=False`` as published): ``(D, H, W)`` bool at the image's
        size for ``boxes`` ``(D, 4)`` xyxy pixels."""
        processor = self.segmenter_processor
        inputs = processor(images=image, input_boxes=[boxes.tolist()], return_tensors="pt")
        model_inputs = {
            k: v.to(self.segmenter.device, self.segmenter.dtype if v.is_floating_point() else v.dtype)
            for k, v in inputs.items()
            if isinstance(v, torch.Tensor) and k not in ("original_sizes", "reshaped_input_sizes")
        }
        outputs = self.segmenter(**model_inputs, multimask_output=False)
        sizes = [inputs["original_sizes"]]
        if "reshaped_input_sizes" in inputs:  # SAM; SAM 2's post-processing takes only the original sizes
            sizes.append(inputs["reshaped_input_sizes"])
        masks = processor.post_process_masks(outputs.pred_masks.float().cpu(), *[s.cpu() for s in sizes])[0]
        masks = torch.as_tensor(masks)
        return masks.reshape(len(boxes), -1, *masks.shape[-2:])[:, 0].bool()

    def __call__(self, image: Image.Image, phrases: Sequence[str]) -> AutoMasks:
        """One mask per phrase: its detections' SAM masks, unioned. Raises :class:`NoDetectionError`."""
        if not phrases:
            raise ValueError("phrases is empty: give one source phrase per object")
        image = image.convert("RGB")
        found = self.detect(image, phrases)
        groups = match_detections(phrases, found.labels, found.phrase_scores, text_threshold=self.text_threshold)
        missing = [p for p, g in zip(phrases, groups, strict=True) if not g]
        if missing:
            raise NoDetectionError(missing, self.box_threshold, self.text_threshold)
        used = sorted({d for g in groups for d in g})
        per_box = dict(zip(used, self.segment(image, found.boxes[used]), strict=True))
        masks = torch.stack([torch.stack([per_box[d] for d in g]).any(0) for g in groups])
        return AutoMasks(
            masks=masks,
            phrases=tuple(phrases),
            method="dino-sam",
            details=dict(
                boxes=[found.boxes[g] for g in groups],
                scores=[found.scores[g] for g in groups],
                labels=[[found.labels[d] for d in g] for g in groups],
            ),
        )


def _load(role: str, name: str, model_class, processor_class):
    """``(model, processor)`` from ``name``; load failures become :class:`ModelLoadError` naming the ``role``."""
    try:
        source = _local_or_id(name)
        # A hub id whose hub does not answer comes from the local cache alone: else huggingface_hub retries with
        # back-off for about 25 s before the same error.
        options = {} if Path(source).is_dir() or hub_reachable() else {"local_files_only": True}
        return model_class.from_pretrained(source, **options), processor_class.from_pretrained(source, **options)
    except Exception as err:
        if not is_load_error(err):
            raise
        raise ModelLoadError(f"cannot load the {role} {name!r}: {one_line(err)}") from err


def _local_or_id(name: str) -> str:
    """A path-like name must be a folder (the hub would call it an invalid repo id, hiding the mistake)."""
    if name.startswith(("/", "./", "../", "~")) or Path(name).expanduser().is_dir():
        path = Path(name).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"no such folder: {str(path)!r}")
        return str(path)
    return name


def grounded_sam_masks(
    image: Image.Image,
    phrases: Sequence[str],
    detector: str = DEFAULT_DETECTOR,
    segmenter: str = DEFAULT_SEGMENTER,
    **kwargs,
) -> AutoMasks:
    """Load Grounding DINO and SAM and find one mask per phrase (see :class:`GroundedSAM`)."""
    return GroundedSAM.from_pretrained(detector, segmenter, **kwargs)(image, phrases)
