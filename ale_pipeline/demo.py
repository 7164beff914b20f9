"""``make demo``: edit the shipped example picture, write one side-by-side PNG, and time the two backends.

Uses the default LCM checkpoint when it can be loaded (local cache, then the hub). When no weights can be
reached it says so in one line and runs the very same pipeline on a randomly initialised SD-shaped model, so
the path, the pictures' layout and the timings of the attention backends are still shown (the image itself is
then meaningless).

The timing compares the published materialised attention (``reference``) with the fused backend (``auto``):
after one warm-up edit each, ``--repeats`` edits per backend run interleaved (reference, auto, reference,
auto, ...), so that a change in the machine's load hits both alike; the medians, their ratio, the spread of the
repeats and the load average are printed, with a warning when the load or the spread makes them unreliable. On
the CPU the timed edits are smaller than the picture's (``--timing-size``, ``--timing-steps``) to keep
``make demo`` within a few minutes.

    python -m ale_pipeline.demo [--example examples/coffee] [--out demo_output] [--steps N] [--repeats 3]
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .commands import Parser, load_pipeline, parse, require_extra, resolve_device, resolve_dtype, run_command
from .config import DEFAULT_MODEL, DEFAULTS

PROG = "demo"
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "coffee"
#: The backends timed, the first being the baseline of the speed-up.
BACKENDS = ("reference", "auto")
LABELS = {"reference": "reference (published, materialised)", "auto": "auto (fused ops)"}
#: The random fallback model's picture size: its weights are noise, so the published size buys nothing.
RANDOM_MODEL_SIZE = 384
#: The CPU timing's edit size and steps: small enough for several repeats of both backends in a few minutes.
CPU_TIMING_SIZE = 256
CPU_TIMING_STEPS = 4
#: A backend's repeats whose (max - min) / median exceeds this are too noisy to compare.
MAX_SPREAD = 0.2


@dataclass
class Timing:
    """Interleaved timings of the backends: ``seconds[backend]`` holds each repeat's edit time (s)."""

    seconds: dict[str, list[float]]
    load_average: float | None
    cores: int

    def median(self, backend: str) -> float:
        return statistics.median(self.seconds[backend])

    def spread(self, backend: str) -> float:
        """``(max - min) / median`` of the backend's repeats (0 for a single repeat)."""
        times = self.seconds[backend]
        return (max(times) - min(times)) / self.median(backend)

    def speedup(self, backend: str) -> float:
        """How many times faster than the first backend (the baseline)."""
        return self.median(next(iter(self.seconds))) / self.median(backend)

    def unreliable(self) -> str | None:
        """Why the numbers should not be trusted (the load, the spread), or ``None``."""
        reasons = []
        if self.load_average is not None and self.load_average > self.cores:
            reasons.append(f"load average {self.load_average:.2f} above the {self.cores} cores")
        noisy = [f"{b} {100 * self.spread(b):.0f}%" for b in self.seconds if self.spread(b) > MAX_SPREAD]
        if noisy:
            reasons.append(f"repeats spread more than {100 * MAX_SPREAD:.0f}% ({', '.join(noisy)})")
        return "; ".join(reasons) or None


def load_average() -> float | None:
    """The 1-minute load average, or ``None`` where the platform has none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def time_backends(
    run: Callable[[str], object],
    backends: Sequence[str] = BACKENDS,
    repeats: int = 3,
    sync: Callable[[], None] | None = None,
) -> Timing:
    """Time ``run(backend)`` for each of ``backends``: one untimed warm-up each, then ``repeats`` rounds that run
    every backend once in turn (A B A B ...). ``sync`` (e.g. ``torch.cuda.synchronize``) runs before each clock
    reading. The load average is read at the end, over the timed minute."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    if not backends:
        raise ValueError("backends must name at least one backend")
    sync = sync or (lambda: None)
    for backend in backends:  # autotuning, JIT compiles and caches stay out of the timings
        run(backend)
    seconds = {backend: [] for backend in backends}
    for _ in range(repeats):
        for backend in backends:
            sync()
            start = time.perf_counter()
            run(backend)
            sync()
            seconds[backend].append(time.perf_counter() - start)
    return Timing(seconds, load_average(), os.cpu_count() or 1)


def render_timing(timing: Timing, what: str) -> str:
    """The timing table, the load average and, when they are unreliable, one line saying why."""
    lines = [
        f"timing: {what}",
        "| attention backend | median edit time (s) | spread of repeats | speed-up |",
        "|---|---|---|---|",
    ]
    for backend in timing.seconds:
        lines.append(
            f"| {LABELS.get(backend, backend)} | {timing.median(backend):.2f} | {100 * timing.spread(backend):.0f}% "
            f"| {timing.speedup(backend):.2f}x |"
        )
    load = "unknown" if timing.load_average is None else f"{timing.load_average:.2f}"
    lines.append(f"load average (1 min): {load} on {timing.cores} cores")
    why = timing.unreliable()
    if why is not None:
        lines.append(f"these timings are unreliable: {why}; rerun on a quieter machine")
    return "\n".join(lines)


