"""Self-attention with Q/K injection: ``shared_qk_attention`` against what people use today.

ALE's target branch attends with the source branch's queries and keys and its own values, so a source/target
pair needs two attentions that share one probability matrix. Compared, on ``(B, H, L, D)`` inputs at SD1.5's
self-attention shapes (L = Lk = 9216 / 2304 / 576 with D = 40 / 80 / 160 at 768 px, 8 heads):

- ``reference``: the published math, materialised (scores, softmax, two ``P @ V``);
- ``sdpa_x2``: two ``F.scaled_dot_product_attention`` calls (flash on CUDA), scores computed twice;
- ``torch`` / ``triton``: this package's backends (one softmax pass feeding both value streams).

Reported: median ms, speed-up against ``sdpa_x2``, TFLOP/s counting the useful work of the two attentions
(4 * B * H * L * Lk * D each), and max abs error against a float64 oracle. CUDA timings use
``triton.testing.do_bench``; CPU uses the median of ``--repeats`` interleaved calls.

    python benchmarks/bench_self_attention.py --device cuda --json out.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ale_kernels import shared_qk_attention
from ale_kernels.testing.problems import HEADS, SD15_SHAPES, make_shared_qk_problem
from benchmarks import harness

SHAPES = {f"{length}x{head_dim}": (length, head_dim) for length, head_dim in SD15_SHAPES}
#: 9216 x 9216 materialised scores do not belong in a default CPU run.
CPU_SHAPES = [name for name, (length, _) in SHAPES.items() if length < 9216]


def implementations(q: torch.Tensor, k: torch.Tensor, v_src: torch.Tensor, v_tgt: torch.Tensor) -> dict:
    """The compared calls on ``(B, H, L, D)`` queries, ``(B, H, Lk, D)`` keys and the source's and target's
    ``(B, H, Lk, D)`` values; each returns the two ``(B, H, L, D)`` outputs."""
    return {
        "reference": lambda: shared_qk_attention(q, k, [v_src, v_tgt], backend="reference"),
        "sdpa_x2": lambda: (F.scaled_dot_product_attention(q, k, v_src), F.scaled_dot_product_attention(q, k, v_tgt)),
        "torch": lambda: shared_qk_attention(q, k, [v_src, v_tgt], backend="torch"),
        "triton": lambda: shared_qk_attention(q, k, [v_src, v_tgt], backend="triton"),
    }


def make_case(shape: str, impls: list[str], args: argparse.Namespace, dtype: torch.dtype) -> harness.Case:
    """One shape's comparison, speed-ups against two SDPA calls."""
    length, head_dim = SHAPES[shape]
    q, k, (v_src, v_tgt) = make_shared_qk_problem(
        args.batch, args.heads, length, length, head_dim, dtype=dtype, device=args.device, seed=0
    )
    calls = implementations(q, k, v_src, v_tgt)
    q64, k64, v64 = q.double(), k.double(), [v_src.double(), v_tgt.double()]
    return harness.Case(
        params={"shape": shape},
        impls={name: (lambda call=calls[name]: call) for name in impls},
        dtype=dtype,
        oracle=lambda: shared_qk_attention(q64, k64, v64, backend="reference"),
        baseline="sdpa_x2",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default=None, choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--shapes", nargs="+", default=None, choices=sorted(SHAPES))
    parser.add_argument("--batch", type=int, default=1, help="source/target pairs (default 1)")
    parser.add_argument("--heads", type=int, default=HEADS)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--out-md", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    cuda = args.device == "cuda"
    dtype = getattr(torch, args.dtype or ("float16" if cuda else "float32"))
    shapes = args.shapes or (list(SHAPES) if cuda else CPU_SHAPES)
    impls = ["reference", "sdpa_x2", "torch"] + (["triton"] if cuda else [])
    env = harness.environment(args.device, dtype=str(dtype)[6:], batch=args.batch, heads=args.heads)

    rows: list[harness.Row] = []
    for shape in shapes:
        for row in harness.run_case(make_case(shape, impls, args, dtype), args.device, args.repeats):
            length, head_dim = SHAPES[shape]
            flops = 2 * 4 * args.batch * args.heads * length * length * head_dim
            row.extra = {"tflops": flops / row.time_ms / 1e9 if row.time_ms else None}
            print(f"  {shape:>8} {row.impl:<10} {harness.num(row.time_ms, '9.3f')} ms", flush=True)
            rows.append(row)
    harness.finish(env)

    table = harness.markdown_table(
        ["L x D", "impl", "ms", "± %", "vs sdpa_x2", "TFLOP/s", "max err"],
        [
            [
                r.params["shape"],
                r.impl,
                harness.num(r.time_ms, ".3f") if r.error is None else f"n/a ({r.error})",
                harness.num(r.spread_pct, ".0f"),
                harness.num(r.speedup, ".2f", "x"),
                harness.num(r.extra.get("tflops"), ".3g"),
                harness.num(r.max_err, ".1e") + (" (!)" if r.flagged else ""),
            ]
            for r in rows
        ],
    )
    notes = harness.error_notes(rows)
    if not cuda:
        notes += harness.reliability_warnings(env, [r.spread_pct for r in rows])
    harness.publish(
        env,
        table,
        [r.as_dict() for r in rows],
        notes,
        title="self-attention with Q/K injection",
        json_path=args.json,
        md_path=args.out_md,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
