"""The app's work, without the page: masks from the chosen source, the edit with a step-by-step progress report,
and the pictures the page shows (masks tinted over the image, one attention heatmap per target phrase).

One :class:`EditSession` holds the process's pipeline (and, once asked for, Grounding DINO + SAM). The page runs
one edit at a time (Gradio's queue, concurrency 1), so nothing here is shared between two running edits.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from ..commands import CommandError, is_load_error, one_line
from .inputs import AppInputError, Controls, drawn_masks, uploaded_masks

if TYPE_CHECKING:
    from ..automask import AutoMasks
    from ..pipeline import ALEEditPipeline

#: ``report(done, total, what)``: how a long step says how far it is (the page drives its progress bar with it).
Progress = Callable[[int, int, str], None]
#: ``load(device) -> masker``, ``masker(image, phrases) -> AutoMasks``: how the session gets Grounding DINO + SAM.
MaskerLoader = Callable[[str], Callable[[Image.Image, list[str]], "AutoMasks"]]
#: The mistakes the pipeline's own checks report (``check_inputs``, ``prepare_masks``), shown as messages.
USER_ERRORS = (ValueError, TypeError, FileNotFoundError)


def _no_progress(done: int, total: int, what: str) -> None:
    pass


@dataclass
class EditRequest:
    """One edit as the page asks for it.

    Attributes:
        image: the picture to edit (RGB or RGBA; transparency is dropped).
        edits: ``(source, target)`` phrase pairs, one per object.
        mask_source: one of :data:`~ale_pipeline.app.inputs.MASK_SOURCES`.
        layers: the editor's mask layers (RGBA), for ``draw``.
        files: mask files, for ``upload``.
        controls: the settings.
    """

    image: Image.Image | None
    edits: list[tuple[str, str]]
    mask_source: str = "draw"
    layers: Sequence = ()
    files: Sequence = ()
    controls: Controls = field(default_factory=Controls)


@dataclass
class EditResult:
    """What the page shows after an edit: ``source`` (at the edit's size) and ``edited``, ``masks`` (the dilated
    masks used, tinted over the source), ``attention`` (one ``(heatmap, target phrase)`` per object), the edit's
    time in seconds and the PNG written for download."""

    source: Image.Image
    edited: Image.Image
    masks: Image.Image
    attention: list[tuple[Image.Image, str]]
    seconds: float
    path: Path
    found: Image.Image | None = None


def load_grounded_sam(device: str):
    """Grounding DINO + SAM with the published defaults (see :func:`ale_pipeline.cli.load_grounded_sam`)."""
    from ..automask import grounded_sam
    from ..cli import load_grounded_sam as load

    return load(grounded_sam.DEFAULT_DETECTOR, grounded_sam.DEFAULT_SEGMENTER, device, grounded_sam.BOX_THRESHOLD,
                grounded_sam.TEXT_THRESHOLD)  # fmt: skip


class EditSession:
    """The pipeline behind the page, and what it does for one request.

    Args:
        pipe: the loaded :class:`ALEEditPipeline`.
        out_dir: where edited images are written for download (a fresh temporary folder by default); each edit
            gets a new file, nothing is overwritten.
        load_masker: how Grounding DINO + SAM are loaded for ``dino-sam`` (tests pass their own).
    """

    def __init__(
        self, pipe: ALEEditPipeline, out_dir: str | Path | None = None, load_masker: MaskerLoader = load_grounded_sam
    ):
        self.pipe = pipe
        self.out_dir = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="ale-app-"))
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._load_masker = load_masker
        self._masker = None
        self._count = 0

    @property
    def max_steps(self) -> int:
        return self.pipe.original_inference_steps

    @property
    def device(self) -> str:
        return str(self.pipe.unet.device)

    # -- masks ------------------------------------------------------------------------------------------------

    def masks(self, request: EditRequest, progress: Progress = _no_progress) -> list | AutoMasks:
        """The request's masks: the painted layers' alphas, the uploaded files, or those found for the source
        phrases. Raises :class:`AppInputError` with the message to show."""
        image = _rgb(request.image)
        labels = [source for source, _ in request.edits]
        if request.mask_source == "draw":
            return drawn_masks(request.layers, labels)
        if request.mask_source == "upload":
            return uploaded_masks(request.files, labels)
        if request.mask_source == "attention":
            controls = request.controls
            config, threshold = controls.config(), controls.threshold()
            steps = config.num_inference_steps
            progress(0, steps, "finding masks from attention")
            with _user_errors():
                return self.pipe.attention_masks(
                    image, labels, threshold=threshold, config=config, callback_on_step_end_tensor_inputs=[],
                    callback_on_step_end=_step_reporter(progress, steps, "finding masks from attention"),
                )  # fmt: skip
        if request.mask_source == "dino-sam":
            progress(0, 1, "finding masks with Grounding DINO + SAM")
            masker = self._grounded_sam()
            with _user_errors():  # NoDetectionError names the phrases nothing was found for
                return masker(image, labels)
        raise AppInputError(
            f"mask source must be one of draw, upload, attention, dino-sam, got {request.mask_source!r}"
        )

    def _grounded_sam(self):
        if self._masker is None:
            from ..automask import ModelLoadError

            try:
                self._masker = self._load_masker(self.device)
            except Exception as err:
                if not isinstance(err, ModelLoadError) and not is_load_error(err):
                    raise
                raise AppInputError(
                    f"dino-sam is not available here: {one_line(err, limit=300)}. Draw the masks, upload them, or use "
                    "attention (no extra model)"
                ) from None
        return self._masker

    def preview(self, request: EditRequest, progress: Progress = _no_progress) -> tuple[Image.Image, list | AutoMasks]:
        """The masks the edit would use, checked as the edit checks them, and a picture of them (undilated, tinted
        over the image at the edit's size). Pass the masks on to :meth:`edit` to edit with exactly these."""
        image = _rgb(request.image)
        config = request.controls.config()
        with _user_errors():  # settings, phrases and the 77-token limit, before any model work
            self.pipe.check_inputs(image, request.edits, "attention", config=config)
        masks = self.masks(request, progress)
        with _user_errors():
            self.pipe.check_inputs(image, request.edits, masks, config=config)
            prepared = self._prepare(image, request.edits, masks, config)
        return _overlay(prepared_source(image, config), prepared.raw), masks

    # -- the edit ---------------------------------------------------------------------------------------------

    def edit(self, request: EditRequest, progress: Progress = _no_progress, masks=None) -> EditResult:
        """Run the edit; ``progress`` hears of every sampling step. Raises :class:`AppInputError` for a mistake.

        ``masks``: what :meth:`preview` returned for this request (else they are taken or found now)."""
        image = _rgb(request.image)
        config = request.controls.config()
        if masks is None:
            with _user_errors():  # settings, phrases and the 77-token limit, before any model work
                self.pipe.check_inputs(image, request.edits, "attention", config=config)
            masks = self.masks(request, progress)
        found = masks if not isinstance(masks, list) else None
        steps = config.num_inference_steps
        progress(0, steps, "editing")
        start = time.perf_counter()
        with _user_errors():
            result = self.pipe(
                image, request.edits, masks, config=config, return_masks=True, return_attention_maps=True,
                callback_on_step_end=_step_reporter(progress, steps, "editing"),
                callback_on_step_end_tensor_inputs=[],
            )  # fmt: skip
        seconds = time.perf_counter() - start
        edited = result.images[0]
        source = prepared_source(image, config)
        targets = [target for _, target in request.edits]
        return EditResult(
            source=source,
            edited=edited,
            masks=_overlay(source, result.masks.dilated, outline=False),
            attention=attention_pictures(result.attention_maps, targets, edited),
            seconds=seconds,
            path=self._save(edited),
            found=_overlay(source, result.masks.raw) if found is not None else None,
        )

    def _prepare(self, image: Image.Image, edits, masks, config):
        from ..automask import AutoMasks
        from ..masks import prepare_masks
        from ..pipeline import edit_size

        height, width = edit_size(image.width, image.height, config.longest_side)
        labels = [source for source, _ in edits]
        stack = masks.masks if isinstance(masks, AutoMasks) else masks
        return prepare_masks(stack, (height, width), dilation=config.dilation, labels=labels)

    def _save(self, edited: Image.Image) -> Path:
        """A new PNG in :attr:`out_dir` (``edited-0001.png``, ...), never one written before."""
        while True:
            self._count += 1
            path = self.out_dir / f"edited-{self._count:04d}.png"
            if not path.exists():
                break
        edited.save(path)
        return path


def prepared_source(image: Image.Image, config) -> Image.Image:
    """``image`` at the size the edit runs at (``config.longest_side``, multiples of 8)."""
    from ..pipeline import edit_size

    height, width = edit_size(image.width, image.height, config.longest_side)
    return image.resize((width, height), Image.BICUBIC)


def attention_pictures(maps, phrases: Sequence[str], edited: Image.Image) -> list[tuple[Image.Image, str]]:
    """One heatmap per phrase over the darkened edit: ``maps`` ``(N, H, W)`` in [0, 1] at the edit's size."""
    from ..drawing import heatmap

    if maps is None:
        return []
    values = maps.detach().float().cpu().numpy() if hasattr(maps, "detach") else np.asarray(maps)
    return [(heatmap(m, background=edited), p) for m, p in zip(values, phrases, strict=True)]


def _overlay(image: Image.Image, masks, outline: bool = True) -> Image.Image:
    from ..drawing import overlay_masks

    return overlay_masks(image, masks, outline=outline)


def _rgb(image) -> Image.Image:
    if image is None:
        raise AppInputError("no image: upload a picture (or click an example) first")
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    if not isinstance(image, Image.Image):
        raise AppInputError(f"the image must be a picture, got {type(image).__name__}")
    return image.convert("RGB")


def _step_reporter(progress: Progress, steps: int, what: str):
    def on_step_end(pipe, step: int, timestep: int, tensors: dict) -> None:
        progress(step + 1, steps, what)

    return on_step_end


class _user_errors:
    """Turns the pipeline's checks (``ValueError``, ``TypeError``, ``FileNotFoundError``) and command errors into
    :class:`AppInputError`: the message the CLI would print, shown in the page."""

    def __enter__(self):
        return self

    def __exit__(self, kind, err, tb):
        if err is None or isinstance(err, AppInputError):
            return False
        if isinstance(err, USER_ERRORS) or isinstance(err, CommandError):
            raise AppInputError(one_line(err)) from None
        return False
