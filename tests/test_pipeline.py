"""ALEEditPipeline on tiny random components: the sampler's exact properties, backends, errors."""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import logging

import numpy as np
import pytest
import torch

from ale_pipeline import ALEEditPipeline
from ale_pipeline.config import DEFAULTS, SETTINGS
from tests.tiny_models import random_image, tiny_ale_pipeline

HEIGHT, WIDTH = 48, 64  # non-square; the tiny VAE halves it to 24 x 32 latents
EDITS = ["couch=>crimson-colored couch", "floor=>floor made of marble", "lamp=>golden lamp", "cat=>dog", "rug=>red rug"]


@pytest.fixture(scope="module")
def pipe():
    pipeline = tiny_ale_pipeline()
    return pipeline


def image():
    return random_image(HEIGHT, WIDTH)


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
    from ale_kernels.testing.tolerance import assert_within_perturbation, rounding_perturbation

    reference = edit(pipe, objects, attention_backend="reference")
    # The pipeline draws its noise in its own dtype, so no float64 run is its oracle: the yardstick is how far
    # one-ulp changes of every weight move the reference's image (float32 rounding noise through four steps).
    noise = rounding_perturbation(lambda: edit(pipe, objects, attention_backend="reference"), [pipe.unet, pipe.vae])
    for backend in ("torch", "auto"):
        assert_within_perturbation(edit(pipe, objects, attention_backend=backend), reference, noise, name=backend)


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


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_edits_stay_close_to_float32(dtype):
    from ale_kernels.testing.tolerance import assert_within_perturbation, rounding_perturbation

    pipeline = tiny_ale_pipeline()
    expected = edit(pipeline, objects=2, num_inference_steps=3)
    pipeline.to(dtype=dtype)
    got = edit(pipeline, objects=2, num_inference_steps=3)
    assert torch.isfinite(got).all()
    # The float32 edit is the oracle; the yardstick is how far one-ulp changes of every weight move the
    # half-precision edit (the CPU's half arithmetic, whatever its units, sets both). Twice that, not four
    # times: half rounding noise is already large (about 0.02 in float16, 0.15 in bfloat16 on pixels in [0, 1]).
    models = [pipeline.unet, pipeline.vae]
    noise = rounding_perturbation(lambda: edit(pipeline, objects=2, num_inference_steps=3), models)
    assert_within_perturbation(got.float(), expected, noise, dtype=dtype, factor=2.0, name=str(dtype))


# ----------------------------------------------------------------------------------------------------------
# The safety checker: diffusers' StableDiffusionSafetyChecker of tiny random CLIP configs, as SD1.5 checkpoints
# ship it with a CLIPImageProcessor.


def tiny_safety_checker(flag_everything: bool = False):
    """``(checker, feature_extractor)``. Random weights flag nothing (cosine <= 1 = the default thresholds); with
    ``flag_everything`` the thresholds are so low that every score is positive."""
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    torch.manual_seed(0)
    text = dict(hidden_size=16, intermediate_size=32, num_attention_heads=2, num_hidden_layers=1, vocab_size=99)
    text.update(bos_token_id=0, eos_token_id=1, pad_token_id=1)
    vision = dict(hidden_size=16, intermediate_size=32, num_attention_heads=2, num_hidden_layers=1, image_size=32)
    config = CLIPConfig(text_config=text, vision_config=dict(vision, patch_size=8), projection_dim=16)
    checker = StableDiffusionSafetyChecker(config).eval()
    if flag_everything:
        with torch.no_grad():
            checker.concept_embeds_weights.fill_(-10.0)
            checker.special_care_embeds_weights.fill_(-10.0)
    features = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return checker, features


def with_checker(pipe, flag_everything: bool = False):
    checker, features = tiny_safety_checker(flag_everything)
    checked = type(pipe)(**{**pipe.components, "safety_checker": checker, "feature_extractor": features})
    checked.set_progress_bar_config(disable=True)
    return checked


def checked_edit(pipe, output_type):
    return pipe(image(), EDITS[:1], masks(1), longest_side=None, num_inference_steps=2, output_type=output_type)


def test_without_a_checker_nothing_is_flagged_or_reported(pipe):
    assert pipe.safety_checker is None and pipe.config.requires_safety_checker is False
    out = checked_edit(pipe, "pt")
    assert out.nsfw_content_detected is None
    images, flags = pipe(image(), EDITS[:1], masks(1), longest_side=None, num_inference_steps=2, return_dict=False)
    assert flags is None and images[0].size == (WIDTH, HEIGHT)


def test_safety_checker_that_flags_nothing_leaves_the_image(pipe):
    checked = with_checker(pipe)
    expected = checked_edit(pipe, "pt").images
    out = checked_edit(checked, "pt")
    assert out.nsfw_content_detected == [False] and torch.equal(out.images, expected) and expected.amax() > 0


