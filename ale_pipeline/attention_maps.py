"""Per-phrase cross-attention maps of an edit, for pictures, without materialising any attention map.

:class:`PhraseAttentionMaps` is an ``attention_probe`` for :class:`~ale_kernels.diffusers.RegionalAttnProcessor`.
At every cross-attention layer of every step it asks :func:`~ale_kernels.token_restricted_softmax` for the
head-averaged probabilities of the target phrases' tokens only (``(1, L, T)``, never ``(B, heads, L, S)``) for
one batch entry, with the same token restriction the edit uses, and accumulates them on the latent grid.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ale_kernels import token_restricted_softmax
from ale_kernels.diffusers import RegionSpec, latent_grid


class PhraseAttentionMaps:
    """Accumulates each phrase's attention over layers and steps.

    Args:
        spans: token positions of each phrase in the prompt of batch entry ``entry``.
        entry: the attention batch entry to watch (ALE: 3, the target-conditional branch).
        latent_size: ``(h, w)`` of the UNet's input latents; every layer's map is resized to it.
        regions: the edit's regions (their token restriction and mask value are applied), or ``None``.
        backend: the ``token_restricted_softmax`` backend.
    """

    def __init__(
        self,
        spans: Sequence[range],
        entry: int,
        latent_size: tuple[int, int],
        regions: RegionSpec | None = None,
        backend: str = "auto",
    ):
        self.spans = [list(s) for s in spans]
        self.tokens = [t for span in self.spans for t in span]
        self.entry, self.latent_size, self.regions, self.backend = entry, latent_size, regions, backend
        self._sum: torch.Tensor | None = None
        # The token indices as a tensor per device, made once: a list would be copied to the device on every
        # layer of every step (on CUDA a pageable host-to-device copy per call).
        self._token_index: dict[torch.device, torch.Tensor] = {}
        self.calls = 0

    def __call__(self, attn, q: torch.Tensor, k: torch.Tensor) -> None:
        length = q.shape[2]
        restriction = {}
        if self.regions is not None:
            routing = self.regions.routing(length, q.device)
            # The plan was built (and its values checked) once per edit: no per-layer host sync.
            restriction = dict(plan=routing.plan, mask_value=self.regions.mask_value)
        probs = token_restricted_softmax(
            q[self.entry : self.entry + 1], k[self.entry : self.entry + 1], tokens=self._tokens_on(q.device),
            scale=attn.scale, backend=self.backend, **restriction,
        )  # fmt: skip
        aspect = self.latent_size[0] / self.latent_size[1]
        height, width = latent_grid(length, aspect)
        grid = probs[0].T.reshape(1, len(self.tokens), height, width).float()
        grid = F.interpolate(grid, size=self.latent_size, mode="bilinear", align_corners=False)[0]
        self._sum = grid if self._sum is None else self._sum + grid
        self.calls += 1

    def _tokens_on(self, device: torch.device) -> torch.Tensor:
        """``(T,)`` int64 indices of every phrase's tokens, on ``device``."""
        index = self._token_index.get(device)
        if index is None:
            index = self._token_index[device] = torch.tensor(self.tokens, dtype=torch.int64, device=device)
        return index

    def maps(self, image_size: tuple[int, int]) -> torch.Tensor:
        """``(N, H, W)`` in [0, 1]: each phrase's mean over its tokens, layers and steps, scaled to its maximum."""
        if self._sum is None:
            raise RuntimeError("no cross-attention layer was probed: was the probe passed to the UNet?")
        mean = self._sum / self.calls
        per_phrase, start = [], 0
        for span in self.spans:
            per_phrase.append(mean[start : start + len(span)].mean(0))
            start += len(span)
        stacked = torch.stack(per_phrase)[None]
        stacked = F.interpolate(stacked, size=image_size, mode="bilinear", align_corners=False)[0]
        peak = stacked.flatten(1).amax(1).clamp(min=1e-12)[:, None, None]
        return (stacked / peak).clamp(0, 1).cpu()
