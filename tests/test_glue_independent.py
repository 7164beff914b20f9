"""The processor glue checked against code it does not share.

The parity tests compare the fast backends with ``backend="reference"``, and both run the same
``_regional_cross_attention``: a bug in that glue (which projection makes the region values, how masks are
resized, which batch entry is routed) moves both alike. Here the expected values are built by hand: plain
SDPA on ``q``/``k``/``v`` made from the attention module's own weights, ``attn.to_v`` of the region embeddings
reshaped by hand, and masks indexed at ``arange(h) * H // h`` (nearest resizing, docs/method.md section 3.4).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention

import ale_kernels.diffusers.processor as processor_module
from ale_kernels.diffusers import RegionalAttnProcessor, RegionSpec, ale_region_spec, install_regional_processors
from ale_kernels.diffusers.ale import TARGET_COND
from ale_kernels.testing.tolerance import assert_close_to_oracle
from tests.tiny_models import tiny_sd15_unet

HEADS, HEAD_DIM, QUERY_DIM, TEXT_DIM, TOKENS = 2, 16, 32, 24, 77
LATENT = (6, 8)  # the attention layer's grid; masks are drawn at 8x that
BACKENDS = ["reference", "torch", "cpp"]


def attention_module(seed: int = 0) -> Attention:
    """A cross-attention module with SD1.5's structure in small (to_q/to_k/to_v without bias, to_out with)."""
    torch.manual_seed(seed)
    return Attention(QUERY_DIM, cross_attention_dim=TEXT_DIM, heads=HEADS, dim_head=HEAD_DIM).eval()


