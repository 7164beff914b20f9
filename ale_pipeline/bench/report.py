"""``ale-bench eval``: score a results folder, write the per-case CSV, a markdown report and PNG plots.

::

    ale-bench eval --bench ALE/ale_bench --results results [--out results/stats] [--tels joined|mean]
                   [--dino-input published|unit] [--clip-model ID|DIR] [--dino-model ID|DIR]
                   [--lpips-weights FILE] [--device cuda] [--limit N] [--force]

Writes into ``--out`` (default ``<results>/stats``):

- ``evaluation_results.csv``: one row per evaluated case: the published CSV's columns (``file_id``,
  ``target_count``, ``edit_type`` and the 8 metrics) then ``case_id``, ``image``, ``index`` and both variants
  of TELS and of the structure distance. Rows are appended as cases finish, so a stopped evaluation
  continues where it stopped (cases already in the CSV are skipped);
- ``report.md``: overall / by object count / by edit type means beside the published ALE numbers;
- ``overall.png``, ``by_count.png``, ``by_type.png``: the same as bar charts;
- ``summary.csv``: the means of every group (overall, per count, per type, per count and type);
- ``missing.txt``: selected cases with no result image (listed, not fatal);
- ``eval_config.json``: the models used, so a resumed evaluation cannot mix models.

Aggregation follows the published ``pandas.mean``: NaN (TILS of one object, background metrics of a fully
covered image) is skipped. One deviation: a case whose background is untouched has PSNR ``inf``; pandas would
make every mean containing it ``inf``, so PSNR means here are over the finite values, and the report counts
the ``inf`` cases.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from . import published
from .dataset import EDIT_TYPES, BenchCase, BenchFormatError, load_bench
from .metrics import (
    DEFAULT_CLIP_MODEL,
    DEFAULT_DINO_MODEL,
    METRIC_COLUMNS,
    PUBLISHED_COLUMNS,
    VARIANT_COLUMNS,
    MetricModels,
    ModelUnavailableError,
    evaluate_case,
)

PROG = "ale-bench eval"
CSV_NAME = "evaluation_results.csv"
REPORT_NAME = "report.md"
CONFIG_NAME = "eval_config.json"
MISSING_NAME = "missing.txt"
SUMMARY_NAME = "summary.csv"
PLOT_NAMES = {"overall": "overall.png", "by_count": "by_count.png", "by_type": "by_type.png"}
#: Everything ``eval`` writes into ``--out``; nothing else there is ever touched.
OUTPUT_NAMES = (CSV_NAME, REPORT_NAME, CONFIG_NAME, MISSING_NAME, SUMMARY_NAME, *PLOT_NAMES.values())
ID_COLUMNS = ("file_id", "target_count", "edit_type")
CASE_COLUMNS = ("case_id", "image", "index")
CSV_COLUMNS = ID_COLUMNS + PUBLISHED_COLUMNS + CASE_COLUMNS + VARIANT_COLUMNS


class EvalError(Exception):
    """A user mistake or an unusable output folder: one ``ale-bench eval: error:`` line, exit status 2."""


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``eval`` subcommand's options."""
    parser.add_argument("--bench", required=True, metavar="DIR", help="the benchmark (images/, masks/, prompts/)")
    parser.add_argument("--results", required=True, metavar="DIR", help="the results folder of `ale-bench run`")
    parser.add_argument("--out", metavar="DIR", help="where the CSV, report and plots go (default RESULTS/stats)")
    parser.add_argument("--counts", nargs="+", metavar="N", help="object counts to score, e.g. 1,2 (default all)")
    parser.add_argument("--types", nargs="+", metavar="TYPE", help="edit types to score (default all)")
    parser.add_argument("--images", nargs="+", metavar="IMG", help="source images to score, by name (default all)")
    parser.add_argument("--limit", type=int, metavar="N", help="only the first N selected cases (benchmark order)")
    parser.add_argument(
        "--clip-model",
        metavar="ID|DIR",
        default=DEFAULT_CLIP_MODEL,
        help=f"CLIP hub id or local folder (default {DEFAULT_CLIP_MODEL})",
    )
    parser.add_argument(
        "--dino-model",
        metavar="ID|DIR",
        default=DEFAULT_DINO_MODEL,
        help=f"DINO ViT hub id or local folder (default {DEFAULT_DINO_MODEL})",
    )
    parser.add_argument(
        "--lpips-weights",
        metavar="FILE",
        help="torchvision's SqueezeNet 1.1 checkpoint (squeezenet1_1-b8a52dc0.pth) for the LPIPS backbone "
        "(default: torchmetrics' LPIPS when torchvision imports, else the file in the torch hub cache)",
    )
    parser.add_argument("--device", help="torch device (default cuda when available, else cpu)")
    parser.add_argument(
        "--tels",
        choices=("joined", "mean"),
        default="joined",
        help="TELS column: 'joined' = one CLIP score against 'y1 and y2 ...' (the published code, default); "
        "'mean' = mean over the target phrases (the project page's formula). Both are in the CSV.",
    )
    parser.add_argument(
        "--dino-input",
        choices=("published", "unit"),
        default="published",
        help="structure distance column: 'published' feeds DINO 0-255 values (the published quirk, default); "
        "'unit' feeds 0-1. Both are in the CSV.",
    )
    parser.add_argument("--force", action="store_true", help="start over: replace earlier eval outputs in --out")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def eval_main(args: argparse.Namespace) -> int:
    """Run the evaluation described by ``args``; returns the exit status: 0 done, 2 a user error (one line)."""
    try:
        return _eval(args)
    except (EvalError, BenchFormatError, ModelUnavailableError, ValueError) as err:
        lines = str(err).strip().splitlines() or [type(err).__name__]
        print(f"{PROG}: error: {lines[0]}", file=sys.stderr)
        return 2


