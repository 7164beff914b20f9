"""``ale-edit``: one ALE edit from the command line.

    ale-edit room.png --edit "couch=>crimson-colored couch" --mask couch.png \\
                      --edit "floor=>floor made of marble" --mask floor.png --out edited.png

``--edit`` and ``--mask`` repeat and pair up in order: the k-th mask is the object of the k-th edit's source
phrase. ``--auto-mask`` finds the masks instead: ``dino-sam`` with Grounding DINO boxes and SAM masks for each
source phrase (``--detector``, ``--segmenter``, ``--box-threshold``, ``--text-threshold``), ``attention`` from
the editing model's own cross-attention in a source-only pass (``--mask-threshold``); no extra model.

Everything the user can get wrong (edit syntax, files, masks, an existing ``--out``, an unavailable device, a
model that cannot be loaded, a phrase nothing was detected for) is checked before the slow work where possible,
and reported as one ``ale-edit: error: ...`` line on stderr with exit status 2, never as a traceback.

Tests and embedders call :func:`main` with ``argv`` and a ``load_pipeline(model, device, dtype)`` (and a
``load_masker(detector, segmenter, device, box_threshold, text_threshold)``) of their own, so no weights are
fetched.
"""

from __future__ import annotations

import argparse
import inspect
import os
import re
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ale_kernels import BACKENDS

from .automask import DEFAULT_DETECTOR, DEFAULT_SEGMENTER, METHODS, AutoMasks, GroundedSAM, ModelLoadError
from .automask.attention import DEFAULT_THRESHOLD
from .automask.grounded_sam import BOX_THRESHOLD, TEXT_THRESHOLD
from .automask.overlay import colour as _colour
from .automask.overlay import overlay_masks
from .masks import prepare_masks
from .pipeline import DEFAULT_MODEL, ALEEditPipeline, edit_size, load_image
from .sampling import SELF_REPLACE_PRESETS

PROG = "ale-edit"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
#: The pipeline's default dilation, passed explicitly so that the masks checked up front are the masks it uses.
DEFAULT_DILATION = 0.04
#: How opaque each object's tint is in ``masks_overlay.png``.
OVERLAY_ALPHA = 0.45
#: ``load_pipeline(model, device, dtype) -> pipeline``: how :func:`main` gets its pipeline.
PipelineLoader = Callable[[str, str, torch.dtype], ALEEditPipeline]
#: ``load_masker(detector, segmenter, device, box_threshold, text_threshold) -> masker``, where
#: ``masker(image, phrases) -> AutoMasks``: how :func:`main` gets Grounding DINO + SAM for ``--auto-mask dino-sam``.
MaskerLoader = Callable[[str, str, str, float, float], Callable[[Image.Image, list[str]], AutoMasks]]


