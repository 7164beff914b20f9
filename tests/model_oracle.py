"""Float64 oracles for whole-model comparisons (UNets): the tolerance policy at model level.

A fast backend's UNet output is held to a small multiple of the error the float32 reference-backend run makes
against the same model run in float64 with the reference backend. The tiny test models are cheap in float64;
their float64 twins are built once per model object. (A whole pipeline draws its noise in its own dtype, so it
has no float64 twin: see ``ale_kernels.testing.tolerance.rounding_perturbation``.)
"""

from __future__ import annotations

import copy
from typing import Any

import torch

# Strong references to the originals keep their ids from being reused while their twins are cached.
_TWINS: dict[int, tuple[torch.nn.Module, torch.nn.Module]] = {}


def float64_twin(module: torch.nn.Module) -> torch.nn.Module:
    """A float64 copy of ``module`` (same weights, upcast), built once per module object."""
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    entry = _TWINS.get(id(module))
    if entry is None or entry[0] is not module:
        entry = (module, copy.deepcopy(module).to(torch.float64))
        _TWINS[id(module)] = entry
    return entry[1]


def upcast_tree(value: Any) -> Any:
    """``value`` with every floating tensor in it (through dicts, lists and tuples) as float64; the rest as is."""
    if isinstance(value, torch.Tensor):
        return value.to(torch.float64) if value.is_floating_point() else value
    if isinstance(value, dict):
        return {key: upcast_tree(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(upcast_tree(item) for item in value)
    return value
