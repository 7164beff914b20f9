"""``ale-edit``: one ALE edit from the command line.

    ale-edit room.png --edit "couch=>crimson-colored couch" --mask couch.png \\
                      --edit "floor=>floor made of marble" --mask floor.png --out edited.png

``--edit`` and ``--mask`` repeat and pair up in order: the k-th mask is the object of the k-th edit's source
phrase. ``--auto-mask`` finds the masks instead: ``dino-sam`` with Grounding DINO boxes and SAM masks for each
source phrase (``--detector``, ``--segmenter``, ``--box-threshold``, ``--text-threshold``), ``attention`` from
the editing model's own cross-attention in a source-only pass (``--mask-threshold``); no extra model.

Everything the user can get wrong (edit syntax, files, masks, an existing ``--out`` or ``--save-maps`` file, an
unavailable device, a model that cannot be loaded, a phrase nothing was detected for, a missing ``edit`` extra)
is checked before the slow work where possible, and reported as one ``ale-edit: error: ...`` line on stderr
with exit status 2, never as a traceback. ``--help`` answers before torch or diffusers is imported.

Tests and embedders call :func:`main` with ``argv`` and a ``load_pipeline(model, device, dtype)`` (and a
``load_masker(detector, segmenter, device, box_threshold, text_threshold)``) of their own, so no weights are
fetched.
"""

from __future__ import annotations

import argparse
import inspect
import math
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .commands import (
    CommandError,
    Parser,
    PipelineLoader,
    add_model_arguments,
    call_loader,
    is_load_error,
    load_pipeline,
    one_line,
    parse,
    refuse_overwrite,
    require_extra,
    resolve_device,
    resolve_dtype,
    run_command,
)
from .config import DEFAULT_MASK_THRESHOLD, DEFAULTS, SELF_REPLACE_PRESETS, XL_DEFAULTS, EditConfig

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from .automask import AutoMasks, GroundedSAM
    from .pipeline import ALEEditPipeline

PROG = "ale-edit"
#: ``ale_pipeline.automask.METHODS``, restated because importing it loads torch (a test keeps them equal).
MASK_METHODS = ("dino-sam", "attention")
#: ``load_masker(detector, segmenter, device, box_threshold, text_threshold) -> masker``, where
#: ``masker(image, phrases) -> AutoMasks``: how :func:`main` gets Grounding DINO + SAM for ``--auto-mask dino-sam``.
MaskerLoader = Callable[[str, str, str, float, float], Callable[["Image.Image", list[str]], "AutoMasks"]]
#: Kept for callers of the old name: a user mistake of ``ale-edit``.
CliError = CommandError


