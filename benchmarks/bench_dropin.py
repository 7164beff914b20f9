"""Drop-in speed-up of diffusers' LEDITS++: the stock pipeline against ``ale_kernels.diffusers.speed_up``.

One measurement is ``invert()`` plus one edit (one concept, the pipeline's default masks: the attention store's
cross-attention mask intersected with the noise-estimate mask), timed end to end, with its peak memory above
the loaded weights. Each measurement runs in a fresh process (the memory high-water mark is per process), the
variants interleaved (stock, sped-up, sped-up, stock, ...); a table of medians, a JSON file and a plot of peak
memory against resolution are written.

    python benchmarks/bench_dropin.py                                   # CPU: SD1.5 at 512 and 768 px
    python benchmarks/bench_dropin.py --models sdxl --sizes 512         # CPU: SDXL
    python benchmarks/bench_dropin.py --device cuda --dtype float16 --models sd15 sdxl --sizes 512 768 1024

Models are random, full size, built from configs (no hub): ``sd15`` is SD1.5 (860M-parameter UNet, 8 heads,
the full VAE and text encoder); ``sdxl`` is SDXL's UNet and VAE at full size with its two text encoders cut to
two layers each (widths kept: their cost is one call per prompt, nothing that attention changes);
``sd15-narrow`` is SD1.5's layout and heads at a fifth of the UNet's width (see :func:`build_sd15_narrow`).

Each process first runs a 128 px warm-up edit, untimed. Memory: on CPU the process's RSS high-water mark
during the run minus the RSS before it (``clear_refs`` resets the mark after loading and the warm-up); on
CUDA ``max_memory_allocated`` minus the allocated memory before it. The
"max pixel diff" column compares each run's image (0-255 scale) with the first stock run of that size.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import harness  # noqa: E402

VARIANTS = ("stock", "speed_up")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _scheduler():
    from diffusers import DPMSolverMultistepScheduler

    return DPMSolverMultistepScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, steps_offset=1,
        algorithm_type="sde-dpmsolver++", solver_order=2,
    )  # fmt: skip


def build_sd15():
    """LEDITS++ on a random full-size SD1.5 (the components of ``ale_pipeline.random_model``'s ``sd15``)."""
    from diffusers import LEditsPPPipelineStableDiffusion

    from ale_pipeline.random_model import random_ale_pipeline

    base = random_ale_pipeline("sd15", seed=0)
    return LEditsPPPipelineStableDiffusion(
        base.vae, base.text_encoder, base.tokenizer, base.unet, _scheduler(),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip


def build_sd15_narrow():
    """LEDITS++ on SD1.5's layout with its 8 heads, 2 layers per block and full VAE, at a fifth of the UNet's
    width (head dim 8) and a 2-layer text encoder: the attention maps of SD1.5 at a fraction of the weights,
    for machines that cannot hold a full-size run (its time ratios overstate the real model's: its
    convolutions are cheaper)."""
    from diffusers import LEditsPPPipelineStableDiffusion
    from transformers import CLIPTextModel

    from ale_pipeline.random_model import _random_vae, _text_config, random_unet
    from ale_pipeline.tokenizer import build_clip_tokenizer

    torch.manual_seed(0)
    unet = random_unet((64, 128, 256, 256), 32, cross_attention_dim=768, heads=8, layers_per_block=2)
    vae = _random_vae((128, 256, 512, 512), 32, 2)  # SD1.5's VAE
    text = CLIPTextModel(_text_config(768, layers=2)).eval()
    return LEditsPPPipelineStableDiffusion(
        vae, text, build_clip_tokenizer(), unet, _scheduler(),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip


def build_sdxl():
    """LEDITS++ on a random SDXL: UNet and VAE at full size (``ale_pipeline.random_model``'s ``sdxl`` kind), text
    encoders of SDXL's widths with two layers."""
    from diffusers import LEditsPPPipelineStableDiffusionXL
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from ale_pipeline.random_model import _XL_KINDS, _text_config, random_sdxl_unet, random_sdxl_vae
    from ale_pipeline.tokenizer import build_clip_tokenizer

    shape = _XL_KINDS["sdxl"]
    torch.manual_seed(0)
    unet = random_sdxl_unet(shape, pooled_dim=shape.text_widths[1])
    vae = random_sdxl_vae("sdxl")

    def text(width: int, projection: bool):
        config = _text_config(width, layers=2, projection_dim=shape.text_widths[1])
        return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config).eval()

    tokenizer = build_clip_tokenizer()
    return LEditsPPPipelineStableDiffusionXL(
        vae, text(shape.text_widths[0], False), text(shape.text_widths[1], True), tokenizer, tokenizer, unet,
        _scheduler(), add_watermarker=False,
    )  # fmt: skip


BUILDERS = {"sd15": build_sd15, "sd15-narrow": build_sd15_narrow, "sdxl": build_sdxl}


def source_image(size: int):
    """A smooth deterministic RGB picture of ``size`` x ``size`` (the weights are random: content is moot)."""
    from PIL import Image

    y, x = np.mgrid[0:size, 0:size] / size
    rgb = np.stack([np.sin(6 * x) * 0.5 + 0.5, np.cos(4 * y) * 0.5 + 0.5, x * y], axis=-1)
    return Image.fromarray((rgb * 255).astype(np.uint8))


def edit(pipe, size: int, steps: int) -> np.ndarray:
    """``invert()`` then one edit; the image as ``(H, W, 3)`` floats in [0, 1]."""
    pipe.invert(source_image(size), num_inversion_steps=steps, skip=0.0, generator=torch.Generator().manual_seed(0))
    out = pipe(
        editing_prompt=["a red car"], edit_guidance_scale=7.0, edit_threshold=0.8, use_intersect_mask=True,
        output_type="np",
    )  # fmt: skip
    return out.images[0]


class PeakMemory:
    """The memory high-water mark of a run, in MB, overall and during the UNet's calls alone (its attention is
    what ``speed_up`` changes; the VAE's peak is the same in both variants and floors the overall one).

    On CPU the RSS high-water mark is read and reset (``clear_refs``) around every UNet call, keeping the
    maxima; on CUDA the allocator's peak likewise.
    """

    def __init__(self, unet, device: torch.device):
        self.cuda = device.type == "cuda"
        self.device = device
        self.overall = self.unet = 0.0
        self._reset()
        self.before = self._current()
        self._hooks = [
            unet.register_forward_pre_hook(lambda *_: self._segment(in_unet=False)),
            unet.register_forward_hook(lambda *_: self._segment(in_unet=True)),
        ]

    def _current(self) -> float:
        return torch.cuda.memory_allocated(self.device) / 2**20 if self.cuda else harness.peak_rss_mb()

    def _peak(self) -> float:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        return harness.peak_rss_mb()

    def _reset(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            harness.reset_peak_rss()

    def _segment(self, in_unet: bool) -> None:
        peak = self._peak()
        self.overall = max(self.overall, peak)
        if in_unet:
            self.unet = max(self.unet, peak)
        self._reset()

    def finish(self) -> dict:
        """Stop measuring; the peaks above the memory at the start, in MB."""
        self._segment(in_unet=False)
        for hook in self._hooks:
            hook.remove()
        return {"peak_extra_mb": self.overall - self.before, "unet_peak_extra_mb": self.unet - self.before}


def worker(spec: dict) -> dict:
    """One measurement in this (fresh) process: build, then time and measure ``invert()`` + one edit."""
    from ale_kernels.diffusers import speed_up

    device, dtype = torch.device(spec["device"]), DTYPES[spec["dtype"]]
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    pipe = BUILDERS[spec["model"]]().to(device=device, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    handle = speed_up(pipe, backend=spec["backend"]) if spec["variant"] == "speed_up" else None
    # Warm-up at 128 px: lazy initialisation (kernels, thread pools, allocator pools) is neither timed nor
    # counted as the edit's memory.
    edit(pipe, 128, 1)
    gc.collect()
    memory = PeakMemory(pipe.unet, device)
    start = time.perf_counter()
    image = edit(pipe, spec["size"], spec["steps"])
    harness.sync(device)
    seconds = time.perf_counter() - start
    peaks = memory.finish()
    if handle is not None:
        handle.remove()
    np.save(spec["image_path"], image)
    return {"seconds": seconds, **peaks}


def measure(args, model: str, size: int, scratch: Path) -> list[dict]:
    """The interleaved runs of one (model, size): one row per variant with its medians."""
    runs: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    first_image = None
    for repeat in range(args.repeats):
        order = VARIANTS if repeat % 2 == 0 else VARIANTS[::-1]
        for variant in order:
            image_path = scratch / f"{model}-{size}-{variant}-{repeat}.npy"
            spec = dict(
                model=model, size=size, variant=variant, steps=args.steps, device=args.device, dtype=args.dtype,
                backend=args.backend, threads=args.threads, image_path=str(image_path),
            )  # fmt: skip
            done = harness.run_worker([sys.executable, __file__, "--worker", json.dumps(spec)])
            if done.payload is None:
                print(f"{model} {size}px {variant}: failed ({done.message})", flush=True)
                runs[variant].append({"error": done.message})
                continue
            image = np.load(image_path)
            if variant == "stock" and first_image is None:
                first_image = image
            done.payload["image"] = image
            runs[variant].append(done.payload)
            got = done.payload
            print(
                f"{model} {size}px {variant}: {got['seconds']:.1f} s, peak +{got['peak_extra_mb']:.0f} MB "
                f"(UNet calls +{got['unet_peak_extra_mb']:.0f} MB)",
                flush=True,
            )
    rows = []
    for variant in VARIANTS:
        ok = [r for r in runs[variant] if "error" not in r]
        row = dict(model=model, size=size, variant=variant, repeats=len(ok))
        if ok:
            times = [r["seconds"] for r in ok]
            row.update(
                seconds=statistics.median(times),
                spread_pct=100 * (max(times) - min(times)) / statistics.median(times) if len(times) > 1 else None,
                peak_extra_mb=statistics.median(r["peak_extra_mb"] for r in ok),
                unet_peak_extra_mb=statistics.median(r["unet_peak_extra_mb"] for r in ok),
                max_pixel_diff=(
                    None
                    if first_image is None
                    else 255 * max(float(np.abs(r["image"] - first_image).max()) for r in ok)
                ),
            )
        else:
            row["error"] = runs[variant][0]["error"] if runs[variant] else "not run"
        rows.append(row)
    stock = rows[0]
    for row in rows:
        if "seconds" in row and "seconds" in stock:
            row["speed_up"] = stock["seconds"] / row["seconds"]
            row["memory_vs_stock_pct"] = 100 * row["peak_extra_mb"] / stock["peak_extra_mb"]
            row["unet_memory_vs_stock_pct"] = 100 * row["unet_peak_extra_mb"] / stock["unet_peak_extra_mb"]
    return rows


def plot(rows: list[dict], path: Path, title: str = "LEDITS++ invert() + one edit") -> None:
    """Peak memory above the weights against resolution, one line per (model, variant)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    # Colour: the variant; marker: the model and what was measured. Stock's markers are drawn larger, so that
    # where both variants peak alike (the VAE's peak) both stay visible.
    markers = ({"peak_extra_mb": "o", "unet_peak_extra_mb": "s"}, {"peak_extra_mb": "^", "unet_peak_extra_mb": "D"})
    for index, model in enumerate(dict.fromkeys(r["model"] for r in rows)):
        for variant in VARIANTS:
            for key, what, line in (("peak_extra_mb", "whole run", "-"), ("unet_peak_extra_mb", "UNet calls", ":")):
                points = sorted(
                    (r["size"], r[key] / 1024)
                    for r in rows
                    if r["model"] == model and r["variant"] == variant and key in r
                )
                if points:
                    stock = variant == "stock"
                    ax.plot(
                        *zip(*points, strict=True), line, marker=markers[index % 2][key], markersize=9 if stock else 5,
                        color="tab:red" if stock else "tab:blue", label=f"{model} {variant}, {what}",
                    )  # fmt: skip
    ax.set_xlabel("image side (px)")
    ax.set_ylabel("peak memory above weights (GiB)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_runs(parser: argparse.ArgumentParser, paths: list[Path], out: Path, force: bool) -> None:
    """One memory-against-resolution plot of the rows of several runs' ``bench_dropin.json`` files."""
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        parser.error(f"--plot-from: no such file: {', '.join(missing)}")
    if out.exists() and not force:
        parser.error(f"{out} exists; pass --force to overwrite it")
    rows, steps = [], set()
    for path in paths:
        run = json.loads(path.read_text())
        rows += [r for r in run["rows"] if "peak_extra_mb" in r]
        steps.add(run["environment"].get("steps"))
    out.parent.mkdir(parents=True, exist_ok=True)
    # Peaks are per UNet call and per VAE pass, so runs of different step counts share one axis.
    plot(rows, out, title=f"LEDITS++ invert() + one edit (runs of {', '.join(map(str, sorted(steps)))} steps)")
    print(f"plot: {out}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=sorted(BUILDERS), default=["sd15"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[512, 768], help="image sides in px (x32)")
    parser.add_argument("--steps", type=int, default=3, help="inversion steps (the edit runs as many)")
    parser.add_argument("--repeats", type=int, default=2, help="processes per variant and size")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="float32 on CPU, float16 on CUDA")
    parser.add_argument("--backend", default="auto", help="speed_up's backend")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per worker (default: torch's)")
    parser.add_argument("--out", type=Path, default=Path("bench_dropin_results"), help="folder for JSON/md/png")
    parser.add_argument("--force", action="store_true", help="overwrite the files in --out")
    parser.add_argument("--keep-images", action="store_true", help="keep each run's image (.npy) in --out/images")
    parser.add_argument(
        "--plot-from", nargs="+", type=Path, metavar="JSON",
        help="measure nothing: plot the rows of these bench_dropin.json files together (runs at several sizes) "
        "into --out/bench_dropin_sizes.png",
    )  # fmt: skip
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    if args.plot_from:
        plot_runs(parser, args.plot_from, args.out / "bench_dropin_sizes.png", args.force)
        return
    if any(s % 32 for s in args.sizes):
        parser.error(f"--sizes must be multiples of 32, got {args.sizes}")
    args.dtype = args.dtype or ("float16" if args.device.startswith("cuda") else "float32")
    outputs = [args.out / f"bench_dropin.{ext}" for ext in ("json", "md", "png")]
    if not args.force and any(p.exists() for p in outputs):
        parser.error(f"{args.out} already holds bench_dropin results; pass --force to overwrite them")
    args.out.mkdir(parents=True, exist_ok=True)
    env = harness.environment(args.device, dtype=args.dtype, steps=args.steps, repeats=args.repeats)
    if args.threads:
        env["threads"] = args.threads
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        images = args.out / "images" if args.keep_images else Path(scratch)
        images.mkdir(exist_ok=True)
        for model in args.models:
            for size in args.sizes:
                rows += measure(args, model, size, images)
    harness.finish(env)
    header = ["model", "px", "variant", "s (median)", "± %", "speed-up", "peak MB above weights", "% of stock",
              "UNet-call peak MB", "% of stock", "max pixel diff (/255)"]  # fmt: skip
    table = harness.markdown_table(
        header,
        [
            [
                r["model"], str(r["size"]), r["variant"], harness.num(r.get("seconds"), ".1f"),
                harness.num(r.get("spread_pct"), ".0f"), harness.num(r.get("speed_up"), ".2f", "x"),
                harness.num(r.get("peak_extra_mb"), ".0f"), harness.num(r.get("memory_vs_stock_pct"), ".0f", "%"),
                harness.num(r.get("unet_peak_extra_mb"), ".0f"),
                harness.num(r.get("unet_memory_vs_stock_pct"), ".0f", "%"),
                harness.num(r.get("max_pixel_diff"), ".3f") or r.get("error", ""),
            ]
            for r in rows
        ],
    )  # fmt: skip
    notes = [
        f"invert({args.steps} steps, skip 0) + one edit (1 concept, intersect mask), {args.dtype}, "
        f"{args.repeats} process(es) per variant, interleaved; speed_up backend={args.backend!r}",
        *harness.reliability_warnings(env, [r.get("spread_pct") for r in rows]),
    ]
    harness.publish(env, table, rows, notes, "bench_dropin", json_path=outputs[0], md_path=outputs[1])
    plot(rows, outputs[2])
    print(f"plot: {outputs[2]}")


if __name__ == "__main__":
    main()
