"""Model-level parity of the regional processors: fast backends against the published (reference) math."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor2_0

from ale_kernels.diffusers import (
    RegionalAttnProcessor,
    RegionSpec,
    ale_attention_kwargs,
    ale_region_spec,
    install_regional_processors,
    latent_grid,
)
from ale_kernels.testing.tolerance import assert_close_to_oracle
from tests.model_oracle import float64_twin, upcast_tree
from tests.tiny_models import sdxl_added_cond, tiny_sd15_unet, tiny_sdxl_unet

TOKENS = 77


@pytest.fixture(scope="module")
def sd15_unet():
    return tiny_sd15_unet()


@pytest.fixture(scope="module")
def sdxl_unet():
    return tiny_sdxl_unet()


def ellipse_masks(objects: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """``objects`` overlapping ellipses on a ``height x width`` image."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    masks = []
    for _ in range(objects):
        cy, cx = torch.rand(2, generator=g) * 0.6 + 0.2
        ry, rx = torch.rand(2, generator=g) * 0.2 + 0.12
        masks.append(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1)
    return torch.stack(masks)


def phrase_owners(objects: int, tokens: int = TOKENS) -> torch.Tensor:
    """Object ``j`` owns three tokens after BOS, phrases separated by a shared "and"."""
    owner = torch.full((tokens,), -1)
    for j in range(objects):
        owner[1 + 4 * j : 4 + 4 * j] = j
    return owner


def ale_inputs(objects: int, latent: tuple[int, int], dim: int, seed: int = 0, mask_value: float = -100.0):
    g = torch.Generator().manual_seed(seed)
    height, width = latent
    spec = ale_region_spec(
        ellipse_masks(objects, 8 * height, 8 * width, seed),
        phrase_owners(objects),
        torch.randn(objects + 1, TOKENS, dim, generator=g),
        mask_value=mask_value,
    )
    sample = torch.randn(4, 4, height, width, generator=g)
    text = torch.randn(4, TOKENS, dim, generator=g)
    return spec, sample, text


def run(unet, backend, sample, text, kwargs, **extra):
    with install_regional_processors(unet, backend=backend), torch.no_grad():
        return unet(sample, 500, text, cross_attention_kwargs=kwargs, **extra).sample


_last_oracle: list = []  # (inputs, oracle): the backends compared in one test share one float64 run


def assert_matches_oracle(got: torch.Tensor, expected: torch.Tensor, unet, sample, text, kwargs, **extra) -> None:
    """``got``, a UNet output ``(B, C, h, w)``, against the UNet run in float64 with the reference backend on the
    same inputs: at most a few times the error of ``expected``, the same run in ``got``'s precision (the
    tolerance policy of ``ale_kernels.testing.tolerance``)."""
    inputs = (unet, sample, text, kwargs, *extra.values())
    cached = _last_oracle[0][0] if _last_oracle else ()
    if len(cached) != len(inputs) or any(a is not b for a, b in zip(cached, inputs, strict=True)):
        oracle = run(float64_twin(unet), "reference", sample.double(), text.double(), kwargs, **upcast_tree(extra))
        _last_oracle[:] = [(inputs, oracle)]
    assert_close_to_oracle(got, expected, _last_oracle[0][1], name="UNet output")


@pytest.mark.parametrize("inject", [False, True])
@pytest.mark.parametrize("objects", [1, 2, 3, 5])
def test_sd15_fast_processors_match_reference(sd15_unet, objects, inject):
    spec, sample, text = ale_inputs(objects, (16, 16), 32, seed=objects)
    if objects > 1:
        assert (spec.masks.sum(0) > 1).any(), "the masks must overlap somewhere"
    kwargs = ale_attention_kwargs(spec, inject_qk=inject)
    expected = run(sd15_unet, "reference", sample, text, kwargs)
    for backend in ("torch", "auto"):
        assert_matches_oracle(run(sd15_unet, backend, sample, text, kwargs), expected, sd15_unet, sample, text, kwargs)


@pytest.mark.parametrize("mask_value", [-100.0, float("-inf")])
def test_sd15_non_square_latents(sd15_unet, mask_value):
    spec, sample, text = ale_inputs(3, (16, 24), 32, seed=7, mask_value=mask_value)
    assert (spec.masks.sum(0) > 1).any(), "the masks must overlap somewhere"
    kwargs = ale_attention_kwargs(spec, inject_qk=True)
    expected = run(sd15_unet, "reference", sample, text, kwargs)
    assert_matches_oracle(run(sd15_unet, "torch", sample, text, kwargs), expected, sd15_unet, sample, text, kwargs)


