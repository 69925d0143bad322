"""`colord eval` end to end on a few generated images with a tiny random checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from colord.daemon.cli import main
from colord.model import Generator, get_preset, save_checkpoint
from colord.training.evaluation import evaluate, metrics
from colord.training.evaluation.spair import load_spair_split
from colord.training.samples.sketch import binarize_line_art, xdog
from colord.training.train.backbones import load_feature_backbone

SIZE = 32


def draw_picture(rng: np.random.Generator, size: int = 40) -> np.ndarray:
    """A flat-coloured illustration: a background and a few outlined shapes."""
    image = np.empty((size, size, 3), np.uint8)
    image[:] = rng.integers(60, 256, 3)
    for _ in range(3):
        centre = tuple(int(v) for v in rng.integers(8, size - 8, 2))
        radius = int(rng.integers(5, size // 3))
        cv2.circle(image, centre, radius, rng.integers(0, 256, 3).tolist(), -1)
        cv2.circle(image, centre, radius, (20, 20, 20), 1)
    return image


@pytest.fixture(scope="module")
def held_out_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("held_out")
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(draw_picture(rng)).save(folder / f"picture_{i}.png")
    (folder / "broken.png").write_bytes(b"not an image")
    return folder


def test_mean_color_fill_keeps_lines_dark_and_fills_regions_with_the_mean():
    sketch = np.full((4, 4), 255, np.uint8)
    sketch[1] = 0
    reference = np.zeros((2, 2, 3), np.uint8)
    reference[0] = (200, 100, 0)
    filled = evaluate.mean_color_fill(sketch, reference)
    assert (filled[1] == 0).all()
    assert (filled[0] == (100, 50, 0)).all() and (filled[3] == (100, 50, 0)).all()


def test_self_setting_keypoints_match_the_warped_reference(held_out_folder):
    """Where the warp put a pixel of the ground truth, the reference shows that pixel's colour."""
    held_out = evaluate.load_held_out(held_out_folder, 48)
    settings = evaluate.build_settings(held_out, seed=1, keypoint_count=20, patch_size=1)
    self_setting = settings["self"]
    truth, reference = self_setting.ground_truths[0], self_setting.references[0]
    assert metrics.sc_psnr(truth, reference, self_setting.keypoints[0], patch_size=1) > 25
    cross = settings["cross"]
    assert cross.ground_truths is None and cross.keypoints is None
    assert all(r.shape == (48, 48, 3) for r in cross.references)
    assert not any(
        np.array_equal(a, b) for a, b in zip(held_out.images, cross.references, strict=True)
    )


def test_drawn_line_art_replaces_xdog_where_paired(held_out_folder, tmp_path):
    line_art = tmp_path / "line_art"
    line_art.mkdir()
    drawing = np.full((40, 40), 255, np.uint8)
    cv2.rectangle(drawing, (8, 8), (31, 31), 0, 2)
    drawing_rgba = np.dstack([drawing, drawing, drawing, np.full_like(drawing, 255)])
    Image.fromarray(drawing_rgba).save(line_art / "picture_1.png")
    held_out = evaluate.load_held_out(held_out_folder, SIZE, line_art_dir=line_art)
    assert [a is not None for a in held_out.line_art] == [False, True, False, False]
    sketches = evaluate.build_settings(held_out, seed=0, keypoint_count=4, patch_size=3)[
        "self"
    ].sketches
    expected = binarize_line_art(evaluate.square_resize(drawing, SIZE))
    np.testing.assert_array_equal(sketches[1], expected)
    assert (expected == 0).sum() > 40 and expected[SIZE // 2, SIZE // 2] == 255  # the outline
    np.testing.assert_array_equal(sketches[0], xdog(held_out.images[0]))


def test_load_held_out_rejects_a_folder_with_fewer_than_two_images(tmp_path):
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "only.png")
    with pytest.raises(ValueError, match="at least 2"):
        evaluate.load_held_out(tmp_path, SIZE)
    with pytest.raises(ValueError, match="multiple of 16"):
        evaluate.load_held_out(tmp_path, 30)


@pytest.fixture(scope="module")
def fid_features():
    return metrics.BackbonePooledFeatures(
        load_feature_backbone(kind="efficientnet_lite0"), input_size=64
    )


