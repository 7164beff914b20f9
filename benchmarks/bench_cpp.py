"""The C++ CPU kernel (``backend="cpp"``) against the ``torch`` backend and the reference at SD1.5 shapes.

Prints a markdown table: median time per call of each backend, and the ratios torch / cpp and
reference / cpp (above 1: cpp is faster). Shapes are ALE's RGB-CAM cross-attention: H = 8 heads, S = 77
CLIP tokens, 2 to 4 regions (objects plus the background), covers overlapping on a band between objects,
token owners as the published code makes them, queries in diffusers' ``(B, L, H*D)`` layout, fp32.

    python benchmarks/bench_cpp.py                     # SD1.5 at 768 px: L = 9216 / 2304 / 576
    python benchmarks/bench_cpp.py --quick             # one shape
    python benchmarks/bench_cpp.py --no-reference      # skip the (slow, memory-hungry) reference
    python benchmarks/bench_cpp.py --threads 1         # one thread: steadier on a shared machine
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ale_kernels import _cpp, region_attention

#: (L, D) per SD1.5 UNet level at 768 x 768: 96 x 96 latents with D = 40, then 48 x 48 / 80, 24 x 24 / 160.
SD_SHAPES = [(9216, 40), (2304, 80), (576, 160)]


def make_inputs(batch: int, heads: int, length: int, head_dim: int, regions: int, tokens: int = 77, seed: int = 0):
    """RGB-CAM inputs: ``regions - 1`` objects in vertical stripes with an overlap band, the background last."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, length, heads * head_dim, generator=g).view(batch, length, heads, head_dim).transpose(1, 2)
    k = torch.randn(batch, heads, tokens, head_dim, generator=g)
    v = torch.randn(batch, regions, heads, tokens, head_dim, generator=g)
    objects = regions - 1
    side = int(length**0.5)
    col = torch.arange(length) % side
    stripe = (col * regions // side).clamp(max=regions - 1)  # region of each pixel, background last
    q_region = stripe.clone()
    q_cover = torch.where(stripe < objects, 1 << stripe.clamp(max=max(objects - 1, 0)), 0).to(torch.int32)
    if objects > 1:  # a band where object 0's dilated mask reaches into object 1: two bits, routed to background
        band = (col >= side // regions - side // 32) & (col < side // regions + side // 32)
        q_cover = torch.where(band, q_cover | 0b11, q_cover)
        q_region = torch.where(band, regions - 1, q_region)
    token_owner = torch.full((tokens,), -1)
    for j in range(objects):  # each object's phrase owns 3 tokens after BOS
        token_owner[1 + 4 * j : 4 + 4 * j] = j
    return q, k, v, q_region, q_cover, token_owner


def time_call(fn, repeats: int) -> float:
    """Median wall time of ``fn()`` in ms after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--regions", type=int, nargs="+", default=[2, 3, 4])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--mask-value", type=float, default=-100.0, help="-100 as published; -inf also works")
    parser.add_argument("--quick", action="store_true", help="only L = 9216, D = 40, R = 3")
    parser.add_argument("--no-reference", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    if not _cpp.load():
        sys.exit(f"the C++ kernel is unavailable: {_cpp.failure()}")
    shapes = SD_SHAPES[:1] if args.quick else SD_SHAPES
    region_counts = [3] if args.quick else args.regions
    backends = ["cpp", "torch"] + ([] if args.no_reference else ["reference"])
    simd = {0: "plain x86-64/generic", 1: "AVX2+FMA", 2: "AVX-512"}[_cpp.simd_level()]
    load = os.getloadavg()
    print(
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"cpp kernel: {simd}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
        f"B={args.batch} H={args.heads} S=77 fp32 mask_value={args.mask_value}, median of {args.repeats}\n"
    )
    header = "| L | D | R | " + " | ".join(f"{b} ms" for b in backends) + " | torch / cpp |"
    header += "" if args.no_reference else " reference / cpp |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for length, head_dim in shapes:
        for regions in region_counts:
            inputs = make_inputs(args.batch, args.heads, length, head_dim, regions)
            q, k, v, q_region, q_cover, owner = inputs
            outs, times = {}, {}
            for backend in backends:
                call = partial(
                    region_attention, q, k, v, q_region, q_cover=q_cover, token_owner=owner,
                    mask_value=args.mask_value, backend=backend,
                )  # fmt: skip
                outs[backend] = call()
                times[backend] = time_call(call, args.repeats if backend != "reference" else max(3, args.repeats // 2))
            for backend in backends[1:]:
                torch.testing.assert_close(outs["cpp"], outs[backend], atol=1e-4, rtol=1e-4)
            row = f"| {length} | {head_dim} | {regions} | " + " | ".join(f"{times[b]:.1f}" for b in backends)
            row += f" | {times['torch'] / times['cpp']:.2f}x |"
            row += "" if args.no_reference else f" {times['reference'] / times['cpp']:.1f}x |"
            print(row, flush=True)
    load = os.getloadavg()
    print(f"\nload average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
