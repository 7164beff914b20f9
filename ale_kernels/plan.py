"""The routing plan: everything the backends derive from the routing maps, checked and built once.

In the manner of FlexAttention's ``BlockMask``: :meth:`RoutingPlan.build` takes the routing maps of one edit at
one attention resolution (``q_region``, ``q_cover``, ``token_owner``) and the region count, checks their values
(one device-to-host copy: the only host sync, at build time), and derives what each backend needs:

- the Triton kernel's pixel order (a stable sort by region, so that a tile holds one or two regions),
- the torch backend's groups (pixels sorted by region and by the cover bits some token depends on; per group
  its region, its rows and the tokens it may see), their table kept on the host so that reading it never
  syncs a GPU.

The ops accept the plan in place of the maps (``region_attention(q, k, v, plan)``,
``token_restricted_softmax(q, k, plan=plan)``) and pass its tensors to their custom op, so a call reads no
tensor values on the host and ``torch.compile`` sees only tensors and plain numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import _checks

#: Columns of :attr:`RoutingPlan.group_table`.
GROUP_ROW, GROUP_REGION, GROUP_START, GROUP_END, GROUP_VISIBLE, GROUP_VISIBLE_AT = range(6)


@dataclass(frozen=True)
class Group:
    """Rows ``start:end`` of one routing row's sorted pixels: one region, one set of visible tokens.

    ``tokens``: ``(S,)`` bool of the visible tokens, ``None`` without a token restriction. ``visible``: their
    indices (``(n_visible,)`` int64). ``n_visible``: how many (``S`` when every token is visible).
    """

    region: int
    start: int
    end: int
    n_visible: int
    tokens: torch.Tensor | None
    visible: torch.Tensor | None


def default_cover(q_region: torch.Tensor) -> torch.Tensor:
    """``1 << q_region`` as int32; regions past the last object bit own no token, so they get an empty cover."""
    region = q_region.to(torch.int32)
    bit = torch.bitwise_left_shift(torch.ones_like(region), region.clamp(0, _checks.MAX_OBJECTS - 1))
    return torch.where(region < _checks.MAX_OBJECTS, bit, torch.zeros_like(bit))


@dataclass(frozen=True, eq=False)
class RoutingPlan:
    """The checked routing of one edit at one attention resolution, with each backend's derived data.

    Make one with :meth:`build`; the constructor takes already-built parts and checks nothing. ``Br`` (the
    routing batch) is 1 for maps shared by every batch entry, else the batch size ``B``.

    Attributes:
        q_region: ``(Br, L)`` int32 region of each pixel, in ``[0, regions)``.
        q_cover: ``(Br, L)`` int32 object bit mask of each pixel (``1 << q_region`` if none was given).
        token_owner: ``(Br, S)`` int32 owner of each token (``-1`` shared), or ``None``: no restriction.
        row_order: ``(Br, L)`` int32 stable sort of each row's pixels by region (the Triton kernel's order).
        group_order: ``(Br, L)`` int64 pixels sorted by (region, relevant cover bits) (the torch backend's).
        group_table: ``(G, 6)`` int64 on the CPU, one row per group: routing row, region, start, end, number
            of visible tokens, offset of their indices in ``group_visible``.
        group_tokens: ``(G, S)`` bool visible tokens per group, or ``None`` without a restriction.
        group_visible: ``(V,)`` int64 visible token indices of every group, concatenated.
        regions: the region count ``R`` the values must have.
    """

    q_region: torch.Tensor
    q_cover: torch.Tensor
    token_owner: torch.Tensor | None
    row_order: torch.Tensor
    group_order: torch.Tensor
    group_table: torch.Tensor
    group_tokens: torch.Tensor | None
    group_visible: torch.Tensor
    regions: int

    @property
    def length(self) -> int:
        """``L``, the number of query pixels."""
        return self.q_region.shape[1]

    @property
    def routing_batch(self) -> int:
        """``Br``: 1 when one routing serves every batch entry, else the batch size."""
        return self.q_region.shape[0]

    @property
    def tokens(self) -> int | None:
        """``S`` when tokens are restricted (the keys must have this many), else ``None`` (any count)."""
        return None if self.token_owner is None else self.token_owner.shape[1]

    @property
    def device(self) -> torch.device:
        return self.q_region.device

    def maps(self, batch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``q_region``, ``q_cover`` ``(B, L)`` and ``token_owner`` ``(B, S)`` (or ``None``), broadcast views."""

        def per_batch(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.expand(batch, t.shape[1])

        return per_batch(self.q_region), per_batch(self.q_cover), per_batch(self.token_owner)

    def groups(self, row: int) -> list[Group]:
        """The torch backend's groups of routing row ``row``, in ``group_order``'s order (reads only the
        host-side table: no device sync)."""
        out = []
        for g, (r, region, start, end, n_visible, at) in enumerate(self.group_table.tolist()):
            if r != row:
                continue
            tokens = None if self.group_tokens is None else self.group_tokens[g]
            visible = None if self.group_tokens is None else self.group_visible[at : at + n_visible]
            out.append(Group(region, start, end, n_visible, tokens, visible))
        return out

    @classmethod
    def build(
        cls,
        q_region: torch.Tensor,
        *,
        q_cover: torch.Tensor | None = None,
        token_owner: torch.Tensor | None = None,
        regions: int,
    ) -> RoutingPlan:
        """Check the routing maps and derive every backend's data from them.

        Args:
            q_region: ``(L,)`` or ``(B, L)`` integer region of each pixel, in ``[0, regions)``.
            q_cover: ``(L,)`` or ``(B, L)`` integer bit mask, bit ``j`` set where object ``j`` covers the pixel;
                read only with ``token_owner``. Defaults to ``1 << q_region``.
            token_owner: ``(S,)`` or ``(B, S)`` integer: ``-1`` for tokens every pixel may see, else the owning
                object ``j < 31``. ``None``: no token restriction.
            regions: ``R``, the number of value regions the plan will be used with.

        Returns:
            the plan, on ``q_region``'s device. Maps given as ``(L,)`` (or as batch-broadcast views) give a plan
            shared by every batch entry.

        Raises:
            TypeError / ValueError naming the argument: a map that is not an integer tensor of those shapes,
            maps on different devices or of disagreeing sizes, values out of range.
        """
        if isinstance(regions, bool) or not isinstance(regions, int) or regions < 1:
            raise ValueError(f"regions must be a positive int (the value regions R), got {regions!r}")
        region = _as_map("q_region", q_region, None)
        if region is None:
            raise TypeError("q_region is required: an integer tensor of shape (B, L) or (L,)")
        length, device = region.shape[1], region.device
        owner = _as_map("token_owner", token_owner, device, axis="S")
        cover = _as_map("q_cover", q_cover, device) if owner is not None else None
        if cover is not None and cover.shape[1] != length:
            raise ValueError(f"q_cover must have L = {length} pixels like q_region, got shape {tuple(q_cover.shape)}")
        rows = {t.shape[0] for t in (region, cover, owner) if t is not None} - {1}
        if len(rows) > 1:
            raise ValueError(f"q_region, q_cover and token_owner disagree on the batch size B: got {sorted(rows)}")
        batch = rows.pop() if rows else 1

        # The one host sync: every map in one device-to-host copy; all checks and derivations run on the host.
        parts = [t.reshape(-1).to(torch.int64) for t in (region, cover, owner) if t is not None]
        host = torch.cat(parts).cpu().split([p.numel() for p in parts])
        region_h = host[0].view(region.shape)
        cover_h = None if cover is None else host[1].view(cover.shape)
        owner_h = None if owner is None else host[-1].view(owner.shape)
        _checks.check_routing_values(region_h, cover_h, owner_h, regions)

        region_h = region_h.expand(batch, length)
        cover_h = default_cover(region_h) if cover_h is None else cover_h.expand(batch, length)
        owner_h = None if owner_h is None else owner_h.expand(batch, owner_h.shape[1])
        row_order = torch.argsort(region_h, dim=1, stable=True).to(torch.int32)
        group_order, table, tokens, visible = _torch_groups(region_h, cover_h, owner_h)

        def upload(t: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
            return None if t is None else t.to(dtype).contiguous().to(device)

        group_tokens, group_visible = upload(tokens, torch.bool), upload(visible, torch.int64)
        # How many groups and visible tokens there are follows the masks: told to torch.compile as sizes that
        # vary, a compiled step given the next edit's plan of the same image size is not recompiled.
        for t in (table, group_tokens, group_visible):
            if t is not None:
                torch._dynamo.maybe_mark_dynamic(t, 0)
        return cls(
            q_region=upload(region_h, torch.int32),
            q_cover=upload(cover_h, torch.int32),
            token_owner=upload(owner_h, torch.int32),
            row_order=upload(row_order, torch.int32),
            group_order=upload(group_order, torch.int64),
            group_table=table,
            group_tokens=group_tokens,
            group_visible=group_visible,
            regions=regions,
        )


def _as_map(name: str, t: object, device: torch.device | None, axis: str = "L") -> torch.Tensor | None:
    """``t`` as a ``(rows, N)`` integer map; a batch-broadcast view (stride 0) becomes one row."""
    if t is None:
        return None
    layouts = f"(B, {axis}) or ({axis},)"
    _checks.check_integer_map(name, t, axis)
    if t.dim() not in (1, 2):
        raise ValueError(f"{name} must have shape {layouts}, got {tuple(t.shape)}")
    if device is not None and t.device != device:
        raise ValueError(f"{name} is on {t.device} but q_region is on {device}; they must match")
    if t.dim() == 1:
        return t[None]
    if t.shape[0] > 1 and t.stride(0) == 0:
        return t[:1]
    return t


def _torch_groups(
    region: torch.Tensor, cover: torch.Tensor, owner: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """The torch backend's groups of host maps ``region``, ``cover`` ``(Br, L)``, ``owner`` ``(Br, S)``.

    Pixels are sorted by (region, the cover bits that some token depends on); each run of equal keys reads
    one region's values and may see the same tokens.
    """
    orders, table, token_rows, visible = [], [], [], []
    at = 0
    for row in range(region.shape[0]):
        key = region[row] << 32
        owners = [] if owner is None else sorted(set(owner[row].tolist()) - {-1})
        if owners:
            key = key | (cover[row] & sum(1 << j for j in owners))
        sorted_key, order = torch.sort(key, stable=True)
        keys, counts = torch.unique_consecutive(sorted_key, return_counts=True)
        orders.append(order)
        start = 0
        for k, n in zip(keys.tolist(), counts.tolist(), strict=True):
            n_visible = 0 if owner is None else owner.shape[1]
            if owner is not None:
                row_owner = owner[row]
                tokens = (row_owner < 0) | (((k & 0xFFFFFFFF) >> row_owner.clamp(min=0)) & 1).bool()
                index = tokens.nonzero().squeeze(1)
                n_visible = index.numel()
                token_rows.append(tokens)
                visible.append(index)
            table.append([row, k >> 32, start, start + n, n_visible, at])
            at += n_visible
            start += n
    group_order = torch.stack(orders)
    group_table = torch.tensor(table, dtype=torch.int64).view(-1, 6)
    group_tokens = torch.stack(token_rows) if token_rows else None
    group_visible = torch.cat(visible) if visible else torch.zeros(0, dtype=torch.int64)
    return group_order, group_table, group_tokens, group_visible


def check_token_maps(q_cover: torch.Tensor, token_owner: torch.Tensor) -> bool:
    """Range checks of the token restriction's maps alone (``token_restricted_softmax`` given raw maps): one
    device-to-host copy. Returns True, so that the result can be memoised."""
    parts = [q_cover.reshape(-1).to(torch.int64), token_owner.reshape(-1).to(torch.int64)]
    cover_h, owner_h = torch.cat(parts).cpu().split([p.numel() for p in parts])
    _checks.check_routing_values(cover_h.new_zeros(0), cover_h, owner_h, 1)
    return True
