"""The ``torch`` backend: fast on CPU and on any device, built from ``scaled_dot_product_attention``.

Region-partitioned SDPA. Query pixels are sorted by (region, the cover bits that some token depends on) once,
when the routing plan is built (``ale_kernels.plan``); every run of equal keys is a group whose pixels read
the same values and may see the same tokens. Each group runs one SDPA against its region's keys and values
with no per-row mask at all: with ``mask_value = -inf`` the hidden tokens are dropped from the keys, with a
finite value they get one ``(S,)`` bias shared by all rows and heads. No per-head ``L x S`` map is built,
and no region's values are multiplied by another region's pixels.

In ALE a handful of groups exist (one per object, the background, the overlaps). Should a caller's covers
produce more than ``MAX_GROUPS`` groups, each region instead runs one SDPA with a per-row bias.

On CUDA the group loop's many small launches (a gather, an SDPA and a scatter per group, per batch row)
made the backend slower than the materialised reference (0.92x on an H100, benchmarks/gpu_runs/2026-11-26-h100).
There it runs :func:`region_attention_one_call` instead: one SDPA over every region's keys and values side by
side, ``R * S`` of them, with an additive ``(L, R * S)`` bias that hides the other regions' columns and applies
the token restriction (``-inf`` or the finite mask value). A fixed number of launches whatever the routing,
no host read, nothing materialised per head: capturable in a CUDA graph. ``ALE_KERNELS_TORCH_GROUPS=1``
keeps the group loop on CUDA (to measure one against the other).

Shared-QK attention runs one SDPA for all value streams on CPU: ``q`` and ``k`` zero-padded to ``n * D``
(the extra products are exact zeros, so the scores are unchanged) against the streams concatenated along
the head dim. PyTorch's flash CPU kernel needs equal head dims for ``q``, ``k`` and ``v``; padding is what
lets it share one softmax between the streams.
"""

from __future__ import annotations

import os
import weakref

import torch
import torch.nn.functional as F

from .plan import Group, RoutingPlan
from .reference import allowed_tokens, blhd_layout

# Rows of the score tensor the token softmax materialises at once: bounds its memory to
# B * H * _SOFTMAX_CHUNK * S floats whatever the image size.
_SOFTMAX_CHUNK = 1024


#: Devices where shared-QK attention runs its value streams through one padded SDPA call. On a 2-core CPU
#: (fp32, L = Lk = 4096, H = 8, D = 40) it takes 262 ms against 313 ms for one call per stream with two
#: streams (392 against 467 ms with three): the exponentials are shared. Concatenating the values without
#: padding q and k leaves the flash CPU kernel for the materialising math path, 2x slower than two calls.
#: On CUDA, ``n * D`` would pass the flash kernels' head-dim limit (256) at SD1.5's D = 160, and ``auto``
#: runs the Triton kernel there anyway.
CONCAT_STREAM_DEVICES = ("cpu",)
#: ... and only up to this head dim: at L = 2304, D = 80 the padded call took 179 ms against 162 ms for two
#: calls, at L = 576, D = 160 23 against 21 ms (make bench, 2-core CPU): padding q and k to n * D costs more
#: than the shared exponentials save once D is wide.
CONCAT_STREAM_MAX_HEAD_DIM = 64

#: Above this many (region, cover) groups the per-group SDPA calls cost more than a per-row bias.
MAX_GROUPS = 64


