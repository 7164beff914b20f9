"""ale-app's functions called directly: painted layers as masks, the page's checks, and one edit on a tiny model
that must equal the same edit through ``ale-edit``."""

from __future__ import annotations

import dataclasses
import os
import sys

import numpy as np
import pytest
from PIL import Image

from ale_pipeline import cli
from ale_pipeline.app.inputs import (
    NO_PRESET,
    AppInputError,
    Controls,
    drawn_masks,
    edits_from_rows,
    layer_alpha,
    layer_name,
    uploaded_masks,
)
from ale_pipeline.app.offline import OFFLINE_ENV, go_offline
from ale_pipeline.app.session import EditRequest, EditSession
from ale_pipeline.config import DEFAULTS
from ale_pipeline.masks import prepare_masks
from tests.tiny_models import random_image, tiny_ale_pipeline

#: The cheapest edit that still runs every part: one step at 64 px on the tiny model.
FAST = dict(steps=1, longest_side=64, backend="torch")


def painted(mask: np.ndarray, rgb=(255, 0, 0), alpha=255) -> np.ndarray:
    """An RGBA editor layer with ``mask`` painted in ``rgb`` at ``alpha``, transparent elsewhere."""
    layer = np.zeros((*mask.shape, 4), np.uint8)
    layer[mask] = (*rgb, alpha)
    return layer


def boxes(height=48, width=64) -> list[np.ndarray]:
    first = np.zeros((height, width), bool)
    first[4:20, 6:30] = True
    second = np.zeros((height, width), bool)
    second[28:44, 36:60] = True
    return [first, second]


@pytest.fixture(scope="module")
def pipe():
    return tiny_ale_pipeline()


# --- layers -> masks ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rgb, alpha", [((255, 0, 0), 255), ((0, 0, 0), 255), ((255, 255, 255), 1), ((0, 90, 200), 40)])
def test_a_layer_mask_is_its_alpha_whatever_the_colour(rgb, alpha):
    mask = boxes()[0]
    layer = painted(mask, rgb, alpha)
    layer[~mask, :3] = 255 - np.array(rgb, np.uint8)  # colour under transparent pixels must not count
    assert np.array_equal(layer_alpha(layer, "object 1"), mask)
    assert np.array_equal(layer_alpha(Image.fromarray(layer, "RGBA"), "object 1"), mask)


def test_a_layer_without_transparency_is_refused():
    with pytest.raises(AppInputError, match="'object 2' has no transparency"):
        layer_alpha(np.zeros((8, 8, 3), np.uint8), "object 2")
    with pytest.raises(AppInputError, match="has no transparency"):
        layer_alpha(Image.new("RGB", (8, 8)), "object 1")


def test_layers_pair_with_edits_in_order_and_mistakes_name_the_edit():
    first, second = boxes()
    empty = np.zeros_like(first)
    layers = [painted(first), painted(second, (0, 255, 0)), painted(empty)]
    masks = drawn_masks(layers, ["cup", "spoon"])  # the third, empty layer belongs to no edit: fine
    assert len(masks) == 2 and np.array_equal(masks[0], first) and np.array_equal(masks[1], second)
    with pytest.raises(AppInputError, match=r"mask of edit 2 \('spoon'\) is empty: paint .* layer 'object 2'"):
        drawn_masks([painted(first), painted(empty)], ["cup", "spoon"])
    with pytest.raises(AppInputError, match=r"no mask for edit 3 \('saucer'\): the image editor has 2 layer"):
        drawn_masks(layers[:2], ["cup", "spoon", "saucer"])
    with pytest.raises(AppInputError, match="layer 'object 2' is painted but there are only 1 edits"):
        drawn_masks(layers, ["cup"])
    assert layer_name(0) == "object 1"


def test_rows_become_phrase_pairs_and_a_missing_phrase_names_its_row():
    sources, targets = ["cup ", " spoon", "", ""], ["blue cup", "golden spoon", "", ""]
    assert edits_from_rows(sources, targets, 2) == [("cup", "blue cup"), ("spoon", "golden spoon")]
    with pytest.raises(AppInputError, match="edit 3 has no source phrase"):
        edits_from_rows(sources, targets, 3)
    with pytest.raises(AppInputError, match=r"edit 2 \('spoon'\) has no target phrase"):
        edits_from_rows(sources, ["blue cup", " ", "", ""], 2)
    for count in (0, 1.5, None):
        with pytest.raises(AppInputError, match="number of objects"):
            edits_from_rows(sources, targets, count)
    with pytest.raises(AppInputError, match="has 4 edit rows, but 5 objects"):
        edits_from_rows(sources, targets, 5)


def test_uploaded_masks_are_one_file_per_edit(tmp_path):
    assert uploaded_masks(["a.png", "b.png"], ["cup", "spoon"]) == ["a.png", "b.png"]
    with pytest.raises(AppInputError, match=r"got 1 mask file\(s\) for 2 edits"):
        uploaded_masks(["a.png"], ["cup", "spoon"])


def test_the_controls_default_to_the_published_settings():
    config = Controls().config()
    published = dataclasses.replace(DEFAULTS, self_replace_steps=DEFAULTS.injection_fraction)
    assert config == published and config.injection_fraction == DEFAULTS.injection_fraction
    preset = Controls(edit_type="material", injection=0.9).config()  # a preset wins over the fraction
    assert preset.edit_type == "material" and preset.self_replace_steps is None and preset.injection_fraction == 0.6
    assert Controls(edit_type=NO_PRESET, longest_side=0).config().longest_side is None
    with pytest.raises(AppInputError, match="steps must be a whole number"):
        Controls(steps=2.5).config()
    with pytest.raises(AppInputError, match="seed must be a number"):
        Controls(seed=None).config()
    with pytest.raises(AppInputError, match=r"mask threshold must lie in \(0, 1\]"):
        Controls(mask_threshold=0).threshold()


