"""ALE-Bench metrics against independent computations: scikit-image for PSNR / SSIM / MSE on real sample
images and masks, torchmetrics' own LPIPS head for LPIPS, per-pair CLIP and a hand-written key extraction for
DINO (tiny random models built from configs), and the published edge cases (identical images, fully covered
images, one object)."""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from skimage.metrics import mean_squared_error, peak_signal_noise_ratio, structural_similarity

from ale_pipeline.bench import load_bench
from ale_pipeline.bench.lpips import LpipsSqueeze, load_squeezenet_features, squeezenet1_1_features
from ale_pipeline.bench.metrics import (
    METRIC_COLUMNS,
    MetricModels,
    ModelUnavailableError,
    apply_mask_uint8,
    background_metrics,
    clip_metrics,
    evaluate_case,
    evaluate_images,
    load_soft_masks,
    mask_union,
    resize_short_side,
)
from tests.bench_data import BENCH
from tests.tiny_metric_models import save_tiny_metric_models

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def bench():
    return load_bench(BENCH)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    paths = save_tiny_metric_models(tmp_path_factory.mktemp("metric-models"))
    return MetricModels(str(paths["clip"]), str(paths["dino"]), str(paths["lpips"]), device="cpu", offline=True)


@functools.cache
def _sample(counts):
    case = load_bench(BENCH).select(counts=[counts], types=["object"], images=["natural_img01"], limit=1)[0]
    source = Image.open(case.image_path).convert("RGB")
    return case, np.asarray(source), load_soft_masks(case.mask_paths, source.size)


def _case_arrays(bench, counts, crop=None):
    """A real sample case: source ``(H, W, 3)`` uint8, soft masks ``(N, H, W)``, optionally a crop
    ``(top, left, size)`` of both (real pixels, no resampling)."""
    case, image, masks = _sample(counts)
    if crop is not None:
        top, left, size = crop
        image = image[top : top + size, left : left + size]
        masks = masks[:, top : top + size, left : left + size]
    return case, np.ascontiguousarray(image), np.ascontiguousarray(masks)


