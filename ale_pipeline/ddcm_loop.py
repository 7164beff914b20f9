"""The one DDCM sampling loop: the edit and the attention-mask pass both run it (docs/method.md section 3.5).

The edit runs both branches on ALE's 4-entry UNet batch ``[src_uncond, tgt_uncond, src_cond, tgt_cond]``; the
attention-mask pass runs the source branch alone (``[src_cond]``, or ``[src_uncond, src_cond]`` when the
source is guided). Each step draws exactly one noise tensor from the generator, whichever branches run, and
the source branch's update does not depend on the UNet at all (eta = 1 zeroes its direction term). So a pass
that starts from the same generator state walks through bit-identical source latents: no bookkeeping keeps
the two in step.

After each step ``on_step_end(step, timestep, tensors)`` may return a dict whose entries replace the loop's
state, as diffusers' ``callback_on_step_end`` does (see :data:`WRITABLE`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch

from ale_kernels.diffusers import install_regional_processors

from .sampling import blend_background, ddcm_step

#: Every tensor a step-end callback can ask for (``callback_on_step_end_tensor_inputs``). ``x0``: the source
#: image's clean latent (``x0_source`` is the same tensor); ``x0_target``: the target branch's clean estimate
#: (the edit's result after the last step); ``z_source`` / ``z_target``: the branches' latents for the next
#: step (after background blending); ``foreground``: ``(h, w)`` bool, the latent pixels blending leaves alone.
TENSOR_INPUTS = ("x0", "x0_source", "x0_target", "z_source", "z_target", "foreground")
#: The entries a callback's returned dict may replace.
WRITABLE = ("z_source", "z_target", "x0_target")
#: What the source-only pass has (no target branch, no blending).
SOURCE_ONLY_TENSOR_INPUTS = ("x0", "x0_source", "z_source")

StepEnd = Callable[[int, int, dict], "dict | None"]


@dataclass(frozen=True)
class BranchTexts:
    """The text conditions of the branches that run, each ``(1, S, C)`` on the UNet's device and dtype.

    ``target`` None runs the source branch alone. ``added``: SDXL's ``added_cond_kwargs`` per branch, a dict
    with the keys ``uncond``, ``source`` (and ``target``), each a dict of ``(1, ...)`` tensors (``text_embeds``,
    ``time_ids``); None for a UNet without added conditioning.
    """

    uncond: torch.Tensor
    source: torch.Tensor
    target: torch.Tensor | None = None
    added: dict[str, dict[str, torch.Tensor]] | None = None

    @property
    def runs_target(self) -> bool:
        return self.target is not None

    def batch(self, source_guidance_scale: float) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
        """The UNet's ``encoder_hidden_states`` for the branches that run, and its ``added_cond_kwargs`` in the
        same batch order (None without ``added``)."""
        if self.runs_target:
            entries = ("uncond", "uncond", "source", "target")
        elif self.source_cond_entry(source_guidance_scale) == 1:
            entries = ("uncond", "source")
        else:
            entries = ("source",)
        text = torch.cat([getattr(self, name) for name in entries])
        if self.added is None:
            return text, None
        keys = self.added["source"]
        return text, {key: torch.cat([self.added[name][key] for name in entries]) for key in keys}

    def source_cond_entry(self, source_guidance_scale: float) -> int:
        """The UNet batch entry of the source branch's conditional prediction (where a probe listens)."""
        if self.runs_target:
            return 2
        return 1 if source_guidance_scale != 1.0 else 0


@dataclass
class LoopState:
    """The loop's tensors; ``(1, 4, h, w)`` latents, ``x0_target`` in float32.

    ``z_target``, ``x0_target`` and ``foreground`` are None in a source-only pass (``x0_target`` also before
    the first step). ``foreground`` is ``(h, w)`` bool.
    """

    x0: torch.Tensor
    z_source: torch.Tensor
    z_target: torch.Tensor | None = None
    x0_target: torch.Tensor | None = None
    foreground: torch.Tensor | None = None

    def available(self) -> tuple[str, ...]:
        """The names of :data:`TENSOR_INPUTS` this pass has."""
        return TENSOR_INPUTS if self.z_target is not None else SOURCE_ONLY_TENSOR_INPUTS

    def tensors(self, names: Sequence[str]) -> dict[str, torch.Tensor]:
        values = dict(
            x0=self.x0, x0_source=self.x0, x0_target=self.x0_target, z_source=self.z_source,
            z_target=self.z_target, foreground=self.foreground,
        )  # fmt: skip
        return {name: values[name] for name in names}

    def update(self, returned: object, offered: dict[str, torch.Tensor]) -> None:
        """Apply a callback's returned dict: each :data:`WRITABLE` entry replaces the state's tensor (cast to its
        dtype and device, shape unchanged); read-only entries may only come back as the tensors offered."""
        if returned is None:
            return
        if not isinstance(returned, dict):
            raise TypeError(f"callback_on_step_end must return a dict or None, got {type(returned).__name__}")
        writable = [name for name in WRITABLE if name in self.available()]
        for name, value in returned.items():
            if name in writable:
                current = getattr(self, name)
                if not isinstance(value, torch.Tensor) or value.shape != current.shape:
                    got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                    raise ValueError(
                        f"callback_on_step_end returned {name!r} of shape {got}; it must be a tensor of shape "
                        f"{tuple(current.shape)}"
                    )
                setattr(self, name, value.to(current.device, current.dtype))
            elif name in offered and value is offered[name]:
                continue  # handed back as received (``return callback_kwargs``): nothing to replace
            else:
                raise ValueError(
                    f"callback_on_step_end returned {name!r}, which cannot replace the loop's state; it may "
                    f"return {', '.join(writable)} (or None)"
                )


