"""Per-edit region data for the regional attention processors, resized to each attention resolution once.

A :class:`RegionSpec` holds what one edit (or one regional-prompting generation) knows at image resolution:
the object masks, which text tokens each object owns, and one text embedding per region whose projected
values those pixels read. Attention layers see flattened pixel sequences at 1/8, 1/16, ... of the image;
:meth:`RegionSpec.routing` turns the masks into the ops' routing maps for a layer's sequence length, with
nearest-neighbour resizing as the published ALE code does, and builds their
:class:`~ale_kernels.plan.RoutingPlan` (value checks, each backend's derived data). The spec's cache is the one
store of plans: one per resolution and device, built once per edit (by :meth:`RegionSpec.prepare`, or by a
layer's first call) rather than once per layer per step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .._checks import MAX_OBJECTS
from ..plan import RoutingPlan
from ..routing import cover_bits, pixel_regions


@dataclass(frozen=True)
class Routing:
    """The ops' routing at one attention resolution (all on the attention's device).

    ``q_region`` ``(L,)``: the region whose values each pixel reads (object ``j``, or ``N`` = background).
    ``q_cover`` ``(L,)`` int32: bit ``j`` set where object ``j``'s (cover) mask covers the pixel.
    ``token_owner`` ``(S,)``: ``-1`` for shared tokens, else the owning object.
    ``plan``: the same maps as a checked :class:`~ale_kernels.plan.RoutingPlan` for ``N + 1`` regions, what
    the processors pass to the ops.
    """

    height: int
    width: int
    q_region: torch.Tensor
    q_cover: torch.Tensor
    token_owner: torch.Tensor
    plan: RoutingPlan


def _as_mask_stack(name: str, masks: torch.Tensor) -> torch.Tensor:
    if not isinstance(masks, torch.Tensor) or masks.dim() != 3:
        got = tuple(masks.shape) if isinstance(masks, torch.Tensor) else type(masks).__name__
        raise ValueError(f"{name} must be a tensor of shape (N, H, W) (one mask per object), got {got}")
    if masks.shape[0] < 1 or masks.shape[0] > MAX_OBJECTS:
        raise ValueError(f"{name} must hold 1 to {MAX_OBJECTS} object masks, got {masks.shape[0]}")
    return masks > 0.5 if masks.dtype.is_floating_point else masks.bool()


def latent_grid(length: int, aspect: float) -> tuple[int, int]:
    """The ``(height, width)`` with ``height * width == length`` whose ratio is closest to ``aspect`` (h / w).

    A UNet layer sees ``ceil``-halved latents, so its grid keeps the image's aspect up to rounding.
    """
    best, best_err = None, math.inf
    for h in range(1, math.isqrt(length) + 1):
        if length % h:
            continue
        for hh, ww in ((h, length // h), (length // h, h)):
            err = abs(math.log(hh / ww) - math.log(aspect))
            if err < best_err:
                best, best_err = (hh, ww), err
    return best


@dataclass(eq=False)
class RegionSpec:
    """Regions of one edit, for :class:`~ale_kernels.diffusers.RegionalAttnProcessor`.

    Args:
        masks: ``(N, H, W)`` object masks (bool, or float thresholded at 0.5) at any resolution with the
            image's aspect. A pixel covered by exactly one object reads that object's values; pixels covered
            by none or by several read the background's (region ``N``), as ALE's overlap rule does.
        token_owner: ``(S,)`` integer: ``-1`` for tokens every pixel may see, else the object owning it.
        region_embeds: ``(N + 1, S, C)`` text embeddings whose projected values each region reads (objects
            in mask order, the background last), or ``(len(batch_index), N + 1, S, C)`` per routed entry.
        batch_index: the entries of the attention batch that are routed (e.g. ``[1]`` for the conditional
            half of a classifier-free-guidance batch, ``[3]`` for ALE's target-conditional entry). The others
            get plain attention.
        cover_masks: ``(N, H, W)`` masks deciding which tokens a pixel may see (default: ``masks``). ALE uses
            the dilated masks for both.
        mask_value: added to the scores of disallowed tokens; ``-inf`` is exact, ``-100.0`` is published ALE.
    """

    masks: torch.Tensor
    token_owner: torch.Tensor
    region_embeds: torch.Tensor
    batch_index: Sequence[int]
    cover_masks: torch.Tensor | None = None
    mask_value: float = float("-inf")
    _cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.masks = _as_mask_stack("masks", self.masks)
        objects = self.masks.shape[0]
        if self.cover_masks is None:
            self.cover_masks = self.masks
        else:
            self.cover_masks = _as_mask_stack("cover_masks", self.cover_masks)
            if self.cover_masks.shape != self.masks.shape:
                raise ValueError(
                    f"cover_masks must have the shape of masks {tuple(self.masks.shape)}, "
                    f"got {tuple(self.cover_masks.shape)}"
                )
        owner = self.token_owner
        if not isinstance(owner, torch.Tensor) or owner.dim() != 1 or owner.dtype.is_floating_point:
            raise ValueError("token_owner must be a 1-D integer tensor of shape (S,)")
        if owner.numel() and (int(owner.min()) < -1 or int(owner.max()) >= objects):
            raise ValueError(
                f"token_owner values must be -1 or an object index in [0, {objects}), "
                f"got values in [{int(owner.min())}, {int(owner.max())}]"
            )
        embeds = self.region_embeds
        if not isinstance(embeds, torch.Tensor) or embeds.dim() not in (3, 4):
            raise ValueError("region_embeds must be a tensor of shape (N + 1, S, C) or (len(batch_index), N + 1, S, C)")
        expected = (objects + 1, owner.shape[0])
        if tuple(embeds.shape[-3:-1]) != expected:
            raise ValueError(
                f"region_embeds must hold N + 1 = {objects + 1} embeddings of S = {owner.shape[0]} tokens "
                f"(objects in mask order, the background last), got shape {tuple(embeds.shape)}"
            )
        self.batch_index = [int(i) for i in self.batch_index]
        if not self.batch_index:
            raise ValueError("batch_index must name at least one routed batch entry")
        if embeds.dim() == 4 and embeds.shape[0] != len(self.batch_index):
            raise ValueError(
                f"region_embeds has {embeds.shape[0]} per-entry embeddings but batch_index routes "
                f"{len(self.batch_index)} entries"
            )

    @property
    def num_objects(self) -> int:
        return self.masks.shape[0]

    @property
    def aspect(self) -> float:
        """Height over width of the masks (and so of the image)."""
        return self.masks.shape[1] / self.masks.shape[2]

    def routing(self, length: int, device: torch.device) -> Routing:
        """The routing (maps and plan) for an attention layer over ``length`` pixels, built once per
        resolution and device and then looked up."""
        key = (length, _device_key(device))
        cached = self._cache.get(key)
        if cached is None:
            cached = self._cache[key] = self._compute_routing(length, device)
        return cached

    def prepare(self, latent_size: tuple[int, int], device: torch.device, levels: int = 4) -> None:
        """Build the plans for a UNet on ``latent_size`` latents (``levels`` resolutions, each ``ceil``-halved).

        Optional: layers build a missing plan on first use. Doing it before the denoising loop keeps every
        layer call free of plan building (whose value checks copy the maps to the host once), and a
        ``torch.compile``'d forward free of the one-time resizing.
        """
        height, width = latent_size
        for _ in range(levels):
            self.routing(height * width, device)
            height, width = math.ceil(height / 2), math.ceil(width / 2)

    def _compute_routing(self, length: int, device: torch.device) -> Routing:
        height, width = latent_grid(length, self.aspect)

        def resize(masks: torch.Tensor) -> torch.Tensor:
            # Nearest neighbour, no antialiasing: the published ALE code resizes masks so.
            small = F.interpolate(masks[None].float(), size=(height, width), mode="nearest")[0]
            return small.bool().flatten(1).to(device)  # (N, L)

        masks = resize(self.masks)
        covers = masks if self.cover_masks is self.masks else resize(self.cover_masks)
        q_region, q_cover, owner = pixel_regions(masks), cover_bits(covers), self.token_owner.to(device)
        plan = RoutingPlan.build(q_region, q_cover=q_cover, token_owner=owner, regions=self.num_objects + 1)
        return Routing(height, width, q_region, q_cover, owner, plan)


def _device_key(device: torch.device | str) -> str:
    """One key per device: ``"cuda"`` and ``"cuda:0"`` name the same one when 0 is the current device."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return str(device)