@pytest.mark.slow
def test_eval_writes_table_json_and_contact_sheet(
    tiny_checkpoint, held_out_folder, tmp_path, fid_features
):
    colorizer = evaluate.load_checkpoint_colorizer(tiny_checkpoint)
    options = evaluate.EvalOptions(
        images=held_out_folder, out=tmp_path / "eval", size=SIZE, keypoints=16, contact_rows=2
    )
    report = evaluate.evaluate(colorizer, options, load_features=lambda: fid_features)

    summary = json.loads(report.paths["json"].read_text())
    assert summary["examples"] == {"self": 4, "cross": 4}
    assert summary["skipped_files"] == ["broken.png"]
    assert summary["feature_backbone"] == "efficientnet_lite0"
    self_rows, cross_rows = summary["settings"]["self"], summary["settings"]["cross"]
    methods = ["model", "no_reference", "mean_color", "reference"]
    assert list(self_rows) == methods and list(cross_rows) == methods
    fid = "fid_proxy_efficientnet_lite0"
    pixels = {"sc_psnr_db", "psnr_db", "ssim_gt", "color_distance"}
    attention = {"attention_acc_16px", "attention_acc_32px"}  # the model's own; no drawn line art
    assert set(self_rows["model"]) == {fid, *pixels, *attention}
    assert set(self_rows["mean_color"]) == {fid, *pixels}
    assert set(cross_rows["model"]) == {fid, "color_distance"}  # no ground truth, no keypoints
    assert self_rows["model"][fid]["backbone"] == "efficientnet_lite0"
    # The reference is the ground truth warped: copying it beats a random network on PSNR, and
    # its own colours are exactly its own.
    assert self_rows["reference"]["psnr_db"]["value"] > self_rows["model"]["psnr_db"]["value"]
    assert self_rows["reference"]["color_distance"]["value"] == pytest.approx(0.0)
    assert cross_rows["reference"]["color_distance"]["value"] == pytest.approx(0.0)
    # An untrained model's output is far from the real pictures' features.
    assert self_rows["model"][fid]["value"] > 0
    assert 0 <= self_rows["model"]["ssim_gt"]["value"] <= 1

    table = report.paths["markdown"].read_text()
    assert table == report.markdown
    assert "## Self reference" in table and "## Cross reference" in table
    assert (
        f"| method | {fid} ↓ | sc_psnr_db ↑ | psnr_db ↑ | ssim_gt ↑ | color_distance ↓ |" in table
    )
    model_line = next(line for line in table.splitlines() if line.startswith("| model |"))
    assert evaluate.format_value(self_rows["model"]["psnr_db"]["value"]) in model_line

    sheet = np.asarray(Image.open(report.paths["contact_sheet"]).convert("RGB"))
    cell, label = 128, 14
    assert sheet.shape == (label + 4 * (label + cell), 6 * cell, 3)  # 2 rows per setting, 6 columns
    first = sheet[2 * label : 2 * label + cell]
    sketch, ground_truth = first[:, :cell], first[:, 5 * cell :]
    assert set(np.unique(sketch)) <= set(range(256)) and sketch.std() > 0  # drawn line art
    assert not np.all(ground_truth == 200)  # self rows have a ground truth ...
    last_truth = sheet[-cell:, 5 * cell :]
    assert np.all(last_truth == 200)  # ... cross rows leave it grey