def test_the_app_switches_analytics_and_telemetry_off(monkeypatch):
    for name in OFFLINE_ENV:
        monkeypatch.setenv(name, "True")
    go_offline()
    assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "False" and os.environ["HF_HUB_DISABLE_TELEMETRY"] == "1"
    assert os.environ["GRADIO_SHARE"] == "False"


# --- the session: every mistake a message, before any model work ----------------------------------------------


def request(image, edits, layers, **controls) -> EditRequest:
    return EditRequest(image=image, edits=edits, mask_source="draw", layers=layers, controls=Controls(**controls))


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(image=None), "no image: upload a picture"),
        (dict(layers=[]), r"no mask for edit 1 \('cup'\)"),
        (dict(edits=[("cup " * 80, "blue cup"), ("spoon", "golden spoon")]), "77"),
        (dict(steps=0), "num_inference_steps must be an int in"),
        (dict(dilation=0.7), "dilation must be a fraction of the image height"),
        (dict(mask_value=5), "mask_value must be a number <= 0"),
        (dict(mask_source="upload"), r"got 0 mask file\(s\) for 2 edits"),
        (dict(mask_source="nonsense"), "mask source must be one of"),
    ],
)
def test_mistakes_become_messages_before_the_model_runs(pipe, tmp_path, change, message):
    session = EditSession(pipe, out_dir=tmp_path)
    job = request(Image.fromarray(random_image()), [("cup", "blue cup"), ("spoon", "golden spoon")],
                  [painted(m) for m in boxes()], **FAST)  # fmt: skip
    for name in ("image", "edits", "layers", "mask_source"):
        if name in change:
            setattr(job, name, change.pop(name))
    job.controls = dataclasses.replace(job.controls, **change)
    calls = []
    hook = pipe.unet.register_forward_pre_hook(lambda *a: calls.append(1))  # the model must not run
    try:
        with pytest.raises(AppInputError, match=message):
            session.edit(job)
    finally:
        hook.remove()
    assert not calls and not list(tmp_path.iterdir())


def test_dino_sam_that_cannot_load_is_a_clear_message(pipe, tmp_path):
    def offline(device):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load IDEA-Research/grounding-dino-base")

    session = EditSession(pipe, out_dir=tmp_path, load_masker=offline)
    job = request(Image.fromarray(random_image()), [("cup", "blue cup")], [], **FAST)
    job.mask_source = "dino-sam"
    with pytest.raises(AppInputError, match=r"dino-sam is not available here: We couldn't connect .* use attention"):
        session.preview(job)


# --- one edit -------------------------------------------------------------------------------------------------


def test_one_edit_on_a_tiny_model_equals_ale_edit(pipe, tmp_path):
    image = random_image(48, 64)
    masks = boxes()
    Image.fromarray(image).save(tmp_path / "image.png")
    for k, mask in enumerate(masks):
        Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / f"mask{k}.png")
    edits = [("cup", "blue cup"), ("spoon", "golden spoon")]

    session = EditSession(pipe, out_dir=tmp_path / "downloads")
    steps = []
    job = request(Image.fromarray(image), edits, [painted(m, (40 * k, 200, 0), 90) for k, m in enumerate(masks)],
                  **FAST, seed=7)  # fmt: skip
    result = session.edit(job, progress=lambda done, total, what: steps.append((done, total, what)))

    argv = [str(tmp_path / "image.png"), "--out", str(tmp_path / "cli.png"), "--steps", "1", "--longest-side", "64",
            "--backend", "torch", "--seed", "7"]  # fmt: skip
    for k, (source, target) in enumerate(edits):
        argv += ["--edit", f"{source}=>{target}", "--mask", str(tmp_path / f"mask{k}.png")]
    assert cli.main(argv, load_pipeline=lambda *_: pipe) == 0
    by_cli = np.asarray(Image.open(tmp_path / "cli.png"))

    assert np.array_equal(np.asarray(result.edited), by_cli)  # the same edit, pixel for pixel
    assert np.array_equal(np.asarray(Image.open(result.path)), by_cli) and result.path.parent == tmp_path / "downloads"
    assert result.source.size == result.edited.size == (64, 48)
    assert [caption for _, caption in result.attention] == ["blue cup", "golden spoon"]
    assert all(picture.size == (64, 48) for picture, _ in result.attention)
    assert steps == [(0, 1, "editing"), (1, 1, "editing")]  # the progress bar follows the sampler's steps
    assert result.seconds > 0 and result.found is None
    # The masks picture tints exactly the pixels of the dilated masks the edit used.
    tinted = np.any(np.asarray(result.masks) != np.asarray(result.source), axis=-1)
    assert np.array_equal(tinted, prepare_masks(masks, (48, 64), dilation=DEFAULTS.dilation).dilated.any(0).numpy())
    assert session._save(result.edited) != result.path  # a second edit never overwrites the first download


def test_without_gradio_ale_app_names_the_app_extra(monkeypatch, capsys):
    from ale_pipeline.app import cli as app_cli

    real = app_cli.importlib.util.find_spec
    monkeypatch.delitem(sys.modules, "gradio", raising=False)
    monkeypatch.setattr(app_cli.importlib.util, "find_spec", lambda name: None if name == "gradio" else real(name))
    assert app_cli.main(["--port", "0"]) == 2
    assert (
        capsys.readouterr().err
        == "ale-app: error: this command needs the 'app' extra: pip install \"ale-kernels[app]\"\n"
    )
    assert app_cli.main(["--port", "70000"]) == 2
    assert "--port must lie in [0, 65535], got 70000" in capsys.readouterr().err
