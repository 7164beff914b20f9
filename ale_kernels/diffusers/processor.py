"""A diffusers attention processor for regional cross-attention and self-attention Q/K injection.

:class:`RegionalAttnProcessor` is a drop-in for ``AttnProcessor2_0`` on the plain ``Attention`` layers of a
``UNet2DConditionModel`` (SD1.x, SD2.x, SDXL; layers with added key/value projections, as in DeepFloyd IF,
unCLIP or Kandinsky 2.1, are not its kind: the installer leaves them alone). Without per-call data it is plain
SDPA attention. Per UNet call, through
``cross_attention_kwargs``, it takes

- ``regions``: a :class:`~ale_kernels.diffusers.RegionSpec`. In cross-attention the routed batch entries run
  :func:`~ale_kernels.region_attention`: each pixel reads the values of its own region's embedding and sees
  only the tokens its object cover allows (ALE's RGB-CAM, regional prompting). Other entries are plain.
- ``attention_probe``: a callable ``probe(attn, q, k)`` given every cross-attention layer's per-head queries
  and keys ``(B, heads, L, D)``, ``(B, heads, S, D)``: how attention-map pictures are taken without the
  processor ever materialising a map (the probe calls :func:`~ale_kernels.token_restricted_softmax`).
- ``qk_injection``: pairs ``(source, target)`` of batch entries. In self-attention the target entry uses the
  source entry's queries and keys with its own values, computed with :func:`~ale_kernels.shared_qk_attention`
  so both entries share one softmax pass (ALE's self-attention Q/K injection).

``backend="reference"`` runs the published ALE math instead, materialising every attention map
(``attn.get_attention_scores``): the baseline that the fast backends are tested and measured against.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from .. import _checks
from ..ops import region_attention, shared_qk_attention
from ..profiling import stage
from .hooks import register_with_diffusers_hooks
from .regions import RegionSpec

# The backends chosen by the installs still active, latest last (one single-item list per install, removed by
# identity). diffusers recreates processors from their class with no arguments (loading an IP-Adapter rebuilds
# every self-attention processor so): those take the latest install's backend instead of silently "auto".
_install_backends: list[list[str]] = []


def default_backend() -> str:
    """The backend of a :class:`RegionalAttnProcessor` created without one: the backend of the latest
    :func:`~ale_kernels.diffusers.install_regional_processors` whose handle is still active, else ``"auto"``."""
    return _install_backends[-1][0] if _install_backends else "auto"


def push_default_backend(backend: str) -> list[str]:
    """Make ``backend`` the default until :func:`pop_default_backend` is given the returned token."""
    token = [backend]
    _install_backends.append(token)
    return token


def pop_default_backend(token: list[str]) -> None:
    """End the default that ``token`` (from :func:`push_default_backend`) set; other installs' stay (idempotent)."""
    for i, active in enumerate(_install_backends):
        if active is token:
            del _install_backends[i]
            return