def two_objects(height: int, width: int) -> torch.Tensor:
    """Two overlapping rectangles on a ``height x width`` image, edges off the 8-pixel grid."""
    masks = torch.zeros(2, height, width, dtype=torch.bool)
    masks[0, height // 5 : 3 * height // 5 + 3, width // 7 : 4 * width // 7 + 5] = True
    masks[1, 2 * height // 5 + 1 : 4 * height // 5, 3 * width // 7 - 3 : 6 * width // 7] = True
    return masks


def phrase_owners(objects: int) -> torch.Tensor:
    owner = torch.full((TOKENS,), -1)
    for j in range(objects):
        owner[1 + 4 * j : 4 + 4 * j] = j
    return owner


def inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``hidden`` ``(4, L, QUERY_DIM)`` and ``text`` ``(4, S, TEXT_DIM)``: ALE's 4-entry batch."""
    g = torch.Generator().manual_seed(seed)
    length = LATENT[0] * LATENT[1]
    return torch.randn(4, length, QUERY_DIM, generator=g), torch.randn(4, TOKENS, TEXT_DIM, generator=g)


def plain_attention(attn: Attention, hidden: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """Cross-attention by hand from the module's weights: ``to_out(SDPA(to_q h, to_k c, to_v c))``."""
    batch, length, _ = hidden.shape

    def heads(x):
        return x.view(batch, x.shape[1], HEADS, HEAD_DIM).transpose(1, 2)

    q, k, v = heads(attn.to_q(hidden)), heads(attn.to_k(text)), heads(attn.to_v(text))
    out = F.scaled_dot_product_attention(q, k, v, scale=HEAD_DIM**-0.5)
    return attn.to_out[1](attn.to_out[0](out.transpose(1, 2).reshape(batch, length, HEADS * HEAD_DIM)))


def regional(attn: Attention, backend: str, hidden, text, spec: RegionSpec) -> torch.Tensor:
    with torch.no_grad():
        return RegionalAttnProcessor(backend)(attn, hidden, encoder_hidden_states=text, regions=spec)


def assert_plain(got: torch.Tensor, attn: Attention, hidden, text, name: str) -> None:
    """``got`` against :func:`plain_attention`, in float32 and (the oracle) in float64."""
    with torch.no_grad():
        expected = plain_attention(attn, hidden, text)
        oracle = plain_attention(copy.deepcopy(attn).double(), hidden.double(), text.double())
    assert_close_to_oracle(got, expected, oracle, name=name)


@pytest.mark.parametrize("backend", BACKENDS)
def test_unrestricted_regions_reading_the_entrys_own_text_are_plain_attention(backend):
    """token_owner all -1 and every region's embedding = the routed entry's text: routing changes nothing."""
    attn = attention_module()
    hidden, text = inputs()
    spec = RegionSpec(
        two_objects(8 * LATENT[0], 8 * LATENT[1]),
        torch.full((TOKENS,), -1),
        text[TARGET_COND].expand(3, -1, -1).clone(),
        batch_index=[TARGET_COND],
        mask_value=-100.0,
    )
    assert_plain(regional(attn, backend, hidden, text, spec), attn, hidden, text, f"{backend} regional")


@pytest.mark.parametrize("backend", BACKENDS)
def test_ale_routes_exactly_the_target_cond_entry(backend):
    """ALE's spec routes entry 3 (target_cond) only: entries 0-2 are plain attention, entry 3 is not."""
    attn = attention_module(1)
    hidden, text = inputs(1)
    g = torch.Generator().manual_seed(2)
    spec = ale_region_spec(
        two_objects(8 * LATENT[0], 8 * LATENT[1]), phrase_owners(2), torch.randn(3, TOKENS, TEXT_DIM, generator=g)
    )
    assert TARGET_COND == 3 and spec.batch_index == [3]
    got = regional(attn, backend, hidden, text, spec)
    assert_plain(got[:3], attn, hidden[:3], text[:3], f"{backend} unrouted entries")
    with torch.no_grad():
        plain = plain_attention(attn, hidden[3:], text[3:])
    # Other values, restricted tokens: the routed entry moves by far more than rounding.
    assert (got[3:] - plain).abs().max() > 0.1 * plain.abs().max()


def _capture_region_attention(monkeypatch) -> list[tuple]:
    """Record the arguments of every ``region_attention`` call the processors make."""
    calls: list[tuple] = []
    original = processor_module.region_attention

    def recording(q, k, values, plan, **kwargs):
        calls.append((q, k, values, plan))
        return original(q, k, values, plan, **kwargs)

    monkeypatch.setattr(processor_module, "region_attention", recording)
    return calls


def test_region_values_are_to_v_of_the_region_embeddings(monkeypatch):
    calls = _capture_region_attention(monkeypatch)
    attn = attention_module(3)
    hidden, text = inputs(3)
    embeds = torch.randn(3, TOKENS, TEXT_DIM, generator=torch.Generator().manual_seed(4))
    spec = ale_region_spec(two_objects(8 * LATENT[0], 8 * LATENT[1]), phrase_owners(2), embeds)
    regional(attn, "torch", hidden, text, spec)
    (_, _, values, _) = calls[0]
    with torch.no_grad():
        by_hand = attn.to_v(embeds).view(3, TOKENS, HEADS, HEAD_DIM).permute(0, 2, 1, 3)[None]
        oracle = copy.deepcopy(attn).double().to_v(embeds.double()).view(3, TOKENS, HEADS, HEAD_DIM).permute(0, 2, 1, 3)
    assert values.shape == (1, 3, HEADS, TOKENS, HEAD_DIM)
    assert_close_to_oracle(values, by_hand, oracle[None], name="region values")


# ----------------------------------------------------------------------------------------------------------
# Routing at every UNet resolution, against masks indexed by hand.

IMAGE = (128, 192)  # a 16 x 24 latent: the tiny UNet's layers run at 16x24, 8x12, 4x6 and 2x3
GRIDS = [(16, 24), (8, 12), (4, 6), (2, 3)]


def three_objects() -> torch.Tensor:
    """Ellipses and a thin bar with overlaps, edges at no multiple of any downscale factor."""
    height, width = IMAGE
    yy, xx = torch.meshgrid(torch.arange(height).float(), torch.arange(width).float(), indexing="ij")
    a = ((yy - 45.3) / 30.1) ** 2 + ((xx - 61.7) / 41.9) ** 2 <= 1
    b = ((yy - 81.1) / 27.3) ** 2 + ((xx - 113.2) / 52.6) ** 2 <= 1
    c = torch.zeros_like(a)
    c[13:117, 147:159] = True
    return torch.stack([a, b, c])


def routing_by_hand(masks: torch.Tensor, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(q_region, q_cover)`` ``(h * w,)`` from masks sampled at ``arange(h) * H // h`` (nearest)."""
    h, w = grid
    rows = torch.arange(h) * masks.shape[1] // h
    cols = torch.arange(w) * masks.shape[2] // w
    small = masks[:, rows][:, :, cols].flatten(1)  # (N, L)
    objects = masks.shape[0]
    alone = small.sum(0) == 1
    region = torch.where(alone, small.long().argmax(0), torch.full_like(alone, objects, dtype=torch.long))
    cover = sum(small[j].long() << j for j in range(objects))
    return region, cover


def test_hand_indexed_masks_differ_from_a_bilinear_resize():
    """The fixture can tell nearest from bilinear resizing at the coarse grids (else the test below could not)."""
    masks = three_objects()
    differs = []
    for h, w in GRIDS[1:]:
        bilinear = F.interpolate(masks[None].float(), size=(h, w), mode="bilinear")[0].bool().flatten(1)
        nearest = masks[:, torch.arange(h) * IMAGE[0] // h][:, :, torch.arange(w) * IMAGE[1] // w].flatten(1)
        differs.append(bool((bilinear != nearest).any()))
    assert all(differs)


@pytest.mark.parametrize("grid", GRIDS)
def test_spec_routing_at_every_resolution_is_nearest_resizing(grid):
    masks = three_objects()
    spec = RegionSpec(masks, phrase_owners(3), torch.zeros(4, TOKENS, 8), batch_index=[0])
    routing = spec.routing(grid[0] * grid[1], torch.device("cpu"))
    region, cover = routing_by_hand(masks, grid)
    assert (routing.height, routing.width) == grid
    assert torch.equal(routing.q_region.flatten().long(), region)
    assert torch.equal(routing.q_cover.flatten().long(), cover)
    assert torch.equal(routing.token_owner.long(), phrase_owners(3))
    assert torch.equal(routing.plan.q_region[0].long(), region)
    assert torch.equal(routing.plan.q_cover[0].long(), cover)


def test_processor_routes_every_unet_layer_by_nearest_resized_masks(monkeypatch):
    """Every cross-attention call of a UNet on 16 x 24 latents gets the hand-resized maps of its grid."""
    calls = _capture_region_attention(monkeypatch)
    unet = tiny_sd15_unet(sd15_head_dims=False)
    masks = three_objects()
    g = torch.Generator().manual_seed(5)
    spec = ale_region_spec(masks, phrase_owners(3), torch.randn(4, TOKENS, 32, generator=g))
    sample = torch.randn(4, 4, *GRIDS[0], generator=g)
    text = torch.randn(4, TOKENS, 32, generator=g)
    with install_regional_processors(unet, backend="torch"), torch.no_grad():
        unet(sample, 500, text, cross_attention_kwargs={"regions": spec})
    by_length = {h * w: routing_by_hand(masks, (h, w)) for h, w in GRIDS}
    seen = set()
    for _, _, _, plan in calls:
        region, cover = by_length[plan.length]
        assert torch.equal(plan.q_region[0].long(), region) and torch.equal(plan.q_cover[0].long(), cover)
        seen.add(plan.length)
    assert seen == set(by_length)
