"""Small generated training data and configs shared by the training tests."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from colord.model import Discriminator, Generator
from colord.training.train.backbones import load_feature_backbone
from colord.training.train.config import TrainConfig, load_config
from colord.training.train.losses import LossConfig, SCFTLoss


@pytest.fixture
def single_thread():
    """One intra-op thread: on a small shared machine, OpenMP threads that wait on each other
    make tiny training steps ten times slower, and the results do not depend on it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_art_folder(folder: Path, count: int = 8, seed: int = 0) -> Path:
    """`count` small colour pictures (flat shapes on white, the look of cel-shaded art), half PNG,
    half JPEG, of varied sizes, all large enough for the dataset's minimum side."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        height, width = 80 + 4 * (i % 3), 88 + 8 * i
        image = np.full((height, width, 3), 255, np.uint8)
        for _ in range(6):
            top, left = rng.integers(0, height - 24), rng.integers(0, width - 24)
            size_y, size_x = rng.integers(12, 40, size=2)
            image[top : top + size_y, left : left + size_x] = rng.integers(0, 256, 3)
        suffix = "png" if i % 2 else "jpg"
        Image.fromarray(image).save(folder / f"art{i:02d}.{suffix}")
    return folder


# The `quick` preset made tiny: the network, 64 px crops, 2 images a step, no worker processes.
TINY_SETTINGS = {
    "data.size": 64,
    "data.workers": 0,
    "model.preset": "tiny",
    "optim.batch_size": 2,
    "run.log_every": 1,
    "run.image_every": 1000,
    "run.checkpoint_every": 1000,
}


def tiny_config(images: Path, out: Path, **values: Any) -> TrainConfig:
    """`TINY_SETTINGS` on `images`, written to `out`; `values` maps "section.key" (with "__" for
    ".") to overrides."""
    settings = {"data.images": str(images), "run.out": str(out), **TINY_SETTINGS}
    settings.update({name.replace("__", "."): value for name, value in values.items()})
    return load_config(preset="quick", values=settings)


def eager_cpu_loss(generator: Generator, discriminator: Discriminator) -> SCFTLoss:
    """The paper's losses for a tiny model pair on the CPU: EfficientNet-Lite0, no autocast."""
    return SCFTLoss(
        generator,
        discriminator,
        discriminator,
        load_feature_backbone("efficientnet_lite0"),
        LossConfig(),
        attention_scale=generator.attention_scale,
        autocast=contextlib.nullcontext,
    )
