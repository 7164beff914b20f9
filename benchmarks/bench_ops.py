"""Benchmark region-routed cross-attention implementations at Stable Diffusion 1.5 shapes.

Compares, for every shape, the materialised reference (the published ALE math) with the ways a user could
compute the same thing: a per-region loop of masked SDPA, FlexAttention under ``torch.compile``, and this
package's ``torch``, ``cpp`` and ``triton`` backends (xformers too, when it is installed). Prints one markdown
table with time, speed-up vs the reference, peak extra memory and max abs error vs a float64 oracle.

The same script runs on CPU and on a CUDA GPU::

    python benchmarks/bench_ops.py --quick --no-flex     # smoke test, under a minute on CPU
    python benchmarks/bench_ops.py                       # 3 shapes x R in {2, 3, 4}
    python benchmarks/bench_ops.py --device cuda --json results.json --out-md results.md

On CPU the peak memory of each implementation is measured in a fresh process (``--worker``, hidden), since
the RSS high-water mark is per process.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
from collections.abc import Callable

import torch
import torch.nn.functional as F

import ale_kernels
from ale_kernels.testing.problems import CLIP_TOKENS, HEADS, REGION_COUNTS, SD15_SHAPES, Inputs, make_inputs

# Run as a script, the repository root is not on sys.path: put it there for the harness.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import harness

# HBM bandwidth (GB/s) by device-name substrings, checked in order (the first entry whose words all occur);
# None: not in the table, leave the column blank (GH200's name contains "H200" but it is not one).
HBM_PEAK_GBPS: tuple[tuple[tuple[str, ...], float | None], ...] = (
    (("GH200",), None),
    (("H200",), 4800.0),
    (("H100", "PCIE"), 2000.0),
    (("H100", "HBM3"), 3350.0),
    (("H100", "SXM"), 3350.0),
    (("A100", "80GB"), 2039.0),
    (("A100", "40GB"), 1555.0),
)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


# ----------------------------------------------------------------------------------------------------------
# Implementations. Each ``prepare_*`` takes the inputs and returns a no-argument runner giving the
# (B, H, L, D) output; everything that depends only on the shape (compilation) happens in the runner's first
# call, which is timed separately. Routing-derived work (masks, biases) stays inside every runner, as every
# backend redoes it per call.

Runner = Callable[[], torch.Tensor]


def _backend_runner(inp: Inputs, mask_value: float, backend: str) -> Runner:
    def run() -> torch.Tensor:
        return ale_kernels.region_attention(
            inp.q,
            inp.k,
            inp.v,
            inp.q_region,
            q_cover=inp.q_cover,
            token_owner=inp.token_owner,
            scale=inp.scale,
            mask_value=mask_value,
            backend=backend,
        )

    return run


def prepare_reference(inp: Inputs, mask_value: float) -> Runner:
    """The published math, materialised: full scores, additive mask, one ``P @ V`` per region."""
    return _backend_runner(inp, mask_value, "reference")


def prepare_torch_backend(inp: Inputs, mask_value: float) -> Runner:
    """This package's region-partitioned SDPA."""
    return _backend_runner(inp, mask_value, "torch")


def prepare_triton_backend(inp: Inputs, mask_value: float) -> Runner:
    """This package's fused Triton kernel (CUDA only)."""
    return _backend_runner(inp, mask_value, "triton")


def prepare_cpp_backend(inp: Inputs, mask_value: float) -> Runner:
    """``backend="cpp"``: the C++ CPU kernel of csrc/ (the torch backend, with a warning, if it cannot build)."""
    return _backend_runner(inp, mask_value, "cpp")


