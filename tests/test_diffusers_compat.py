"""The regional processor under diffusers' own kinds of use: direct calls as ``AttnProcessor2_0`` is called,
layer-skip hooks, ``set_default_attn_processor``, UNets with added key/value projections, IP-Adapter loading."""

from __future__ import annotations

import contextlib
import copy
import inspect

import pytest
import torch
from diffusers.hooks import LayerSkipConfig, apply_layer_skip
from diffusers.models.attention_processor import AttnAddedKVProcessor2_0, AttnProcessor

from ale_kernels.diffusers import RegionalAttnProcessor, install_regional_processors
from ale_kernels.testing.tolerance import assert_close_to_oracle, max_abs_error
from tests.tiny_models import tiny_added_kv_unet, tiny_sd15_unet

# The first down block: full resolution (the mid block of an 8 x 8 latent has one pixel, where skipping the
# attention scores changes nothing).
FIRST_BLOCKS = "down_blocks.0.attentions.0.transformer_blocks"


@pytest.fixture(scope="module")
def unet():
    return tiny_sd15_unet(sd15_head_dims=False)


def _inputs(batch: int = 2, size: int = 8, tokens: int = 7, dim: int = 32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 4, size, size, generator=g), torch.randn(batch, tokens, dim, generator=g)


# -- point 2: the direct-call signature ---------------------------------------------------------------------


def test_direct_call_accepts_and_ignores_what_attn_processor_2_0_does(unet):
    attn = unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1
    hidden = torch.randn(2, 16, attn.to_q.in_features, generator=torch.Generator().manual_seed(1))
    proc = RegionalAttnProcessor("torch")
    with torch.no_grad():
        plain = proc(attn, hidden)
        with pytest.warns(FutureWarning, match="scale"):
            scaled = proc(attn, hidden, scale=0.5)
        with pytest.warns(FutureWarning, match="positional"):
            sixth = proc(attn, hidden, None, None, None, 0.5)  # once bound to ``regions``: an AttributeError
        unknown = proc(attn, hidden, some_future_keyword=1)  # ignored silently, as the stock processor does
    assert torch.equal(scaled, plain) and torch.equal(sixth, plain) and torch.equal(unknown, plain)
    params = inspect.signature(proc.__call__).parameters
    assert all(params[name].kind is inspect.Parameter.KEYWORD_ONLY for name in ("regions", "qk_injection",
                                                                              "attention_probe"))  # fmt: skip


def test_ale_keywords_still_reach_the_processor_through_cross_attention_kwargs(unet):
    sample, text = _inputs()
    seen = []
    with install_regional_processors(unet, backend="torch"), torch.no_grad():
        plain = unet(sample, 10, text).sample
        kwargs = {"qk_injection": [(0, 1)], "attention_probe": lambda *a: seen.append(1)}
        injected = unet(sample, 10, text, cross_attention_kwargs=kwargs).sample
    assert seen  # every cross-attention layer called the probe
    assert torch.equal(injected[0], plain[0]) and not torch.equal(injected[1], plain[1])


# -- point 3: layer-skip hooks, set_default_attn_processor ---------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        dict(skip_attention=True, skip_ff=False),
        dict(skip_attention=False, skip_attention_scores=True, skip_ff=False),
    ],
    ids=["skip_attention", "skip_attention_scores"],
)
def test_layer_skip_skips_with_our_processors_as_with_the_stock_one(unet, config):
    sample, text = _inputs()
    with torch.no_grad():
        unskipped = unet(sample, 10, text).sample
    outputs = {}
    for name, model in (("stock", copy.deepcopy(unet)), ("ours", copy.deepcopy(unet)),
                        ("oracle", copy.deepcopy(unet).double())):  # fmt: skip
        x, c = (sample.double(), text.double()) if name == "oracle" else (sample, text)
        with contextlib.ExitStack() as installed, torch.no_grad():
            if name == "ours":
                installed.enter_context(install_regional_processors(model, backend="torch"))
            apply_layer_skip(model, LayerSkipConfig(indices=[0], fqn=FIRST_BLOCKS, **config))
            outputs[name] = model(x, 10, c).sample
    assert_close_to_oracle(outputs["ours"], outputs["stock"], outputs["oracle"], name="skipped UNet output")
    # The skip took effect: the output moved far more than any backend's rounding.
    assert max_abs_error(outputs["ours"], unskipped) > 1e3 * max_abs_error(outputs["ours"], outputs["stock"]) + 1e-4


def test_handle_remove_is_the_way_back_to_set_default_attn_processor():
    model = tiny_sd15_unet(sd15_head_dims=False)
    handle = install_regional_processors(model, backend="torch")
    with pytest.raises(ValueError):  # diffusers accepts only its own processor classes there
        model.set_default_attn_processor()
    handle.remove()
    model.set_default_attn_processor()
    assert all(type(p) is AttnProcessor for p in model.attn_processors.values())  # diffusers' default