def _split_heads(attn, x: torch.Tensor) -> torch.Tensor:
    """``(B, N, heads * D)`` to a ``(B, heads, N, D)`` view (no copy)."""
    batch, length, inner = x.shape
    return x.view(batch, length, attn.heads, inner // attn.heads).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    """``(B, heads, N, D)`` to ``(B, N, heads * D)``; free when ``x`` is stored as ``(B, N, heads, D)``."""
    batch, heads, length, head_dim = x.shape
    return x.transpose(1, 2).reshape(batch, length, heads * head_dim)


def _attend_materialised(attn, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The published processors' attention: explicit ``(B*heads, L, S)`` probabilities, then ``P @ V``."""
    batch, heads, length, head_dim = q.shape
    fold = lambda x: x.reshape(batch * heads, x.shape[2], head_dim)  # noqa: E731
    probs = attn.get_attention_scores(fold(q), fold(k), None)
    return torch.bmm(probs, fold(v)).view(batch, heads, length, head_dim)


class RegionalAttnProcessor:
    """Attention processor with region-routed cross-attention and Q/K injection, on the fused ops.

    Called as diffusers calls ``AttnProcessor2_0``: ``proc(attn, hidden_states, encoder_hidden_states,
    attention_mask, temb)``, with ``hidden_states`` ``(B, L, C)`` or ``(B, C, H, W)``. Like it, further positional
    arguments and keywords (the deprecated ``scale``) are accepted and ignored, with the same ``FutureWarning``
    for positional ones and ``scale``. The ALE parameters ``regions``, ``qk_injection`` and ``attention_probe``
    are keyword-only (``cross_attention_kwargs`` passes them so).

    Args:
        backend: ``"auto"``, ``"torch"``, ``"triton"``, ``"cpp"`` or ``"reference"`` (the published, materialised
            math); see :func:`ale_kernels.resolve_backend` for what ``"auto"`` picks. ``None`` (the default)
            takes :func:`default_backend`: the backend of the latest still-active install, else ``"auto"``.
    """

    def __init__(self, backend: str | None = None):
        if backend is None:
            backend = default_backend()
        _checks.check_backend(backend)
        self.backend = backend
        register_with_diffusers_hooks(type(self))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(backend={self.backend!r})"

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args,
        regions: RegionSpec | None = None,
        qk_injection: Sequence[tuple[int, int]] | None = None,
        attention_probe: Callable | None = None,
        **kwargs,
    ) -> torch.Tensor:
        if args or kwargs.get("scale") is not None:
            # What AttnProcessor2_0 does with them: ignored, with a FutureWarning (diffusers deprecated the
            # processor-level LoRA scale; it goes through cross_attention_kwargs to the pipeline instead).
            warnings.warn(
                "RegionalAttnProcessor ignores positional arguments after temb and the deprecated `scale`, as "
                "diffusers' AttnProcessor2_0 does; pass a LoRA scale to the pipeline instead",
                FutureWarning,
                stacklevel=2,
            )
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channel, height * width).transpose(1, 2)
        batch = hidden_states.shape[0]
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        is_cross = encoder_hidden_states is not None
        context = hidden_states if not is_cross else encoder_hidden_states
        if is_cross and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, context.shape[1], batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])

        with stage("ale::projections"):
            q = _split_heads(attn, attn.to_q(hidden_states))
            k = _split_heads(attn, attn.to_k(context))
            v = _split_heads(attn, attn.to_v(context))
            if attn.norm_q is not None:
                q = attn.norm_q(q)
            if attn.norm_k is not None:
                k = attn.norm_k(k)

        if is_cross and attention_probe is not None:
            with stage("ale::attention_probe"):
                attention_probe(attn, q, k)
        if is_cross and regions is not None:
            with stage("ale::cross_attention.regional"):
                out = self._regional_cross_attention(attn, q, k, v, regions, attention_mask)
        elif not is_cross and qk_injection:
            with stage("ale::self_attention.qk_injection"):
                out = self._injected_self_attention(attn, q, k, v, qk_injection, attention_mask)
        else:
            with stage("ale::attention"):
                out = self._attend(attn, q, k, v, attention_mask)

        with stage("ale::out_projection"):
            hidden_states = attn.to_out[0](_merge_heads(out).to(q.dtype))
            hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor

    # ------------------------------------------------------------------------------------------------------

    def _attend(self, attn, q, k, v, attention_mask) -> torch.Tensor:
        if self.backend == "reference" and attention_mask is None:
            return _attend_materialised(attn, q, k, v)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask, scale=attn.scale)

    def _assemble(self, attn, q, k, v, parts: list[tuple[list[int], torch.Tensor]]) -> torch.Tensor:
        """Scatter ``parts`` (batch entries, their outputs) into one output; other entries attend plainly."""
        batch, heads, length, _ = q.shape
        out = torch.empty((batch, length, heads, v.shape[3]), dtype=q.dtype, device=q.device).transpose(1, 2)
        done = {i for entries, _ in parts for i in entries}
        rest = [i for i in range(batch) if i not in done]
        if rest:
            sel = _selector(rest, q.device)
            parts = [(rest, self._attend(attn, q[sel], k[sel], v[sel], None)), *parts]
        for entries, values in parts:
            out[_selector(entries, q.device)] = values.to(out.dtype)
        return out

    def _regional_cross_attention(self, attn, q, k, v, regions: RegionSpec, attention_mask) -> torch.Tensor:
        if attention_mask is not None:
            raise ValueError(
                "regions cannot be combined with an encoder attention mask: drop encoder_attention_mask, "
                "or express the restriction through RegionSpec.token_owner"
            )
        routed = _batch_entries("regions.batch_index", regions.batch_index, q.shape[0])
        routing = regions.routing(q.shape[2], q.device)
        embeds = regions.region_embeds.to(device=q.device, dtype=attn.to_v.weight.dtype)
        region_values = attn.to_v(embeds)  # (N + 1, S, inner) or (b, N + 1, S, inner)
        if region_values.dim() == 3:
            region_values = region_values.expand(len(routed), *region_values.shape)
        nb, regions_count, tokens, inner = region_values.shape
        region_values = region_values.view(nb, regions_count, tokens, attn.heads, inner // attn.heads).transpose(2, 3)
        sel = _selector(routed, q.device)
        # The plan was built with the spec's routing (checked values, each backend's derived data): the op
        # reads no routing value on the host, so no call syncs a GPU.
        routed_out = region_attention(
            q[sel],
            k[sel],
            region_values.to(q.dtype),
            routing.plan,
            scale=attn.scale,
            mask_value=regions.mask_value,
            backend=self.backend,
        )
        return self._assemble(attn, q, k, v, [(routed, routed_out)])

    def _injected_self_attention(self, attn, q, k, v, pairs, attention_mask) -> torch.Tensor:
        if attention_mask is not None:
            raise ValueError("qk_injection cannot be combined with a self-attention mask")
        batch = q.shape[0]
        sources = _batch_entries("qk_injection sources", [s for s, _ in pairs], batch)
        targets = _batch_entries("qk_injection targets", [t for _, t in pairs], batch)
        if len(set(targets)) != len(targets) or set(sources) & set(targets):
            raise ValueError(f"qk_injection pairs {list(pairs)} must name distinct targets that are not sources")
        if self.backend == "reference":
            # Published: the target entries take their source's Q and K, then every entry runs the
            # materialised attention on its own.
            src, tgt = _selector(sources, q.device), _selector(targets, q.device)
            q_inj, k_inj = q.clone(), k.clone()
            q_inj[tgt], k_inj[tgt] = q[src], k[src]
            return _attend_materialised(attn, q_inj, k_inj, v)
        # One softmax pass per source feeds both the source's and the target's values.
        src, tgt = _selector(sources, q.device), _selector(targets, q.device)
        out_src, out_tgt = shared_qk_attention(q[src], k[src], [v[src], v[tgt]], scale=attn.scale, backend=self.backend)
        parts = [(targets, out_tgt)]
        unique_sources = list(dict.fromkeys(sources))
        if len(unique_sources) == len(sources):
            parts.append((sources, out_src))
        return self._assemble(attn, q, k, v, parts)


def _selector(entries: list[int], device: torch.device) -> slice | torch.Tensor:
    """What selects ``entries`` of a batch: a slice where they are evenly spaced (ALE's ``[3]``, ``[0, 2]`` and
    ``[1, 3]``), which gives views and no copy; else an index tensor on ``device``. Indexing a CUDA tensor
    with a Python list copies the list to the GPU from pageable memory, a sync per call: never done here."""
    step = entries[1] - entries[0] if len(entries) > 1 else 1
    if step > 0 and entries == list(range(entries[0], entries[-1] + 1, step)):
        return slice(entries[0], entries[-1] + 1, step)
    return _index_tensor(tuple(entries), str(device))


# Kept (not folded into the routing plan): entries come from plain ints, a spec's batch_index or a call's
# qk_injection pairs, neither of which is built once per edit. Keyed by those ints and the device (no tensor
# identity), it turns the one host-to-device copy per distinct entry list into one per process.
@functools.lru_cache(maxsize=64)
def _index_tensor(entries: tuple[int, ...], device: str) -> torch.Tensor:
    return torch.tensor(entries, device=device)


def _batch_entries(name: str, entries: Sequence[int], batch: int) -> list[int]:
    entries = [int(i) for i in entries]
    if not entries or any(i < 0 or i >= batch for i in entries):
        raise ValueError(f"{name} must be batch entries in [0, {batch}), got {entries}")
    return entries
