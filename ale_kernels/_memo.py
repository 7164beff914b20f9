"""Results derived from a tensor's values, reused while the tensor is unchanged: for raw-tensor calls only.

A :class:`~ale_kernels.plan.RoutingPlan` is the way to check and derive routing once. This memo remains for
callers that pass raw routing maps (``q_region``, ``q_cover``, ``token_owner``) or a ``tokens`` tensor: the
op plans and checks them inside its custom op, which needs their values on the host, one device sync per
call that on a GPU stalls the queue behind every earlier kernel. Code written before plans existed passes
the very same map tensors to every layer and step, so the plan of a set of maps is built once and looked up
after that; dropping the memo would make every such call sync.

A result is keyed by the tensors' identity (their base tensor, held weakly), view geometry and version
counter, so an in-place change, a different view or a new tensor at a reused address never hits a stale
entry. Inference tensors carry no version counter: for them nothing is cached.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import TypeVar

import torch
from torch.utils.weak import WeakTensorKeyDictionary

T = TypeVar("T")

_TABLES: WeakTensorKeyDictionary = WeakTensorKeyDictionary()
#: Entries kept per base tensor; old versions and views beyond this are dropped.
_MAX_ENTRIES = 32


def _root(t: torch.Tensor) -> torch.Tensor:
    return t if t._base is None else t._base


def _view_key(t: torch.Tensor | None) -> tuple | None:
    if t is None:
        return None
    return (t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype, t.device, t._version)


def memoized(tag: object, compute: Callable[[], T], primary: torch.Tensor, *others: torch.Tensor | None) -> T:
    """``compute()``, or its earlier result for the same ``tag`` and the same, unchanged tensors.

    Args:
        tag: what is computed (and any plain parameters it depends on), hashable.
        compute: derives the result from the tensors' values; not cached if it raises.
        primary, others: the tensors the result depends on (``None`` allowed among ``others``).
    """
    if torch.compiler.is_compiling():
        return compute()
    try:
        key = (tag, _view_key(primary), *(_view_key(t) for t in others))
    except RuntimeError:  # "Inference tensors do not track version counter"
        return compute()
    table = _TABLES.get(_root(primary))
    if table is None:
        table = _TABLES[_root(primary)] = {}
    hit = table.get(key)
    if hit is not None:
        refs, value = hit
        if all(_same(ref, t) for ref, t in zip(refs, others, strict=True)):
            return value
    value = compute()
    if len(table) >= _MAX_ENTRIES:
        table.clear()
    table[key] = (tuple(None if t is None else weakref.ref(_root(t)) for t in others), value)
    return value


def _same(ref: weakref.ref | None, t: torch.Tensor | None) -> bool:
    if ref is None or t is None:
        return ref is None and t is None
    return ref() is _root(t)
