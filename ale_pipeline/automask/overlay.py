"""Pictures of masks, kept importable here for :mod:`ale_pipeline.automask`; they are drawn by
:mod:`ale_pipeline.drawing`."""

from __future__ import annotations

from ..drawing import ALPHA, PALETTE, colour, overlay_masks

__all__ = ["ALPHA", "PALETTE", "colour", "overlay_masks"]
