"""The reference backend: the published ALE math, materialised, written to be obviously right.

Every other backend is tested against these functions. They build the full ``(B, H, L, S)`` score tensor,
add the token mask, take the softmax, and then, exactly like the published RGB-CAM code, multiply the
probabilities by every region's values and keep, per pixel, the product of that pixel's region. That costs
``R`` full ``P @ V`` products and ``R`` output-sized temporaries; it is the baseline the fast paths beat.
Shared-QK attention likewise builds the full ``(B, H, L, Lk)`` probabilities once and multiplies them by
each value stream.

All arithmetic is in float32 (float64 for float64 inputs); the result is cast to ``q``'s dtype.
"""

from __future__ import annotations

import torch


def allowed_tokens(q_cover: torch.Tensor, token_owner: torch.Tensor) -> torch.Tensor:
    """Which token each pixel may attend to.

    Args:
        q_cover: ``(B, L)`` integer bit mask, bit ``j`` set where object ``j`` covers the pixel.
        token_owner: ``(B, S)`` integer, ``-1`` for shared tokens, else the owning object's index.

    Returns:
        ``(B, L, S)`` bool: token ``t`` is allowed for pixel ``p`` iff it is shared or its owner's bit is set
        in the pixel's cover.
    """
    owner = token_owner.to(torch.int64)
    cover = q_cover.to(torch.int64)
    owned_bit = (cover[:, :, None] >> owner.clamp(min=0)[:, None, :]) & 1
    return (owner[:, None, :] < 0) | (owned_bit == 1)


def _accum_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def restricted_probabilities(
    scores: torch.Tensor,
    q_cover: torch.Tensor | None,
    token_owner: torch.Tensor | None,
    mask_value: float,
) -> torch.Tensor:
    """Softmax over tokens of ``scores`` ``(B, H, L, S)`` with disallowed tokens shifted by ``mask_value``.

    With ``mask_value = -inf`` a row with no allowed token gives all-zero probabilities (never NaN).
    """
    if token_owner is not None:
        allowed = allowed_tokens(q_cover, token_owner)[:, None]  # (B, 1, L, S)
        if mask_value == float("-inf"):
            scores = scores.masked_fill(~allowed, float("-inf"))
        else:
            scores = scores + torch.where(allowed, 0.0, mask_value).to(scores.dtype)
    probs = torch.softmax(scores, dim=-1)
    # softmax of an all -inf row is NaN; the contract says such a row attends to nothing.
    return torch.nan_to_num(probs, nan=0.0)


def region_attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_region: torch.Tensor,
    q_cover: torch.Tensor | None,
    token_owner: torch.Tensor | None,
    scale: float,
    mask_value: float,
) -> torch.Tensor:
    """Region-routed attention, materialised.

    Args:
        q: ``(B, H, L, D)`` queries.
        k: ``(B, H, S, D)`` shared keys, or ``(B, R, H, S, D)`` keys per region.
        v: ``(B, R, H, S, D)`` values per region.
        q_region: ``(B, L)`` region of each query pixel, in ``[0, R)``.
        q_cover: ``(B, L)`` object bit mask per pixel (used only with ``token_owner``).
        token_owner: ``(B, S)`` owner of each token or ``-1``; ``None`` means no restriction.
        scale: factor on ``q . k``.
        mask_value: added to disallowed scores (``-inf`` restricts exactly).

    Returns:
        ``(B, H, L, D)`` in ``q``'s dtype, stored as ``(B, L, H, D)``.
    """
    acc = _accum_dtype(q.dtype)
    regions = v.shape[1]
    out = torch.zeros(q.shape, dtype=acc, device=q.device)
    probs_shared = None
    if k.dim() == 4:
        scores = scale * (q.to(acc) @ k.to(acc).transpose(-1, -2))
        probs_shared = restricted_probabilities(scores, q_cover, token_owner, mask_value)
    for r in range(regions):
        if probs_shared is None:
            scores = scale * (q.to(acc) @ k[:, r].to(acc).transpose(-1, -2))
            probs = restricted_probabilities(scores, q_cover, token_owner, mask_value)
        else:
            probs = probs_shared
        in_region = (q_region == r)[:, None, :, None]  # (B, 1, L, 1)
        out = out + in_region * (probs @ v[:, r].to(acc))
    return blhd_layout(out.to(q.dtype))


def blhd_layout(out: torch.Tensor) -> torch.Tensor:
    """``out`` ``(B, H, L, D)`` stored as ``(B, L, H, D)``: the layout every backend returns, so that a
    diffusers processor's ``out.transpose(1, 2).reshape(B, L, H * D)`` is a free view."""
    return out.transpose(1, 2).contiguous().transpose(1, 2)


def shared_qk_attention_reference(
    q: torch.Tensor, k: torch.Tensor, vs: list[torch.Tensor], scale: float
) -> list[torch.Tensor]:
    """One softmax, several value streams, materialised.

    Args:
        q: ``(B, H, L, D)`` queries; k: ``(B, H, Lk, D)`` keys.
        vs: value streams, each ``(B, H, Lk, D)``.
        scale: factor on ``q . k``.

    Returns:
        one ``(B, H, L, D)`` per stream, ``softmax(scale * q k^T) @ v``, in ``q``'s dtype, stored as
        ``(B, L, H, D)``.
    """
    acc = _accum_dtype(q.dtype)
    probs = torch.softmax(scale * (q.to(acc) @ k.to(acc).transpose(-1, -2)), dim=-1)  # (B, H, L, Lk)
    return [blhd_layout((probs @ v.to(acc)).to(q.dtype)) for v in vs]


def token_restricted_softmax_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    q_cover: torch.Tensor | None,
    token_owner: torch.Tensor | None,
    scale: float,
    mask_value: float,
    tokens: torch.Tensor | None,
    reduce_heads: bool,
) -> torch.Tensor:
    """Probabilities of the restricted softmax for the requested tokens, materialised.

    Args:
        q: ``(B, H, L, D)``; k: ``(B, H, S, D)``.
        tokens: ``(T,)`` token indices to return, or ``None`` for all ``S``.
        reduce_heads: average over heads.

    Returns:
        float32 ``(B, L, T)`` when ``reduce_heads`` else ``(B, H, L, T)`` (float64 for float64 inputs).
    """
    acc = _accum_dtype(q.dtype)
    scores = scale * (q.to(acc) @ k.to(acc).transpose(-1, -2))
    probs = restricted_probabilities(scores, q_cover, token_owner, mask_value)
    if tokens is not None:
        probs = probs[..., tokens.to(torch.int64)]
    if reduce_heads:
        probs = probs.mean(dim=1)
    return probs
