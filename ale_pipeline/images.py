"""The image an edit works on: reading it in any accepted form, and the size the edit runs at."""

from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image

#: What an edit and the attention-mask pass accept as the image.
ImageLike = str | os.PathLike | Image.Image | np.ndarray | torch.Tensor


def edit_size(width: int, height: int, longest_side: int | None) -> tuple[int, int]:
    """``(height, width)`` for an image of ``width x height``: longest side scaled to ``longest_side`` (if
    given), aspect kept, both rounded to a multiple of 8 (the VAE's factor)."""
    if longest_side is not None:
        scale = longest_side / max(width, height)
        width, height = width * scale, height * scale
    return max(8, round(height / 8) * 8), max(8, round(width / 8) * 8)


def check_image(image: object) -> None:
    """Reject what :func:`load_image` cannot take without reading any pixel: the wrong type, a missing file, an
    array or tensor of the wrong layout."""
    if isinstance(image, (str, os.PathLike)):
        if not os.path.exists(image):
            raise FileNotFoundError(f"image not found: {os.fspath(image)!r}")
    elif isinstance(image, torch.Tensor):
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(
                f"an image tensor must have shape (3, H, W) with values in [0, 1], got {tuple(image.shape)}"
            )
    elif isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"an image array must be uint8 of shape (H, W, 3), got {image.dtype} {image.shape}")
    elif not isinstance(image, Image.Image):
        raise TypeError(f"image must be a path, PIL image, numpy array or tensor, got {type(image).__name__}")


def load_image(image: ImageLike) -> Image.Image:
    """An RGB PIL image from a path, a PIL image, a ``(H, W, 3)`` uint8 array or a ``(3, H, W)`` tensor in [0, 1]."""
    check_image(image)
    if isinstance(image, (str, os.PathLike)):
        return Image.open(image).convert("RGB")
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, torch.Tensor):
        image = (image.detach().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(image)
