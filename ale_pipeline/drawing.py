"""Pictures of an edit: masks tinted over an image, heatmaps of attention, titled panels in a row.

The one place where ``ale-edit --save-maps``, the demo and :mod:`ale_pipeline.automask` draw. Pure numpy and
PIL: no torch, so the commands can draw without loading a model.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

#: How opaque a mask's tint is.
ALPHA = 0.45
#: Distinct, saturated tints for the first objects; later ones are spread around the hue circle.
PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (255, 225, 25), (145, 30, 180), (70, 240, 240)]
#: Height of a panel's title strip, in pixels.
TITLE_HEIGHT = 18
#: How dark the image under a heatmap is (0 black, 1 the image's own grey).
HEAT_BACKGROUND = 0.35


def colour(k: int) -> tuple[int, int, int]:
    """Object ``k``'s RGB colour (``k >= 0``)."""
    if not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"k must be a non-negative int, got {k!r}")
    if k < len(PALETTE):
        return PALETTE[k]
    r, g, b = colorsys.hsv_to_rgb((k * 0.618034) % 1.0, 0.85, 0.95)  # golden-ratio hues stay apart
    return round(r * 255), round(g * 255), round(b * 255)


def _as_masks(masks) -> np.ndarray:
    """``(N, H, W)`` bool from an ``(N, H, W)`` or ``(H, W)`` numpy array or torch tensor."""
    if hasattr(masks, "detach"):  # a torch tensor, without importing torch here
        masks = masks.detach().cpu().numpy()
    masks = np.asarray(masks).astype(bool)
    if masks.ndim == 2:
        masks = masks[None]
    if masks.ndim != 3:
        raise ValueError(f"masks must be (N, H, W) or (H, W), got shape {masks.shape}")
    return masks


def _outline(mask: np.ndarray) -> np.ndarray:
    """``(H, W)`` bool: the mask's pixels with a pixel outside it among their 8 neighbours (or on the border)."""
    padded = np.pad(mask, 1, constant_values=False)
    height, width = mask.shape
    interior = np.ones_like(mask)
    for dy in range(3):
        for dx in range(3):
            interior &= padded[dy : dy + height, dx : dx + width]
    return mask & ~interior


def overlay_masks(
    image: Image.Image,
    masks,
    colours: Sequence[tuple[int, int, int]] | None = None,
    alpha: float = ALPHA,
    outline: bool = True,
) -> Image.Image:
    """``image`` with each of ``masks`` ``(N, H, W)`` (bool; numpy or torch; ``(H, W)`` for one) tinted over it.

    The image is resized (bicubic) to the masks' ``(H, W)`` where it differs; object ``k`` gets ``colours[k]``
    (default :func:`colour`), blended with opacity ``alpha``, and with ``outline`` its border drawn solid so that
    overlapping masks stay readable. Returns an RGB image of size ``(W, H)``.
    """
    masks = _as_masks(masks)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    if colours is not None and len(colours) < len(masks):
        raise ValueError(f"colours must give one colour per mask ({len(masks)}), got {len(colours)}")
    height, width = masks.shape[-2:]
    image = image.convert("RGB")
    if image.size != (width, height):
        image = image.resize((width, height), Image.BICUBIC)
    picture = np.asarray(image, dtype=np.float32).copy()
    for k, inside in enumerate(masks):
        tint = np.array(colours[k] if colours is not None else colour(k), dtype=np.float32)
        picture[inside] = (1 - alpha) * picture[inside] + alpha * tint
        if outline:
            picture[_outline(inside)] = tint
    return Image.fromarray(picture.round().clip(0, 255).astype(np.uint8))


def heatmap(values, background: Image.Image | None = None) -> Image.Image:
    """``values`` ``(H, W)`` in [0, 1] (NaN counts as 0) as an RGB "hot" map: black, red, yellow, white.

    With ``background``, the map is added to a darkened grey copy of it (resized to ``(W, H)`` where it
    differs), so the hot spots can be placed on the picture. Returns an RGB image of size ``(W, H)``.
    """
    if hasattr(values, "detach"):
        values = values.detach().float().cpu().numpy()
    values = np.asarray(values, dtype=np.float32)
    if values.ndim != 2:
        raise ValueError(f"values must be (H, W), got shape {values.shape}")
    v = np.clip(np.nan_to_num(values), 0.0, 1.0)
    rgb = np.stack([np.clip(3 * v, 0, 1), np.clip(3 * v - 1, 0, 1), np.clip(3 * v - 2, 0, 1)], axis=-1)
    if background is not None:
        height, width = v.shape
        if background.size != (width, height):
            background = background.resize((width, height), Image.BICUBIC)
        grey = np.asarray(background.convert("L"), dtype=np.float32)[..., None] / 255.0 * HEAT_BACKGROUND
        rgb = np.clip(grey + rgb, 0.0, 1.0)
    return Image.fromarray((rgb * 255).round().astype(np.uint8))


def panel(image: Image.Image, title: str) -> Image.Image:
    """``image`` under a white strip with ``title`` written in it: ``(W, H + TITLE_HEIGHT)``, RGB."""
    framed = Image.new("RGB", (image.width, image.height + TITLE_HEIGHT), "white")
    framed.paste(image.convert("RGB"), (0, TITLE_HEIGHT))
    ImageDraw.Draw(framed).text((4, 3), title, fill="black")
    return framed


def row(images: Sequence[Image.Image], gap: int = 4) -> Image.Image:
    """``images`` side by side, top-aligned, ``gap`` white pixels apart, on a white sheet."""
    if not images:
        raise ValueError("images must hold at least one picture")
    if gap < 0:
        raise ValueError(f"gap must be >= 0, got {gap}")
    sheet = Image.new("RGB", (sum(p.width for p in images) + gap * (len(images) - 1), max(p.height for p in images)),
                      "white")  # fmt: skip
    x = 0
    for picture in images:
        sheet.paste(picture.convert("RGB"), (x, 0))
        x += picture.width + gap
    return sheet
