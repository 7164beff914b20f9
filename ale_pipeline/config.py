"""The edit's settings and their published defaults, in one place.

Everything that reads a default (the pipeline, ``ale-edit``, ``ale-bench run``, the demo, the attention-mask
pass) reads it from here. This module imports nothing heavy, so a command's ``--help`` can show the defaults
without loading torch or diffusers.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

#: The published checkpoint: an SD1.5-architecture latent consistency model.
DEFAULT_MODEL = "SimianLuo/LCM_Dreamshaper_v7"

#: ``self_replace_steps`` per ALE-Bench edit type (the published per-type presets); anything else uses 1.0.
SELF_REPLACE_PRESETS = {
    "color": 1.0,
    "object": 0.5,
    "material": 0.6,
    "color+object": 0.5,
    "object+material": 0.5,
}
#: Without an edit type: the published demo's value.
DEFAULT_SELF_REPLACE_STEPS = 0.5
#: ALE-Bench's fallback for an edit type it does not know.
UNKNOWN_TYPE_SELF_REPLACE_STEPS = 1.0

#: The attention-mask pass: the layers at 1/2 and 1/4 of the latent, cut at half the stretched map.
DEFAULT_MASK_RESOLUTIONS = (2, 4)
DEFAULT_MASK_THRESHOLD = 0.5

#: What ``ALEEditPipeline(..., output_type=...)`` can return.
OUTPUT_TYPES = ("pil", "np", "pt", "latent")


@dataclass(frozen=True)
class EditConfig:
    """One edit's settings; each default is the published one.

    Attributes:
        num_inference_steps: LCM steps (15).
        target_guidance_scale: classifier-free guidance of the target branch (2).
        source_guidance_scale: guidance of the source branch (1: the conditional entry alone).
        self_replace_steps: fraction of the steps with self-attention Q/K injection; ``None`` takes the
            ``edit_type`` preset, or 0.5 without one.
        edit_type: an ALE-Bench edit type (``color``, ``object``, ``material``, ``color+object``,
            ``object+material``) whose injection preset applies.
        mask_value: RGB-CAM's additive token mask (-100 as published; ``-inf`` restricts exactly).
        dilation: mask dilation radius as a fraction of the image height (0.04: 30 px at 768).
        longest_side: the image's longest side after resizing (768; aspect kept, multiples of 8); ``None``
            keeps the size.
        seed: the random seed (42).
        attention_backend: ``auto``, ``torch``, ``triton``, ``cpp`` or ``reference`` (the published,
            materialised math).
        use_ore, use_rgb_cam, use_background_blend, use_qk_injection: the paper's ablation switches.
        published_ore: reproduce the published code's indexing of the substituted base embedding (phrases
            after the first copy the rows at their base-prompt positions of their standalone encoding).
    """

    num_inference_steps: int = 15
    target_guidance_scale: float = 2.0
    source_guidance_scale: float = 1.0
    self_replace_steps: float | None = None
    edit_type: str | None = None
    mask_value: float = -100.0
    dilation: float = 0.04
    longest_side: int | None = 768
    seed: int | None = 42
    attention_backend: str = "auto"
    use_ore: bool = True
    use_rgb_cam: bool = True
    use_background_blend: bool = True
    use_qk_injection: bool = True
    published_ore: bool = False

    @property
    def injection_fraction(self) -> float:
        """``self_replace_steps``, or the ``edit_type`` preset, or the default."""
        if self.self_replace_steps is not None:
            return self.self_replace_steps
        return SELF_REPLACE_PRESETS.get(self.edit_type, DEFAULT_SELF_REPLACE_STEPS)

    def replace(self, **changes) -> EditConfig:
        """A copy with ``changes`` applied; an unknown name is a ``TypeError`` that names it."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise TypeError(f"unknown edit setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return replace(self, **changes)


DEFAULTS = EditConfig()
#: The names of :class:`EditConfig`'s fields: every one is also a keyword of the pipeline's calls.
SETTINGS = tuple(f.name for f in fields(EditConfig))

#: ``ALEEditXLPipeline``'s defaults (docs/method.md, SDXL): the published ones but the size. SDXL was trained
#: at 1024 px (its time ids say so) and degrades well below it; steps, guidance and the injection presets are
#: fractions of the same 50-step LCM schedule and of the same DDCM update, so they carry over unchanged.
XL_DEFAULTS = DEFAULTS.replace(longest_side=1024)


def resolve_config(config: EditConfig | None = None, *, defaults: EditConfig = DEFAULTS, **settings) -> EditConfig:
    """The settings of one call: ``config`` (default ``defaults``, the published :data:`DEFAULTS`) with every
    keyword of ``settings`` whose value differs from its default in ``defaults`` applied on top.

    A pipeline's keywords carry its defaults, so a keyword still at its default cannot be told from one left
    out; it then yields to ``config``. An unknown name is a ``TypeError``; a ``config`` that is not an
    :class:`EditConfig` is a ``TypeError`` too.
    """
    if config is None:
        config = defaults
    elif not isinstance(config, EditConfig):
        raise TypeError(f"config must be an ale_pipeline.config.EditConfig, got {type(config).__name__}")
    changed = {name: value for name, value in settings.items() if not _is_default(name, value, defaults)}
    return config.replace(**changed)


def _is_default(name: str, value: object, defaults: EditConfig) -> bool:
    if not hasattr(defaults, name):
        return False  # left for replace() to reject by name
    default = getattr(defaults, name)
    # Identity first: None and bools must not compare equal to 0/1 by value.
    return value is default or (type(value) is type(default) and value == default)
