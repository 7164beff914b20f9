"""``speed_up`` on diffusers' LEDITS++ pipelines: the same inversion, attention store, masks and image as stock.

Whole-pipeline comparisons are held to the float32 rounding noise of the stock pipeline itself
(:func:`~ale_kernels.testing.tolerance.rounding_perturbation`: the stock edit rerun with every weight moved by
one unit in the last place); masks are binary and must match exactly.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from ale_kernels.diffusers import SpeedUpHandle, speed_up
from ale_kernels.diffusers.ledits import (
    LeditsMapProcessor,
    check_pipeline_module,
    kept_first_row,
    stock_classes,
    store_layout,
)
from ale_kernels.testing.tolerance import assert_within_perturbation, rounding_perturbation
from tests.tiny_ledits import tiny_ledits_sd, tiny_ledits_sdxl

# Many small ops: with several torch threads on a shared 2-core machine they oversubscribe it (10x slower).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _ledits_module(xl: bool = False):
    import diffusers

    name = "LEditsPPPipelineStableDiffusionXL" if xl else "LEditsPPPipelineStableDiffusion"
    return stock_classes(getattr(diffusers, name))


# --- the store's selection rule, mirrored, against the installed store ---------------------------------------


@pytest.mark.parametrize("xl", [False, True])
@pytest.mark.parametrize(("batch", "concepts", "pnp"), [(1, 1, False), (2, 2, False), (2, 1, True), (3, 2, False)])
def test_kept_rows_are_what_the_installed_store_keeps(xl, batch, concepts, pnp):
    """Our rows, in our layout, equal what ``LeditsAttentionStore.__call__`` files from the full probabilities."""
    _, store_class = _ledits_module(xl)
    heads, pixels, tokens = 3, 6, 5
    entries = batch * (1 + int(pnp) + concepts)
    full = torch.randn(entries * heads, pixels, tokens)
    stock = store_class(average=False, batch_size=batch, max_size=pixels, max_resolution=None)
    stock(full, True, "up", concepts, PnP=pnp)
    first = kept_first_row(entries * heads, batch, concepts, pnp)
    ours = store_layout(full[first:], batch)
    (expected,) = stock.step_store["up_cross"]
    assert ours.shape == expected.shape
    assert torch.equal(ours, expected)
    # The rows before ``first`` are exactly the unconditional (and plug-and-play) entries'.
    assert first == (1 + int(pnp)) * batch * heads


def test_install_check_refuses_a_store_that_keeps_other_maps():
    """A diffusers whose store files other rows fails the install-time check instead of storing wrong maps."""
    cross_class, store_class = _ledits_module()

    class KeepsAll(store_class):  # keeps the unconditional entries too
        def __call__(self, attn, is_cross, place_in_unet, editing_prompts, PnP=False):
            if attn.shape[1] <= self.max_size:
                self.forward(torch.stack(attn.split(self.batch_size)).permute(1, 0, 2, 3), is_cross, place_in_unet)

    class StrictSize(store_class):  # keeps only layers strictly smaller than max_size
        def __call__(self, attn, is_cross, place_in_unet, editing_prompts, PnP=False):
            if attn.shape[1] < self.max_size:
                super().__call__(attn, is_cross, place_in_unet, editing_prompts, PnP)

    for changed in (KeepsAll, StrictSize):
        with pytest.raises(RuntimeError, match="LeditsAttentionStore keeps other maps"):
            check_pipeline_module(cross_class, changed)

    class Renamed(cross_class):
        def __init__(self, attention_store, place_in_unet, pnp, editing_prompts):
            super().__init__(attention_store, place_in_unet, pnp, editing_prompts)
            self.store = self.__dict__.pop("attnstore")

    with pytest.raises(RuntimeError, match="attnstore"):
        check_pipeline_module(Renamed, store_class)


# --- speed_up's contract ----------------------------------------------------------------------------------


def test_unknown_pipeline_is_left_alone_with_one_warning():
    class NotAPipeline:
        unet = None

    with pytest.warns(UserWarning, match="NotAPipeline is not a pipeline it knows") as caught:
        handle = speed_up(NotAPipeline())
    assert len(caught) == 1
    assert isinstance(handle, SpeedUpHandle) and not handle.active
    handle.remove()
    with pytest.raises(ValueError, match="backend"):
        speed_up(NotAPipeline(), backend="fastest")


def test_install_and_remove_restore_the_very_processors():
    from diffusers.models.attention_processor import AttnProcessor

    pipe = tiny_ledits_sd()
    before = dict(pipe.unet.attn_processors)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        handle = speed_up(pipe)
    # diffusers' default processors are not among those a LEDITS++ pipeline sets: nothing is replaced.
    assert all(pipe.unet.attn_processors[name] is proc for name, proc in before.items())
    pipe.unet.set_attn_processor(AttnProcessor())  # what invert() does
    stock_now = dict(pipe.unet.attn_processors)
    with torch.no_grad():
        pipe.unet(torch.randn(1, 4, 16, 16), 10, encoder_hidden_states=torch.randn(1, 77, 16))
    assert {type(p).__name__ for p in pipe.unet.attn_processors.values()} == {"RegionalAttnProcessor"}
    handle.remove()
    handle.remove()  # idempotent
    assert all(pipe.unet.attn_processors[name] is proc for name, proc in stock_now.items())
    with torch.no_grad():  # the hook is gone with the handle
        pipe.unet(torch.randn(1, 4, 16, 16), 10, encoder_hidden_states=torch.randn(1, 77, 16))
    assert all(pipe.unet.attn_processors[name] is proc for name, proc in stock_now.items())


# --- parity of whole edits -----------------------------------------------------------------------------------

STEPS = 3

TWO = ["a red car", "snowy street"]


def _case(xl=False, concepts=TWO, reverse=False, intersect=True, cross_attn=False, average=True, rerun=False) -> dict:
    """A parity case: the pipeline kind, the edit's arguments, how the store averages, whether to rerun stock."""
    return dict(
        xl=xl, editing_prompt=list(concepts), reverse_editing_direction=reverse, use_intersect_mask=intersect,
        use_cross_attn_mask=cross_attn, store_average=average, rerun=rerun,
    )  # fmt: skip


