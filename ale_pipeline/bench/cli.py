"""``ale-bench``: run ALE over ALE-Bench (``run``) and score the results (``eval``).

    ale-bench run --bench ../ale-bench --out results [--counts 1,2,3] [--types color,object] [--limit N]
    accelerate launch --multi_gpu --num_processes 4 -m ale_pipeline.bench.cli run --bench ... --out results

``run`` edits every selected case with the ground-truth masks into ``--out`` in the published layout and can
be stopped and restarted at will: finished cases are skipped. Under ``accelerate launch`` (or ``torchrun``, any
launcher that sets ``WORLD_SIZE``) the cases are dealt over the processes, each on its own GPU; a plain call
is one process. Several CPU processes: ``accelerate launch --multi_gpu --num_processes N ... --device cpu``
(accelerate's own ``--cpu`` starts a single process unless given an MPI hostfile).

``run --published`` reproduces the published code's indexing of the substituted base embedding (ORE).

User mistakes (a malformed benchmark, an unknown type, a model that cannot be loaded, a missing ``edit``
extra) are one ``ale-bench: error: ...`` line on stderr with exit status 2. ``run`` never overwrites: a case
whose image exists is skipped. ``--help`` answers before torch or diffusers is imported.

Tests and embedders call :func:`main` with ``argv`` and a ``load_pipeline(model, device, dtype)`` of their own.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ..commands import (
    RANDOM_KINDS,
    CommandError,
    Parser,
    PipelineLoader,
    add_model_arguments,
    call_loader,
    load_pipeline,
    one_line,
    parse,
    random_pipeline,
    require_extra,
    resolve_device,
    resolve_dtype,
    run_command,
)
from ..config import DEFAULTS

PROG = "ale-bench"
#: Environment variables through which launchers (torchrun / accelerate, MPI) announce several processes.
WORLD_SIZE_VARS = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
#: Kept for callers of the old name: a user mistake of ``ale-bench``.
CliError = CommandError


def build_parser(eval_arguments=None) -> argparse.ArgumentParser:
    """The ``ale-bench`` parser. ``eval_arguments(parser)`` fills in the ``eval`` subcommand; it comes from
    :mod:`ale_pipeline.bench.report` and is imported only when ``eval`` is asked for."""
    parser = Parser(prog=PROG, description="Run ALE over ALE-Bench and evaluate the results.")
    commands = parser.add_subparsers(dest="command", metavar="{run,eval}", required=True)
    run = commands.add_parser(
        "run",
        help="edit the benchmark's cases into a results folder (resumable)",
        description="Edit the selected ALE-Bench cases with the ground-truth masks into OUT/<n>/<type>/<img>/"
        "edit_<i>.png (the published layout). Cases whose image exists are skipped (never overwritten), so an "
        "interrupted run continues where it stopped. Under `accelerate launch --multi_gpu` or torchrun the cases "
        "are split over the processes.",
    )
    run.add_argument("--bench", required=True, metavar="DIR", help="the benchmark (images/, masks/, prompts/)")
    run.add_argument("--out", required=True, metavar="DIR", help="the results folder (created if missing)")
    run.add_argument("--counts", nargs="+", metavar="N", help="object counts to run, e.g. 1,2 (default all)")
    run.add_argument("--types", nargs="+", metavar="TYPE", help="edit types to run, e.g. color,object (default all)")
    run.add_argument("--images", nargs="+", metavar="IMG", help="source images to run, by name (default all)")
    run.add_argument("--limit", type=int, metavar="N", help="only the first N selected cases (benchmark order)")
    add_model_arguments(run, seed_help=f"random seed of every case (default {DEFAULTS.seed}, as published)")
    run.add_argument(
        "--longest-side",
        type=int,
        default=DEFAULTS.longest_side,
        metavar="PX",
        help=f"edit at this longest side (aspect kept, multiples of 8; default {DEFAULTS.longest_side} as published)",
    )
    run.add_argument(
        "--published",
        action="store_true",
        help="reproduce the published code's indexing of the substituted base embedding (ORE) exactly",
    )
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.add_argument("--random-model", choices=RANDOM_KINDS, help=argparse.SUPPRESS)  # testing: no weights

    evaluate = commands.add_parser(
        "eval",
        help="score a results folder (TELS, TILS, editing performance, structure, background)",
        description="Score a results folder written by `ale-bench run` with the published metrics.",
    )
    if eval_arguments is not None:
        eval_arguments(evaluate)
    return parser


def main(argv: Sequence[str] | None = None, load_pipeline: PipelineLoader | None = None) -> int:
    """Run ``ale-bench`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status.

    ``load_pipeline(model, device, dtype)`` replaces :func:`ale_pipeline.commands.load_pipeline`.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = "bench" if _command(argv) == "eval" else "edit"
    return run_command(
        PROG,
        lambda: _main(argv, load_pipeline or _load_pretrained),
        extra=extra,
        interrupted="interrupted (finished cases are kept; rerun to continue)",
    )


# ----------------------------------------------------------------------------------------------------------


def _load_pretrained(model: str, device: str, dtype):
    return load_pipeline(model, device, dtype, prog=PROG)


def _main(argv: list[str], loader: PipelineLoader) -> int:
    eval_arguments = eval_main = None
    if _command(argv) == "eval":  # its options come from the report module, which needs the metrics
        require_extra("bench")
        from .report import add_eval_arguments as eval_arguments
        from .report import eval_main
    args = parse(build_parser(eval_arguments), argv)
    if isinstance(args, int):
        return args
    if args.command == "eval":
        return eval_main(args)
    require_extra("edit")
    from .dataset import BenchFormatError
    from .runner import ResultsMismatchError

    try:
        return _run(args, loader)
    except (BenchFormatError, ResultsMismatchError) as err:
        raise CommandError(str(err)) from None


def _command(argv: list[str]) -> str | None:
    """The subcommand: the first argument that is not an option."""
    return next((a for a in argv if not a.startswith("-")), None)


def _run(args: argparse.Namespace, loader: PipelineLoader) -> int:
    from .dataset import load_bench
    from .runner import count_done, run_bench

    if args.steps < 1:
        raise CommandError(f"--steps must be at least 1, got {args.steps}")
    if args.longest_side < 8:
        raise CommandError(f"--longest-side must be at least 8 pixels, got {args.longest_side}")
    if args.limit is not None and args.limit < 0:
        raise CommandError(f"--limit must be >= 0, got {args.limit}")
    counts = _split(args.counts)
    try:
        counts = None if counts is None else [int(c) for c in counts]
    except ValueError:
        raise CommandError(f"--counts takes object counts such as 1,2,3, got {' '.join(args.counts)!r}") from None

    # Everything about the benchmark and the output folder is checked before the (slow) model load.
    bench = load_bench(args.bench)
    try:
        cases = bench.select(counts, _split(args.types), _split(args.images), args.limit)
    except ValueError as err:
        raise CommandError(str(err)) from None
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CommandError(f"--out {str(out)!r} exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CommandError(f"cannot create --out {str(out)!r}: {one_line(err)}") from None

    state = _distributed_state(args.device)
    process_index, num_processes = (state.process_index, state.num_processes) if state else (0, 1)
    device = _device(args.device, state)
    dtype = resolve_dtype(args.dtype, device)
    if args.random_model:
        pipe = random_pipeline(args.random_model, device, dtype)
    else:
        pipe = call_loader(loader, args.model, device, dtype)
    if hasattr(pipe, "set_progress_bar_config"):
        pipe.set_progress_bar_config(disable=True)  # one bar for the cases, not one per edit's steps

    start = time.perf_counter()
    summary = run_bench(
        pipe,
        cases,
        out,
        process_index=process_index,
        num_processes=num_processes,
        progress=not args.quiet and process_index == 0,
        num_inference_steps=args.steps,
        seed=args.seed,
        longest_side=args.longest_side,
        attention_backend=args.backend,
        published_ore=args.published,
    )
    if state is not None:
        state.wait_for_everyone()  # the count below should see every process's files
    done = count_done(cases, out)
    if process_index == 0:
        by = f" by process 0 of {num_processes}" if num_processes > 1 else ""
        print(
            f"{PROG}: {done}/{len(cases)} cases done in {out} ({summary.computed} edited now{by}, "
            f"{summary.skipped} already there; {time.perf_counter() - start:.1f} s)"
        )
    return 0 if done == len(cases) else 1


def _split(values: list[str] | None) -> list[str] | None:
    """``["1,2", "3"]`` -> ``["1", "2", "3"]``: lists may be given comma- or space-separated."""
    if values is None:
        return None
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def _world_size() -> int:
    """How many processes the launcher says it started (1 without a launcher)."""
    sizes = [os.environ.get(var, "") for var in WORLD_SIZE_VARS]
    return max([int(size) for size in sizes if size.strip().isdigit()] or [1])


def _distributed_state(device: str | None):
    """accelerate's ``PartialState`` when a launcher started several processes, else ``None`` (one process)."""
    world = _world_size()
    if world <= 1:
        return None
    import torch

    try:
        from accelerate import PartialState
    except ImportError:
        raise CommandError(
            "several processes were launched but accelerate is not installed (pip install accelerate)"
        ) from None
    # Without cpu=True, accelerate on a machine without GPUs sets up no process group and makes every process
    # believe it is alone: each would then edit every case.
    state = PartialState(cpu=device == "cpu" or not torch.cuda.is_available())
    if state.num_processes != world:
        raise CommandError(
            f"the launcher started {world} processes but accelerate sees {state.num_processes}; refusing to run "
            "so that no case is edited twice"
        )
    return state


def _device(requested: str | None, state) -> str:
    """``--device``, resolved: each process of a multi-GPU launch gets its own GPU."""
    device = resolve_device(requested)
    if state is not None and requested != "cpu" and state.device.type == "cuda":
        return str(state.device)
    return device


if __name__ == "__main__":
    raise SystemExit(main())
