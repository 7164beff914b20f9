"""Where the tests find the shared ALE-Bench sample: ``$ALE_BENCH_DIR``, else ``../shared/ale-bench`` beside
the repository (where CI and the development machines have it)."""

from __future__ import annotations

import os
from pathlib import Path

BENCH = Path(os.environ.get("ALE_BENCH_DIR", Path(__file__).resolve().parents[2] / "shared" / "ale-bench"))