def build_parser() -> argparse.ArgumentParser:
    """The ``ale-edit`` parser; every default comes from :mod:`ale_pipeline.config` (nothing heavy is imported)."""
    presets = ", ".join(f"{name} {value:g}" for name, value in SELF_REPLACE_PRESETS.items())
    parser = Parser(
        prog=PROG,
        description="Edit several objects of an image at once with ALE (attribute-leakage-free editing): "
        "each object's new attributes stay inside its own mask.",
        epilog=f'example: {PROG} room.png --edit "couch=>crimson-colored couch" --mask couch.png '
        '--edit "floor=>floor made of marble" --mask floor.png --out edited.png. '
        "Existing files (--out, the files --save-maps writes) are never overwritten without --force.",
    )
    parser.add_argument("image", help="the image to edit (any format PIL reads)")
    parser.add_argument(
        "--edit",
        action="append",
        required=True,
        metavar="SOURCE=>TARGET",
        help='one object\'s edit, e.g. "couch=>crimson-colored couch"; repeat for each object',
    )
    parser.add_argument(
        "--mask",
        action="append",
        metavar="FILE",
        help="the object's mask (white inside, any size), paired with the --edit of the same position; repeat "
        "(or use --auto-mask)",
    )
    parser.add_argument(
        "--auto-mask",
        choices=MASK_METHODS,
        help="find the masks instead of --mask: dino-sam (Grounding DINO boxes + SAM masks for each source phrase) "
        "or attention (the editing model's cross-attention on the source prompt; no extra model)",
    )
    # The dino-sam defaults live in ale_pipeline.automask.grounded_sam, which imports torch: they are filled in
    # after parsing, so that --help stays light.
    parser.add_argument(
        "--detector",
        help="--auto-mask dino-sam: Grounding DINO hub id or local folder (default: the published Grounding DINO base)",
    )
    parser.add_argument(
        "--segmenter", help="--auto-mask dino-sam: SAM-family hub id or local folder (default: SAM ViT-H)"
    )
    for flag, what in (("--box-threshold", "box"), ("--text-threshold", "text")):
        parser.add_argument(
            flag, type=float, metavar="F", help=f"--auto-mask dino-sam: Grounding DINO's {what} threshold "
            "(default as published)"
        )  # fmt: skip
    parser.add_argument(
        "--mask-threshold",
        type=_threshold_value,
        default=DEFAULT_MASK_THRESHOLD,
        metavar="F|otsu",
        help="--auto-mask attention: the cut on each phrase's attention map scaled to [0, 1] "
        f"(default {DEFAULT_MASK_THRESHOLD}), or otsu",
    )
    parser.add_argument("--out", required=True, help="where to write the edited image; the extension picks the format")
    parser.add_argument(
        "--force", action="store_true", help="overwrite --out and the files of --save-maps if they exist"
    )
    add_model_arguments(parser, seed_help=f"random seed (default {DEFAULTS.seed}, as published)")
    parser.add_argument(
        "--edit-type",
        choices=tuple(SELF_REPLACE_PRESETS),
        help=f"picks the preset --self-replace-steps ({presets})",
    )
    parser.add_argument(
        "--self-replace-steps",
        type=float,
        metavar="F",
        help="fraction of the steps with self-attention Q/K injection, in [0, 1] (overrides --edit-type)",
    )
    parser.add_argument(
        "--longest-side",
        type=int,
        default=DEFAULTS.longest_side,
        metavar="PX",
        help="resize so the longest side is PX (aspect kept, multiples of 8; "
        f"default {DEFAULTS.longest_side}, {XL_DEFAULTS.longest_side} for an SDXL model); 0 keeps the size",
    )
    parser.add_argument(
        "--mask-value",
        type=float,
        default=DEFAULTS.mask_value,
        metavar="V",
        help=f"RGB-CAM's additive token mask (default {DEFAULTS.mask_value:g} as published; -inf masks exactly)",
    )
    parser.add_argument(
        "--dilation",
        type=float,
        default=DEFAULTS.dilation,
        metavar="F",
        help=f"mask dilation radius as a fraction of the image height (default {DEFAULTS.dilation})",
    )
    parser.add_argument(
        "--save-maps",
        metavar="DIR",
        help="also write the dilated masks, an overlay of them on the image, the attention maps and, with "
        "--auto-mask, the masks found overlaid on the image into DIR (created if missing; existing files are "
        "kept unless --force)",
    )
    return parser


def main(
    argv: Sequence[str] | None = None,
    load_pipeline: PipelineLoader | None = None,
    load_masker: MaskerLoader | None = None,
) -> int:
    """Run ``ale-edit`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status.

    ``load_pipeline(model, device, dtype)`` replaces :func:`load_pretrained`, ``load_masker`` replaces
    :func:`load_grounded_sam` (tests pass tiny models).
    """
    return run_command(
        PROG, lambda: _run(argv, load_pipeline or load_pretrained, load_masker or load_grounded_sam), extra="edit"
    )


def load_pretrained(model: str, device: str, dtype: torch.dtype) -> ALEEditPipeline:
    """``ALEEditPipeline.from_pretrained(model)`` in ``dtype`` on ``device``, a load failure as one line: see
    :func:`ale_pipeline.commands.load_pipeline`."""
    return load_pipeline(model, device, dtype, prog=PROG)


def load_grounded_sam(
    detector: str, segmenter: str, device: str, box_threshold: float, text_threshold: float
) -> GroundedSAM:
    """Grounding DINO and SAM by hub id or local folder (see :meth:`GroundedSAM.from_pretrained`)."""
    from .automask import GroundedSAM

    return GroundedSAM.from_pretrained(
        detector, segmenter, device=device, box_threshold=box_threshold, text_threshold=text_threshold
    )


# ----------------------------------------------------------------------------------------------------------


def _threshold_value(text: str) -> float | str:
    if text.lower() == "otsu":
        return "otsu"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1] or otsu, got {text!r}") from None


