"""The sampler's exact properties: LCM timesteps, injection schedule, DDCM identities, background blending."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import LCMScheduler

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
