"""ALE-Bench metrics, as the published evaluation computes them (``docs/method.md`` section 5.2).

Per case, with ``x`` the edited image resized to the source size (PIL's default resample), ``x_s`` the
source, ``m_j`` the ground-truth mask of object ``j`` (8-bit grey / 255, soft edges kept as published),
``U = max_j m_j`` (PIL ``ImageChops.lighter``) and ``y_i`` the target phrases:

==========================  ===================================================================  =====
column                      definition                                                           dir.
==========================  ===================================================================  =====
``TELS_joined``             ``CLIP(x * (1-U), " and ".join(y))``: the published code's TELS        low
``TELS_mean``               ``mean_i CLIP(x * (1-U), y_i)``: the project page's formula            low
``TILS``                    ``mean_{i != j} CLIP(x * m_j, y_i)``; NaN for one object               low
``editing_performance``     ``mean_i CLIP(x * m_i, y_i)``                                          high
``structure_distance_*``    MSE of DINO ViT-B/8 last-layer key self-similarities of ``x_s``, ``x``  low
``*_unedit_part``           PSNR / LPIPS / MSE / SSIM of ``x_s * (1-U)`` vs ``x * (1-U)``; NaN if   see
                            ``1-U`` is all 0 (published)                                           below
==========================  ===================================================================  =====

``CLIP(img, text) = max(100 cos(f_img, f_text), 0)`` (torchmetrics' CLIPScore formula) with
``openai/clip-vit-large-patch14``; the masked image keeps the whole frame with the pixels outside the mask
black (``uint8(img * mask)``), and CLIP's own processor resizes and centre-crops it to 224. It is computed
with transformers directly, same formula: torchmetrics' ``CLIPScore`` takes only hub ids naming "openai" (or
a loader callable), and breaks on transformers 5 (``get_image_features`` returns an output object there).
The PIL image processor is used (``CLIPImageProcessorPil`` in transformers 5, the default "slow" one
before), as in the transformers 4.51 the published numbers came from.

``structure_distance_published`` feeds DINO 0-255 floats through the ImageNet normalisation (the published
quirk, copied from PIE-Bench); ``structure_distance_unit`` feeds 0-1 (what DINO expects). Both resize with
torchvision's ``Resize(224, max_size=480)`` (bilinear, antialiased), here with ``F.interpolate``. DINO is
transformers' ``ViTModel`` (``facebook/dino-vitb8``); the published code loads the same weights from
``torch.hub`` (``facebookresearch/dino``), which needs the network.

Background metrics (torchmetrics functional): PSNR ``data_range=1`` (``inf`` when the backgrounds are
identical), MSE, SSIM ``data_range=1`` with the 11 / 1.5 Gaussian window (float32, reflect-padded and
averaged over the whole map as torchmetrics >= 1.5 does, so the published 1.7.1 too), LPIPS SqueezeNet on
[-1, 1] inputs. They average over the whole frame, masked zeros included, as published.
"""

from __future__ import annotations

import importlib.util
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..hub import hub_endpoint, hub_reachable
from .published import PUBLISHED_COLUMNS

DEFAULT_CLIP_MODEL = "openai/clip-vit-large-patch14"
DEFAULT_DINO_MODEL = "facebook/dino-vitb8"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

TelsMode = Literal["joined", "mean"]
DinoInput = Literal["published", "unit"]

#: Both variants of the two metrics whose published code and stated definition differ, named apart.
VARIANT_COLUMNS = ("TELS_joined", "TELS_mean", "structure_distance_published", "structure_distance_unit")
METRIC_COLUMNS = PUBLISHED_COLUMNS + VARIANT_COLUMNS


class ModelUnavailableError(RuntimeError):
    """A metric model cannot be loaded (not cached and the hub unreachable, or a bad local folder). The message
    is one line saying which model and what to do."""


# ---------------------------------------------------------------------------------------------- images


