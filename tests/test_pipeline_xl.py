"""ALEEditXLPipeline on tiny random SDXL components: the SD1.5 pipeline's exact properties, ORE on both
encoders, the pooled embeddings and time ids, the fp16 VAE upcast, and clear errors."""

from __future__ import annotations

import copy
import dataclasses
import inspect

import numpy as np
import pytest
import torch

from ale_pipeline import ALEEditXLPipeline
from ale_pipeline.config import DEFAULTS, SETTINGS, XL_DEFAULTS
from ale_pipeline.tokenizer import BOS_TOKEN, EOS_TOKEN
from tests import test_pipeline as sd
from tests.tiny_models import random_image, tiny_ale_xl_pipeline

# The SD1.5 tests' image, masks and edit helper, and their property tests run on this pipeline below.
EDITS = sd.EDITS[:3]
HEIGHT, WIDTH, image, masks, edit = sd.HEIGHT, sd.WIDTH, sd.image, sd.masks, sd.edit


@pytest.fixture(scope="module")
def pipe():
    return tiny_ale_xl_pipeline()


class UNetCalls:
    """Records the ``added_cond_kwargs`` and text batch of every UNet call while installed."""

    def __init__(self, unet):
        self.calls: list[dict] = []
        self.handle = unet.register_forward_pre_hook(self.record, with_kwargs=True)

    def record(self, _module, args, kwargs):
        self.calls.append({"added": kwargs.get("added_cond_kwargs"), "text": kwargs.get("encoder_hidden_states")})

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.handle.remove()


# ----------------------------------------------------------------------------------------------------------
# The sampler's exact properties, as for SD1.5


def test_switched_off_identity_edit_keeps_the_source_x0_at_every_step(pipe):
    """DDCM's promise x0_target == x0 holds on SDXL only if both branches get the same pooled embedding and
    time ids too; the same edit with another target does move x0_target, so the check can fail."""
    sd.test_switched_off_identity_edit_keeps_the_source_x0_at_every_step(pipe)
    moved = []
    pipe(
        image(), ["couch=>red couch"], masks(1), longest_side=None, num_inference_steps=2, output_type="latent",
        use_ore=False, use_rgb_cam=False, use_background_blend=False, use_qk_injection=False,
        target_guidance_scale=1.5, source_guidance_scale=1.5,
        callback_on_step_end=lambda _p, s, t, x: moved.append((x["x0_target"] - x["x0"].float()).abs().max().item()),
    )  # fmt: skip
    assert max(moved) > 1e-3


def test_background_blending_makes_target_equal_source_on_the_background(pipe):
    sd.test_background_blending_makes_target_equal_source_on_the_background(pipe)


def test_every_attention_backend_gives_the_same_image(pipe):
    sd.test_every_attention_backend_gives_the_same_image(pipe, 3)  # SD1.5's tests cover the other counts


def test_same_seed_same_image_and_other_seed_differs(pipe):
    sd.test_same_seed_same_image_and_other_seed_differs(pipe)


def test_processors_are_restored_after_an_edit_and_after_a_failure(pipe):
    sd.test_processors_are_restored_after_an_edit_and_after_a_failure(pipe)


def half_precision_copy(pipe) -> ALEEditXLPipeline:
    """``pipe`` with copies of its models (its tokenizers shared: building them is the slow part)."""
    models = ("vae", "text_encoder", "text_encoder_2", "unet")
    copies = {name: copy.deepcopy(getattr(pipe, name)) for name in models}
    copied = ALEEditXLPipeline(**{**pipe.components, **copies}, requires_safety_checker=False)
    copied.set_progress_bar_config(disable=True)
    return copied


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_edits_stay_close_to_float32(pipe, dtype):
    from ale_kernels.testing.tolerance import assert_within_perturbation, rounding_perturbation

    pipeline = half_precision_copy(pipe)
    run = lambda: edit(pipeline, objects=2, num_inference_steps=3)  # noqa: E731
    expected = run()
    pipeline.to(dtype=dtype)
    got = run()
    assert torch.isfinite(got).all()
    # As for SD1.5: the float32 edit is the oracle, twice the half edit's one-ulp weight perturbation the bound.
    noise = rounding_perturbation(run, [pipeline.unet, pipeline.vae])
    assert_within_perturbation(got.float(), expected, noise, dtype=dtype, factor=2.0, name=str(dtype))
    # SDXL's VAE says force_upcast: in float16 it ran in float32 (as diffusers' SDXL pipelines do) and is half
    # again.
    assert pipeline.vae.dtype == dtype and pipeline.vae.config.force_upcast