def test_eval_command_runs_a_checkpoint(tiny_checkpoint, held_out_folder, tmp_path):
    out = tmp_path / "cli"
    result = CliRunner().invoke(
        main,
        [
            "eval",
            "--model", str(tiny_checkpoint),
            "--images", str(held_out_folder),
            "--out", str(out),
            "--size", str(SIZE),
            "--metrics", "psnr_db,ssim_gt,color_distance",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "psnr_db" in result.output and str(out / "eval.md") in result.output
    summary = json.loads((out / "eval.json").read_text())
    assert set(summary["settings"]["self"]["model"]) == {"psnr_db", "ssim_gt", "color_distance"}


def test_eval_command_names_an_unknown_metric(tiny_checkpoint, held_out_folder, tmp_path):
    result = CliRunner().invoke(
        main,
        ["eval", "--model", str(tiny_checkpoint), "--images", str(held_out_folder),
         "--out", str(tmp_path), "--metrics", "fid50k"],
    )  # fmt: skip
    assert result.exit_code != 0
    assert "unknown metric" in result.output and "fid50k" in result.output


def write_spair(root, rng: np.random.Generator, count: int = 3, shift: int = 8):
    """A small SPair-71k folder: each target is its source moved right by `shift` px (64 x 48
    images), with keypoints that say so."""
    images = root / "JPEGImages" / "cat"
    annotations = root / "PairAnnotation" / "test"
    images.mkdir(parents=True)
    annotations.mkdir(parents=True)
    for i in range(count):
        source = cv2.resize(draw_picture(rng), (64, 48), interpolation=cv2.INTER_NEAREST)
        target = np.roll(source, shift, axis=1)
        Image.fromarray(source).save(images / f"s{i}.png")
        Image.fromarray(target).save(images / f"t{i}.png")
        source_kps = [[x, y] for x in (20, 30, 40) for y in (14, 24, 34)]
        record = {
            "category": "cat",
            "src_imname": f"s{i}.png",
            "trg_imname": f"t{i}.png",
            "src_kps": source_kps,
            "trg_kps": [[x + shift, y] for x, y in source_kps],
        }
        (annotations / f"{i:04d}-s{i}-t{i}:cat.json").write_text(json.dumps(record))


class SourceOracle:
    """Returns, for each sketch, the picture it was drawn from: a perfect colourisation."""

    name = "oracle"

    def __init__(self, pictures):
        self.by_sketch = {xdog(p).tobytes(): p for p in pictures}

    def __call__(self, sketches, references):
        return [self.by_sketch[s.tobytes()] for s in sketches]


def test_spair_setting_scores_sc_psnr_on_the_annotated_keypoints(tmp_path):
    write_spair(tmp_path / "spair", np.random.default_rng(3))
    setting = evaluate.build_spair_setting(load_spair_split(tmp_path / "spair"), SIZE)
    oracle = SourceOracle(setting.real_images)  # the resized sources
    options = evaluate.EvalOptions(
        images=None, out=tmp_path / "out", size=SIZE, spair=tmp_path / "spair", patch_size=3,
        metrics=("sc_psnr_db", "color_distance"),
    )  # fmt: skip
    summary = evaluate.evaluate(oracle, options).summary
    assert summary["examples"] == {"spair": 3}
    rows = summary["settings"]["spair"]
    # Resized from 64 x 48 to 32 x 32, the 8 px shift becomes 4 px: only keypoints scaled the same
    # way land on the same content, and the oracle's output then matches the reference there.
    assert rows["model"]["sc_psnr_db"]["value"] > 30
    assert rows["model"]["sc_psnr_db"]["value"] > rows["mean_color"]["sc_psnr_db"]["value"] + 10
    assert "## SPair-71k" in (tmp_path / "out" / "eval.md").read_text()


def test_eval_asks_for_something_to_evaluate(tiny_checkpoint, tmp_path):
    result = CliRunner().invoke(main, ["eval", "--model", str(tiny_checkpoint)])
    assert result.exit_code != 0 and "--images DIR, --spair DIR" in result.output


@pytest.mark.slow
def test_eval_through_a_running_daemon_matches_the_checkpoint(
    tiny_checkpoint, held_out_folder, tmp_path
):
    connection = tmp_path / "daemon.json"
    serve = ["serve", "--model", str(tiny_checkpoint), "--bind", "tcp://127.0.0.1:*",
             "--connection-file", str(connection), "--device", "cpu"]  # fmt: skip
    daemon = subprocess.Popen(
        [sys.executable, "-c", "from colord.daemon.cli import main; main()", *serve],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not connection.exists():
            assert daemon.poll() is None, daemon.stderr.read().decode()
            assert time.monotonic() < deadline, "the daemon did not start"
            time.sleep(0.2)
        common = ["--images", str(held_out_folder), "--size", str(SIZE), "--metrics",
                  "psnr_db,ssim_gt,color_distance"]  # fmt: skip
        runner = CliRunner()
        via_daemon = runner.invoke(
            main, ["eval", "--daemon", "--connection-file", str(connection),
                   "--out", str(tmp_path / "daemon"), *common],
        )  # fmt: skip
        assert via_daemon.exit_code == 0, via_daemon.output
        direct = runner.invoke(
            main, ["eval", "--model", str(tiny_checkpoint), "--out", str(tmp_path / "direct"),
                   *common],
        )  # fmt: skip
        assert direct.exit_code == 0, direct.output
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
    served = json.loads((tmp_path / "daemon" / "eval.json").read_text())
    loaded = json.loads((tmp_path / "direct" / "eval.json").read_text())
    assert served["model"].startswith("daemon: ")
    for setting in ("self", "cross"):
        for name, result in loaded["settings"][setting]["model"].items():
            daemon_value = served["settings"][setting]["model"][name]["value"]
            assert daemon_value == pytest.approx(result["value"], rel=0.05, abs=0.02), name


def test_eval_reports_a_broken_checkpoint_and_a_missing_daemon_in_one_line(
    held_out_folder, tmp_path
):
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x00" * 64)
    runner = CliRunner()
    result = runner.invoke(main, ["eval", "--model", str(broken), "--images", str(held_out_folder)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "broken.safetensors" in result.output
    result = runner.invoke(
        main,
        ["eval", "--daemon", "--connection-file", str(tmp_path / "none.json"),
         "--images", str(held_out_folder)],
    )  # fmt: skip
    assert result.exit_code == 1 and "Error:" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_every_split_metric_adds_up_to_its_value_and_its_interval_holds_it(
    tiny_checkpoint, held_out_folder, tmp_path
):
    """per_image is what the bootstrap resamples: summed, it must give the reported value."""
    line_art = tmp_path / "line_art"
    line_art.mkdir()
    for i in range(4):
        drawing = np.full((40, 40), 255, np.uint8)
        cv2.rectangle(drawing, (4 + i, 4), (20 + i, 30), 0, 2)
        cv2.circle(drawing, (28, 28), 8, 0, 2)
        Image.fromarray(drawing).save(line_art / f"picture_{i}.png")
    options = evaluate.EvalOptions(
        images=held_out_folder, out=tmp_path / "out", size=SIZE, line_art=line_art,
        metrics=("psnr_db", "color_distance", "attention_acc_32px", "region_mean_de_area"),
        keypoints=8, patch_size=3,
    )  # fmt: skip
    colorizer = evaluate.load_checkpoint_colorizer(tiny_checkpoint)
    report = evaluate.evaluate(colorizer, options)
    results = report.results["self"]["model"]
    assert {r.metric for r in results} == set(options.metrics)
    for result in results:
        parts = np.asarray(result.per_image)
        assert len(parts) == 4, result.metric  # one part per held-out image
        assert parts[:, 0].sum() / parts[:, 1].sum() == pytest.approx(result.value), result.metric
    for name, row in report.summary["settings"]["self"]["model"].items():
        low, high = row["ci95"]
        assert low <= row["value"] <= high, name


def test_bootstrap_interval_narrows_with_more_images_and_pairs_draws_image_by_image():
    rng = np.random.default_rng(0)

    def result(values):
        parts = tuple((float(v), 1.0) for v in values)
        return metrics.MetricResult("psnr_db", "psnr_db", float(np.mean(values)), "pixels",
                                    True, len(values), None, parts)  # fmt: skip

    few, many = rng.normal(20, 3, 10), rng.normal(20, 3, 400)
    few_low, few_high = metrics.interval(metrics.bootstrap(result(few)))
    many_low, many_high = metrics.interval(metrics.bootstrap(result(many)))
    assert few_low < np.mean(few) < few_high and many_low < np.mean(many) < many_high
    assert many_high - many_low < (few_high - few_low) / 3
    # The same images 1 dB better each: alone the two intervals overlap, paired the gain is exact.
    base, better = metrics.bootstrap(result(few)), metrics.bootstrap(result(few + 1))
    assert metrics.interval(better)[0] < few_high
    assert metrics.interval(better - base) == pytest.approx((1.0, 1.0))
    assert metrics.bootstrap(result(few[:1])) is None  # one image: no interval


def test_eval_command_compares_several_checkpoints_named_by_their_files(
    tiny_checkpoint, held_out_folder, tmp_path
):
    same = tmp_path / "again" / tiny_checkpoint.name  # the same weights under another folder
    same.parent.mkdir()
    same.write_bytes(tiny_checkpoint.read_bytes())
    torch.manual_seed(1)
    other = save_checkpoint(tmp_path / "other.safetensors", Generator(get_preset("tiny")))
    out = tmp_path / "cli"
    result = CliRunner().invoke(
        main,
        ["eval", "--model", str(tiny_checkpoint), "--model", str(same), "--model", str(other),
         "--images", str(held_out_folder), "--out", str(out), "--size", str(SIZE),
         "--metrics", "psnr_db,color_distance"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "compare.json").read_text())
    first, again = f"{tiny_checkpoint.parent.name}/tiny.safetensors", "again/tiny.safetensors"
    assert list(summary["models"]) == [first, again, "other.safetensors"]
    assert summary["models"][again] == f"{again} (preset tiny)"
    for label in summary["models"]:  # each model's own report, as a single eval writes it
        own = json.loads((out / label.replace("/", "_") / "eval.json").read_text())
        assert own["model"] == summary["models"][label]
    psnr = summary["settings"]["self"]["psnr_db"]
    assert psnr["vs_first"][again] == {"difference": 0.0, "ci95": [0.0, 0.0]}
    low, high = psnr["models"]["other.safetensors"]["ci95"]
    assert low <= psnr["models"]["other.safetensors"]["value"] <= high
    difference = psnr["vs_first"]["other.safetensors"]
    assert difference["difference"] == pytest.approx(
        psnr["models"]["other.safetensors"]["value"] - psnr["models"][first]["value"]
    )
    assert difference["difference"] != 0 and difference["ci95"][0] <= difference["difference"]
    assert f"| {again} − {first} | 0 [0, 0]" in (out / "compare.md").read_text()
    assert "95% percentile-bootstrap" in result.output


def test_eval_command_refuses_the_same_checkpoint_twice(tiny_checkpoint, held_out_folder):
    result = CliRunner().invoke(
        main,
        ["eval", "--model", str(tiny_checkpoint), "--model", str(tiny_checkpoint),
         "--images", str(held_out_folder)],
    )  # fmt: skip
    assert result.exit_code == 1 and "the same checkpoint is given twice" in result.output


@pytest.fixture(scope="module")
def flats_folders(tmp_path_factory):
    """Flat-coloured pictures and their drawn line art (the pictures' outlines, black on white)."""
    pictures = tmp_path_factory.mktemp("flats_pictures")
    lines = tmp_path_factory.mktemp("flats_lines")
    rng = np.random.default_rng(1)
    for i in range(3):
        picture = draw_picture(rng, 64)
        Image.fromarray(picture).save(pictures / f"p{i}.png")
        outline = np.where((picture == 20).all(axis=2), 0, 255).astype(np.uint8)
        Image.fromarray(outline).save(lines / f"p{i}.png")
    return pictures, lines


def test_eval_flats_scores_the_same_flats_from_the_engine_and_the_daemon(
    tiny_checkpoint, flats_folders, tmp_path
):
    from daemon_helpers import start_daemon

    pictures, lines = flats_folders
    common = ["eval", "--flats", "--images", str(pictures), "--line-art", str(lines),
              "--size", "64", "--contact-rows", "2"]  # fmt: skip
    runner = CliRunner()
    with start_daemon(tiny_checkpoint) as daemon:
        both = runner.invoke(
            main, [*common, "--model", str(tiny_checkpoint), "--daemon",
                   "--connection-file", str(daemon.connection_file), "--out", str(tmp_path)],
        )  # fmt: skip
    assert both.exit_code == 0, both.output
    engine_run = json.loads((tmp_path / tiny_checkpoint.name / "flats.json").read_text())
    daemon_run = json.loads((tmp_path / "daemon" / "flats.json").read_text())
    assert engine_run["model"].startswith("engine: ") and daemon_run["model"].startswith("daemon: ")
    assert engine_run["scores"] == daemon_run["scores"]  # one engine, in process or served
    scores = {score["method"]: score for score in engine_run["scores"]}
    assert list(scores) == ["flats", "plain", "mean_color"] and engine_run["images"] == 3
    assert scores["flats"]["one_colour"] == 1.0  # every closed region one colour
    assert scores["flats"]["regions"] > 3
    assert (tmp_path / "daemon" / "flats_contact_sheet.png").exists()
    assert "| flats |" in both.output


def test_eval_flats_needs_drawn_line_art(tiny_checkpoint, flats_folders):
    pictures, _ = flats_folders
    result = CliRunner().invoke(
        main, ["eval", "--flats", "--model", str(tiny_checkpoint), "--images", str(pictures)]
    )
    assert result.exit_code == 2 and "--line-art" in result.output
