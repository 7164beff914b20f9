"""LEDITS++ (diffusers' ``LEditsPPPipelineStableDiffusion`` and ``...StableDiffusionXL``) on SDPA and the fused ops.

What the stock pipelines run, and why it is slow:

- ``invert()`` puts the materialising ``AttnProcessor`` on every attention layer, and ``__call__`` (through
  ``prepare_unet``) puts it on every self-attention layer and the mid block: full ``(batch * heads, L, L)``
  probabilities, gigabytes at 512 px and beyond.
- The cross-attention layers get ``LEDITSCrossAttnProcessor``, which materialises the ``(batch * heads, L, 77)``
  probabilities of every batch entry and hands them to ``LeditsAttentionStore``. The store keeps only layers of
  at most ``max_size`` pixels (a quarter of the latent's side) and, of those, only the edit-concept entries
  (all heads, all tokens); the rest is thrown away.

Here every layer attends with SDPA (:class:`~ale_kernels.diffusers.RegionalAttnProcessor` without regions), and
the cross-attention layers the store keeps also compute, with :func:`~ale_kernels.token_restricted_softmax`,
the probabilities of exactly the entries the store keeps, never those of the unconditional entries or of the
layers it drops. The store receives the same tensor (values, shape, dtype, layout) it would have received.

The processors are swapped, not patched: a forward pre-hook on the UNet (public torch API) replaces the stock
processor objects that the pipeline set (``invert()`` and ``prepare_unet`` set them at every call) by ours
before each UNet call, keeping the replaced objects so that the handle can put them back. The store's own
selection rule (``LeditsAttentionStore.__call__``) is the one private behaviour mirrored here;
:func:`check_pipeline_module` runs the installed classes against ours on a tiny layer before anything is
installed, so a diffusers release that changed them raises instead of computing something else.
"""

from __future__ import annotations

import functools
import sys

import torch

from ..ops import token_restricted_softmax
from .install import _has_added_kv
from .processor import RegionalAttnProcessor

#: The attributes of diffusers' ``LEDITSCrossAttnProcessor`` that say what its store is to receive.
STOCK_ATTRIBUTES = ("attnstore", "place_in_unet", "editing_prompts", "pnp")


class LeditsMapProcessor(RegionalAttnProcessor):
    """SDPA cross-attention that gives a ``LeditsAttentionStore`` exactly what ``LEDITSCrossAttnProcessor`` gives.

    The output is :class:`RegionalAttnProcessor`'s (SDPA or the fused ops). For a layer of ``L`` pixels with
    ``L <= store.max_size`` the edit-concept entries' per-head probabilities ``(entries * heads, L, S)`` are
    computed by :func:`~ale_kernels.token_restricted_softmax` and passed to ``store.forward`` in the store's
    layout ``(store.batch_size, entries * heads / store.batch_size, L, S)``; other layers store nothing.

    Args:
        store: the pipeline's ``LeditsAttentionStore``.
        place_in_unet: ``"down"``, ``"mid"`` or ``"up"``, the store's key prefix.
        editing_prompts: the number of edit concepts of the call.
        pnp: whether the batch holds a plug-and-play entry before the concepts (the pipelines pass ``False``).
        backend: the backend of the attention and of the maps (see :class:`RegionalAttnProcessor`).
    """

    def __init__(self, store, place_in_unet: str, editing_prompts: int, pnp: bool, backend: str | None = None):
        super().__init__(backend)
        self.store = store
        self.place_in_unet = place_in_unet
        self.editing_prompts = int(editing_prompts)
        self.pnp = bool(pnp)

    @classmethod
    def like(cls, stock, backend: str | None = None) -> LeditsMapProcessor:
        """Ours for the stock ``LEDITSCrossAttnProcessor`` ``stock`` (same store, place and batch layout)."""
        missing = [name for name in STOCK_ATTRIBUTES if not hasattr(stock, name)]
        if missing:
            raise RuntimeError(
                f"speed_up: {type(stock).__name__} of this diffusers has no {missing}; it cannot be replaced "
                "faithfully (remove speed_up or use the diffusers version it was tested with)"
            )
        return cls(stock.attnstore, stock.place_in_unet, stock.editing_prompts, stock.pnp, backend)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(place_in_unet={self.place_in_unet!r}, backend={self.backend!r})"

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        if attention_mask is not None:
            raise ValueError(
                "speed_up's LEDITS++ cross-attention does not take an encoder attention mask (the LEDITS++ "
                "pipelines pass none); call the UNet without encoder_attention_mask"
            )
        if "attention_probe" in kwargs:
            raise TypeError("attention_probe is taken by speed_up's LEDITS++ cross-attention layers")
        return super().__call__(
            attn, hidden_states, encoder_hidden_states, None, temb, attention_probe=self._record, **kwargs
        )

    def _record(self, attn, q: torch.Tensor, k: torch.Tensor) -> None:
        """Give the store the maps it keeps of this layer: ``q`` ``(B, heads, L, D)``, ``k`` ``(B, heads, S, D)``."""
        batch, heads, length, _ = q.shape
        if not length <= self.store.max_size:
            return
        chunk = self.store.batch_size
        first_row = kept_first_row(batch * heads, chunk, self.editing_prompts, self.pnp)
        first_entry = first_row // heads
        maps = token_restricted_softmax(
            q[first_entry:], k[first_entry:], scale=attn.scale, reduce_heads=False, backend=self.backend
        )
        rows = maps.reshape(-1, length, k.shape[2])[first_row - first_entry * heads :].to(q.dtype)
        self.store.forward(store_layout(rows, chunk), True, self.place_in_unet)