@pytest.mark.parametrize("output_type", ["pil", "np", "pt"])
def test_safety_checker_blacks_out_flagged_images_in_every_output_type(pipe, output_type):
    out = checked_edit(with_checker(pipe, flag_everything=True), output_type)
    assert out.nsfw_content_detected == [True]
    pixels = np.asarray(out.images[0]) if output_type == "pil" else np.asarray(out.images)
    assert pixels.shape[-3:] in ((HEIGHT, WIDTH, 3), (3, HEIGHT, WIDTH)) and not pixels.any()


def test_safety_checker_is_skipped_for_latents_and_flags_come_second_in_the_tuple(pipe):
    checked = with_checker(pipe, flag_everything=True)
    latents = checked_edit(checked, "latent")
    assert latents.nsfw_content_detected is None and latents.images.abs().amax() > 0
    images, flags = checked(image(), EDITS[:1], masks(1), longest_side=None, num_inference_steps=2, return_dict=False)
    assert flags == [True] and not np.asarray(images[0]).any()


def test_safety_checker_needs_its_feature_extractor(pipe):
    checker, _ = tiny_safety_checker()
    with pytest.raises(ValueError, match="needs its feature_extractor"):
        type(pipe)(**{**pipe.components, "safety_checker": checker})


def test_pipeline_with_a_safety_checker_round_trips_through_save_pretrained(pipe, tmp_path):
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker

    with_checker(pipe, flag_everything=True).save_pretrained(tmp_path)
    loaded = type(pipe).from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert isinstance(loaded.safety_checker, StableDiffusionSafetyChecker) and loaded.feature_extractor is not None
    assert checked_edit(loaded, "pt").nsfw_content_detected == [True]
    assert loaded.config.requires_safety_checker is True  # a pipeline built with a checker requires one
    without = type(pipe).from_pretrained(tmp_path, safety_checker=None, requires_safety_checker=False)
    without.set_progress_bar_config(disable=True)
    assert without.safety_checker is None
    assert checked_edit(without, "pt").nsfw_content_detected is None


def test_missing_safety_checker_warns_once_unless_not_required(pipe):
    from diffusers.utils import logging as diffusers_logging

    logger = diffusers_logging.get_logger("ale_pipeline.pipeline")
    components = {k: v for k, v in pipe.components.items() if k not in ("safety_checker", "feature_extractor")}
    with _captured(logger) as records:
        quiet = type(pipe)(**components, requires_safety_checker=False)
        checked_edit(quiet, "pt")
    assert records == []
    with _captured(logger) as records:
        loud = type(pipe)(**components)
        loud.set_progress_bar_config(disable=True)
        checked_edit(loud, "pt")
        checked_edit(loud, "pt")
    assert len(records) == 1 and "without a safety checker" in records[0]


@contextlib.contextmanager
def _captured(logger):
    """The messages ``logger`` emits inside the block (diffusers' loggers do not propagate to pytest's caplog)."""
    messages = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: messages.append(record.getMessage())
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)


# ----------------------------------------------------------------------------------------------------------
# One edit configuration: every EditConfig field is a keyword with its published default, config= gives them
# all, and check_inputs rejects each bad input, naming the argument, before any model runs.


def test_every_setting_is_a_keyword_with_the_published_default(pipe):
    call = inspect.signature(pipe.__call__).parameters
    for name in SETTINGS:
        assert call[name].default == getattr(DEFAULTS, name), name
    masks_pass = inspect.signature(pipe.attention_masks).parameters
    explicit = [name for name in SETTINGS if name in masks_pass]
    assert {"num_inference_steps", "longest_side", "seed", "attention_backend", "published_ore"} <= set(explicit)
    for name in explicit:
        assert masks_pass[name].default == getattr(DEFAULTS, name), name
    pipe.check_inputs(image(), EDITS[:1], masks(1), **dataclasses.asdict(DEFAULTS))


def test_config_gives_the_settings_and_differing_keywords_override_it(pipe):
    config = DEFAULTS.replace(num_inference_steps=2, longest_side=None, seed=7, dilation=0.1)
    by_config = pipe(image(), EDITS[:1], masks(1), config=config, output_type="pt").images
    by_keywords = pipe(image(), EDITS[:1], masks(1), output_type="pt", **dataclasses.asdict(config)).images
    assert torch.equal(by_config, by_keywords)
    assert not torch.equal(
        by_config, pipe(image(), EDITS[:1], masks(1), config=config, seed=8, output_type="pt").images
    )


