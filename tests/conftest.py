"""Fixtures shared by several test modules (opt-in, except the install-leak guard below)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module's tests: the machines running them share few cores, and the metric
    models' many small ops oversubscribe them otherwise."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def no_leaked_install():
    """Fail a test that leaves an ``install_regional_processors`` handle active: the latest active install sets
    the default backend of every processor created later in the process, so a leak changes what later tests on
    the same worker see, depending on which worker ran what."""
    from ale_kernels.diffusers import processor

    before = list(processor._install_backends)
    yield
    leaked = [token for token in processor._install_backends if not any(token is b for b in before)]
    processor._install_backends[:] = before
    assert not leaked, f"the test left {len(leaked)} install(s) active (backends {[t[0] for t in leaked]}): remove them"


# A plain `pytest` cannot run everything in one process: Triton decides at import time whether its kernels are
# interpreted (TRITON_INTERPRET=1) or compiled, and tests/cuda needs a GPU. Those modules then skip as a whole,
# which `-ra` reports in one easily missed line each; the banner below says loudly what was left out and how to
# run it, so a green plain run is never mistaken for the whole suite.
_LEFT_OUT_HOW = {
    "tests/test_triton_interpreter": "make test (runs them with TRITON_INTERPRET=1 in their own process)",
    "tests/cuda/": "benchmarks/gpu_check.sh on a machine with a CUDA GPU",
}


def _left_out_modules(terminalreporter) -> dict[str, str]:
    """Skipped whole modules (collection-time skips) of the kinds above -> how to run them."""
    left_out = {}
    for report in terminalreporter.stats.get("skipped", []):
        if not isinstance(report, pytest.CollectReport):
            continue
        path = report.nodeid.split("::")[0]
        for prefix, how in _LEFT_OUT_HOW.items():
            if path.startswith(prefix):
                left_out[path] = how
    return left_out


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    left_out = _left_out_modules(terminalreporter)
    if not left_out:
        return
    terminalreporter.write_sep("!", "NOT THE WHOLE SUITE: these test modules were left out", red=True, bold=True)
    for path, how in sorted(left_out.items()):
        terminalreporter.write_line(f"  {path}: run it with {how}", red=True, bold=True)
    terminalreporter.write_sep("!", f"{len(left_out)} module(s) skipped whole; this run covered the rest", red=True)
