"""Argument checks shared by every op and backend.

Checks are split in two on purpose. Shape, dtype and device checks only read metadata, so they run in the
public wrappers where ``torch.compile`` can trace them. Value checks (a region id out of range, an owner
index past the last bit) read tensor data; they run when a routing plan is built (``ale_kernels.plan``), or
inside the registered custom op for raw-tensor calls, which ``torch.compile`` treats as opaque, so they never
cause a graph break.
"""

from __future__ import annotations

import math

import torch

from ._memo import memoized

#: ``q_cover`` is an int32 bit mask with one bit per object, and bit 31 is the sign bit.
MAX_OBJECTS = 31

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
INTEGER_DTYPES = (torch.int32, torch.int64, torch.int16, torch.int8, torch.uint8)
BACKENDS = ("auto", "reference", "torch", "triton", "cpp")


def _fmt(shape: torch.Size | tuple[int, ...]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"


def check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def check_float_tensor(name: str, t: object, ndim: int, layout: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {layout}, got {type(t).__name__}")
    if t.dim() != ndim:
        raise ValueError(f"{name} must have shape {layout} ({ndim} dims), got {_fmt(t.shape)}")
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float16, bfloat16, float32 or float64, got {t.dtype}")
    return t


def check_same_dtype_device(**tensors: torch.Tensor) -> None:
    names = list(tensors)
    first = tensors[names[0]]
    for name in names[1:]:
        t = tensors[name]
        if t.dtype != first.dtype:
            raise TypeError(f"{name} has dtype {t.dtype} but {names[0]} has {first.dtype}; they must match")
        if t.device != first.device:
            raise ValueError(f"{name} is on {t.device} but {names[0]} is on {first.device}; they must match")


def check_integer_map(name: str, t: object, axis: str = "L") -> None:
    """``t`` must be an integer tensor (a routing map of shape ``(B, axis)`` or ``(axis,)``)."""
    if not isinstance(t, torch.Tensor):
        layouts = f"(B, {axis}) or ({axis},)"
        raise TypeError(f"{name} must be an integer torch.Tensor of shape {layouts}, got {type(t).__name__}")
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise TypeError(f"{name} must have an integer dtype, got {t.dtype}")


def normalize_routing(
    name: str, t: object, batch: int, size: int, device: torch.device, axis: str = "L"
) -> torch.Tensor | None:
    """Bring an integer routing map given as ``(B, N)`` or ``(N,)`` to ``(B, N)`` (a broadcast view).

    ``axis`` names ``N`` in messages: ``L`` for per-pixel maps, ``S`` for per-token maps.
    """
    if t is None:
        return None
    check_routing_map(name, t, batch, size, device, axis)
    return t.unsqueeze(0).expand(batch, size) if t.dim() == 1 else t


def check_routing_map(name: str, t: object, batch: int, size: int, device: torch.device, axis: str = "L") -> None:
    """``t`` is an integer routing map of shape ``(B, N)`` or ``(N,)`` on ``device`` (metadata only, no view made)."""
    if t is None:
        return
    if type(t) is torch.Tensor and t.dtype in INTEGER_DTYPES and t.device == device:
        shape = t.shape
        if shape == (size,) or shape == (batch, size):
            return
    check_integer_map(name, t, axis)
    if t.device != device:
        raise ValueError(f"{name} is on {t.device} but q is on {device}; they must match")
    shape = t.shape
    if not (shape == (size,) or shape == (batch, size)):
        raise ValueError(
            f"{name} must have shape (B, {axis}) = ({batch}, {size}) or ({axis},) = ({size},), got {_fmt(shape)}"
        )


def check_queries_and_keys(q: object, k: object, keys: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``q`` ``(B, H, L, D)`` and ``k`` ``(B, H, <keys>, D)`` float tensors that match (``keys``: the key axis's
    name in messages, ``S`` or ``Lk``), with at least one key."""
    q = check_float_tensor("q", q, 4, "(B, H, L, D)")
    k = check_float_tensor("k", k, 4, f"(B, H, {keys}, D)")
    check_same_dtype_device(q=q, k=k)
    batch, heads, _, head_dim = q.shape
    if k.shape[2] < 1 or (k.shape[0], k.shape[1], k.shape[3]) != (batch, heads, head_dim):
        raise ValueError(
            f"k must have shape (B, H, {keys}, D) = ({batch}, {heads}, {keys} >= 1, {head_dim}) to match q, "
            f"got {tuple(k.shape)}"
        )
    return q, k


def check_scale(scale: float | None, head_dim: int) -> float:
    if scale is None:
        return 1.0 / math.sqrt(head_dim)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise ValueError(f"scale must be a finite float or None, got {scale!r}")
    return float(scale)


def check_mask_value(mask_value: float) -> float:
    if isinstance(mask_value, bool) or not isinstance(mask_value, (int, float)):
        raise TypeError(f"mask_value must be a float (-inf or a finite value such as -100.0), got {mask_value!r}")
    mask_value = float(mask_value)
    if math.isnan(mask_value) or mask_value == math.inf:
        raise ValueError(f"mask_value must be -inf or finite, got {mask_value!r}")
    return mask_value


def check_routing_values(
    q_region: torch.Tensor, q_cover: torch.Tensor | None, token_owner: torch.Tensor | None, regions: int
) -> None:
    """Range checks of routing maps already on the host (the routing plan copies them there once, when it is
    built): ``q_region`` in ``[0, regions)``, ``token_owner`` ``-1`` or an object bit, ``q_cover`` a
    non-negative int32 bit mask. ``None`` maps are skipped."""
    if q_region.numel():
        lo, hi = int(q_region.min()), int(q_region.max())
        if lo < 0 or hi >= regions:
            raise ValueError(f"q_region values must lie in [0, R) = [0, {regions}), got values in [{lo}, {hi}]")
    if token_owner is not None and token_owner.numel():
        lo, hi = int(token_owner.min()), int(token_owner.max())
        if lo < -1 or hi >= MAX_OBJECTS:
            raise ValueError(
                f"token_owner values must be -1 (shared token) or an object index in [0, {MAX_OBJECTS}) "
                f"(q_cover is an int32 bit mask: at most {MAX_OBJECTS} objects), got values in [{lo}, {hi}]"
            )
    if q_cover is not None and q_cover.numel():
        lo, hi = int(q_cover.min()), int(q_cover.max())
        if lo < 0 or hi >= 2**MAX_OBJECTS:
            raise ValueError(
                f"q_cover must be a non-negative int32 bit mask (bits 0..{MAX_OBJECTS - 1}, one per object), "
                f"got values in [{lo}, {hi}]"
            )


def check_tokens(tokens: torch.Tensor, n_keys: int) -> None:
    """``tokens`` (requested token indices) lie in ``[0, S)``; one host sync per new tensor (memoized)."""

    def check() -> bool:
        lo, hi = torch.stack([tokens.min(), tokens.max()]).tolist()
        if lo < 0 or hi >= n_keys:
            raise ValueError(f"tokens must lie in [0, S) = [0, {n_keys}), got values in [{lo}, {hi}]")
        return True

    memoized(("tokens", n_keys), check, tokens)
