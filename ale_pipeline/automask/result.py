"""What an automatic mask finder returns: one mask per source phrase, in phrase order."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True, eq=False)
class AutoMasks:
    """Object masks found without drawing them, one per source phrase, ready for ``ALEEditPipeline(masks=...)``.

    Attributes:
        masks: ``(N, H, W)`` bool, undilated (the pipeline dilates them as it dilates drawn masks). ``(H, W)`` is
            the image size the finder worked at: the original image for ``dino-sam``, the edit size for
            ``attention``; the pipeline resizes them (nearest) to the edit size either way.
        phrases: the ``N`` source phrases, in the order of ``masks``.
        method: ``"dino-sam"`` or ``"attention"``.
        scores: ``(N, H, W)`` float in [0, 1] behind the masks where there is one (the normalised attention maps),
            else None.
        details: per-method extras, e.g. ``boxes`` (one ``(n_k, 4)`` xyxy tensor per phrase) and ``labels``.
    """

    masks: torch.Tensor
    phrases: tuple[str, ...]
    method: str
    scores: torch.Tensor | None = None
    details: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.masks, torch.Tensor) or self.masks.dtype != torch.bool or self.masks.dim() != 3:
            raise ValueError(f"masks must be a bool (N, H, W) tensor, got {getattr(self.masks, 'shape', self.masks)!r}")
        if len(self.phrases) != self.masks.shape[0]:
            raise ValueError(f"got {self.masks.shape[0]} masks for {len(self.phrases)} phrases")

    def __len__(self) -> int:
        return self.masks.shape[0]

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)`` of the masks."""
        return self.masks.shape[1], self.masks.shape[2]
