"""ALE-Bench: load the benchmark, run ALE over it (resumable, multi-process), and evaluate the results.

The names below are imported on first use, so that ``ale-bench --help`` answers without torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .dataset import EDIT_TYPES, AleBench, BenchCase, BenchFormatError, load_bench, load_gt_masks
    from .metrics import METRIC_COLUMNS, MetricModels, ModelUnavailableError, evaluate_case, evaluate_images
    from .report import add_eval_arguments, eval_main
    from .runner import RunSummary, run_bench

_HOMES = {
    "dataset": ("EDIT_TYPES", "AleBench", "BenchCase", "BenchFormatError", "load_bench", "load_gt_masks"),
    "metrics": ("METRIC_COLUMNS", "MetricModels", "ModelUnavailableError", "evaluate_case", "evaluate_images"),
    "report": ("add_eval_arguments", "eval_main"),
    "runner": ("RunSummary", "run_bench"),
}
_MODULE_OF = {name: module for module, names in _HOMES.items() for name in names}

__all__ = [  # noqa: RUF022  (grouped by home, as _HOMES)
    "EDIT_TYPES", "AleBench", "BenchCase", "BenchFormatError", "load_bench", "load_gt_masks",
    "METRIC_COLUMNS", "MetricModels", "ModelUnavailableError", "evaluate_case", "evaluate_images",
    "add_eval_arguments", "eval_main",
    "RunSummary", "run_bench",
]  # fmt: skip
assert sorted(__all__) == sorted(_MODULE_OF)


def __getattr__(name: str):
    if name in _MODULE_OF:
        return getattr(importlib.import_module(f".{_MODULE_OF[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