def side_by_side(source, result, dilated, maps, phrases):
    """Source | masks | result | one attention map per target phrase, in one row (a PIL image).

    ``dilated``: ``(N, H, W)`` bool masks at the result's size; ``maps``: ``(N, H, W)`` in [0, 1]."""
    from .drawing import heatmap, overlay_masks, panel, row

    if len(maps) != len(phrases):
        raise ValueError(f"maps and phrases must pair up, got {len(maps)} maps and {len(phrases)} phrases")
    source = source.resize(result.size)
    panels = [
        panel(source, "source"),
        panel(overlay_masks(source, dilated, outline=False), "masks (dilated)"),
        panel(result, "ALE edit"),
    ]
    panels += [panel(heatmap(m, background=result), f"attention: {p}") for m, p in zip(maps, phrases, strict=True)]
    return row(panels)


def build_parser() -> Parser:
    """The demo's parser; its defaults are :mod:`ale_pipeline.config`'s."""
    parser = Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--example", type=Path, default=EXAMPLE, help="folder with edits.json, image and masks")
    parser.add_argument("--out", type=Path, default=Path("demo_output"))
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--steps", type=int, default=DEFAULTS.num_inference_steps, help="the picture's steps")
    parser.add_argument(
        "--longest-side",
        type=int,
        default=None,
        help=f"the picture's size (default {DEFAULTS.longest_side}; {RANDOM_MODEL_SIZE} for the random model)",
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available, else cpu")
    parser.add_argument("--seed", type=int, default=DEFAULTS.seed)
    parser.add_argument("--repeats", type=int, default=3, help="timed edits per backend, interleaved (default 3)")
    parser.add_argument(
        "--timing-size", type=int, default=None, help=f"timed edits' longest side (default {CPU_TIMING_SIZE} on "
        "the CPU, the picture's on CUDA)"
    )  # fmt: skip
    parser.add_argument(
        "--timing-steps", type=int, default=None, help=f"timed edits' steps (default {CPU_TIMING_STEPS} on the "
        "CPU, the picture's on CUDA)"
    )  # fmt: skip
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; returns the exit status (2 with one line on stderr for a usage mistake)."""
    return run_command(PROG, lambda: _main(sys.argv[1:] if argv is None else argv), extra="edit")


def _main(argv: Sequence[str]) -> int:
    from .commands import CommandError

    args = parse(build_parser(), argv)
    if isinstance(args, int):
        return args
    for flag, least in (("steps", 1), ("repeats", 1), ("timing_steps", 1), ("longest_side", 8), ("timing_size", 8)):
        value = getattr(args, flag)
        if value is not None and value < least:
            raise CommandError(f"--{flag.replace('_', '-')} must be at least {least}, got {value}")
    require_extra("edit")
    import numpy as np
    import torch

    from .pipeline import load_image

    device = resolve_device(args.device)
    dtype = resolve_dtype(None, device)
    spec = json.loads((args.example / "edits.json").read_text())
    image = load_image(args.example / spec["image"])
    edits = [e["edit"] for e in spec["edits"]]
    masks = [args.example / e["mask"] for e in spec["edits"]]
    pipe = load_pipeline(args.model, device, dtype, fallback="sd-shaped", prog=PROG)
    random_kind = getattr(pipe, "random_kind", None)
    loaded = args.model if random_kind is None else f"random {random_kind} model"
    longest = args.longest_side or (DEFAULTS.longest_side if random_kind is None else RANDOM_MODEL_SIZE)
    cpu = device == "cpu"
    timing_size = args.timing_size or (min(longest, CPU_TIMING_SIZE) if cpu else longest)
    timing_steps = args.timing_steps or (min(args.steps, CPU_TIMING_STEPS) if cpu else args.steps)

    # The picture: the fused backend at the picture's size, with the masks used and each phrase's attention.
    pipe.set_progress_bar_config(desc="ALE edit")
    common = dict(seed=args.seed, attention_backend="auto")
    fast = pipe(image, edits, masks, num_inference_steps=args.steps, longest_side=longest, return_masks=True,
                return_attention_maps=True, **common)  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    phrases = [e.split("=>")[1].strip() for e in edits]
    sheet = side_by_side(image, fast.images[0], fast.masks.dilated.numpy(), fast.attention_maps.numpy(), phrases)
    sheet_path = args.out / "ale_demo.png"
    sheet.save(sheet_path)
    fast.images[0].save(args.out / "edited.png")

    pipe.set_progress_bar_config(disable=True)
    images = {}

    def run(backend: str) -> None:
        images[backend] = pipe(image, edits, masks, num_inference_steps=timing_steps, longest_side=timing_size,
                               seed=args.seed, attention_backend=backend).images[0]  # fmt: skip

    timing = time_backends(run, BACKENDS, args.repeats, sync=torch.cuda.synchronize if device == "cuda" else None)
    difference = np.abs(np.asarray(images["auto"], np.int16) - np.asarray(images["reference"], np.int16)).max()

    size = fast.images[0].size
    timed = images["auto"].size
    reduced = (timed, timing_steps) != (size, args.steps)
    smaller = " (smaller than the picture, to keep the demo short)" if reduced else ""
    print(f"model: {loaded} | {size[0]}x{size[1]} px | {args.steps} steps | device {device} | {len(edits)} edits")
    what = (f"{args.repeats} interleaved repeats per backend after a warm-up, at {timed[0]}x{timed[1]} px and "
            f"{timing_steps} steps{smaller}")  # fmt: skip
    print(render_timing(timing, what))
    print(f"max pixel difference between the two: {difference} / 255")
    print(f"wrote {sheet_path} (source | masks | result | attention per phrase) and {args.out / 'edited.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
