"""Object masks without drawing them.

- ``dino-sam``: :class:`GroundedSAM`, Grounding DINO boxes for each source phrase and SAM masks inside them
  (the published method's masks, with robust label matching, merged detections and clear misses);
- ``attention``: :func:`attention_masks`, the editing model's own cross-attention in a source-only pass,
  thresholded (no extra model);
- :func:`overlay_masks`: a picture of the masks found, tinted over the image.

Both give :class:`AutoMasks`, which ``ALEEditPipeline(image, edits, masks=...)`` takes in place of drawn masks.
"""

from .attention import DEFAULT_RESOLUTIONS, DEFAULT_THRESHOLD, attention_masks, otsu_threshold, stretch, threshold_maps
from .grounded_sam import (
    BOX_THRESHOLD,
    DEFAULT_DETECTOR,
    DEFAULT_SEGMENTER,
    TEXT_THRESHOLD,
    GroundedSAM,
    ModelLoadError,
    NoDetectionError,
    grounded_sam_masks,
    label_similarity,
    match_detections,
    normalize_phrase,
)
from .overlay import colour, overlay_masks
from .result import AutoMasks

METHODS = ("dino-sam", "attention")

__all__ = [
    "BOX_THRESHOLD",
    "DEFAULT_DETECTOR",
    "DEFAULT_RESOLUTIONS",
    "DEFAULT_SEGMENTER",
    "DEFAULT_THRESHOLD",
    "METHODS",
    "TEXT_THRESHOLD",
    "AutoMasks",
    "GroundedSAM",
    "ModelLoadError",
    "NoDetectionError",
    "attention_masks",
    "colour",
    "grounded_sam_masks",
    "label_similarity",
    "match_detections",
    "normalize_phrase",
    "otsu_threshold",
    "overlay_masks",
    "stretch",
    "threshold_maps",
]
