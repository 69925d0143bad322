"""The training loop: it learns, keeps the paper's schedule, and `colord train` runs end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from torch.utils.data import default_collate
from train_helpers import eager_cpu_loss, single_thread, tiny_config, write_art_folder

from colord.model import Discriminator, Generator, get_preset, load_checkpoint, save_checkpoint
from colord.training.cli import train_command
from colord.training.samples.dataset import ColorizationDataset
from colord.training.train.config import ConfigError, load_config
from colord.training.train.loop import learning_rate_factor, train, training_step
from colord.training.train.losses import reconstruction_loss
from colord.training.train.visualize import attention_figure

pytestmark = pytest.mark.usefixtures(single_thread.__name__)


@pytest.fixture(scope="module")
def art(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_art_folder(tmp_path_factory.mktemp("art"))


@pytest.mark.slow
def test_twenty_steps_lower_the_reconstruction_loss_on_a_fixed_batch(art: Path) -> None:
    torch.manual_seed(0)
    dataset = ColorizationDataset(art, size=64, seed=0, zero_reference_probability=0.0)
    batch = default_collate([dataset[i] for i in range(4)])
    generator, discriminator = Generator(get_preset("tiny")), Discriminator(get_preset("tiny"))
    loss = eager_cpu_loss(generator, discriminator)
    opt_g = torch.optim.Adam(generator.parameters(), lr=1e-3, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999))

    def rec() -> float:
        with torch.no_grad():
            output = generator(batch["sketch"], batch["reference"])
            return reconstruction_loss(output, batch["target"]).item()

    before = rec()
    for _ in range(20):
        stats = training_step(loss, batch, opt_g, opt_d)
    after = rec()
    assert torch.isfinite(stats["G/total"])
    assert after < 0.9 * before


def test_learning_rate_is_constant_then_decays_linearly_to_zero() -> None:
    cfg = load_config(overrides=["optim.constant_epochs=2", "optim.decay_epochs=4"])
    per_epoch = 10
    assert learning_rate_factor(0, per_epoch, cfg) == 1.0
    assert learning_rate_factor(19, per_epoch, cfg) == 1.0
    assert learning_rate_factor(20, per_epoch, cfg) == 1.0
    assert learning_rate_factor(30, per_epoch, cfg) == pytest.approx(0.75)
    assert learning_rate_factor(40, per_epoch, cfg) == pytest.approx(0.5)
    assert learning_rate_factor(60, per_epoch, cfg) == 0.0


@pytest.mark.slow
def test_colord_train_on_a_folder_of_png_and_jpeg(art: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(
        train_command,
        ["--data", str(art), "--preset", "quick", "--out", str(out),
         "--set", "model.preset=tiny", "--set", "data.size=64", "--set", "optim.batch_size=2",
         "--set", "data.workers=1", "--set", "run.max_steps=3", "--set", "run.log_every=1",
         "--set", "run.image_every=3"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "trained 3 steps" in result.output

    config = json.loads((out / "config.json").read_text())
    assert config["model"]["preset"] == "tiny"
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2, 3]
    assert {"G/rec", "G/triplet", "D/loss", "speed/img_per_s"} <= set(lines[0])
    for name in ("samples", "attention"):
        with Image.open(out / "images" / f"{name}-00000003.png") as image:
            assert image.mode == "RGB" and image.width > 64
    loaded = load_checkpoint(out / "generator.safetensors")
    assert loaded.preset.name == "tiny"
    assert loaded.metadata["backbone"] == "efficientnet_lite0"
    assert loaded.metadata["step"] == 3
    assert (out / "resume.pt").is_file()
    assert not list(out.glob("*.partial"))


@pytest.mark.slow
def test_fine_tuning_starts_from_the_given_generator(art: Path, tmp_path: Path) -> None:
    torch.manual_seed(1)
    start = Generator(get_preset("tiny"))
    checkpoint = save_checkpoint(tmp_path / "start.safetensors", start)
    cfg = tiny_config(
        art, tmp_path / "tuned", model__init=str(checkpoint), model__preset="paper",
        run__max_steps=1, optim__lr_g=1e-12, optim__lr_d=1e-12,
    )  # fmt: skip
    result = train(cfg)
    assert result.generator.preset.name == "tiny"  # the checkpoint's architecture wins
    saved = json.loads((tmp_path / "tuned" / "config.json").read_text())
    assert saved["model"]["preset"] == "tiny"
    for name, tensor in start.state_dict().items():
        if tensor.is_floating_point() and "running" not in name:
            assert torch.allclose(result.generator.state_dict()[name], tensor, atol=1e-6), name


def test_too_few_images_for_a_batch_is_a_clean_error(art: Path, tmp_path: Path) -> None:
    cfg = tiny_config(art, tmp_path / "run", optim__batch_size=64)
    with pytest.raises(ConfigError, match="no full batch of 64"):
        train(cfg)


def test_attention_figure_heats_the_attended_reference_cell() -> None:
    sketch = torch.ones(1, 64, 64)
    reference = torch.zeros(3, 64, 64)  # flat grey, so only the heat map colours the overlay
    attention = torch.zeros(16, 16)
    attention[5, 2 * 4 + 3] = 1.0  # sketch cell (1, 1) looks at reference cell (2, 3)
    figure = attention_figure(sketch, reference, attention, (4, 4), (4, 4), [(1, 1)], gap=2)
    assert figure.shape == (64, 64 + 2 + 64, 3)
    overlay = figure[:, 66:].astype(int)
    warmth = overlay[..., 0] - overlay[..., 2]  # red minus blue
    attended = warmth[32:48, 48:64]
    assert attended.min() > warmth.max() - 1  # the hottest pixels are exactly that cell
    assert (warmth[:32] < attended.min()).all()
    boxed = figure[:, :64]
    assert (boxed[16, 16:32] == (255, 0, 0)).all()  # the sketch cell is outlined in red


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_a_folder_without_usable_images_is_a_clean_error(tmp_path: Path, make: str) -> None:
    folder = tmp_path / "art"
    if make == "empty":
        folder.mkdir()
        (folder / "notes.txt").write_text("no pictures here")
    result = CliRunner().invoke(
        train_command, ["--data", str(folder), "--out", str(tmp_path / "run")]
    )
    assert result.exit_code == 1
    assert "image folder not found" in result.output or "no usable training images" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
