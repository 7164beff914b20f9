"""Peak memory: the RSS high-water mark of a CPU worker process, and CUDA's allocator peak of one call."""

from __future__ import annotations

import gc
import json
import os
import resource
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


def worker_env() -> dict[str, str]:
    """Environment for a measuring worker process.

    A fixed mmap threshold turns off glibc's adaptive one, so freed tensors go back to the OS instead of
    staying resident in the heap; the high-water mark then follows the live tensors.
    """
    env = dict(os.environ)
    env.setdefault("MALLOC_MMAP_THRESHOLD_", str(128 * 1024))
    return env


def reset_peak_rss() -> bool:
    """Reset this process's RSS high-water mark (Linux >= 4.0: ``clear_refs`` 5); False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def peak_rss_mb() -> float:
    """This process's RSS high-water mark in MB.

    ``VmHWM`` where Linux has it: ``getrusage``'s ``ru_maxrss`` also keeps the high-water mark that a child
    inherits across fork/exec from its parent, so in a worker started by a large benchmark process it reads
    the parent's peak, and ``clear_refs`` cannot lower it.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux


def cuda_call_ms_and_peak_mb(run: Callable[[], object], device: torch.device) -> tuple[float, float]:
    """One call of ``run`` on CUDA: its wall time in ms between synchronisations (the collection before it is
    not timed), and the peak memory it allocates beyond what was allocated before it (output included), in MB."""
    gc.collect()
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    start = time.perf_counter()
    out = run()
    torch.cuda.synchronize(device)
    ms = (time.perf_counter() - start) * 1e3
    peak = torch.cuda.max_memory_allocated(device) - before
    del out
    return ms, peak / 2**20


def cuda_peak_extra_mb(run: Callable[[], object], device: torch.device) -> float:
    """Peak CUDA memory one call of ``run`` allocates beyond what was allocated before it (output included),
    in MB."""
    return cuda_call_ms_and_peak_mb(run, device)[1]


@dataclass
class WorkerResult:
    """What a measuring worker process gave back: its JSON payload, or why there is none."""

    payload: dict | None
    returncode: int
    message: str  # the last line of its stderr (or stdout) when it failed, else ""


def run_worker(command: list[str]) -> WorkerResult:
    """Run ``command`` (a benchmark script in its hidden worker mode) in a fresh process with
    :func:`worker_env`; its last stdout line is read as JSON.

    A fresh process per measurement, because the RSS high-water mark is per process.
    """
    done = subprocess.run(command, capture_output=True, text=True, env=worker_env(), check=False)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [f"exit code {done.returncode}"]
        return WorkerResult(None, done.returncode, tail[0])
    return WorkerResult(json.loads(done.stdout.strip().splitlines()[-1]), 0, "")
