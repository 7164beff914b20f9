"""ALE's published ALE-Bench numbers (ICCV 2025 version; ``docs/method.md`` section 6, tables 1-3, ALE rows).

Keys are the evaluation CSV's metric columns. ``TILS`` is undefined for one object (the paper prints "-").
"""

from __future__ import annotations

import math

#: The published CSV's metric columns, in its order (``evaluate_ale.py``'s default ``--metrics``).
PUBLISHED_COLUMNS = (
    "TELS",
    "TILS",
    "structure_distance",
    "editing_performance",
    "psnr_unedit_part",
    "lpips_unedit_part",
    "mse_unedit_part",
    "ssim_unedit_part",
)


def _row(*values: float) -> dict[str, float]:
    return dict(zip(PUBLISHED_COLUMNS, values, strict=True))


SOURCE = "ALE, ICCV 2025 version (project page tables 1-3; docs/method.md section 6)"

#: Table 1 ("Comparison of methods on ALE-Bench"), the ALE row: all 3,000 cases.
OVERALL = _row(16.03, 15.28, 0.0167, 22.20, 30.04, 0.0361, 0.0014, 0.9228)

#: Table 2 ("Performance of ALE with varying numbers of editing objects").
BY_COUNT: dict[int, dict[str, float]] = {
    1: _row(16.41, math.nan, 0.00876, 22.62, 30.01, 0.0405, 0.00167, 0.9049),
    2: _row(16.00, 15.42, 0.01648, 22.06, 30.06, 0.0360, 0.00146, 0.9235),
    3: _row(15.89, 15.36, 0.02460, 22.19, 30.01, 0.0323, 0.00154, 0.9426),
}

#: Table 3 ("Performance of ALE across different editing types").
BY_TYPE: dict[str, dict[str, float]] = {
    "color": _row(17.63, 16.21, 0.00890, 23.12, 32.97, 0.0288, 0.00079, 0.9309),
    "object": _row(15.86, 16.25, 0.01974, 21.82, 29.03, 0.0386, 0.00182, 0.9218),
    "material": _row(17.15, 15.96, 0.01179, 22.94, 30.63, 0.0339, 0.00120, 0.9248),
    "color+object": _row(15.30, 14.01, 0.02306, 22.15, 28.60, 0.0407, 0.00205, 0.9206),
    "object+material": _row(14.55, 14.51, 0.01956, 21.42, 28.88, 0.0393, 0.00191, 0.9201),
}

#: How many cases each paper row averages: 3,000 in all, 1,000 per object count, 600 per edit type.
CASES = {"overall": 3000, "by_count": 1000, "by_type": 600}

#: How the tables name each column, with the better direction.
LABELS = {
    "TELS": "TELS↓",
    "TILS": "TILS↓",
    "structure_distance": "Struct. Dist.↓",
    "editing_performance": "Edit. Perf.↑",
    "psnr_unedit_part": "BG PSNR↑",
    "lpips_unedit_part": "BG LPIPS↓",
    "mse_unedit_part": "BG MSE↓",
    "ssim_unedit_part": "BG SSIM↑",
    "TELS_joined": "TELS joined↓",
    "TELS_mean": "TELS mean↓",
    "structure_distance_published": "SD 0-255↓",
    "structure_distance_unit": "SD 0-1↓",
}

#: Decimals each metric is printed with (as the paper's tables).
DECIMALS = {
    "TELS": 2,
    "TILS": 2,
    "structure_distance": 5,
    "editing_performance": 2,
    "psnr_unedit_part": 2,
    "lpips_unedit_part": 4,
    "mse_unedit_part": 5,
    "ssim_unedit_part": 4,
    "TELS_joined": 2,
    "TELS_mean": 2,
    "structure_distance_published": 5,
    "structure_distance_unit": 5,
}
