"""Correspondence metrics: CIEDE2000, attention accuracy against the TPS truth, region colour
accuracy on flat line art, and `colord eval` reporting them."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from colord.daemon.cli import main
from colord.model import Generator, get_preset, save_checkpoint
from colord.training.evaluation import metrics
from colord.training.evaluation.metrics import AttentionArgmax
from colord.training.samples.correspondence import cell_centres

OPENMOJI = Path(__file__).parent / "data" / "openmoji"
ATTENTION = ("attention_acc_16px", "attention_acc_32px")
REGIONS = ("region_acc_de10", "region_mean_de", "region_mean_de_area")
NEW_METRICS = ",".join(("psnr_db", *ATTENTION, *REGIONS))

# Sharma, Wu and Dalal (2005), "The CIEDE2000 color-difference formula": test pairs 1, 2, 7, 8,
# 10, 12, 15, 17-19, 25, 26 and 34 of their table (hue wrap-around, achromatic and dark cases).
SHARMA_PAIRS = [
    ((50.0, 2.6772, -79.7751), (50.0, 0.0, -82.7485), 2.0425),
    ((50.0, 3.1571, -77.2803), (50.0, 0.0, -82.7485), 2.8615),
    ((50.0, 0.0, 0.0), (50.0, -1.0, 2.0), 2.3669),
    ((50.0, 2.49, -0.001), (50.0, -2.49, 0.0009), 7.1792),
    ((50.0, 2.49, -0.001), (50.0, -2.49, 0.0011), 7.2195),
    ((50.0, -0.001, 2.49), (50.0, 0.0009, -2.49), 4.8045),
    ((50.0, 2.5, 0.0), (50.0, 0.0, -2.5), 4.3065),
    ((50.0, 2.5, 0.0), (73.0, 25.0, -18.0), 27.1492),
    ((50.0, 2.5, 0.0), (61.0, -5.0, 29.0), 22.8977),
    ((50.0, 2.5, 0.0), (56.0, -27.0, -3.0), 31.9030),
    ((60.2574, -34.0099, 36.2677), (60.4626, -34.1751, 39.4387), 1.2644),
    ((63.0109, -31.0961, -5.8663), (62.8187, -29.7946, -4.0864), 1.2630),
    ((2.0776, 0.0795, -1.1350), (0.9033, -0.0636, -0.5514), 0.9082),
]


def test_ciede2000_reproduces_the_published_test_pairs_in_both_orders() -> None:
    first = np.array([pair[0] for pair in SHARMA_PAIRS])
    second = np.array([pair[1] for pair in SHARMA_PAIRS])
    expected = np.array([pair[2] for pair in SHARMA_PAIRS])
    np.testing.assert_allclose(metrics.ciede2000(first, second), expected, atol=5e-5)
    np.testing.assert_allclose(metrics.ciede2000(second, first), expected, atol=5e-5)
    assert metrics.ciede2000(first[0], first[0]) == 0.0


def test_rgb_to_lab_gives_cielab_d65() -> None:
    rgb = np.array([[255, 255, 255], [0, 0, 0], [255, 0, 0], [0, 0, 255]], np.uint8)
    expected = [[100, 0, 0], [0, 0, 0], [53.24, 80.09, 67.20], [32.30, 79.19, -107.86]]
    np.testing.assert_allclose(metrics.rgb_to_lab(rgb), expected, atol=0.02)


# ---------------------------------------------------------------------------------------------
# Attention accuracy


def translation(size: int, dx: float = 0.0) -> np.ndarray:
    """The correspondence of content moved right by dx px: NaN where it leaves the frame."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    landing = np.stack([xs + dx, ys], axis=-1)
    landing[landing[..., 0] > size - 1] = np.nan
    return landing


def own_cells(grid: int) -> np.ndarray:
    return np.arange(grid * grid)


def test_an_attention_on_the_true_cell_scores_one_beside_the_chance_level() -> None:
    argmax = AttentionArgmax(own_cells(8), (8, 8), (8, 8))
    hits = metrics.attention_hits(argmax, translation(128), 16.0)
    assert hits.cells == 64 and hits.hits == 64
    # Within 16 px of a cell centre on a 16 px grid: the cell and its 4 neighbours (fewer at the
    # border): 36 inner cells x 5 + 24 edge cells x 4 + 4 corners x 3, over 64 x 64 pairs.
    assert hits.chance / hits.cells == pytest.approx(288 / 64**2)
    wide = metrics.attention_hits(argmax, translation(128), 32.0)
    assert wide.hits == 64 and wide.chance > hits.chance


def test_looking_at_the_same_place_when_the_content_moved_32_px() -> None:
    """Content moved right by 32 px: the cells whose content leaves the frame are not scored, and
    an attention on the sketch cell's own place is 32 px off: wrong at 16 px, right at 32 px."""
    argmax = AttentionArgmax(own_cells(8), (8, 8), (8, 8))
    narrow = metrics.attention_hits(argmax, translation(128, 32.0), 16.0)
    wide = metrics.attention_hits(argmax, translation(128, 32.0), 32.0)
    assert narrow.cells == wide.cells == 48  # 2 of 8 columns land outside the frame
    assert narrow.hits == 0 and wide.hits == 48


