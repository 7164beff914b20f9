"""Processor benchmark: all attention work of one UNet forward of an ALE edit at SD1.5 (or SDXL) shapes.

One SD1.5 UNet forward runs 16 transformer blocks, each with a self-attention (``attn1``) and a
cross-attention (``attn2``) layer. An ALE edit runs them on a batch of 4 (``[src_uncond, tgt_uncond,
src_cond, tgt_cond]``) with RGB-CAM regions on ``tgt_cond`` and self-attention Q/K injection on. This script
builds SD1.5-shaped ``Attention`` layers (8 heads, head dims 40/80/160, 768-dim text) with random weights,
runs every one of the 32 layer calls of one UNet forward through a processor, and reports time and peak
memory:

- ``reference``: the published ALE processors' math (materialised scores for every layer);
- ``ours``: :class:`~ale_kernels.diffusers.RegionalAttnProcessor` with ``backend="auto"``;
- ``sdpa``: diffusers' stock ``AttnProcessor2_0`` with no editing at all (the floor).

Each variant runs in its own process, so peak memory is that variant's alone (peak RSS on CPU,
``torch.cuda.max_memory_allocated`` on a GPU). A variant that exceeds the memory limit (``--max-gb``,
default 20 GB on CPU) is reported as not fitting, which is what the reference does at 768 px in fp32.

With ``--model sdxl`` the layers are SDXL base's: 70 transformer blocks (140 attention calls), head dim 64
with 10 heads at 1/2 of the latent and 20 at 1/4, 2048-wide text.

    python benchmarks/bench_processors.py                 # 512 and 768 px, fp32 on CPU
    python benchmarks/bench_processors.py --sizes 512 --json out.json
    python benchmarks/bench_processors.py --model sdxl --sizes 1024
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
from dataclasses import asdict, dataclass

import torch

# Run as a script, the repository root is not on sys.path: put it there for the harness.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from ale_kernels.testing.problems import (
    CLIP_TOKENS,
    HEADS,
    TEXT_DIM,
    object_masks,
    prompt_token_owner,
    sd15_attention_layers,
)
from benchmarks import harness

VARIANTS = ("reference", "ours", "sdpa")
OBJECTS = 3
MODELS = ("sd15", "sdxl")
#: SDXL base: (latent factor, channels, heads, transformer blocks) of each level with attention; the down path
#: has 2 blocks per level and the up path 3, each with 2 (level 1) or 10 (level 2) transformer layers, and the
#: mid block 10 at level 2.
SDXL_LEVELS = ((2, 640, 10, 2 * 5), (4, 1280, 20, 10 * 5 + 10))
SDXL_TEXT_DIM = 2048


def attention_layers(model: str, image_size: int) -> tuple[list[tuple[int, int, int]], int]:
    """``(pixels, channels, heads)`` of every transformer block of one UNet forward at ``image_size`` px, and
    the text width, for ``model`` (``sd15`` or ``sdxl``)."""
    if model == "sd15":
        return [(pixels, channels, HEADS) for pixels, channels in sd15_attention_layers(image_size)], TEXT_DIM
    if model != "sdxl":
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    side = image_size // 8
    layers = []
    for factor, channels, heads, blocks in SDXL_LEVELS:
        layers += [((side // factor) ** 2, channels, heads)] * blocks
    return layers, SDXL_TEXT_DIM


@dataclass
class Result:
    variant: str
    image_size: int
    ms: float | None
    peak_mb: float | None
    note: str = ""
    spread_pct: float | None = None


def _ale_kwargs(pixels_side: int, device: torch.device, text_dim: int = TEXT_DIM):
    """The RegionSpec of an edit with ``OBJECTS`` objects, and the processors' ALE keyword arguments."""
    from ale_kernels.diffusers import ale_attention_kwargs, ale_region_spec

    g = torch.Generator().manual_seed(0)
    masks = object_masks(pixels_side * 8, OBJECTS, seed=0)  # at image resolution, as an edit gives them
    embeds = torch.randn(OBJECTS + 1, CLIP_TOKENS, text_dim, generator=g)
    spec = ale_region_spec(masks, prompt_token_owner(OBJECTS), embeds.to(device))
    return spec, ale_attention_kwargs(spec, inject_qk=True)


