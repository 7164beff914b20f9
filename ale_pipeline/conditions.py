"""The text conditions of one edit: what each branch of the sampler and each RGB-CAM region reads.

With ORE (docs/method.md section 3.3) the source branch reads the substituted source prompt ``S(P_src)`` and
the regions read ``[ORE_1, ..., ORE_N, S(P_tgt)]``; without it the source branch reads its plain prompt and
every region the plain target prompt. The target branch's condition (RGB-CAM's keys) is ``E(P_tgt)`` either
way, and the unconditional one ``E("")``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .ddcm_loop import BranchTexts
from .ore import Encode, build_ore
from .prompts import EditPrompts


@dataclass(frozen=True)
class EditConditions:
    """Text conditions of one edit; ``S`` = 77 token positions, ``C`` the text encoder's width, ``N`` objects.

    Attributes:
        prompts: the edit's prompts and token spans.
        uncond: ``(1, S, C)``, the empty prompt's embedding (both branches' unconditional entries).
        source: ``(1, S, C)``, the source branch's condition.
        target: ``(1, S, C)`` = ``E(P_tgt)``, the target branch's condition.
        region_embeds: ``(N + 1, S, C)``, the values RGB-CAM reads per region (objects in edit order, the
            background last).
        token_owner: ``(S,)`` int64 on the CPU: ``k`` on object ``k``'s target tokens, ``-1`` elsewhere.
        added: SDXL's global conditions per branch (``uncond``, ``source``, ``target``), each a dict of
            ``text_embeds`` ``(1, P)`` (the pooled text embedding) and ``time_ids`` ``(1, 6)``; None for SD1.5.
    """

    prompts: EditPrompts
    uncond: torch.Tensor
    source: torch.Tensor
    target: torch.Tensor
    region_embeds: torch.Tensor
    token_owner: torch.Tensor
    added: dict[str, dict[str, torch.Tensor]] | None = None

    def to(self, device: torch.device | str, dtype: torch.dtype) -> EditConditions:
        """The embeddings on ``device`` in ``dtype`` (``token_owner`` stays an int64 CPU tensor)."""
        cast = dict(device=device, dtype=dtype)
        added = None
        if self.added is not None:
            added = {branch: {k: v.to(**cast) for k, v in entries.items()} for branch, entries in self.added.items()}
        return EditConditions(
            prompts=self.prompts,
            uncond=self.uncond.to(**cast),
            source=self.source.to(**cast),
            target=self.target.to(**cast),
            region_embeds=self.region_embeds.to(**cast),
            token_owner=self.token_owner,
            added=added,
        )

    def branches(self, with_target: bool = True) -> BranchTexts:
        """What the sampling loop conditions on: both branches (the edit) or the source alone (the
        attention-mask pass), with the added conditions of the branches that run."""
        added = self.added
        if added is not None and not with_target:
            added = {name: added[name] for name in ("uncond", "source")}
        return BranchTexts(self.uncond, self.source, self.target if with_target else None, added)


def encode_conditions(
    encode: Encode, prompts: EditPrompts, *, use_ore: bool = True, published_ore: bool = False
) -> EditConditions:
    """Encode an edit's texts and assemble its conditions.

    Args:
        encode: maps ``n`` strings to ``(n, S, C)`` (e.g. :func:`~ale_pipeline.ore.clip_encoder`).
        prompts: from :func:`~ale_pipeline.prompts.build_prompts` with the same tokenizer.
        use_ore: ORE's substituted and restricted embeddings (True), or the plain prompts (the ablation).
        published_ore: the published code's indexing of the substituted base (see
            :func:`~ale_pipeline.ore.substituted_base`); it changes only ``source`` and the background's entry
            of ``region_embeds``.
    """
    edit = build_ore(encode, prompts, published_quirk=published_ore)
    uncond = encode([""])
    if use_ore:
        source, regions = edit.source, edit.region_embeds
    else:
        # Without ORE the branches see their plain prompts, and every region reads the target's values.
        plain = encode([prompts.source_prompt, prompts.target_prompt])
        source, regions = plain[0], plain[1][None].expand(prompts.num_objects + 1, -1, -1)
    return EditConditions(
        prompts=prompts,
        uncond=uncond,
        source=source[None],
        target=edit.target[None],
        region_embeds=regions,
        token_owner=edit.token_owner,
    )