def _attend_group(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, group: Group, scale: float, mask_value: float
) -> torch.Tensor:
    """SDPA of ``q`` ``(b, H, n, D)`` over ``k, v`` ``(b, H, S, D)`` where every row sees ``group``'s tokens.

    The group's visible-token count and indices come from the plan: nothing here reads tensor values.
    """
    tokens = group.tokens
    if tokens is None or group.n_visible == tokens.shape[0]:
        return F.scaled_dot_product_attention(q, k, v, scale=scale)
    if mask_value == float("-inf"):
        if group.n_visible == 0:
            return q.new_zeros((*q.shape[:-1], v.shape[-1]))
        visible = group.visible
        return F.scaled_dot_product_attention(q, k.index_select(2, visible), v.index_select(2, visible), scale=scale)
    # A finite mask shifts disallowed scores; if every score of a row is shifted alike, softmax ignores it.
    if group.n_visible == 0:
        return F.scaled_dot_product_attention(q, k, v, scale=scale)
    bias = torch.zeros(tokens.shape, dtype=q.dtype, device=q.device).masked_fill_(~tokens, mask_value)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias[None], scale=scale)


def _attend_rows(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allow: torch.Tensor, scale: float, mask_value: float
) -> torch.Tensor:
    """SDPA of ``q`` ``(b, H, n, D)`` where row ``i`` sees ``allow[i]`` ``(n, S)``: the many-groups fallback."""
    fill = float("-inf") if mask_value == float("-inf") else mask_value
    bias = torch.zeros(allow.shape, dtype=q.dtype, device=q.device).masked_fill_(~allow, fill)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)
    if mask_value == float("-inf"):
        out = out.masked_fill(~allow.any(dim=1)[:, None], 0.0)
    return out


#: Devices where the torch backend's ``region_attention`` runs one masked SDPA call instead of the group loop.
ONE_CALL_DEVICES = () if os.environ.get("ALE_KERNELS_TORCH_GROUPS", "0") not in ("", "0") else ("cuda",)

# One bias per plan, dtype and mask value, dropped with the plan: a plan serves every layer of its resolution
# and every step of an edit.
_biases: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def one_call_bias(plan: RoutingPlan, tokens: int, mask_value: float, dtype: torch.dtype) -> torch.Tensor:
    """``(Br, 1, L, R * S)`` additive bias of :func:`region_attention_one_call`: column ``r * S + s`` of pixel
    ``p`` is ``-inf`` unless ``r`` is the pixel's region, then ``0`` where token ``s`` is allowed, else
    ``mask_value`` (all tensor ops on the plan's device: no host read)."""
    key = (tokens, mask_value, dtype)
    per_plan = _biases.get(plan)
    if per_plan is not None and key in per_plan:
        return per_plan[key]
    region = plan.q_region.to(torch.int64)  # (Br, L)
    regions = plan.regions
    own = region[:, :, None] == torch.arange(regions, device=region.device)  # (Br, L, R)
    if plan.token_owner is None:
        in_region = torch.zeros((*own.shape[:2], 1), dtype=dtype, device=region.device)
    else:
        allow = allowed_tokens(plan.q_cover, plan.token_owner)  # (Br, L, S)
        in_region = torch.zeros(allow.shape, dtype=dtype, device=region.device).masked_fill_(~allow, mask_value)
    bias = torch.where(own[:, :, :, None], in_region[:, :, None, :], float("-inf")).to(dtype)  # (Br, L, R, S|1)
    bias = bias.expand(*own.shape, tokens).reshape(own.shape[0], 1, own.shape[1], regions * tokens)
    if per_plan is None:
        per_plan = _biases[plan] = {}
    per_plan[key] = bias
    return bias