def _build(image_size: int, dtype: torch.dtype, device: torch.device, model: str = "sd15"):
    from diffusers.models.attention_processor import Attention

    torch.manual_seed(0)
    layers, text_dim = attention_layers(model, image_size)
    modules = {}
    for channels, heads in sorted({(c, h) for _, c, h in layers}):
        self_attn = Attention(channels, heads=heads, dim_head=channels // heads)
        cross_attn = Attention(channels, cross_attention_dim=text_dim, heads=heads, dim_head=channels // heads)
        modules[channels] = (self_attn.to(device, dtype).eval(), cross_attn.to(device, dtype).eval())
    hidden = {(px, c): torch.randn(4, px, c, device=device, dtype=dtype) for px, c, _ in set(layers)}
    text = torch.randn(4, CLIP_TOKENS, text_dim, device=device, dtype=dtype)
    return layers, modules, hidden, text


def _one_forward(processor, layers, modules, hidden, text, kwargs) -> None:
    """The attention calls of one UNet forward (32 for SD1.5, 140 for SDXL)."""
    for pixels, channels, _ in layers:
        self_attn, cross_attn = modules[channels]
        processor(self_attn, hidden[(pixels, channels)], None, **kwargs.get("self", {}))
        processor(cross_attn, hidden[(pixels, channels)], text, **kwargs.get("cross", {}))


def worker(variant: str, image_size: int, dtype_name: str, device_name: str, repeats: int, model: str = "sd15") -> dict:
    """Run one variant in this process and return its time and peak memory."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    from ale_kernels.diffusers import RegionalAttnProcessor

    device = torch.device(device_name)
    dtype = getattr(torch, dtype_name)
    layers, modules, hidden, text = _build(image_size, dtype, device, model)
    kwargs = {}
    if variant == "sdpa":
        processor = AttnProcessor2_0()
    else:
        processor = RegionalAttnProcessor("reference" if variant == "reference" else "auto")
        spec, ale = _ale_kwargs(image_size // 8, device, text.shape[-1])
        spec.prepare((image_size // 8, image_size // 8), device)
        kwargs = {"self": {"qk_injection": ale["qk_injection"]}, "cross": {"regions": ale["regions"]}}

    with torch.no_grad():
        # Warm-up: thread pools, one-off buffers, and on CUDA Triton's autotuning.
        _one_forward(processor, layers, modules, hidden, text, kwargs)
        harness.sync(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        else:
            harness.reset_peak_rss()
            before = harness.peak_rss_mb()
        timing = harness.time_interleaved(
            {variant: lambda: _one_forward(processor, layers, modules, hidden, text, kwargs)},
            repeats,
            device,
            warmup_rounds=0,  # warmed up above, before the high-water mark was reset
        )[variant]
        if device.type == "cuda":
            peak = (torch.cuda.max_memory_allocated() - before) / 2**20
        else:
            peak = harness.peak_rss_mb() - before
    return {"ms": timing.median_ms, "spread_pct": timing.spread_pct, "peak_mb": peak}


def run_isolated(variant: str, image_size: int, args) -> Result:
    """Run ``variant`` in a fresh process under a memory limit; a variant that does not fit says so."""
    command = [
        sys.executable, __file__, "--worker", variant, "--sizes", str(image_size), "--dtype", args.dtype,
        "--device", args.device, "--repeats", str(args.repeats), "--max-gb", str(args.max_gb), "--model", args.model,
    ]  # fmt: skip
    done = harness.run_worker(command)
    if done.payload is None:
        out_of_memory = "memory" in done.message.lower() or done.returncode in (-9, 137)
        note = f"failed: {done.message[:120]}"
        if out_of_memory:
            note = f"does not fit in {args.max_gb:g} GB"
            if variant == "reference":
                need = _reference_gb(image_size, args)
                note += f" (its largest layer's scores and probabilities alone: {need:.1f} GB)"
        return Result(variant, image_size, None, None, note)
    payload = done.payload
    return Result(variant, image_size, payload["ms"], payload["peak_mb"], spread_pct=payload["spread_pct"])


def _reference_gb(image_size: int, args) -> float:
    """Bytes of one materialised (4 * heads, L, L) score tensor and its softmax at the largest layer."""
    layers, _ = attention_layers(getattr(args, "model", "sd15"), image_size)
    element = torch.finfo(getattr(torch, args.dtype)).bits // 8
    return max(2 * 4 * heads * pixels**2 * element for pixels, _, heads in layers) / 2**30


def markdown(results: list[Result]) -> str:
    """One row per image size and variant: time and peak memory, and both against the reference."""
    lines = []
    for size in sorted({r.image_size for r in results}):
        rows = [r for r in results if r.image_size == size]
        ref = next((r for r in rows if r.variant == "reference"), None)
        for r in rows:
            if r.ms is None:
                lines.append([f"{size} px", r.variant, r.note, "", "", "", ""])
                continue
            speed = f"{ref.ms / r.ms:.2f}x" if ref and ref.ms else "reference does not fit"
            mem = f"{100 * r.peak_mb / ref.peak_mb:.1f}%" if ref and ref.peak_mb else ""
            spread = harness.num(r.spread_pct, ".0f")
            lines.append([f"{size} px", r.variant, f"{r.ms:.0f}", spread, speed, f"{r.peak_mb:.0f}", mem])
    header = ["image", "variant", "time (ms)", "± %", "speed-up vs reference", "peak attention memory (MB)"]
    return harness.markdown_table([*header, "memory vs reference"], lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="512,768", help="image sizes in px, comma-separated")
    parser.add_argument("--model", choices=MODELS, default="sd15", help="the UNet whose attention layers run")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, help="float32 (CPU default) or float16 (GPU default)")
    parser.add_argument("--repeats", type=int, default=None, help="timed forwards per variant (median)")
    parser.add_argument("--max-gb", type=float, default=20.0, help="memory limit of each variant's process (CPU)")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--out-md", default=None, help="also write the header and table as markdown")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.dtype = args.dtype or ("float16" if args.device == "cuda" else "float32")
    args.repeats = args.repeats or (5 if args.device == "cuda" else 1)
    sizes = [int(s) for s in args.sizes.split(",")]

    if args.worker:
        if args.device == "cpu":
            limit = int(args.max_gb * 2**30)
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        print(json.dumps(worker(args.worker, sizes[0], args.dtype, args.device, args.repeats, args.model)))
        return

    import ale_kernels

    env = harness.environment(
        args.device, dtype=args.dtype, ale_kernels=ale_kernels.__version__, repeats=args.repeats, objects=OBJECTS,
        model=args.model,
    )  # fmt: skip
    blocks = len(attention_layers(args.model, 512)[0])
    title = (
        f"ALE processor benchmark: one {args.model} UNet forward's attention ({blocks} self + {blocks} cross layers, "
        "batch 4, Q/K injection)"
    )
    print(harness.header_line(env, title), flush=True)
    results = []
    for size in sizes:
        for variant in args.variants.split(","):
            result = run_isolated(variant, size, args)
            print(f"  {size} px {variant}: " + (f"{result.ms:.0f} ms" if result.ms else result.note), flush=True)
            results.append(result)
    harness.finish(env)
    notes = harness.reliability_warnings(env, [r.spread_pct for r in results]) if args.device == "cpu" else []
    rows = [asdict(r) for r in results]
    harness.publish(env, markdown(results), rows, notes, title=title, json_path=args.json, md_path=args.out_md)


if __name__ == "__main__":
    main()
