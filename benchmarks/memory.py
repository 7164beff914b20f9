"""Peak memory of a benchmark worker process on CPU (RSS high-water mark), shared by the benchmarks."""

from __future__ import annotations

import os
import resource


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
