"""The backend registry: which implementation runs each op on each backend, and what each backend accepts.

Declared as data, in two tables. A :class:`BackendInfo` says what a backend runs (device types, dtypes,
whether it is installed) and when ``"auto"`` picks it; an :class:`ImplInfo` says which function implements
one op on one backend (loaded lazily: the Triton kernels import Triton, the C++ kernel may compile on first
use); ``ale_kernels.backends`` fills both tables. :func:`resolve_backend` turns ``"auto"`` or a named
backend into a concrete one, with a clear error where the inputs do not fit; :func:`narrow` applies an op's
own ``auto`` limits; :func:`implementation` looks the function up. A public op resolves once, in its
wrapper, and its custom op only looks up.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from . import _checks

#: The ops, by the names of their custom ops (``ale_kernels::<name>``).
OPS = ("region_attention", "token_restricted_softmax", "shared_qk_attention")


@dataclass(frozen=True)
class BackendInfo:
    """What one backend runs.

    Args:
        name: the backend's name.
        runs_on: whether it runs tensors on this device.
        device_error: the message when it does not (``{device}`` is filled in).
        dtypes: the input dtypes it supports, ``None`` for all.
        installed: whether its software is present (checked only when the backend is asked for).
        missing_error: the message when it is not.
        auto: whether ``"auto"`` picks it for a device (after its dtypes and installation are checked).
    """

    name: str
    runs_on: Callable[[torch.device], bool] = lambda device: True
    device_error: str = ""
    dtypes: tuple[torch.dtype, ...] | None = None
    installed: Callable[[], bool] = lambda: True
    missing_error: str = ""
    auto: Callable[[torch.device], bool] = lambda device: False


@dataclass(frozen=True)
class ImplInfo:
    """One op's implementation on one backend.

    Args:
        op: one of :data:`OPS`. backend: a registered backend's name.
        load: returns the implementation (called inside the custom op, at run time, never traced).
        auto_max_head_dim: ``"auto"`` runs ``auto_fallback`` instead for wider heads (a measured crossover).
    """

    op: str
    backend: str
    load: Callable[[], Callable]
    auto_max_head_dim: int | None = None
    auto_fallback: str = "torch"


_BACKENDS: dict[str, BackendInfo] = {}
_IMPLS: dict[tuple[str, str], ImplInfo] = {}
#: The order in which ``"auto"`` tries the backends: the fused kernels first; torch runs anything.
AUTO_ORDER = ("triton", "cpp", "torch")


def register_backend(info: BackendInfo) -> None:
    """Declare a backend (replacing an earlier declaration of the same name)."""
    _BACKENDS[info.name] = info


def register_impl(info: ImplInfo) -> None:
    """Declare one op's implementation on one backend (replacing an earlier declaration)."""
    if info.op not in OPS:
        raise ValueError(f"op must be one of {OPS}, got {info.op!r}")
    if info.backend not in _BACKENDS:
        raise ValueError(f"backend {info.backend!r} is not registered; register_backend it first")
    _IMPLS[(info.op, info.backend)] = info


def _fits(info: BackendInfo, device: torch.device, dtype: torch.dtype) -> bool:
    return info.runs_on(device) and (info.dtypes is None or dtype in info.dtypes) and info.installed()


def resolve_backend(backend: str, device: torch.device, dtype: torch.dtype) -> str:
    """The concrete backend (``reference``, ``torch``, ``triton`` or ``cpp``) that ``backend`` means for inputs
    on ``device`` with ``dtype``.

    ``auto`` is ``triton`` for CUDA tensors when Triton is importable, ``cpp`` for float16/bfloat16/float32
    CPU tensors (measured faster than ``torch`` at SD shapes, see ``csrc/README.md``; ``ALE_KERNELS_CPP=0``
    opts out), else ``torch``. ``cpp`` runs the ``torch`` backend, with one warning, where the C++ kernel
    cannot be built, and for the two ops it has no kernel for.

    Raises:
        ValueError: an unknown backend, or a device the backend does not run.
        TypeError: a dtype the backend does not support. RuntimeError: the backend is not installed.
    """
    _checks.check_backend(backend)
    if backend == "auto":
        for name in AUTO_ORDER:
            info = _BACKENDS[name]
            if info.auto(device) and _fits(info, device, dtype):
                return name
        return AUTO_ORDER[-1]
    info = _BACKENDS[backend]
    if not info.installed():
        raise RuntimeError(info.missing_error)
    if not info.runs_on(device):
        raise ValueError(info.device_error.format(device=device))
    if info.dtypes is not None and dtype not in info.dtypes:
        *first, last = (str(d).removeprefix("torch.") for d in info.dtypes)
        names = f"{', '.join(first)} and {last}" if first else last
        raise TypeError(f"backend={backend!r} supports {names} inputs, got {str(dtype).removeprefix('torch.')}")
    return backend


def narrow(op: str, backend: str, resolved: str, head_dim: int) -> str:
    """``resolved`` (what :func:`resolve_backend` gave for ``backend``), or the implementation's
    ``auto_fallback`` where ``backend`` is ``"auto"`` and ``head_dim`` passes its ``auto_max_head_dim``.
    A backend asked for by name is kept."""
    info = _IMPLS.get((op, resolved))
    if backend == "auto" and info is not None and info.auto_max_head_dim is not None:
        if head_dim > info.auto_max_head_dim:
            return info.auto_fallback
    return resolved


def implementation(op: str, backend: str) -> Callable:
    """The function implementing ``op`` on the concrete ``backend`` (loaded on first use)."""
    try:
        info = _IMPLS[(op, backend)]
    except KeyError:
        raise ValueError(f"no implementation of {op!r} is registered for backend {backend!r}") from None
    return info.load()


def registered() -> dict[tuple[str, str], ImplInfo]:
    """A copy of the implementation table, keyed by ``(op, backend)``."""
    return dict(_IMPLS)
