"""Whole ALE edits per variant, eager and compiled, side by side: time per edit and peak memory.

A variant is an attention backend, optionally with the UNet compiled in place (``ale_pipeline.compiled``):

- ``reference``: the published math (materialised attention maps), eager;
- ``torch``, ``triton``: the fused backends, eager;
- ``<backend>+compiled``: ``torch.compile(fullgraph=True)``, Inductor's default mode;
- ``<backend>+captured``: ``mode="reduce-overhead"``: Inductor and CUDA graphs, the whole UNet step replayed
  with one launch (CUDA only);
- ``<backend>+max-autotune``: ``mode="max-autotune"`` (long compiles: not in gpu_check.sh's default list).

Every variant edits the shipped example with the same pipeline, steps, size and seed. Per size, one untimed
warm-up round runs every variant's edit with the timed edit's own steps (compiling both UNet graphs, with and
without Q/K injection, autotuning the Triton kernels and recording the CUDA graphs: none of it is timed),
then ``--repeats`` timed rounds, the variants interleaved (medians). CUDA reports ``max_memory_allocated``
during each variant's last timed edit. The compiled variants keep their compiled call between rounds and
switch it on only for their own edits, so the eager variants run eagerly.

    python benchmarks/bench_edit_compiled.py --device cuda --model sd15 --sizes 768 512 --steps 15
    python benchmarks/bench_edit_compiled.py --model tiny --sizes 64 --steps 2 --variants reference torch \\
        torch+compiled --compile-backend eager        # a CPU dry run of the script (no Inductor compile)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ale_pipeline.compiled import compile_unet, uncompile_unet  # noqa: E402
from benchmarks import harness  # noqa: E402
from benchmarks.bench_edit import edit_runners, example, load, size_rows  # noqa: E402

MODES = {"compiled": None, "captured": "reduce-overhead", "max-autotune": "max-autotune"}
DEFAULT_VARIANTS = ["reference", "torch", "triton", "triton+captured"]


def parse_variant(variant: str) -> tuple[str, str | None]:
    """``"triton+captured"`` -> ``("triton", "captured")``; ``"torch"`` -> ``("torch", None)``."""
    backend, _, how = variant.partition("+")
    if backend not in ("reference", "torch", "triton", "cpp", "auto"):
        raise SystemExit(f"bench_edit_compiled: unknown backend in variant {variant!r}")
    if how and how not in MODES:
        raise SystemExit(f"bench_edit_compiled: variant {variant!r}: after '+' use one of {', '.join(MODES)}")
    return backend, how or None


def compiled_calls(unet, variants: list[str], compile_backend: str) -> dict[str, object]:
    """One compiled call per compiled variant, made by :func:`compile_unet` and taken off the UNet again (each
    variant's runner puts its own back for its edits)."""
    calls = {}
    for variant in variants:
        _, how = parse_variant(variant)
        if how is not None:
            compile_unet(unet, mode=MODES[how], backend=compile_backend)
            calls[variant] = unet._compiled_call_impl
            uncompile_unet(unet)
    return calls


def variant_runners(pipe, variants: list[str], calls: dict, device: torch.device, record: dict, **kwargs) -> dict:
    """One no-argument edit per variant; each leaves ``(image, peak GB or None)`` in ``record[variant]``."""

    def runner(variant: str):
        backend, _ = parse_variant(variant)
        own: dict = {}
        edit = edit_runners(pipe, [backend], device, own, **kwargs)[backend]

        def run() -> torch.Tensor:
            pipe.unet._compiled_call_impl = calls.get(variant)
            try:
                image = edit()
            finally:
                uncompile_unet(pipe)
            record[variant] = own[backend]
            return image

        return run

    return {variant: runner(variant) for variant in variants}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default=None, choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--model", default="tiny", help="a random kind (tiny, sd-shaped, sd15) or a checkpoint")
    parser.add_argument("--sizes", type=int, nargs="+", default=[768, 512], help="longest sides")
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--variants", nargs="+", default=None, help=f"default: {' '.join(DEFAULT_VARIANTS)}")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile backend (eager: dry runs)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--out-md", type=Path, default=None)
    args = parser.parse_args(argv)

    cuda = args.device == "cuda"
    variants = args.variants or (DEFAULT_VARIANTS if cuda else ["reference", "torch", "torch+compiled"])
    for variant in variants:
        if parse_variant(variant)[1] == "captured" and not cuda:
            raise SystemExit(f"bench_edit_compiled: {variant} captures CUDA graphs: it needs --device cuda")
    # Each compiled variant holds two graphs (Q/K injection on and off) per size.
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 8 * len(variants))
    dtype = getattr(torch, args.dtype or ("float16" if cuda else "float32"))
    pipe = load(args.model, args.device, dtype)
    pipe.set_progress_bar_config(disable=True)
    calls = compiled_calls(pipe.unet, variants, args.compile_backend)
    image, edits, masks = example()

    device = torch.device(args.device)
    env = harness.environment(device, model=args.model, dtype=str(dtype)[6:], steps=args.steps, objects=len(edits))
    print(harness.header_line(env, "ALE edit end to end, eager and compiled"), flush=True)
    rows = []
    for size in args.sizes:
        common = dict(image=image, edits=edits, masks=masks, longest_side=size, seed=0, output_type="pt")
        record: dict = {}
        runners = variant_runners(pipe, variants, calls, device, record, num_inference_steps=args.steps, **common)
        timings = harness.time_interleaved(runners, args.repeats, device)
        rows += size_rows(size, "variant", timings, record)
    harness.finish(env)
    table = harness.markdown_table(
        ["image", "variant", "s / edit", "± %", "speed-up vs first", "peak GB", "peak vs first", "max pixel diff"],
        [
            [
                r["pixels"],
                r["variant"],
                f"{r['seconds']:.3f}",
                harness.num(r["spread_pct"], ".0f"),
                f"{r['speedup']:.2f}x",
                harness.num(r["peak_gb"], ".2f") or "-",
                harness.num(None if r["peak_share"] is None else 100 * r["peak_share"], ".0f", "%") or "-",
                f"{r['max_pixel_diff']:.1f}",
            ]
            for r in rows
        ],
    )
    notes = harness.reliability_warnings(env, [r["spread_pct"] for r in rows]) if not cuda else []
    harness.publish(
        env,
        table,
        rows,
        notes,
        title="ALE edit end to end, eager and compiled",
        json_path=args.json,
        md_path=args.out_md,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
