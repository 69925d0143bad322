"""The perceptual backbones: which one is chosen, their feature maps, and that they stay frozen."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from capabilities import EXTRAS, missing
from torch import nn
from train_helpers import single_thread

from colord.training.train.backbones import (
    VGG19_FILE,
    VGG19_LAYOUT,
    BackboneError,
    build_efficientnet_lite0,
    efficientnet_lite0_weights_path,
    load_feature_backbone,
)

pytestmark = pytest.mark.usefixtures(single_thread.__name__)

if efficientnet_lite0_weights_path() is None:
    missing("needs the train extra (EfficientNet-Lite0)", EXTRAS)


@pytest.fixture
def empty_torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    return tmp_path / "torch-home"


def write_vgg19_state(path: Path) -> Path:
    """A VGG19 state dict laid out as torchvision's (random values; classifier included)."""
    torch.manual_seed(0)
    state, index, channels = {}, 0, 3
    for item in (*VGG19_LAYOUT, 512, 512, 512, "M"):
        if item == "M":
            index += 1
            continue
        conv = nn.Conv2d(channels, item, 3, padding=1)
        state[f"features.{index}.weight"] = conv.weight.detach()
        state[f"features.{index}.bias"] = conv.bias.detach()
        index, channels = index + 2, item
    state["classifier.0.weight"] = torch.zeros(4, 4)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


def test_without_vgg_weights_auto_falls_back_to_efficientnet(empty_torch_home: Path) -> None:
    backbone = load_feature_backbone("auto")
    assert backbone.name == "efficientnet_lite0"
    features = backbone(torch.rand(2, 3, 64, 96) * 2 - 1)
    assert [f.shape[1] for f in features] == [16, 24, 40, 112, 320]
    assert [f.shape[-2:] for f in features] == [(64 // s, 96 // s) for s in (2, 4, 8, 16, 32)]


def test_efficientnet_stages_match_the_packaged_network() -> None:
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name("efficientnet-lite0", image_size=None)
    net.load_state_dict(torch.load(efficientnet_lite0_weights_path(), weights_only=True))
    net.eval()
    image = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        x = net._swish(net._bn0(net._conv_stem(((image + 1) * 127.5 - 127.0) / 128.0)))
        for block in net._blocks:
            x = block(x)
        ours = build_efficientnet_lite0()(image)[-1]
    assert torch.allclose(ours, x, atol=1e-5)


def test_vgg19_from_the_torchvision_cache(empty_torch_home: Path) -> None:
    write_vgg19_state(empty_torch_home / "hub" / "checkpoints" / VGG19_FILE)
    backbone = load_feature_backbone("auto")
    assert backbone.name == "vgg19"
    features = backbone(torch.rand(1, 3, 64, 64) * 2 - 1)
    assert [f.shape[1] for f in features] == [64, 128, 256, 512, 512]  # relu1_1 .. relu5_1
    assert [f.shape[-1] for f in features] == [64, 32, 16, 8, 4]
    assert all((f >= 0).all() for f in features)  # taken after the ReLUs


def test_vgg19_from_an_explicit_path(tmp_path: Path, empty_torch_home: Path) -> None:
    path = write_vgg19_state(tmp_path / "weights" / "my-vgg.pth")
    assert load_feature_backbone("vgg19", path).name == "vgg19"
    assert load_feature_backbone("auto", path).name == "vgg19"


def test_backbone_is_frozen_but_passes_gradients_to_its_input() -> None:
    backbone = load_feature_backbone("efficientnet_lite0")
    backbone.train()  # a training loop's .train() must not unfreeze batch norm
    assert not backbone.training
    assert not any(p.requires_grad for p in backbone.parameters())
    image = (torch.rand(1, 3, 32, 32) * 2 - 1).requires_grad_()
    sum(f.mean() for f in backbone(image)).backward()
    assert image.grad is not None and image.grad.abs().sum() > 0


def test_missing_or_wrong_weights_are_clear_errors(tmp_path: Path, empty_torch_home: Path) -> None:
    with pytest.raises(BackboneError, match="VGG19 weights not found"):
        load_feature_backbone("vgg19")
    with pytest.raises(BackboneError, match="not found at"):
        load_feature_backbone("auto", tmp_path / "nothing.pth")
    wrong = tmp_path / "wrong.pth"
    torch.save({"features.0.weight": torch.zeros(3)}, wrong)
    with pytest.raises(BackboneError, match="not a VGG19 state dict"):
        load_feature_backbone("vgg19", wrong)
    with pytest.raises(BackboneError, match="unknown backbone"):
        load_feature_backbone("resnet")
