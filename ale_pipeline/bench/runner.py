"""Edit ALE-Bench cases with :class:`~ale_pipeline.ALEEditPipeline` into the published results layout.

``results/<n>/<type>/<img>/edit_<index>.png`` plus ``results/<n>/<type>/<img>/prompt.json`` (the case file, as
the published ``run_ale_bench.py`` writes it and ``evaluate_ale.py`` reads it). The ground-truth masks are the
edit masks and each case gets the published per-type Q/K injection preset.

Resumable and shardable without coordination: a result is written to a temporary file and renamed into
place, so a result file that exists is complete and its case is skipped; cases are dealt round-robin over
``num_processes`` in the benchmark's order, so processes never share a case, whatever finished before.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..config import SELF_REPLACE_PRESETS, UNKNOWN_TYPE_SELF_REPLACE_STEPS
from .dataset import BenchCase, _case_order

#: The published runner's ``self_replace_steps`` for editing types outside its table (with a warning).
FALLBACK_SELF_REPLACE_STEPS = UNKNOWN_TYPE_SELF_REPLACE_STEPS
PROMPT_COPY = "prompt.json"


@dataclass
class RunSummary:
    """What one :func:`run_bench` call did with its share of the cases.

    ``assigned``: cases of this process; ``computed``: edited now; ``skipped``: their result already existed;
    ``seconds``: wall time of the call; ``written``: the result files written now, in order.
    """

    assigned: int = 0
    computed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    written: list[Path] = field(default_factory=list)

    @property
    def cases_per_minute(self) -> float:
        return 60.0 * self.computed / self.seconds if self.seconds > 0 else 0.0


class ResultsMismatchError(ValueError):
    """The results folder already holds a ``prompt.json`` that is not the benchmark's (another benchmark's results)."""


def shard(cases: Iterable[BenchCase], process_index: int = 0, num_processes: int = 1) -> list[BenchCase]:
    """This process's cases: duplicates dropped, sorted in the benchmark's order, every ``num_processes``-th
    starting at ``process_index``. The shards of ``0 .. num_processes - 1`` partition the cases."""
    if num_processes < 1 or not 0 <= process_index < num_processes:
        raise ValueError(f"need 0 <= process_index < num_processes, got {process_index} of {num_processes}")
    unique = {case.case_id: case for case in cases}
    ordered = sorted(unique.values(), key=_case_order)
    return ordered[process_index::num_processes]


def injection_kwargs(case: BenchCase) -> dict:
    """The pipeline arguments that pick the case's self-attention injection preset.

    As the published ``get_hyps``: from the entry's ``editing_types`` (``["color", "object"]`` is
    ``color+object``), else the type folder; a type outside the presets gets 1.0 with a warning.
    """
    edit_type = "+".join(case.editing_types) or case.edit_type
    if edit_type in SELF_REPLACE_PRESETS:
        return {"edit_type": edit_type}
    warnings.warn(
        f"case {case.case_id}: editing type {edit_type!r} has no injection preset; "
        f"using self_replace_steps={FALLBACK_SELF_REPLACE_STEPS} as the published runner does",
        stacklevel=3,
    )
    return {"self_replace_steps": FALLBACK_SELF_REPLACE_STEPS}


def run_bench(
    pipe,
    cases: Iterable[BenchCase],
    out_dir: str | os.PathLike,
    *,
    process_index: int = 0,
    num_processes: int = 1,
    progress: bool = True,
    published_ore: bool = False,
    **edit_kwargs,
) -> RunSummary:
    """Edit this process's share of ``cases`` (see :func:`shard`) whose result file does not exist yet.

    Each case calls ``pipe(image_path, edits, gt_mask_paths, edit_type=..., **edit_kwargs)`` (``edit_kwargs``
    such as ``num_inference_steps``, ``seed``, ``longest_side``, ``attention_backend``; an explicit
    ``self_replace_steps`` overrides the per-type preset) and saves ``images[0]`` at
    :meth:`BenchCase.result_path`. An exception from the pipeline propagates: everything finished before it
    is on disk, and a rerun continues from there.

    ``published_ore`` asks the pipeline to reproduce the published code's ORE indexing
    (``published_ore=True``); without it the keyword is not passed, so the pipeline's default applies.

    ``progress`` shows a tqdm bar with the rate in cases per minute; with several processes it counts the
    result files of all of them.
    """
    start = time.perf_counter()
    if not isinstance(published_ore, bool):
        raise TypeError(f"published_ore must be a bool, got {type(published_ore).__name__}")
    if published_ore:
        edit_kwargs["published_ore"] = True
    out_dir = Path(out_dir)
    everything = list(cases)
    mine = shard(everything, process_index, num_processes)
    summary = RunSummary(assigned=len(mine))
    first_of_folder = {}
    for case in mine:
        first_of_folder.setdefault(case.result_dir(out_dir), case)
    for folder, case in first_of_folder.items():
        if (folder / PROMPT_COPY).is_file():  # another benchmark's results: refuse before any work, not midway
            _copy_prompt_file(case.prompt_file, folder / PROMPT_COPY)
    pending = [case for case in mine if not case.result_path(out_dir).is_file()]
    summary.skipped = len(mine) - len(pending)
    # Several processes: the bar follows every selected case's file, so it shows the whole run's progress.
    tracked = shard(everything) if num_processes > 1 else mine

    bar = _progress_bar(tracked, out_dir, enabled=progress)
    counted_at_start = bar.n if bar is not None else 0
    copied: set[Path] = set()
    try:
        for case in pending:
            folder = case.result_dir(out_dir)
            if folder not in copied:
                # Before the first image of the folder: the evaluation reads a folder's images through it.
                _copy_prompt_file(case.prompt_file, folder / PROMPT_COPY)
                copied.add(folder)
            call = {**injection_kwargs(case), **edit_kwargs}
            result = pipe(str(case.image_path), list(case.edits), [str(p) for p in case.mask_paths], **call)
            path = case.result_path(out_dir)
            _save_png(result.images[0], path)
            summary.computed += 1
            summary.written.append(path)
            if bar is not None:
                done = _count_done(tracked, out_dir) if num_processes > 1 else bar.n + 1
                minutes = (time.perf_counter() - start) / 60.0
                bar.set_postfix_str(f"{(done - counted_at_start) / minutes:.2f} cases/min", refresh=False)
                bar.update(done - bar.n)
    finally:
        if bar is not None:
            bar.close()
        summary.seconds = time.perf_counter() - start
    # Folders whose cases were all done before still get their prompt.json (e.g. images copied in by hand).
    for folder, case in first_of_folder.items():
        if folder not in copied and not (folder / PROMPT_COPY).is_file() and folder.is_dir():
            _copy_prompt_file(case.prompt_file, folder / PROMPT_COPY)
    return summary


def count_done(cases: Iterable[BenchCase], out_dir: str | os.PathLike) -> int:
    """How many of ``cases`` have their result file in ``out_dir``."""
    return _count_done(list(cases), Path(out_dir))


# ----------------------------------------------------------------------------------------------------------


def _count_done(cases: list[BenchCase], out_dir: Path) -> int:
    return sum(case.result_path(out_dir).is_file() for case in cases)


def _progress_bar(cases: list[BenchCase], out_dir: Path, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(
        total=len(cases),
        initial=_count_done(cases, out_dir),
        unit="case",
        desc="ale-bench",
        dynamic_ncols=True,
        # tqdm's own rate is per second and would count the skipped cases; the postfix is cases per minute.
        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]",
        postfix="",
    )


def _tmp_name(path: Path) -> Path:
    # The pid keeps two processes that were (wrongly) given the same case from writing one temporary file.
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def _save_png(image, path: Path) -> None:
    """Write ``image`` to ``path`` through a temporary file and a rename: the result file is never partial."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    try:
        image.save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _copy_prompt_file(source: Path, dest: Path) -> None:
    """Copy the case file to ``dest`` (atomically) unless an equal one is there; a different one is an error,
    since the evaluation would then score these images against the wrong edits."""
    if dest.is_file():
        try:
            same = json.loads(dest.read_text(encoding="utf-8")) == json.loads(source.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            same = False
        if same:
            return
        raise ResultsMismatchError(
            f"{dest} differs from the benchmark's {source}: this results folder holds another benchmark's "
            "results; use another --out"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(dest)
    try:
        shutil.copyfile(source, tmp)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


__all__ = [
    "FALLBACK_SELF_REPLACE_STEPS",
    "ResultsMismatchError",
    "RunSummary",
    "count_done",
    "injection_kwargs",
    "run_bench",
    "shard",
]