def test_force_upcast_runs_a_float16_vae_in_float32_and_casts_it_back(pipe):
    seen = []
    vae = pipe.vae
    hooks = [
        module.register_forward_pre_hook(lambda m, args: seen.append((m.__class__.__name__, args[0].dtype)))
        for module in (vae.encoder, vae.decoder)
    ]
    try:
        vae.to(dtype=torch.float16)
        edit(pipe, objects=1, num_inference_steps=1)
        assert seen == [("Encoder", torch.float32), ("Decoder", torch.float32)]
        assert vae.dtype == torch.float16
        seen.clear()
        vae.register_to_config(force_upcast=False)  # without the flag the VAE runs in its own dtype
        edit(pipe, objects=1, num_inference_steps=1)
        assert seen == [("Encoder", torch.float16), ("Decoder", torch.float16)]
    finally:
        vae.register_to_config(force_upcast=True)
        vae.to(dtype=torch.float32)
        for hook in hooks:
            hook.remove()


# ----------------------------------------------------------------------------------------------------------
# ORE on both encoders, the pooled embeddings, the time ids


def hidden(encoder, ids: list[list[int]]) -> torch.Tensor:
    """The penultimate hidden states of ``encoder`` for a batch of hand-built id rows: ``(n, 77, C)``."""
    with torch.no_grad():
        return encoder(torch.tensor(ids), output_hidden_states=True).hidden_states[-2]


def padded(tokenizer, text: str, pad: int) -> list[int]:
    """``[BOS, text's ids, EOS, pad...]`` of 77, built by hand, checked against the tokenizer."""
    own = tokenizer(text, add_special_tokens=False).input_ids
    bos, eos = tokenizer.convert_tokens_to_ids([BOS_TOKEN, EOS_TOKEN])
    ids = [bos, *own, eos] + [pad] * (76 - len(own) - 1)
    assert tokenizer(text, padding="max_length", max_length=77).input_ids == ids
    return ids


def test_ore_on_both_encoders_zero_and_substituted_rows(pipe):
    """Each encoder's half of every ORE entry is that encoder's own ORE: BOS, zeros, the phrase's own token rows
    and, from the base's EOS on, the standalone phrase's EOS and padding rows: ``<|endoftext|>`` for the first
    encoder, ``"!"`` (id 0) for the second, whose tokenizer pads with it."""
    conditions = pipe.encode_prompt(EDITS[:2])
    prompts = conditions.prompts
    texts = [prompts.source_prompt, prompts.target_prompt, *prompts.source_phrases, *prompts.target_phrases]
    width = pipe.text_encoder.config.hidden_size
    halves = []
    for encoder, tokenizer, pad in ((pipe.text_encoder, pipe.tokenizer, 49407), (pipe.text_encoder_2,
                                                                              pipe.tokenizer_2, 0)):  # fmt: skip
        halves.append(hidden(encoder, [padded(tokenizer, text, pad) for text in texts]))
    assert pipe.tokenizer_2.pad_token == "!" and pipe.tokenizer_2.pad_token_id == 0
    assert conditions.region_embeds.shape == (3, 77, width + pipe.text_encoder_2.config.hidden_size)
    e_b = prompts.target_eos
    for half, own_encoding, columns in ((0, halves[0], slice(0, width)), (1, halves[1], slice(width, None))):
        target = own_encoding[1]
        assert torch.equal(conditions.target[0][:, columns], target), half
        for k, span in enumerate(prompts.target_spans):
            ore = conditions.region_embeds[k][:, columns]
            own = own_encoding[4 + k]  # the k-th target phrase encoded alone
            assert torch.equal(ore[0], target[0])
            outside = [i for i in range(1, e_b) if i not in span]
            assert outside and not ore[outside].any()
            assert torch.equal(ore[span.start : span.stop], own[1 : 1 + len(span)])
            assert torch.equal(ore[e_b:], own[1 + len(span) : 1 + len(span) + 77 - e_b])
        base = conditions.region_embeds[-1][:, columns]
        for k, span in enumerate(prompts.target_spans):
            assert torch.equal(base[span.start : span.stop], own_encoding[4 + k][1 : 1 + len(span)])
        source = conditions.source[0][:, columns]
        for k, span in enumerate(prompts.source_spans):
            assert torch.equal(source[span.start : span.stop], own_encoding[2 + k][1 : 1 + len(span)])
    # force_zeros_for_empty_prompt (SDXL base's setting): the unconditional text is zeros.
    assert conditions.uncond.shape == (1, 77, 64) and not conditions.uncond.any()