def ddcm_loop(
    unet,
    alphas_cumprod: torch.Tensor,
    timesteps: Sequence[int],
    state: LoopState,
    texts: BranchTexts,
    generator: torch.Generator,
    *,
    source_guidance_scale: float,
    target_guidance_scale: float = 1.0,
    attention_backend: str = "auto",
    attention_kwargs: Callable[[int], dict] | None = None,
    blend_background_from: int | None = None,
    on_step_end: StepEnd | None = None,
    tensor_inputs: Sequence[str] | None = None,
    num_steps: int | None = None,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> LoopState:
    """Run InfEdit's inversion-free DDCM sampling on ``unet`` with :mod:`ale_kernels`' processors installed.

    Args:
        unet: a diffusers ``UNet2DConditionModel``.
        alphas_cumprod: the scheduler's cumulative alphas, indexed by timestep.
        timesteps: the schedule (e.g. :func:`~ale_pipeline.sampling.lcm_timesteps`).
        state: ``x0`` and the start latent ``z_source``; with ``texts.target`` also ``z_target`` (the edit
            starts it equal to ``z_source``) and ``foreground``. Updated in place and returned.
        texts: the conditions of the branches that run.
        generator: one ``N(0, I)`` draw of ``x0``'s shape per step, on the generator's device.
        source_guidance_scale, target_guidance_scale: classifier-free guidance per branch.
        attention_backend: the processors' backend.
        attention_kwargs: ``step -> cross_attention_kwargs`` (regions, Q/K injection, probes).
        blend_background_from: from this step on, ``z_target`` takes ``z_source`` outside ``foreground``
            (ALE: 1); None: no blending.
        on_step_end: ``(step, timestep, tensors) -> dict | None`` after each step, ``tensors`` holding the
            names in ``tensor_inputs`` (default all this pass has); see :meth:`LoopState.update`.
        num_steps: stop after this many steps (default the whole schedule).
        progress: wraps the steps' iterable (a progress bar).
    """
    device, dtype = state.x0.device, state.z_source.dtype
    schedule = list(timesteps)
    steps = schedule[: len(schedule) if num_steps is None else num_steps]
    names = state.available() if tensor_inputs is None else tuple(tensor_inputs)
    text, added = texts.batch(source_guidance_scale)
    # Only an SDXL-family UNet takes added conditions; any other callable UNet keeps diffusers' plain signature.
    extra = {} if added is None else {"added_cond_kwargs": added}
    x0 = state.x0.float()
    with install_regional_processors(unet, backend=attention_backend):
        for step, t in enumerate(steps if progress is None else progress(steps)):
            if texts.runs_target:
                latents = torch.cat([state.z_source, state.z_target, state.z_source, state.z_target])
            else:
                latents = state.z_source.expand(text.shape[0], -1, -1, -1)
            kwargs = attention_kwargs(step) if attention_kwargs is not None else None
            noise_pred = unet(
                latents, t, encoder_hidden_states=text, cross_attention_kwargs=kwargs, **extra
            ).sample.float()
            alpha_t = float(alphas_cumprod[t])
            alpha_next = float(alphas_cumprod[schedule[step + 1]]) if step + 1 < len(schedule) else alpha_t
            noise = torch.randn(x0.shape, generator=generator, device=generator.device, dtype=torch.float32)
            noise = noise.to(device)
            if texts.runs_target:
                e_su, e_tu, e_sc, e_tc = noise_pred.chunk(4)
                eps_source = e_su + source_guidance_scale * (e_sc - e_su)
                eps_target = e_tu + target_guidance_scale * (e_tc - e_tu)
                out = ddcm_step(
                    x0, state.z_source.float(), state.z_target.float(), eps_source, eps_target, alpha_t, alpha_next,
                    noise,
                )  # fmt: skip
                state.x0_target = out.x0_target
                state.z_source, state.z_target = out.z_source.to(dtype), out.z_target.to(dtype)
                if blend_background_from is not None and step >= blend_background_from:
                    state.z_target = blend_background(state.z_source, state.z_target, state.foreground)
            else:
                eps = noise_pred
                if text.shape[0] == 2:
                    eps = eps[:1] + source_guidance_scale * (eps[1:] - eps[:1])
                z = state.z_source.float()
                state.z_source = ddcm_step(x0, z, z, eps, eps, alpha_t, alpha_next, noise).z_source.to(dtype)
            if on_step_end is not None:
                offered = state.tensors(names)
                state.update(on_step_end(step, t, offered), offered)
    return state