# ------------------------------------------------------------------------------------------------ flow


def _split(values: Sequence[str] | None) -> list[str] | None:
    """``["1,2", "3"] -> ["1", "2", "3"]``; ``None`` stays ``None``."""
    if values is None:
        return None
    return [v for item in values for v in item.split(",") if v]


def _eval(args: argparse.Namespace) -> int:
    bench = load_bench(args.bench)
    counts = _split(args.counts)
    try:
        counts = None if counts is None else [int(c) for c in counts]
    except ValueError:
        raise EvalError(f"--counts must be integers, got {' '.join(args.counts)}") from None
    cases = bench.select(counts=counts, types=_split(args.types), images=_split(args.images), limit=args.limit)
    results = Path(args.results)
    if not results.is_dir():
        raise EvalError(f"results folder not found: {str(results)!r}")
    out = Path(args.out) if args.out else results / "stats"
    if args.device and args.device.startswith("cuda") and not torch.cuda.is_available():
        raise EvalError(f"--device {args.device}: CUDA is not available to this torch ({torch.__version__})")
    models = MetricModels(args.clip_model, args.dino_model, args.lpips_weights, args.device)
    config = {"clip_model": args.clip_model, "dino_model": args.dino_model, "lpips_weights": args.lpips_weights}
    done = _prepare_out(out, config, args.force)

    present = [c for c in cases if c.result_path(results).is_file()]
    missing = [c for c in cases if not c.result_path(results).is_file()]
    pending = [c for c in present if c.case_id not in done]
    if not present:
        raise EvalError(
            f"no result images for the {len(cases)} selected cases under {str(results)!r} "
            f"(expected e.g. {cases[0].result_path(results)})"
            if cases
            else "no cases selected"
        )
    unreadable: list[tuple[BenchCase, str]] = []
    if pending:
        models.load_all()  # fail on a missing model before the first case, not in the middle
        config["lpips"] = models.lpips_backend
        _write_json(out / CONFIG_NAME, config)
        unreadable = _score(pending, results, out / CSV_NAME, models, args)
    rows = _rewrite_headline(out / CSV_NAME, args.tels, args.dino_input)
    selected = {c.case_id for c in present}
    rows = [r for r in rows if r["case_id"] in selected]
    (out / MISSING_NAME).write_text(
        "".join(f"{c.case_id}\t{c.result_path(results)}\n" for c in missing)
        + "".join(f"{c.case_id}\t{c.result_path(results)}\tunreadable: {why}\n" for c, why in unreadable)
    )
    tables = build_tables(rows)
    config = json.loads((out / CONFIG_NAME).read_text()) if (out / CONFIG_NAME).is_file() else config
    (out / REPORT_NAME).write_text(
        render_markdown(tables, rows, missing, args, config, out, unreadable), encoding="utf-8"
    )
    write_summary(tables, out / SUMMARY_NAME)
    write_plots(tables, out)
    print(
        f"{PROG}: {len(rows)} cases scored ({len(pending) - len(unreadable)} now), {len(missing)} without a result "
        f"image{f', {len(unreadable)} unreadable' if unreadable else ''}; "
        f"report: {out / REPORT_NAME}"
    )
    return 0


