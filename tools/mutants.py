"""Mutation check: plant each bug of ``tools/mutant_list.py`` in a scratch copy and see whether its tests fail.

Usage: ``python tools/mutants.py [--only SUBSTRING] [--timeout SECONDS] [--baseline]`` (``make mutants``).

The working tree is never modified: the repository's files (tracked and untracked, not ignored ones) are
copied to a temporary directory once, and each mutant is applied there, its test files run with
``pytest -x -q`` in a fresh process (the scratch copy first on the path), and the file restored. A mutant is
"killed" when pytest fails (or runs past the timeout), "survived" when it passes, and "stale" when its line is
not found exactly once (not counted: update the list). ``--baseline`` first runs every mutant's test selection
unmutated, so that a selection that fails on its own cannot count as a kill. The C++ kernel is compiled into
the run's own extension cache (once, and once more per C++ mutant), leaving the user's build untouched.
Exit status 0 when nothing survived.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mutant_list import MUTANTS, Mutant

ROOT = Path(__file__).resolve().parent.parent


def scratch_copy(dest: Path) -> Path:
    """The repository's files (as git sees them, ignored ones left out) copied under ``dest``."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, check=True, capture_output=True,
    ).stdout.decode().split("\0")  # fmt: skip
    copy = dest / "repo"
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            target = copy / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return copy


def run_tests(copy: Path, tests: tuple[str, ...], timeout: float, env: dict) -> tuple[str, float, str]:
    """``("passed" | "failed" | "timeout" | "error", seconds, first failing test)`` of ``pytest -x -q tests``
    in ``copy``."""
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly", "-x", "-q", *tests]
    start = time.monotonic()
    try:
        done = subprocess.run(command, cwd=copy, env=env, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", time.monotonic() - start, ""
    seconds = time.monotonic() - start
    failing = [line.split()[1] for line in done.stdout.decode().splitlines() if line.startswith(("FAILED ", "ERROR "))]
    # 1: tests failed; 2: interrupted (an import error under -x); 5: nothing selected (a broken selection).
    outcome = {0: "passed", 1: "failed", 2: "failed"}.get(done.returncode, "error")
    return outcome, seconds, failing[0].split("::")[0] if failing else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="", help="run only mutants whose name contains this text")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per mutant (a timeout is a kill)")
    parser.add_argument("--baseline", action="store_true", help="first check every selection passes unmutated")
    args = parser.parse_args(argv)
    mutants = [m for m in MUTANTS if args.only in m.name]
    with tempfile.TemporaryDirectory(prefix="ale-mutants-") as tmp:
        copy = scratch_copy(Path(tmp))
        env = dict(os.environ, PYTHONPATH=str(copy), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
        # The run's own extension cache: the kernel is built once from the scratch copy's sources, and the user's
        # cache (keyed by the sources' paths too) is neither used nor rebuilt.
        env["TORCH_EXTENSIONS_DIR"] = str(Path(tmp) / "torch_extensions")
        env.pop("TRITON_INTERPRET", None)
        if args.baseline:
            for tests in dict.fromkeys(m.tests for m in mutants):
                outcome, seconds, _ = run_tests(copy, tests, args.timeout, env)
                print(f"baseline {' '.join(tests)}: {outcome} ({seconds:.0f} s)", flush=True)
                if outcome != "passed":
                    print("a test selection fails without any mutant: fix it before counting kills")
                    return 2
        rows = [apply_and_run(copy, m, args.timeout, env) for m in mutants]
    counted = [r for r in rows if r[2] != "stale"]
    killed = [r for r in counted if r[2].startswith("killed")]
    width = max(len(r[0]) for r in rows) if rows else 10
    print()
    print(f"| {'mutant':<{width}} | file | result | killed by | seconds |")
    print(f"|{'-' * (width + 2)}|------|--------|-----------|---------|")
    for name, path, result, seconds, by in rows:
        print(f"| {name:<{width}} | {path} | {result} | {by} | {seconds:.0f} |")
    stale = len(rows) - len(counted)
    score = 100.0 * len(killed) / len(counted) if counted else 0.0
    note = f" ({stale} stale, not counted)" if stale else ""
    print(f"\nscore: {len(killed)}/{len(counted)} killed = {score:.1f}%{note}")
    return 0 if len(killed) == len(counted) else 1


def apply_and_run(copy: Path, mutant: Mutant, timeout: float, env: dict) -> tuple[str, str, str, float, str]:
    """One mutant planted in ``copy``, its tests run, the file restored: ``(name, path, result, seconds, the
    test file that failed first)``."""
    target = copy / mutant.path
    original = target.read_text() if target.is_file() else ""
    if original.count(mutant.old) != 1:
        print(f"stale    {mutant.name} ({mutant.path}: line found {original.count(mutant.old)} times)", flush=True)
        return mutant.name, mutant.path, "stale", 0.0, ""
    target.write_text(original.replace(mutant.old, mutant.new))
    if mutant.path.startswith("csrc/"):
        # Its own extension cache: the run's shared build of the unmutated kernel stays valid for the others.
        env = dict(env, TORCH_EXTENSIONS_DIR=env["TORCH_EXTENSIONS_DIR"] + "-" + target.stem + str(id(mutant)))
    try:
        outcome, seconds, by = run_tests(copy, mutant.tests, timeout, env)
    finally:
        target.write_text(original)
    result = {"failed": "killed", "timeout": "killed (timeout)", "passed": "survived"}.get(outcome, "error")
    print(f"{result:<8} {mutant.name} ({seconds:.0f} s) {by}", flush=True)
    return mutant.name, mutant.path, result, seconds, by


if __name__ == "__main__":
    sys.exit(main())