def _run(argv: Sequence[str] | None, loader: PipelineLoader, masker_loader: MaskerLoader) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # argparse takes "-inf" for an option, not a value: join it to its flag so "--mask-value -inf" works.
    for k in range(len(argv) - 1):
        if argv[k] == "--mask-value" and argv[k + 1].lower() in ("-inf", "-infinity"):
            argv[k : k + 2] = [f"--mask-value={argv[k + 1]}"]
            break
    args = parse(build_parser(), argv)
    if isinstance(args, int):
        return args
    require_extra("edit")
    _fill_dino_sam_defaults(args)
    from .masks import prepare_masks
    from .pipeline import edit_size

    edits = [_parse_edit(k, e) for k, e in enumerate(args.edit)]
    args.mask = args.mask or []
    if args.auto_mask is not None and args.mask:
        raise CommandError(f"give either --mask or --auto-mask {args.auto_mask}, not both")
    if args.auto_mask is None and len(args.edit) != len(args.mask):
        raise CommandError(
            f"got {len(args.edit)} --edit but {len(args.mask)} --mask: give one --mask per --edit, in the same order "
            "(or --auto-mask dino-sam|attention to find them)"
        )
    image_path, mask_paths = Path(args.image), [Path(m) for m in args.mask]
    labels = [src for src, _ in edits]
    _check_numbers(args)

    # Read the image and masks now: a wrong file should fail in a second, not after the model has loaded.
    size = _image_size(image_path)
    longest_side = args.longest_side or None
    height, width = edit_size(size[0], size[1], longest_side)
    if mask_paths:
        try:
            prepare_masks(mask_paths, (height, width), dilation=args.dilation, labels=labels, expected=len(edits))
        except (ValueError, FileNotFoundError, TypeError) as err:
            raise CommandError(str(err)) from None
    out, fmt = _check_out(args, image_path, mask_paths)
    map_dir = _check_map_dir(args.save_maps, labels, [image_path, *mask_paths, out], args.force)

    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)

    found = None
    if args.auto_mask == "dino-sam":
        # Before the diffusion model: a missing detector or an undetected phrase should fail fast.
        found = _detect(args, masker_loader, image_path, labels, device)

    pipe = call_loader(loader, args.model, device, dtype)
    defaults = getattr(pipe, "defaults", None)
    if isinstance(defaults, EditConfig) and not _given(argv, "--longest-side"):
        # The model's own default size: 768 px for SD1.5, 1024 px for SDXL (its training size).
        longest_side = defaults.longest_side

    call = dict(
        num_inference_steps=args.steps,
        self_replace_steps=args.self_replace_steps,
        edit_type=args.edit_type,
        mask_value=args.mask_value,
        dilation=args.dilation,
        longest_side=longest_side,
        seed=args.seed,
        attention_backend=args.backend,
        return_masks=True,
    )
    if map_dir is not None and _accepts(pipe, "return_attention_maps"):
        call["return_attention_maps"] = True  # only pipelines that can produce them are asked
    start = time.perf_counter()
    try:
        if args.auto_mask == "attention":
            found = pipe.attention_masks(
                str(image_path), labels, threshold=args.mask_threshold, num_inference_steps=args.steps,
                longest_side=longest_side, seed=args.seed, attention_backend=args.backend,
            )  # fmt: skip
        masks = found if found is not None else [str(m) for m in mask_paths]
        result = pipe(str(image_path), edits, masks, **call)
    except (ValueError, FileNotFoundError, TypeError) as err:
        raise CommandError(str(err)) from None
    seconds = time.perf_counter() - start

    edited = result.images[0]
    _save_image(edited, out, fmt)
    note = f"; masks by {args.auto_mask}" if found is not None else ""
    if map_dir is not None:
        written = _save_maps(map_dir, image_path, labels, result, found)
        note += f"; {written} maps in {map_dir}"
    print(f"{PROG}: wrote {out} ({edited.width}x{edited.height}) in {seconds:.1f} s{note}")
    return 0


def _given(argv: Sequence[str], flag: str) -> bool:
    """Whether ``flag`` is on the command line (as ``flag VALUE`` or ``flag=VALUE``)."""
    return any(arg == flag or arg.startswith(f"{flag}=") for arg in argv)


def _fill_dino_sam_defaults(args: argparse.Namespace) -> None:
    """The published Grounding DINO + SAM settings for the options not given (imported only now: torch)."""
    if args.auto_mask != "dino-sam" and None not in (args.box_threshold, args.text_threshold):
        return
    from .automask import grounded_sam

    for name, default in (("detector", grounded_sam.DEFAULT_DETECTOR), ("segmenter", grounded_sam.DEFAULT_SEGMENTER),
                          ("box_threshold", grounded_sam.BOX_THRESHOLD),
                          ("text_threshold", grounded_sam.TEXT_THRESHOLD)):  # fmt: skip
        if getattr(args, name) is None:
            setattr(args, name, default)


