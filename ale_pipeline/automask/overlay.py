"""Pictures of masks: each object's mask tinted over the image, with its outline drawn in the same colour."""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

#: How opaque a mask's tint is.
ALPHA = 0.45
#: Distinct, saturated tints for the first objects; later ones are spread around the hue circle.
PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (255, 225, 25), (145, 30, 180), (70, 240, 240)]


def colour(k: int) -> tuple[int, int, int]:
    """Object ``k``'s RGB colour."""
    if k < len(PALETTE):
        return PALETTE[k]
    r, g, b = colorsys.hsv_to_rgb((k * 0.618034) % 1.0, 0.85, 0.95)  # golden-ratio hues stay apart
    return round(r * 255), round(g * 255), round(b * 255)


def _outline(mask: torch.Tensor) -> torch.Tensor:
    """``(H, W)`` bool: the mask's pixels with a 4-neighbour outside it (or on the image border)."""
    padded = F.pad(mask[None, None].float(), (1, 1, 1, 1))
    eroded = -F.max_pool2d(-padded, kernel_size=3, stride=1)[0, 0] > 0.5
    return mask & ~eroded


def overlay_masks(
    image: Image.Image,
    masks: torch.Tensor | np.ndarray,
    colours: Sequence[tuple[int, int, int]] | None = None,
    alpha: float = ALPHA,
    outline: bool = True,
) -> Image.Image:
    """``image`` with each of ``masks`` ``(N, H, W)`` (bool) tinted over it, in the masks' size.

    The image is resized (bicubic) to the masks' ``(H, W)`` where it differs; object ``k`` gets ``colours[k]``
    (default :func:`colour`), blended with opacity ``alpha``, and with ``outline`` its border drawn solid so that
    overlapping masks stay readable. Returns an RGB image of size ``(W, H)``.
    """
    masks = torch.as_tensor(np.asarray(masks) if isinstance(masks, np.ndarray) else masks).bool().cpu()
    if masks.dim() == 2:
        masks = masks[None]
    if masks.dim() != 3:
        raise ValueError(f"masks must be (N, H, W) or (H, W), got {tuple(masks.shape)}")
    height, width = masks.shape[-2:]
    image = image.convert("RGB")
    if image.size != (width, height):
        image = image.resize((width, height), Image.BICUBIC)
    picture = np.asarray(image, dtype=np.float32).copy()
    for k, mask in enumerate(masks):
        tint = np.array(colours[k] if colours is not None else colour(k), dtype=np.float32)
        inside = mask.numpy()
        picture[inside] = (1 - alpha) * picture[inside] + alpha * tint
        if outline:
            picture[_outline(mask).numpy()] = tint
    return Image.fromarray(picture.round().clip(0, 255).astype(np.uint8))