def _perturbed(image: np.ndarray, seed: int = 0) -> np.ndarray:
    """Noise everywhere plus a strongly changed block: an 'edited' image that differs inside and outside masks."""
    rng = np.random.default_rng(seed)
    out = image.astype(np.int16) + rng.integers(-12, 13, image.shape)
    h, w = image.shape[:2]
    out[h // 3 : h // 2, w // 4 : w // 2] = 255 - out[h // 3 : h // 2, w // 4 : w // 2]
    return np.clip(out, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------- background


def _skimage_ssim_full_frame(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM (Gaussian 11 / 1.5, data range 1) averaged over every pixel, the border included.

    torchmetrics >= 1.5 (so the published 1.7.1 too) reflect-pads by 5 and averages the whole map (its PR
    #2721); scikit-image drops a 5-pixel border instead. So: pad as torch's "reflect" does (numpy "reflect"),
    take scikit-image's full map, keep the original pixels. Their windows lie inside the padded image.
    """
    pad = ((5, 5), (5, 5), (0, 0))
    _, full = structural_similarity(
        np.pad(a, pad, mode="reflect"), np.pad(b, pad, mode="reflect"), data_range=1.0, channel_axis=2,
        gaussian_weights=True, sigma=1.5, use_sample_covariance=False, full=True,
    )  # fmt: skip
    return float(full[5:-5, 5:-5].mean())


@pytest.mark.parametrize("counts, crop", [(2, (250, 250, 360)), (3, (300, 100, 320))])
def test_background_metrics_match_skimage_on_sample_images(bench, counts, crop):
    # A crop of the real 1000x1000 image and its real masks (crossing object boundaries), as is.
    _, source, masks = _case_arrays(bench, counts, crop)
    union = mask_union(masks)
    assert 0 < union.mean() < 1, "the crop must hold object and background pixels"
    edited = _perturbed(source)
    ours = background_metrics(source, edited, union, lpips=None)

    keep = (1.0 - union)[..., None]  # both images in [0, 1] times (1 - U), as published
    a, b = source / 255.0 * keep, edited / 255.0 * keep
    assert ours["psnr_unedit_part"] == pytest.approx(peak_signal_noise_ratio(a, b, data_range=1.0), rel=1e-5)
    assert ours["mse_unedit_part"] == pytest.approx(mean_squared_error(a, b), rel=1e-5)
    # float32 as published (float64 reference): within 5e-5, below the tables' 4 decimals.
    assert ours["ssim_unedit_part"] == pytest.approx(_skimage_ssim_full_frame(a, b), abs=5e-5)
    # The mask matters: without it the numbers are different.
    unmasked = _skimage_ssim_full_frame(source / 255.0, edited / 255.0)
    assert abs(unmasked - ours["ssim_unedit_part"]) > 1e-3
    assert math.isnan(ours["lpips_unedit_part"])  # no LPIPS model given


def test_identical_images(bench, models):
    _, source, masks = _case_arrays(bench, 2, (300, 100, 128))
    values = background_metrics(source, source.copy(), mask_union(masks), models.lpips)
    assert values["psnr_unedit_part"] == math.inf  # documented: reported as inf, left out of means with a count
    assert values["mse_unedit_part"] == 0.0
    assert values["ssim_unedit_part"] == pytest.approx(1.0, abs=1e-4)  # 1 up to float32 rounding (documented)
    assert values["lpips_unedit_part"] == 0.0  # exactly, for any backbone weights (here random)


def test_fully_covered_image_has_nan_background(bench, models):
    _, source, masks = _case_arrays(bench, 2, (250, 250, 96))
    covered = np.ones_like(masks[:1])
    values = background_metrics(source, _perturbed(source), mask_union(covered), models.lpips)
    assert set(values) == {"psnr_unedit_part", "lpips_unedit_part", "mse_unedit_part", "ssim_unedit_part"}
    assert all(math.isnan(v) for v in values.values())
    # End to end: the CLIP and DINO metrics are still defined, the background ones NaN (as published).
    full = evaluate_images(Image.fromarray(source), Image.fromarray(_perturbed(source)), covered, ["red car"], models)
    assert math.isnan(full["psnr_unedit_part"]) and math.isnan(full["ssim_unedit_part"])
    assert math.isfinite(full["TELS"]) and math.isfinite(full["structure_distance"])


def test_soft_masks_are_read_as_published(bench):
    # Published: Image.open(mask).convert("L") / 255 (anti-aliased edges stay fractional); union = lighter.
    case = next(c for c in bench.select(counts=[3]) if c.image_name == "natural_img01")
    size = Image.open(case.image_path).size
    masks = load_soft_masks(case.mask_paths, size)
    expected = [np.asarray(Image.open(p).convert("L"), dtype=np.float64) / 255 for p in case.mask_paths]
    np.testing.assert_array_equal(masks, np.stack(expected))
    from PIL import ImageChops

    lighter = Image.open(case.mask_paths[0]).convert("L")
    for p in case.mask_paths[1:]:
        lighter = ImageChops.lighter(lighter, Image.open(p).convert("L"))
    np.testing.assert_array_equal(mask_union(masks), np.asarray(lighter) / 255)


# --------------------------------------------------------------------------------------------- LPIPS


def test_squeezenet_matches_torchvision_state_dict_layout():
    shapes = {k: tuple(v.shape) for k, v in squeezenet1_1_features().state_dict().items()}
    # torchvision.models.squeezenet1_1().features: a conv and 8 Fire modules of 3 convs, weight and bias each.
    assert len(shapes) == 2 + 8 * 3 * 2
    assert shapes["0.weight"] == (64, 3, 3, 3)
    assert shapes["3.squeeze.weight"] == (16, 64, 1, 1)
    assert shapes["3.expand3x3.weight"] == (64, 16, 3, 3)
    assert shapes["9.expand1x1.weight"] == (192, 48, 1, 1)
    assert shapes["12.squeeze.weight"] == (64, 512, 1, 1)
    assert shapes["12.expand3x3.bias"] == (256,)


def test_lpips_matches_torchmetrics_lpips_head(monkeypatch, models):
    """Ours against torchmetrics' own ``_LPIPS(net="squeeze")`` (scaling, slices, normalisation, the shipped
    linear weights, spatial mean), given the same random backbone in place of torchvision's."""
    import copy

    import torchmetrics.functional.image.lpips as tm_lpips

    from ale_kernels.testing.tolerance import assert_close_to_oracle

    torch.manual_seed(1)
    features = load_squeezenet_features(models.lpips_weights)
    monkeypatch.setattr(tm_lpips, "_get_tv_model_features", lambda net, pretrained=False: features)
    reference = tm_lpips._LPIPS(pretrained=True, net="squeeze").eval()
    ours = LpipsSqueeze(load_squeezenet_features(models.lpips_weights))
    a, b = torch.rand(2, 3, 80, 72) * 2 - 1, torch.rand(2, 3, 80, 72) * 2 - 1
    with torch.no_grad():
        expected = reference(a, b).flatten()
    got = ours(a, b)
    assert expected.abs().min() > 0
    with torch.no_grad():  # torchmetrics' head in float64 on the same inputs is the oracle
        oracle = copy.deepcopy(reference).double()(a.double(), b.double()).flatten()
    assert_close_to_oracle(got, expected, oracle, name="LPIPS")
    assert torch.equal(ours(a, a.clone()), torch.zeros(2))


# ---------------------------------------------------------------------------------------------- CLIP


def _clip_score(models, image: np.ndarray, text: str) -> float:
    """One CLIP score the way torchmetrics' CLIPScore computes it: one image, one text, max(100 cos, 0)."""
    clip = models.clip
    pixels = clip.image_processor(images=[image], return_tensors="pt")["pixel_values"]
    tokens = clip.tokenizer([text], padding=True, return_tensors="pt")
    with torch.no_grad():
        out = clip.model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"], pixel_values=pixels)
    cos = F.cosine_similarity(out.image_embeds, out.text_embeds).item()
    return max(100 * cos, 0.0)


@pytest.mark.parametrize("counts", [1, 3])
def test_clip_metrics_match_per_pair_scores(bench, models, counts):
    case, source, masks = _case_arrays(bench, counts, (300, 300, 224))
    edited = _perturbed(source)
    got = clip_metrics(models.clip, edited, masks, case.target_phrases)

    # The published loops, one CLIP call per (masked image, text), masks as 3-channel float arrays.
    def masked(mask):
        return np.uint8(np.array(edited) * np.repeat(mask[..., None], 3, axis=2))

    targets = case.target_phrases
    background = 1 - mask_union(masks)
    tels_joined = _clip_score(models, masked(background), " and ".join(targets))
    tels_mean = np.mean([_clip_score(models, masked(background), t) for t in targets])
    perf = np.mean([_clip_score(models, masked(masks[i]), targets[i]) for i in range(counts)])
    pairs = [_clip_score(models, masked(masks[j]), targets[i]) for i in range(counts) for j in range(counts) if j != i]

    assert got["TELS_joined"] == pytest.approx(tels_joined, abs=1e-3)
    assert got["TELS_mean"] == pytest.approx(tels_mean, abs=1e-3)
    assert got["editing_performance"] == pytest.approx(perf, abs=1e-3)
    if counts == 1:
        assert math.isnan(got["TILS"])  # published: "nan" for one object
        assert got["TELS_joined"] == pytest.approx(got["TELS_mean"], abs=1e-6)  # the variants agree for N = 1
    else:
        assert got["TILS"] == pytest.approx(np.mean(pairs), abs=1e-3)
        assert got["TELS_joined"] != pytest.approx(got["TELS_mean"], abs=1e-3)  # named apart for a reason


def test_masked_image_keeps_the_frame_with_black_outside():
    image = np.full((4, 5, 3), 200, np.uint8)
    mask = np.zeros((4, 5))
    mask[1:3, 1:4] = 1.0
    mask[0, 0] = 0.5  # soft edge: truncated like np.uint8(img * mask)
    out = apply_mask_uint8(image, mask)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert out[1, 1].tolist() == [200] * 3 and out[3, 4].tolist() == [0] * 3 and out[0, 0].tolist() == [100] * 3


# ---------------------------------------------------------------------------------------------- DINO


@pytest.mark.parametrize(("hw", "expected"), [((1000, 1000), (224, 224)), ((1000, 500), (448, 224)),
                                              ((400, 1000), (192, 480)), ((224, 300), (224, 300))])  # fmt: skip
def test_resize_follows_torchvision_resize_224_max_480(hw, expected):
    assert tuple(resize_short_side(torch.zeros(1, 3, *hw)).shape[-2:]) == expected


def _independent_self_similarity(vit, image: np.ndarray, scale: float) -> torch.Tensor:
    """Keys of the last layer recomputed by hand: LayerNorm of the last layer's input, then its key weights."""
    x = torch.tensor(image, dtype=torch.float32).permute(2, 0, 1)[None] * scale
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    x = (x - mean[:, None, None]) / std[:, None, None]
    with torch.no_grad():
        hidden = vit(pixel_values=x, output_hidden_states=True).hidden_states[-2][0]
    n_layers = vit.config.num_hidden_layers
    params = dict(vit.named_parameters())
    prefix = next(k for k in params if f".{n_layers - 1}." in k and k.endswith("layernorm_before.weight"))
    prefix = prefix[: -len("layernorm_before.weight")]
    key = next(
        k[: -len(".weight")] for k in params if k.startswith(prefix) and k.endswith(("k_proj.weight", "key.weight"))
    )
    normed = F.layer_norm(hidden, (hidden.shape[-1],), params[prefix + "layernorm_before.weight"],
                          params[prefix + "layernorm_before.bias"], vit.config.layer_norm_eps)  # fmt: skip
    keys = normed @ params[key + ".weight"].T + params[key + ".bias"]
    unit = keys / keys.norm(dim=1, keepdim=True)
    return unit @ unit.T


def test_structure_distance_matches_hand_computed_keys(bench, models):
    _, source, _ = _case_arrays(bench, 2, (300, 300, 224))  # 224 px: the Resize(224) is the identity
    edited = _perturbed(source)
    vit = models.dino.model
    for mode, scale in (("published", 1.0), ("unit", 1 / 255)):
        a = _independent_self_similarity(vit, source, scale)
        b = _independent_self_similarity(vit, edited, scale)
        assert a.shape == (1 + 28 * 28, 1 + 28 * 28)  # CLS + 8-pixel patches
        expected = float(((a - b) ** 2).mean().detach())
        assert expected > 0
        assert models.dino.distance(source, edited, mode) == pytest.approx(expected, rel=1e-4)
    assert models.dino.distance(source, source.copy(), "published") == 0.0


def test_evaluate_images_end_to_end_with_resized_edit(bench, models):
    case, source, masks = _case_arrays(bench, 2, (300, 100, 160))
    edited = Image.fromarray(_perturbed(source)).resize((120, 120))  # another size: resized back (PIL default)
    values = evaluate_images(Image.fromarray(source), edited, masks, case.target_phrases, models, tels="mean",
                             dino_input="unit")  # fmt: skip
    assert list(values) == list(METRIC_COLUMNS)
    assert values["TELS"] == values["TELS_mean"] and values["structure_distance"] == values["structure_distance_unit"]
    back = np.asarray(edited.resize((160, 160)))
    expected = background_metrics(source, back, mask_union(masks), models.lpips)
    for column, value in expected.items():
        assert values[column] == pytest.approx(value, rel=1e-6)
    assert all(math.isfinite(v) for v in values.values())
    assert values["lpips_unedit_part"] > 0


# -------------------------------------------------------------------------------------- model loading


def test_missing_models_are_one_clear_line(tmp_path):
    missing = MetricModels(clip_model=str(tmp_path / "no-clip"), device="cpu", offline=True)
    with pytest.raises(ModelUnavailableError, match=r"^CLIP model: no folder .*--clip-model") as err:
        _ = missing.clip
    assert "\n" not in str(err.value)
    offline = MetricModels(dino_model="ale-kernels-tests/no-such-model", device="cpu", offline=True)
    with pytest.raises(ModelUnavailableError, match=r"^DINO model .*not in the local Hugging Face cache") as err:
        _ = offline.dino
    assert "\n" not in str(err.value)
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    bad = MetricModels(lpips_weights=str(tmp_path / "bad.pth"), device="cpu", offline=True)
    with pytest.raises(ModelUnavailableError, match="LPIPS backbone weights") as err:
        _ = bad.lpips
    assert "\n" not in str(err.value)


def test_an_unreachable_hub_is_one_line_at_once(monkeypatch):
    """Online, an uncached model whose hub does not answer fails at once, without huggingface_hub's retries."""
    from ale_pipeline.bench import metrics

    def no_download(*_, **__):
        raise AssertionError("no download may be tried when the hub does not answer")

    monkeypatch.setattr(metrics, "hub_reachable", lambda: False)
    monkeypatch.setattr("transformers.ViTModel.from_pretrained", no_download)
    online = MetricModels(dino_model="ale-kernels-tests/no-such-model", device="cpu", offline=False)
    with pytest.raises(ModelUnavailableError, match=r"^DINO model .*not in the local .* does not answer; download"):
        _ = online.dino


def test_evaluate_case_scores_against_the_target_phrases(bench, models, tmp_path):
    """``evaluate_case`` equals :func:`evaluate_images` with the case's *target* phrases, on a case whose source
    and target phrases differ (and whose CLIP scores tell the two apart)."""
    case, source, masks = _case_arrays(bench, 2, (300, 100, 160))
    assert set(case.source_phrases).isdisjoint(case.target_phrases)
    image_path = tmp_path / "source.png"
    Image.fromarray(source).save(image_path)  # lossless: the case's pixels as they are
    mask_paths = []
    for k, mask in enumerate(masks):
        mask_paths.append(tmp_path / f"mask{k}.png")
        Image.fromarray(np.round(mask * 255).astype(np.uint8)).save(mask_paths[-1])
    cropped = dataclasses.replace(case, image_path=image_path, mask_paths=tuple(mask_paths))
    edited = Image.fromarray(_perturbed(source))
    got = evaluate_case(cropped, edited, models)
    soft = load_soft_masks(mask_paths, (160, 160))
    expected = evaluate_images(Image.fromarray(source), edited, soft, list(case.target_phrases), models)
    assert got == pytest.approx(expected, rel=1e-6, nan_ok=True)
    with_sources = evaluate_images(Image.fromarray(source), edited, soft, list(case.source_phrases), models)
    differing = [c for c in ("TELS", "TILS", "editing_performance") if got[c] != pytest.approx(with_sources[c])]
    assert differing, "the tiny CLIP scores source and target phrases alike: the check above could not fail"