@pytest.mark.parametrize("inject", [False, True])
@pytest.mark.parametrize("objects", [1, 4])
def test_sdxl_fast_processors_match_reference(sdxl_unet, objects, inject):
    spec, sample, text = ale_inputs(objects, (16, 24), 64, seed=objects)
    added = sdxl_added_cond(4)
    kwargs = ale_attention_kwargs(spec, inject_qk=inject)
    expected = run(sdxl_unet, "reference", sample, text, kwargs, added_cond_kwargs=added)
    got = run(sdxl_unet, "torch", sample, text, kwargs, added_cond_kwargs=added)
    assert_matches_oracle(got, expected, sdxl_unet, sample, text, kwargs, added_cond_kwargs=added)


def test_regions_change_only_routed_entries_and_injection_only_targets(sd15_unet):
    """Per-entry effects hold through the whole UNet: the batch entries are independent."""
    spec, sample, text = ale_inputs(2, (16, 16), 32)
    plain = run(sd15_unet, "torch", sample, text, {})
    regional = run(sd15_unet, "torch", sample, text, ale_attention_kwargs(spec, inject_qk=False))
    injected = run(sd15_unet, "torch", sample, text, ale_attention_kwargs(None, inject_qk=True))
    # Untouched entries match the plain run to rounding, not bit for bit: the routed and injected calls batch
    # the entries differently, and how a CPU's kernels block a batch changes the last bits.
    oracle = run(float64_twin(sd15_unet), "reference", sample.double(), text.double(), {})
    assert_close_to_oracle(regional[:3], plain[:3], oracle[:3], name="unrouted entries")
    assert_close_to_oracle(injected[[0, 2]], plain[[0, 2]], oracle[[0, 2]], name="sources under injection")
    assert not torch.allclose(regional[3], plain[3]) and not torch.allclose(injected[[1, 3]], plain[[1, 3]])


def test_no_regions_no_injection_equals_attn_processor_2_0(sd15_unet):
    _, sample, text = ale_inputs(1, (16, 16), 32)
    with torch.no_grad():
        sd15_unet.set_attn_processor(AttnProcessor2_0())
        expected = sd15_unet(sample, 500, text).sample
    for backend in ("torch", "reference"):
        got = run(sd15_unet, backend, sample, text, {"regions": None})
        assert_matches_oracle(got, expected, sd15_unet, sample, text, {"regions": None})


def test_injection_with_identical_branches_is_a_no_op(sd15_unet):
    """If target and source inputs are equal, injecting the source's Q/K changes nothing."""
    _, sample, text = ale_inputs(1, (16, 16), 32)
    sample[1], sample[3], text[1], text[3] = sample[0], sample[2], text[0], text[2]
    out = run(sd15_unet, "torch", sample, text, ale_attention_kwargs(None, inject_qk=True))
    # The uninjected entries are the float32 yardstick for the injected ones.
    kwargs = ale_attention_kwargs(None, inject_qk=True)
    oracle = run(float64_twin(sd15_unet), "reference", sample.double(), text.double(), kwargs)
    assert_close_to_oracle(out[1], out[0], oracle[1], name="injected source")
    assert_close_to_oracle(out[3], out[2], oracle[3], name="injected target")


def test_uninstall_is_bit_identical_to_a_model_never_touched():
    unet = tiny_sd15_unet(sd15_head_dims=False)
    spec, sample, text = ale_inputs(2, (16, 16), 32)
    before_processors = dict(unet.attn_processors)
    with torch.no_grad():
        untouched = unet(sample, 500, text).sample
        run(unet, "torch", sample, text, ale_attention_kwargs(spec, inject_qk=True))
        after = unet(sample, 500, text).sample
    assert torch.equal(untouched, after)
    assert all(unet.attn_processors[name] is proc for name, proc in before_processors.items())


def test_processors_are_restored_when_the_edit_raises():
    unet = tiny_sd15_unet(sd15_head_dims=False)
    before = dict(unet.attn_processors)
    with pytest.raises(RuntimeError, match="boom"), install_regional_processors(unet):
        assert all(isinstance(p, RegionalAttnProcessor) for p in unet.attn_processors.values())
        raise RuntimeError("boom")
    assert all(unet.attn_processors[name] is proc for name, proc in before.items())


def test_masks_are_resized_once_per_resolution(sd15_unet, monkeypatch):
    spec, sample, text = ale_inputs(2, (16, 24), 32)
    calls = []
    compute = spec._compute_routing
    monkeypatch.setattr(
        spec, "_compute_routing", lambda length, device: calls.append(length) or compute(length, device)
    )
    kwargs = ale_attention_kwargs(spec, inject_qk=False)
    run(sd15_unet, "torch", sample, text, kwargs)
    run(sd15_unet, "torch", sample, text, kwargs)
    assert sorted(calls) == sorted({16 * 24, 8 * 12, 4 * 6, 2 * 3})  # each cross-attention resolution, once


