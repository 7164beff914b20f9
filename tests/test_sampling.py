"""The sampler's exact properties: LCM timesteps, injection schedule, DDCM identities, background blending."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import LCMScheduler

from ale_pipeline.ddcm_loop import BranchTexts, LoopState, ddcm_loop
from ale_pipeline.sampling import (
    SELF_REPLACE_PRESETS,
    background_blend_mask,
    blend_background,
    ddcm_step,
    injection_schedule,
    lcm_timesteps,
)

PUBLISHED_TIMESTEPS = [999, 939, 879, 799, 739, 679, 599, 539, 479, 399, 339, 279, 199, 139, 79]


def test_lcm_timesteps_match_the_published_schedule_and_diffusers():
    assert lcm_timesteps(15) == PUBLISHED_TIMESTEPS
    scheduler = LCMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    for steps in (1, 4, 8, 15, 50):
        scheduler.set_timesteps(steps, original_inference_steps=50)
        assert lcm_timesteps(steps) == scheduler.timesteps.tolist()


@pytest.mark.parametrize("replace, injected", [(0.5, 7), (0.6, 8), (1.0, 14), (0.0, 0)])
def test_injection_schedule_counts(replace, injected):
    schedule = injection_schedule(15, replace)
    assert sum(schedule) == injected and schedule[:injected] == [True] * injected
    assert not schedule[-1]  # the last step is always free


def test_presets_are_the_published_ones():
    assert SELF_REPLACE_PRESETS == {
        "color": 1.0, "object": 0.5, "material": 0.6, "color+object": 0.5, "object+material": 0.5,
    }  # fmt: skip


def _random_state(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(1, 4, 6, 5, generator=g, dtype=torch.float64) for _ in range(6)]


def test_source_branch_reconstructs_x0_from_any_noise():
    x0, z_src, z_tgt, eps_src, eps_tgt, noise = _random_state()
    out = ddcm_step(x0, z_src, z_tgt, eps_src, eps_tgt, 0.3, 0.6, noise)
    torch.testing.assert_close(out.z_source, math.sqrt(0.6) * x0 + math.sqrt(0.4) * noise)


def test_equal_branches_and_equal_predictions_give_the_source_x0():
    x0, z_src, _, eps_src, _, noise = _random_state(1)
    out = ddcm_step(x0, z_src, z_src.clone(), eps_src, eps_src.clone(), 0.2, 0.5, noise)
    torch.testing.assert_close(out.x0_target, x0)
    torch.testing.assert_close(out.z_target, out.z_source)


def test_target_x0_has_both_published_forms():
    x0, z_src, z_tgt, eps_src, eps_tgt, noise = _random_state(2)
    a = 0.35
    out = ddcm_step(x0, z_src, z_tgt, eps_src, eps_tgt, a, 0.7, noise)
    # docs/method.md 3.5 as published: through the consistency noise that explains z_src from x0.
    eps_cons = (z_src - math.sqrt(a) * x0) / math.sqrt(1 - a)
    published = (z_tgt - math.sqrt(1 - a) * (eps_tgt - eps_src + eps_cons)) / math.sqrt(a)
    torch.testing.assert_close(out.x0_target, published)
    # The same, rewritten as x0 shifted by the branches' latent and noise-prediction differences.
    shifted = x0 + ((z_tgt - z_src) - math.sqrt(1 - a) * (eps_tgt - eps_src)) / math.sqrt(a)
    torch.testing.assert_close(out.x0_target, shifted)


def test_background_blend_mask_is_a_multi_scale_block_dilation():
    foreground = torch.zeros(64, 48, dtype=torch.bool)
    foreground[20:30, 10:20] = True
    mask = background_blend_mask(foreground, (16, 12))
    nearest = torch.nn.functional.interpolate(foreground[None, None].float(), size=(16, 12))[0, 0] > 0
    assert mask.shape == (16, 12) and (mask >= nearest).all() and mask.sum() > nearest.sum()
    assert not mask[0, 0] and not mask[-1, -1]  # far corners stay background
    assert not background_blend_mask(torch.zeros(64, 48, dtype=torch.bool), (16, 12)).any()


def test_blending_makes_the_target_equal_the_source_on_the_background():
    _, z_src, z_tgt, *_ = _random_state(3)
    foreground = torch.zeros(6, 5, dtype=torch.bool)
    foreground[2:4, 1:3] = True
    blended = blend_background(z_src, z_tgt, foreground)
    assert torch.equal(blended[..., ~foreground], z_src[..., ~foreground])
    assert torch.equal(blended[..., foreground], z_tgt[..., foreground])


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_steps must lie in"):
        lcm_timesteps(0)
    with pytest.raises(ValueError, match="self_replace_steps must lie in"):
        injection_schedule(15, 1.5)


# ----------------------------------------------------------------------------------------------------------
# The one loop, on a stand-in UNet whose predictions are random: the source branch never depends on them.


class RandomUNet:
    """A UNet stand-in: random noise predictions, and the processor hooks the loop installs into."""

    attn_processors: dict = {}  # noqa: RUF012

    def __init__(self, seed: int):
        self.generator = torch.Generator().manual_seed(seed)
        self.batches: list[int] = []

    def set_attn_processor(self, processors) -> None:
        pass

    def __call__(self, latents, t, encoder_hidden_states, cross_attention_kwargs=None):
        self.batches.append(latents.shape[0])
        sample = torch.randn(latents.shape, generator=self.generator)
        return type("Output", (), {"sample": sample})()


def _loop(unet, target: bool, guidance: float = 1.0, **kwargs) -> LoopState:
    g = torch.Generator().manual_seed(0)
    x0, start = torch.randn(1, 4, 6, 5, generator=g), torch.randn(1, 4, 6, 5, generator=g)
    text = torch.randn(3, 1, 7, 8, generator=g)
    state = LoopState(x0=x0, z_source=start)
    if target:
        state = LoopState(x0=x0, z_source=start, z_target=start.clone(), foreground=torch.rand(6, 5, generator=g) > 0.5)
    texts = BranchTexts(text[0], text[1], text[2] if target else None)
    alphas = torch.linspace(0.999, 0.01, 1000, dtype=torch.float64)
    return ddcm_loop(
        unet, alphas, lcm_timesteps(4), state, texts, torch.Generator().manual_seed(5),
        source_guidance_scale=guidance, target_guidance_scale=2.0, blend_background_from=1 if target else None,
        **kwargs,
    )  # fmt: skip


@pytest.mark.parametrize("guidance", [1.0, 1.5])
def test_the_loop_walks_the_same_source_latents_with_or_without_the_target_branch(guidance):
    seen = {True: [], False: []}
    for target in (True, False):
        unet = RandomUNet(seed=int(target))
        _loop(unet, target, guidance, on_step_end=lambda step, t, d, target=target: seen[target].append(d["z_source"]))
        assert unet.batches == [4] * 4 if target else [1 if guidance == 1.0 else 2] * 4
    assert len(seen[True]) == 4 and all(torch.equal(a, b) for a, b in zip(seen[True], seen[False], strict=True))


def test_the_loop_takes_what_the_callback_returns():
    expected = _loop(RandomUNet(1), True).x0_target
    assert torch.equal(_loop(RandomUNet(1), True, on_step_end=lambda *_: {}).x0_target, expected)
    assert torch.equal(_loop(RandomUNet(1), True, on_step_end=lambda s, t, d: d).x0_target, expected)

    def shift(step, t, tensors):
        return {"z_target": tensors["z_target"] + 1} if step == 2 else None

    # The last step's target estimate is linear in z_target: it moves by the shift over sqrt(alpha_t).
    alpha_last = 0.999 + (0.01 - 0.999) * lcm_timesteps(4)[-1] / 999
    moved = _loop(RandomUNet(1), True, on_step_end=shift).x0_target - expected
    torch.testing.assert_close(moved, torch.full_like(moved, 1 / math.sqrt(alpha_last)))
    with pytest.raises(ValueError, match=r"returned 'z_target', which cannot replace the loop's state; .* z_source"):
        _loop(RandomUNet(1), False, on_step_end=lambda s, t, d: {"z_target": d["z_source"]})
    seen = []
    _loop(RandomUNet(1), True, tensor_inputs=["x0_target"], on_step_end=lambda s, t, d: seen.append(set(d)))
    assert seen == [{"x0_target"}] * 4
    stopped = RandomUNet(1)
    _loop(stopped, False, num_steps=2)
    assert stopped.batches == [1, 1]
