"""Timing: first calls apart, then steady-state medians (interleaved wall time on CPU, ``do_bench`` on CUDA)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

Runner = Callable[[], object]


def sync(device: torch.device) -> None:
    """Wait for ``device``'s queued work, so that wall time covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_first_call(run: Runner, device: torch.device) -> tuple[object, float]:
    """The output and wall time (s) of the first call: compilation, autotuning and one-off set-up."""
    sync(device)
    start = time.perf_counter()
    out = run()
    sync(device)
    return out, time.perf_counter() - start


@dataclass
class Timing:
    """Repeated wall times of one runner, in ms, and what they summarise to."""

    samples_ms: list[float]

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples_ms)

    @property
    def spread_pct(self) -> float | None:
        """Interquartile range as a percentage of the median: how far the repeats disagree."""
        if len(self.samples_ms) < 4:
            if len(self.samples_ms) < 2:
                return None
            return 100 * (max(self.samples_ms) - min(self.samples_ms)) / self.median_ms
        q1, _, q3 = statistics.quantiles(self.samples_ms, n=4)
        return 100 * (q3 - q1) / self.median_ms


def time_interleaved(
    runners: dict[str, Runner], repeats: int, device: torch.device | None = None, warmup_rounds: int = 1
) -> dict[str, Timing]:
    """Wall times of ``repeats`` calls of every runner, taken in rounds that call each runner once.

    Interleaving spreads any load from other processes over all runners alike, so the ratios stay fair on a
    shared machine; the order rotates each round so no runner always follows the same one. ``warmup_rounds``
    untimed rounds first (caches, thread pool, allocator).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got repeats={repeats}")
    device = device or torch.device("cpu")
    names = list(runners)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(warmup_rounds + repeats):
        shift = round_ % max(len(names), 1)
        for name in names[shift:] + names[:shift]:
            sync(device)
            start = time.perf_counter()
            runners[name]()
            sync(device)
            elapsed = time.perf_counter() - start
            if round_ >= warmup_rounds:
                samples[name].append(1e3 * elapsed)
    return {name: Timing(times) for name, times in samples.items()}


def time_cpu(run: Runner, repeats: int) -> Timing:
    """Wall times (ms) of ``repeats`` calls of ``run`` after one warm-up call."""
    return time_interleaved({"run": run}, repeats)["run"]


def time_cuda(run: Runner, repeats: int) -> Timing:
    """GPU time of ``run`` in ms: Triton's ``do_bench`` median (it flushes L2 between calls and picks its own
    repeat count) when Triton is installed, else CUDA events over ``repeats`` calls after 3 warm-up calls."""
    try:
        import triton.testing
    except ImportError:
        triton = None
    if triton is not None:
        q1, median, q3 = triton.testing.do_bench(run, warmup=25, rep=100, quantiles=[0.25, 0.5, 0.75])
        # Three samples that summarise to do_bench's own median and interquartile range.
        return Timing([float(q1), float(median), float(q3)])
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
    return Timing(times)