def region_attention_one_call(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plan: RoutingPlan, scale: float, mask_value: float
) -> torch.Tensor:
    """Region-routed attention as one SDPA over all regions' keys and values with an additive bias.

    Same arguments and result as :func:`region_attention_torch`: ``q`` ``(B, H, L, D)``, ``k`` ``(B, H, S, D)``
    or ``(B, R, H, S, D)``, ``v`` ``(B, R, H, S, D)``; returns ``(B, H, L, D)`` stored as ``(B, L, H, D)``.
    A pixel's softmax runs over its own region's ``S`` columns only (the others are ``-inf``), which is the
    reference's softmax; with ``mask_value = -inf`` a pixel that may see no token gets zeros.
    """
    batch, heads, _, head_dim = q.shape
    regions, tokens = v.shape[1], v.shape[3]
    per_region = k if k.dim() == 5 else k.unsqueeze(1).expand(batch, regions, heads, tokens, head_dim)
    keys = per_region.transpose(1, 2).reshape(batch, heads, regions * tokens, head_dim)
    values = v.transpose(1, 2).reshape(batch, heads, regions * tokens, head_dim)
    bias = one_call_bias(plan, tokens, mask_value, q.dtype)
    out = F.scaled_dot_product_attention(q, keys, values, attn_mask=bias, scale=scale)
    if mask_value == float("-inf") and plan.token_owner is not None:
        # A row whose every column is -inf comes out NaN; the reference gives such a pixel zeros.
        seen = (bias[:, 0] > float("-inf")).any(dim=-1)  # (Br, L)
        out = out.masked_fill(~seen[:, None, :, None], 0.0)
    return blhd_layout(out)


def region_attention_torch(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    plan: RoutingPlan,
    scale: float,
    mask_value: float,
) -> torch.Tensor:
    """Region-routed attention by region-partitioned SDPA, along the plan's groups. Same result as the reference.

    Args:
        q: ``(B, H, L, D)``; k: ``(B, H, S, D)`` or ``(B, R, H, S, D)``; v: ``(B, R, H, S, D)``.
        plan: the checked routing (its pixel groups, sorted by region and relevant cover bits).

    Returns:
        ``(B, H, L, D)`` in ``q``'s dtype, stored as ``(B, L, H, D)`` (what diffusers reshapes to next).
    """
    batch, heads, length, head_dim = q.shape
    if q.device.type in ONE_CALL_DEVICES and length:
        return region_attention_one_call(q, k, v, plan, scale, mask_value)
    out = torch.empty((batch, length, heads, head_dim), dtype=q.dtype, device=q.device)
    if length == 0:
        return out.transpose(1, 2)
    if plan.routing_batch == 1:
        batch_slices = [(slice(0, batch), 0)]
    else:
        batch_slices = [(slice(b, b + 1), b) for b in range(batch)]
    k_per_region = k.dim() == 5
    for bs, row in batch_slices:
        nb = bs.stop - bs.start
        order = plan.group_order[row]
        groups = plan.groups(row)
        # Pixels as rows of (b * H * D) values: gathering whole rows along dim 0 is the fast gather.
        q_rows = q[bs].permute(2, 0, 1, 3).reshape(length, nb * heads * head_dim).index_select(0, order)
        q_rows = q_rows.view(length, nb, heads, head_dim)
        out_rows = torch.empty_like(q_rows)
        if len(groups) <= MAX_GROUPS:
            for g in groups:
                k_r = k[bs, g.region] if k_per_region else k[bs]
                q_g = q_rows[g.start : g.end].permute(1, 2, 0, 3)
                o_g = _attend_group(q_g, k_r, v[bs, g.region], g, scale, mask_value)
                out_rows[g.start : g.end] = o_g.permute(2, 0, 1, 3)
        else:
            # Groups are sorted by region first: each region's rows are one run of the sorted pixels.
            counts = [0] * v.shape[1]
            for g in groups:
                counts[g.region] += g.end - g.start
            owner = plan.token_owner
            allow = None
            if owner is not None:
                allow = allowed_tokens(plan.q_cover[row][None], owner[row][None])[0].index_select(0, order)
            start = 0
            for r, n in enumerate(counts):
                if n:
                    k_r = k[bs, r] if k_per_region else k[bs]
                    q_g = q_rows[start : start + n].permute(1, 2, 0, 3)
                    if allow is None:
                        o_g = F.scaled_dot_product_attention(q_g, k_r, v[bs, r], scale=scale)
                    else:
                        o_g = _attend_rows(q_g, k_r, v[bs, r], allow[start : start + n], scale, mask_value)
                    out_rows[start : start + n] = o_g.permute(2, 0, 1, 3)
                start += n
        if nb == 1:
            out[bs.start].view(length, heads * head_dim).index_copy_(0, order, out_rows.view(length, -1))
        else:
            unsorted = torch.empty_like(out_rows).view(length, -1).index_copy_(0, order, out_rows.view(length, -1))
            out[bs].copy_(unsorted.view(length, nb, heads, head_dim).transpose(0, 1))
    return out.transpose(1, 2)