def load_rgb(image: str | os.PathLike | Image.Image) -> Image.Image:
    """An RGB PIL image from a path or an image."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    with Image.open(image) as im:
        return im.convert("RGB")


def match_source_size(edited: Image.Image, source: Image.Image) -> Image.Image:
    """The edited image resized to the source's size with PIL's default resample (as published)."""
    edited = edited.convert("RGB")
    return edited if edited.size == source.size else edited.resize(source.size)


def load_soft_masks(paths: Sequence[str | os.PathLike], size: tuple[int, int]) -> np.ndarray:
    """Masks read as 8-bit grey / 255, ``(N, H, W)`` float64 in [0, 1]; ``size`` is PIL ``(W, H)``.

    Soft (anti-aliased) edges are kept, as the published evaluation does; a mask of another size is resized
    with nearest neighbour (the published code assumes equal sizes).
    """
    planes = []
    for path in paths:
        with Image.open(path) as im:
            grey = im.convert("L")
        if grey.size != size:
            grey = grey.resize(size, Image.NEAREST)
        planes.append(np.asarray(grey, dtype=np.float64) / 255.0)
    return np.stack(planes)


def mask_union(masks: np.ndarray) -> np.ndarray:
    """``(N, H, W) -> (H, W)`` pixel-wise maximum (PIL ``ImageChops.lighter``)."""
    return masks.max(axis=0)


def apply_mask_uint8(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``uint8(image * mask)`` for CLIP: ``(H, W, 3)`` uint8 times ``(H, W)`` in [0, 1], truncated as published."""
    return (image.astype(np.float64) * mask[..., None]).astype(np.uint8)


