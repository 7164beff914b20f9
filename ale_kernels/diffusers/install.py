"""Installing processors on a UNet and restoring the user's own afterwards, whatever happens in between."""

from __future__ import annotations

from .._checks import check_backend
from .processor import RegionalAttnProcessor, pop_default_backend, push_default_backend


class ProcessorHandle:
    """Restores a model's previous attention processors; usable as a context manager.

    ``remove()`` (or leaving the ``with`` block, also by an exception) puts back exactly the processor objects
    the model had before, so its outputs are bit-identical to a model never touched.

    ``remove()`` is also the way back to diffusers' own processors: ``model.set_default_attn_processor()``
    raises while ours are installed (diffusers accepts only its own processor classes there), and works again
    once the handle is removed.

    While the handle is active, a ``RegionalAttnProcessor()`` created without a backend (as diffusers does when
    it rebuilds processors, e.g. loading an IP-Adapter) takes this install's backend.
    """

    def __init__(self, model, previous: dict, default_token: list[str] | None = None):
        self.model = model
        self._previous = previous
        self._default_token = default_token

    @property
    def active(self) -> bool:
        return self._previous is not None

    def remove(self) -> None:
        """Put the previous processors back (idempotent)."""
        if self._default_token is not None:
            pop_default_backend(self._default_token)
            self._default_token = None
        if self._previous is not None:
            self.model.set_attn_processor(self._previous)
            self._previous = None

    def __enter__(self) -> ProcessorHandle:
        return self

    def __exit__(self, *exc_info) -> None:
        self.remove()


def install_regional_processors(model, backend: str = "auto") -> ProcessorHandle:
    """Put a :class:`RegionalAttnProcessor` on the attention layers of ``model``, a diffusers model with
    ``attn_processors`` / ``set_attn_processor`` (e.g. the ``UNet2DConditionModel`` of SD1.x, SD2.x, SDXL).

    Layers with added key/value projections (``attn.add_k_proj``: the ``SimpleCrossAttn`` blocks of DeepFloyd
    IF, unCLIP, Kandinsky 2.1, run by ``AttnAddedKVProcessor``) keep their own processor: they attend over the
    text and the image together, which the regional math does not describe, so ``regions`` and
    ``qk_injection`` do not apply there (diffusers drops those keywords for them with a warning).

    Returns a handle that restores the previous processors (see :class:`ProcessorHandle`)::

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
    processor = RegionalAttnProcessor(backend)
    chosen = {name: old if _has_added_kv(model, name) else processor for name, old in previous.items()}
    model.set_attn_processor(chosen)
    return ProcessorHandle(model, previous, push_default_backend(backend))


def _has_added_kv(model, processor_name: str) -> bool:
    """Whether the attention layer whose processor ``attn_processors`` names ``processor_name`` (its module path
    plus ``.processor``) projects added keys and values of its own."""
    layer = model.get_submodule(processor_name.removesuffix(".processor"))
    return getattr(layer, "add_k_proj", None) is not None
