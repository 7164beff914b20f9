"""End to end: one whole ALE edit per attention backend, side by side, on CPU or CUDA.

The shipped example (examples/coffee: a photo, three masks, three edits) is edited by the same
:class:`~ale_pipeline.ALEEditPipeline` with each attention backend; everything but attention (VAE, text
encoder, UNet convolutions, sampling) is shared, so the ratios show what attention costs end to end.

    python benchmarks/bench_edit.py                                   # CPU: random SD-shaped model, 256/384 px
    python benchmarks/bench_edit.py --device cuda --model sd15        # GPU: full-size SD1.5 UNet, random weights
    python benchmarks/bench_edit.py --device cuda --model SimianLuo/LCM_Dreamshaper_v7   # the real checkpoint

Models: ``sd-shaped`` / ``tiny`` / ``sd15`` are random pipelines built from configs (``sd15`` has SD1.5's full
widths and 8 heads, so its attention and convolution costs are the real model's); anything else is loaded
with ``from_pretrained``. Per backend and size: one untimed warm-up edit of the same steps (Triton autotuning
and JIT), then ``--repeats`` timed edits (median). CUDA also reports ``max_memory_allocated`` during the timed edit.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ale_pipeline.pipeline import load_image  # noqa: E402

EXAMPLE = ROOT / "examples" / "coffee"
RANDOM_KINDS = ("sd-shaped", "tiny", "sd15")


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


def time_edit(pipe, device: str, repeats: int, **kwargs) -> tuple[float, float | None, torch.Tensor]:
    """Median seconds of ``repeats`` edits, peak CUDA memory (GB) of the last, and its image ``(1, 3, H, W)``."""
    times, peak = [], None
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        image = pipe(**kwargs).images
        if device == "cuda":
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated() / 1e9
        times.append(time.perf_counter() - start)
    return statistics.median(times), peak, image


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

    rows = []
    for size in sizes:
        common = dict(image=image, edits=edits, masks=masks, longest_side=size, seed=0, output_type="pt")
        baseline = None
        for backend in backends:
            # Warm-up with the timed run's own steps: Q/K injection runs only in the first self_replace_steps
            # of the schedule (none of a 1-step edit), and its kernels autotune on first use.
            pipe(num_inference_steps=steps, attention_backend=backend, **common)
            seconds, peak, result = time_edit(
                pipe, args.device, args.repeats, num_inference_steps=steps, attention_backend=backend, **common
            )
            if baseline is None:
                baseline = (seconds, result)
            diff = (result.float() - baseline[1].float()).abs().max().item() * 255
            row = dict(
                size=size,
                pixels=f"{result.shape[-1]}x{result.shape[-2]}",
                backend=backend,
                seconds=seconds,
                speedup=baseline[0] / seconds,
                peak_gb=peak,
                max_pixel_diff=diff,
            )
            rows.append(row)
            print(
                f"  {row['pixels']:>9} {backend:<10} {seconds:8.3f} s  {row['speedup']:5.2f}x"
                + (f"  peak {peak:.2f} GB" if peak else ""),
                flush=True,
            )

    name = torch.cuda.get_device_name() if cuda else "CPU"
    header = (
        f"ALE edit end to end | model {args.model} | {name} | {str(dtype)[6:]} | {steps} steps | "
        f"{len(edits)} objects | torch {torch.__version__}"
    )
    lines = [
        header,
        "",
        "| image | backend | s / edit | speed-up vs first | peak GB | max pixel diff vs first |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        peak = f"{r['peak_gb']:.2f}" if r["peak_gb"] is not None else "-"
        cells = [
            r["pixels"],
            r["backend"],
            f"{r['seconds']:.3f}",
            f"{r['speedup']:.2f}x",
            peak,
            f"{r['max_pixel_diff']:.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print(table)
    if args.out_md:
        args.out_md.write_text(table + "\n")
    if args.json:
        args.json.write_text(json.dumps(dict(header=header, rows=rows), indent=1))
    if not np.isfinite([r["seconds"] for r in rows]).all():
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