BAD_INPUTS = [
    (dict(edits=[]), ValueError, r"^edits must hold 1 to 31 \(source, target\) pairs"),
    (dict(edits="couch=>red couch"), TypeError, r"^edits must be a list"),
    (dict(edits=["couch red couch"]), ValueError, r"^edits\[0\]: an edit must be 'source=>target'"),
    (dict(edits=[("couch", " ")]), ValueError, r"^edit 0 \('couch', ' '\) has an empty target phrase"),
    (dict(edits=[("red " * 80 + "couch", "couch")]), ValueError, r"^edits: the source prompt .* more than .* 77"),
    (dict(masks=masks(2)), ValueError, r"^masks: got 2 masks but the edit has 1 objects"),
    (dict(masks=np.zeros((HEIGHT, WIDTH), dtype=bool)), ValueError, r"^masks given as one array must be an \(N, H"),
    (dict(masks="couch.png"), ValueError, r"^masks must be a list of masks .* got 'couch.png'"),
    (dict(masks="dino-sam"), ValueError, r'^masks="dino-sam" needs the detector'),
    (dict(masks=42), TypeError, r"^masks must be a list of masks"),
    (dict(image=42), TypeError, r"^image must be a path"),
    (dict(image="/nonexistent/picture.png"), FileNotFoundError, r"^image not found"),
    (dict(output_type="jpeg"), ValueError, r"^output_type must be one of \('pil', 'np', 'pt', 'latent'\)"),
    (dict(num_inference_steps=0), ValueError, r"^num_inference_steps must be an int in \[1, 50\], got 0"),
    (dict(num_inference_steps=51), ValueError, r"^num_inference_steps must be an int in \[1, 50\]"),
    (dict(num_inference_steps=2.5), ValueError, r"^num_inference_steps must be an int"),
    (dict(target_guidance_scale=float("nan")), ValueError, r"^target_guidance_scale must be a finite number"),
    (dict(source_guidance_scale="1"), ValueError, r"^source_guidance_scale must be a finite number"),
    (
        dict(self_replace_steps=1.5),
        ValueError,
        r"^self_replace_steps must be None or a fraction of the steps in \[0, 1",
    ),
    (dict(self_replace_steps=-0.1), ValueError, r"^self_replace_steps must be None or a fraction"),
    (dict(edit_type="style"), ValueError, r"^edit_type must be None or one of \('color', "),
    (dict(mask_value=float("nan")), ValueError, r"^mask_value must be a number <= 0"),
    (dict(mask_value=5.0), ValueError, r"^mask_value must be a number <= 0"),
    (dict(dilation=0.5), ValueError, r"^dilation must be a fraction of the image height in \[0, 0.5\)"),
    (dict(dilation=-0.01), ValueError, r"^dilation must be a fraction"),
    (dict(longest_side=4), ValueError, r"^longest_side must be None \(keep the size\) or an int >= 8"),
    (dict(attention_backend="fast"), ValueError, r"^attention_backend must be one of \('auto', "),
    (dict(seed="42"), TypeError, r"^seed must be an int or None"),
    (dict(use_rgb_cam="yes"), TypeError, r"^use_rgb_cam must be a bool"),
    (dict(published_ore=1), TypeError, r"^published_ore must be a bool"),
    (dict(generator=42), TypeError, r"^generator must be a torch.Generator"),
    (dict(callback_on_step_end="print"), TypeError, r"^callback_on_step_end must be a callable"),
    (dict(callback_on_step_end_tensor_inputs=["latents"]), ValueError, r"^callback_on_step_end_tensor_inputs must"),
    (dict(config="fast"), TypeError, r"^config must be an ale_pipeline.config.EditConfig"),
]


@pytest.mark.parametrize("kwargs, error, pattern", BAD_INPUTS, ids=[next(iter(k)) for k, _, _ in BAD_INPUTS])
def test_check_inputs_names_the_bad_argument_and_the_call_checks_first(pipe, kwargs, error, pattern):
    args = dict(image=image(), edits=EDITS[:1], masks=masks(1), longest_side=None, num_inference_steps=2)
    args.update(kwargs)
    positional = [args.pop("image"), args.pop("edits"), args.pop("masks")]
    with pytest.raises(error, match=pattern):
        pipe.check_inputs(*positional, **args)
    steps = []
    args.setdefault("callback_on_step_end", lambda *step: steps.append(step))
    with pytest.raises(error, match=pattern):
        pipe(*positional, **args)
    assert steps == []  # rejected before the first step


def test_check_inputs_rejects_an_unknown_setting_and_a_phrase_mismatch(pipe):
    from ale_pipeline.automask import AutoMasks

    with pytest.raises(TypeError, match="unknown edit setting"):
        pipe.check_inputs(image(), EDITS[:1], masks(1), steps=3)
    found = AutoMasks(masks=torch.ones(1, HEIGHT, WIDTH, dtype=torch.bool), phrases=("floor",), method="attention")
    with pytest.raises(ValueError, match=r"^masks: the automatic masks were found for the phrases \['floor'\]"):
        pipe.check_inputs(image(), EDITS[:1], found)