def kept_first_row(rows: int, chunk: int, editing_prompts: int, pnp: bool) -> int:
    """The first of the ``rows`` = batch * heads probability rows that ``LeditsAttentionStore`` keeps (those of
    the edit concepts; the unconditional entries and a plug-and-play entry come first), with the store's
    ``batch_size`` ``chunk``."""
    groups = 1 + int(pnp) + editing_prompts
    skip = 2 if pnp else 1
    return skip * ((rows // chunk) // groups) * chunk


def store_layout(rows: torch.Tensor, chunk: int) -> torch.Tensor:
    """The kept rows ``(n * chunk, L, S)`` as the store files them: ``(chunk, n, L, S)``, entry ``[i, j]`` being
    row ``j * chunk + i`` (the store splits the rows into chunks of its ``batch_size`` and stacks them)."""
    return rows.view(-1, chunk, *rows.shape[1:]).transpose(0, 1)


class LeditsProcessorSwap:
    """A forward pre-hook on the UNet that replaces the processors a LEDITS++ pipeline sets by ours.

    Before every UNet call each attention layer's processor is looked at: diffusers' ``AttnProcessor`` becomes
    one shared :class:`RegionalAttnProcessor` (plain SDPA), the pipeline module's ``LEDITSCrossAttnProcessor``
    becomes a :class:`LeditsMapProcessor` on the same store. Anything else (a user's or an IP-Adapter's
    processor, layers with added key/value projections) is left alone. :meth:`restore` puts back, on every layer
    still holding one of ours, the very object it replaced.
    """

    def __init__(self, unet, stock_cross_class: type, backend: str):
        from diffusers.models.attention_processor import AttnProcessor

        self.unet = unet
        self.backend = backend
        self._plain_class = AttnProcessor
        self._cross_class = stock_cross_class
        self._plain = RegionalAttnProcessor(backend)
        self._layers = [
            (name, module)
            for name, module in unet.named_modules()
            if hasattr(module, "get_processor") and not _has_added_kv(unet, f"{name}.processor")
        ]
        self._replaced: dict[str, tuple[object, object]] = {}  # layer -> (stock processor, ours)
        self._hook = unet.register_forward_pre_hook(self._before_forward)

    def _before_forward(self, module, args) -> None:
        self.swap()

    def swap(self) -> None:
        """Replace every stock processor now on the UNet (cheap when there is none: a type check per layer)."""
        for name, layer in self._layers:
            current = layer.processor
            if name in self._replaced and self._replaced[name][1] is current:
                continue
            if type(current) is self._plain_class:
                ours = self._plain
            elif type(current) is self._cross_class and _plain_cross_layer(layer):
                ours = LeditsMapProcessor.like(current, self.backend)
            else:
                continue
            self._replaced[name] = (current, ours)
            layer.set_processor(ours)

    def restore(self) -> None:
        """Remove the hook; put the stock processor back wherever ours still is (idempotent)."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        for name, layer in self._layers:
            stock, ours = self._replaced.pop(name, (None, None))
            if ours is not None and layer.processor is ours:
                layer.set_processor(stock)


def _plain_cross_layer(layer) -> bool:
    """Whether ``LEDITSCrossAttnProcessor`` and ours compute the same on ``layer``: the stock processor skips
    the optional parts of ``Attention`` (norms, residual) that ours applies, so a layer with any is left stock."""
    return (
        getattr(layer, "is_cross_attention", True)
        and getattr(layer, "spatial_norm", None) is None
        and getattr(layer, "group_norm", None) is None
        and getattr(layer, "norm_q", None) is None
        and getattr(layer, "norm_k", None) is None
        and not getattr(layer, "residual_connection", False)
    )


def stock_classes(pipeline_class: type) -> tuple[type, type]:
    """The ``(LEDITSCrossAttnProcessor, LeditsAttentionStore)`` of the module defining ``pipeline_class`` (or the
    nearest LEDITS++ base class); a ``RuntimeError`` where that module no longer has them."""
    for klass in pipeline_class.__mro__:
        module = sys.modules.get(klass.__module__)
        if module is not None and "ledits_pp" in klass.__module__:
            cross = getattr(module, "LEDITSCrossAttnProcessor", None)
            store = getattr(module, "LeditsAttentionStore", None)
            if cross is None or store is None:
                raise RuntimeError(
                    f"speed_up: {klass.__module__} has no LEDITSCrossAttnProcessor / LeditsAttentionStore any more; "
                    "this diffusers' LEDITS++ is not one speed_up knows"
                )
            return cross, store
    raise RuntimeError(f"speed_up: {pipeline_class.__name__} is not defined in diffusers' ledits_pp package")


@functools.cache
def check_pipeline_module(cross_class: type, store_class: type) -> None:
    """Run the installed ``LEDITSCrossAttnProcessor`` and ours on a tiny float64 cross-attention layer (two
    images, two concepts, one stored and one dropped resolution) and raise a ``RuntimeError`` naming what
    differs: the output, the store's contents, or the constructor's arguments. Once per class pair."""
    from diffusers.models.attention_processor import Attention

    try:
        torch.manual_seed(0)
        layer = Attention(query_dim=8, cross_attention_dim=6, heads=2, dim_head=4).double().eval()
        batch, concepts = 2, 2
        text = torch.randn(batch * (1 + concepts), 5, 6, dtype=torch.float64)
        hidden = [torch.randn(batch * (1 + concepts), pixels, 8, dtype=torch.float64) for pixels in (16, 25)]
        results = []
        for make in (lambda p: p, lambda p: LeditsMapProcessor.like(p, "reference")):
            store = store_class(average=True, batch_size=batch, max_size=16, max_resolution=None)
            stock = cross_class(attention_store=store, place_in_unet="down", pnp=False, editing_prompts=concepts)
            processor = make(stock)
            with torch.no_grad():
                outputs = [processor(layer, h, text) for h in hidden]
            results.append((outputs, store.step_store))
    except (TypeError, AttributeError) as exc:
        raise RuntimeError(f"speed_up: this diffusers' LEDITS++ classes are not the ones it knows ({exc})") from exc
    (stock_out, stock_store), (our_out, our_store) = results
    for a, b in zip(stock_out, our_out, strict=True):
        if not torch.allclose(a, b, rtol=1e-9, atol=1e-12):
            raise RuntimeError("speed_up: this diffusers' LEDITSCrossAttnProcessor computes another attention")
    if stock_store.keys() != our_store.keys() or any(
        len(stock_store[key]) != len(our_store[key])
        or any(
            a.shape != b.shape or a.dtype != b.dtype or not torch.allclose(a, b, rtol=1e-9, atol=1e-12)
            for a, b in zip(stock_store[key], our_store[key], strict=True)
        )
        for key in stock_store
    ):
        raise RuntimeError("speed_up: this diffusers' LeditsAttentionStore keeps other maps than the ones it knows")
