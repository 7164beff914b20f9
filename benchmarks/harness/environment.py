"""The environment header: what a benchmark's numbers depend on, printed above every table and kept in its
JSON."""

from __future__ import annotations

import importlib.metadata
import os
import platform

import torch


def load_average() -> float | None:
    """The 1-minute load average (runnable processes), where the OS reports it."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def cpu_model() -> str:
    """The CPU's marketing name (``/proc/cpuinfo`` on Linux), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str | None:
    # Read from the installed metadata: importing diffusers alone costs seconds.
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment(device: torch.device | str, **extra: object) -> dict[str, object]:
    """Device, versions, CPU, threads and load average now, plus ``extra`` (dtype, shapes, options).

    ``load_avg_end`` is left for :func:`finish` to fill in when the run is over.
    """
    device = torch.device(device)
    cores = os.cpu_count()
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"cpu ({cpu_model()}, {cores} cores)"
    return {
        "device": name,
        "torch": torch.__version__,
        "triton": _version("triton"),
        "diffusers": _version("diffusers"),
        "cpu": cpu_model(),
        "cpu_count": cores,
        "threads": torch.get_num_threads(),
        # Other processes on the machine skew CPU timings: the load average says whether they did.
        "load_avg_start": load_average(),
        "load_avg_end": None,
        **extra,
    }


def finish(env: dict[str, object]) -> dict[str, object]:
    """Record the load average at the end of the run in ``env`` (and return it)."""
    env["load_avg_end"] = load_average()
    return env


def header_line(env: dict[str, object], title: str = "") -> str:
    """One line with the environment, for the top of a table."""
    load = f"{env['load_avg_start']}"
    if env.get("load_avg_end") is not None:
        load += f" (start) / {env['load_avg_end']} (end)"
    fixed = ("device", "torch", "triton", "diffusers", "cpu", "cpu_count", "threads", "load_avg_start", "load_avg_end")
    parts = [title] if title else []
    parts += [
        f"device: {env['device']}",
        f"torch {env['torch']} | triton {env['triton'] or 'n/a'} | diffusers {env['diffusers'] or 'n/a'}",
        f"threads {env['threads']}",
        f"load avg {load}",
    ]
    parts += [f"{key} {value}" for key, value in env.items() if key not in fixed]
    return " | ".join(parts)


def reliability_warnings(env: dict[str, object], spreads_pct: list[float | None] = ()) -> list[str]:
    """Why the timings may not be trusted: a machine busier than its cores, or repeats that disagree."""
    warnings = []
    cores = env.get("cpu_count") or 1
    loads = [x for x in (env.get("load_avg_start"), env.get("load_avg_end")) if x is not None]
    if loads and max(loads) > cores:
        warnings.append(
            f"load average {max(loads)} above the {cores} cores: other processes shared the CPU, so the times "
            "(and less so their ratios) are unreliable; rerun on a quiet machine (or with fewer threads)"
        )
    noisy = [s for s in spreads_pct if s is not None and s > 20]
    if noisy:
        warnings.append(
            f"{len(noisy)} timing(s) with an interquartile range above 20% of the median (worst {max(noisy):.0f}%): "
            "unreliable; more --repeats or a quieter machine"
        )
    return warnings
