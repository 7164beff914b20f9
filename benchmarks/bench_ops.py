"""Benchmark region-routed cross-attention implementations at Stable Diffusion 1.5 shapes.

Compares, for every shape, the materialised reference (the published ALE math) with the ways a user could
compute the same thing: a per-region loop of masked SDPA, FlexAttention under ``torch.compile``, and this
package's ``torch`` and ``triton`` backends (xformers too, when it is installed). Prints one markdown table
with time, speed-up vs the reference, peak extra memory and max abs error vs the reference.

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
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

import ale_kernels
from ale_kernels.routing import cover_bits, pixel_regions

# Run as a script, the repository root is not on sys.path: put it there for the shared helpers.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.memory import peak_rss_mb, reset_peak_rss, worker_env

# SD1.5 at 768 px: latent 96x96, and the UNet's cross-attention blocks see L pixels with head dim D (H = 8).
SD15_SHAPES: tuple[tuple[int, int], ...] = ((9216, 40), (2304, 80), (576, 160))
REGION_COUNTS: tuple[int, ...] = (2, 3, 4)
HEADS = 8
TOKENS = 77  # CLIP text length

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

# Errors above these (vs the float32-accumulated reference) are flagged under the table.
TOLERANCE = {torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 6e-2}


# ----------------------------------------------------------------------------------------------------------
# Inputs


@dataclass
class Inputs:
    """One problem: the op's tensors, routing maps shared by the batch (``(L,)`` and ``(S,)``)."""

    q: torch.Tensor  # (B, H, L, D)
    k: torch.Tensor  # (B, H, S, D), shared by all regions
    v: torch.Tensor  # (B, R, H, S, D), one value set per region (the background last)
    q_region: torch.Tensor  # (L,) int64 in [0, R)
    q_cover: torch.Tensor  # (L,) int32 bit mask of the objects covering each pixel
    token_owner: torch.Tensor  # (S,) int64: -1 shared token, else the owning object

    @property
    def regions(self) -> int:
        return self.v.shape[1]

    @property
    def scale(self) -> float:
        return self.q.shape[-1] ** -0.5


def object_masks(side: int, n_objects: int, seed: int) -> torch.Tensor:
    """``n_objects`` dilated object masks ``(n, side, side)`` bool on a ``side x side`` latent grid.

    Discs, ellipses and rectangles at fixed pseudo-random places around the centre, sized so that
    neighbours overlap a little. The layout is drawn in unit coordinates, so every resolution shows the
    same picture.
    """
    gen = torch.Generator().manual_seed(seed)
    coords = (torch.arange(side, dtype=torch.float64) + 0.5) / side
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    masks = []
    for j in range(n_objects):
        jitter = torch.rand(4, generator=gen, dtype=torch.float64).tolist()
        angle = 2 * math.pi * (j + 0.3 * jitter[0]) / n_objects
        ring = {1: 0.0, 2: 0.17}.get(n_objects, 0.22)  # distance from the centre: close enough to touch
        cy = 0.5 + ring * math.sin(angle) + 0.04 * (jitter[1] - 0.5)
        cx = 0.5 + ring * math.cos(angle) + 0.04 * (jitter[2] - 0.5)
        size = 0.17 + 0.05 * jitter[3]
        dy, dx = y - cy, x - cx
        kind = j % 3
        if kind == 0:  # disc
            mask = dy**2 + dx**2 <= size**2
        elif kind == 1:  # ellipse, wider than tall
            mask = (dx / (1.3 * size)) ** 2 + (dy / (0.75 * size)) ** 2 <= 1.0
        else:  # rectangle, taller than wide
            mask = (dx.abs() <= 0.8 * size) & (dy.abs() <= 1.1 * size)
        masks.append(mask)
    masks = torch.stack(masks).float()[:, None]
    # ALE dilates the object masks before routing; about 1/48 of the side (2 latent px at 96).
    radius = max(1, round(side / 48))
    dilated = F.max_pool2d(masks, kernel_size=2 * radius + 1, stride=1, padding=radius)
    return dilated[:, 0] > 0


