"""Fixtures shared by several test modules (opt-in: none is autouse)."""

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
