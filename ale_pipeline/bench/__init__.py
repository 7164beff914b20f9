"""ALE-Bench: load the benchmark, run ALE over it (resumable, multi-process), and evaluate the results."""

from .dataset import EDIT_TYPES, AleBench, BenchCase, BenchFormatError, load_bench, load_gt_masks
from .metrics import METRIC_COLUMNS, MetricModels, ModelUnavailableError, evaluate_case, evaluate_images
from .report import add_eval_arguments, eval_main
from .runner import RunSummary, run_bench

__all__ = [
    "EDIT_TYPES",
    "METRIC_COLUMNS",
    "AleBench",
    "BenchCase",
    "BenchFormatError",
    "MetricModels",
    "ModelUnavailableError",
    "RunSummary",
    "add_eval_arguments",
    "eval_main",
    "evaluate_case",
    "evaluate_images",
    "load_bench",
    "load_gt_masks",
    "run_bench",
]