def _prepare_out(out: Path, config: dict[str, Any], force: bool) -> set[str]:
    """Make ``out`` ready; returns the case ids already in its CSV (resume). Refuses to write over files
    that an earlier evaluation with other models, or something else, left there, unless ``force``."""
    out.mkdir(parents=True, exist_ok=True)
    ours = [out / name for name in OUTPUT_NAMES if (out / name).exists()]
    if force:
        for path in ours:
            path.unlink()
        return set()
    if not ours:
        return set()
    config_file = out / CONFIG_NAME
    if not config_file.is_file():
        raise EvalError(f"{out} holds {ours[0].name} from something else; pass --force to replace it or choose --out")
    previous = json.loads(config_file.read_text())
    for key in ("clip_model", "dino_model", "lpips_weights"):
        if previous.get(key) != config[key]:
            raise EvalError(
                f"{out} holds an evaluation with {key} = {previous.get(key)!r}, not {config[key]!r}; "
                "pass --force to start over or choose another --out"
            )
    csv_file = out / CSV_NAME
    if not csv_file.is_file():
        return set()
    with csv_file.open(newline="") as f:
        header = next(csv.reader(f), [])
    if tuple(header) != CSV_COLUMNS:
        raise EvalError(f"{csv_file} has other columns than this version writes; pass --force to start over")
    return {r["case_id"] for r in _read_rows(csv_file)}


def _score(
    cases: list[BenchCase], results: Path, csv_file: Path, models: MetricModels, args: argparse.Namespace
) -> list[tuple[BenchCase, str]]:
    """Evaluate ``cases`` and append one CSV row each, flushed as it is written (resumable). Returns the cases
    whose result image cannot be read (truncated file, not an image), with why; they get no row."""
    from PIL import Image, UnidentifiedImageError
    from tqdm.auto import tqdm

    unreadable = []

    new_file = not csv_file.is_file()
    with csv_file.open("a", newline="") as f:
        writer = csv.writer(f)
        if new_file:
            writer.writerow(CSV_COLUMNS)
        for case in tqdm(cases, desc="ale-bench eval", unit="case", disable=args.quiet):
            try:
                with Image.open(case.result_path(results)) as im:
                    edited = im.convert("RGB")
            except (OSError, UnidentifiedImageError) as err:  # a run killed mid-write, say: report, go on
                unreadable.append((case, str(err).splitlines()[0] if str(err) else type(err).__name__))
                continue
            values = evaluate_case(case, edited, models, tels=args.tels, dino_input=args.dino_input)
            writer.writerow(_csv_row(case, values))
            f.flush()
    return unreadable


def _csv_row(case: BenchCase, values: dict[str, float]) -> list[Any]:
    ids = {
        "file_id": f"{case.image_name}_edit_{case.index}.png",  # as published: <img>_<result file name>
        "target_count": case.n_objects,
        "edit_type": case.edit_type,
        "case_id": case.case_id,
        "image": case.image_name,
        "index": case.index,
    }
    return [ids[c] if c in ids else repr(float(values[c])) for c in CSV_COLUMNS]


