"""Installing processors on a UNet and restoring the user's own afterwards, whatever happens in between."""

from __future__ import annotations

from .._checks import check_backend
from .processor import RegionalAttnProcessor


class ProcessorHandle:
    """Restores a model's previous attention processors; usable as a context manager.

    ``remove()`` (or leaving the ``with`` block, also by an exception) puts back exactly the processor objects
    the model had before, so its outputs are bit-identical to a model never touched.
    """

    def __init__(self, model, previous: dict):
        self.model = model
        self._previous = previous

    @property
    def active(self) -> bool:
        return self._previous is not None

    def remove(self) -> None:
        """Put the previous processors back (idempotent)."""
        if self._previous is not None:
            self.model.set_attn_processor(self._previous)
            self._previous = None

    def __enter__(self) -> ProcessorHandle:
        return self

    def __exit__(self, *exc_info) -> None:
        self.remove()


def install_regional_processors(model, backend: str = "auto") -> ProcessorHandle:
    """Put a :class:`RegionalAttnProcessor` on every attention layer of ``model`` (a diffusers model with
    ``attn_processors`` / ``set_attn_processor``, e.g. ``UNet2DConditionModel``).

    Returns a handle that restores the previous processors::

        with install_regional_processors(unet, backend="auto"):
            noise = unet(latents, t, text, cross_attention_kwargs={"regions": spec}).sample
    """
    check_backend(backend)
    if not hasattr(model, "attn_processors") or not hasattr(model, "set_attn_processor"):
        raise TypeError(
            f"model must be a diffusers model with attention processors (e.g. UNet2DConditionModel), "
            f"got {type(model).__name__}"
        )
    previous = dict(model.attn_processors)
    model.set_attn_processor(RegionalAttnProcessor(backend))
    return ProcessorHandle(model, previous)