def prompt_token_owner(n_objects: int, tokens: int = TOKENS) -> torch.Tensor:
    """Owner of each token of a prompt "BOS obj0 words and obj1 words and ... EOS pad...".

    Object ``j`` owns 3 or 4 consecutive tokens; BOS, the "and" separators, EOS and padding are shared (-1).
    """
    owner = torch.full((tokens,), -1, dtype=torch.int64)
    pos = 1  # after BOS
    for j in range(n_objects):
        n_words = 3 + j % 2
        owner[pos : pos + n_words] = j
        pos += n_words + 1  # the "and" (or, after the last object, EOS) stays shared
    if pos > tokens:
        raise ValueError(f"{n_objects} objects do not fit in a {tokens}-token prompt")
    return owner


def make_inputs(
    L: int,
    D: int,
    R: int,
    B: int = 1,
    H: int = HEADS,
    S: int = TOKENS,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> Inputs:
    """Realistic inputs: ``R - 1`` objects plus the background, unit-scale random q, k, v.

    ``q_cover`` has bit ``j`` set where object ``j``'s dilated mask covers the pixel; ``q_region`` is ``j``
    where object ``j`` alone covers it, else the background ``R - 1`` (overlaps go to the background, as in
    ALE).
    """
    side = math.isqrt(L)
    if side * side != L or R < 2:
        raise ValueError(f"L must be a square (got {L}) and R >= 2 (got {R})")
    n_objects = R - 1
    masks = object_masks(side, n_objects, seed).reshape(n_objects, L)
    q_cover, q_region = cover_bits(masks), pixel_regions(masks)

    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, L, D, generator=gen)
    k = torch.randn(B, H, S, D, generator=gen)
    v = torch.randn(B, R, H, S, D, generator=gen)
    to = dict(device=device, dtype=dtype)
    return Inputs(
        q=q.to(**to),
        k=k.to(**to),
        v=v.to(**to),
        q_region=q_region.to(device),
        q_cover=q_cover.to(device),
        token_owner=prompt_token_owner(n_objects, S).to(device),
    )


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
# Measurements


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_first_call(run: Runner, device: torch.device) -> tuple[torch.Tensor, float]:
    """The output and wall time (s) of the first call: compilation, autotuning and one-off set-up."""
    _sync(device)
    start = time.perf_counter()
    out = run()
    _sync(device)
    return out, time.perf_counter() - start


def time_cuda_ms(run: Runner, repeats: int) -> float:
    """Median GPU time of ``run`` in ms: Triton's ``do_bench`` (which flushes L2 between calls) when Triton
    is installed, else CUDA events over ``repeats`` calls after warm-up."""
    if ale_kernels.triton_available():
        import triton.testing

        return float(triton.testing.do_bench(run, warmup=25, rep=100, return_mode="median"))
    return _time_cuda_events(run, repeats)


def time_cpu_interleaved(runners: dict[str, Runner], repeats: int) -> dict[str, list[float]]:
    """Wall times (ms) of ``repeats`` calls of every runner, taken in rounds that call each runner once.

    Interleaving spreads any load from other processes over all implementations alike, so the ratios
    stay fair on a shared machine; the order rotates each round so no implementation always follows the
    same one. One untimed warm-up round first (caches, thread pool, allocator).
    """
    names = list(runners)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(repeats + 1):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            runners[name]()
            elapsed = time.perf_counter() - start
            if round_:
                samples[name].append(1e3 * elapsed)
    return samples


def _time_cuda_events(run: Runner, repeats: int) -> float:
    for _ in range(3):
        run()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def cuda_peak_extra_mb(run: Runner, device: torch.device) -> float:
    """Peak CUDA memory one call allocates beyond what was allocated before it (output included), in MB."""
    gc.collect()
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    out = run()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - before
    del out
    return peak / 2**20


def worker_peak_rss(name: str, inp: Inputs, mask_value: float) -> dict[str, object]:
    """In a fresh process: how far one call raises the RSS high-water mark (output included), in MB.

    After a warm-up call (compilation, thread pools, one-off buffers) the high-water mark is reset so that
    only the measured call counts; where it cannot be reset, the first call is measured instead.
    """
    run = IMPLEMENTATIONS[name](inp, mask_value)
    resettable = reset_peak_rss()
    if resettable:
        run()
        gc.collect()
        reset_peak_rss()
    before = peak_rss_mb()
    out = run()
    peak = peak_rss_mb()
    del out
    return {"peak_extra_mb": peak - before, "method": "reset-after-warm-up" if resettable else "first-call"}