def _detect(args: argparse.Namespace, masker_loader: MaskerLoader, image: Path, labels: list[str], device: str):
    """The masks Grounding DINO + SAM find for ``labels``; a :class:`CommandError` if they cannot load."""
    from .automask import ModelLoadError
    from .pipeline import load_image

    try:
        masker = masker_loader(args.detector, args.segmenter, device, args.box_threshold, args.text_threshold)
    except Exception as err:
        if not isinstance(err, ModelLoadError) and not is_load_error(err):
            raise
        raise CommandError(
            f"{one_line(err, limit=300)}; pass --detector and --segmenter with local folders, or --mask"
        ) from None
    try:
        return masker(load_image(image), labels)
    except ValueError as err:  # NoDetectionError names the phrases and what to do
        raise CommandError(str(err)) from None


def _parse_edit(k: int, edit: str) -> tuple[str, str]:
    """``"source=>target"`` as a stripped pair; both phrases must be non-empty."""
    if "=>" not in edit:
        raise CommandError(f'--edit {k + 1} must be "SOURCE=>TARGET", e.g. "couch=>red couch", got {edit!r}')
    source, target = (p.strip() for p in edit.split("=>", 1))
    if not source or not target:
        side = "source" if not source else "target"
        raise CommandError(f"--edit {k + 1} {edit!r} has an empty {side} phrase")
    return source, target


def _check_numbers(args: argparse.Namespace) -> None:
    if args.steps < 1:
        raise CommandError(f"--steps must be at least 1, got {args.steps}")
    if args.longest_side < 0 or 0 < args.longest_side < 8:
        raise CommandError(f"--longest-side must be 0 (keep the size) or at least 8 pixels, got {args.longest_side}")
    if args.self_replace_steps is not None and not 0.0 <= args.self_replace_steps <= 1.0:
        raise CommandError(f"--self-replace-steps must lie in [0, 1], got {args.self_replace_steps:g}")
    if not 0.0 <= args.dilation < 0.5:
        raise CommandError(f"--dilation must lie in [0, 0.5), got {args.dilation:g}")
    if math.isnan(args.mask_value) or args.mask_value > 0:
        raise CommandError(f"--mask-value must be <= 0 (it masks tokens out), got {args.mask_value:g}")
    for flag, value in (("--box-threshold", args.box_threshold), ("--text-threshold", args.text_threshold)):
        if not 0.0 <= value <= 1.0:
            raise CommandError(f"{flag} must lie in [0, 1], got {value:g}")
    if args.mask_threshold != "otsu" and not 0.0 < args.mask_threshold <= 1.0:
        raise CommandError(f"--mask-threshold must lie in (0, 1] or be otsu, got {args.mask_threshold:g}")


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file: through symlinks and hard links when both exist, else by resolved path."""
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def _check_out(args: argparse.Namespace, image: Path, masks: list[Path]) -> tuple[Path, str]:
    """``--out`` as a path and its PIL format; refuses to write over an input, or over anything without --force."""
    out = Path(args.out)
    for name, path in [("the input image", image)] + [(f"--mask {k + 1}", m) for k, m in enumerate(masks)]:
        if _same_file(out, path):
            # Even --force: losing the input would make the edit impossible to redo.
            raise CommandError(f"--out {str(out)!r} is {name}; refusing to overwrite an input, choose another --out")
    from PIL import Image

    fmt = Image.registered_extensions().get(out.suffix.lower())
    if fmt is None or fmt not in Image.SAVE:
        raise CommandError(f"--out {str(out)!r}: cannot tell an image format from its extension (use .png, .jpg, ...)")
    if not out.parent.is_dir():
        raise CommandError(f"--out {str(out)!r}: the folder {str(out.parent)!r} does not exist")
    if out.is_dir():
        raise CommandError(f"--out {str(out)!r} is a folder; give a file name")
    if out.exists() and not args.force:
        raise CommandError(f"--out {str(out)!r} already exists; pass --force to overwrite it")
    return out, fmt


def _slug(phrase: str) -> str:
    """A file-name-safe version of a phrase: ``"crimson-colored couch"`` -> ``"crimson-colored-couch"``."""
    slug = re.sub(r"[^a-z0-9]+", "-", phrase.lower()).strip("-")[:40].strip("-")
    return slug or "object"


def _map_names(labels: list[str]) -> list[str]:
    names = [f"mask_{k}_{_slug(label)}.png" for k, label in enumerate(labels)]
    names += [f"attention_{k}_{_slug(label)}.png" for k, label in enumerate(labels)]
    names += [f"found_{k}_{_slug(label)}.png" for k, label in enumerate(labels)]
    return [*names, "masks_overlay.png", "found_masks_overlay.png"]


def _check_map_dir(value: str | None, labels: list[str], protected: list[Path], force: bool) -> Path | None:
    """``--save-maps`` as a folder; refuses to write over an input or ``--out``, or over anything without --force."""
    if value is None:
        return None
    folder = Path(value)
    if folder.exists() and not folder.is_dir():
        raise CommandError(f"--save-maps {value!r} exists and is not a folder")
    names = _map_names(labels)
    for name in names:
        if any(_same_file(folder / name, path) for path in protected):
            raise CommandError(f"--save-maps would write {str(folder / name)!r}, which is an input or --out")
    refuse_overwrite([folder / name for name in names], force, "--save-maps")
    return folder


def _image_size(path: Path) -> tuple[int, int]:
    """PIL's ``(width, height)`` of the image file, which must exist and decode."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise CommandError(f"image not found: {str(path)!r}")
    try:
        with Image.open(path) as image:
            image.load()
            return image.size
    except (UnidentifiedImageError, OSError) as err:
        raise CommandError(f"cannot read {str(path)!r} as an image ({one_line(err)})") from None


