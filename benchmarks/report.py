"""Tables and plots from the benchmarks' JSON: what ``make bench`` shows after measuring.

Reads any of
- the CPU suite's pytest-benchmark JSON (``benchmarks/bench_suite.py --benchmark-json ...``),
- ``bench_processors.py --json`` (one UNet forward's attention: time and peak memory per image size),
- a GPU check folder (``benchmarks/gpu_check.sh``'s ``bench_ops.json``, ``bench_self_attention.json``,
  ``bench_edit.json``),
and writes ``report.md`` with one markdown table per comparison, plus PNG plots: speed-up over the published
math against latent size, and peak memory against resolution.

    python benchmarks/report.py --cpu-suite benchmarks/results/cpu_suite.json \
        --processors benchmarks/results/processors_cpu.json --out benchmarks/results
    python benchmarks/report.py --gpu-dir benchmarks/gpu_runs/2026-11-26-h100 --out benchmarks/gpu_runs/2026-11-26-h100
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

# Run as a script, the repository root is not on sys.path: put it there for the harness.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.harness import markdown_table


def _rows(payload: dict | list) -> list[dict]:
    """A benchmark's rows: the harness writes ``{"header", "environment", "rows"}``; older processor runs wrote
    the bare list."""
    return payload if isinstance(payload, list) else payload["rows"]


def _first(row: dict, *keys: str) -> object:
    """The first of ``keys`` that ``row`` has: the harness's column names, then those of older runs."""
    return next((row[k] for k in keys if k in row), None)


def cpu_suite_section(path: Path) -> tuple[str, dict[str, dict[int, float]]]:
    """Markdown tables of the pytest-benchmark run (median ms, speed-up against the group's reference) and the
    region-attention speed-ups by latent size, ``{impl: {L: speed-up}}``."""
    data = json.loads(path.read_text())
    groups: dict[str, list[dict]] = defaultdict(list)
    for bench in data["benchmarks"]:
        groups[bench["group"]].append(bench)
    machine = data.get("machine_info", {})
    parts = [f"## CPU suite ({machine.get('cpu', {}).get('brand_raw', 'CPU')}, {machine.get('python_version', '')})"]
    speedups: dict[str, dict[int, float]] = defaultdict(dict)
    for group, benches in groups.items():
        by_impl = {b["extra_info"].get("impl", b["name"]): b["stats"]["median"] * 1e3 for b in benches}
        baseline = by_impl.get("reference") or next(iter(by_impl.values()))
        rows = [[impl, f"{ms:.2f}", f"{baseline / ms:.2f}x"] for impl, ms in by_impl.items()]
        parts += [f"### {group}", markdown_table(["impl", "median ms", "speed-up vs reference"], rows)]
        if group.startswith("op region_attention"):
            length = benches[0]["extra_info"]["L"]
            for impl, ms in by_impl.items():
                speedups[impl][length] = baseline / ms
    return "\n\n".join(parts), speedups


def processors_section(path: Path) -> tuple[str, dict[str, dict[int, float]]]:
    """Markdown of ``bench_processors`` results and peak memory by image size, ``{variant: {px: MB}}``."""
    results = _rows(json.loads(path.read_text()))
    rows, memory = [], defaultdict(dict)
    for r in results:
        ms = "-" if r["ms"] is None else f"{r['ms']:.1f}"
        peak = "-" if r["peak_mb"] is None else f"{r['peak_mb']:.0f}"
        rows.append([f"{r['image_size']} px", r["variant"], ms, peak, r.get("note", "")])
        if r["peak_mb"] is not None:
            memory[r["variant"]][r["image_size"]] = r["peak_mb"]
    table = markdown_table(["image", "processors", "ms / UNet forward's attention", "peak MB", "note"], rows)
    return "## Processors: one SD1.5 UNet forward's attention\n\n" + table, memory