def _to_tensor01(image: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """``(H, W, 3)`` uint8 -> ``(1, 3, H, W)`` float32 in [0, 1]."""
    return (torch.from_numpy(np.array(image)).to(device).permute(2, 0, 1)[None].float() / 255.0).contiguous()


# ------------------------------------------------------------------------------------------ background


def background_metrics(
    source: np.ndarray,
    edited: np.ndarray,
    union: np.ndarray,
    lpips: torch.nn.Module | None = None,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """PSNR / MSE / SSIM / LPIPS of ``source * (1-U)`` vs ``edited * (1-U)`` over the whole frame.

    ``source``, ``edited``: ``(H, W, 3)`` uint8; ``union``: ``(H, W)`` in [0, 1]. All NaN when ``1 - U`` is
    zero everywhere (published). PSNR is ``inf`` for identical backgrounds. ``lpips`` maps two ``(B, 3, H,
    W)`` batches in [-1, 1] to ``(B,)`` or a scalar; ``None`` leaves LPIPS NaN.
    """
    from torchmetrics.functional import mean_squared_error
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    keep = 1.0 - union
    if keep.sum() == 0:
        return {k: math.nan for k in ("psnr_unedit_part", "lpips_unedit_part", "mse_unedit_part", "ssim_unedit_part")}
    keep_t = torch.from_numpy(keep.astype(np.float32)).to(device)[None, None]
    src = _to_tensor01(source, device) * keep_t
    out = _to_tensor01(edited, device) * keep_t
    with torch.no_grad():
        lp = math.nan if lpips is None else float(lpips(out * 2 - 1, src * 2 - 1).mean())
        # SSIM in float32 as published (float64 convolutions are ~10x slower on CPU). Its sigma^2 = E[x^2] - mu^2
        # is clamped at 0 but sigma_xy is not, so in flat regions float32 rounding leaves identical images at
        # SSIM 1 - 4e-5 rather than 1: below the tables' 4 decimals. PSNR and MSE are cheap: float64.
        ssim = float(structural_similarity_index_measure(out, src, data_range=1.0))
        src, out = src.double(), out.double()
        return {
            "psnr_unedit_part": float(peak_signal_noise_ratio(out, src, data_range=1.0)),
            "lpips_unedit_part": lp,
            "mse_unedit_part": float(mean_squared_error(out, src)),
            "ssim_unedit_part": ssim,
        }


# ------------------------------------------------------------------------------------------------ CLIP


class ClipScorer:
    """CLIP scores ``max(100 cos, 0)`` of every image against every text, with a transformers ``CLIPModel``."""

    def __init__(self, model: Any, image_processor: Any, tokenizer: Any, device: torch.device | str = "cpu") -> None:
        self.model = model.to(device).eval()
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.device = torch.device(device)

    @staticmethod
    def _features(out: Any) -> torch.Tensor:
        # transformers < 5 returns the projected tensor; 5.x an output object whose pooler_output is projected.
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    @torch.no_grad()
    def image_features(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """``(H, W, 3)`` uint8 images -> ``(B, D)`` unit-norm features."""
        pixels = self.image_processor(images=list(images), return_tensors="pt")["pixel_values"]
        feats = self._features(self.model.get_image_features(pixel_values=pixels.to(self.device)))
        return feats / feats.norm(p=2, dim=-1, keepdim=True)

    @torch.no_grad()
    def text_features(self, texts: Sequence[str]) -> torch.Tensor:
        """Texts -> ``(T, D)`` unit-norm features (77 tokens at most, as CLIP's text model)."""
        tok = self.tokenizer(list(texts), padding=True, truncation=True, max_length=77, return_tensors="pt")
        feats = self._features(
            self.model.get_text_features(
                input_ids=tok["input_ids"].to(self.device), attention_mask=tok["attention_mask"].to(self.device)
            )
        )
        return feats / feats.norm(p=2, dim=-1, keepdim=True)

    def scores(self, images: Sequence[np.ndarray], texts: Sequence[str]) -> np.ndarray:
        """``(B, T)`` float64 matrix of ``max(100 cos(image_b, text_t), 0)``."""
        sim = 100.0 * self.image_features(images) @ self.text_features(texts).T
        return sim.clamp(min=0).double().cpu().numpy()


def clip_metrics(scorer: ClipScorer, edited: np.ndarray, masks: np.ndarray, targets: Sequence[str]) -> dict[str, float]:
    """TELS (both variants), TILS and editing performance of one case.

    ``edited``: ``(H, W, 3)`` uint8 at the source size; ``masks``: ``(N, H, W)`` in [0, 1], edit order;
    ``targets``: the N target phrases. One CLIP batch: the background image and the N object images against
    the joined prompt and each target phrase.
    """
    n = len(targets)
    if masks.shape[0] != n:
        raise ValueError(f"{masks.shape[0]} masks for {n} target phrases")
    images = [apply_mask_uint8(edited, 1.0 - mask_union(masks))] + [apply_mask_uint8(edited, m) for m in masks]
    joined = " and ".join(targets)
    texts = list(dict.fromkeys([joined, *targets]))  # unique, order kept (N = 1: joined == y_1)
    s = scorer.scores(images, texts)
    col = [texts.index(t) for t in targets]
    bg, obj = s[0], s[1:]  # obj[j, t]: image of object j against text t
    tils = [obj[j, col[i]] for i in range(n) for j in range(n) if j != i]
    return {
        "TELS_joined": float(bg[texts.index(joined)]),
        "TELS_mean": float(np.mean([bg[c] for c in col])),
        "TILS": float(np.mean(tils)) if tils else math.nan,
        "editing_performance": float(np.mean([obj[i, col[i]] for i in range(n)])),
    }


# ------------------------------------------------------------------------------------------------ DINO


def resize_short_side(x: torch.Tensor, size: int = 224, max_size: int | None = 480) -> torch.Tensor:
    """torchvision ``Resize(size, max_size=max_size)`` of a ``(B, C, H, W)`` float tensor: the short side to
    ``size`` (the long side capped at ``max_size``), bilinear with antialiasing (torchvision's default)."""
    h, w = x.shape[-2:]
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    if max_size is not None and new_long > max_size:
        new_short, new_long = int(max_size * new_short / new_long), max_size
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_h, new_w) == (h, w):
        return x
    return F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True)


class DinoStructure:
    """Structure distance with a transformers ``ViTModel`` (DINO ViT-B/8): keys of the last layer."""

    def __init__(self, model: Any, device: torch.device | str = "cpu") -> None:
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.key_proj = _last_key_projection(model)
        self.image_size = int(getattr(model.config, "image_size", 224))

    @torch.no_grad()
    def key_self_similarity(self, image: np.ndarray, input_range: DinoInput = "published") -> torch.Tensor:
        """``(H, W, 3)`` uint8 -> ``(T, T)`` cosine self-similarity of the last layer's keys (heads
        concatenated, CLS token included; ``T = 1 + patches``)."""
        x = torch.from_numpy(np.array(image)).to(self.device).permute(2, 0, 1)[None].float()
        if input_range == "unit":
            x = x / 255.0
        elif input_range != "published":
            raise ValueError(f"input_range must be 'published' (0-255) or 'unit' (0-1), got {input_range!r}")
        x = resize_short_side(x, 224, 480)
        mean = torch.tensor(IMAGENET_MEAN, device=self.device)[None, :, None, None]
        std = torch.tensor(IMAGENET_STD, device=self.device)[None, :, None, None]
        x = (x - mean) / std
        captured: list[torch.Tensor] = []
        handle = self.key_proj.register_forward_hook(lambda _m, _i, out: captured.append(out))
        try:
            interpolate = tuple(x.shape[-2:]) != (self.image_size, self.image_size)
            self.model(pixel_values=x, interpolate_pos_encoding=interpolate)
        finally:
            handle.remove()
        keys = captured[-1][0].float()  # (T, heads * head_dim): the key projection output is heads concatenated
        norms = keys.norm(dim=1, keepdim=True)
        return (keys @ keys.T) / torch.clamp(norms @ norms.T, min=1e-8)

    def distance(self, source: np.ndarray, edited: np.ndarray, input_range: DinoInput = "published") -> float:
        """MSE between the key self-similarity matrices of the source and the edited image."""
        a = self.key_self_similarity(source, input_range)
        b = self.key_self_similarity(edited, input_range)
        return float(F.mse_loss(b, a))


def _last_key_projection(model: Any) -> torch.nn.Module:
    """The key ``nn.Linear`` of the last transformer layer (``k_proj`` in transformers 5, ``key`` before)."""
    layers = getattr(model, "layers", None)
    if layers is None:
        layers = model.encoder.layer
    attention = layers[-1].attention
    for candidate in (getattr(attention, "k_proj", None), getattr(getattr(attention, "attention", None), "key", None)):
        if isinstance(candidate, torch.nn.Module):
            return candidate
    raise TypeError(f"cannot find the key projection of {type(model).__name__}'s last layer")


# ---------------------------------------------------------------------------------------------- models


def _env_offline() -> bool:
    return any(
        os.environ.get(v, "").lower() in ("1", "true", "yes", "on") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:300]


def _from_pretrained(loaders: Sequence[Any], source: str, what: str, option: str, offline: bool) -> list[Any]:
    """``[loader(source) for loader in loaders]`` from a local folder, the local cache, or (when not offline)
    the hub. Any failure is one :class:`ModelUnavailableError` line."""
    from transformers.utils import logging as hf_logging

    # transformers' per-load "Loading weights" bars would bury the evaluation's own progress bar and errors.
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        return _load_quietly(loaders, source, what, option, offline)
    finally:
        if bars:
            hf_logging.enable_progress_bar()


def _load_quietly(loaders: Sequence[Any], source: str, what: str, option: str, offline: bool) -> list[Any]:
    local = Path(source).expanduser()
    # A hub id is "name" or "owner/name"; anything else (or anything that exists) is a local folder.
    if local.exists() or source.startswith((".", "/", "~")) or source.count("/") > 1:
        if not local.is_dir():
            raise ModelUnavailableError(
                f"{what}: no folder {source!r}; pass {option} with a model id or a saved model folder"
            )
        try:
            return [load(str(local), local_files_only=True) for load in loaders]
        except Exception as err:
            raise ModelUnavailableError(f"{what}: cannot load the folder {source!r} ({_one_line(err)})") from None
    try:
        return [load(source, local_files_only=True) for load in loaders]
    except Exception:
        pass  # not cached: try the hub below
    hint = f"download it where the hub is reachable (hf download {source}) or pass {option} with a local folder"
    if offline:
        raise ModelUnavailableError(
            f"{what} {source!r} is not in the local Hugging Face cache and offline mode is on; {hint}"
        )
    if not hub_reachable():  # else huggingface_hub retries with back-off for about 25 s before failing
        raise ModelUnavailableError(
            f"{what} {source!r} is not in the local Hugging Face cache and {hub_endpoint()} does not answer; {hint}"
        )
    try:
        return [load(source) for load in loaders]
    except Exception as err:
        raise ModelUnavailableError(
            f"{what} {source!r} is not cached and cannot be downloaded ({_one_line(err)}); {hint}"
        ) from None


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class MetricModels:
    """The evaluation's models, each loaded on first use from a hub id or a local folder.

    ``lpips_weights``: torchvision's SqueezeNet 1.1 ImageNet checkpoint file for the LPIPS backbone. ``None``
    uses torchmetrics' own LPIPS when torchvision imports (it fetches the backbone itself), else this
    project's :class:`~ale_pipeline.bench.lpips.LpipsSqueeze` with ``squeezenet1_1-b8a52dc0.pth`` from the
    torch hub cache (downloaded there unless offline). ``offline`` defaults to ``$HF_HUB_OFFLINE``.
    """

    clip_model: str = DEFAULT_CLIP_MODEL
    dino_model: str = DEFAULT_DINO_MODEL
    lpips_weights: str | None = None
    device: str | None = None
    offline: bool | None = None
    lpips_backend: str = field(default="", init=False)

    def __post_init__(self) -> None:
        self.device = self.device or default_device()
        if self.offline is None:
            self.offline = _env_offline()

    @cached_property
    def clip(self) -> ClipScorer:
        import transformers
        from transformers import AutoTokenizer, CLIPModel

        # The PIL image processor (transformers 5's CLIPImageProcessorPil, the default "slow" one before):
        # the published numbers come from it; the torchvision one resizes slightly differently.
        processor_cls = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
        model, processor, tokenizer = _from_pretrained(
            (CLIPModel.from_pretrained, processor_cls.from_pretrained, AutoTokenizer.from_pretrained),
            self.clip_model,
            "CLIP model",
            "--clip-model",
            bool(self.offline),
        )
        return ClipScorer(model, processor, tokenizer, self.device)

    @cached_property
    def dino(self) -> DinoStructure:
        from transformers import ViTModel

        def load(src: str, **kw: Any) -> Any:
            return ViTModel.from_pretrained(src, add_pooling_layer=False, **kw)

        (model,) = _from_pretrained((load,), self.dino_model, "DINO model", "--dino-model", bool(self.offline))
        return DinoStructure(model, self.device)

    @cached_property
    def lpips(self) -> torch.nn.Module:
        """A module ``(B, 3, H, W) x 2 in [-1, 1] -> LPIPS``; :attr:`lpips_backend` says which one."""
        from .lpips import SQUEEZENET_FILE, SQUEEZENET_URL, LpipsSqueeze, load_squeezenet_features

        if self.lpips_weights is None and importlib.util.find_spec("torchvision") is not None:
            from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

            self.lpips_backend = "torchmetrics LearnedPerceptualImagePatchSimilarity(net_type='squeeze')"
            try:
                return LearnedPerceptualImagePatchSimilarity(net_type="squeeze").to(self.device).eval()
            except Exception as err:
                raise ModelUnavailableError(
                    f"LPIPS SqueezeNet backbone unavailable ({_one_line(err)}); pass --lpips-weights {SQUEEZENET_FILE}"
                ) from None
        if self.lpips_weights is None:
            path = Path(torch.hub.get_dir()) / "checkpoints" / SQUEEZENET_FILE
            if not path.is_file():
                if self.offline:
                    raise ModelUnavailableError(
                        f"LPIPS SqueezeNet weights not in {path} and offline mode is on; download {SQUEEZENET_URL} "
                        "and pass --lpips-weights FILE"
                    )
                try:
                    torch.hub.load_state_dict_from_url(SQUEEZENET_URL, map_location="cpu", progress=False)
                except Exception as err:
                    raise ModelUnavailableError(
                        f"LPIPS SqueezeNet weights not in {path} and not downloadable ({_one_line(err)}); "
                        f"download {SQUEEZENET_URL} and pass --lpips-weights FILE"
                    ) from None
        else:
            path = Path(self.lpips_weights).expanduser()
        try:
            features = load_squeezenet_features(path)
        except Exception as err:
            raise ModelUnavailableError(f"LPIPS backbone weights {str(path)!r}: {_one_line(err)}") from None
        self.lpips_backend = f"ale_pipeline LpipsSqueeze (SqueezeNet 1.1 from {path}, torchmetrics' squeeze.pth heads)"
        return LpipsSqueeze(features).to(self.device)

    def load_all(self) -> None:
        """Load every model now (to fail before a long run rather than in its middle)."""
        _ = self.clip, self.dino, self.lpips

    def describe(self) -> dict[str, str]:
        return {
            "clip_model": self.clip_model,
            "dino_model": self.dino_model,
            "lpips": self.lpips_backend or "(not loaded)",
            "device": str(self.device),
        }


# -------------------------------------------------------------------------------------------- per case


def evaluate_images(
    source: Image.Image,
    edited: Image.Image,
    masks: np.ndarray,
    targets: Sequence[str],
    models: MetricModels,
    *,
    tels: TelsMode = "joined",
    dino_input: DinoInput = "published",
) -> dict[str, float]:
    """Every metric of one edit: :data:`METRIC_COLUMNS` -> value (NaN where undefined).

    ``masks``: ``(N, H, W)`` in [0, 1] at the source size, in the order of ``targets``. ``TELS`` and
    ``structure_distance`` hold the variant chosen by ``tels`` and ``dino_input``; both variants are also
    returned under their own names.
    """
    if tels not in ("joined", "mean"):
        raise ValueError(f"tels must be 'joined' or 'mean', got {tels!r}")
    if dino_input not in ("published", "unit"):
        raise ValueError(f"dino_input must be 'published' or 'unit', got {dino_input!r}")
    source = source.convert("RGB")
    src = np.asarray(source)
    out = np.asarray(match_source_size(edited, source))
    if masks.shape[1:] != src.shape[:2]:
        raise ValueError(f"masks are {masks.shape[1:]} but the source image is {src.shape[:2]}")
    values = clip_metrics(models.clip, out, masks, targets)
    values["structure_distance_published"] = models.dino.distance(src, out, "published")
    values["structure_distance_unit"] = models.dino.distance(src, out, "unit")
    values.update(background_metrics(src, out, mask_union(masks), models.lpips, models.device))
    values["TELS"] = values[f"TELS_{tels}"]
    values["structure_distance"] = values[f"structure_distance_{dino_input}"]
    return {k: values[k] for k in METRIC_COLUMNS}


def evaluate_case(
    case: Any,
    edited_image: str | os.PathLike | Image.Image,
    models: MetricModels,
    *,
    tels: TelsMode = "joined",
    dino_input: DinoInput = "published",
) -> dict[str, float]:
    """:func:`evaluate_images` for a :class:`~ale_pipeline.bench.BenchCase` (its source image, its soft GT
    masks in edit order, its target phrases) and its edited image (a path or a PIL image)."""
    source = load_rgb(case.image_path)
    masks = load_soft_masks(case.mask_paths, source.size)
    return evaluate_images(
        source, load_rgb(edited_image), masks, case.target_phrases, models, tels=tels, dino_input=dino_input
    )


__all__ = [
    "DEFAULT_CLIP_MODEL",
    "DEFAULT_DINO_MODEL",
    "METRIC_COLUMNS",
    "PUBLISHED_COLUMNS",
    "VARIANT_COLUMNS",
    "ClipScorer",
    "DinoStructure",
    "MetricModels",
    "ModelUnavailableError",
    "apply_mask_uint8",
    "background_metrics",
    "clip_metrics",
    "evaluate_case",
    "evaluate_images",
    "load_soft_masks",
    "mask_union",
    "match_source_size",
    "resize_short_side",
]
