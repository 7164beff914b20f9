"""``ale-profile``: where an ALE edit spends its time, under ``torch.profiler`` (CPU or CUDA).

Runs one untimed warm-up edit (Triton autotuning, JIT and caches), then ``--steps`` sampling steps of the same
edit under the profiler with the processors' ``ale::*`` stage ranges on (also NVTX ranges on CUDA, for Nsight
Systems: ``nsys profile -t cuda,nvtx ale-profile ...``). Writes a Chrome trace (open it in Perfetto or
``chrome://tracing``), prints the top operators / kernels and the share of time spent in attention.

    ale-profile                                     # the shipped example, random SD-shaped model, CPU
    ale-profile --device cuda --model sd15 --backend triton --trace trace.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .commands import (
    BACKENDS,
    DTYPE_NAMES,
    RANDOM_KINDS,
    CommandError,
    Parser,
    load_pipeline,
    parse,
    refuse_overwrite,
    require_extra,
    resolve_device,
    resolve_dtype,
    run_command,
)
from .config import DEFAULTS

PROG = "ale-profile"
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "coffee"
#: The longest side profiled on the CPU by default: the published size would take minutes per step there.
CPU_SIZE = 384
#: Sampling steps profiled by default: enough for Q/K injection steps and plain ones.
PROFILED_STEPS = 3
#: Rows of the top-operators table.
TOP_ROWS = 15

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


def summarize(prof, device: str, top: int = TOP_ROWS) -> ProfileSummary:
    """Top operators (CPU) or kernels (CUDA), the stage ranges' times and the share of attention."""
    from torch.autograd import DeviceType

    from ale_kernels.profiling import STAGES

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
    """The ``ale-profile`` parser (nothing heavy is imported)."""
    parser = Parser(
        prog=PROG,
        description=__doc__.split("\n\n")[0],
        epilog="An existing --trace or --summary is never overwritten without --force.",
    )
    parser.add_argument("--example", type=Path, default=EXAMPLE, help="folder with edits.json, image and masks")
    parser.add_argument(
        "--model", default="sd-shaped", help=f"{', '.join(RANDOM_KINDS)} (random weights) or a checkpoint id/folder"
    )
    parser.add_argument(
        "--steps", type=int, default=PROFILED_STEPS, help=f"sampling steps profiled (default {PROFILED_STEPS})"
    )
    parser.add_argument(
        "--size",
        type=int,
        default=None,
        help=f"longest side in px (default {CPU_SIZE} on CPU, {DEFAULTS.longest_side} on CUDA)",
    )
    parser.add_argument("--backend", default=DEFAULTS.attention_backend, choices=BACKENDS)
    parser.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available, else cpu")
    parser.add_argument("--dtype", default=None, choices=DTYPE_NAMES, help="default: float16 on cuda, float32 on cpu")
    parser.add_argument("--trace", type=Path, default=Path("ale_profile_trace.json"), help="Chrome trace to write")
    parser.add_argument("--force", action="store_true", help="overwrite an existing --trace or --summary")
    parser.add_argument("--top", type=int, default=TOP_ROWS, help=f"rows of the operator table (default {TOP_ROWS})")
    parser.add_argument("--summary", type=Path, default=None, help="also write the summary (markdown) here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``ale-profile``; returns the exit code (2 for a usage mistake, with one line on stderr)."""
    return run_command(PROG, lambda: _main(sys.argv[1:] if argv is None else argv), extra="edit")


def _main(argv: Sequence[str]) -> int:
    args = parse(build_parser(), argv)
    if isinstance(args, int):
        return args
    refuse_overwrite([p for p in (args.trace, args.summary) if p is not None], args.force, "--trace/--summary")
    if args.steps < 1:
        raise CommandError(f"--steps must be at least 1, got {args.steps}")
    require_extra("edit")
    args.device = resolve_device(args.device)
    import torch

    from ale_kernels.profiling import enable_stage_ranges

    from .pipeline import load_image

    dtype = resolve_dtype(args.dtype, args.device)
    pipe = load_pipeline(args.model, args.device, dtype, random_kinds=True, prog=PROG)
    pipe.set_progress_bar_config(disable=True)
    spec = json.loads((args.example / "edits.json").read_text())
    edit = dict(
        image=load_image(args.example / spec["image"]),
        edits=[e["edit"] for e in spec["edits"]],
        masks=[args.example / e["mask"] for e in spec["edits"]],
        longest_side=args.size or (DEFAULTS.longest_side if args.device == "cuda" else CPU_SIZE),
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