CASES = {
    # one concept; the default masks: the attention store's mask intersected with the noise-estimate threshold
    "sd-one-concept-intersect": _case(concepts=["a red car"], rerun=True),
    # two concepts, the second one removed; the attention store's (cross-attention threshold) mask alone
    "sd-two-concepts-reversed-cross-attn-mask": _case(
        reverse=[False, True], intersect=False, cross_attn=True, average=False
    ),
    # no attention store: the noise-estimate threshold alone
    "sd-noise-threshold-only": _case(intersect=False),
    "sdxl-two-concepts-intersect": _case(xl=True, reverse=[True, False]),
}


def _edit(pipe, image, case: dict) -> dict:
    """``invert()`` + one edit; what is compared: latents, noise maps, guidance, masks, store and image."""
    average = case["store_average"]
    call = {k: v for k, v in case.items() if k not in ("xl", "store_average", "rerun")}
    pipe.invert(image, num_inversion_steps=STEPS, skip=0.25, generator=torch.Generator().manual_seed(0))
    out = pipe(**call, edit_threshold=0.7, attn_store_steps=list(range(STEPS)), store_averaged_over_steps=average,
               output_type="pt")  # fmt: skip
    store = getattr(pipe, "attention_store", None)
    maps = []
    if store is not None:
        steps = [store.attention_store] if average else store.attention_store
        maps = [m for step in steps for key in sorted(step) for m in step[key]]
        if average:
            assert store.cur_step == STEPS
    return {
        "latents": pipe.init_latents.clone(),
        "zs": pipe.zs.clone(),
        "guidance": pipe.sem_guidance.clone(),
        "masks": pipe.activation_mask.clone(),
        "store": maps,
        "image": out.images,
    }


def _flat(result: dict) -> torch.Tensor:
    """Every float quantity of ``result`` scaled to unit size and concatenated, so that one measured rounding
    perturbation bounds them all at the same relative precision."""
    parts = [result[k] for k in ("latents", "zs", "guidance", "image")] + result["store"]
    return torch.cat([p.flatten() / p.abs().max().clamp_min(1e-30) for p in parts])


@pytest.mark.parametrize("name", list(CASES))
def test_sped_up_edit_matches_stock(name):
    case = CASES[name]
    pipe = tiny_ledits_sdxl() if case["xl"] else tiny_ledits_sd()
    image = torch.rand(1, 3, 32, 64, generator=torch.Generator().manual_seed(1))

    results = {}

    def stock_flat():
        result = _edit(pipe, image, case)
        results.setdefault("stock", result)  # the first run is the unperturbed one
        return _flat(result)

    perturbation = rounding_perturbation(stock_flat, [pipe.unet, pipe.vae])
    stock = results["stock"]

    with speed_up(pipe) as handle:
        fast = _edit(pipe, image, case)
        kinds = {type(p).__name__ for p in pipe.unet.attn_processors.values()}
    stored = case.get("use_intersect_mask") or case.get("use_cross_attn_mask")
    assert kinds == ({"RegionalAttnProcessor", "LeditsMapProcessor"} if stored else {"RegionalAttnProcessor"})

    assert len(fast["store"]) == len(stock["store"]) == (len(stock["store"]) if stored else 0)
    if stored:
        assert stock["store"], "the case must store maps"
    for a, b in zip(fast["store"], stock["store"], strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
    assert torch.equal(fast["masks"], stock["masks"])
    assert_within_perturbation(_flat(fast), _flat(stock), perturbation, name=f"{name}: latents/zs/guidance/store/image")

    # Uninstalled: the very stock processors the pipeline put there, on the pipeline's own store.
    assert not handle.active
    cross_class, _ = _ledits_module(case["xl"])
    for proc in pipe.unet.attn_processors.values():
        assert type(proc).__name__ in ("AttnProcessor", cross_class.__name__)
        if type(proc) is cross_class:
            assert proc.attnstore is pipe.attention_store
    assert not any(isinstance(p, LeditsMapProcessor) for p in pipe.unet.attn_processors.values())
    if case.get("rerun"):
        again = _edit(pipe, image, case)
        assert torch.equal(again["image"], stock["image"]), "the restored pipeline is the stock one"