def gpu_section(folder: Path) -> tuple[str, dict[str, dict[int, float]], dict[str, dict[int, float]]]:
    """Markdown of a GPU check's JSONs; region-attention speed-ups by L; end-to-end peak GB by image size."""
    parts, speedups, memory = [f"## GPU ({folder.name})"], defaultdict(dict), defaultdict(dict)
    for name in ("bench_ops.json", "bench_ops_flex.json"):
        if (folder / name).exists():
            payload = json.loads((folder / name).read_text())
            env = payload["environment"]
            rows = []
            for r in payload["rows"]:
                if r.get("time_ms") is None:
                    continue
                gbps = f"{r['gbps']:.0f}" if r.get("gbps") else "-"
                hbm = f"{r['hbm_pct']:.1f}" if r.get("hbm_pct") else "-"
                rows.append(
                    [f"{r['L']}x{r['D']}", r["impl"], f"{1e3 * r['time_ms']:.1f}", f"{r['speedup']:.2f}x", gbps, hbm]
                )
                if name == "bench_ops.json":  # ratios from one run only: the reference's time moves between runs
                    speedups[r["impl"]][r["L"]] = r["speedup"]
            title = f"### region_attention ({env.get('device')}, {env.get('dtype')}, R={payload['rows'][0]['R']})"
            parts += [title, markdown_table(["L x D", "impl", "µs", "vs reference", "GB/s", "% HBM"], rows)]
    if (folder / "bench_self_attention.json").exists():
        payload = json.loads((folder / "bench_self_attention.json").read_text())
        rows = []
        for r in payload["rows"]:
            ms, speedup = _first(r, "time_ms", "ms"), _first(r, "speedup", "speedup_vs_sdpa_x2")
            if ms is not None:
                rows.append([r["shape"], r["impl"], f"{ms:.3f}", f"{speedup:.2f}x", f"{r['tflops']:.0f}"])
        parts += [f"### {payload['header']}", markdown_table(["L x D", "impl", "ms", "vs 2x SDPA", "TFLOP/s"], rows)]
    if (folder / "bench_edit.json").exists():
        payload = json.loads((folder / "bench_edit.json").read_text())
        rows = []
        for r in payload["rows"]:
            peak = "-" if r["peak_gb"] is None else f"{r['peak_gb']:.2f}"
            rows.append([r["pixels"], r["backend"], f"{r['seconds']:.3f}", f"{r['speedup']:.2f}x", peak])
            if r["peak_gb"] is not None:
                memory[r["backend"]][r["size"]] = 1e3 * r["peak_gb"]
        parts += [
            f"### {payload['header']}",
            markdown_table(["image", "backend", "s / edit", "speed-up", "peak GB"], rows),
        ]
    return "\n\n".join(parts), speedups, memory


def plot_lines(series: dict[str, dict[int, float]], xlabel: str, ylabel: str, title: str, path: Path, log_y=False):
    """One line per implementation, ``series[impl][x] = y``."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for impl, points in sorted(series.items()):
        xs = sorted(points)
        ax.plot(xs, [points[x] for x in xs], marker="o", label=impl)
    ax.set_xscale("log")
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu-suite", type=Path, default=None, help="pytest-benchmark JSON of bench_suite.py")
    parser.add_argument("--processors", type=Path, default=None, help="bench_processors.py --json output")
    parser.add_argument("--gpu-dir", type=Path, default=None, help="a gpu_check.sh output folder")
    parser.add_argument("--out", type=Path, required=True, help="folder for report.md and the PNGs")
    args = parser.parse_args(argv)
    if not (args.cpu_suite or args.processors or args.gpu_dir):
        parser.error("give at least one of --cpu-suite, --processors, --gpu-dir")
    args.out.mkdir(parents=True, exist_ok=True)
    sections, written = [], []
    if args.cpu_suite:
        text, speedups = cpu_suite_section(args.cpu_suite)
        sections.append(text)
        path = args.out / "cpu_speedup_vs_latent.png"
        plot_lines(speedups, "latent pixels L (SD1.5 at 768 px: 576 / 2304 / 9216)", "speed-up vs published math",
                   "region_attention on CPU (fp32, 3 objects)", path)  # fmt: skip
        written.append(path)
    if args.processors:
        text, memory = processors_section(args.processors)
        sections.append(text)
        path = args.out / "cpu_memory_vs_resolution.png"
        plot_lines(memory, "image side (px)", "peak extra MB (RSS)", "one UNet forward's attention, CPU", path, True)
        written.append(path)
    if args.gpu_dir:
        text, speedups, memory = gpu_section(args.gpu_dir)
        sections.append(text)
        if speedups:
            path = args.out / "gpu_speedup_vs_latent.png"
            plot_lines(speedups, "latent pixels L", "speed-up vs published math", "region_attention on GPU", path)
            written.append(path)
        if memory:
            path = args.out / "gpu_memory_vs_resolution.png"
            plot_lines(memory, "longest image side (px)", "peak MB (max_memory_allocated)", "whole edit, GPU", path)
            written.append(path)
    report = args.out / "report.md"
    report.write_text("# Benchmark report\n\n" + "\n\n".join(sections) + "\n")
    print(report.read_text())
    print("wrote", report, *written, sep="\n  ")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
