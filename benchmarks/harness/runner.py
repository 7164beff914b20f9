"""The one benchmark runner: every implementation of one case side by side, in one process and one run.

A script describes a case (its parameters, a ``prepare`` per implementation, the float64 oracle) and the
runner does the rest: first calls timed apart, each output's error against the oracle judged by the
tolerance policy, steady-state times (interleaved on CPU), speed-ups against the baseline and peak memory.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .accuracy import Output, allowed, output_error
from .memory import cuda_peak_extra_mb
from .timing import Runner, time_cuda, time_first_call, time_interleaved


@dataclass
class Case:
    """One comparison.

    Attributes:
        params: what identifies its rows (e.g. ``{"L": 9216, "D": 40, "R": 4}``); they lead every JSON row.
        impls: name -> ``prepare()`` returning a no-argument runner; preparing or a first call may fail
            (a missing package, a compile error) without sinking the other implementations.
        dtype: the inputs' dtype, which sets the tolerance floor.
        oracle: computes the float64 oracle output (the reference backend on float64 copies of the inputs);
            None: errors are measured against the baseline's output and never flagged.
        reference: the same-precision reference's name in ``impls``; its error against the oracle sets what
            the others may be off by. When it is not among ``impls``, ``reference_run`` computes it.
        reference_run: runs the same-precision reference, untimed, when it is not among ``impls``.
        baseline: the implementation every speed-up is relative to.
    """

    params: dict[str, object]
    impls: dict[str, Callable[[], Runner]]
    dtype: torch.dtype
    oracle: Callable[[], Output] | None = None
    reference: str = "reference"
    reference_run: Runner | None = None
    baseline: str = "reference"


@dataclass
class Row:
    """One implementation's results in one case. Times in ms, memory in MB, errors in output units."""

    params: dict[str, object]
    impl: str
    time_ms: float | None = None
    spread_pct: float | None = None
    speedup: float | None = None
    peak_extra_mb: float | None = None
    max_err: float | None = None
    allowed_err: float | None = None
    first_call_s: float | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    samples_ms: list[float] = field(default_factory=list)
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def flagged(self) -> bool:
        """Its error is above what the tolerance policy allows."""
        return self.max_err is not None and self.allowed_err is not None and self.max_err > self.allowed_err

    def label(self) -> str:
        return " ".join([self.impl, *(f"{k}={v}" for k, v in self.params.items())])

    def as_dict(self) -> dict[str, object]:
        """The JSON row: the case's parameters first, then the measurements, then script-specific columns."""
        out: dict[str, object] = dict(self.params)
        for name in self.__dataclass_fields__:
            if name not in ("params", "extra"):
                out[name] = getattr(self, name)
        out.update(self.extra)
        return out


def short_error(exc: BaseException) -> str:
    """``Type: first line`` of an exception, short enough for a table cell."""
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first}"[:90]


def run_case(
    case: Case,
    device: torch.device | str,
    repeats: int,
    cpu_memory: Callable[[str], float | str] | None = None,
    cuda_memory: bool = True,
) -> list[Row]:
    """Rows for every implementation of ``case`` on ``device``.

    Args:
        repeats: timed calls per implementation on CPU (interleaved rounds), or with CUDA events when Triton
            is missing; ``do_bench`` chooses its own count.
        cpu_memory: on CPU, peak extra memory of one implementation by name, in MB, or a string saying why
            it could not be measured (the scripts measure it in a fresh process); None: not measured.
        cuda_memory: on CUDA, measure ``max_memory_allocated`` of one call.
    """
    device = torch.device(device)
    rows = {name: Row(dict(case.params), name) for name in case.impls}
    oracle = case.oracle() if case.oracle is not None else None

    runners: dict[str, Runner] = {}
    kept: dict[str, Output] = {}  # without an oracle, outputs wait for the baseline's
    for name, row in rows.items():
        try:
            run = case.impls[name]()
            out, row.first_call_s = time_first_call(run, device)
        except Exception as exc:  # one failing implementation must not sink the whole table
            row.error = short_error(exc)
            continue
        runners[name] = run
        if oracle is not None:
            row.max_err = output_error(out, oracle)
        else:
            kept[name] = out
        del out
    if case.baseline in kept:
        for name, out in kept.items():
            rows[name].max_err = output_error(out, kept[case.baseline])
    kept.clear()

    if oracle is not None:
        reference_error = rows[case.reference].max_err if case.reference in rows else None
        if reference_error is None and case.reference_run is not None:
            reference_error = output_error(case.reference_run(), oracle)
        if reference_error is not None:
            limit = allowed(reference_error, case.dtype, oracle)
            for row in rows.values():
                row.allowed_err = limit
    del oracle

    if device.type == "cuda":
        for name, run in runners.items():
            row = rows[name]
            try:
                timing = time_cuda(run, repeats)
                row.time_ms, row.spread_pct = timing.median_ms, timing.spread_pct
                if cuda_memory:
                    row.peak_extra_mb = cuda_peak_extra_mb(run, device)
            except Exception as exc:  # e.g. out of memory at a big shape
                row.error = short_error(exc)
    elif runners:
        for name, timing in time_interleaved(runners, repeats, device).items():
            row = rows[name]
            row.time_ms, row.spread_pct, row.samples_ms = timing.median_ms, timing.spread_pct, timing.samples_ms
    base = rows[case.baseline].time_ms if case.baseline in rows else None
    for row in rows.values():
        if base is not None and row.time_ms is not None:
            row.speedup = base / row.time_ms
    del runners
    gc.collect()

    if device.type == "cpu" and cpu_memory is not None:
        for row in rows.values():
            if row.error is None:
                mem = cpu_memory(row.impl)
                if isinstance(mem, str):
                    row.notes.append(f"memory {mem}")
                else:
                    row.peak_extra_mb = mem
    return list(rows.values())


def error_notes(rows: list[Row]) -> list[str]:
    """A line for every row with a note, a failure or an error above the tolerance policy's limit."""
    notes = [f"{r.label()}: {n}" for r in rows for n in r.notes]
    notes += [f"{r.label()}: {r.error}" for r in rows if r.error is not None]
    notes += [
        f"WARNING {r.label()}: max err {r.max_err:.1e} against the float64 oracle is above the "
        f"{r.allowed_err:.1e} allowed"
        for r in rows
        if r.flagged
    ]
    return notes
