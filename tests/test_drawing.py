"""The one drawing module: tinted masks with outlines, heatmaps (alone and over a picture), titled panels in a row."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ale_pipeline.drawing import (
    ALPHA,
    PALETTE,
    TITLE_HEIGHT,
    colour,
    heatmap,
    overlay_masks,
    panel,
    row,
)

HEIGHT, WIDTH = 12, 16


def grey(value: int = 100, size=(WIDTH, HEIGHT)) -> Image.Image:
    return Image.new("RGB", size, (value, value, value))


def test_colours_are_the_palette_then_distinct_hues():
    assert [colour(k) for k in range(len(PALETTE))] == PALETTE
    later = [colour(k) for k in range(len(PALETTE), len(PALETTE) + 20)]
    assert len(set(later)) == 20 and all(0 <= c <= 255 for rgb in later for c in rgb)
    with pytest.raises(ValueError, match="k must be a non-negative int"):
        colour(-1)


def test_overlay_blends_the_inside_and_draws_the_outline_solid():
    masks = np.zeros((2, HEIGHT, WIDTH), dtype=bool)
    masks[0, 2:7, 2:9] = True
    masks[1, 8:11, 10:15] = True
    picture = np.asarray(overlay_masks(grey(), masks)).astype(int)
    blended = np.round((1 - ALPHA) * 100 + ALPHA * np.array(PALETTE[0])).astype(int)
    assert tuple(picture[4, 5]) == tuple(blended)  # inside, away from the border
    assert tuple(picture[2, 5]) == PALETTE[0] and tuple(picture[4, 2]) == PALETTE[0]  # the outline
    assert tuple(picture[9, 12]) != (100, 100, 100)
    assert (picture[~masks.any(0)] == 100).all()  # the background is untouched
    flat = np.asarray(overlay_masks(grey(), torch.from_numpy(masks[0]), outline=False)).astype(int)
    assert tuple(flat[2, 5]) == tuple(blended)  # no outline: one blend everywhere inside (torch input too)


def test_overlay_follows_the_masks_size_and_checks_its_input():
    masks = np.ones((1, HEIGHT, WIDTH), dtype=bool)
    assert overlay_masks(grey(size=(4, 3)), masks).size == (WIDTH, HEIGHT)
    with pytest.raises(ValueError, match=r"masks must be \(N, H, W\) or \(H, W\)"):
        overlay_masks(grey(), np.ones((1, 1, HEIGHT, WIDTH), dtype=bool))
    with pytest.raises(ValueError, match="colours must give one colour per mask"):
        overlay_masks(grey(), np.ones((2, HEIGHT, WIDTH), dtype=bool), colours=[(0, 0, 0)])


def test_heatmap_runs_black_red_yellow_white():
    values = np.array([[0.0, 1 / 3, 2 / 3, 1.0, np.nan, 2.0]], dtype=np.float32)
    rgb = np.asarray(heatmap(values)).astype(int)[0]
    assert [tuple(p) for p in rgb] == [(0, 0, 0), (255, 0, 0), (255, 255, 0), (255, 255, 255), (0, 0, 0),
                                       (255, 255, 255)]  # fmt: skip
    with pytest.raises(ValueError, match=r"values must be \(H, W\)"):
        heatmap(np.zeros((1, 2, 3)))


def test_heatmap_over_a_picture_adds_its_darkened_grey():
    values = torch.zeros(HEIGHT, WIDTH)
    values[0, 0] = 1.0
    rgb = np.asarray(heatmap(values, background=grey(200, size=(8, 6)))).astype(int)
    dark = round(200 * 0.35)
    assert rgb.shape == (HEIGHT, WIDTH, 3)
    assert abs(rgb[5, 5] - dark).max() <= 1 and tuple(rgb[0, 0]) == (255, 255, 255)


def test_panels_get_a_title_strip_and_rows_keep_their_gaps():
    titled = panel(grey(0), "source")
    assert titled.size == (WIDTH, HEIGHT + TITLE_HEIGHT)
    strip = np.asarray(titled)[:TITLE_HEIGHT]
    assert (strip < 255).any() and (np.asarray(titled)[TITLE_HEIGHT:] == 0).all()  # text drawn, image below
    sheet = row([titled, panel(grey(0, size=(10, 4)), "b")], gap=3)
    assert sheet.size == (WIDTH + 3 + 10, HEIGHT + TITLE_HEIGHT)
    assert (np.asarray(sheet)[:, WIDTH : WIDTH + 3] == 255).all()  # the gap is white
    with pytest.raises(ValueError, match="at least one picture"):
        row([])
