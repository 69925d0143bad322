"""The ablation runner: the paper's Table 3 and Table 4 rows, trained a couple of steps each."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from colord.daemon.cli import main
from colord.model import load_checkpoint
from colord.training.evaluation import ablation, metrics
from colord.training.evaluation.evaluate import EvalOptions
from colord.training.train.backbones import load_feature_backbone
from colord.training.train.config import ConfigError, load_config

SIZE = 32


def write_pictures(folder, count: int, seed: int, size: int = 64) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    ys, xs = np.mgrid[0:size, 0:size]
    for i in range(count):
        image = np.empty((size, size, 3), np.uint8)
        image[:] = rng.integers(60, 256, 3)
        for _ in range(3):
            cx, cy = rng.integers(8, size - 8, 2)
            disc = (xs - cx) ** 2 + (ys - cy) ** 2 < rng.integers(25, 300)
            image[disc] = rng.integers(0, 256, 3)
        Image.fromarray(image).save(folder / f"picture_{i}.png")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("ablation")
    write_pictures(root / "train", 4, seed=0)
    write_pictures(root / "held_out", 3, seed=1)
    return root


def tiny_config(images):
    return load_config(
        preset="quick",
        overrides=[
            f"data.images={images}",
            f"data.size={SIZE}",
            "data.workers=0",
            "model.preset=tiny",
            "optim.batch_size=2",
            "run.device=cpu",
            "loss.backbone=efficientnet_lite0",
        ],
    )


def test_variant_configs_switch_off_the_right_terms(tmp_path):
    base = tiny_config(tmp_path)
    by_key = {v.key: v for table in ablation.TABLES.values() for v in table}
    rec = ablation.variant_config(base, by_key["rec"], tmp_path, 3)
    assert (rec.loss.adv, rec.loss.perc, rec.loss.style, rec.loss.triplet) == (0, 0, 0, 0)
    assert rec.loss.rec == base.loss.rec and rec.run.max_steps == 3
    assert rec.run.out == str(tmp_path / "rec")
    full = ablation.variant_config(base, by_key["full"], tmp_path, 3)
    assert full.loss == base.loss and full.model.aggregation == "scft"
    adain = ablation.variant_config(base, by_key["adain"], tmp_path, 3)
    assert adain.model.aggregation == "adain" and adain.loss.triplet == 0
    assert adain.loss.perc == base.loss.perc
    assert base.run.max_steps == 0 and base.loss.adv == 1  # the base is left untouched


def test_ablation_rejects_unknown_tables_and_empty_budgets(tmp_path):
    options = ablation.AblationOptions(tiny_config(tmp_path), tmp_path, tmp_path, steps=1)
    with pytest.raises(ConfigError, match="unknown ablation table"):
        ablation.run_ablation(ablation.AblationOptions(**{**vars(options), "tables": ("vgg",)}))
    with pytest.raises(ConfigError, match="at least one step"):
        ablation.run_ablation(ablation.AblationOptions(**{**vars(options), "steps": 0}))


@pytest.mark.slow
def test_ablation_trains_each_row_and_writes_tables_shaped_like_the_papers(folders, tmp_path):
    features = metrics.BackbonePooledFeatures(
        load_feature_backbone(kind="efficientnet_lite0"), input_size=64
    )
    out = tmp_path / "ablation"
    options = ablation.AblationOptions(
        base=tiny_config(folders / "train"),
        held_out=folders / "held_out",
        out=out,
        steps=2,
        eval=EvalOptions(images=folders / "held_out", out=out, size=SIZE, keypoints=8),
    )
    summary = ablation.run_ablation(options, features=features)

    # Six distinct trainings: Table 3's full model is Table 4's SCFT row.
    assert set(summary["runs"]) == {"rec", "rec_adv", "rec_adv_perc_style", "full", "add", "adain"}
    assert all(run["steps"] == 2 for run in summary["runs"].values())
    generators = {
        key: load_checkpoint(out / key / "generator.safetensors") for key in summary["runs"]
    }
    aggregation = {key: g.preset.aggregation for key, g in generators.items()}
    assert aggregation == {**dict.fromkeys(summary["runs"], "scft"), "add": "add", "adain": "adain"}
    rec, rec_adv = (generators[key].generator.state_dict() for key in ("rec", "rec_adv"))
    assert any(not torch.equal(rec[name], rec_adv[name]) for name in rec)  # L_adv changed it
    for key in summary["runs"]:
        assert (out / key / "generator.safetensors").is_file()
        assert (out / key / "eval" / "contact_sheet.png").is_file()
    assert json.loads((out / "ablation.json").read_text()) == summary

    table = (out / "ablation.md").read_text()
    sections = table.split("## ")
    losses = next(s for s in sections if s.startswith("Loss terms"))
    aggregation = next(s for s in sections if s.startswith("Aggregation"))
    loss_rows = [line for line in losses.splitlines() if line.startswith("| L_rec")]
    assert [row.split(" | ")[0] for row in loss_rows] == [
        "| L_rec",
        "| L_rec + L_adv",
        "| L_rec + L_adv + L_perc + L_style",
        "| L_rec + L_adv + L_perc + L_style + L_tr",
    ]
    agg_rows = [line for line in aggregation.splitlines() if line.startswith("| (")]
    assert [row.split(" | ")[0] for row in agg_rows] == [
        "| (a) Addition",
        "| (b) AdaIN",
        "| (c) SCFT",
    ]
    assert "cross: fid_proxy_efficientnet_lite0 ↓" in losses and "self: psnr_db ↑" in losses
    assert "| baseline: mean_color |" in losses
    full_psnr = summary["runs"]["full"]["settings"]["self"]["model"]["psnr_db"]["value"]
    full_row = next(line for line in loss_rows if "L_tr" in line)
    scft_row = agg_rows[2]
    # the same run in both tables; the tables' columns differ (attention metrics exist only where
    # some row has attention), so compare by column name
    full_cells, scft_cells = row_by_column(losses, full_row), row_by_column(aggregation, scft_row)
    shared = set(full_cells) & set(scft_cells) - {""}
    assert "self: psnr_db ↑" in shared
    assert all(full_cells[name] == scft_cells[name] for name in shared)
    assert f"{full_psnr:.4g}" in full_row


def row_by_column(section: str, row: str) -> dict[str, str]:
    """A markdown table row's cells keyed by the section's header names."""
    header = next(line for line in section.splitlines() if line.startswith("| "))
    names = [cell.strip() for cell in header.strip("|").split("|")]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    return dict(zip(names[1:], cells[1:], strict=True))


@pytest.mark.slow
def test_ablate_command_runs_one_table(folders, tmp_path):
    out = tmp_path / "cli"
    result = CliRunner().invoke(
        main,
        [
            "ablate",
            "--data", str(folders / "train"),
            "--held-out", str(folders / "held_out"),
            "--steps", "1",
            "--tables", "aggregation",
            "--out", str(out),
            "--size", str(SIZE),
            "--metrics", "psnr_db,color_distance",
            "--set", f"data.size={SIZE}",
            "--set", "data.workers=0",
            "--set", "model.preset=tiny",
            "--set", "optim.batch_size=2",
            "--set", "run.device=cpu",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "ablation.json").read_text())
    assert [row["key"] for row in summary["tables"]["aggregation"]] == ["add", "adain", "full"]
    assert list(summary["tables"]) == ["aggregation"]
    assert set(summary["runs"]) == {"add", "adain", "full"}
    assert "(b) AdaIN" in result.output