def cpu_peak_extra_mb(name: str, L: int, D: int, R: int, args: argparse.Namespace) -> float | str:
    """Run ``--worker`` for one implementation in a subprocess; its peak extra RSS in MB, or the error."""
    cmd = [
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
    proc = subprocess.run(cmd, capture_output=True, text=True, env=worker_env(), check=False)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"]
        return f"error: {lines[-1][:80]}"
    return float(json.loads(proc.stdout.strip().splitlines()[-1])["peak_extra_mb"])


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


# ----------------------------------------------------------------------------------------------------------
# One benchmark row per (shape, implementation)


@dataclass
class Row:
    L: int
    D: int
    R: int
    impl: str
    time_ms: float | None = None
    speedup: float | None = None
    peak_extra_mb: float | None = None
    max_err: float | None = None
    first_call_s: float | None = None
    gbps: float | None = None
    hbm_pct: float | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    samples_ms: list[float] = field(default_factory=list)  # CPU: every timed call, for the JSON


def _short(exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first}"[:90]


def bench_shape(L: int, D: int, R: int, impls: list[str], args: argparse.Namespace) -> list[Row]:
    """Rows for every implementation at one shape; ``impls[0]`` must be the reference (the baseline)."""
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    inp = make_inputs(L, D, R, B=args.batch, dtype=dtype, device=device, seed=args.seed)
    rows = {name: Row(L, D, R, name) for name in impls}

    # First calls (compilation, autotuning) and correctness, one implementation at a time.
    runners: dict[str, Runner] = {}
    expected = None
    for name, row in rows.items():
        try:
            run = IMPLEMENTATIONS[name](inp, args.mask_value)
            out, row.first_call_s = time_first_call(run, device)
        except Exception as exc:  # one failing implementation must not sink the whole table
            row.error = _short(exc)
            continue
        if name == "reference":
            expected = out.float()
        if expected is not None:
            row.max_err = (out.float() - expected).abs().max().item()
        runners[name] = run
        del out

    # Steady-state times.
    if device.type == "cuda":
        peak = hbm_peak_gbps(device)
        for name, run in runners.items():
            row = rows[name]
            try:
                row.time_ms = time_cuda_ms(run, args.repeats)
                row.peak_extra_mb = cuda_peak_extra_mb(run, device)
            except Exception as exc:  # e.g. out of memory at a big shape
                row.error = _short(exc)
                continue
            row.gbps = bytes_moved(inp) / (row.time_ms * 1e-3) / 1e9
            row.hbm_pct = None if peak is None else 100 * row.gbps / peak
    elif runners:
        for name, times in time_cpu_interleaved(runners, args.repeats).items():
            rows[name].time_ms = statistics.median(times)
            rows[name].samples_ms = times
    t_ref = rows["reference"].time_ms
    for row in rows.values():
        if t_ref is not None and row.time_ms is not None:
            row.speedup = t_ref / row.time_ms
    del runners, expected
    gc.collect()

    # CPU peak memory, each implementation in its own process.
    if device.type == "cpu" and not args.no_memory:
        for row in rows.values():
            if row.error is None:
                mem = cpu_peak_extra_mb(row.impl, L, D, R, args)
                if isinstance(mem, str):
                    row.notes.append(f"memory {mem}")
                else:
                    row.peak_extra_mb = mem
    return list(rows.values())


# ----------------------------------------------------------------------------------------------------------
# Report


def _num(x: float | None, fmt: str) -> str:
    return "" if x is None else format(x, fmt)


def markdown_table(rows: list[Row], on_gpu: bool, show_first_call: bool) -> str:
    """The results as one markdown table."""
    header = ["L", "D", "R", "impl", "time (ms)", "speed-up vs reference", "peak extra MB", "max err"]
    if on_gpu:
        header += ["GB/s", "% HBM"]
    if show_first_call:
        header.append("first call (s)")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in rows:
        if r.error is not None:
            cells = [str(r.L), str(r.D), str(r.R), r.impl, f"n/a ({r.error})"] + [""] * (len(header) - 5)
        else:
            cells = [
                str(r.L),
                str(r.D),
                str(r.R),
                r.impl,
                _num(r.time_ms, ".4g" if on_gpu else ".1f"),
                _num(r.speedup, ".2f") + ("x" if r.speedup is not None else ""),
                _num(r.peak_extra_mb, ".1f"),
                _num(r.max_err, ".1e"),
            ]
            if on_gpu:
                cells += [_num(r.gbps, ".0f"), _num(r.hbm_pct, ".1f")]
            if show_first_call:
                cells.append(_num(r.first_call_s, ".2f"))
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines)