def token_restricted_softmax_torch(
    q: torch.Tensor,
    k: torch.Tensor,
    q_cover: torch.Tensor | None,
    token_owner: torch.Tensor | None,
    scale: float,
    mask_value: float,
    tokens: torch.Tensor | None,
    reduce_heads: bool,
) -> torch.Tensor:
    """Restricted-softmax probabilities for ``tokens``, computed in row chunks.

    Holds at most ``B x H x 1024 x S`` scores at a time instead of the full ``(B, H, L, S)`` tensor.

    Returns:
        float32 ``(B, L, T)`` when ``reduce_heads`` else ``(B, H, L, T)`` (float64 for float64 inputs).
    """
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    batch, heads, length, _ = q.shape
    n_tokens = k.shape[2] if tokens is None else tokens.shape[0]
    shape = (batch, length, n_tokens) if reduce_heads else (batch, heads, length, n_tokens)
    out = torch.empty(shape, dtype=acc, device=q.device)
    k_acc = k.to(acc).transpose(-1, -2)
    token_idx = None if tokens is None else tokens.to(torch.int64)
    for start in range(0, length, _SOFTMAX_CHUNK):
        rows = slice(start, min(start + _SOFTMAX_CHUNK, length))
        scores = (q[:, :, rows].to(acc) @ k_acc) * scale
        if token_owner is not None:
            allow = allowed_tokens(q_cover[:, rows], token_owner)[:, None]
            if mask_value == float("-inf"):
                scores.masked_fill_(~allow, float("-inf"))
            else:
                scores.add_(torch.where(allow, 0.0, mask_value).to(acc))
        probs = torch.softmax(scores, dim=-1).nan_to_num_(nan=0.0)
        if token_idx is not None:
            probs = probs.index_select(-1, token_idx)
        if reduce_heads:
            out[:, rows] = probs.mean(dim=1)
        else:
            out[:, :, rows] = probs
    return out


def shared_qk_attention_torch(
    q: torch.Tensor, k: torch.Tensor, vs: list[torch.Tensor], scale: float
) -> list[torch.Tensor]:
    """``softmax(scale * q k^T) @ v`` for each ``v`` in ``vs``, with the softmax shared where the device allows.

    Args:
        q: ``(B, H, L, D)``; k and each of ``vs``: ``(B, H, Lk, D)``; any strides.

    Returns:
        one ``(B, H, L, D)`` per stream in ``q``'s dtype, stored as ``(B, L, H, D)``.
    """
    if len(vs) == 1 or q.device.type not in CONCAT_STREAM_DEVICES or q.shape[-1] > CONCAT_STREAM_MAX_HEAD_DIM:
        return [blhd_layout(F.scaled_dot_product_attention(q, k, v, scale=scale)) for v in vs]
    batch, heads, length, head_dim = q.shape
    pad = (0, (len(vs) - 1) * head_dim)
    # Zero-padded q . k equals q . k exactly; the explicit scale keeps D ** -0.5 of the true head dim.
    joint = F.scaled_dot_product_attention(F.pad(q, pad), F.pad(k, pad), torch.cat(list(vs), dim=-1), scale=scale)
    outs = []
    for i in range(len(vs)):
        out = torch.empty((batch, length, heads, head_dim), dtype=q.dtype, device=q.device).transpose(1, 2)
        outs.append(out.copy_(joint[..., i * head_dim : (i + 1) * head_dim]))
    return outs
