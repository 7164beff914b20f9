"""Mask loading, disk dilation and the background / overlap / routing partition of one edit."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.ndimage import binary_dilation

from ale_kernels.diffusers import RegionSpec
from ale_pipeline.masks import EditMasks, dilate, disk, load_mask, prepare_masks, resize_nearest
from tests.bench_data import BENCH

IMG01 = BENCH / "masks" / "artificial_img01"  # couch, floor (an RGBA PNG), tree; couch and floor overlap
COUCH = IMG01 / "couch_mask.png"

SRC_SIZE = (37, 53)  # (H, W) of the synthetic mask
OUT_SIZE = (24, 40)  # a non-square target, downsampling unevenly in each direction


def scipy_dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    if radius == 0:
        return mask.copy()
    return binary_dilation(mask, structure=disk(radius).numpy())


@pytest.fixture
def grey() -> np.ndarray:
    """A uint8 (37, 53) mask with grey levels on both sides of the 0.5 threshold."""
    rng = np.random.default_rng(0)
    mask = np.zeros(SRC_SIZE, dtype=np.uint8)
    mask[5:30, 10:40] = 255
    mask[20:25, 0:8] = 128  # inside: 128 / 255 >= 0.5
    mask[0:3, 45:53] = 127  # outside: ALE-Bench reads > 127 as inside
    mask[rng.random(SRC_SIZE) < 0.05] = 200
    return mask


@pytest.fixture
def expected(grey) -> torch.Tensor:
    """``grey`` thresholded and resized by nearest neighbour, computed independently of the module."""
    inside = grey >= 128
    rows = np.arange(OUT_SIZE[0]) * SRC_SIZE[0] // OUT_SIZE[0]
    cols = np.arange(OUT_SIZE[1]) * SRC_SIZE[1] // OUT_SIZE[1]
    return torch.from_numpy(inside[rows][:, cols])


def input_kinds(grey: np.ndarray, tmp_path: Path) -> dict[str, object]:
    png = tmp_path / "object_mask.png"
    Image.fromarray(grey).save(png)
    binary = grey >= 128
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    rgba = np.concatenate([rgb, np.full_like(grey, 255)[..., None]], axis=-1)
    return {
        "path str": str(png),
        "path Path": png,
        "PIL L": Image.fromarray(grey),
        "PIL 1": Image.fromarray(binary),
        "PIL RGB": Image.fromarray(rgb),
        "PIL RGBA": Image.fromarray(rgba),
        "PIL F": Image.fromarray(grey.astype(np.float32) / 255),
        "numpy uint8": grey,
        "numpy bool": binary,
        "numpy float32": grey.astype(np.float32) / 255,
        "numpy float64": grey / 255.0,
        "numpy (H, W, 1)": grey[..., None],
        "numpy (H, W, 3)": rgb,
        "numpy (H, W, 4)": rgba,
        "numpy read-only": np.frombuffer(grey.tobytes(), dtype=np.uint8).reshape(SRC_SIZE),
        "torch uint8": torch.from_numpy(grey.copy()),
        "torch bool": torch.from_numpy(binary.copy()),
        "torch float": torch.from_numpy(grey / 255.0).float(),
        "torch (1, H, W)": torch.from_numpy(grey.copy())[None],
        "torch (H, W, 3)": torch.from_numpy(rgb.copy()),
        "torch (H, W, 3) float": torch.from_numpy(rgb / 255.0),
    }


def test_every_input_kind_gives_the_same_mask(grey, expected, tmp_path):
    for kind, mask in input_kinds(grey, tmp_path).items():
        out = load_mask(mask, OUT_SIZE)
        assert out.dtype == torch.bool and out.shape == OUT_SIZE, kind
        assert torch.equal(out, expected), kind


def test_same_size_needs_no_resize(grey):
    out = load_mask(grey, SRC_SIZE)
    assert torch.equal(out, torch.from_numpy(grey >= 128))


def test_upsampling_to_a_non_square_size():
    mask = np.array([[0, 255], [255, 0]], dtype=np.uint8)
    out = load_mask(mask, (4, 6))
    want = torch.tensor([[0, 0, 0, 1, 1, 1]] * 2 + [[1, 1, 1, 0, 0, 0]] * 2, dtype=torch.bool)
    assert torch.equal(out, want)


def test_rgb_masks_use_pil_luminance():
    # Random colours near the threshold: the array path must threshold exactly like PIL's convert("L").
    rgb = np.random.default_rng(1).integers(0, 256, size=(384, 512, 3), dtype=np.uint8)
    via_pil = load_mask(Image.fromarray(rgb), (384, 512))
    assert torch.equal(load_mask(rgb, (384, 512)), via_pil)
    assert torch.equal(load_mask(torch.from_numpy(rgb), (384, 512)), via_pil)
    grey = np.array(Image.fromarray(rgb).convert("L"))
    assert torch.equal(via_pil, torch.from_numpy(grey >= 128))


@pytest.mark.parametrize(
    "rgb, inside",
    [
        ((255, 0, 0), False),  # pure red: luminance 0.299
        ((0, 255, 0), True),  # pure green: 0.587
        ((255, 0, 255), False),  # magenta: 0.413
        ((255, 90, 0), True),  # 0.299 + 0.587 * 90 / 255 = 0.506
        ((255, 80, 0), False),  # 0.483
        ((0, 200, 255), True),  # 0.574
    ],
)
def test_rgb_colours_threshold_on_luminance(rgb, inside):
    colour = np.broadcast_to(np.array(rgb, dtype=np.uint8), (4, 5, 3))
    for mask in (colour, colour / 255.0, torch.from_numpy(colour / 255.0).float(), Image.fromarray(colour.copy())):
        if inside:
            assert bool(load_mask(mask, (4, 5)).all())
        else:
            with pytest.raises(ValueError, match="is empty"):
                load_mask(mask, (4, 5))


def test_inputs_are_not_modified_and_outputs_do_not_alias_them(grey, tmp_path):
    for kind, mask in input_kinds(grey, tmp_path).items():
        before = mask.copy() if isinstance(mask, np.ndarray) else mask.clone() if torch.is_tensor(mask) else None
        out = load_mask(mask, SRC_SIZE)
        out.fill_(True)
        if isinstance(mask, np.ndarray):
            assert np.array_equal(mask, before), kind
        elif torch.is_tensor(mask):
            assert torch.equal(mask, before), kind
    masks = [torch.from_numpy(grey >= 128)]
    before = masks[0].clone()
    edit = prepare_masks(masks, SRC_SIZE, dilation=0.1)
    edit.raw.fill_(True)
    edit.dilated.fill_(False)
    assert torch.equal(masks[0], before)


def test_resize_nearest_matches_the_processors_resize():
    masks = torch.rand(3, 50, 70, generator=torch.Generator().manual_seed(2)) > 0.5
    out = resize_nearest(masks, (12, 17))
    ref = torch.nn.functional.interpolate(masks[:, None].float(), size=(12, 17), mode="nearest")[:, 0] > 0.5
    assert out.dtype == torch.bool and torch.equal(out, ref)


# --- dilation -------------------------------------------------------------------------------------------------


def test_disk_is_x2_plus_y2_at_most_r2():
    assert torch.equal(disk(1), torch.tensor([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=torch.bool))
    d = disk(30)
    assert d.shape == (61, 61) and d[30, 0] and d[0, 30] and not d[0, 0]
    assert bool(d[30 - 18, 30 - 24]) and not bool(d[30 - 18, 30 - 25])  # 18² + 24² = 30²


@pytest.mark.parametrize("radius", [0, 1, 3, 30])
def test_dilate_equals_scipy_on_random_masks(radius):
    gen = torch.Generator().manual_seed(radius)
    masks = torch.rand(3, 71, 96, generator=gen) > 0.997  # sparse points: each dilates to a whole disk
    masks[1, 0, :] = True  # touching the border
    masks[2] = torch.rand(71, 96, generator=gen) > 0.7  # dense
    out = dilate(masks, radius)
    ref = np.stack([scipy_dilate(m, radius) for m in masks.numpy()])
    assert out.dtype == torch.bool and out.shape == masks.shape
    np.testing.assert_array_equal(out.numpy(), ref)
    assert torch.equal(dilate(masks[0], radius), out[0])  # (H, W) input
    assert bool((out | ~masks).all())  # monotone: dilated ⊇ raw


@pytest.mark.parametrize("radius", [1, 3, 7, 30])
def test_dilate_equals_scipy_on_a_real_mask(radius):
    mask = load_mask(COUCH, (192, 192))
    out = dilate(mask, radius)
    np.testing.assert_array_equal(out.numpy(), scipy_dilate(mask.numpy(), radius))
    assert bool((out | ~mask).all())
    assert int(out.sum()) > int(mask.sum())


def test_dilate_radius_larger_than_the_image():
    mask = torch.zeros(9, 12, dtype=torch.bool)
    mask[4, 3] = True
    np.testing.assert_array_equal(dilate(mask, 40).numpy(), scipy_dilate(mask.numpy(), 40))
    assert bool(dilate(mask, 40).all())


def test_dilate_zero_is_a_copy():
    mask = torch.rand(8, 8, generator=torch.Generator().manual_seed(3)) > 0.5
    out = dilate(mask, 0)
    assert torch.equal(out, mask) and out.data_ptr() != mask.data_ptr()


@pytest.mark.parametrize(
    "mask, radius, pattern",
    [
        (torch.ones(4, 4), 1, r"mask must be a bool tensor of shape \(H, W\) or \(N, H, W\), got torch.float32"),
        (torch.ones(1, 1, 4, 4, dtype=torch.bool), 1, r"got torch.bool \(1, 1, 4, 4\)"),
        (np.ones((4, 4), dtype=bool), 1, r"got ndarray"),
        (torch.ones(4, 4, dtype=torch.bool), -1, r"radius must be an int >= 0 \(pixels\), got -1"),
        (torch.ones(4, 4, dtype=torch.bool), 1.5, r"radius must be an int >= 0"),
    ],
)
def test_dilate_errors(mask, radius, pattern):
    with pytest.raises(ValueError, match=pattern):
        dilate(mask, radius)


# --- one edit's masks -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def img01() -> tuple[list[Path], EditMasks]:
    paths = sorted(IMG01.glob("*_mask.png"))
    labels = [p.name.removesuffix("_mask.png") for p in paths]
    return paths, prepare_masks(paths, (384, 384), labels=labels, expected=3)


def test_edit_masks_of_a_real_image(img01):
    paths, edit = img01
    assert edit.labels == ("couch", "floor", "tree")
    assert edit.num_objects == 3 and edit.size == (384, 384)
    assert edit.radius == int(384 * 0.04) == 15
    for k, path in enumerate(paths):
        assert torch.equal(edit.raw[k], load_mask(path, (384, 384)))
    np.testing.assert_array_equal(edit.dilated.numpy(), np.stack([scipy_dilate(m, 15) for m in edit.raw.numpy()]))
    assert bool((edit.dilated | ~edit.raw).all())
    # The sample has real overlaps and real background, so every rule below is exercised.
    assert edit.overlap.any() and edit.background.any()


def test_background_overlap_and_partition(img01):
    _, edit = img01
    n = edit.num_objects
    cover = edit.dilated.sum(0)
    assert torch.equal(edit.background, cover == 0)
    assert torch.equal(edit.background, ~edit.dilated.any(0))
    assert torch.equal(edit.overlap, cover >= 2)
    regions = edit.regions()
    assert regions.shape == edit.size and regions.dtype == torch.int64
    one_hot = edit.region_masks()
    assert one_hot.shape == (n + 1, *edit.size) and one_hot.dtype == torch.bool
    assert bool((one_hot.sum(0) == 1).all())  # every pixel in exactly one region
    assert bool((regions[edit.overlap] == n).all()) and bool((regions[edit.background] == n).all())
    for k in range(n):
        assert torch.equal(one_hot[k], edit.dilated[k] & (cover == 1))
        assert torch.equal(regions == k, one_hot[k])
    assert torch.equal(one_hot[n], edit.background | edit.overlap)


def test_partition_matches_region_spec_routing(img01):
    _, edit = img01
    n = edit.num_objects
    spec = RegionSpec(
        masks=edit.dilated,
        token_owner=torch.tensor([-1, 0, 1, 2, -1]),
        region_embeds=torch.zeros(n + 1, 5, 8),
        batch_index=[0],
    )
    routing = spec.routing(384 * 384, torch.device("cpu"))
    assert torch.equal(routing.q_region, edit.regions().flatten())


def test_non_square_image_uses_the_height_for_the_radius():
    a = np.zeros((60, 90), dtype=bool)
    a[10:20, 10:30] = True
    b = np.zeros((60, 90), dtype=bool)
    b[15:40, 25:60] = True
    edit = prepare_masks([a, torch.from_numpy(b)], (48, 100), dilation=0.1)
    assert edit.radius == 4 and edit.raw.shape == (2, 48, 100) and edit.background.shape == (48, 100)
    stack = prepare_masks(np.stack([a, b]), (48, 100), dilation=0.1)
    assert torch.equal(stack.dilated, edit.dilated)
    assert prepare_masks([a], (48, 100), dilation=0).radius == 0


# --- errors ---------------------------------------------------------------------------------------------------


def half_masks() -> list[np.ndarray]:
    left = np.zeros((40, 40), dtype=bool)
    left[:, :20] = True
    return [left, ~left]


@pytest.mark.parametrize(
    "kwargs, error, pattern",
    [
        (dict(masks=[]), ValueError, "masks is empty: an edit needs one mask per edited object"),
        (
            dict(masks=half_masks(), expected=3),
            ValueError,
            "got 2 masks but the edit has 3 objects: give one mask per object",
        ),
        (dict(masks=half_masks(), labels=["a"]), ValueError, "got 2 masks but 1 labels"),
        (
            dict(masks=[half_masks()[0], np.zeros((40, 40), np.uint8)], labels=["tree", "couch"]),
            ValueError,
            "mask 1 (for edit 'couch') is empty",
        ),
        (dict(masks=[np.zeros((40, 40), bool)]), ValueError, "mask 0 is empty"),
        (dict(masks=half_masks(), dilation=0.0), ValueError, "the masks cover the whole image: no background is left"),
        (
            dict(masks=[np.pad(np.ones((20, 20), bool), 10)], dilation=0.4),
            ValueError,
            "the masks cover the whole image: no background is left; with dilation=0.4 (radius 16 px",
        ),
        (dict(masks=half_masks()[:1], dilation=0.5), ValueError, "dilation must be a fraction of the image height"),
        (dict(masks=half_masks()[:1], dilation=-0.01), ValueError, "in [0, 0.5), got -0.01"),
        (dict(masks=half_masks()[:1], dilation=float("nan")), ValueError, "in [0, 0.5), got nan"),
        (dict(masks=half_masks()[:1], dilation=True), ValueError, "in [0, 0.5), got True"),
        (dict(masks=half_masks()[:1], image_size=(40,)), ValueError, "image_size must be (height, width)"),
        (dict(masks=half_masks()[:1], image_size=(0, 40)), ValueError, "image_size must be (height, width)"),
        (dict(masks=np.ones((40, 40), bool)), ValueError, "masks given as one array must be an (N, H, W) stack"),
        (dict(masks=[np.ones(40, bool)]), ValueError, "mask 0 must have shape (H, W), (1, H, W) or (H, W, C)"),
        (dict(masks=[np.ones((1, 2, 40, 40), bool)]), ValueError, "got (1, 2, 40, 40)"),
        (dict(masks=[np.ones((3, 40, 40), bool)]), ValueError, "got (3, 40, 40)"),
        (dict(masks=[np.full((40, 40), 255.0)]), ValueError, "float masks must hold values in [0, 1], got values"),
        (dict(masks=[np.full((40, 40), np.nan)]), ValueError, "mask 0 holds NaN values"),
        (dict(masks=[np.ones((40, 40), np.int64)]), TypeError, "must be bool, uint8 (0-255) or float (0-1)"),
        (dict(masks=[[1, 0]]), TypeError, "mask 0 must be a file path, a PIL image, a numpy array or a torch"),
        (dict(masks="couch_mask.png"), TypeError, "wrap a single mask in a list"),
        (dict(masks=[torch.ones(64, 40, dtype=torch.bool)] * 32), ValueError, "at most 31 objects"),
    ],
)
def test_prepare_masks_errors(kwargs, error, pattern):
    args = dict(image_size=(40, 40)) | kwargs
    with pytest.raises(error, match=re.escape(pattern)):
        prepare_masks(**args)


def test_a_mask_that_vanishes_when_resized():
    mask = np.zeros((100, 100), dtype=bool)
    mask[1, 1] = True
    with pytest.raises(ValueError, match=re.escape("mask is empty after resizing from (100, 100) to (10, 10)")):
        load_mask(mask, (10, 10))


def test_file_errors(tmp_path):
    missing = tmp_path / "nowhere" / "cup_mask.png"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        load_mask(missing, (8, 8))
    with pytest.raises(FileNotFoundError, match=re.escape(f"mask 0 (for edit 'cup'): no such mask file: '{missing}'")):
        prepare_masks([missing], (8, 8), labels=["cup"])
    junk = tmp_path / "junk_mask.png"
    junk.write_bytes(b"not an image")
    with pytest.raises(ValueError, match=re.escape(f"mask: cannot read '{junk}' as an image")):
        load_mask(junk, (8, 8))
    with pytest.raises(ValueError, match=re.escape("size must be (height, width) as two positive ints")):
        load_mask(np.ones((8, 8), bool), (8.0, 8))