# ----------------------------------------------------------------------------------------------------------
# The step-end callback's returned dict replaces the loop's state, as in diffusers.


def test_callback_returning_nothing_or_what_it_got_leaves_the_edit_bit_identical(pipe):
    expected = edit(pipe, num_inference_steps=3)
    assert torch.equal(edit(pipe, num_inference_steps=3, callback_on_step_end=lambda *_: None), expected)
    assert torch.equal(edit(pipe, num_inference_steps=3, callback_on_step_end=lambda *_: {}), expected)
    assert torch.equal(edit(pipe, num_inference_steps=3, callback_on_step_end=lambda p, s, t, d: d), expected)


def test_callback_replacing_z_target_or_x0_target_changes_the_result(pipe):
    latent = dict(num_inference_steps=3, output_type="latent")
    expected = edit(pipe, **latent)

    def nudge(_pipe, step, t, tensors):
        return {"z_target": tensors["z_target"] + 0.5} if step == 0 else None

    assert not torch.equal(edit(pipe, callback_on_step_end=nudge, **latent), expected)

    def overwrite(_pipe, step, t, tensors):
        return {"x0_target": torch.full_like(tensors["x0_target"], 0.25)} if step == 2 else None

    assert torch.equal(edit(pipe, callback_on_step_end=overwrite, **latent), torch.full_like(expected, 0.25))


def test_callback_gets_the_named_tensors_and_bad_returns_are_clear_errors(pipe):
    seen = []
    edit(
        pipe, num_inference_steps=2, callback_on_step_end_tensor_inputs=["z_target", "foreground"],
        callback_on_step_end=lambda p, s, t, tensors: seen.append(sorted(tensors)),
    )  # fmt: skip
    assert seen == [["foreground", "z_target"]] * 2

    class Callback:  # diffusers' PipelineCallback objects carry the names they need
        tensor_inputs = ("z_source",)

        def __call__(self, pipe, step, t, tensors):
            seen.append(sorted(tensors))

    seen.clear()
    edit(pipe, num_inference_steps=2, callback_on_step_end=Callback())
    assert seen == [["z_source"]] * 2
    with pytest.raises(ValueError, match=r"returned 'latents', which cannot replace .* z_source, z_target, x0_target"):
        edit(pipe, num_inference_steps=2, callback_on_step_end=lambda p, s, t, d: {"latents": d["z_target"]})
    with pytest.raises(ValueError, match=r"returned 'x0', which cannot replace"):
        edit(pipe, num_inference_steps=2, callback_on_step_end=lambda p, s, t, d: {"x0": d["x0"] + 1})
    with pytest.raises(ValueError, match=r"returned 'z_source' of shape \(1, 4\); it must be a tensor of shape"):
        edit(pipe, num_inference_steps=2, callback_on_step_end=lambda p, s, t, d: {"z_source": torch.zeros(1, 4)})
    with pytest.raises(TypeError, match="callback_on_step_end must return a dict or None, got list"):
        edit(pipe, num_inference_steps=2, callback_on_step_end=lambda *_: [])


# ----------------------------------------------------------------------------------------------------------
# published_ore: the published indexing of the substituted base, as a pipeline option.


class RecordingPipeline(ALEEditPipeline):
    """Keeps the conditions of every call of the pipeline's own encode step."""

    def encode_prompt(self, edits, **kwargs):
        conditions = super().encode_prompt(edits, **kwargs)
        self.encoded.append(conditions)
        return conditions


def test_published_ore_changes_only_the_source_and_the_background_embeddings(pipe):
    recording = RecordingPipeline(**pipe.components, requires_safety_checker=False)
    recording.set_progress_bar_config(disable=True)
    recording.encoded = []
    plain_image = edit(recording, objects=3, num_inference_steps=2)
    published_image = edit(recording, objects=3, num_inference_steps=2, published_ore=True)
    plain, published = recording.encoded
    for name in ("uncond", "target", "token_owner"):
        assert torch.equal(getattr(plain, name), getattr(published, name)), name
    assert torch.equal(plain.region_embeds[:-1], published.region_embeds[:-1])  # every object's ORE
    assert not torch.equal(plain.region_embeds[-1], published.region_embeds[-1])  # the background's
    # The source condition differs, and only on the spans of the phrases after the first.
    changed = (plain.source[0] != published.source[0]).any(-1).nonzero().flatten().tolist()
    later_spans = [i for span in plain.prompts.source_spans[1:] for i in span]
    assert changed and set(changed) <= set(later_spans)
    assert not torch.equal(plain_image, published_image)
    assert torch.equal(published_image, edit(pipe, objects=3, num_inference_steps=2, published_ore=True))