class CliError(Exception):
    """A user mistake: reported as one ``ale-edit: error:`` line with exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse prints usage + message and exits; we want one line and a return
        raise CliError(f"{message} (see {PROG} --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Edit several objects of an image at once with ALE (attribute-leakage-free editing): "
        "each object's new attributes stay inside its own mask.",
        epilog=f'example: {PROG} room.png --edit "couch=>crimson-colored couch" --mask couch.png '
        '--edit "floor=>floor made of marble" --mask floor.png --out edited.png',
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
        choices=METHODS,
        help="find the masks instead of --mask: dino-sam (Grounding DINO boxes + SAM masks for each source phrase) "
        "or attention (the editing model's cross-attention on the source prompt; no extra model)",
    )
    parser.add_argument(
        "--detector",
        default=DEFAULT_DETECTOR,
        help=f"--auto-mask dino-sam: Grounding DINO hub id or local folder (default {DEFAULT_DETECTOR})",
    )
    parser.add_argument(
        "--segmenter",
        default=DEFAULT_SEGMENTER,
        help=f"--auto-mask dino-sam: SAM-family hub id or local folder (default {DEFAULT_SEGMENTER})",
    )
    parser.add_argument(
        "--box-threshold",
        type=float,
        default=BOX_THRESHOLD,
        metavar="F",
        help=f"--auto-mask dino-sam: Grounding DINO's box threshold (default {BOX_THRESHOLD}, as published)",
    )
    parser.add_argument(
        "--text-threshold",
        type=float,
        default=TEXT_THRESHOLD,
        metavar="F",
        help=f"--auto-mask dino-sam: Grounding DINO's text threshold (default {TEXT_THRESHOLD}, as published)",
    )
    parser.add_argument(
        "--mask-threshold",
        type=_threshold_value,
        default=DEFAULT_THRESHOLD,
        metavar="F|otsu",
        help="--auto-mask attention: the cut on each phrase's attention map scaled to [0, 1] "
        f"(default {DEFAULT_THRESHOLD}), or otsu",
    )
    parser.add_argument("--out", required=True, help="where to write the edited image; the extension picks the format")
    parser.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    add_model_arguments(parser, seed_help="random seed (default 42, as published)")
    parser.add_argument(
        "--edit-type",
        choices=tuple(SELF_REPLACE_PRESETS),
        help="picks the preset --self-replace-steps (color 1.0, material 0.6, others 0.5)",
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
        default=768,
        metavar="PX",
        help="resize so the longest side is PX (aspect kept, multiples of 8; default 768); 0 keeps the size",
    )
    parser.add_argument(
        "--mask-value",
        type=float,
        default=-100.0,
        metavar="V",
        help="RGB-CAM's additive token mask (default -100 as published; -inf masks exactly)",
    )
    parser.add_argument(
        "--dilation",
        type=float,
        default=DEFAULT_DILATION,
        metavar="F",
        help=f"mask dilation radius as a fraction of the image height (default {DEFAULT_DILATION})",
    )
    parser.add_argument(
        "--save-maps",
        metavar="DIR",
        help="also write the dilated masks, an overlay of them on the image, the attention maps and, with "
        "--auto-mask, the masks found overlaid on the image into DIR (created if missing)",
    )
    return parser


def add_model_arguments(parser: argparse.ArgumentParser, seed_help: str) -> None:
    """The options every editing command shares: --model, --steps, --seed, --backend, --device, --dtype."""
    parser.add_argument(
        "--model", default=DEFAULT_MODEL, help=f"hub id or local diffusers folder (default {DEFAULT_MODEL})"
    )
    parser.add_argument("--steps", type=int, default=15, help="LCM sampling steps (default 15)")
    parser.add_argument("--seed", type=int, default=42, help=seed_help)
    parser.add_argument("--backend", choices=BACKENDS, default="auto", help="attention backend (default auto)")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available, else cpu")
    parser.add_argument("--dtype", choices=tuple(DTYPES), help="default: float16 on cuda, float32 on cpu")


def main(
    argv: Sequence[str] | None = None,
    load_pipeline: PipelineLoader | None = None,
    load_masker: MaskerLoader | None = None,
) -> int:
    """Run ``ale-edit`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status.

    ``load_pipeline(model, device, dtype)`` replaces :func:`load_pretrained`, ``load_masker`` replaces
    :func:`load_grounded_sam` (tests pass tiny models).
    """
    try:
        return _run(argv, load_pipeline or load_pretrained, load_masker or load_grounded_sam)
    except CliError as err:
        print(f"{PROG}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


def load_pretrained(model: str, device: str, dtype: torch.dtype) -> ALEEditPipeline:
    """``ALEEditPipeline.from_pretrained(model)`` in ``dtype`` on ``device``.

    diffusers' and transformers' warnings are silenced while loading: offline they print several lines
    ("Couldn't connect to the Hub", the ``torch_dtype`` deprecation, "install accelerate") ahead of the error,
    which :func:`main` reports in one line instead.
    """
    if model.startswith(("/", "./", "../", "~")):
        model = str(Path(model).expanduser())
        if not Path(model).is_dir():
            # Otherwise the hub reports a path as an invalid repo id, which hides the actual mistake.
            raise FileNotFoundError(f"no such folder: {model!r}")
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    levels = diffusers_logging.get_verbosity(), transformers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            # ``torch_dtype`` is deprecated in newer diffusers, but ``dtype`` is unknown to the oldest we support.
            warnings.filterwarnings("ignore", message=".*torch_dtype.*deprecated", category=FutureWarning)
            pipe = ALEEditPipeline.from_pretrained(model, torch_dtype=dtype)
    finally:
        diffusers_logging.set_verbosity(levels[0])
        transformers_logging.set_verbosity(levels[1])
    return pipe.to(device)


def load_grounded_sam(
    detector: str, segmenter: str, device: str, box_threshold: float, text_threshold: float
) -> GroundedSAM:
    """Grounding DINO and SAM by hub id or local folder (see :meth:`GroundedSAM.from_pretrained`)."""
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
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # --help: argparse has printed it
        return exit_.code if isinstance(exit_.code, int) else 0

    edits = [_parse_edit(k, e) for k, e in enumerate(args.edit)]
    args.mask = args.mask or []
    if args.auto_mask is not None and args.mask:
        raise CliError(f"give either --mask or --auto-mask {args.auto_mask}, not both")
    if args.auto_mask is None and len(args.edit) != len(args.mask):
        raise CliError(
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
            raise CliError(str(err)) from None
    out, fmt = _check_out(args, image_path, mask_paths)
    map_dir = _check_map_dir(args.save_maps, labels, [image_path, *mask_paths, out])

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise CliError("--device cuda was asked for but torch sees no CUDA device (use --device cpu)")
    dtype = DTYPES[args.dtype or ("float16" if device == "cuda" else "float32")]

    found = None
    if args.auto_mask == "dino-sam":
        # Before the diffusion model: a missing detector or an undetected phrase should fail fast.
        found = _detect(args, masker_loader, image_path, labels, device)
        if found is None:
            return 2

    try:
        pipe = loader(args.model, device, dtype)
    except Exception as err:
        if not _is_load_error(err):
            raise
        print(
            f"{PROG}: cannot load model {args.model!r}: {_one_line(err, limit=240)}; "
            "pass --model with a local diffusers folder",
            file=sys.stderr,
        )
        return 2

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
        raise CliError(str(err)) from None
    seconds = time.perf_counter() - start

    edited = result.images[0]
    _save_image(edited, out, fmt)
    note = f"; masks by {args.auto_mask}" if found is not None else ""
    if map_dir is not None:
        written = _save_maps(map_dir, image_path, labels, result, found)
        note += f"; {written} maps in {map_dir}"
    print(f"{PROG}: wrote {out} ({edited.width}x{edited.height}) in {seconds:.1f} s{note}")
    return 0


def _detect(args: argparse.Namespace, masker_loader: MaskerLoader, image: Path, labels: list[str], device: str):
    """The masks Grounding DINO + SAM find for ``labels``; ``None`` (after printing one line) if they cannot load."""
    try:
        masker = masker_loader(args.detector, args.segmenter, device, args.box_threshold, args.text_threshold)
    except Exception as err:
        if not isinstance(err, ModelLoadError) and not _is_load_error(err):
            raise
        print(
            f"{PROG}: {_one_line(err, limit=300)}; pass --detector and --segmenter with local folders, or --mask",
            file=sys.stderr,
        )
        return None
    try:
        return masker(load_image(image), labels)
    except ValueError as err:  # NoDetectionError names the phrases and what to do
        raise CliError(str(err)) from None


def _parse_edit(k: int, edit: str) -> tuple[str, str]:
    """``"source=>target"`` as a stripped pair; both phrases must be non-empty."""
    if "=>" not in edit:
        raise CliError(f'--edit {k + 1} must be "SOURCE=>TARGET", e.g. "couch=>red couch", got {edit!r}')
    source, target = (p.strip() for p in edit.split("=>", 1))
    if not source or not target:
        side = "source" if not source else "target"
        raise CliError(f"--edit {k + 1} {edit!r} has an empty {side} phrase")
    return source, target


def _check_numbers(args: argparse.Namespace) -> None:
    if args.steps < 1:
        raise CliError(f"--steps must be at least 1, got {args.steps}")
    if args.longest_side < 0 or 0 < args.longest_side < 8:
        raise CliError(f"--longest-side must be 0 (keep the size) or at least 8 pixels, got {args.longest_side}")
    if args.self_replace_steps is not None and not 0.0 <= args.self_replace_steps <= 1.0:
        raise CliError(f"--self-replace-steps must lie in [0, 1], got {args.self_replace_steps:g}")
    if not 0.0 <= args.dilation < 0.5:
        raise CliError(f"--dilation must lie in [0, 0.5), got {args.dilation:g}")
    if np.isnan(args.mask_value) or args.mask_value > 0:
        raise CliError(f"--mask-value must be <= 0 (it masks tokens out), got {args.mask_value:g}")
    for flag, value in (("--box-threshold", args.box_threshold), ("--text-threshold", args.text_threshold)):
        if not 0.0 <= value <= 1.0:
            raise CliError(f"{flag} must lie in [0, 1], got {value:g}")
    if args.mask_threshold != "otsu" and not 0.0 < args.mask_threshold <= 1.0:
        raise CliError(f"--mask-threshold must lie in (0, 1] or be otsu, got {args.mask_threshold:g}")


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
            raise CliError(f"--out {str(out)!r} is {name}; refusing to overwrite an input, choose another --out")
    fmt = Image.registered_extensions().get(out.suffix.lower())
    if fmt is None or fmt not in Image.SAVE:
        raise CliError(f"--out {str(out)!r}: cannot tell an image format from its extension (use .png, .jpg, ...)")
    if not out.parent.is_dir():
        raise CliError(f"--out {str(out)!r}: the folder {str(out.parent)!r} does not exist")
    if out.is_dir():
        raise CliError(f"--out {str(out)!r} is a folder; give a file name")
    if out.exists() and not args.force:
        raise CliError(f"--out {str(out)!r} already exists; pass --force to overwrite it")
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


def _check_map_dir(value: str | None, labels: list[str], protected: list[Path]) -> Path | None:
    if value is None:
        return None
    folder = Path(value)
    if folder.exists() and not folder.is_dir():
        raise CliError(f"--save-maps {value!r} exists and is not a folder")
    for name in _map_names(labels):
        if any(_same_file(folder / name, path) for path in protected):
            raise CliError(f"--save-maps would write {str(folder / name)!r}, which is an input or --out")
    return folder


def _image_size(path: Path) -> tuple[int, int]:
    """PIL's ``(width, height)`` of the image file, which must exist and decode."""
    if not path.is_file():
        raise CliError(f"image not found: {str(path)!r}")
    try:
        with Image.open(path) as image:
            image.load()
            return image.size
    except (UnidentifiedImageError, OSError) as err:
        raise CliError(f"cannot read {str(path)!r} as an image ({_one_line(err)})") from None


def _is_load_error(err: BaseException) -> bool:
    """Whether ``err`` means the model's files could not be found or fetched (a user-fixable situation).

    ``OSError`` covers diffusers' "no such folder/file" errors, the hub's HTTP and not-found errors (all
    ``OSError`` subclasses) and socket errors; ``ValueError`` covers the hub's invalid-repo-id error. HTTP
    client errors that escape unwrapped are recognised by their module.
    """
    if isinstance(err, (OSError, ValueError)):
        return True
    module = type(err).__module__.split(".")[0]
    return module in ("huggingface_hub", "httpx", "httpx2", "requests", "urllib3")


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
        raise CliError(f"cannot write {str(out)!r}: {_one_line(err)}") from None
    finally:
        tmp.unlink(missing_ok=True)


def _heatmap(values: np.ndarray) -> Image.Image:
    """``(H, W)`` values in [0, 1] as an RGB "hot" heatmap: black, red, yellow, white."""
    v = np.clip(np.nan_to_num(values.astype(np.float32)), 0.0, 1.0)
    rgb = np.stack([np.clip(3 * v, 0, 1), np.clip(3 * v - 1, 0, 1), np.clip(3 * v - 2, 0, 1)], axis=-1)
    return Image.fromarray((rgb * 255).round().astype(np.uint8))


def _save_maps(folder: Path, image_path: Path, labels: list[str], result, found: AutoMasks | None = None) -> int:
    """The dilated masks, their overlay on the image, if the pipeline returned them the per-object attention
    maps, and the masks ``found`` by ``--auto-mask`` overlaid on the image (one picture per object and one of all),
    as PNGs in ``folder``. Returns how many files were written."""
    masks = result.masks
    if masks is None:
        return 0
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CliError(f"cannot create --save-maps folder {str(folder)!r}: {_one_line(err)}") from None
    height, width = masks.size
    dilated = masks.dilated.cpu().numpy()
    written = 0
    for k, label in enumerate(labels):
        Image.fromarray(dilated[k].astype(np.uint8) * 255).save(folder / f"mask_{k}_{_slug(label)}.png")
        written += 1

    # Tint each object's dilated mask on the image at the edit's resolution (where the masks live).
    base = np.asarray(load_image(image_path).resize((width, height), Image.BICUBIC), dtype=np.float32)
    overlay = base.copy()
    for k in range(len(labels)):
        tint = np.array(_colour(k), dtype=np.float32)
        overlay[dilated[k]] = (1 - OVERLAY_ALPHA) * overlay[dilated[k]] + OVERLAY_ALPHA * tint
    Image.fromarray(overlay.round().clip(0, 255).astype(np.uint8)).save(folder / "masks_overlay.png")
    written += 1

    attention = getattr(result, "attention_maps", None)
    if attention is not None:
        maps = torch.as_tensor(attention).detach().float().cpu().numpy()
        for k, label in enumerate(labels[: len(maps)]):
            heat = _heatmap(maps[k])
            if heat.size != (width, height):
                heat = heat.resize((width, height), Image.BILINEAR)
            heat.save(folder / f"attention_{k}_{_slug(label)}.png")
            written += 1

    if found is not None:
        # The masks as found (undilated), at the edit's resolution, each in its object's colour.
        source = load_image(image_path)
        raw = masks.raw.cpu()
        for k, label in enumerate(labels):
            overlay_masks(source, raw[k : k + 1], colours=[_colour(k)]).save(folder / f"found_{k}_{_slug(label)}.png")
            written += 1
        overlay_masks(source, raw).save(folder / "found_masks_overlay.png")
        written += 1
    return written


def _one_line(err: BaseException | str, limit: int | None = None) -> str:
    """An error message on one line (hub errors span several), optionally cut to ``limit`` characters."""
    text = " ".join(str(err).split()) or type(err).__name__
    if limit is not None and len(text) > limit:
        text = text[: limit - 3].rstrip() + "..."
    return text


if __name__ == "__main__":
    raise SystemExit(main())
