"""The training config: presets, overrides, clean errors, and `colord train --dry-run`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from colord.training.cli import train_command
from colord.training.train.config import ConfigError, TrainConfig, load_config

COLORD = str(Path(sys.executable).with_name("colord"))  # the installed console script


def test_paper_preset_holds_the_papers_numbers() -> None:
    cfg = load_config(preset="paper")
    assert cfg == load_config()  # the default
    assert (cfg.loss.triplet, cfg.loss.rec, cfg.loss.adv, cfg.loss.perc, cfg.loss.style) == (
        1.0, 30.0, 1.0, 0.01, 50.0
    )  # fmt: skip
    assert cfg.loss.triplet_margin == 12.0
    assert (cfg.optim.beta1, cfg.optim.beta2, cfg.optim.lr_g, cfg.optim.lr_d) == (
        0.5, 0.999, 1e-4, 2e-4
    )  # fmt: skip
    assert (cfg.optim.constant_epochs, cfg.optim.decay_epochs, cfg.optim.batch_size) == (
        100, 100, 16
    )  # fmt: skip
    assert (cfg.data.size, cfg.data.zero_reference_ratio, cfg.model.preset) == (256, 0.1, "paper")


def test_quick_preset_and_overrides() -> None:
    cfg = load_config(
        preset="quick",
        values={"data.images": "art"},
        overrides=["optim.batch_size=4", "loss.perc=0", "run.out=runs/x=y", "run.bf16=false"],
    )
    assert cfg.model.preset == "default"
    assert cfg.data.images == "art"
    assert cfg.optim.batch_size == 4
    assert cfg.loss.perc == 0.0 and isinstance(cfg.loss.perc, float)
    assert cfg.run.out == "runs/x=y"  # only the first "=" splits
    assert cfg.run.bf16 is False


def test_a_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text('[model]\npreset = "tiny"\n[optim]\nconstant_epochs = 3\n')
    cfg = load_config(path)
    assert cfg.model.preset == "tiny"
    assert cfg.optim.constant_epochs == 3.0
    assert cfg.optim.decay_epochs == TrainConfig().optim.decay_epochs


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("loss.percep=1", "unknown key loss.percep"),
        ("optimizer.lr_g=1", "unknown section 'optimizer'"),
        ("optim.batch_size=2.5", "optim.batch_size must be int"),
        ("run.bf16=1", "run.bf16 must be true or false"),
        ("data.size=100", "multiple of 16"),
        ("model.preset=huge", "model.preset must be one of"),
        ("model.aggregation=add", "set loss.triplet = 0"),
        ("loss.backbone=resnet", "loss.backbone must be one of"),
        ("batch_size=3", "section.key=value"),
    ],
)
def test_bad_values_are_clean_errors(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=[override])


def test_unknown_key_in_a_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "typo.toml"
    path.write_text("[loss]\nlambda_rec = 30\n")
    with pytest.raises(ConfigError, match=r"typo\.toml: unknown key loss\.lambda_rec"):
        load_config(path)
    path.write_text("[loss\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)
    with pytest.raises(ConfigError, match="unknown training preset 'fast'"):
        load_config(preset="fast")


def test_config_json_round_trip(tmp_path: Path) -> None:
    cfg = load_config(preset="quick", overrides=["loss.rec=5"])
    cfg.write_json(tmp_path / "config.json")
    assert json.loads((tmp_path / "config.json").read_text()) == cfg.to_dict()


def test_dry_run_prints_the_resolved_config_and_trains_nothing(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(
        train_command,
        ["--data", "art", "--preset", "quick", "--out", str(out), "--no-triplet",
         "--set", "optim.lr_g=3e-4", "--dry-run"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed["data"]["images"] == "art"
    assert printed["loss"]["triplet"] == 0.0
    assert printed["optim"]["lr_g"] == 3e-4
    assert printed["model"]["preset"] == "default"
    assert not out.exists()


def test_ablation_flag_turns_the_triplet_loss_off() -> None:
    result = CliRunner().invoke(train_command, ["--aggregation", "adain", "--dry-run"])
    printed = json.loads(result.stdout)
    assert (printed["model"]["aggregation"], printed["loss"]["triplet"]) == ("adain", 0.0)


@pytest.mark.slow  # a fresh interpreter importing torch
def test_unknown_key_on_the_command_line_is_a_clean_error() -> None:
    # through the installed entry point, as a user runs it: one line, no traceback
    process = subprocess.run(
        [COLORD, "train", "--data", "art", "--set", "loss.bogus=1"],
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert process.returncode == 1
    assert "unknown key loss.bogus" in process.stderr
    assert "Traceback" not in process.stderr
