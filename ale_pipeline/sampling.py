"""ALE's sampler pieces: InfEdit's inversion-free DDCM update on an LCM schedule, background blending, and
the self-attention injection schedule (docs/method.md sections 3.5, 3.6 and 3.8).

Kept free of models so that each piece's exact property can be tested on its own: the source branch
reconstructs ``x0`` from any noise, the target branch differs from it only by the noise-prediction difference,
and blending makes the target equal the source on background latents.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .config import DEFAULT_SELF_REPLACE_STEPS, SELF_REPLACE_PRESETS  # noqa: F401  (re-exported)


def lcm_timesteps(num_steps: int = 15, original_steps: int = 50, train_steps: int = 1000) -> list[int]:
    """The LCM scheduler's timesteps: origin steps ``k - 1, 2k - 1, ...`` (``k = train / original``), reversed,
    sampled at ``floor(linspace(0, original, num_steps, endpoint=False))``.

    15 steps give ``[999, 939, 879, 799, 739, 679, 599, 539, 479, 399, 339, 279, 199, 139, 79]``.
    """
    if not 1 <= num_steps <= original_steps:
        raise ValueError(f"num_steps must lie in [1, {original_steps}], got {num_steps}")
    k = train_steps // original_steps
    origin = [k * i - 1 for i in range(1, original_steps + 1)][::-1]
    picks = [math.floor(i * original_steps / num_steps) for i in range(num_steps)]
    return [origin[i] for i in picks]


def injection_schedule(num_steps: int, self_replace_steps: float) -> list[bool]:
    """Whether self-attention Q/K injection is on at each step: ``(step + 1) / num_steps < self_replace_steps``.

    With 15 steps, 0.5 injects steps 0-6, 0.6 steps 0-7 and 1.0 steps 0-13 (the last step is always free).
    """
    if not 0.0 <= self_replace_steps <= 1.0:
        raise ValueError(f"self_replace_steps must lie in [0, 1], got {self_replace_steps}")
    return [(step + 1) / num_steps < self_replace_steps for step in range(num_steps)]


@dataclass
class DDCMOutput:
    """One DDCM step's result: the next latents of both branches and the target's clean-latent estimate."""

    z_source: torch.Tensor
    z_target: torch.Tensor
    x0_target: torch.Tensor


def ddcm_step(
    x0: torch.Tensor,
    z_source: torch.Tensor,
    z_target: torch.Tensor,
    eps_source: torch.Tensor,
    eps_target: torch.Tensor,
    alpha_t: float,
    alpha_next: float,
    noise: torch.Tensor,
    eta: float = 1.0,
) -> DDCMOutput:
    """InfEdit's DDCM update (docs/method.md 3.5), shared noise for both branches.

    Args:
        x0: ``(B, 4, h, w)`` clean latent of the source image.
        z_source, z_target: the branches' current latents.
        eps_source, eps_target: the guided noise predictions of the two branches.
        alpha_t, alpha_next: cumulative alphas at this and the next timestep (equal at the last step).
        noise: fresh ``N(0, I)`` noise shared by the branches.
        eta: DDIM's eta (1 in ALE, which zeroes the direction term).

    The consistency noise ``(z_source - sqrt(a_t) x0) / sqrt(1 - a_t)`` makes the source's clean estimate exactly
    ``x0``; the target's is ``x0`` shifted by the branches' latent difference and noise-prediction difference.
    """
    sqrt_a, sqrt_1ma = math.sqrt(alpha_t), math.sqrt(1.0 - alpha_t)
    eps_cons = (z_source - sqrt_a * x0) / sqrt_1ma
    eps_calibrated = eps_target - eps_source + eps_cons
    x0_target = (z_target - sqrt_1ma * eps_calibrated) / sqrt_a
    sigma_sq = eta * (1.0 - alpha_next)
    direction = math.sqrt(max(1.0 - alpha_next - sigma_sq, 0.0)) * eps_calibrated
    noise_term = math.sqrt(sigma_sq) * noise
    sqrt_a_next = math.sqrt(alpha_next)
    return DDCMOutput(
        z_source=sqrt_a_next * x0 + direction + noise_term,
        z_target=sqrt_a_next * x0_target + direction + noise_term,
        x0_target=x0_target,
    )


def background_blend_mask(foreground: torch.Tensor, latent_size: tuple[int, int]) -> torch.Tensor:
    """Latent pixels that count as foreground for background blending (docs/method.md 3.8).

    The union of the dilated object masks ``foreground`` ``(H, W)`` is resized (nearest) to the latent, and to
    1/2, 1/4 and 1/8 of it and back up; a latent pixel is foreground if any scale says so. The background
    this leaves is conservative: blocks touching an object at a coarse scale stay foreground.

    Returns:
        ``(h, w)`` bool, True on foreground.
    """
    height, width = latent_size
    full = foreground[None, None].float()
    blended = F.interpolate(full, size=(height, width), mode="nearest")
    for factor in (2, 4, 8):
        coarse = F.interpolate(full, size=(max(1, height // factor), max(1, width // factor)), mode="nearest")
        blended = blended + F.interpolate(coarse, size=(height, width), mode="nearest")
    return blended[0, 0] > 0


def blend_background(z_source: torch.Tensor, z_target: torch.Tensor, foreground: torch.Tensor) -> torch.Tensor:
    """``z_target`` with every background latent pixel (all channels) replaced by ``z_source``'s."""
    return torch.where(foreground.to(z_target.device), z_target, z_source)
