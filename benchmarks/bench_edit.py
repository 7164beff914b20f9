"""End to end: one whole ALE edit per attention backend, side by side, on CPU or CUDA.

The shipped example (examples/coffee: a photo, three masks, three edits) is edited by the same
:class:`~ale_pipeline.ALEEditPipeline` with each attention backend; everything but attention (VAE, text
encoder, UNet convolutions, sampling) is shared, so the ratios show what attention costs end to end.

    python benchmarks/bench_edit.py                                   # CPU: random SD-shaped model, 256/384 px
    python benchmarks/bench_edit.py --device cuda --model sd15        # GPU: full-size SD1.5 UNet, random weights
    python benchmarks/bench_edit.py --device cuda --model SimianLuo/LCM_Dreamshaper_v7   # the real checkpoint
    python benchmarks/bench_edit.py --model sdxl-shaped               # ALEEditXLPipeline, random SDXL layout
    python benchmarks/bench_edit.py --device cuda --model sdxl --sizes 1024   # full-size SDXL, random weights

Models: ``sd-shaped`` / ``tiny`` / ``sd15`` are random pipelines built from configs (``sd15`` has SD1.5's full
widths and 8 heads, so its attention and convolution costs are the real model's); ``sdxl`` / ``sdxl-shaped`` /
``tiny-xl`` are random :class:`~ale_pipeline.ALEEditXLPipeline` s (``sdxl`` at SDXL base's full size); anything
else is loaded with ``from_pretrained``, an SDXL checkpoint (``text_encoder_2`` in its ``model_index.json``)
as an ``ALEEditXLPipeline``. Per size: one untimed warm-up edit of the same steps per backend (Triton autotuning and
JIT), then ``--repeats`` rounds of timed edits, the backends interleaved (median). CUDA also reports
``max_memory_allocated`` during the last timed edit.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ale_pipeline.commands import RANDOM_KINDS  # noqa: E402
from ale_pipeline.pipeline import load_image  # noqa: E402
from benchmarks import harness  # noqa: E402

EXAMPLE = ROOT / "examples" / "coffee"


def load(model: str, device: str, dtype: torch.dtype):
    """The pipeline named by ``model`` (a random kind, a hub id or a local folder) on ``device`` in ``dtype``."""
    from ale_pipeline.commands import load_pipeline

    return load_pipeline(model, device, dtype, random_kinds=True, prog="bench_edit")


def example():
    """The shipped example's image, edits and mask paths."""
    spec = json.loads((EXAMPLE / "edits.json").read_text())
    return (
        load_image(EXAMPLE / spec["image"]),
        [e["edit"] for e in spec["edits"]],
        [EXAMPLE / e["mask"] for e in spec["edits"]],
    )


def edit_runners(pipe, backends: list[str], device: torch.device, record: dict, **kwargs) -> dict:
    """One no-argument edit per backend. Each call leaves its image ``(1, 3, H, W)`` and, on CUDA, its peak
    ``max_memory_allocated`` in GB in ``record[backend]``."""

    def runner(backend: str):
        def run() -> torch.Tensor:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            image = pipe(attention_backend=backend, **kwargs).images
            peak = None
            if device.type == "cuda":
                torch.cuda.synchronize(device)
                peak = torch.cuda.max_memory_allocated(device) / 1e9
            record[backend] = (image, peak)
            return image

        return run

    return {backend: runner(backend) for backend in backends}


def size_rows(size: int, label: str, timings: dict[str, harness.Timing], record: dict) -> list[dict]:
    """One result row per timed name (a backend or a variant, keyed by ``label``) at one size, each against
    the first name: its median time and speed-up, its peak memory (``record[name] = (image, peak GB or
    None)``) and its share of the first's, and its image's largest difference from the first's, in /255.
    Each row is also printed as it is made."""
    names = list(timings)
    base_seconds = timings[names[0]].median_ms / 1e3
    base_image, base_peak = record[names[0]]
    rows = []
    for name in names:
        result, peak = record[name]
        seconds = timings[name].median_ms / 1e3
        row = {
            "size": size,
            "pixels": f"{result.shape[-1]}x{result.shape[-2]}",
            label: name,
            "seconds": seconds,
            "spread_pct": timings[name].spread_pct,
            "speedup": base_seconds / seconds,
            "peak_gb": peak,
            "peak_share": peak / base_peak if peak and base_peak else None,
            "max_pixel_diff": (result.float() - base_image.float()).abs().max().item() * 255,
        }
        rows.append(row)
        share = f" ({100 * row['peak_share']:.0f}%)" if row["peak_share"] else ""
        print(
            f"  {row['pixels']:>9} {name:<22} {seconds:8.3f} s  {row['speedup']:5.2f}x"
            + (f"  peak {peak:.2f} GB{share}" if peak else ""),
            flush=True,
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "--dtype", default=None, choices=["float32", "float16", "bfloat16"], help="default: fp16 on CUDA, fp32 on CPU"
    )
    parser.add_argument(
        "--model", default="sd-shaped", help=f"{', '.join(RANDOM_KINDS)} (random) or a checkpoint id/folder"
    )
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=None, help="longest sides (default 256 384 on CPU, 512 768 on CUDA)"
    )
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default 4 on CPU, 15 on CUDA)")
    parser.add_argument("--backends", nargs="+", default=None, help="default: reference torch (+ triton on CUDA)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--out-md", type=Path, default=None)
    args = parser.parse_args(argv)

    cuda = args.device == "cuda"
    dtype = getattr(torch, args.dtype or ("float16" if cuda else "float32"))
    sizes = args.sizes or ([512, 768] if cuda else [256, 384])
    steps = args.steps or (15 if cuda else 4)
    backends = args.backends or (["reference", "torch", "triton"] if cuda else ["reference", "torch"])
    pipe = load(args.model, args.device, dtype)
    pipe.set_progress_bar_config(disable=True)
    image, edits, masks = example()

    device = torch.device(args.device)
    env = harness.environment(device, model=args.model, dtype=str(dtype)[6:], steps=steps, objects=len(edits))
    print(harness.header_line(env, "ALE edit end to end"), flush=True)
    rows = []
    for size in sizes:
        common = dict(image=image, edits=edits, masks=masks, longest_side=size, seed=0, output_type="pt")
        record: dict = {}
        runners = edit_runners(pipe, backends, device, record, num_inference_steps=steps, **common)
        # Backends in interleaved rounds, so that other load hits them alike; the warm-up round runs the timed
        # edit's own steps, because Q/K injection runs only in the first self_replace_steps of the schedule and
        # its kernels autotune on first use.
        timings = harness.time_interleaved(runners, args.repeats, device)
        rows += size_rows(size, "backend", timings, record)
    harness.finish(env)

    table = harness.markdown_table(
        ["image", "backend", "s / edit", "± %", "speed-up vs first", "peak GB", "max pixel diff vs first"],
        [
            [
                r["pixels"],
                r["backend"],
                f"{r['seconds']:.3f}",
                harness.num(r["spread_pct"], ".0f"),
                f"{r['speedup']:.2f}x",
                harness.num(r["peak_gb"], ".2f") or "-",
                f"{r['max_pixel_diff']:.1f}",
            ]
            for r in rows
        ],
    )
    notes = harness.reliability_warnings(env, [r["spread_pct"] for r in rows]) if device.type == "cpu" else []
    harness.publish(env, table, rows, notes, title="ALE edit end to end", json_path=args.json, md_path=args.out_md)
    if not np.isfinite([r["seconds"] for r in rows]).all():
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
