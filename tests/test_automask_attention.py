"""Masks from cross-attention maps on the tiny random UNet: shapes, threshold behaviour, layer and step choice,
and the pipeline taking them (as an ``AutoMasks`` or as ``masks="attention"``)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ale_pipeline.automask import AutoMasks, otsu_threshold, stretch, threshold_maps
from ale_pipeline.config import DEFAULTS
from tests.tiny_models import random_image, tiny_ale_pipeline

HEIGHT, WIDTH = 48, 64  # the tiny VAE halves it: 24 x 32 latents, cross-attention at 1, 1/2, 1/4, 1/8 of that
PHRASES = ["couch", "floor"]
FAST = dict(longest_side=None, num_inference_steps=2)


@pytest.fixture(scope="module")
def pipe():
    pipeline = tiny_ale_pipeline()
    return pipeline


def image():
    return random_image(HEIGHT, WIDTH)


@pytest.fixture(scope="module")
def overlapping(pipe) -> AutoMasks:
    return pipe.attention_masks(image(), PHRASES, exclusive=False, **FAST)


@pytest.fixture(scope="module")
def exclusive(pipe) -> AutoMasks:
    return pipe.attention_masks(image(), PHRASES, **FAST)  # exclusive is the default


def test_masks_have_the_edit_size_and_follow_the_threshold(pipe, overlapping):
    maps, masks = overlapping.scores, overlapping.masks
    assert overlapping.method == "attention" and overlapping.phrases == tuple(PHRASES)
    assert masks.shape == maps.shape == (2, HEIGHT, WIDTH) and masks.dtype == torch.bool
    # Each map is stretched to exactly [0, 1]; a pixel is inside where its map reaches the threshold.
    assert torch.equal(maps.flatten(1).amin(1), torch.zeros(2)) and torch.equal(maps.flatten(1).amax(1), torch.ones(2))
    assert torch.equal(masks, maps >= 0.5) and overlapping.details["thresholds"] == [0.5, 0.5]
    assert 0 < masks.sum() < masks.numel()  # a real cut, not everything or nothing
    strict = pipe.attention_masks(image(), PHRASES, exclusive=False, threshold=0.8, **FAST)
    torch.testing.assert_close(strict.scores, maps)  # same seed, same pass
    assert torch.equal(strict.masks, maps >= 0.8) and strict.masks.sum() < masks.sum()
    assert (strict.masks <= masks).all()  # a higher threshold only removes pixels
    assert pipe.attention_masks(image(), PHRASES, exclusive=False, threshold=1.0, **FAST).masks.flatten(1).any(1).all()


def test_exclusive_masks_give_each_pixel_to_the_strongest_phrase(overlapping, exclusive):
    assert not (exclusive.masks[0] & exclusive.masks[1]).any()
    assert (exclusive.masks <= overlapping.masks).all()
    stronger = overlapping.scores.argmax(0)
    for k in range(2):
        assert torch.equal(exclusive.masks[k], overlapping.masks[k] & (stronger == k))


def test_otsu_picks_a_cut_per_phrase(pipe):
    found = pipe.attention_masks(image(), PHRASES, threshold="otsu", exclusive=False, **FAST)
    cuts = found.details["thresholds"]
    assert len(cuts) == 2 and all(0 < c < 1 for c in cuts)
    for k in range(2):
        assert torch.equal(found.masks[k], found.scores[k] >= cuts[k])


def test_layers_and_steps_are_chosen(pipe, overlapping):
    # The tiny UNet's cross-attention layers: one per down block at 1, 1/2 and 1/4 of the latent, the middle
    # one at 1/8, two per up block at 1/4, 1/2 and 1. At 1/2 and 1/4: 1 + 1 + 2 + 2 = 6 a step, 2 steps.
    assert overlapping.details["probed_calls"] == 12 and overlapping.details["steps"] == [0, 1]
    every = pipe.attention_masks(image(), PHRASES, resolutions=None, steps=[1], **FAST)
    assert every.details["probed_calls"] == 10 and every.details["steps"] == [1]
    with pytest.raises(ValueError, match=r"no cross-attention layer .* factors \[1, 2, 4, 8\]"):
        pipe.attention_masks(image(), PHRASES, resolutions=(16,), **FAST)
    with pytest.raises(ValueError, match="steps must be step indices in"):
        pipe.attention_masks(image(), PHRASES, steps=[2], **FAST)
    with pytest.raises(ValueError, match="threshold must be a float"):
        pipe.attention_masks(image(), PHRASES, threshold=1.5, **FAST)


def test_threshold_helpers():
    maps = torch.tensor([[[0.0, 0.2, 0.9, 1.0]], [[1.0, 0.6, 0.1, 0.0]]])
    assert torch.equal(threshold_maps(maps, 0.5), maps >= 0.5)
    assert torch.equal(threshold_maps(maps, 0.5, exclusive=True), torch.tensor([[[0, 0, 1, 1]], [[1, 1, 0, 0]]]).bool())
    bimodal = torch.cat([torch.full((50,), 0.1), torch.full((50,), 0.8)])
    assert 0.1 < otsu_threshold(bimodal) <= 0.8
    assert torch.equal(stretch(torch.tensor([[[2.0, 4.0, 3.0]]])), torch.tensor([[[0.0, 1.0, 0.5]]]))
    assert torch.equal(stretch(torch.full((1, 1, 3), 0.3)), torch.ones(1, 1, 3))  # a flat map: no cut to make


def test_the_pipeline_edits_with_attention_masks(pipe, exclusive):
    """``masks="attention"`` finds them with the edit's steps, size and seed and edits with them; an ``AutoMasks``
    passed in goes the same way (the Grounding DINO + SAM tests edit with one)."""
    edits = ["couch=>red couch", "floor=>marble floor"]
    inline = pipe(image(), edits, "attention", output_type="pt", return_masks=True, **FAST)
    assert torch.equal(inline.masks.raw, exclusive.masks) and inline.images.shape == (1, 3, HEIGHT, WIDTH)
    assert inline.masks.dilated.shape == (2, HEIGHT, WIDTH)


@pytest.mark.parametrize("source_guidance_scale", [1.0, 1.5])
def test_the_mask_pass_sees_exactly_the_edit_source_latents_at_every_step(pipe, exclusive, source_guidance_scale):
    """One loop for both passes: from the same generator state the source latents are bit-equal at every step,
    whether the pass runs ``[src_cond]`` or ``[src_uncond, src_cond]`` and the edit its 4-entry batch."""

    def recorder(store):
        return lambda _pipe, step, t, tensors: store.append((step, t, tensors["x0"], tensors["z_source"]))

    settings = dict(FAST, num_inference_steps=3, source_guidance_scale=source_guidance_scale)
    in_pass, in_edit = [], []
    generator = torch.Generator().manual_seed(11)
    pipe.attention_masks(image(), PHRASES, generator=generator, callback_on_step_end=recorder(in_pass), **settings)
    edits = ["couch=>red couch", "floor=>marble floor"]
    generator = torch.Generator().manual_seed(11)
    pipe(
        image(), edits, exclusive, generator=generator, output_type="latent", callback_on_step_end=recorder(in_edit),
        **settings,
    )  # fmt: skip
    assert [s[:2] for s in in_pass] == [s[:2] for s in in_edit] and len(in_pass) == 3
    for (_, _, x0_pass, z_pass), (_, _, x0_edit, z_edit) in zip(in_pass, in_edit, strict=True):
        assert torch.equal(x0_pass, x0_edit) and torch.equal(z_pass, z_edit)


@pytest.mark.parametrize(
    "kwargs, error, pattern",
    [
        (dict(phrases=[]), ValueError, r"^phrases must hold 1 to 31"),
        (dict(phrases=["couch", " "]), ValueError, r"^phrases must be non-empty strings"),
        (dict(phrases=["red " * 80]), ValueError, r"^phrases: the source prompt"),
        (dict(num_inference_steps=0), ValueError, r"^num_inference_steps must be an int in \[1, 50\]"),
        (dict(published_ore="no"), TypeError, r"^published_ore must be a bool"),
        (dict(attention_backend="fast"), ValueError, r"^attention_backend must be one of"),
        (dict(exclusive=None), TypeError, r"^exclusive must be a bool"),
        (dict(callback_on_step_end_tensor_inputs=["z_target"]), ValueError, r"must name tensors in \('x0', "),
        (dict(colour="red"), TypeError, r"unknown edit setting\(s\) colour"),
    ],
)
def test_the_mask_pass_checks_its_inputs_first(pipe, kwargs, error, pattern):
    args = dict(FAST, phrases=PHRASES)
    args.update(kwargs)
    with pytest.raises(error, match=pattern):
        pipe.attention_masks(image(), args.pop("phrases"), **args)


def test_the_mask_pass_takes_the_edit_configuration(pipe, exclusive):
    """Every EditConfig field is accepted (the target branch's change nothing), so one configuration serves both."""
    config = DEFAULTS.replace(longest_side=None, num_inference_steps=2, target_guidance_scale=5.0, mask_value=-1.0)
    found = pipe.attention_masks(image(), PHRASES, config=config)
    assert torch.equal(found.masks, exclusive.masks) and torch.equal(found.scores, exclusive.scores)
    by_keywords = pipe.attention_masks(image(), PHRASES, **dataclasses.asdict(config))
    assert torch.equal(by_keywords.scores, exclusive.scores)
