"""``make demo``: edit the shipped example picture and write one side-by-side PNG.

Uses the default LCM checkpoint when it can be loaded (local cache, then the hub). When no weights can be
reached it says so in one line and runs the very same pipeline on a randomly initialised SD-shaped model, so
the path, the pictures' layout and the timings of the attention backends are still shown (the image itself is
then meaningless). The edit runs twice, with the published materialised attention (``reference``) and with
the fused backend (``auto``), and the timings of both are printed.

    python -m ale_pipeline.demo [--example examples/coffee] [--out demo_output] [--steps 15]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from .pipeline import DEFAULT_MODEL, ALEEditPipeline, load_image

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "coffee"
TINTS = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240)]


def load_pipeline(model: str, device: str, dtype: torch.dtype) -> tuple[ALEEditPipeline, str]:
    """The checkpoint if reachable (local cache first), else a random SD-shaped pipeline; and what was loaded."""
    errors = []
    for local_only in (True, False):
        try:
            pipe = ALEEditPipeline.from_pretrained(model, torch_dtype=dtype, local_files_only=local_only)
            return pipe.to(device), model
        except Exception as error:  # offline, missing files, wrong layout: all mean "not reachable" here
            errors.append(f"{type(error).__name__}: {str(error).splitlines()[0][:100]}")
    from .random_model import random_ale_pipeline

    print(f"demo: no weights for {model!r} could be reached ({errors[-1]}); running the same pipeline on a small "
          f"randomly initialised SD-shaped model (the picture shows the path, not a real edit)")  # fmt: skip
    return random_ale_pipeline("sd-shaped").to(device, dtype), "random SD-shaped model"


def _panel(image: Image.Image, title: str) -> Image.Image:
    framed = Image.new("RGB", (image.width, image.height + 18), "white")
    framed.paste(image, (0, 18))
    ImageDraw.Draw(framed).text((4, 3), title, fill="black")
    return framed


def _tint(image: Image.Image, masks: np.ndarray) -> Image.Image:
    """The image with each ``(H, W)`` bool mask of ``masks`` tinted in its own colour."""
    out = np.asarray(image, dtype=np.float32).copy()
    for k, mask in enumerate(masks):
        out[mask] = 0.5 * out[mask] + 0.5 * np.array(TINTS[k % len(TINTS)], dtype=np.float32)
    return Image.fromarray(out.round().astype(np.uint8))


def _heat(image: Image.Image, heat: np.ndarray) -> Image.Image:
    """``heat`` in [0, 1] over a darkened grey copy of the image: black-red-yellow-white."""
    grey = np.asarray(image.convert("L"), dtype=np.float32)[..., None] / 255.0 * 0.35
    colour = np.stack([np.clip(3 * heat, 0, 1), np.clip(3 * heat - 1, 0, 1), np.clip(3 * heat - 2, 0, 1)], -1)
    return Image.fromarray((255 * np.clip(grey + colour, 0, 1)).round().astype(np.uint8))


def side_by_side(source: Image.Image, result: Image.Image, dilated: np.ndarray, maps: np.ndarray, phrases) -> Image:
    """Source | masks | result | one attention map per target phrase, in one row."""
    source = source.resize(result.size)
    panels = [_panel(source, "source"), _panel(_tint(source, dilated), "masks (dilated)"), _panel(result, "ALE edit")]
    panels += [_panel(_heat(result, m), f"attention: {p}") for m, p in zip(maps, phrases, strict=True)]
    sheet = Image.new("RGB", (sum(p.width for p in panels) + 4 * (len(panels) - 1), panels[0].height), "white")
    x = 0
    for p in panels:
        sheet.paste(p, (x, 0))
        x += p.width + 4
    return sheet


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--example", type=Path, default=EXAMPLE, help="folder with edits.json, image and masks")
    parser.add_argument("--out", type=Path, default=Path("demo_output"))
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--longest-side", type=int, default=None, help="default 768 (384 for the random model)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)

    spec = json.loads((args.example / "edits.json").read_text())
    image = load_image(args.example / spec["image"])
    edits = [e["edit"] for e in spec["edits"]]
    masks = [args.example / e["mask"] for e in spec["edits"]]
    dtype = torch.float16 if args.device == "cuda" else torch.float32
    pipe, loaded = load_pipeline(args.model, args.device, dtype)
    pipe.set_progress_bar_config(desc="ALE edit")
    longest = args.longest_side or (768 if loaded == args.model else 384)

    common = dict(num_inference_steps=args.steps, longest_side=longest, seed=args.seed)
    timings, images = {}, {}
    for backend in ("reference", "auto"):
        start = time.perf_counter()
        images[backend] = pipe(image, edits, masks, attention_backend=backend, **common).images[0]
        if args.device == "cuda":
            torch.cuda.synchronize()
        timings[backend] = time.perf_counter() - start
    difference = np.abs(np.asarray(images["auto"], np.int16) - np.asarray(images["reference"], np.int16)).max()
    # The picture's run also records the masks used and each phrase's attention (not timed: it adds the maps).
    fast = pipe(image, edits, masks, return_masks=True, return_attention_maps=True, **common)

    args.out.mkdir(parents=True, exist_ok=True)
    phrases = [e.split("=>")[1].strip() for e in edits]
    sheet = side_by_side(image, fast.images[0], fast.masks.dilated.numpy(), fast.attention_maps.numpy(), phrases)
    sheet_path = args.out / "ale_demo.png"
    sheet.save(sheet_path)
    fast.images[0].save(args.out / "edited.png")
    size = fast.images[0].size
    print(f"model: {loaded} | {size[0]}x{size[1]} px | {args.steps} steps | device {args.device} | {len(edits)} edits")
    print("| attention backend | edit time (s) | speed-up |\n|---|---|---|")
    print(f"| reference (published, materialised) | {timings['reference']:.2f} | 1.00x |")
    print(f"| auto (fused ops) | {timings['auto']:.2f} | {timings['reference'] / timings['auto']:.2f}x |")
    print(f"max pixel difference between the two: {difference} / 255")
    print(f"wrote {sheet_path} (source | masks | result | attention per phrase) and {args.out / 'edited.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
