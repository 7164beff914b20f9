"""Object masks of one edit: loading, disk dilation, background and the overlap rule (ALE §3.2, §3.7-3.8).

ALE gets one mask per edited object at image resolution, dilates each with a disk of radius
``int(H * dilation)`` (0.04 gives 30 px at 768²), and derives from the dilated masks:

- the **background**: pixels covered by no dilated mask (what background blending keeps from the source);
- the **overlap**: pixels covered by two or more dilated masks;
- the **routing partition**: object ``k`` where exactly one dilated mask covers a pixel, else the background
  index ``N`` (overlaps go to the background, as RGB-CAM's region blending does).

Shapes: ``(H, W)`` is one mask at the image's ``(height, width)``, ``(N, H, W)`` one per object, in edit order.
Every mask here is a ``torch.bool`` tensor; nothing the caller passes is modified.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from ale_kernels import MAX_OBJECTS
from ale_kernels.routing import pixel_regions

#: What :func:`load_mask` accepts: a file path, a PIL image, a numpy array or a torch tensor.
MaskLike = str | os.PathLike | Image.Image | np.ndarray | torch.Tensor

#: PIL's ITU-R 601-2 luma weights in 16-bit fixed point: ``Image.convert("L")`` computes
#: ``(R * 19595 + G * 38470 + B * 7471 + 0x8000) >> 16``. Using the same integers makes a uint8 RGB array
#: threshold exactly like the same image read from a file.
_LUMA_FIXED = (19595, 38470, 7471)
_LUMA_FLOAT = (0.299, 0.587, 0.114)

_LAYOUTS = "(H, W), (1, H, W) or (H, W, C) with C in 1-4"


def _check_size(name: str, size: object) -> tuple[int, int]:
    ok = isinstance(size, (tuple, list)) and len(size) == 2
    ok = ok and all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s > 0 for s in size)
    if not ok:
        raise ValueError(f"{name} must be (height, width) as two positive ints, got {size!r}")
    return int(size[0]), int(size[1])


def _read_pil(image: Image.Image) -> np.ndarray:
    """A PIL image as a 2-D numpy array: bool (mode "1"), float 0-1 (modes "F", "I", "I;16") or uint8 grey."""
    if image.mode == "1":
        return np.array(image, dtype=bool)
    if image.mode == "F":
        return np.array(image, dtype=np.float32)
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        # 16-bit grey PNGs open in these modes; read them on their 0-65535 scale.
        return np.array(image, dtype=np.float64) / 65535.0
    # Everything else ("L", "LA", "P", "RGB", "RGBA", ...) is read as 8-bit grey, as ALE-Bench reads its
    # masks; alpha is ignored (the benchmark's RGBA masks are fully opaque).
    return np.array(image.convert("L"))


def _read_file(name: str, path: str | os.PathLike) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{name}: no such mask file: {str(path)!r}")
    try:
        with Image.open(path) as image:
            image.load()
            return _read_pil(image)
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"{name}: cannot read {str(path)!r} as an image ({err})") from err


def _to_tensor(name: str, mask: object) -> torch.Tensor:
    """Any accepted input as a tensor the caller does not share (numpy inputs are copied)."""
    if isinstance(mask, (str, os.PathLike)):
        mask = _read_file(name, mask)
    elif isinstance(mask, Image.Image):
        mask = _read_pil(mask)
    if isinstance(mask, np.ndarray):
        if mask.dtype == object:
            raise TypeError(f"{name} must be a numeric numpy array, got dtype object")
        # np.array copies: the tensor never aliases the caller's array, and read-only arrays are fine.
        return torch.from_numpy(np.array(mask))
    if isinstance(mask, torch.Tensor):
        return mask.detach()
    raise TypeError(
        f"{name} must be a file path, a PIL image, a numpy array or a torch tensor, got {type(mask).__name__}"
    )


def _to_2d(name: str, t: torch.Tensor) -> torch.Tensor:
    """``(H, W)``, ``(1, H, W)`` or ``(H, W, C)`` as ``(H, W)`` or ``(H, W, C)`` (channels last)."""
    if t.dim() == 2:
        return t
    if t.dim() == 3:
        if 1 <= t.shape[-1] <= 4:
            return t
        if t.shape[0] == 1:
            return t[0]
    raise ValueError(f"{name} must have shape {_LAYOUTS}, got {tuple(t.shape)}")


def _threshold(name: str, t: torch.Tensor) -> torch.Tensor:
    """Bool ``(H, W)``: inside where the value is >= 0.5 on a 0-1 scale (uint8: >= 128, i.e. ALE-Bench's > 127).

    Multi-channel masks are reduced to their luminance (PIL's ``convert("L")`` weights on the first three
    channels; a 2-channel grey+alpha mask uses its grey channel; alpha is ignored). A white or grey mask
    reads the same either way; a pure red one (luminance 0.3) is outside.
    """
    if t.dtype == torch.bool:
        t = t.to(torch.uint8) * 255  # bool RGB goes through the same luminance as uint8
    if t.dtype == torch.uint8:
        if t.dim() == 3:
            t = _luma_uint8(t)
        return t >= 128
    if t.dtype.is_floating_point:
        t = t.double()
        if torch.isnan(t).any():
            raise ValueError(f"{name} holds NaN values")
        if t.numel() and (t.min() < 0 or t.max() > 1):
            raise ValueError(
                f"{name}: float masks must hold values in [0, 1], got values in [{float(t.min()):g}, "
                f"{float(t.max()):g}] (divide a 0-255 mask by 255, or pass a bool mask)"
            )
        if t.dim() == 3:
            t = _luma_float(t)
        return t >= 0.5
    raise TypeError(
        f"{name} must be bool, uint8 (0-255) or float (0-1), got {t.dtype} "
        "(convert a 0/1 integer mask with .astype(bool) or .bool())"
    )


def _luma_uint8(t: torch.Tensor) -> torch.Tensor:
    if t.shape[-1] < 3:
        return t[..., 0]
    rgb = t[..., :3].to(torch.int32)
    weights = torch.tensor(_LUMA_FIXED, dtype=torch.int32, device=t.device)
    return ((rgb * weights).sum(-1) + 0x8000) >> 16


def _luma_float(t: torch.Tensor) -> torch.Tensor:
    if t.shape[-1] < 3:
        return t[..., 0]
    weights = torch.tensor(_LUMA_FLOAT, dtype=t.dtype, device=t.device)
    return (t[..., :3] * weights).sum(-1)


def resize_nearest(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bool masks ``(..., H, W)`` resized to ``(..., height, width)`` by nearest neighbour, no antialiasing.

    Uses ``F.interpolate(mode="nearest")`` (source pixel ``floor(i * H / height)``), as torchvision's
    ``Resize(NEAREST)`` in the published processors and :class:`~ale_kernels.diffusers.RegionSpec` do.
    """
    if not isinstance(masks, torch.Tensor) or masks.dim() < 2:
        raise ValueError(f"masks must be a tensor of shape (..., H, W), got {getattr(masks, 'shape', masks)!r}")
    height, width = _check_size("size", size)
    if tuple(masks.shape[-2:]) == (height, width):
        return masks.bool().clone()
    lead = masks.shape[:-2]
    flat = masks.reshape(-1, 1, *masks.shape[-2:]).to(torch.uint8)
    small = F.interpolate(flat, size=(height, width), mode="nearest")
    return small.reshape(*lead, height, width).bool()


def load_mask(mask: MaskLike, size: tuple[int, int], *, name: str = "mask") -> torch.Tensor:
    """One object mask as a bool ``(height, width)`` tensor at the image's ``size``.

    Args:
        mask: a file path (str or ``os.PathLike``; read as 8-bit grey like ALE-Bench), a PIL image, a numpy
            array or a torch tensor of shape ``(H, W)``, ``(1, H, W)`` or ``(H, W, C)`` (C = 1-4, reduced to its
            luminance; alpha is ignored). Values: bool, uint8 0-255, or float 0-1. Any ``(H, W)``: it is resized
            to ``size`` by nearest neighbour.
        size: ``(height, width)`` of the image. Note PIL's ``image.size`` is ``(width, height)``.
        name: how errors name this mask, e.g. ``"mask 1 (for edit 'couch')"``.

    Returns:
        ``(height, width)`` bool, True inside: value >= 0.5 on the 0-1 scale (uint8 >= 128), on the input's
        device. Never a view of the input.

    Raises:
        FileNotFoundError: ``mask`` is a path to no file.
        ValueError: unreadable file, wrong shape, float values outside [0, 1] or NaN, or an empty mask (at its
            own resolution or after resizing).
        TypeError: an unsupported input type or dtype.
    """
    height, width = _check_size("size", size)
    inside = _threshold(name, _to_2d(name, _to_tensor(name, mask)))
    if not inside.any():
        raise ValueError(
            f"{name} is empty: no pixel is >= 0.5 (uint8 >= 128; uint8 masks are 0-255, pass 0/1 masks as bool)"
        )
    out = resize_nearest(inside, (height, width))
    if not out.any():
        raise ValueError(
            f"{name} is empty after resizing from {tuple(inside.shape)} to {(height, width)} "
            f"(it covered only {int(inside.sum())} pixels)"
        )
    return out


def disk(radius: int) -> torch.Tensor:
    """The ``(2r + 1, 2r + 1)`` bool disk ``x² + y² <= r²``, ALE's dilation structuring element."""
    r = torch.arange(-radius, radius + 1)
    return r[:, None] ** 2 + r[None, :] ** 2 <= radius * radius


def dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Binary dilation of ``(H, W)`` or ``(N, H, W)`` bool masks by the disk ``x² + y² <= radius²``.

    Equals ``scipy.ndimage.binary_dilation(mask, structure=disk(radius))`` per mask (pixels outside the image
    count as empty). Exact without scipy: the disk is a stack of horizontal segments, row ``dy`` being
    ``|dx| <= isqrt(r² - dy²)``, so the result is the OR over ``dy`` of the mask dilated along rows by that
    half-width (a windowed prefix-sum count) and shifted by ``dy`` rows. That is O(r·H·W) cheap tensor ops,
    where a ``(2r + 1)²`` convolution would be O(r²·H·W). ``radius == 0`` returns a copy.
    """
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.dim() not in (2, 3):
        got = f"{mask.dtype} {tuple(mask.shape)}" if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"mask must be a bool tensor of shape (H, W) or (N, H, W), got {got}")
    if not isinstance(radius, (int, np.integer)) or isinstance(radius, bool) or radius < 0:
        raise ValueError(f"radius must be an int >= 0 (pixels), got {radius!r}")
    radius = int(radius)
    if radius == 0:
        return mask.clone()
    height, width = mask.shape[-2:]
    # prefix[..., j] = number of set pixels in the row before column j.
    prefix = F.pad(mask.to(torch.int32).cumsum(-1), (1, 0))
    cols = torch.arange(width, device=mask.device)
    out = torch.zeros_like(mask)
    rows_by_halfwidth: dict[int, list[int]] = {}
    for dy in range(-radius, radius + 1):
        rows_by_halfwidth.setdefault(math.isqrt(radius * radius - dy * dy), []).append(dy)
    for half, dys in rows_by_halfwidth.items():
        lo = (cols - half).clamp(0, width)
        hi = (cols + half + 1).clamp(0, width)
        along_rows = (prefix[..., hi] - prefix[..., lo]) > 0  # any set pixel within `half` columns
        for dy in dys:
            # Output row y takes source row y + dy (the disk is symmetric, so the sign convention is moot).
            if dy >= height or -dy >= height:
                continue
            if dy >= 0:
                out[..., : height - dy, :] |= along_rows[..., dy:, :]
            else:
                out[..., -dy:, :] |= along_rows[..., : height + dy, :]
    return out


@dataclass(frozen=True, eq=False)
class EditMasks:
    """The masks of one edit at image resolution ``(H, W)``, for ``N`` objects in edit order.

    Built by :func:`prepare_masks`; every tensor is on the CPU (move the partition where it is used).

    Attributes:
        raw: ``(N, H, W)`` bool object masks as given (resized, thresholded), undilated.
        dilated: ``(N, H, W)`` bool, each dilated by the disk of radius ``radius``. RGB-CAM uses these for
            both token masking and region routing.
        background: ``(H, W)`` bool, pixels covered by no dilated mask (ALE's ``1 - Σ dilated``, clipped).
            Background blending keeps the source here.
        overlap: ``(H, W)`` bool, pixels covered by two or more dilated masks.
        radius: the dilation radius in pixels, ``int(dilation * H)``.
        labels: one name per object (e.g. its source phrase), or None.
    """

    raw: torch.Tensor
    dilated: torch.Tensor
    background: torch.Tensor
    overlap: torch.Tensor
    radius: int
    labels: tuple[str, ...] | None = None

    @property
    def num_objects(self) -> int:
        return self.raw.shape[0]

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)`` of the masks."""
        return self.raw.shape[1], self.raw.shape[2]

    def regions(self) -> torch.Tensor:
        """The routing partition, ``(H, W)`` int64: object ``k`` where only dilated mask ``k`` covers the
        pixel, else ``N`` (the background region; overlap pixels go there too, ALE's overlap rule)."""
        return pixel_regions(self.dilated)

    def region_masks(self) -> torch.Tensor:
        """The routing partition as ``(N + 1, H, W)`` bool one-hot masks: objects in order, the background last.

        Every pixel is in exactly one region (RGB-CAM's blending masks at full resolution).
        """
        return F.one_hot(self.regions(), self.num_objects + 1).permute(2, 0, 1).bool()


def prepare_masks(
    masks: Sequence[MaskLike],
    image_size: tuple[int, int],
    dilation: float = 0.04,
    labels: Sequence[str] | None = None,
    expected: int | None = None,
) -> EditMasks:
    """Load, dilate and combine the object masks of one edit.

    Args:
        masks: one mask per object, in edit order (anything :func:`load_mask` takes), or an ``(N, H, W)``
            array/tensor stack.
        image_size: ``(height, width)`` of the image being edited (not PIL's ``(width, height)``).
        dilation: the disk radius as a fraction of the image height, in [0, 0.5): ``radius = int(dilation * H)``
            as the published code does (0.04 at 768 gives 30 px).
        labels: one name per object for error messages and :attr:`EditMasks.labels`.
        expected: the number of objects the edit has (e.g. its phrase pairs); a different mask count is an error.

    Raises:
        ValueError: no masks, a count different from ``expected`` or ``len(labels)`` or over the ops' limit, an
            empty mask, a bad ``dilation``, or dilated masks that leave no background pixel.
    """
    if isinstance(masks, (str, os.PathLike, Image.Image)):
        raise TypeError("masks must be a sequence of masks, one per object; wrap a single mask in a list")
    if isinstance(masks, (np.ndarray, torch.Tensor)) and masks.ndim != 3:
        raise ValueError(
            f"masks given as one array must be an (N, H, W) stack, got shape {tuple(masks.shape)}; "
            "pass a list to give masks of other layouts"
        )
    masks = list(masks)
    height, width = _check_size("image_size", image_size)
    if isinstance(dilation, bool) or not isinstance(dilation, (int, float)) or not 0 <= dilation < 0.5:
        raise ValueError(f"dilation must be a fraction of the image height in [0, 0.5), got {dilation!r}")
    count = len(masks)
    if count == 0:
        raise ValueError("masks is empty: an edit needs one mask per edited object")
    if expected is not None and count != expected:
        raise ValueError(f"got {count} masks but the edit has {expected} objects: give one mask per object")
    if labels is not None:
        labels = tuple(str(label) for label in labels)
        if len(labels) != count:
            raise ValueError(f"got {count} masks but {len(labels)} labels: give one label per mask")
    if count > MAX_OBJECTS:
        raise ValueError(f"at most {MAX_OBJECTS} objects are supported (one bit each in the ops), got {count}")

    def describe(k: int) -> str:
        return f"mask {k} (for edit {labels[k]!r})" if labels is not None else f"mask {k}"

    raw = torch.stack([load_mask(m, (height, width), name=describe(k)).cpu() for k, m in enumerate(masks)])
    radius = int(dilation * height)
    dilated = dilate(raw, radius)
    cover = dilated.sum(0)
    background = cover == 0
    if not background.any():
        raise ValueError(
            f"the masks cover the whole image: no background is left; with dilation={dilation} (radius {radius} px "
            f"at height {height}) every pixel is inside some dilated mask. Use a smaller dilation or smaller masks"
        )
    return EditMasks(raw=raw, dilated=dilated, background=background, overlap=cover >= 2, radius=radius, labels=labels)
