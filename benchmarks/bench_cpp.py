"""The C++ CPU kernel (``backend="cpp"``) against the ``torch`` backend and the reference at SD1.5 shapes.

Prints a markdown table: median time per call of each backend, the ratios torch / cpp and reference / cpp
(above 1: cpp is faster), and cpp's max abs error against a float64 oracle. Inputs are ALE's RGB-CAM
cross-attention as :func:`ale_kernels.testing.problems.make_inputs` draws them: H = 8 heads, S = 77 CLIP
tokens, 2 to 4 regions (objects plus the background) whose dilated masks overlap, token owners as a prompt
"obj0 words and obj1 words ..." makes them, queries in diffusers' ``(B, L, H*D)`` layout, fp32.

    python benchmarks/bench_cpp.py                     # SD1.5 at 768 px: L = 9216 / 2304 / 576
    python benchmarks/bench_cpp.py --quick             # one shape
    python benchmarks/bench_cpp.py --no-reference      # do not time the (slow, memory-hungry) reference
    python benchmarks/bench_cpp.py --threads 1         # one thread: steadier on a shared machine

Exits with status 1 when a backend's error is above what the tolerance policy allows.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ale_kernels import _cpp, region_attention
from ale_kernels.testing.problems import CLIP_TOKENS, REGION_COUNTS, SD15_SHAPES, Inputs, make_inputs
from benchmarks import harness


def backend_runner(inp: Inputs, backend: str, mask_value: float) -> harness.Runner:
    """``region_attention`` on ``inp`` with ``backend``, as a no-argument call."""
    return lambda: region_attention(
        inp.q, inp.k, inp.v, inp.q_region, q_cover=inp.q_cover, token_owner=inp.token_owner,
        mask_value=mask_value, backend=backend,
    )  # fmt: skip


def make_case(length: int, head_dim: int, regions: int, backends: list[str], args: argparse.Namespace) -> harness.Case:
    """One shape's comparison: the backends on the same inputs, the float64 reference as the oracle."""
    inp = make_inputs(length, head_dim, regions, B=args.batch, H=args.heads, layout="diffusers")
    return harness.Case(
        params={"L": length, "D": head_dim, "R": regions},
        impls={b: (lambda b=b: backend_runner(inp, b, args.mask_value)) for b in backends},
        dtype=torch.float32,
        oracle=backend_runner(inp.to(torch.float64), "reference", args.mask_value),
        reference_run=backend_runner(inp, "reference", args.mask_value),
        baseline="cpp",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--regions", type=int, nargs="+", default=list(REGION_COUNTS))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--mask-value", type=float, default=-100.0, help="-100 as published; -inf also works")
    parser.add_argument("--quick", action="store_true", help="only L = 9216, D = 40, R = 3")
    parser.add_argument("--no-reference", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    parser.add_argument("--out-md", type=Path, default=None, help="also write the header and table as markdown")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    if args.threads:
        torch.set_num_threads(args.threads)

    if not _cpp.load():
        sys.exit(f"the C++ kernel is unavailable: {_cpp.failure()}")
    shapes = SD15_SHAPES[:1] if args.quick else SD15_SHAPES
    region_counts = [3] if args.quick else args.regions
    backends = ["cpp", "torch"] + ([] if args.no_reference else ["reference"])
    simd = {0: "plain x86-64/generic", 1: "AVX2+FMA", 2: "AVX-512"}[_cpp.simd_level()]
    env = harness.environment(
        "cpu", cpp_kernel=simd, batch=args.batch, heads=args.heads, tokens=CLIP_TOKENS, dtype="float32",
        mask_value=args.mask_value, repeats=args.repeats,
    )  # fmt: skip
    print(harness.header_line(env), flush=True)

    rows: list[harness.Row] = []
    lines = []
    for length, head_dim in shapes:
        for regions in region_counts:
            case_rows = harness.run_case(make_case(length, head_dim, regions, backends, args), "cpu", args.repeats)
            rows += case_rows
            ms = {r.impl: r.time_ms for r in case_rows}
            if any(ms[b] is None for b in backends):
                lines.append([str(length), str(head_dim), str(regions), *(harness.num(ms[b], ".1f") for b in backends)])
                continue
            ratios = [f"{ms[b] / ms['cpp']:.2f}x" for b in backends[1:]]
            cpp_err = next(r for r in case_rows if r.impl == "cpp")
            err = harness.num(cpp_err.max_err, ".1e") + (" (!)" if cpp_err.flagged else "")
            lines.append([str(length), str(head_dim), str(regions), *(f"{ms[b]:.1f}" for b in backends), *ratios, err])
            print(f"  L={length} D={head_dim} R={regions}: " + ", ".join(f"{b} {ms[b]:.1f} ms" for b in backends))
    harness.finish(env)

    header = ["L", "D", "R", *(f"{b} ms" for b in backends), *(f"{b} / cpp" for b in backends[1:]), "cpp max err"]
    notes = harness.error_notes(rows) + harness.reliability_warnings(env, [r.spread_pct for r in rows])
    table = harness.markdown_table(header, [line + [""] * (len(header) - len(line)) for line in lines])
    harness.publish(env, table, [r.as_dict() for r in rows], notes, json_path=args.json, md_path=args.out_md)
    return 1 if any(r.flagged or r.error for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
