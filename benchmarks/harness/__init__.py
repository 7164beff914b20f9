"""The benchmark harness shared by every script in ``benchmarks/``: the environment header, timing, peak
memory, the error column against a float64 oracle, one runner and one results writer.

The inputs come from :mod:`ale_kernels.testing.problems`, the same factories the tests use.
"""

from .accuracy import allowed, flat, output_error
from .environment import cpu_model, environment, finish, header_line, load_average, reliability_warnings
from .memory import (
    WorkerResult,
    cuda_call_ms_and_peak_mb,
    cuda_peak_extra_mb,
    peak_rss_mb,
    reset_peak_rss,
    run_worker,
    worker_env,
)
from .results import markdown_table, num, publish
from .runner import Case, Row, error_notes, run_case, short_error
from .timing import Runner, Timing, sync, time_cpu, time_cuda, time_first_call, time_interleaved

__all__ = [
    "Case",
    "Row",
    "Runner",
    "Timing",
    "WorkerResult",
    "allowed",
    "cpu_model",
    "cuda_call_ms_and_peak_mb",
    "cuda_peak_extra_mb",
    "environment",
    "error_notes",
    "finish",
    "flat",
    "header_line",
    "load_average",
    "markdown_table",
    "num",
    "output_error",
    "peak_rss_mb",
    "publish",
    "reliability_warnings",
    "reset_peak_rss",
    "run_case",
    "run_worker",
    "short_error",
    "sync",
    "time_cpu",
    "time_cuda",
    "time_first_call",
    "time_interleaved",
    "worker_env",
]