def _read_rows(csv_file: Path) -> list[dict[str, Any]]:
    """The CSV's rows with the metric columns as floats (``nan`` and ``inf`` kept)."""
    if not csv_file.is_file():
        return []
    with csv_file.open(newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for column in METRIC_COLUMNS:
            row[column] = float(row[column])
        row["target_count"] = int(row["target_count"])
    return rows


def _rewrite_headline(csv_file: Path, tels: str, dino_input: str) -> list[dict[str, Any]]:
    """Set the ``TELS`` / ``structure_distance`` columns of every row to the chosen variants (rows from an
    earlier run may have used the other ones) and rewrite the CSV in place, atomically."""
    rows = _read_rows(csv_file)
    for row in rows:
        row["TELS"] = row[f"TELS_{tels}"]
        row["structure_distance"] = row[f"structure_distance_{dino_input}"]
    tmp = csv_file.with_name(csv_file.name + ".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for row in rows:
            writer.writerow([repr(row[c]) if c in METRIC_COLUMNS else row[c] for c in CSV_COLUMNS])
    os.replace(tmp, csv_file)
    return rows


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


# ------------------------------------------------------------------------------------------ aggregation


def mean_finite(values: Iterable[float]) -> tuple[float, int]:
    """Mean over the finite values, and how many were ``+-inf`` (left out). With no finite value the mean is
    the infinities' mean (``inf`` for a group of untouched backgrounds), or NaN when there are none either."""
    values = list(values)
    finite = [v for v in values if math.isfinite(v)]
    infinite = [v for v in values if math.isinf(v)]
    if finite:
        return math.fsum(finite) / len(finite), len(infinite)
    return (sum(infinite) / len(infinite) if infinite else math.nan), len(infinite)


def aggregate(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``{"n": cases, "<metric>": mean, "inf": {metric: count}}`` over ``rows``."""
    out: dict[str, Any] = {"n": len(rows), "inf": {}}
    for column in METRIC_COLUMNS:
        out[column], n_inf = mean_finite(r[column] for r in rows)
        if n_inf:
            out["inf"][column] = n_inf
    return out


def build_tables(
    rows: Sequence[dict[str, Any]],
) -> dict[str, list[tuple[str, dict[str, Any], dict[str, float] | None]]]:
    """The published breakdowns (overall, by count, by type; the paper's tables 1-3) and by (count, type), as
    the published evaluation also writes: ``{table: [(group label, our means, published row or None)]}``."""
    counts = sorted({r["target_count"] for r in rows})
    types = sorted({r["edit_type"] for r in rows}, key=lambda t: (EDIT_TYPES.index(t) if t in EDIT_TYPES else 99, t))
    grid = [(n, t) for n in counts for t in types if any(r["target_count"] == n and r["edit_type"] == t for r in rows)]
    return {
        "overall": [("all", aggregate(rows), published.OVERALL)],
        "by_count": [
            (str(n), aggregate([r for r in rows if r["target_count"] == n]), published.BY_COUNT.get(n)) for n in counts
        ],
        "by_type": [(t, aggregate([r for r in rows if r["edit_type"] == t]), published.BY_TYPE.get(t)) for t in types],
        "by_count_type": [
            (f"{n} {t}", aggregate([r for r in rows if r["target_count"] == n and r["edit_type"] == t]), None)
            for n, t in grid
        ],
    }


def write_summary(tables: dict[str, list], path: Path) -> None:
    """Every group's means in one CSV: ``table, group, cases, <metric columns>`` (ours only)."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["table", "group", "cases", *METRIC_COLUMNS])
        for name, groups in tables.items():
            for label, ours, _ in groups:
                writer.writerow([name, label, ours["n"], *(repr(ours[c]) for c in METRIC_COLUMNS)])


# ---------------------------------------------------------------------------------------------- markdown


def _fmt(value: float | None, column: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if math.isinf(value):
        return "inf"
    return f"{value:.{published.DECIMALS[column]}f}"


def _table(
    groups: list[tuple[str, dict[str, Any], dict[str, float] | None]],
    first: str,
    columns: Sequence[str],
    paper_cases: int | None,
) -> str:
    """Markdown table: per group our row, and the paper's below it unless ``paper_cases`` is None."""
    head = [first, "", "cases", *(published.LABELS[c] for c in columns)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, ours, theirs in groups:
        lines.append("| " + " | ".join([label, "ours", str(ours["n"]), *(_fmt(ours[c], c) for c in columns)]) + " |")
        if paper_cases is not None:
            cells = [_fmt(theirs.get(c) if theirs else None, c) for c in columns]
            lines.append("| " + " | ".join([label, "paper", str(paper_cases) if theirs else "", *cells]) + " |")
    return "\n".join(lines)


def render_markdown(
    tables: dict[str, list],
    rows: Sequence[dict[str, Any]],
    missing: Sequence[BenchCase],
    args: argparse.Namespace,
    config: dict[str, Any],
    out: Path,
    unreadable: Sequence[tuple[BenchCase, str]] = (),
) -> str:
    """The report: settings, the three tables beside the published numbers, both metric variants, notes."""
    tels = {"joined": "joined prompt (published code)", "mean": "mean over target phrases (project page)"}
    dino = {"published": "0-255 input (published quirk)", "unit": "0-1 input"}
    parts = [
        "# ALE-Bench evaluation",
        "",
        f"- benchmark: `{args.bench}`; results: `{args.results}`",
        f"- cases scored: {len(rows)}; selected cases without a result image: {len(missing)}"
        + (f" (listed in `{MISSING_NAME}`)" if missing else ""),
        f"- CLIP: `{config.get('clip_model')}`; DINO: `{config.get('dino_model')}`; LPIPS: {config.get('lpips', '?')}",
        f"- TELS: {tels[args.tels]}; structure distance: {dino[args.dino_input]}",
        f"- paper rows: {published.SOURCE}. The paper scores all 3,000 cases; a subset's means are not comparable "
        "one to one.",
        "",
        "## Overall",
        "",
        _table(tables["overall"], "", PUBLISHED_COLUMNS, published.CASES["overall"]),
        "",
        "## By number of edited objects",
        "",
        _table(tables["by_count"], "# obj", PUBLISHED_COLUMNS, published.CASES["by_count"]),
        "",
        "## By edit type",
        "",
        _table(tables["by_type"], "type", PUBLISHED_COLUMNS, published.CASES["by_type"]),
        "",
        "## By object count and edit type",
        "",
        "(The paper prints no table for these groups.)",
        "",
        _table(tables["by_count_type"], "group", PUBLISHED_COLUMNS, None),
        "",
        "## Metric variants (named apart)",
        "",
        "TELS of the published code (one CLIP score against the joined prompt) and of the project page (mean of the "
        "per-phrase scores); structure distance with the published 0-255 DINO input and with the correct 0-1 input.",
        "",
        _table(tables["overall"] + tables["by_count"], "group", VARIANT_COLUMNS, None),
        "",
        "## Notes",
        "",
        "- Means skip NaN as the published pandas means do: TILS is undefined for one object, background metrics "
        "for an image whose masks cover everything.",
    ]
    inf_counts = tables["overall"][0][1]["inf"]
    if inf_counts:
        what = ", ".join(f"{c}: {n}" for c, n in inf_counts.items())
        parts.append(
            f"- Cases with an infinite value (identical backgrounds give PSNR inf), left out of those means: {what}."
        )
    if missing:
        shown = ", ".join(f"`{c.case_id}`" for c in missing[:10])
        parts.append(f"- Missing results: {shown}{' ...' if len(missing) > 10 else ''}")
    if unreadable:
        shown = ", ".join(f"`{c.case_id}`" for c, _ in unreadable[:10])
        parts.append(f"- Unreadable result images (not scored; see `{MISSING_NAME}`): {shown}")
    parts += ["", "Plots: " + ", ".join(f"`{name}`" for name in PLOT_NAMES.values()) + f" (in `{out}`).", ""]
    return "\n".join(parts)


# ------------------------------------------------------------------------------------------------- plots


def write_plots(tables: dict[str, list], out: Path) -> list[Path]:
    """One PNG per table: a panel per metric, our means and the paper's side by side per group."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    import numpy as np

    paths = []
    titles = {"overall": "overall", "by_count": "by number of edited objects", "by_type": "by edit type"}
    for name in PLOT_NAMES:
        groups = tables[name]
        fig, axes = plt.subplots(2, 4, figsize=(16, 7))
        fig.subplots_adjust(left=0.04, right=0.99, bottom=0.1, top=0.9, wspace=0.25, hspace=0.4)
        labels = [g[0] for g in groups]
        x = np.arange(len(groups))
        for ax, column in zip(axes.flat, PUBLISHED_COLUMNS, strict=True):
            ours = [g[1][column] for g in groups]
            theirs = [(g[2] or {}).get(column, math.nan) for g in groups]
            ax.bar(x - 0.2, np.nan_to_num(ours, nan=0.0, posinf=0.0), 0.4, label="ours")
            ax.bar(x + 0.2, np.nan_to_num(theirs, nan=0.0), 0.4, label="paper (ALE)")
            ax.set_xticks(x, labels, rotation=30 if name == "by_type" else 0, fontsize=8)
            ax.set_title(published.LABELS[column])
        axes.flat[0].legend(fontsize=8)
        fig.suptitle(f"ALE-Bench {titles[name]}: ours vs the paper")
        path = out / PLOT_NAMES[name]
        fig.savefig(path, dpi=80)
        plt.close(fig)
        paths.append(path)
    return paths


__all__ = [
    "CSV_COLUMNS",
    "EvalError",
    "add_eval_arguments",
    "aggregate",
    "build_tables",
    "eval_main",
    "mean_finite",
    "render_markdown",
    "write_plots",
]
