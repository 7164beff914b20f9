"""The ``cpp`` backend: loading the C++ CPU kernel of ``region_attention`` from ``csrc/``.

The kernel registers the op ``ale_kernels_cpp::region_attention`` with ``torch.library``. It is found, in
order, as the extension module ``ale_kernels._C`` (built by ``setup.py`` when torch and a compiler were
present at install time), or compiled on first use with ``torch.utils.cpp_extension.load`` into torch's
extension cache (``$TORCH_EXTENSIONS_DIR``, by default ``~/.cache/torch_extensions``; it needs a C++
compiler and ninja; about a minute once, then a cached load). If neither works, the ``torch`` backend runs
instead and one warning per process says why.

``backend="auto"`` runs this kernel for CPU tensors (it measured faster than the torch backend at SD shapes).
Only ``region_attention`` has a C++ kernel; ``backend="cpp"`` runs the ``torch`` backend for the other ops.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import threading
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

#: Where the sources live (a source checkout or an editable install; wheels ship ``ale_kernels._C`` instead).
CSRC = Path(__file__).resolve().parent.parent / "csrc"
SOURCES = ("region_attention_cpu.cpp",)
HEADERS = ("region_attention_kernel.h",)

#: Compiler flags, the same as setup.py's. No -march: the kernel carries plain, AVX2 and AVX-512 copies and
#: picks one at run time, so a build moves between machines. -ffp-contract=fast lets ``a * b + c`` become an
#: FMA (ISO C++ mode turns contraction off).
CXX_FLAGS = ["-O3", "-fopenmp", "-ffp-contract=fast", "-Wno-psabi"]
LD_FLAGS = ["-fopenmp"]

#: Whether ``backend="auto"`` picks this kernel for CPU tensors; ``ALE_KERNELS_CPP=0`` keeps ``auto`` on the
#: torch backend (no compiler run on first use). Read once, at import, so that tracing never reads the env.
AUTO = os.environ.get("ALE_KERNELS_CPP", "1").strip() != "0"

_lock = threading.Lock()
_loaded: bool | None = None
_failure: str | None = None
_warned = False


def _registered() -> bool:
    try:
        torch.ops.ale_kernels_cpp.region_attention  # noqa: B018 (attribute lookup is the check)
    except (AttributeError, RuntimeError):
        return False
    return True


def _source_digest() -> str:
    """Hash of the kernel sources and headers: torch's extension cache rebuilds when its flags change, and
    it hashes only the listed sources, not the headers they include."""
    digest = hashlib.sha256()
    for name in SOURCES + HEADERS:
        digest.update((CSRC / name).read_bytes())
    return digest.hexdigest()[:16]


def _import_prebuilt() -> None:
    """Import ``ale_kernels._C``, the kernel as built by setup.py (``ImportError`` if it was not)."""
    importlib.import_module("ale_kernels._C")


def _compile() -> None:
    """Compile and load the kernel with torch's JIT extension loader (a file lock in its build directory
    makes concurrent first uses, e.g. pytest-xdist workers, build once and the others wait)."""
    from torch.utils.cpp_extension import load

    missing = [name for name in SOURCES + HEADERS if not (CSRC / name).is_file()]
    if missing:
        raise FileNotFoundError(f"sources not found in {CSRC}: {', '.join(missing)}")
    load(
        name="ale_kernels_cpp",
        sources=[str(CSRC / name) for name in SOURCES],
        extra_cflags=[*CXX_FLAGS, f"-DALE_KERNELS_SOURCE_DIGEST={_source_digest()}"],
        extra_ldflags=LD_FLAGS,
        extra_include_paths=[str(CSRC)],
        is_python_module=False,
        verbose=False,
    )


def load() -> bool:
    """Make ``torch.ops.ale_kernels_cpp.region_attention`` available; whether that worked.

    Tries the prebuilt ``ale_kernels._C``, then a compile on first use. The outcome is cached per process.
    """
    global _loaded, _failure
    if _loaded is not None:
        return _loaded
    with _lock:
        if _loaded is not None:
            return _loaded
        reason = None
        if not _registered():
            try:
                _import_prebuilt()
            except ImportError:
                try:
                    _compile()
                except Exception as exc:  # no compiler, no ninja, a compile error: the torch path still works
                    lines = str(exc).strip().splitlines() or [type(exc).__name__]
                    reason = f"{type(exc).__name__}: {lines[-1][:200]}"
        if reason is None and not _registered():
            reason = "the library loaded but did not register ale_kernels_cpp::region_attention"
        _loaded, _failure = reason is None, reason
        return _loaded


def failure() -> str | None:
    """Why the kernel could not be loaded (``None`` if it was, or if no load was tried yet)."""
    return _failure


def _notice_once() -> None:
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(
            f"ale_kernels: the C++ CPU kernel is unavailable ({_failure}); backend 'cpp' runs the torch backend",
            RuntimeWarning,
            stacklevel=3,
        )


def region_attention_cpp(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_region: torch.Tensor,
    q_cover: torch.Tensor,
    token_owner: torch.Tensor | None,
    scale: float,
    mask_value: float,
) -> torch.Tensor:
    """Region-routed attention by the C++ kernel. Same arguments and result as the reference backend."""
    return torch.ops.ale_kernels_cpp.region_attention(q, k, v, q_region, q_cover, token_owner, scale, mask_value)


def region_attention_impl() -> Callable[..., torch.Tensor]:
    """The C++ kernel if it loads, else the torch backend (after a one-line warning, once per process)."""
    if load():
        return region_attention_cpp
    _notice_once()
    from .torch_impl import region_attention_torch

    return region_attention_torch


def simd_level() -> int:
    """Which kernel copy runs on this CPU: 0 plain, 1 AVX2+FMA, 2 AVX-512 (-1 if the kernel is unavailable)."""
    return int(torch.ops.ale_kernels_cpp.simd_level()) if load() else -1
