"""Problem factories shared by the test suite and the benchmarks: SD1.5's attention shapes, realistic ALE
inputs, and random problems that cover the ops' whole contract.

Two kinds of inputs live here, for two purposes:

- :func:`make_inputs` builds what an ALE edit really feeds ``region_attention``: a few dilated object masks
  that touch, routed by :func:`ale_kernels.routing.pixel_regions`, and a CLIP prompt whose object phrases own
  their tokens. The benchmarks time these, so that the numbers mean something for an edit.
- :func:`make_problem` and :func:`make_shared_qk_problem` draw random problems (ragged lengths, broadcast
  routing, blind rows, strided layouts) for the tests, which care about every corner of the contract.

Only torch is needed: no diffusers, no transformers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F

from ale_kernels.routing import cover_bits, pixel_regions

__all__ = [
    "CLIP_TOKENS",
    "HEADS",
    "REGION_COUNTS",
    "SD15_CHANNELS",
    "SD15_SHAPES",
    "TEXT_DIM",
    "Inputs",
    "Problem",
    "diffusers_layout",
    "make_inputs",
    "make_problem",
    "make_shared_qk_problem",
    "object_masks",
    "prompt_token_owner",
    "sd15_attention_layers",
    "sd15_attention_shapes",
]

#: Attention heads of every SD1.5 transformer block.
HEADS = 8
#: Tokens of a CLIP text prompt (BOS, words, EOS, padding).
CLIP_TOKENS = 77
#: Width of CLIP ViT-L's text embeddings, the cross-attention's key/value input.
TEXT_DIM = 768
#: Channels of SD1.5's UNet at its three attention levels (latent side, /2, /4); head dim is channels / 8.
SD15_CHANNELS = (320, 640, 1280)
#: Region counts an edit typically has: 1 to 3 objects plus the background.
REGION_COUNTS = (2, 3, 4)


def sd15_attention_shapes(image_size: int = 768) -> tuple[tuple[int, int], ...]:
    """``(L, D)`` of SD1.5's attention at each UNet level for a square ``image_size`` px image.

    ``L`` is the number of latent pixels a layer attends from (the VAE downsamples by 8, each UNet level by a
    further 2), ``D`` the head dim. The same pairs serve cross-attention (``S = 77`` text tokens) and
    self-attention (``Lk = L``).
    """
    if image_size < 32 or image_size % 32:
        raise ValueError(f"image_size must be a positive multiple of 32, got {image_size}")
    side = image_size // 8
    return tuple(((side >> level) ** 2, channels // HEADS) for level, channels in enumerate(SD15_CHANNELS))


#: SD1.5 at 768 px: ``((9216, 40), (2304, 80), (576, 160))``.
SD15_SHAPES: tuple[tuple[int, int], ...] = sd15_attention_shapes(768)


def sd15_attention_layers(image_size: int) -> list[tuple[int, int]]:
    """``(pixels, channels)`` of the 16 transformer blocks of one SD1.5 UNet forward at ``image_size`` px.

    Per level, 2 blocks in the down path and 3 in the up path; then the mid block at the lowest resolution.
    Each block runs one self-attention and one cross-attention layer on ``pixels`` latent positions.
    """
    if image_size < 64 or image_size % 64:
        raise ValueError(f"image_size must be a positive multiple of 64, got {image_size}")
    side = image_size // 8
    layers = []
    for level, channels in enumerate(SD15_CHANNELS):
        layers += [((side >> level) ** 2, channels)] * 5
    layers.append(((side >> 3) ** 2, SD15_CHANNELS[-1]))
    return layers


# ----------------------------------------------------------------------------------------------------------
# Realistic ALE inputs


@dataclass
class Inputs:
    """One realistic ``region_attention`` call, routing shared by the batch.

    Attributes:
        q: ``(B, H, L, D)`` queries of ``L`` latent pixels.
        k: ``(B, H, S, D)`` keys of ``S`` text tokens, shared by all regions.
        v: ``(B, R, H, S, D)`` one value set per region, the background last.
        q_region: ``(L,)`` int64 region of each pixel, in ``[0, R)``.
        q_cover: ``(L,)`` int32 bit mask of the objects whose dilated masks cover each pixel.
        token_owner: ``(S,)`` int64: ``-1`` for a shared token, else the object whose phrase owns it.
    """

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    q_region: torch.Tensor
    q_cover: torch.Tensor
    token_owner: torch.Tensor

    @property
    def regions(self) -> int:
        """``R``: the objects plus the background."""
        return self.v.shape[1]

    @property
    def scale(self) -> float:
        """The softmax scale, ``D ** -0.5``."""
        return self.q.shape[-1] ** -0.5

    def to(self, dtype: torch.dtype) -> Inputs:
        """A copy with q, k and v in ``dtype`` (e.g. float64 for an oracle); routing maps are shared."""
        return replace(self, q=self.q.to(dtype), k=self.k.to(dtype), v=self.v.to(dtype))


def object_masks(side: int, n_objects: int, seed: int) -> torch.Tensor:
    """``n_objects`` dilated object masks, ``(n_objects, side, side)`` bool, on a ``side x side`` grid.

    Discs, ellipses and rectangles at fixed pseudo-random places around the centre, sized so that neighbours
    overlap a little, as the dilated masks of an edit's objects do. The layout is drawn in unit coordinates, so
    every resolution shows the same picture.
    """
    if side < 1 or n_objects < 1:
        raise ValueError(f"side and n_objects must be positive, got side={side}, n_objects={n_objects}")
    gen = torch.Generator().manual_seed(seed)
    coords = (torch.arange(side, dtype=torch.float64) + 0.5) / side
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    masks = []
    for j in range(n_objects):
        jitter = torch.rand(4, generator=gen, dtype=torch.float64).tolist()
        angle = 2 * math.pi * (j + 0.3 * jitter[0]) / n_objects
        ring = {1: 0.0, 2: 0.17}.get(n_objects, 0.22)  # close enough to the centre that neighbours touch
        cy = 0.5 + ring * math.sin(angle) + 0.04 * (jitter[1] - 0.5)
        cx = 0.5 + ring * math.cos(angle) + 0.04 * (jitter[2] - 0.5)
        size = 0.17 + 0.05 * jitter[3]
        dy, dx = y - cy, x - cx
        kind = j % 3
        if kind == 0:
            mask = dy**2 + dx**2 <= size**2
        elif kind == 1:  # wider than tall
            mask = (dx / (1.3 * size)) ** 2 + (dy / (0.75 * size)) ** 2 <= 1.0
        else:  # taller than wide
            mask = (dx.abs() <= 0.8 * size) & (dy.abs() <= 1.1 * size)
        masks.append(mask)
    stacked = torch.stack(masks).float()[:, None]
    # ALE dilates the object masks before routing; about 1/48 of the side (2 latent px at 96).
    radius = max(1, round(side / 48))
    # A square window's max is a row max of column maxes: two 1-D pools, cheap at image resolution too.
    width = 2 * radius + 1
    dilated = F.max_pool2d(stacked, kernel_size=(width, 1), stride=1, padding=(radius, 0))
    dilated = F.max_pool2d(dilated, kernel_size=(1, width), stride=1, padding=(0, radius))
    return dilated[:, 0] > 0


def prompt_token_owner(n_objects: int, tokens: int = CLIP_TOKENS) -> torch.Tensor:
    """``(tokens,)`` int64 owner of each token of a prompt "BOS obj0 words and obj1 words and ... EOS pad...".

    Object ``j`` owns 3 or 4 consecutive tokens; BOS, the "and" separators, EOS and padding are shared (-1).
    """
    owner = torch.full((tokens,), -1, dtype=torch.int64)
    pos = 1  # after BOS
    for j in range(n_objects):
        n_words = 3 + j % 2
        owner[pos : pos + n_words] = j
        pos += n_words + 1  # the "and" (or, after the last object, EOS) stays shared
    if pos > tokens:
        raise ValueError(f"n_objects={n_objects} objects do not fit in a prompt of tokens={tokens}")
    return owner


def make_inputs(
    L: int,
    D: int,
    R: int,
    B: int = 1,
    H: int = HEADS,
    S: int = CLIP_TOKENS,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    seed: int = 0,
    layout: str = "contiguous",
) -> Inputs:
    """Realistic ``region_attention`` inputs: ``R - 1`` objects plus the background, unit-scale random q, k, v.

    Args:
        L: latent pixels, a square (``96 * 96 = 9216`` for SD1.5's first level at 768 px).
        D: head dim. R: regions (``>= 2``). B: batch. H: heads. S: text tokens.
        layout: ``contiguous`` q, or ``diffusers``: q as a ``(B, L, H*D)`` projection viewed per head, which
            is what attention processors pass.

    ``q_cover`` has bit ``j`` set where object ``j``'s dilated mask covers the pixel; ``q_region`` is ``j``
    where object ``j`` alone covers it, else the background ``R - 1`` (overlaps go to the background).
    """
    side = math.isqrt(L)
    if side * side != L:
        raise ValueError(f"L must be a square number of latent pixels, got L={L}")
    if R < 2:
        raise ValueError(f"R must be at least 2 (one object and the background), got R={R}")
    if layout not in ("contiguous", "diffusers"):
        raise ValueError(f"layout must be 'contiguous' or 'diffusers', got layout={layout!r}")
    n_objects = R - 1
    masks = object_masks(side, n_objects, seed).reshape(n_objects, L)
    q_cover, q_region = cover_bits(masks), pixel_regions(masks)

    gen = torch.Generator().manual_seed(seed)
    if layout == "diffusers":
        q = diffusers_layout(B, H, L, D, dtype, gen, device)
    else:
        q = torch.randn(B, H, L, D, generator=gen).to(device=device, dtype=dtype)
    k = torch.randn(B, H, S, D, generator=gen).to(device=device, dtype=dtype)
    v = torch.randn(B, R, H, S, D, generator=gen).to(device=device, dtype=dtype)
    return Inputs(
        q=q,
        k=k,
        v=v,
        q_region=q_region.to(device),
        q_cover=q_cover.to(device),
        token_owner=prompt_token_owner(n_objects, S).to(device),
    )


# ----------------------------------------------------------------------------------------------------------
# Random problems over the whole contract


@dataclass
class Problem:
    """One random ``region_attention`` call. ``kwargs()`` gives its keyword arguments.

    Attributes:
        q: ``(B, H, L, D)`` queries.
        k: ``(B, H, S, D)`` keys shared by the regions, or ``(B, R, H, S, D)`` one key set per region.
        v: ``(B, R, H, S, D)`` one value set per region.
        q_region: ``(B, L)`` (or ``(L,)`` broadcast over the batch) int64 region of each pixel.
        q_cover: like ``q_region``, int32 object bit mask per pixel; None when tokens are unrestricted.
        token_owner: ``(B, S)`` or ``(S,)`` int64 owner of each token (``-1`` shared); None: unrestricted.
        extra: further keyword arguments for the op.
    """

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    q_region: torch.Tensor
    q_cover: torch.Tensor | None
    token_owner: torch.Tensor | None
    extra: dict = field(default_factory=dict)

    def kwargs(self) -> dict:
        """``q_cover``, ``token_owner`` and ``extra`` as keyword arguments of ``region_attention``."""
        return dict(q_cover=self.q_cover, token_owner=self.token_owner, **self.extra)


def diffusers_layout(
    batch: int,
    heads: int,
    length: int,
    head_dim: int,
    dtype: torch.dtype,
    generator: torch.Generator,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Random ``(B, H, L, D)`` as diffusers makes it: a ``(B, L, H*D)`` projection viewed per head, so its
    strides are not contiguous. Drawn from the CPU ``generator``, then moved to ``device``."""
    flat = torch.randn(batch, length, heads * head_dim, generator=generator).to(device=device, dtype=dtype)
    return flat.view(batch, length, heads, head_dim).transpose(1, 2)


def make_problem(
    batch: int = 2,
    heads: int = 2,
    length: int = 37,
    head_dim: int = 40,
    tokens: int = 77,
    regions: int = 3,
    *,
    dtype: torch.dtype = torch.float32,
    k_per_region: bool = False,
    restrict: bool = True,
    overlap: bool = True,
    blind_rows: int = 0,
    shared_routing: bool = False,
    layout: str = "contiguous",
    seed: int = 0,
) -> Problem:
    """A random ``region_attention`` problem: q ``(batch, heads, length, head_dim)``, k and v over ``tokens``
    text tokens and ``regions`` regions (``regions - 1`` objects and the background).

    Args:
        k_per_region: one key set per region, ``(B, R, H, S, D)``, instead of one shared ``(B, H, S, D)``.
        restrict: give tokens owners (else ``token_owner=None`` and ``q_cover=None``).
        overlap: covers carry a second random object bit on about a third of the pixels.
        blind_rows: this many pixels per batch entry get an empty cover, so with owned-only tokens they may
            see nothing (``token_owner`` then owns every token so these rows are really blind).
        shared_routing: routing maps given as ``(L,)`` / ``(S,)`` and broadcast over the batch.
        layout: ``contiguous``, ``diffusers`` (``(B, L, H*D)`` views) or ``sliced`` (every other element of
            a larger tensor along the head dim).
        seed: every draw comes from one CPU generator seeded with it.
    """
    if layout not in ("contiguous", "diffusers", "sliced"):
        raise ValueError(f"layout must be 'contiguous', 'diffusers' or 'sliced', got layout={layout!r}")
    g = torch.Generator().manual_seed(seed)
    objects = max(1, regions - 1)

    def floats(*shape: int) -> torch.Tensor:
        if layout == "sliced":
            wide = torch.randn(*shape[:-1], 2 * shape[-1], generator=g).to(dtype)
            return wide[..., ::2]
        return torch.randn(*shape, generator=g).to(dtype)

    if layout == "diffusers":
        q = diffusers_layout(batch, heads, length, head_dim, dtype, g)
    else:
        q = floats(batch, heads, length, head_dim)
    k_shape = (batch, regions, heads, tokens, head_dim) if k_per_region else (batch, heads, tokens, head_dim)
    k = floats(*k_shape)
    v = floats(batch, regions, heads, tokens, head_dim)

    routing_batch = 1 if shared_routing else batch
    region = torch.randint(0, regions, (routing_batch, length), generator=g)
    cover = torch.where(region < objects, 1 << region.clamp(max=objects - 1), 0).to(torch.int32)
    if overlap and objects > 1:
        extra = torch.randint(0, objects, (routing_batch, length), generator=g)
        chosen = torch.rand(routing_batch, length, generator=g) < 0.35
        cover = torch.where(chosen, cover | (1 << extra).to(torch.int32), cover)
    owner = None
    if restrict:
        owner = torch.randint(-1, objects, (routing_batch, tokens), generator=g)
        if blind_rows:
            owner = torch.randint(0, objects, (routing_batch, tokens), generator=g)
    if blind_rows:
        cover[:, : min(blind_rows, length)] = 0
    if shared_routing:
        region, cover = region[0], cover[0]
        owner = None if owner is None else owner[0]
    return Problem(q, k, v, region, cover if restrict else None, owner)


def make_shared_qk_problem(
    batch: int = 2,
    heads: int = 2,
    length: int = 37,
    n_keys: int = 53,
    head_dim: int = 40,
    *,
    streams: int = 2,
    dtype: torch.dtype = torch.float32,
    layout: str = "contiguous",
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Random ``(q, k, vs)`` for ``shared_qk_attention``: q ``(B, H, L, D)`` with ``L = length``, k and each
    of the ``streams`` value tensors ``(B, H, Lk, D)`` with ``Lk = n_keys``.

    ``layout`` as in :func:`make_problem`: ``contiguous``, ``diffusers`` or ``sliced``, for every tensor. The
    values are drawn on the CPU (the same numbers on every device) and moved to ``device``.
    """
    if layout not in ("contiguous", "diffusers", "sliced"):
        raise ValueError(f"layout must be 'contiguous', 'diffusers' or 'sliced', got layout={layout!r}")
    g = torch.Generator().manual_seed(seed)

    def floats(rows: int) -> torch.Tensor:
        if layout == "diffusers":
            return diffusers_layout(batch, heads, rows, head_dim, dtype, g, device)
        to = dict(device=device, dtype=dtype)
        if layout == "sliced":
            return torch.randn(batch, heads, rows, 2 * head_dim, generator=g).to(**to)[..., ::2]
        return torch.randn(batch, heads, rows, head_dim, generator=g).to(**to)

    return floats(length), floats(n_keys), [floats(n_keys) for _ in range(streams)]