# -- point 4: UNets with added key/value projections --------------------------------------------------------


def test_added_kv_layers_keep_their_processors_and_outputs():
    model = tiny_added_kv_unet()
    sample, text = _inputs(dim=16)
    before = dict(model.attn_processors)
    assert before and all(isinstance(p, AttnAddedKVProcessor2_0) for p in before.values())
    with torch.no_grad():
        expected = model(sample, 10, text).sample
        with install_regional_processors(model, backend="torch"):
            assert all(model.attn_processors[name] is proc for name, proc in before.items())
            got = model(sample, 10, text, cross_attention_kwargs={"qk_injection": [(0, 1)]}).sample
    assert torch.equal(got, expected)  # nothing of those layers was touched


def test_mixed_unet_gets_ours_on_ordinary_layers_only():
    model = tiny_added_kv_unet(mixed=True)
    sample, text = _inputs(dim=16)
    with torch.no_grad():
        plain = model(sample, 10, text).sample
        with install_regional_processors(model, backend="torch"):
            kinds = {name: type(model.get_submodule(name.removesuffix(".processor")).processor)
                     for name in model.attn_processors}  # fmt: skip
            injected = model(sample, 10, text, cross_attention_kwargs={"qk_injection": [(0, 1)]}).sample
    assert set(kinds.values()) == {RegionalAttnProcessor, AttnAddedKVProcessor2_0}
    assert all((kind is AttnAddedKVProcessor2_0) == ("transformer_blocks" not in name) for name, kind in kinds.items())
    assert torch.equal(injected[0], plain[0]) and not torch.equal(injected[1], plain[1])


# -- point 5: an IP-Adapter loaded while our processors are installed ---------------------------------------


def _tiny_ip_adapter_state_dict(model, image_embed_dim: int = 12) -> dict:
    """An IP-Adapter state dict in the layout diffusers loads (``image_proj`` of a plain IP-Adapter, ``ip_adapter``
    with one ``to_k_ip``/``to_v_ip`` pair per cross-attention layer, numbered 1, 3, 5, ... in processor order),
    shaped from the model's own layers; random weights."""
    g = torch.Generator().manual_seed(0)
    cross_dim = model.config.cross_attention_dim
    image_proj = {
        "proj.weight": torch.randn(4 * cross_dim, image_embed_dim, generator=g),
        "proj.bias": torch.randn(4 * cross_dim, generator=g),
        "norm.weight": torch.ones(cross_dim),
        "norm.bias": torch.zeros(cross_dim),
    }
    ip_adapter, key_id = {}, 1
    for name in model.attn_processors:
        if name.endswith("attn2.processor"):
            to_k = model.get_submodule(name.removesuffix(".processor")).to_k.weight
            ip_adapter[f"{key_id}.to_k_ip.weight"] = torch.randn(to_k.shape, generator=g) * 0.1
            ip_adapter[f"{key_id}.to_v_ip.weight"] = torch.randn(to_k.shape, generator=g) * 0.1
            key_id += 2
    return {"image_proj": image_proj, "ip_adapter": ip_adapter}


def test_loading_an_ip_adapter_keeps_the_installed_backend():
    model = tiny_sd15_unet(sd15_head_dims=False)
    state_dict = _tiny_ip_adapter_state_dict(model)
    sample, text = _inputs(dim=32)
    with install_regional_processors(model, backend="torch"):
        model._load_ip_adapter_weights([state_dict], low_cpu_mem_usage=False)
        self_attention = [p for n, p in model.attn_processors.items() if n.endswith("attn1.processor")]
        assert self_attention and all(type(p) is RegionalAttnProcessor for p in self_attention)
        assert {p.backend for p in self_attention} == {"torch"}  # was "auto": diffusers rebuilds them bare
        with torch.no_grad():
            out = model(sample, 10, text, added_cond_kwargs={"image_embeds": [torch.randn(2, 1, 12)]}).sample
        assert torch.isfinite(out).all()
    assert RegionalAttnProcessor().backend == "auto"  # the default ends with the handle


def test_default_backend_follows_the_latest_active_install():
    first, second = tiny_sd15_unet(sd15_head_dims=False), tiny_sd15_unet(sd15_head_dims=False)
    assert RegionalAttnProcessor().backend == "auto"
    outer = install_regional_processors(first, backend="torch")
    inner = install_regional_processors(second, backend="reference")
    try:
        assert RegionalAttnProcessor().backend == "reference"
        outer.remove()  # out of order: the still-active install's choice stays
        assert RegionalAttnProcessor().backend == "reference"
    finally:  # other tests' processors must not inherit a default
        outer.remove()
        inner.remove()
    inner.remove()  # idempotent
    assert RegionalAttnProcessor().backend == "auto"
    assert RegionalAttnProcessor("cpp").backend == "cpp"  # an explicit choice always wins
