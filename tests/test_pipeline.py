"""ALEEditPipeline on tiny random components: the sampler's exact properties, backends, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.tiny_models import tiny_ale_pipeline

HEIGHT, WIDTH = 48, 64  # non-square; the tiny VAE halves it to 24 x 32 latents
EDITS = ["couch=>crimson-colored couch", "floor=>floor made of marble", "lamp=>golden lamp", "cat=>dog", "rug=>red rug"]


@pytest.fixture(scope="module")
def pipe():
    pipeline = tiny_ale_pipeline()
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def image():
    return (np.random.default_rng(0).random((HEIGHT, WIDTH, 3)) * 255).astype(np.uint8)


def masks(count: int) -> list[np.ndarray]:
    """``count`` overlapping boxes leaving a background border."""
    out = []
    for k in range(count):
        m = np.zeros((HEIGHT, WIDTH), dtype=bool)
        top, left = 6 + 5 * (k % 3), 6 + 9 * k
        m[top : top + 18, left : left + 16] = True
        out.append(m)
    return out


def edit(pipe, objects=2, **kwargs):
    args = dict(longest_side=None, num_inference_steps=4, output_type="pt", seed=0)
    args.update(kwargs)
    return pipe(image(), EDITS[:objects], masks(objects), **args).images


def test_switched_off_identity_edit_keeps_the_source_x0_at_every_step(pipe):
    """No ORE/RGB-CAM/BB/injection, target == source, equal guidance: DDCM promises x0_target == x0."""
    seen = []

    def record(_pipe, step, t, tensors):
        seen.append((tensors["x0_target"] - tensors["x0"].float()).abs().max().item())

    pipe(
        image(), ["couch=>couch"], masks(1), longest_side=None, num_inference_steps=5, output_type="latent",
        use_ore=False, use_rgb_cam=False, use_background_blend=False, use_qk_injection=False,
        target_guidance_scale=1.5, source_guidance_scale=1.5, callback_on_step_end=record,
    )  # fmt: skip
    assert len(seen) == 5 and max(seen) < 1e-4


def test_background_blending_makes_target_equal_source_on_the_background(pipe):
    checked = []

    def record(_pipe, step, t, tensors):
        background = ~tensors["foreground"]
        same = torch.equal(tensors["z_target"][..., background], tensors["z_source"][..., background])
        checked.append((step, same, bool(background.any())))

    edit(pipe, objects=2, num_inference_steps=5, callback_on_step_end=record)
    assert all(has_background for _, _, has_background in checked)
    assert [same for step, same, _ in checked if step >= 1] == [True] * 4
    assert not checked[0][1]  # no blending after the first step, as published


@pytest.mark.parametrize("objects", [1, 2, 3, 5])
def test_every_attention_backend_gives_the_same_image(pipe, objects):
    reference = edit(pipe, objects, attention_backend="reference")
    for backend in ("torch", "auto"):
        torch.testing.assert_close(edit(pipe, objects, attention_backend=backend), reference, atol=2e-4, rtol=0)


def test_same_seed_same_image_and_other_seed_differs(pipe):
    first, second = edit(pipe, seed=3), edit(pipe, seed=3)
    assert torch.equal(first, second)
    assert not torch.equal(first, edit(pipe, seed=4))


def test_output_types_and_sizes(pipe):
    pil = edit(pipe, output_type="pil")
    assert pil[0].size == (WIDTH, HEIGHT)
    arrays = edit(pipe, output_type="np")
    assert arrays.shape == (1, HEIGHT, WIDTH, 3) and 0 <= arrays.min() and arrays.max() <= 1
    out = pipe(image(), EDITS[:1], masks(1), num_inference_steps=2, longest_side=40, output_type="pt")
    assert out.images.shape == (1, 3, 32, 40)  # aspect kept, multiples of 8


def test_processors_are_restored_after_an_edit_and_after_a_failure(pipe):
    before = dict(pipe.unet.attn_processors)

    def boom(*_):
        raise RuntimeError("stop")

    edit(pipe)
    with pytest.raises(RuntimeError, match="stop"):
        edit(pipe, callback_on_step_end=boom)
    assert all(pipe.unet.attn_processors[name] is proc for name, proc in before.items())


@pytest.mark.parametrize(
    "kwargs, error, pattern",
    [
        (dict(edits=["couch=>red couch", "floor=>marble"]), ValueError, r"got 1 masks but the edit has 2 objects"),
        (dict(edits=["couch red couch"]), ValueError, r"an edit must be 'source=>target'"),
        (dict(edits=["=>red couch"]), ValueError, r"has an empty source phrase"),
        (dict(output_type="jpeg"), ValueError, r"output_type must be"),
        (dict(masks=[np.zeros((HEIGHT, WIDTH), dtype=bool)]), ValueError, r"empty"),
        (dict(masks=[np.ones((HEIGHT, WIDTH), dtype=bool)]), ValueError, r"whole image"),
        (dict(image="/nonexistent/picture.png"), FileNotFoundError, r"image not found"),
        (dict(attention_backend="fast"), ValueError, r"backend must be one of"),
    ],
)
def test_bad_inputs_are_clear_errors(pipe, kwargs, error, pattern):
    args = dict(image=image(), edits=EDITS[:1], masks=masks(1), longest_side=None, num_inference_steps=2)
    args.update(kwargs)
    with pytest.raises(error, match=pattern):
        pipe(args.pop("image"), args.pop("edits"), args.pop("masks"), **args)


def test_attention_maps_and_masks_on_request(pipe):
    out = pipe(
        image(), EDITS[:3], masks(3), longest_side=None, num_inference_steps=2, output_type="pt",
        return_attention_maps=True, return_masks=True,
    )  # fmt: skip
    maps = out.attention_maps
    assert maps.shape == (3, HEIGHT, WIDTH) and maps.min() >= 0 and torch.allclose(maps.amax((1, 2)), torch.ones(3))
    assert out.masks.dilated.shape == (3, HEIGHT, WIDTH)
    # The hard restriction keeps each phrase's attention on its own object's dilated mask.
    hard = pipe(
        image(), EDITS[:2], masks(2), longest_side=None, num_inference_steps=2, output_type="pt",
        return_attention_maps=True, return_masks=True, mask_value=float("-inf"),
    )  # fmt: skip
    for phrase_map, own in zip(hard.attention_maps, hard.masks.dilated, strict=True):
        # Coarse layers' nearest-resized covers and the bilinear upsampling blur the border, so compare means.
        assert phrase_map[own].mean() > 2 * phrase_map[~own].mean()
    assert edit(pipe).shape == (1, 3, HEIGHT, WIDTH)  # maps off by default: the plain path is unchanged


@pytest.mark.parametrize("dtype, tolerance", [(torch.float16, 0.05), (torch.bfloat16, 0.15)])
def test_half_precision_edits_stay_close_to_float32(dtype, tolerance):
    pipeline = tiny_ale_pipeline()
    pipeline.set_progress_bar_config(disable=True)
    expected = edit(pipeline, objects=2, num_inference_steps=3)
    pipeline.to(dtype=dtype)
    got = edit(pipeline, objects=2, num_inference_steps=3)
    assert torch.isfinite(got).all() and (got.float() - expected).abs().max() < tolerance