def environment(args: argparse.Namespace) -> dict[str, object]:
    """What the numbers depend on: device, versions, dtype, mask value, threads."""
    device = torch.device(args.device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"cpu ({platform.machine()}, {os.cpu_count()} cores)"
    triton_version = None
    if ale_kernels.triton_available():
        import triton

        triton_version = triton.__version__
    return {
        "device": name,
        "torch": torch.__version__,
        "triton": triton_version,
        "dtype": args.dtype,
        "mask_value": args.mask_value,
        "threads": torch.get_num_threads(),
        # Other processes on the machine skew CPU timings: the load average says whether they did.
        "load_avg_start": _load_avg(),
        "load_avg_end": None,
        "batch": args.batch,
        "heads": HEADS,
        "tokens": TOKENS,
    }


def _load_avg() -> float | None:
    """The 1-minute load average (runnable processes), where the OS reports it."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def header_line(env: dict[str, object]) -> str:
    load = f"{env['load_avg_start']}"
    if env["load_avg_end"] is not None:
        load += f" (start) / {env['load_avg_end']} (end)"
    return (
        f"device: {env['device']} | torch {env['torch']} | triton {env['triton'] or 'n/a'} | "
        f"dtype {env['dtype']} | mask_value {env['mask_value']} | threads {env['threads']} | "
        f"load avg {load} | B={env['batch']} H={env['heads']} S={env['tokens']}"
    )


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
    if args.dtype is None:
        args.dtype = "float16" if args.device == "cuda" else "float32"
    if args.quick:
        args.shapes, args.regions = [(9216, 40)], [4]
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
    wanted = ["reference", *(n for n in wanted if n != "reference")]  # the baseline of every ratio and error
    impls, skipped = [], []
    for name in wanted:
        reason = skipped_reason(name, device)
        if reason is None:
            impls.append(name)
        elif args.impls or name == "triton":  # a missing xformers is not worth a line unless asked for
            skipped.append(f"{name} ({reason})")
    return impls, skipped


def report(rows: list[Row], env: dict[str, object], args: argparse.Namespace) -> None:
    """Print the table and its notes; write the markdown and JSON files asked for."""
    table = markdown_table(rows, on_gpu=args.device == "cuda", show_first_call=True)
    notes = [f"- {r.impl} L={r.L} D={r.D} R={r.R}: {n}" for r in rows for n in r.notes]
    tol = TOLERANCE[DTYPES[args.dtype]]
    notes += [
        f"- WARNING {r.impl} L={r.L} D={r.D} R={r.R}: max err {r.max_err:.1e} > {tol:.0e}"
        for r in rows
        if r.max_err is not None and r.max_err > tol
    ]
    print()
    print(header_line(env))
    print()
    print(table)
    if notes:
        print("\n".join(["", *notes]))
    if args.out_md:
        with open(args.out_md, "w") as f:
            f.write("\n".join([header_line(env), "", table, *(["", *notes] if notes else [])]) + "\n")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": env, "rows": [asdict(r) for r in rows]}, f, indent=2)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        run_worker(args)
        return
    device = torch.device(args.device)
    impls, skipped = select_impls(args, device)
    env = environment(args)
    print(header_line(env), flush=True)
    if skipped:
        print("skipped: " + "; ".join(skipped), flush=True)
    rows: list[Row] = []
    for L, D in args.shapes:
        for R in args.regions:
            print(f"... L={L} D={D} R={R}", file=sys.stderr, flush=True)
            rows += bench_shape(L, D, R, impls, args)
    env["load_avg_end"] = _load_avg()
    report(rows, env, args)


if __name__ == "__main__":
    main()