def test_pooled_embeds_come_from_the_base_prompts_and_time_ids_from_the_size(pipe):
    conditions = pipe.encode_prompt(EDITS[:2], size=(48, 64))
    prompts = conditions.prompts
    ids = pipe.tokenizer_2([prompts.source_prompt, prompts.target_prompt, ""], padding="max_length",
                           max_length=77, return_tensors="pt").input_ids  # fmt: skip
    with torch.no_grad():
        pooled = pipe.text_encoder_2(ids).text_embeds
    added = conditions.added
    assert torch.equal(added["source"]["text_embeds"], pooled[0:1])
    assert torch.equal(added["target"]["text_embeds"], pooled[1:2])
    assert not added["uncond"]["text_embeds"].any()  # force_zeros_for_empty_prompt
    for branch in ("uncond", "source", "target"):
        assert added[branch]["time_ids"].tolist() == [[48, 64, 0, 0, 48, 64]]
    assert pipe.encode_prompt(EDITS[:1]).added["source"]["time_ids"].tolist() == [[32, 32, 0, 0, 32, 32]]

    unforced = ALEEditXLPipeline(**pipe.components, force_zeros_for_empty_prompt=False)
    plain = unforced.encode_prompt(EDITS[:2], size=(48, 64))
    assert torch.equal(plain.added["uncond"]["text_embeds"], pooled[2:3])
    assert plain.uncond.any()


def test_the_unet_gets_the_branches_added_conditions_in_batch_order_at_the_image_size(pipe):
    conditions = pipe.encode_prompt(EDITS[:2], size=(40, 56))
    with UNetCalls(pipe.unet) as calls:
        pipe(image(), EDITS[:2], masks(2), longest_side=56, num_inference_steps=2, output_type="latent")
    assert len(calls.calls) == 2
    for call in calls.calls:
        added = call["added"]
        assert added["time_ids"].tolist() == [[40, 56, 0, 0, 40, 56]] * 4  # the edit's size: 56 x 40 px
        pooled = conditions.added
        expected = torch.cat([pooled[b]["text_embeds"] for b in ("uncond", "uncond", "source", "target")])
        assert torch.equal(added["text_embeds"], expected)
        assert torch.equal(call["text"][3], conditions.target[0])
    # The attention-mask pass runs the source branch alone, with its own added conditions.
    with UNetCalls(pipe.unet) as calls:
        pipe.attention_masks(image(), ["couch", "floor"], longest_side=None, num_inference_steps=1)
    (call,) = calls.calls
    assert call["added"]["time_ids"].tolist() == [[HEIGHT, WIDTH, 0, 0, HEIGHT, WIDTH]]
    assert call["added"]["text_embeds"].shape == (1, 32) and call["text"].shape == (1, 77, 64)


# ----------------------------------------------------------------------------------------------------------
# Settings and errors


def test_every_setting_is_a_keyword_with_the_sdxl_default(pipe):
    call = inspect.signature(pipe.__call__).parameters
    for name in SETTINGS:
        assert call[name].default == getattr(XL_DEFAULTS, name), name
    assert call["longest_side"].default == 1024 != DEFAULTS.longest_side
    masks_pass = inspect.signature(pipe.attention_masks).parameters
    assert masks_pass["longest_side"].default == 1024


class Stop(Exception):
    """Raised by a hook to end an edit once the size it runs at is known."""


def edit_size_of(pipe, *args, **kwargs) -> tuple[int, int]:
    """The ``(height, width)`` the VAE encodes for ``pipe(*args, **kwargs)``; the edit is stopped there, before
    any costly work at full size."""
    seen = []

    def stop(_module, inputs):
        seen.append(tuple(inputs[0].shape[-2:]))
        raise Stop

    handle = pipe.vae.encoder.register_forward_pre_hook(stop)
    try:
        with pytest.raises(Stop):
            pipe(*args, **kwargs)
    finally:
        handle.remove()
    return seen[0]


def test_an_explicit_sd15_default_is_not_mistaken_for_the_sdxl_one(pipe):
    """768 is SD1.5's default but not SDXL's: passed explicitly it must win over the 1024 default, and a
    config's size wins over a keyword left at the SDXL default."""
    big, whole = random_image(96, 128), [np.zeros((96, 128), bool)]
    whole[0][30:60, 40:90] = True
    assert edit_size_of(pipe, big, EDITS[:1], whole) == (768, 1024)
    assert edit_size_of(pipe, big, EDITS[:1], whole, longest_side=768) == (576, 768)
    assert edit_size_of(pipe, big, EDITS[:1], whole, config=XL_DEFAULTS.replace(longest_side=32)) == (24, 32)
    pipe.check_inputs(image(), EDITS[:1], masks(1), **dataclasses.asdict(XL_DEFAULTS.replace(longest_side=768)))


def test_tokenizers_that_disagree_are_a_clear_error(pipe):
    from ale_pipeline.tokenizer import build_clip_tokenizer

    other = build_clip_tokenizer()
    other.add_tokens(["couch"])  # the second tokenizer now spells "couch" differently
    mismatched = ALEEditXLPipeline(**{**pipe.components, "tokenizer_2": other})
    with pytest.raises(ValueError, match=r"^edits: the source prompt 'couch' tokenizes differently under tokenizer 2"):
        mismatched.check_inputs(image(), ["couch=>red couch"], masks(1))


