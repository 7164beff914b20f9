"""One edit through the web page against the same edit through ``ale-edit``, side by side on one model.

The shipped example (examples/coffee, its first ``--objects`` edits and masks) is edited by one pipeline three
ways, interleaved in every round so that a change in the machine's load hits all alike:

- ``ale-edit``: :func:`ale_pipeline.cli.main` in this process (reads the files, edits, writes the PNG);
- ``ale-edit --save-maps``: the same, also writing the masks and the attention maps, the pictures the page shows;
- ``page``: a request to the running app (served on 127.0.0.1 in this process) through ``gradio_client``, from
  upload to every output back: the masks picture, the before/after pair, the attention maps, the time, the PNG.

Each is timed by the wall clock around the whole call. After one untimed warm-up of each, ``--repeats`` rounds;
medians, the page's overhead over ``ale-edit`` (seconds and %), and the load average are printed.

    python benchmarks/bench_app.py [--model tiny] [--steps 4] [--longest-side 256] [--repeats 5]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ale_pipeline.app.offline import go_offline  # noqa: E402

go_offline()

from gradio_client import Client, handle_file  # noqa: E402

from ale_pipeline import cli  # noqa: E402
from ale_pipeline.app.inputs import Controls  # noqa: E402
from ale_pipeline.app.session import EditSession  # noqa: E402
from ale_pipeline.app.ui import build_app, launch  # noqa: E402
from ale_pipeline.commands import load_pipeline, resolve_device, resolve_dtype  # noqa: E402

EXAMPLE = ROOT / "examples" / "coffee"
ROWS = 4


def mask_layers(masks: list[Path], folder: Path) -> list[Path]:
    """Each mask file as an editor layer: transparent, the mask painted opaque red."""
    layers = []
    for k, path in enumerate(masks):
        inside = np.asarray(Image.open(path).convert("L")) >= 128
        rgba = np.zeros((*inside.shape, 4), np.uint8)
        rgba[inside] = (230, 25, 75, 255)
        layers.append(folder / f"layer{k}.png")
        Image.fromarray(rgba, "RGBA").save(layers[-1])
    return layers


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny", help="a random kind (tiny, sd-shaped, sd15) or a checkpoint")
    parser.add_argument("--device", choices=("cpu", "cuda"))
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--longest-side", type=int, default=256)
    parser.add_argument("--objects", type=int, default=2, help="how many of the example's edits (1-3)")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the timings here")
    args = parser.parse_args()

    device = resolve_device(args.device)
    pipe = load_pipeline(args.model, device, resolve_dtype(None, device), random_kinds=True, prog="bench_app")
    pipe.set_progress_bar_config(disable=True)
    spec = json.loads((EXAMPLE / "edits.json").read_text())
    chosen = spec["edits"][: args.objects]
    edits = [tuple(p.strip() for p in e["edit"].split("=>", 1)) for e in chosen]
    image, masks = EXAMPLE / spec["image"], [EXAMPLE / e["mask"] for e in chosen]
    work = Path(tempfile.mkdtemp(prefix="bench-app-"))
    layers = mask_layers(masks, work)

    session = EditSession(pipe, out_dir=work / "downloads")
    app = build_app(session, model=args.model, max_objects=ROWS)
    _, url, _ = launch(app, port=None, block=False, quiet=True)
    # The page is plain HTTP on 127.0.0.1: there is no certificate to check. With checking on, gradio_client
    # loads the CA bundle again for each of the HTTP clients it opens per uploaded and downloaded file (about
    # 0.1 s each here): a cost of the Python client that a browser, on one kept-alive connection, never pays.
    client = Client(url, verbose=False, ssl_verify=False)
    controls = Controls(steps=args.steps, longest_side=args.longest_side, backend=args.backend)
    texts = [[p[i] for p in edits] + [""] * (ROWS - len(edits)) for i in (0, 1)]
    editor = {"background": handle_file(str(image)), "layers": [handle_file(str(p)) for p in layers], "composite": None}
    page_args = [editor, len(edits), "draw", None, *(getattr(controls, n) for n in Controls.__dataclass_fields__),
                 *texts[0], *texts[1]]  # fmt: skip

    runs = {"ale-edit": 0, "ale-edit --save-maps": 0}

    def ale_edit(save_maps: bool) -> None:
        key = "ale-edit --save-maps" if save_maps else "ale-edit"
        runs[key] += 1
        out = work / f"cli-{runs[key]}-{int(save_maps)}.png"
        argv = [str(image), "--out", str(out), "--steps", str(args.steps), "--longest-side", str(args.longest_side),
                "--backend", args.backend]  # fmt: skip
        for (source, target), mask in zip(edits, masks, strict=True):
            argv += ["--edit", f"{source}=>{target}", "--mask", str(mask)]
        if save_maps:
            argv += ["--save-maps", str(work / f"maps-{runs[key]}")]
        with contextlib.redirect_stdout(io.StringIO()):  # its one "wrote ..." line per edit
            status = cli.main(argv, load_pipeline=lambda *_: pipe)
        if status != 0:
            raise SystemExit(f"ale-edit failed with status {status}")

    def page() -> None:
        client.predict(*page_args, api_name="/edit")

    ways = {"ale-edit": lambda: ale_edit(False), "ale-edit --save-maps": lambda: ale_edit(True), "page": page}
    for run in ways.values():  # warm-up: kernels compiled, caches filled
        run()
    seconds = {name: [] for name in ways}
    for _ in range(args.repeats):
        for name, run in ways.items():
            start = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - start)
    app.close()

    median = {name: statistics.median(times) for name, times in seconds.items()}
    width, height = Image.open(work / "downloads" / "edited-0001.png").size
    print(f"model {args.model} on {device} | {len(edits)} edits | {width}x{height} px | {args.steps} steps | "
          f"backend {args.backend} | {args.repeats} interleaved repeats after a warm-up each")  # fmt: skip
    print("| way | median (s) | min (s) | max (s) | page overhead |")
    print("|---|---|---|---|---|")
    for name, times in seconds.items():
        if name == "page":
            over = "—"
        else:
            extra = median["page"] - median[name]
            over = f"{extra:+.2f} s ({100 * extra / median[name]:+.1f}%)"
        print(f"| {name} | {median[name]:.2f} | {min(times):.2f} | {max(times):.2f} | {over} |")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"load average (1 min): {load:.2f} on {os.cpu_count()} cores")
    for way in ("ale-edit", "ale-edit --save-maps"):
        extra = median["page"] - median[way]
        verdict = "within" if extra <= max(1.0, 0.1 * median[way]) else "OVER"
        print(f"page vs {way}: {extra:+.2f} s, {verdict} the allowance (10% or 1 s, whichever is larger)")
    if args.json:
        args.json.write_text(json.dumps({"seconds": seconds, "median": median, "load_average": load}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
