"""The shared problem factories: SD1.5's shapes and the realistic ALE inputs follow the routing rule."""

from __future__ import annotations

import pytest
import torch

from ale_kernels import region_attention
from ale_kernels.routing import cover_bits, pixel_regions
from ale_kernels.testing.problems import (
    SD15_SHAPES,
    make_inputs,
    make_problem,
    make_shared_qk_problem,
    object_masks,
    prompt_token_owner,
    sd15_attention_layers,
    sd15_attention_shapes,
)


def test_sd15_shapes_are_the_unet_levels_at_768_px():
    assert SD15_SHAPES == ((9216, 40), (2304, 80), (576, 160))
    assert sd15_attention_shapes(512) == ((4096, 40), (1024, 80), (256, 160))
    layers = sd15_attention_layers(768)
    assert len(layers) == 16 and layers.count((9216, 320)) == 5 and layers[-1] == (144, 1280)


@pytest.mark.parametrize("size", [0, 100])
def test_sd15_shapes_reject_sizes_the_unet_cannot_take(size):
    with pytest.raises(ValueError, match="image_size"):
        sd15_attention_shapes(size)


def test_realistic_inputs_route_by_the_one_rule_and_overlap():
    inp = make_inputs(576, 16, 4, B=2, H=2)
    masks = object_masks(24, 3, 0).reshape(3, 576)
    assert torch.equal(inp.q_region, pixel_regions(masks)) and torch.equal(inp.q_cover, cover_bits(masks))
    # Neighbours touch: some pixels carry two bits and go to the background.
    two_bits = (inp.q_cover & (inp.q_cover - 1)) != 0
    assert two_bits.any() and (inp.q_region[two_bits] == 3).all()
    assert inp.q.shape == (2, 2, 576, 16) and inp.v.shape == (2, 4, 2, 77, 16) and inp.regions == 4


def test_realistic_inputs_in_diffusers_layout_give_the_same_op_contract():
    inp = make_inputs(64, 8, 3, H=2, layout="diffusers")
    assert not inp.q.is_contiguous() and inp.q.transpose(1, 2).is_contiguous()
    out = region_attention(inp.q, inp.k, inp.v, inp.q_region, q_cover=inp.q_cover, token_owner=inp.token_owner)
    assert out.shape == inp.q.shape and inp.to(torch.float64).q.dtype == torch.float64


@pytest.mark.parametrize("kwargs, name", [(dict(L=50, D=8, R=3), "L"), (dict(L=64, D=8, R=1), "R")])
def test_realistic_inputs_name_the_bad_argument(kwargs, name):
    with pytest.raises(ValueError, match=f"{name}="):
        make_inputs(**kwargs)


def test_prompt_owners_leave_separators_shared():
    owner = prompt_token_owner(2, tokens=12)
    assert owner.tolist() == [-1, 0, 0, 0, -1, 1, 1, 1, 1, -1, -1, -1]
    with pytest.raises(ValueError, match="n_objects=20"):
        prompt_token_owner(20, tokens=12)


def test_random_problem_factories_reject_unknown_layouts():
    with pytest.raises(ValueError, match="layout"):
        make_problem(layout="strided")
    with pytest.raises(ValueError, match="layout"):
        make_shared_qk_problem(layout="strided")
