"""Self-attention with Q/K injection: ``shared_qk_attention`` against what people use today.

ALE's target branch attends with the source branch's queries and keys and its own values, so a source/target
pair needs two attentions that share one probability matrix. Compared, on ``(B, H, L, D)`` inputs at SD1.5's
self-attention shapes (L = Lk = 9216 / 2304 / 576 with D = 40 / 80 / 160 at 768 px, 8 heads):

- ``reference``: the published math, materialised (scores, softmax, two ``P @ V``);
- ``sdpa_x2``: two ``F.scaled_dot_product_attention`` calls (flash on CUDA), scores computed twice;
- ``torch`` / ``triton``: this package's backends (one softmax pass feeding both value streams).

Reported: median ms, speed-up against ``sdpa_x2`` and TFLOP/s, counting the useful work of the two
attentions (4 * B * H * L * Lk * D each). CUDA timings use ``triton.testing.do_bench``; CPU uses the median of
``--repeats`` calls.

    python benchmarks/bench_self_attention.py --device cuda --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ale_kernels import shared_qk_attention
from benchmarks.bench_cpp import time_call

SHAPES = {"9216x40": (9216, 40), "2304x80": (2304, 80), "576x160": (576, 160)}


def median_ms(fn, device: str, repeats: int) -> float:
    """Median time of ``fn()`` in ms (``do_bench`` on CUDA, which flushes L2 between calls)."""
    if device == "cuda":
        import triton.testing

        return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))
    return time_call(fn, repeats)


def implementations(q: torch.Tensor, k: torch.Tensor, v_src: torch.Tensor, v_tgt: torch.Tensor) -> dict:
    """The compared calls on ``(B, H, L, D)`` queries, keys and the source's and target's values."""
    return {
        "reference": lambda: shared_qk_attention(q, k, [v_src, v_tgt], backend="reference"),
        "sdpa_x2": lambda: (F.scaled_dot_product_attention(q, k, v_src), F.scaled_dot_product_attention(q, k, v_tgt)),
        "torch": lambda: shared_qk_attention(q, k, [v_src, v_tgt], backend="torch"),
        "triton": lambda: shared_qk_attention(q, k, [v_src, v_tgt], backend="triton"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default=None, choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--shapes", nargs="+", default=None, choices=sorted(SHAPES))
    parser.add_argument("--batch", type=int, default=1, help="source/target pairs (default 1)")
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    cuda = args.device == "cuda"
    dtype = getattr(torch, args.dtype or ("float16" if cuda else "float32"))
    shapes = args.shapes or (list(SHAPES) if cuda else ["2304x80", "576x160"])
    impls = ["reference", "sdpa_x2", "torch"] + (["triton"] if cuda else [])

    rows = []
    for shape in shapes:
        length, head_dim = SHAPES[shape]
        g = torch.Generator(device=args.device).manual_seed(0)
        q, k, v_src, v_tgt = (
            torch.randn(args.batch, args.heads, length, head_dim, generator=g, device=args.device, dtype=dtype)
            for _ in range(4)
        )
        expected = shared_qk_attention(q, k, [v_src, v_tgt], backend="reference")
        flops = 2 * 4 * args.batch * args.heads * length * length * head_dim
        calls = implementations(q, k, v_src, v_tgt)
        times = {}
        for impl in impls:
            got = calls[impl]()
            error = max((a.float() - b.float()).abs().max().item() for a, b in zip(got, expected, strict=True))
            times[impl] = median_ms(calls[impl], args.device, args.repeats)
            rows.append(dict(shape=shape, impl=impl, ms=times[impl], tflops=flops / times[impl] / 1e9, max_err=error))
            print(f"  {shape:>8} {impl:<10} {times[impl]:9.3f} ms  max err {error:.1e}", flush=True)
        for row in rows[-len(impls) :]:
            row["speedup_vs_sdpa_x2"] = times["sdpa_x2"] / row["ms"]

    name = torch.cuda.get_device_name() if cuda else "CPU"
    header = f"self-attention with Q/K injection | {name} | {str(dtype)[6:]} | B={args.batch} H={args.heads}"
    lines = [header, "", "| L x D | impl | ms | vs sdpa_x2 | TFLOP/s | max err |", "|---|---|---|---|---|---|"]
    for r in rows:
        cells = [r["shape"], r["impl"], f"{r['ms']:.3f}", f"{r['speedup_vs_sdpa_x2']:.2f}x", f"{r['tflops']:.1f}"]
        lines.append("| " + " | ".join([*cells, f"{r['max_err']:.1e}"]) + " |")
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps(dict(header=header, rows=rows), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