def test_an_argmax_stuck_on_the_first_cell_scores_its_neighbours_only() -> None:
    """A uniform attention's argmax is the first cell for every row: right only for the cells
    within 16 px of the top-left cell's centre (itself, right and below)."""
    argmax = AttentionArgmax(np.zeros(64, np.int64), (8, 8), (8, 8))
    hits = metrics.attention_hits(argmax, translation(128), 16.0)
    assert hits.hits == 3 and hits.cells == 64


@pytest.mark.parametrize("size", [128, 256])
def test_pixel_distances_come_from_the_grids_not_a_fixed_stride(size: int) -> None:
    """A 1/8 sketch grid against a 1/16 reference grid: each sketch cell's argmax is the reference
    cell that contains its centre, a quarter of a coarse cell away: always within 16 px."""
    fine, coarse = size // 8, size // 16
    rows, cols = np.mgrid[0:fine, 0:fine]
    cells = (rows // 2 * coarse + cols // 2).ravel()
    argmax = AttentionArgmax(cells, (fine, fine), (coarse, coarse))
    hits = metrics.attention_hits(argmax, translation(size), 16.0)
    assert hits.hits == hits.cells == fine * fine
    two_cells_off = np.where(cells % coarse < coarse - 2, cells + 2, cells - 2)  # 32 px ± 4
    shifted = AttentionArgmax(two_cells_off, (fine, fine), (coarse, coarse))
    assert metrics.attention_hits(shifted, translation(size), 16.0).hits == 0


@pytest.mark.parametrize(("grid", "size"), [((8, 8), 128), ((32, 32), 256), ((16, 8), 128)])
def test_counting_cell_centres_in_a_circle_matches_measuring_every_distance(
    grid: tuple[int, int], size: int
) -> None:
    rng = np.random.default_rng(0)
    centres = cell_centres(grid, (size, size))
    points = np.concatenate([centres[::7], rng.uniform(-8, size + 8, (500, 2))])  # ties included
    for radius in (16.0, 32.0):
        squared = ((points[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)
        expected = (squared <= radius**2).sum(axis=1)
        counted = metrics.centres_within(points, grid, (size, size), radius)
        np.testing.assert_array_equal(counted, expected)


# ---------------------------------------------------------------------------------------------
# Region colour accuracy

RED, BLUE, GREEN, WHITE = (220, 40, 40), (40, 80, 220), (40, 170, 70), (255, 255, 255)


def two_boxes() -> tuple[np.ndarray, np.ndarray]:
    """Line art of two boxes sharing a side, and its flat colouring (red | blue on white)."""
    line_art = np.full((64, 64), 255, np.uint8)
    cv2.rectangle(line_art, (8, 8), (31, 55), 0, 1)
    cv2.rectangle(line_art, (31, 8), (55, 55), 0, 1)
    cv2.rectangle(line_art, (40, 40), (42, 42), 0, 1)  # a closed 1-pixel region: too small
    truth = np.full((64, 64, 3), WHITE, np.uint8)
    truth[9:55, 9:31] = RED
    truth[9:55, 32:55] = BLUE
    truth[line_art == 0] = 0
    return line_art, truth


def test_closed_regions_leave_out_lines_the_open_ground_and_tiny_regions() -> None:
    line_art, _ = two_boxes()
    labels = metrics.closed_regions(line_art)
    assert labels.max() == 2
    assert sorted(np.bincount(labels.ravel())[1:]) == [46 * 22, 46 * 23 - 9]
    assert (labels[line_art == 0] == 0).all() and labels[0, 0] == 0


def test_a_region_off_by_a_known_delta_e() -> None:
    line_art, truth = two_boxes()
    output = truth.copy()
    output[9:55, 32:55] = GREEN  # the blue box comes out green ...
    output[line_art == 0] = (255, 0, 255)  # ... and the lines' colour is never read,
    output[9, 10:30] = (255, 0, 255)  # nor a pixel next to a line
    delta_e, areas = metrics.region_color_errors(output, truth, line_art)
    blue_to_green = metrics.ciede2000(*metrics.rgb_to_lab(np.array([BLUE, GREEN], np.uint8)))
    assert blue_to_green > 10
    order = np.argsort(areas)
    np.testing.assert_allclose(delta_e[order], [0.0, blue_to_green], atol=1e-9)
    np.testing.assert_array_equal(areas[order], [46 * 22, 46 * 23 - 9])

    sample = metrics.EvalSample(output, truth, ground_truth=truth, flat_line_art=line_art)
    no_line_art = metrics.EvalSample(truth, truth, ground_truth=truth)  # left out, not scored
    inputs = metrics.MetricInputs([sample, no_line_art])
    results = {r.name: r for r in metrics.calc_metrics(REGIONS, inputs)}
    assert results["region_acc_de10"].value == 0.5 and results["region_acc_de10"].count == 2
    assert results["region_mean_de"].value == pytest.approx(blue_to_green / 2)
    blue_share = (46 * 23 - 9) / (46 * 22 + 46 * 23 - 9)
    assert results["region_mean_de_area"].value == pytest.approx(blue_to_green * blue_share)
    assert not results["region_mean_de"].higher_is_better


def test_region_metrics_need_flat_line_art_and_attention_metrics_need_attention() -> None:
    _, truth = two_boxes()
    plain = metrics.MetricInputs([metrics.EvalSample(truth, truth, ground_truth=truth)])
    assert metrics.calc_metrics(("region_acc_de10", "attention_acc_16px"), plain) == []


def test_attention_metrics_pool_cells_over_images_with_the_chance_level() -> None:
    image = np.zeros((128, 128, 3), np.uint8)
    right = AttentionArgmax(own_cells(8), (8, 8), (8, 8))
    first = AttentionArgmax(np.zeros(64, np.int64), (8, 8), (8, 8))
    samples = [
        metrics.EvalSample(image, image, correspondence=translation(128), attention=argmax)
        for argmax in (right, first)
    ]
    result = metrics.calc_metrics(["attention_acc_16px"], metrics.MetricInputs(samples))[0]
    assert result.value == pytest.approx((64 + 3) / 128) and result.count == 128
    assert result.chance == pytest.approx(288 / 64**2)


# ---------------------------------------------------------------------------------------------
# `colord eval`


@pytest.fixture(scope="module")
def openmoji_pairs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """tests/data/openmoji laid out as `colord eval` reads it: color/NAME.png, line/NAME.png."""
    root = tmp_path_factory.mktemp("openmoji")
    for kind in ("color", "line"):
        (root / kind).mkdir()
        for path in OPENMOJI.glob(f"*-{kind}.png"):
            shutil.copyfile(path, root / kind / path.name.replace(f"-{kind}", ""))
    return root / "color", root / "line"


def run_eval(checkpoint: Path, pairs: tuple[Path, Path], out: Path) -> dict:
    result = CliRunner().invoke(
        main,
        ["eval", "--model", str(checkpoint), "--images", str(pairs[0]), "--line-art",
         str(pairs[1]), "--out", str(out), "--size", "128", "--metrics", NEW_METRICS],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return json.loads((out / "eval.json").read_text())


def test_eval_reports_attention_and_region_colour_accuracy(
    tiny_checkpoint: Path, openmoji_pairs: tuple[Path, Path], tmp_path: Path
) -> None:
    summary = run_eval(tiny_checkpoint, openmoji_pairs, tmp_path)
    rows = summary["settings"]["self"]
    model = rows["model"]
    for name in ATTENTION:
        assert 0 <= model[name]["value"] <= 1 and 0 < model[name]["chance"] < 1
        assert model[name]["count"] > 0
    assert model["attention_acc_32px"]["chance"] > model["attention_acc_16px"]["chance"]
    assert summary["attention_not_measured"] is None
    for method in ("model", "no_reference", "mean_color", "reference"):
        assert rows[method]["region_acc_de10"]["count"] > 0
        assert rows[method]["region_mean_de_area"]["value"] >= 0
        assert "attention_acc_16px" not in rows[method] or method == "model"
    assert "region_acc_de10" not in summary["settings"]["cross"]["model"]  # no ground truth

    table = (tmp_path / "eval.md").read_text()
    assert "## Correspondence (self reference)" in table
    assert (
        "| method | attention acc @16px ↑ | attention acc @32px ↑ | chance @16px / @32px | "
        "region acc (ΔE≤10) ↑ | mean ΔE ↓ | mean ΔE, area-weighted ↓ |" in table
    )
    self_table = table.split("## Self reference")[1].split("##")[0]
    assert "region_acc_de10" not in self_table  # shown once, in the correspondence table


def test_eval_says_n_a_for_a_model_without_attention(
    openmoji_pairs: tuple[Path, Path], tmp_path: Path
) -> None:
    torch.manual_seed(0)
    preset = replace(get_preset("tiny"), aggregation="add")
    checkpoint = save_checkpoint(tmp_path / "add.safetensors", Generator(preset))
    summary = run_eval(checkpoint, openmoji_pairs, tmp_path / "eval")
    assert "attention_acc_16px" not in summary["settings"]["self"]["model"]
    assert "no attention" in summary["attention_not_measured"]
    model_line = next(
        line
        for line in (tmp_path / "eval" / "eval.md")
        .read_text()
        .split("## Correspondence")[1]
        .splitlines()
        if line.startswith("| model |")
    )
    assert model_line.startswith("| model | n/a | n/a | – |")
