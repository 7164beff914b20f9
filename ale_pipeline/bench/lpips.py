"""LPIPS with the SqueezeNet 1.1 backbone (``net_type="squeeze"``), without torchvision.

The published evaluation calls torchmetrics' ``LearnedPerceptualImagePatchSimilarity(net_type="squeeze")``,
which builds its backbone with ``torchvision.models.squeezenet1_1``. torchvision cannot be installed next to
every torch build, so this module rebuilds the same network: :func:`squeezenet1_1_features` has the layer
indices and parameter names of torchvision's ``squeezenet1_1().features`` (so torchvision's ImageNet
checkpoint ``squeezenet1_1-b8a52dc0.pth`` loads as it is), and :class:`LpipsSqueeze` is LPIPS' head: the
same input scaling, the 7 feature slices, unit-normalised channel differences, the learned 1x1 linear
weights (the ``squeeze.pth`` file torchmetrics ships) and a spatial mean.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch
from torch import nn

#: torchvision's ImageNet SqueezeNet 1.1 checkpoint (its file name in the torch hub cache, and its URL).
SQUEEZENET_FILE = "squeezenet1_1-b8a52dc0.pth"
SQUEEZENET_URL = f"https://download.pytorch.org/models/{SQUEEZENET_FILE}"
#: LPIPS' feature slices over ``features`` (indices), and the channels of each slice's output.
SLICES = ((0, 2), (2, 5), (5, 8), (8, 10), (10, 11), (11, 12), (12, 13))
CHANNELS = (64, 128, 256, 384, 384, 512, 512)
# LPIPS' ScalingLayer: inputs in [-1, 1] are shifted and scaled to ImageNet statistics.
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


class Fire(nn.Module):
    """SqueezeNet's Fire module, parameter names as torchvision's (``squeeze``, ``expand1x1``, ``expand3x3``)."""

    def __init__(self, inplanes: int, squeeze: int, expand1x1: int, expand3x3: int) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(inplanes, squeeze, kernel_size=1)
        self.squeeze_activation = nn.ReLU(inplace=True)
        self.expand1x1 = nn.Conv2d(squeeze, expand1x1, kernel_size=1)
        self.expand1x1_activation = nn.ReLU(inplace=True)
        self.expand3x3 = nn.Conv2d(squeeze, expand3x3, kernel_size=3, padding=1)
        self.expand3x3_activation = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.squeeze_activation(self.squeeze(x))
        return torch.cat(
            [self.expand1x1_activation(self.expand1x1(x)), self.expand3x3_activation(self.expand3x3(x))], 1
        )


def squeezenet1_1_features() -> nn.Sequential:
    """torchvision's ``squeezenet1_1().features`` (13 layers, same indices and names), randomly initialised."""
    return nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=3, stride=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
        Fire(64, 16, 64, 64),
        Fire(128, 16, 64, 64),
        nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
        Fire(128, 32, 128, 128),
        Fire(256, 32, 128, 128),
        nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
        Fire(256, 48, 192, 192),
        Fire(384, 48, 192, 192),
        Fire(384, 64, 256, 256),
        Fire(512, 64, 256, 256),
    )


def load_squeezenet_features(path: str | os.PathLike) -> nn.Sequential:
    """:func:`squeezenet1_1_features` with the weights of ``path``: a torchvision SqueezeNet 1.1 state dict
    (``features.*`` and ``classifier.*`` keys; the classifier is dropped) or a bare ``features`` state dict."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if "features.0.weight" in state:
        state = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
    features = squeezenet1_1_features()
    features.load_state_dict(state, strict=True)
    return features


def torchmetrics_lpips_linear_weights(net: str = "squeeze") -> Path:
    """The LPIPS linear-layer weights torchmetrics ships (``functional/image/lpips_models/<net>.pth``)."""
    spec = importlib.util.find_spec("torchmetrics")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "torchmetrics is not installed; it ships the LPIPS linear weights (pip install torchmetrics)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "functional" / "image" / "lpips_models" / f"{net}.pth"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: this torchmetrics does not ship the LPIPS {net} weights")
    return path


class LpipsSqueeze(nn.Module):
    """LPIPS (SqueezeNet) of two image batches ``(B, 3, H, W)`` in [-1, 1] -> ``(B,)``.

    ``lpips(a, b) = sum_l mean_{h,w} w_l . (f_l(a)/|f_l(a)| - f_l(b)/|f_l(b)|)^2`` over the 7 slices, where
    ``|.|`` is the channel norm (with LPIPS' eps 1e-8 inside the square root). Identical inputs give exactly 0
    for any weights. Same computation as torchmetrics' ``_LPIPS(net="squeeze")`` with ``normalize=False``.
    """

    def __init__(self, features: nn.Sequential, linear_weights: dict[str, torch.Tensor] | None = None) -> None:
        super().__init__()
        self.slices = nn.ModuleList(nn.Sequential(*features[a:b]) for a, b in SLICES)
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, kernel_size=1, bias=False) for c in CHANNELS)
        if linear_weights is None:
            linear_weights = torch.load(torchmetrics_lpips_linear_weights(), map_location="cpu", weights_only=True)
        for k, lin in enumerate(self.lins):
            # torchmetrics' file names them lin<k>.model.1.weight (index 1: after a Dropout, inactive in eval).
            lin.weight.data.copy_(linear_weights[f"lin{k}.model.1.weight"])
        self.register_buffer("shift", torch.tensor(_SHIFT)[None, :, None, None], persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE)[None, :, None, None], persistent=False)
        self.eval().requires_grad_(False)

    @torch.no_grad()
    def forward(self, in0: torch.Tensor, in1: torch.Tensor) -> torch.Tensor:
        x0, x1 = (in0 - self.shift) / self.scale, (in1 - self.shift) / self.scale
        total = torch.zeros(in0.shape[0], device=in0.device, dtype=in0.dtype)
        for block, lin in zip(self.slices, self.lins, strict=True):
            x0, x1 = block(x0), block(x1)
            f0 = x0 / torch.sqrt(1e-8 + (x0**2).sum(1, keepdim=True))
            f1 = x1 / torch.sqrt(1e-8 + (x1**2).sum(1, keepdim=True))
            total = total + lin((f0 - f1) ** 2).mean(dim=(1, 2, 3))
        return total
