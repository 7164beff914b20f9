"""``ale-profile``: where an ALE edit spends its time, under ``torch.profiler`` (CPU or CUDA).

Runs one untimed warm-up edit (Triton autotuning, JIT and caches), then ``--steps`` sampling steps of the same
edit under the profiler with the processors' ``ale::*`` stage ranges on (also NVTX ranges on CUDA, for Nsight
Systems: ``nsys profile -t cuda,nvtx ale-profile ...``). Writes a Chrome trace (open it in Perfetto or
``chrome://tracing``), prints the top operators / kernels and the share of time spent in attention.

    ale-profile                                     # the shipped example, random SD-shaped model, CPU
    ale-profile --device cuda --model sd15 --size 768 --backend triton --trace trace.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.autograd import DeviceType

from ale_kernels.profiling import STAGES, enable_stage_ranges

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "coffee"
RANDOM_KINDS = ("sd-shaped", "tiny", "sd15")

#: Kernel-name fragments of attention on CUDA: ours, SDPA's flash / memory-efficient / cuDNN kernels, and the
#: reference path's softmax and batched matmuls (which only attention issues in a UNet step).
ATTENTION_KERNELS = ("_region_attention_fwd", "_shared_qk_fwd", "_token_softmax_fwd", "flash", "fmha", "attention",
                     "softmax", "cudnn_sdpa", "efficient")  # fmt: skip


@dataclass
class ProfileSummary:
    """What :func:`summarize` found: the top rows, the attention share and the per-stage times (ms)."""

    table: str
    attention_share: float
    total_ms: float
    stage_ms: dict[str, float]
    device: str

    def render(self) -> str:
        stages = "\n".join(f"| {name} | {ms:.2f} |" for name, ms in self.stage_ms.items())
        clock = "GPU span (gaps included)" if self.device == "cuda" else "CPU time"
        what = "GPU kernel time in attention kernels" if self.device == "cuda" else "CPU time in ale::attention stages"
        return (
            f"{self.table}\n\n| processor stage (range) | {clock}, ms, all calls |\n|---|---|\n{stages}\n\n"
            f"attention share ({what}): {100 * self.attention_share:.1f}% of {self.total_ms:.1f} ms"
        )


def _device_time(event) -> float:
    # torch renamed cuda_* to device_* (2.4); keep both for the GPU image's and older versions.
    return float(getattr(event, "self_device_time_total", getattr(event, "self_cuda_time_total", 0.0)))


def summarize(prof, device: str, top: int = 15) -> ProfileSummary:
    """Top operators (CPU) or kernels (CUDA), the stage ranges' times and the share of attention."""
    events = prof.key_averages()
    sort_by = "self_cuda_time_total" if device == "cuda" else "self_cpu_time_total"
    table = events.table(sort_by=sort_by, row_limit=top, max_name_column_width=60)
    if device == "cuda":
        # A range's GPU time is the span of the kernels launched inside it, gaps included.
        ranges = {e.key: float(getattr(e, "device_time_total", 0.0)) / 1e3 for e in events if e.key in STAGES}
        # Only the kernels themselves: CPU operators also carry the device time of the kernels they launch,
        # and the ale:: ranges appear as GPU annotations.
        kernels = [
            e
            for e in events
            if e.device_type == DeviceType.CUDA and _device_time(e) > 0 and not e.key.startswith("ale::")
        ]
        total = sum(_device_time(e) for e in kernels) / 1e3
        attention = sum(_device_time(e) for e in kernels if any(k in e.key.lower() for k in ATTENTION_KERNELS)) / 1e3
    else:
        ranges = {e.key: e.cpu_time_total / 1e3 for e in events if e.key in STAGES}
        edit = [e for e in events if e.key == "ale::edit"]
        total = edit[0].cpu_time_total / 1e3 if edit else sum(e.self_cpu_time_total for e in events) / 1e3
        attention = sum(
            ms for name, ms in ranges.items() if name != "ale::projections" and name != "ale::out_projection"
        )
    return ProfileSummary(table, attention / total if total else float("nan"), total, ranges, device)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ale-profile", description=__doc__.split("\n\n")[0])
    parser.add_argument("--example", type=Path, default=EXAMPLE, help="folder with edits.json, image and masks")
    parser.add_argument(
        "--model", default="sd-shaped", help=f"{', '.join(RANDOM_KINDS)} (random weights) or a checkpoint id/folder"
    )
    parser.add_argument("--steps", type=int, default=3, help="sampling steps profiled (default 3)")
    parser.add_argument("--size", type=int, default=None, help="longest side in px (default 384 on CPU, 768 on CUDA)")
    parser.add_argument("--backend", default="auto", choices=["auto", "torch", "triton", "reference"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default=None, choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--trace", type=Path, default=Path("ale_profile_trace.json"), help="Chrome trace to write")
    parser.add_argument("--force", action="store_true", help="overwrite an existing --trace")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--summary", type=Path, default=None, help="also write the summary (markdown) here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``ale-profile``; returns the exit code (2 for a usage mistake, with one line on stderr)."""
    args = build_parser().parse_args(argv)
    for path in (args.trace, args.summary):
        if path is not None and path.exists() and not args.force:
            print(f"ale-profile: {path} exists; pass --force to overwrite it", file=sys.stderr)
            return 2
    if args.device == "cuda" and not torch.cuda.is_available():
        print("ale-profile: --device cuda but no CUDA GPU is visible", file=sys.stderr)
        return 2
    if args.steps < 1:
        print(f"ale-profile: --steps must be at least 1, got {args.steps}", file=sys.stderr)
        return 2
    from .demo import load_pipeline
    from .pipeline import load_image
    from .random_model import random_ale_pipeline

    dtype = getattr(torch, args.dtype or ("float16" if args.device == "cuda" else "float32"))
    if args.model in RANDOM_KINDS:
        pipe = random_ale_pipeline(args.model).to(args.device, dtype)
    else:
        pipe, _ = load_pipeline(args.model, args.device, dtype)
    pipe.set_progress_bar_config(disable=True)
    spec = json.loads((args.example / "edits.json").read_text())
    edit = dict(
        image=load_image(args.example / spec["image"]),
        edits=[e["edit"] for e in spec["edits"]],
        masks=[args.example / e["mask"] for e in spec["edits"]],
        longest_side=args.size or (768 if args.device == "cuda" else 384),
        attention_backend=args.backend,
        output_type="pt",
    )
    # Warm-up, not profiled, with the same steps: Q/K injection runs only in the first part of the schedule
    # (none of a 1-step edit), and each kernel autotunes on first use.
    pipe(num_inference_steps=args.steps, **edit)

    activities = [torch.profiler.ProfilerActivity.CPU]
    if args.device == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    enable_stage_ranges(True)
    try:
        with torch.profiler.profile(activities=activities) as prof:
            with torch.profiler.record_function("ale::edit"):
                pipe(num_inference_steps=args.steps, **edit)
                if args.device == "cuda":
                    torch.cuda.synchronize()
    finally:
        enable_stage_ranges(False)
    args.trace.parent.mkdir(parents=True, exist_ok=True)
    prof.export_chrome_trace(str(args.trace))
    summary = summarize(prof, args.device, args.top)
    name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    header = (f"ale-profile | model {args.model} | {name} | {str(dtype)[6:]} | backend {args.backend} | "
              f"{args.steps} steps at longest side {edit['longest_side']}")  # fmt: skip
    text = f"{header}\n\n{summary.render()}\n\ntrace: {args.trace}"
    print(text)
    if args.summary is not None:
        args.summary.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