def test_a_unet_from_another_checkpoint_is_a_clear_error(pipe):
    from tests.tiny_models import tiny_sdxl_unet

    wrong = tiny_sdxl_unet()
    wrong.register_to_config(addition_time_embed_dim=4)  # 6 time ids x 4 + 32 pooled != the UNet's 80 inputs
    with pytest.raises(ValueError, match=r"the UNet's added embedding takes 80 channels.*not from the same SDXL"):
        ALEEditXLPipeline(**{**pipe.components, "unet": wrong}).encode_prompt(EDITS[:1])


def test_too_long_prompts_name_the_edits(pipe):
    with pytest.raises(ValueError, match=r"^edits: the source prompt .* more than the text encoder's 77"):
        pipe(image(), [("red " * 80 + "couch", "couch")], masks(1))


# ----------------------------------------------------------------------------------------------------------
# ale-edit --model: the pipeline picked from model_index.json


def cli_files(tmp_path):
    from PIL import Image

    Image.fromarray(image()).save(tmp_path / "room.png")
    for k, m in enumerate(masks(2)):
        Image.fromarray(m.astype(np.uint8) * 255).save(tmp_path / f"mask{k}.png")
    return ["room.png", "--edit", EDITS[0], "--mask", "mask0.png", "--edit", EDITS[1], "--mask", "mask1.png"]


def test_ale_edit_loads_a_saved_tiny_sdxl_folder_and_says_which_pipeline(pipe, tmp_path, capsys, monkeypatch):
    from PIL import Image

    from ale_pipeline.cli import main
    from ale_pipeline.commands import is_sdxl_checkpoint

    monkeypatch.chdir(tmp_path)
    pipe.save_pretrained(tmp_path / "model")
    assert is_sdxl_checkpoint(str(tmp_path / "model"))
    args = [*cli_files(tmp_path), "--out", "edited.png", "--model", str(tmp_path / "model"), "--device", "cpu"]
    assert main([*args, "--steps", "2", "--longest-side", "64"]) == 0
    out = capsys.readouterr().out
    assert (
        "is an SDXL-family checkpoint (text_encoder_2 in its model_index.json): editing with ALEEditXLPipeline" in out
    )
    with Image.open(tmp_path / "edited.png") as edited:
        assert edited.size == (WIDTH, HEIGHT)
    # An SD1.5 folder is not taken for SDXL.
    from tests.tiny_models import tiny_ale_pipeline

    tiny_ale_pipeline().save_pretrained(tmp_path / "sd15")
    assert not is_sdxl_checkpoint(str(tmp_path / "sd15"))


def test_ale_edit_takes_the_sdxl_default_size_unless_given(tmp_path, monkeypatch):
    from ale_pipeline.cli import main

    monkeypatch.chdir(tmp_path)
    seen = []

    class Recording:
        defaults = XL_DEFAULTS

        def __call__(self, *args, **kwargs):
            seen.append(kwargs["longest_side"])
            raise ValueError("stop here")

    args = [*cli_files(tmp_path), "--out", "edited.png"]
    assert main(args, load_pipeline=lambda *_: Recording()) == 2
    assert main([*args, "--longest-side", "768"], load_pipeline=lambda *_: Recording()) == 2
    assert main([*args, "--longest-side=512"], load_pipeline=lambda *_: Recording()) == 2
    assert seen == [1024, 768, 512]


# ----------------------------------------------------------------------------------------------------------
# The random SDXL models the benchmarks and the fallback use


def test_random_sdxl_kinds_load_and_the_full_size_unet_is_sdxl_bases_shape(pipe):
    from diffusers.models.attention_processor import Attention

    from ale_pipeline.commands import RANDOM_KINDS
    from ale_pipeline.random_model import random_sdxl_shaped_unet

    assert isinstance(pipe, ALEEditXLPipeline) and pipe.random_kind == "tiny-xl"
    assert {"sdxl", "sdxl-shaped", "tiny-xl"} <= set(RANDOM_KINDS)
    with torch.device("meta"):  # shapes only: no 10 GB of weights
        unet = random_sdxl_shaped_unet("sdxl")
    assert sum(p.numel() for p in unet.parameters()) == 2_567_463_684  # SDXL base 1.0's UNet
    assert unet.add_embedding.linear_1.in_features == 1280 + 6 * 256 and unet.config.cross_attention_dim == 2048
    layers = [m for m in unet.modules() if isinstance(m, Attention)]
    assert len(layers) == 140  # 70 transformer blocks, a self- and a cross-attention each
    assert {(m.heads, m.inner_dim // m.heads) for m in layers} == {(10, 64), (20, 64)}
