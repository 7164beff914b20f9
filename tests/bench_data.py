"""Where the tests find ALE-Bench: ``$ALE_BENCH_DIR`` if set (for example the full benchmark of the published
release), else the sample that ships with the repository in ``tests/data/ale-bench``."""

from __future__ import annotations

import os
from pathlib import Path

#: The ALE-Bench sample inside the repository (10 images, their masks, 1,500 edit cases).
IN_REPO = Path(__file__).resolve().parent / "data" / "ale-bench"

BENCH = Path(os.environ["ALE_BENCH_DIR"]) if os.environ.get("ALE_BENCH_DIR") else IN_REPO