def _accepts(pipe, name: str) -> bool:
    try:
        return name in inspect.signature(pipe.__call__).parameters
    except (TypeError, ValueError):
        return False


def _save_image(image: Image.Image, out: Path, fmt: str) -> None:
    """Write through a temporary file in the same folder, so a failed save never leaves a half-written --out."""
    if fmt == "JPEG" and image.mode != "RGB":
        image = image.convert("RGB")
    tmp = out.with_name(f".{out.name}.ale-edit-tmp")
    try:
        image.save(tmp, format=fmt)
        os.replace(tmp, out)
    except (OSError, ValueError) as err:
        raise CommandError(f"cannot write {str(out)!r}: {one_line(err)}") from None
    finally:
        tmp.unlink(missing_ok=True)


def _save_maps(folder: Path, image_path: Path, labels: list[str], result, found: AutoMasks | None = None) -> int:
    """The dilated masks, their overlay on the image, if the pipeline returned them the per-object attention
    maps, and the masks ``found`` by ``--auto-mask`` overlaid on the image (one picture per object and one of all),
    as PNGs in ``folder``. Returns how many files were written."""
    import numpy as np
    from PIL import Image

    from .drawing import colour, heatmap, overlay_masks
    from .pipeline import load_image

    masks = result.masks
    if masks is None:
        return 0
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CommandError(f"cannot create --save-maps folder {str(folder)!r}: {one_line(err)}") from None
    height, width = masks.size
    dilated = masks.dilated.cpu().numpy()
    written = 0
    for k, label in enumerate(labels):
        Image.fromarray(dilated[k].astype(np.uint8) * 255).save(folder / f"mask_{k}_{_slug(label)}.png")
        written += 1

    # At the edit's resolution (where the masks live), without outlines: the dilated masks are what RGB-CAM sees.
    source = load_image(image_path)
    overlay_masks(source, dilated, outline=False).save(folder / "masks_overlay.png")
    written += 1

    attention = getattr(result, "attention_maps", None)
    if attention is not None:
        for k, label in enumerate(labels[: len(attention)]):
            heat = heatmap(attention[k])
            if heat.size != (width, height):
                heat = heat.resize((width, height), Image.BILINEAR)
            heat.save(folder / f"attention_{k}_{_slug(label)}.png")
            written += 1

    if found is not None:
        # The masks as found (undilated), at the edit's resolution, each in its object's colour.
        raw = masks.raw.cpu()
        for k, label in enumerate(labels):
            overlay_masks(source, raw[k : k + 1], colours=[colour(k)]).save(folder / f"found_{k}_{_slug(label)}.png")
            written += 1
        overlay_masks(source, raw).save(folder / "found_masks_overlay.png")
        written += 1
    return written


if __name__ == "__main__":
    raise SystemExit(main())