def _token_bias(inp: Inputs, mask_value: float, lead: tuple[int, ...] = ()) -> torch.Tensor:
    """``(*lead, L, S)`` additive bias: 0 where pixel ``p`` may see token ``t`` (a shared token, or one whose
    owner's bit is in ``p``'s cover), ``mask_value`` elsewhere."""
    owner = inp.token_owner.to(torch.int64)
    owned_bit = (inp.q_cover.to(torch.int64)[:, None] >> owner.clamp(min=0)[None, :]) & 1
    allowed = (owner[None, :] < 0) | (owned_bit == 1)
    length, tokens = allowed.shape
    # Fused CUDA kernels want the bias rows 16-element aligned (else SDPA warns and copies; xformers
    # refuses): allocate padded and slice, as their docs advise.
    padded = torch.zeros((*lead, length, -(-tokens // 16) * 16), dtype=inp.q.dtype, device=inp.q.device)
    return padded[..., :tokens].masked_fill_(~allowed, mask_value)


def prepare_sdpa_region_loop(inp: Inputs, mask_value: float) -> Runner:
    """What a careful user writes with stock PyTorch: per region, one masked SDPA over all pixels.

    The ``(L, S)`` additive token bias is broadcast over batch and heads; each region's output is kept where
    the pixel belongs to that region.
    """

    def run() -> torch.Tensor:
        bias = _token_bias(inp, mask_value)[None, None]  # (1, 1, L, S)
        in_region = inp.q_region[None, None, :, None]  # (1, 1, L, 1)
        out = None
        for r in range(inp.regions):
            o_r = F.scaled_dot_product_attention(inp.q, inp.k, inp.v[:, r], attn_mask=bias, scale=inp.scale)
            out = o_r if out is None else torch.where(in_region == r, o_r, out)
        return out

    return run


def prepare_flex_attention(inp: Inputs, mask_value: float) -> Runner:
    """FlexAttention under ``torch.compile`` with the region copies of K/V stacked along the KV axis.

    KV index ``i`` is token ``i % S`` of region ``i // S``. The ``score_mod`` adds ``mask_value`` to the
    tokens a pixel's cover hides and sends every copy but the pixel's own region to ``-inf``.
    """
    from torch.nn.attention.flex_attention import flex_attention

    # A fresh compile per shape: static shapes (no automatic-dynamic recompiles across shapes) and no
    # dynamo recompile limit hit after a few shapes. Inductor's on-disk cache still speeds up reruns.
    torch._dynamo.reset()
    compiled = torch.compile(flex_attention, dynamic=False)
    batch, regions, heads, tokens, head_dim = inp.v.shape
    q_region, q_cover, token_owner = inp.q_region, inp.q_cover, inp.token_owner

    def score_mod(score, b, h, q_idx, kv_idx):
        region, token = kv_idx // tokens, kv_idx % tokens
        owner = token_owner[token]
        visible = (owner < 0) | (((q_cover[q_idx] >> owner.clamp(min=0)) & 1) == 1)
        score = torch.where(visible, score, score + mask_value)
        return torch.where(q_region[q_idx] == region, score, -float("inf"))

    def run() -> torch.Tensor:
        k_stacked = inp.k.repeat(1, 1, regions, 1)  # (B, H, R*S, D)
        v_stacked = inp.v.permute(0, 2, 1, 3, 4).reshape(batch, heads, regions * tokens, head_dim)
        return compiled(inp.q, k_stacked, v_stacked, score_mod=score_mod, scale=inp.scale)

    return run


def prepare_xformers(inp: Inputs, mask_value: float) -> Runner:
    """xformers' memory-efficient attention in the same per-region loop as ``sdpa_region_loop``."""
    import xformers.ops as xops

    def run() -> torch.Tensor:
        q = inp.q.transpose(1, 2)  # xformers wants (B, L, H, D)
        k = inp.k.transpose(1, 2)
        batch, _, heads, _ = q.shape
        bias = _token_bias(inp, mask_value, lead=(batch, heads))  # xformers wants it materialised per head
        in_region = inp.q_region[None, :, None, None]  # (1, L, 1, 1)
        out = None
        for r in range(inp.regions):
            o_r = xops.memory_efficient_attention(q, k, inp.v[:, r].transpose(1, 2), attn_bias=bias, scale=inp.scale)
            out = o_r if out is None else torch.where(in_region == r, o_r, out)
        return out.transpose(1, 2)

    return run


IMPLEMENTATIONS: dict[str, Callable[[Inputs, float], Runner]] = {
    "reference": prepare_reference,
    "sdpa_region_loop": prepare_sdpa_region_loop,
    "flex_attention": prepare_flex_attention,
    "torch": prepare_torch_backend,
    "triton": prepare_triton_backend,
    "cpp": prepare_cpp_backend,
    "xformers": prepare_xformers,
}


def _xformers_importable() -> bool:
    try:
        import xformers.ops  # noqa: F401
    except Exception:  # ImportError, or a broken build that fails at import
        return False
    return True


def skipped_reason(name: str, device: torch.device) -> str | None:
    """Why implementation ``name`` cannot run on ``device`` here, or None if it can."""
    if name == "triton":
        if device.type != "cuda":
            return "needs CUDA; the CPU interpreter is far too slow to benchmark"
        if not ale_kernels.triton_available():
            return "Triton not installed"
    if name == "cpp" and device.type != "cpu":
        return "the C++ kernel runs CPU tensors"
    if name == "xformers" and not _xformers_importable():
        return "xformers not installed"
    return None


# ----------------------------------------------------------------------------------------------------------
# Measurements beyond the harness's: bandwidth, and peak RSS in a worker process


def bytes_moved(inp: Inputs) -> int:
    """Bytes an ideal kernel moves: read q, k, v and the routing maps, write the output, each once."""
    tensors = (inp.q, inp.k, inp.v, inp.q_region, inp.q_cover, inp.token_owner)
    return sum(t.numel() * t.element_size() for t in tensors) + inp.q.numel() * inp.q.element_size()


def hbm_peak_gbps(device: torch.device) -> float | None:
    """Peak HBM bandwidth of this GPU from its name, or None when unknown."""
    name = torch.cuda.get_device_name(device).upper()
    for words, gbps in HBM_PEAK_GBPS:
        if all(w in name for w in words):
            return gbps
    return None


def worker_peak_rss(name: str, inp: Inputs, mask_value: float) -> dict[str, object]:
    """In a fresh process: how far one call raises the RSS high-water mark (output included), in MB.

    After a warm-up call (compilation, thread pools, one-off buffers) the high-water mark is reset so that
    only the measured call counts; where it cannot be reset, the first call is measured instead.
    """
    run = IMPLEMENTATIONS[name](inp, mask_value)
    resettable = harness.reset_peak_rss()
    if resettable:
        run()
        gc.collect()
        harness.reset_peak_rss()
    before = harness.peak_rss_mb()
    out = run()
    peak = harness.peak_rss_mb()
    del out
    return {"peak_extra_mb": peak - before, "method": "reset-after-warm-up" if resettable else "first-call"}


def cpu_peak_extra_mb(name: str, L: int, D: int, R: int, args: argparse.Namespace) -> float | str:
    """Run ``--worker`` for one implementation in a subprocess; its peak extra RSS in MB, or the error."""
    result = harness.run_worker(
        [
            sys.executable,
            os.path.abspath(__file__),
            "--worker",
            f"{name},{L},{D},{R}",
            "--device=cpu",
            f"--dtype={args.dtype}",
            f"--batch={args.batch}",
            f"--mask-value={args.mask_value}",
            f"--seed={args.seed}",
            f"--threads={torch.get_num_threads()}",
        ]
    )
    if result.payload is None:
        return f"error: {result.message[:80]}"
    return float(result.payload["peak_extra_mb"])


# ----------------------------------------------------------------------------------------------------------
# One case per shape: this script's setup; the harness runs it


def oracle(inp: Inputs, mask_value: float) -> torch.Tensor:
    """The reference backend on float64 copies of the inputs."""
    return prepare_reference(inp.to(torch.float64), mask_value)()


def bench_shape(L: int, D: int, R: int, impls: list[str], args: argparse.Namespace) -> list[harness.Row]:
    """Rows for every implementation at one shape, speed-ups against the reference."""
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    inp = make_inputs(L, D, R, B=args.batch, dtype=dtype, device=device, seed=args.seed)

    def prepare(name: str) -> Callable[[], harness.Runner]:
        return lambda: IMPLEMENTATIONS[name](inp, args.mask_value)

    case = harness.Case(
        params={"L": L, "D": D, "R": R},
        impls={name: prepare(name) for name in impls},
        dtype=dtype,
        oracle=lambda: oracle(inp, args.mask_value),
        reference_run=prepare_reference(inp, args.mask_value),
    )
    memory = None if args.no_memory else lambda name: cpu_peak_extra_mb(name, L, D, R, args)
    rows = harness.run_case(case, device, args.repeats, cpu_memory=memory)
    peak = hbm_peak_gbps(device) if device.type == "cuda" else None
    for row in rows:
        gbps = bytes_moved(inp) / (row.time_ms * 1e-3) / 1e9 if device.type == "cuda" and row.time_ms else None
        row.extra = {"gbps": gbps, "hbm_pct": None if peak is None or gbps is None else 100 * gbps / peak}
    return rows


def markdown_table(rows: list[harness.Row], on_gpu: bool) -> str:
    """The results as one markdown table."""
    header = ["L", "D", "R", "impl", "time (ms)", "± %", "speed-up vs reference", "peak extra MB", "max err"]
    header += ["GB/s", "% HBM"] if on_gpu else []
    header.append("first call (s)")
    lines = []
    for r in rows:
        cells = [str(r.params["L"]), str(r.params["D"]), str(r.params["R"]), r.impl]
        if r.error is not None:
            lines.append([*cells, f"n/a ({r.error})"] + [""] * (len(header) - 5))
            continue
        cells += [
            harness.num(r.time_ms, ".4g" if on_gpu else ".1f"),
            harness.num(r.spread_pct, ".0f"),
            harness.num(r.speedup, ".2f", "x"),
            harness.num(r.peak_extra_mb, ".1f"),
            harness.num(r.max_err, ".1e") + (" (!)" if r.flagged else ""),
        ]
        if on_gpu:
            cells += [harness.num(r.extra.get("gbps"), ".0f"), harness.num(r.extra.get("hbm_pct"), ".1f")]
        lines.append([*cells, harness.num(r.first_call_s, ".2f")])
    return harness.markdown_table(header, lines)


# ----------------------------------------------------------------------------------------------------------
# Command line


def _shape(text: str) -> tuple[int, int]:
    try:
        L, D = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"shape must look like 9216x40 (L x D), got {text!r}") from None
    return L, D


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="default: cuda when available",
    )
    p.add_argument("--dtype", choices=tuple(DTYPES), help="default: float16 on CUDA, float32 on CPU")
    p.add_argument("--batch", type=int, default=1, help="B (default 1)")
    p.add_argument(
        "--mask-value",
        type=float,
        default=-100.0,
        help="added to hidden tokens: -100.0 as in ALE (default); write --mask-value=-inf for -inf",
    )
    p.add_argument(
        "--shapes", type=_shape, nargs="+", metavar="LxD", help="L x D pairs (default: SD1.5's 9216x40 2304x80 576x160)"
    )
    p.add_argument("--regions", type=int, nargs="+", metavar="R", help="region counts (default: 2 3 4)")
    p.add_argument("--quick", action="store_true", help="smoke test: only L=9216 D=40 R=4")
    p.add_argument("--impls", nargs="+", choices=tuple(IMPLEMENTATIONS), help="default: all that can run")
    p.add_argument("--no-flex", action="store_true", help="skip FlexAttention (its compile is slow on CPU)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    p.add_argument(
        "--repeats",
        type=int,
        default=10,
        help="timed runs per implementation on CPU, or with CUDA events without Triton (median)",
    )
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's, one per core)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.add_argument("--out-md", metavar="PATH", help="also write the header and table as markdown")
    p.add_argument("--worker", help=argparse.SUPPRESS)  # "impl,L,D,R": one peak-RSS measurement
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but CUDA is not available")
    if args.repeats < 1:
        p.error(f"--repeats must be at least 1, got {args.repeats}")
    if args.dtype is None:
        args.dtype = "float16" if args.device == "cuda" else "float32"
    if args.quick:
        args.shapes, args.regions = [SD15_SHAPES[0]], [REGION_COUNTS[-1]]
    args.shapes = args.shapes or list(SD15_SHAPES)
    args.regions = args.regions or list(REGION_COUNTS)
    return args


def run_worker(args: argparse.Namespace) -> None:
    name, *dims = args.worker.split(",")
    L, D, R = (int(x) for x in dims)
    inp = make_inputs(L, D, R, B=args.batch, dtype=DTYPES[args.dtype], device="cpu", seed=args.seed)
    print(json.dumps(worker_peak_rss(name, inp, args.mask_value)))


def select_impls(args: argparse.Namespace, device: torch.device) -> tuple[list[str], list[str]]:
    """The implementations to run (the reference first) and ``"name (why)"`` for those that cannot."""
    wanted = args.impls or [n for n in IMPLEMENTATIONS if not (n == "flex_attention" and args.no_flex)]
    wanted = ["reference", *(n for n in wanted if n != "reference")]  # the baseline of every ratio
    impls, skipped = [], []
    for name in wanted:
        reason = skipped_reason(name, device)
        if reason is None:
            impls.append(name)
        elif args.impls or name == "triton":  # a missing xformers is not worth a line unless asked for
            skipped.append(f"{name} ({reason})")
    return impls, skipped


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        run_worker(args)
        return
    device = torch.device(args.device)
    impls, skipped = select_impls(args, device)
    env = harness.environment(
        device, dtype=args.dtype, mask_value=args.mask_value, batch=args.batch, heads=HEADS, tokens=CLIP_TOKENS
    )
    print(harness.header_line(env), flush=True)
    if skipped:
        print("skipped: " + "; ".join(skipped), flush=True)
    rows: list[harness.Row] = []
    for L, D in args.shapes:
        for R in args.regions:
            print(f"... L={L} D={D} R={R}", file=sys.stderr, flush=True)
            rows += bench_shape(L, D, R, impls, args)
    harness.finish(env)
    notes = harness.error_notes(rows)
    if device.type == "cpu":
        notes += harness.reliability_warnings(env, [r.spread_pct for r in rows])
    harness.publish(
        env,
        markdown_table(rows, on_gpu=device.type == "cuda"),
        [r.as_dict() for r in rows],
        notes,
        json_path=args.json,
        md_path=args.out_md,
    )


if __name__ == "__main__":
    main()
