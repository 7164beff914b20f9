"""The edit's DDCM wiring checked against the formula of docs/method.md section 3.5, through the pipeline's loop.

The UNet's forward is wrapped to record what each step feeds it and what it predicts; the step-end callback
gives the loop's results. Source and target phrases differ and so do the two guidance scales, so every
noise prediction of the 4-entry batch is distinct: taking one branch's prediction for the other's, or one
guidance scale for the other, moves ``x0_target``.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from ale_kernels.testing.tolerance import assert_close_to_oracle
from tests.tiny_models import random_image, tiny_ale_pipeline

HEIGHT, WIDTH = 48, 64
EDITS = ["couch=>crimson-colored couch", "floor=>floor made of marble"]
SOURCE_SCALE, TARGET_SCALE = 1.5, 3.0
STEPS = 4


def boxes() -> list[np.ndarray]:
    out = []
    for k in range(len(EDITS)):
        m = np.zeros((HEIGHT, WIDTH), dtype=bool)
        m[6 + 5 * k : 24 + 5 * k, 6 + 9 * k : 22 + 9 * k] = True
        out.append(m)
    return out


@pytest.fixture(scope="module")
def recorded():
    """One edit's per-step UNet inputs, predictions and callback tensors, the pipeline's alphas, the UNet's
    text batches, and the pipeline."""
    pipe = tiny_ale_pipeline()
    unet_calls, step_ends, texts = [], [], []
    forward = pipe.unet.forward

    def recording_forward(sample, timestep, *args, **kwargs):
        out = forward(sample, timestep, *args, **kwargs)
        unet_calls.append((sample.detach().clone(), int(timestep), out.sample.detach().float().clone()))
        texts.append(kwargs["encoder_hidden_states"].detach().clone())
        return out

    def on_step_end(_pipe, step, t, tensors):
        step_ends.append((step, int(t), {name: value.detach().clone() for name, value in tensors.items()}))

    pipe.unet.forward = recording_forward
    try:
        pipe(
            random_image(HEIGHT, WIDTH), EDITS, boxes(), longest_side=None, num_inference_steps=STEPS,
            output_type="latent", seed=0, source_guidance_scale=SOURCE_SCALE, target_guidance_scale=TARGET_SCALE,
            callback_on_step_end=on_step_end,
        )  # fmt: skip
    finally:
        del pipe.unet.forward  # back to the class's forward
    return unet_calls, step_ends, pipe.scheduler.alphas_cumprod, texts, pipe


def x0_target_formula(x0, z_src, z_tgt, e_su, e_tu, e_sc, e_tc, alpha_t):
    """docs/method.md 3.5: guided predictions, the consistency noise, then ``x0_tgt``."""
    e_s = e_su + SOURCE_SCALE * (e_sc - e_su)
    e_t = e_tu + TARGET_SCALE * (e_tc - e_tu)
    e_cons = (z_src - math.sqrt(alpha_t) * x0) / math.sqrt(1 - alpha_t)
    return (z_tgt - math.sqrt(1 - alpha_t) * (e_t - e_s + e_cons)) / math.sqrt(alpha_t)


@pytest.mark.parametrize("step", [0, 2])
def test_ddcm_step_follows_the_published_formula(recorded, step):
    unet_calls, step_ends, alphas, _, _ = recorded
    assert len(unet_calls) == len(step_ends) == STEPS
    sample, t, prediction = unet_calls[step]
    _, t_end, tensors = step_ends[step]
    assert t == t_end
    z_src, z_tgt, z_src_again, z_tgt_again = sample.chunk(4)
    assert torch.equal(z_src, z_src_again) and torch.equal(z_tgt, z_tgt_again)
    if step > 0:  # the latents fed to this step are the previous step's results
        previous = step_ends[step - 1][2]
        assert torch.equal(z_src, previous["z_source"]) and torch.equal(z_tgt, previous["z_target"])
    e_su, e_tu, e_sc, e_tc = prediction.chunk(4)
    # The conditional predictions differ between branches and from the unconditional ones (at step 0 the
    # branches' latents and empty texts agree, so only there e_su == e_tu), so a swap cannot go unnoticed.
    pairs = [(e_sc, e_tc), (e_su, e_sc), (e_tu, e_tc)] + ([(e_su, e_tu)] if step > 0 else [])
    assert min(float((a - b).abs().max()) for a, b in pairs) > 1e-3
    x0, alpha_t = tensors["x0"].float(), float(alphas[t])
    args = (x0, z_src.float(), z_tgt.float(), e_su, e_tu, e_sc, e_tc)
    expected = x0_target_formula(*args, alpha_t)
    oracle = x0_target_formula(*(a.double() for a in args), alpha_t)
    assert_close_to_oracle(tensors["x0_target"], expected, oracle, name=f"x0_target at step {step}")

    # z_tgt - z_src = sqrt(a_p) (x0_tgt - x0): the shared noise cancels (eta = 1: no direction term). Blending
    # (from step 1) replaces the target's background, so compare on the foreground there.
    alpha_next = float(alphas[step_ends[step + 1][1]])
    keep = torch.ones_like(tensors["foreground"]) if step == 0 else tensors["foreground"]
    got = (tensors["z_target"].double() - tensors["z_source"].double())[..., keep]
    shift = math.sqrt(alpha_next) * (tensors["x0_target"].double() - x0.double())[..., keep]
    scale = max(float(tensors["z_source"].abs().max()), float(tensors["z_target"].abs().max()), 1.0)
    # Only the update's own float32 roundings (a few ulps of the latents) separate the two sides.
    assert (got - shift).abs().max() <= 16 * torch.finfo(torch.float32).eps * scale
    assert keep.any() and shift.abs().max() > 1e-2  # the branches really differ there


def test_blending_keeps_the_objects_and_frees_the_far_background(recorded):
    """The loop's ``foreground`` (what blending leaves to the target) covers each object's box and leaves the
    corner far from every box to the source: a mask of the background instead would swap the two."""
    _, step_ends, _, _, _ = recorded
    foreground = step_ends[0][2]["foreground"]
    latent_per_pixel = foreground.shape[0] / HEIGHT
    assert foreground.shape[1] / WIDTH == latent_per_pixel
    for box in boxes():
        rows, cols = box.nonzero()
        centre = (int(rows.mean() * latent_per_pixel), int(cols.mean() * latent_per_pixel))
        assert foreground[centre]
    assert not foreground[-1, -1]
    assert all(torch.equal(tensors["foreground"], foreground) for _, _, tensors in step_ends)


def _encode(text_encoder, tokenizer, text: str) -> torch.Tensor:
    """``E(text)`` ``(1, 77, C)``: CLIP's last hidden state of the text padded to 77 tokens."""
    ids = tokenizer([text], padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        return text_encoder(ids)[0]


def test_unet_batch_texts_are_empty_empty_source_target(recorded):
    """Each step's text batch is ``[E(""), E(""), source condition, E(P_tgt)]`` (docs/method.md 3.5)."""
    *_, texts, pipe = recorded
    target_prompt = " and ".join(edit.split("=>")[1] for edit in EDITS)
    twin = copy.deepcopy(pipe.text_encoder).double()
    for text in texts:
        for entry, prompt in ((0, ""), (1, ""), (3, target_prompt)):
            expected = _encode(pipe.text_encoder, pipe.tokenizer, prompt)
            oracle = _encode(twin, pipe.tokenizer, prompt)
            assert_close_to_oracle(text[entry : entry + 1], expected, oracle, name=f"text entry {entry}")
        assert (text[2] - text[3]).abs().max() > 1e-2  # the source branch's own condition
