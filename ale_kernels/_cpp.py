"""The ``cpp`` backend: loading the C++ CPU kernel of ``region_attention`` from ``csrc/``.

The kernel is a Python extension module with two plain functions, ``region_attention`` and ``simd_level``;
the backend registry's ``cpp`` entry calls the first inside the one custom op ``ale_kernels::region_attention``
(there is no second op namespace). The module is found, in order, as ``ale_kernels._C`` (built by
``setup.py`` when torch and a compiler were present at install time), or compiled on first use with
``torch.utils.cpp_extension.load`` into torch's extension cache (``$TORCH_EXTENSIONS_DIR``, by default
``~/.cache/torch_extensions``; it needs a C++ compiler and ninja; about a minute once, then a cached load).
If neither works, the ``torch`` backend runs instead and one warning per process says why.

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
from types import ModuleType

import torch

#: Where the sources live (a source checkout or an editable install; wheels ship ``ale_kernels._C`` instead).
CSRC = Path(__file__).resolve().parent.parent / "csrc"
SOURCES = ("region_attention_cpu.cpp",)
HEADERS = ("region_attention_kernel.h",)
#: The first-use build's name in torch's extension cache. Not the name of the earlier builds, which registered
#: an op namespace instead of exporting functions: a cache holding one of those is never mistaken for this.
JIT_NAME = "ale_kernels_cpu"

#: Compiler flags, the same as setup.py's. No -march: the kernel carries plain, AVX2 and AVX-512 copies and
#: picks one at run time, so a build moves between machines. -ffp-contract=fast lets ``a * b + c`` become an
#: FMA (ISO C++ mode turns contraction off).
CXX_FLAGS = ["-O3", "-fopenmp", "-ffp-contract=fast", "-Wno-psabi"]
LD_FLAGS = ["-fopenmp"]

#: Whether ``backend="auto"`` picks this kernel for CPU tensors; ``ALE_KERNELS_CPP=0`` keeps ``auto`` on the
#: torch backend (no compiler run on first use). Read once, at import, so that tracing never reads the env.
AUTO = os.environ.get("ALE_KERNELS_CPP", "1").strip() != "0"

_lock = threading.Lock()
_module: ModuleType | None = None
_loaded: bool | None = None
_failure: str | None = None
_warned = False


def _usable(module: object) -> bool:
    """Whether ``module`` exports this version's functions (an ``ale_kernels._C`` left by an older build
    does not)."""
    return callable(getattr(module, "region_attention", None)) and callable(getattr(module, "simd_level", None))


def _source_digest() -> str:
    """Hash of the kernel sources and headers: torch's extension cache rebuilds when its flags change, and
    it hashes only the listed sources, not the headers they include."""
    digest = hashlib.sha256()
    for name in SOURCES + HEADERS:
        digest.update((CSRC / name).read_bytes())
    return digest.hexdigest()[:16]


def _import_prebuilt() -> ModuleType:
    """Import ``ale_kernels._C``, the kernel as built by setup.py (``ImportError`` if it was not)."""
    return importlib.import_module("ale_kernels._C")


def _compile() -> ModuleType:
    """Compile and load the kernel with torch's JIT extension loader (a file lock in its build directory
    makes concurrent first uses, e.g. pytest-xdist workers, build once and the others wait)."""
    from torch.utils.cpp_extension import load

    missing = [name for name in SOURCES + HEADERS if not (CSRC / name).is_file()]
    if missing:
        raise FileNotFoundError(f"sources not found in {CSRC}: {', '.join(missing)}")
    return load(
        name=JIT_NAME,
        sources=[str(CSRC / name) for name in SOURCES],
        extra_cflags=[*CXX_FLAGS, f"-DALE_KERNELS_SOURCE_DIGEST={_source_digest()}"],
        extra_ldflags=LD_FLAGS,
        extra_include_paths=[str(CSRC)],
        is_python_module=True,
        verbose=False,
    )


def _find_module() -> tuple[ModuleType | None, str | None]:
    """The kernel's module, or why there is none."""
    try:
        module = _import_prebuilt()
        if _usable(module):
            return module, None
    except ImportError:
        pass  # not built at install time: compiled on first use
    try:
        module = _compile()
    except Exception as exc:  # no compiler, no ninja, a compile error: the torch path still works
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        return None, f"{type(exc).__name__}: {lines[-1][:200]}"
    if not _usable(module):
        return None, "the library loaded but exports no region_attention function"
    return module, None


def load() -> bool:
    """Load the kernel's module; whether that worked.

    Tries the prebuilt ``ale_kernels._C``, then a compile on first use. The outcome is cached per process.
    """
    global _module, _loaded, _failure
    if _loaded is not None:
        return _loaded
    with _lock:
        if _loaded is None:
            _module, _failure = _find_module()
            _loaded = _module is not None
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
            stacklevel=4,
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
    *,
    key_tile: int = 256,
    simd: int = -1,
) -> torch.Tensor:
    """Region-routed attention by the C++ kernel (which must be loaded: see :func:`load`).

    Args:
        q: ``(B, H, L, D)``; k: ``(B, H, S, D)`` or ``(B, R, H, S, D)``; v: ``(B, R, H, S, D)``; any strides,
            float16, bfloat16 or float32 CPU tensors.
        q_region, q_cover: ``(B, L)`` integer maps; token_owner: ``(B, S)`` or ``None`` (broadcast views allowed).
        scale, mask_value: as for the reference backend.
        key_tile: keys per online-softmax tile (tests make it small to cross several tiles).
        simd: ``-1`` for the best copy this CPU runs, else at most 0 plain, 1 AVX2+FMA, 2 AVX-512.

    Returns:
        ``(B, H, L, D)`` in ``q``'s dtype, stored as ``(B, L, H, D)``.
    """
    if _module is None:
        raise RuntimeError(f"the C++ CPU kernel is not loaded ({_failure or 'call ale_kernels._cpp.load() first'})")
    return _module.region_attention(q, k, v, q_region, q_cover, token_owner, scale, mask_value, key_tile, simd)


def fallback(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """``fn`` (the torch backend's implementation), after a one-line warning once per process that the
    kernel is unavailable and why."""
    _notice_once()
    return fn


def simd_level() -> int:
    """Which kernel copy runs on this CPU: 0 plain, 1 AVX2+FMA, 2 AVX-512 (-1 if the kernel is unavailable)."""
    return int(_module.simd_level()) if load() else -1
