"""The pixel-to-region rule: one place that turns object masks into the ops' routing maps.

ALE's RGB-CAM sends a pixel to the region of the one object that covers it; pixels covered by no object or by
several go to the background region ``N`` (the overlap rule). The token restriction reads a bit mask of every
object covering the pixel. Masks at image resolution, a routing plan at one attention resolution and the
benchmarks' synthetic inputs all derive their routing from these two functions.
"""

from __future__ import annotations

import torch


def pixel_regions(masks: torch.Tensor) -> torch.Tensor:
    """The routing partition of ``N`` object masks.

    Args:
        masks: ``(N, *pixels)`` bool (or 0/1) object masks, any pixel layout (``(N, H, W)`` or ``(N, L)``).

    Returns:
        ``(*pixels)`` int64: object ``j`` where mask ``j`` alone covers the pixel, else ``N`` (the background
        region, which also takes the overlaps).
    """
    objects = masks.shape[0]
    masks = masks.bool()
    alone = masks.sum(0) == 1
    owner = masks.to(torch.uint8).argmax(0).to(torch.int64)
    return torch.where(alone, owner, torch.full_like(owner, objects))


def cover_bits(masks: torch.Tensor) -> torch.Tensor:
    """Which objects cover each pixel, as an int32 bit mask.

    Args:
        masks: ``(N, *pixels)`` bool (or 0/1) object masks, ``N <= 31``.

    Returns:
        ``(*pixels)`` int32 with bit ``j`` set where mask ``j`` covers the pixel.
    """
    objects = masks.shape[0]
    bits = 1 << torch.arange(objects, device=masks.device, dtype=torch.int32)
    bits = bits.view(objects, *([1] * (masks.dim() - 1)))
    return (masks.bool().to(torch.int32) * bits).sum(0, dtype=torch.int32)
