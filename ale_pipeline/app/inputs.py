"""What the page's controls hold, turned into an edit's inputs: the phrase pairs, the drawn masks, the settings.

Every user mistake is an :class:`AppInputError` whose message names the row, layer or control and says what to
do; the page shows it as a message. The checks that the command line and the pipeline already make (the 77-token
limit, empty masks, setting ranges) are not restated here: :meth:`ALEEditPipeline.check_inputs` makes them for
the page as well.

Imports no torch and no gradio: numpy and PIL only, so these functions are cheap to test and to call.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..commands import CommandError
from ..config import DEFAULT_MASK_THRESHOLD, DEFAULTS, SELF_REPLACE_PRESETS, EditConfig

#: How the masks of an edit are given: painted on the editor's layers, uploaded as files, or found.
MASK_SOURCES = ("draw", "upload", "attention", "dino-sam")
#: The edit-type control's choice for "no preset: use the injection fraction".
NO_PRESET = "none (use the injection fraction)"
EDIT_TYPES = (NO_PRESET, *SELF_REPLACE_PRESETS)


class AppInputError(CommandError):
    """A mistake in what the user entered on the page; the message is shown in the page as it is."""


def layer_name(k: int) -> str:
    """The editor layer that holds the mask of edit ``k`` (0-based): ``"object 1"``, ``"object 2"``, ...

    The page's layers are named once, when it opens: Gradio's editor starts afresh (dropping the picture and
    the paint) whenever its layer list is changed, so the names cannot follow the phrases as they are typed.
    """
    return f"object {k + 1}"


def edits_from_rows(sources: Sequence[str | None], targets: Sequence[str | None], count: int) -> list[tuple[str, str]]:
    """The first ``count`` rows as stripped ``(source, target)`` phrase pairs.

    Rows are numbered from 1 in messages, as on the page. A row with no source phrase, or no target phrase, is
    an :class:`AppInputError` naming it.
    """
    if count is None or isinstance(count, bool) or not float(count).is_integer() or count < 1:
        raise AppInputError(f"the number of objects must be a whole number of at least 1, got {count!r}")
    count = int(count)
    if count > min(len(sources), len(targets)):
        raise AppInputError(
            f"the page has {min(len(sources), len(targets))} edit rows, but {count} objects were asked for"
        )
    pairs = []
    for k in range(count):
        source, target = (sources[k] or "").strip(), (targets[k] or "").strip()
        if not source:
            raise AppInputError(
                f"edit {k + 1} has no source phrase: type what the object is now (e.g. 'cup'), then what it becomes"
            )
        if not target:
            raise AppInputError(f"edit {k + 1} ({source!r}) has no target phrase: type what {source!r} becomes")
        pairs.append((source, target))
    return pairs


def layer_alpha(layer: np.ndarray | Image.Image, name: str) -> np.ndarray:
    """Where an editor layer is painted: ``(H, W)`` bool, True where its alpha is above 0.

    The colour of the paint does not matter, only where it is: a layer is a transparent sheet over the picture,
    and a stroke of any colour (or a pasted picture) makes its pixels opaque. A layer without an alpha channel
    is an :class:`AppInputError` (nothing tells painted from unpainted there).
    """
    if isinstance(layer, Image.Image):
        if "A" not in layer.getbands():
            raise AppInputError(f"mask layer {name!r} has no transparency: paint the object on a transparent layer")
        return np.asarray(layer.getchannel("A")) > 0
    array = np.asarray(layer)
    if array.ndim != 3 or array.shape[2] not in (2, 4):
        raise AppInputError(
            f"mask layer {name!r} has no transparency (shape {array.shape}): paint the object on a transparent layer"
        )
    return array[..., -1] > 0


def drawn_masks(layers: Sequence | None, labels: Sequence[str]) -> list[np.ndarray]:
    """One ``(H, W)`` bool mask per edit from the editor's layers: layer ``k`` (``"object k+1"``) is edit ``k``'s.

    Args:
        layers: the editor's layers in order, RGBA arrays or PIL images.
        labels: the edits' source phrases, for the messages.

    A missing or unpainted layer for an edit is an :class:`AppInputError` naming the edit and the layer. Layers
    after the last edit's may stay empty (the page opens with a few); one painted there is an error, since the
    paint belongs to no edit.
    """
    layers = list(layers or [])
    masks = []
    for k, label in enumerate(labels):
        name = layer_name(k)
        if k >= len(layers):
            raise AppInputError(
                f"no mask for edit {k + 1} ({label!r}): the image editor has {len(layers)} layer(s); add a layer "
                f"(the layer menu's +) and paint {label!r} on it"
            )
        inside = layer_alpha(layers[k], name)
        if not inside.any():
            raise AppInputError(
                f"the mask of edit {k + 1} ({label!r}) is empty: paint over the object on the layer {name!r} "
                "(or choose another mask source)"
            )
        masks.append(inside)
    for k in range(len(labels), len(layers)):
        if layer_alpha(layers[k], layer_name(k)).any():
            raise AppInputError(
                f"the layer {layer_name(k)!r} is painted but there are only {len(labels)} edits: add edit {k + 1}, "
                "or clear that layer"
            )
    return masks


def uploaded_masks(files: Sequence | None, labels: Sequence[str]) -> list[str]:
    """The uploaded mask files (white inside, as ``ale-edit --mask`` reads them), one per edit in order."""
    paths = [f if isinstance(f, str) else getattr(f, "name", f) for f in (files or [])]
    if len(paths) != len(labels):
        raise AppInputError(
            f"got {len(paths)} mask file(s) for {len(labels)} edits: upload one mask per edit, in the edits' order"
        )
    return [str(p) for p in paths]


@dataclass(frozen=True)
class Controls:
    """The settings controls' values as the page holds them (numbers may arrive as floats)."""

    steps: float = DEFAULTS.num_inference_steps
    seed: float = DEFAULTS.seed
    target_guidance: float = DEFAULTS.target_guidance_scale
    source_guidance: float = DEFAULTS.source_guidance_scale
    edit_type: str = NO_PRESET
    injection: float = 0.5
    dilation: float = DEFAULTS.dilation
    mask_value: float = DEFAULTS.mask_value
    longest_side: float = DEFAULTS.longest_side
    backend: str = DEFAULTS.attention_backend
    use_ore: bool = DEFAULTS.use_ore
    use_rgb_cam: bool = DEFAULTS.use_rgb_cam
    use_background_blend: bool = DEFAULTS.use_background_blend
    use_qk_injection: bool = DEFAULTS.use_qk_injection
    mask_threshold: float = DEFAULT_MASK_THRESHOLD

    def config(self) -> EditConfig:
        """The :class:`EditConfig` these controls say; a value of the wrong kind is an :class:`AppInputError`.

        Ranges are left to the pipeline's own checks (``check_settings``), which name the setting.
        """
        preset = None if self.edit_type in (None, "", NO_PRESET) else self.edit_type
        if preset is not None and preset not in SELF_REPLACE_PRESETS:
            raise AppInputError(f"edit type must be one of {', '.join(EDIT_TYPES)}, got {preset!r}")
        return EditConfig(
            num_inference_steps=_whole("steps", self.steps),
            seed=_whole("seed", self.seed),
            target_guidance_scale=_number("target guidance", self.target_guidance),
            source_guidance_scale=_number("source guidance", self.source_guidance),
            # A preset wins over the fraction, as `ale-edit --edit-type` does without --self-replace-steps.
            self_replace_steps=None if preset is not None else _number("injection fraction", self.injection),
            edit_type=preset,
            dilation=_number("dilation", self.dilation),
            mask_value=_number("mask value", self.mask_value),
            longest_side=_whole("longest side", self.longest_side) or None,
            attention_backend=str(self.backend),
            use_ore=bool(self.use_ore),
            use_rgb_cam=bool(self.use_rgb_cam),
            use_background_blend=bool(self.use_background_blend),
            use_qk_injection=bool(self.use_qk_injection),
        )

    def threshold(self) -> float:
        """The attention masks' cut, in (0, 1]."""
        value = _number("mask threshold", self.mask_threshold)
        if not 0.0 < value <= 1.0:
            raise AppInputError(f"mask threshold must lie in (0, 1], got {value:g}")
        return value


def _number(name: str, value: object) -> float:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise AppInputError(f"{name} must be a number, got {value!r}")
    return float(value)


def _whole(name: str, value: object) -> int:
    number = _number(name, value)
    if not number.is_integer():
        raise AppInputError(f"{name} must be a whole number, got {number:g}")
    return int(number)
