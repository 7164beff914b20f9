"""SDXL benchmark: one whole UNet forward of an ALE edit step at SDXL's real widths, random weights.

The full SDXL base UNet (2.6B parameters: head dim 64, 10 heads at 64 x 64 and 20 at 32 x 32 for 1024 px,
1/2/10 transformer layers per level, 2048-wide text, text-time conditioning) runs one forward of an edit step:
batch 4 (``[src_uncond, tgt_uncond, src_cond, tgt_cond]``), 3 objects with RGB-CAM regions on ``tgt_cond``,
self-attention Q/K injection on. Variants:

- ``sdpa``: diffusers' stock processors (``AttnProcessor2_0``), no editing at all: the floor;
- ``ours``: :mod:`ale_kernels`' processors, ``backend="auto"``;
- ``reference``: the published ALE math, every attention map materialised;
- ``reference-layer``: the published math's largest layer alone (a self-attention at 1/2 of the latent with
  Q/K injection): a measured lower bound of its forward's peak, cheap where the whole forward is not.

Each measurement runs in a fresh process (peak RSS is per process), the variants in interleaved rounds, so
load from other work hits them alike; time and peak memory above the loaded weights are the medians over the
rounds. Peak memory is the RSS high-water mark on the CPU and ``torch.cuda.max_memory_allocated`` on a GPU, in
both cases above what the weights and the forward's inputs already hold. A CPU variant that exceeds
``--max-gb`` (on a GPU: one that runs out of GPU memory) is reported as not fitting. The published math's need
is also computed: the largest layer's ``(4 * heads, L, L)`` scores and probabilities, which it holds at once.

    python benchmarks/bench_sdxl_unet.py                          # 1024 px, fp32 on CPU, 2 rounds
    python benchmarks/bench_sdxl_unet.py --size 512 --rounds 1 --model sdxl-shaped    # a quick look
    python benchmarks/bench_sdxl_unet.py --device cuda --dtype float16 --rounds 3     # a GPU, fp16
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import sys
import time
from dataclasses import asdict, dataclass

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from ale_kernels.testing.problems import CLIP_TOKENS, object_masks, prompt_token_owner
from benchmarks import harness

VARIANTS = ("sdpa", "ours", "reference", "reference-layer")
OBJECTS = 3
BATCH = 4
#: The warm-up forward's size: thread pools and one-off buffers, at a fraction of the timed forward's cost.
WARMUP_SIZE = 256


@dataclass
class Result:
    variant: str
    ms: float | None
    peak_mb: float | None
    rounds: int
    note: str = ""


def unet_layout(model: str) -> dict:
    """The attention layout of the random SDXL ``model``: per level ``(channels, heads, transformer layers)``."""
    from ale_pipeline.random_model import _XL_KINDS

    shape = _XL_KINDS[model]
    return dict(levels=list(zip(shape.channels, shape.heads, shape.transformer_layers, strict=True)))


def published_math_gb(size: int, model: str, dtype: torch.dtype) -> float:
    """GB the published math holds at once in its largest attention layer: the ``(4 * heads, L, L)`` scores and
    their softmax (``get_attention_scores``), for a ``size`` px image."""
    element = torch.finfo(dtype).bits // 8
    worst = 0
    for level, (_, heads, _) in enumerate(unet_layout(model)["levels"]):
        if level:  # SDXL's first level has no attention
            pixels = (size // 8 >> level) ** 2
            worst = max(worst, 2 * BATCH * heads * pixels**2 * element)
    return worst / 2**30


def _inputs(unet, size: int, dtype: torch.dtype, variant: str, device: torch.device):
    """The forward's arguments at ``size`` px on ``device``: latents, text, added conditions and ALE's keywords."""
    from ale_kernels.diffusers import ale_attention_kwargs, ale_region_spec

    g = torch.Generator().manual_seed(0)
    side = size // 8
    text_dim = unet.config.cross_attention_dim
    pooled = unet.add_embedding.linear_1.in_features - 6 * unet.config.addition_time_embed_dim
    latents = torch.randn(BATCH, 4, side, side, generator=g).to(device, dtype)
    text = torch.randn(BATCH, CLIP_TOKENS, text_dim, generator=g).to(device, dtype)
    added = {
        "text_embeds": torch.randn(BATCH, pooled, generator=g).to(device, dtype),
        "time_ids": torch.tensor([[size, size, 0, 0, size, size]] * BATCH, dtype=dtype, device=device),
    }
    kwargs = None
    if variant != "sdpa":
        embeds = torch.randn(OBJECTS + 1, CLIP_TOKENS, text_dim, generator=g).to(device, dtype)
        spec = ale_region_spec(object_masks(size, OBJECTS, seed=0), prompt_token_owner(OBJECTS), embeds)
        spec.prepare((side, side), device)  # as the pipeline does before its loop
        kwargs = ale_attention_kwargs(spec, inject_qk=True)
    return latents, text, added, kwargs


def _measured(run, device: torch.device) -> dict:
    """Time and peak memory of one call of ``run`` in ms and MB: wall time (synchronised), and the memory it
    takes beyond what this process held before it (RSS on the CPU, the CUDA allocator's peak on a GPU)."""
    if device.type == "cuda":
        ms, peak_mb = harness.cuda_call_ms_and_peak_mb(run, device)
        return {"ms": ms, "peak_mb": peak_mb}
    harness.reset_peak_rss()
    before = harness.peak_rss_mb()  # the high-water mark just reset: this process's RSS now
    start = time.perf_counter()
    run()
    seconds = time.perf_counter() - start
    return {"ms": seconds * 1e3, "peak_mb": harness.peak_rss_mb() - before}


def layer_worker(size: int, model: str, dtype: torch.dtype, device: torch.device) -> dict:
    """The published math's largest layer alone: one Q/K-injected self-attention at 1/2 of the latent."""
    from diffusers.models.attention_processor import Attention

    from ale_kernels.diffusers import RegionalAttnProcessor
    from ale_kernels.diffusers.ale import QK_INJECTION_PAIRS

    channels, heads, _ = unet_layout(model)["levels"][1]
    torch.manual_seed(0)
    layer = Attention(channels, heads=heads, dim_head=channels // heads).to(device, dtype).eval()
    hidden = torch.randn(BATCH, (size // 16) ** 2, channels).to(device, dtype)
    processor = RegionalAttnProcessor("reference")
    with torch.no_grad():
        return _measured(lambda: processor(layer, hidden, None, qk_injection=QK_INJECTION_PAIRS), device)


def worker(variant: str, size: int, model: str, dtype_name: str, device_name: str = "cpu") -> dict:
    """Build the UNet, warm up, then one timed forward at ``size`` px; time and peak memory above the weights."""
    from ale_kernels.diffusers import install_regional_processors
    from ale_pipeline.random_model import random_sdxl_shaped_unet

    dtype, device = getattr(torch, dtype_name), torch.device(device_name)
    if variant == "reference-layer":
        return layer_worker(size, model, dtype, device)
    with device:  # initialised where it runs: a 2.6B-parameter random init is slow on a GPU machine's host
        unet = random_sdxl_shaped_unet(model).to(dtype)
    processors = contextlib.nullcontext()
    if variant != "sdpa":
        processors = install_regional_processors(unet, backend="reference" if variant == "reference" else "auto")

    def forward(inputs) -> None:
        latents, text, added, kwargs = inputs
        unet(latents, 500, encoder_hidden_states=text, added_cond_kwargs=added, cross_attention_kwargs=kwargs)

    # Removed on the way out, so that a caller in the same process (the tests) keeps its default backend.
    with processors, torch.no_grad():
        forward(_inputs(unet, WARMUP_SIZE, dtype, variant, device))
        inputs = _inputs(unet, size, dtype, variant, device)  # built before the mark: not the forward's cost
        return _measured(lambda: forward(inputs), device)


def _physical_gb() -> float:
    """This machine's physical memory in GB (a worker beyond it would swap, not measure)."""
    return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)


def measure(variant: str, args) -> dict | str:
    """One round of ``variant`` in a fresh process: its payload, or why there is none."""
    command = [
        sys.executable, __file__, "--worker", variant, "--size", str(args.size), "--model", args.model,
        "--dtype", args.dtype, "--max-gb", str(args.max_gb), "--device", args.device,
    ]  # fmt: skip
    done = harness.run_worker(command)
    if done.payload is not None:
        return done.payload
    if "memory" in done.message.lower() or done.returncode in (-9, 137):
        return "does not fit in GPU memory" if args.device == "cuda" else f"does not fit in {args.max_gb:g} GB"
    return f"failed: {done.message[:160]}"


def markdown(results: list[Result], need_gb: float) -> str:
    """One row per variant: median time and peak memory above the weights, both against stock SDPA."""
    floor = next((r for r in results if r.variant == "sdpa" and r.ms), None)
    rows = []
    for r in results:
        if r.ms is None:
            rows.append(
                [r.variant, r.note, "", "", "", f"{need_gb * 1024:.0f} needed" if r.variant == "reference" else ""]
            )
            continue
        time_ratio = f"{r.ms / floor.ms:.2f}x" if floor else ""
        mem_ratio = f"{r.peak_mb / floor.peak_mb:.2f}x" if floor and floor.peak_mb > 0 else ""
        rows.append([r.variant, f"{r.ms / 1e3:.1f}", time_ratio, f"{r.peak_mb:.0f}", mem_ratio, str(r.rounds)])
    header = ["variant", "s / forward", "time vs sdpa", "peak MB above weights", "memory vs sdpa", "rounds"]
    return harness.markdown_table(header, rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=1024, help="square image side in px (default 1024)")
    parser.add_argument("--model", default="sdxl", help="random SDXL kind: sdxl (full size) or sdxl-shaped")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default="float32", help="float32 (default), float16 or bfloat16")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (one process per variant each)")
    parser.add_argument(
        "--max-gb", type=float, default=_physical_gb(),
        help="address-space limit of each CPU worker in GB (default: this machine's physical memory)",
    )  # fmt: skip
    parser.add_argument("--json", default=None)
    parser.add_argument("--out-md", default=None)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA GPU is visible to torch")
    if args.worker:
        # The CUDA driver reserves far more address space than it uses: a GPU worker runs without the limit.
        if args.device == "cpu":
            limit = int(args.max_gb * 2**30)
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        print(json.dumps(worker(args.worker, args.size, args.model, args.dtype, args.device)))
        return

    import ale_kernels

    variants = args.variants.split(",")
    need = published_math_gb(args.size, args.model, getattr(torch, args.dtype))
    env = harness.environment(
        args.device, dtype=args.dtype, ale_kernels=ale_kernels.__version__, model=args.model, size=args.size,
        objects=OBJECTS, rounds=args.rounds,
    )  # fmt: skip
    title = f"ALE on SDXL: one UNet forward at {args.size} px (batch 4, {OBJECTS} objects, Q/K injection)"
    print(harness.header_line(env, title), flush=True)
    samples: dict[str, list[dict]] = {v: [] for v in variants}
    notes: dict[str, str] = {}
    for round_ in range(args.rounds):
        for variant in variants:
            if variant in notes:
                continue  # it did not fit (or failed): once is enough
            got = measure(variant, args)
            if isinstance(got, str):
                notes[variant] = got
                print(f"  round {round_ + 1} {variant}: {got}", flush=True)
                continue
            samples[variant].append(got)
            print(f"  round {round_ + 1} {variant}: {got['ms'] / 1e3:.1f} s, {got['peak_mb']:.0f} MB", flush=True)
    results = []
    for variant in variants:
        runs = samples[variant]
        if not runs:
            results.append(Result(variant, None, None, 0, notes.get(variant, "")))
            continue
        ms = statistics.median(r["ms"] for r in runs)
        peak = statistics.median(r["peak_mb"] for r in runs)
        results.append(Result(variant, ms, peak, len(runs), notes.get(variant, "")))
    harness.finish(env)
    extra = [
        f"the published math needs {need:.2f} GB for its largest layer's scores and probabilities alone "
        f"({args.dtype}, {args.size} px)"
    ]
    ours = next((r for r in results if r.variant == "ours" and r.peak_mb), None)
    if ours:
        extra.append(f"that is {need * 1024 / ours.peak_mb:.1f}x our whole forward's peak above the weights")
    harness.publish(
        env, markdown(results, need), [asdict(r) for r in results], extra, title=title, json_path=args.json,
        md_path=args.out_md,
    )  # fmt: skip


if __name__ == "__main__":
    main()
