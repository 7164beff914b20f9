"""A plain `pytest` that leaves modules out says so loudly (tests/conftest.py's terminal summary)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _pytest(*args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist", "-q", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return done.stdout + done.stderr


def test_interpreter_modules_left_out_of_a_plain_run_are_named_with_how_to_run_them():
    out = _pytest("tests/test_triton_interpreter_plan.py")
    assert "NOT THE WHOLE SUITE" in out
    assert "tests/test_triton_interpreter_plan.py: run it with make test" in out


def test_a_run_that_leaves_nothing_out_prints_no_banner():
    out = _pytest("tests/test_tolerance.py", "-k", "floor")
    assert "passed" in out and "NOT THE WHOLE SUITE" not in out
