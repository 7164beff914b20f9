"""ALE's use of the regional processors: its 4-entry UNet batch, RGB-CAM on one entry, Q/K injection pairs.

The UNet batch of an ALE edit is ``[source_uncond, target_uncond, source_cond, target_cond]``. RGB-CAM
routes only ``target_cond``: keys from that entry's own (target prompt) text, values from the
object-restricted embeddings (the background's last), tokens restricted by the dilated masks, with the
published ``-100`` mask. Self-attention Q/K injection maps ``source_* -> target_*`` while it is on.
"""

from __future__ import annotations

import torch

from .regions import RegionSpec

ALE_BATCH = ("source_uncond", "target_uncond", "source_cond", "target_cond")
TARGET_COND = ALE_BATCH.index("target_cond")
QK_INJECTION_PAIRS = ((0, 1), (2, 3))
PUBLISHED_MASK_VALUE = -100.0


def ale_region_spec(
    dilated_masks: torch.Tensor,
    token_owner: torch.Tensor,
    ore_embeds: torch.Tensor,
    mask_value: float = PUBLISHED_MASK_VALUE,
) -> RegionSpec:
    """RGB-CAM's regions for one edit.

    Args:
        dilated_masks: ``(N, H, W)`` dilated object masks (routing partition and token restriction alike;
            overlaps go to the background region).
        token_owner: ``(S,)`` owner of each target-prompt token (``-1`` for BOS, "and", EOS, padding).
        ore_embeds: ``(N + 1, S, C)``: each object's restricted embedding, then the substituted base prompt's.
        mask_value: ``-100.0`` as published, or ``-inf`` for an exact restriction.
    """
    return RegionSpec(dilated_masks, token_owner, ore_embeds, batch_index=[TARGET_COND], mask_value=mask_value)


def ale_attention_kwargs(regions: RegionSpec | None, inject_qk: bool) -> dict:
    """``cross_attention_kwargs`` for one UNet call of an ALE edit."""
    return {"regions": regions, "qk_injection": QK_INJECTION_PAIRS if inject_qk else None}