def test_routing_follows_the_overlap_rule():
    masks = torch.zeros(2, 4, 6, dtype=torch.bool)
    masks[0, :, :4] = True
    masks[1, :, 2:] = True
    spec = RegionSpec(masks, phrase_owners(2, 9), torch.zeros(3, 9, 8), batch_index=[0])
    routing = spec.routing(24, torch.device("cpu"))
    assert (routing.height, routing.width) == (4, 6)
    region = routing.q_region.view(4, 6)
    assert (region[:, :2] == 0).all() and (region[:, 2:4] == 2).all() and (region[:, 4:] == 1).all()
    assert (routing.q_cover.view(4, 6)[:, 2:4] == 3).all()


@pytest.mark.parametrize("length, aspect, grid", [(24, 4 / 6, (4, 6)), (96 * 64, 1.5, (96, 64)), (7, 0.2, (1, 7))])
def test_latent_grid(length, aspect, grid):
    assert latent_grid(length, aspect) == grid


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        (dict(masks=torch.zeros(4, 4)), r"masks must be a tensor of shape \(N, H, W\)"),
        (dict(region_embeds=torch.zeros(2, 9, 8)), r"region_embeds must hold N \+ 1 = 3 embeddings"),
        (dict(token_owner=torch.full((9,), 2)), r"token_owner values must be -1 or an object index in \[0, 2\)"),
        (dict(batch_index=[]), r"batch_index must name at least one"),
        (dict(cover_masks=torch.zeros(1, 4, 6)), r"cover_masks must have the shape of masks"),
    ],
)
def test_region_spec_rejects(kwargs, pattern):
    args = dict(
        masks=torch.ones(2, 4, 6), token_owner=phrase_owners(2, 9), region_embeds=torch.zeros(3, 9, 8), batch_index=[0]
    )
    args.update(kwargs)
    with pytest.raises(ValueError, match=pattern):
        RegionSpec(**args)


def test_bad_batch_entries_are_clear_errors_and_processors_come_back(sd15_unet):
    spec, sample, text = ale_inputs(1, (16, 16), 32)
    before = dict(sd15_unet.attn_processors)
    with pytest.raises(ValueError, match=r"qk_injection targets must be batch entries in \[0, 4\)"):
        run(sd15_unet, "torch", sample, text, {"qk_injection": [(0, 9)]})
    with pytest.raises(ValueError, match=r"must name distinct targets that are not sources"):
        run(sd15_unet, "torch", sample, text, {"qk_injection": [(0, 1), (1, 2)]})
    spec.batch_index = [5]
    with pytest.raises(ValueError, match=r"regions.batch_index must be batch entries in \[0, 4\)"):
        run(sd15_unet, "torch", sample, text, {"regions": spec})
    assert all(sd15_unet.attn_processors[name] is proc for name, proc in before.items())


def test_install_rejects_non_models():
    with pytest.raises(TypeError, match=r"model must be a diffusers model"):
        install_regional_processors(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match=r"backend must be one of"):
        install_regional_processors(tiny_sd15_unet(sd15_head_dims=False), backend="fast")


def test_torch_compile_of_the_unet_with_regional_processors():
    """Whole-graph capture of the UNet through the processors and the custom ops (``fullgraph=True``).

    ``aot_eager`` runs dynamo and AOT autograd with the ops' fake kernels, which is what the processors must
    survive; inductor's C++ code generation of the UNet's other layers takes minutes on CI's CPUs and is
    exercised on the ops themselves in ``test_graph_compile.py``."""
    unet = tiny_sd15_unet(sd15_head_dims=False)
    spec, sample, text = ale_inputs(2, (16, 16), 32)
    kwargs = ale_attention_kwargs(spec, inject_qk=True)
    spec.prepare((16, 16), torch.device("cpu"))
    with install_regional_processors(unet, backend="torch"), torch.no_grad():
        expected = unet(sample, 500, text, cross_attention_kwargs=kwargs).sample
        torch._dynamo.reset()
        compiled = torch.compile(unet, fullgraph=True, backend="aot_eager")
        got = compiled(sample, 500, text, cross_attention_kwargs=kwargs).sample
    assert_matches_oracle(got, expected, unet, sample, text, kwargs)
    assert math.isfinite(float(got.abs().max()))


def test_routed_entries_in_any_order(sd15_unet):
    """Entries that are not evenly spaced ascending take the index-tensor path, not slices: same results."""
    spec, sample, text = ale_inputs(2, (16, 16), 32)
    spec = dataclasses.replace(spec, batch_index=[3, 1])
    kwargs = dict(ale_attention_kwargs(spec, inject_qk=False), qk_injection=[(2, 1), (0, 3)])
    expected = run(sd15_unet, "reference", sample, text, kwargs)
    assert_matches_oracle(run(sd15_unet, "torch", sample, text, kwargs), expected, sd15_unet, sample, text, kwargs)
