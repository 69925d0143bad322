"""The training dataset over folders of real image files, drawn here with OpenCV."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from colord.training.samples.dataset import (
    ColorizationDataset,
    ImageReadError,
    load_line_art,
    load_rgb,
)


def clip_art(seed: int, height: int = 96, width: int = 128) -> np.ndarray:
    """An RGB picture: coloured filled shapes with dark outlines on a tinted background."""
    rng = np.random.default_rng(seed)
    image = np.empty((height, width, 3), np.uint8)
    image[:] = rng.integers(180, 256, 3)
    for _ in range(4):
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        radius = int(rng.integers(10, 35))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.circle(image, centre, radius, colour, -1, cv2.LINE_AA)
        cv2.circle(image, centre, radius, (20, 20, 20), 2, cv2.LINE_AA)
    return image


def save(image: np.ndarray, path: Path, **options) -> Path:
    Image.fromarray(image).save(path, **options)
    return path


def write_folder(folder: Path, count: int = 4, **size) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [
        save(clip_art(i, **size), folder / (f"art{i}.png" if i % 2 else f"art{i}.jpg"))
        for i in range(count)
    ]


def assert_same_sample(first: dict, second: dict) -> None:
    assert first.keys() == second.keys()
    for key in ("sketch", "reference", "target", "correspondence", "has_reference"):
        torch.testing.assert_close(first[key], second[key], equal_nan=True, rtol=0, atol=0)
    assert first["index"] == second["index"]


# ---- reading files


def test_load_rgb_reads_every_common_kind_of_file(tmp_path: Path) -> None:
    picture = clip_art(0, 40, 48)
    for name, options in [("a.png", {}), ("a.webp", {"lossless": True}), ("a.bmp", {})]:
        np.testing.assert_array_equal(load_rgb(save(picture, tmp_path / name, **options)), picture)
    jpeg = load_rgb(save(picture, tmp_path / "a.jpg", quality=95, subsampling=0))
    assert jpeg.shape == picture.shape and np.abs(jpeg.astype(int) - picture).mean() < 4

    sixteen = picture.astype(np.uint16) * 257  # 16-bit PNG, as OpenCV writes it (BGR)
    cv2.imwrite(str(tmp_path / "deep.png"), sixteen[..., ::-1])
    np.testing.assert_array_equal(load_rgb(tmp_path / "deep.png"), picture)
    cv2.imwrite(str(tmp_path / "deep_grey.png"), sixteen[..., 0])
    np.testing.assert_array_equal(load_rgb(tmp_path / "deep_grey.png")[..., 1], picture[..., 0])

    palette = Image.fromarray(picture).quantize(16)
    palette.save(tmp_path / "palette.png")
    expected = np.asarray(palette.convert("RGB"))
    np.testing.assert_array_equal(load_rgb(tmp_path / "palette.png"), expected)


def test_load_rgb_composites_alpha_on_white(tmp_path: Path) -> None:
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)  # opaque red
    rgba[0, 1] = (0, 0, 0, 0)  # transparent
    rgba[0, 2] = (0, 0, 0, 128)  # half-transparent black
    loaded = load_rgb(save(rgba, tmp_path / "layer.png"))
    assert loaded[0, 0].tolist() == [255, 0, 0]
    assert loaded[0, 1].tolist() == [255, 255, 255]
    assert loaded[0, 2].tolist() == [127, 127, 127]

    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([0, 0, 255, 255, 0, 0] + [0] * 762)
    palette.putpixel((1, 1), 1)
    palette.info["transparency"] = 0
    palette.save(tmp_path / "palette_alpha.png", transparency=0)
    loaded = load_rgb(tmp_path / "palette_alpha.png")
    assert loaded[0, 0].tolist() == [255, 255, 255] and loaded[1, 1].tolist() == [255, 0, 0]

    strokes = np.zeros((4, 4, 4), np.uint8)
    strokes[2, :] = (0, 0, 0, 255)  # black strokes on a transparent layer
    line_art = load_line_art(save(strokes, tmp_path / "strokes.png"))
    assert line_art.shape == (4, 4)
    assert (line_art[2] == 0).all() and (line_art[[0, 1, 3]] == 255).all()


def test_load_rgb_names_an_unreadable_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 certainly not a JPEG")
    with pytest.raises(ImageReadError, match=r"broken\.jpg"):
        load_rgb(broken)


# ---- the dataset


def test_sample_has_the_agreed_form(tmp_path: Path) -> None:
    write_folder(tmp_path / "images")
    dataset = ColorizationDataset(tmp_path / "images", size=64, zero_reference_probability=0.0)
    assert len(dataset) == 4
    sample = dataset[1]
    assert sample["sketch"].shape == (1, 64, 64) and sample["sketch"].dtype == torch.float32
    assert set(sample["sketch"].unique().tolist()) == {-1.0, 1.0}
    assert (sample["sketch"] == 1).float().mean() > 0.5  # white background, black lines
    for key in ("reference", "target"):
        assert sample[key].shape == (3, 64, 64) and sample[key].dtype == torch.float32
        assert sample[key].min() >= -1 and sample[key].max() <= 1
    assert sample["correspondence"].shape == (64, 64, 2)
    assert sample["correspondence"].dtype == torch.float32
    assert sample["has_reference"].dtype == torch.bool and sample["has_reference"].ndim == 0
    assert sample["has_reference"].item() is True
    assert sample["index"] == 1

    batch = next(iter(DataLoader(dataset, batch_size=3)))
    assert batch["sketch"].shape == (3, 1, 64, 64)
    assert batch["correspondence"].shape == (3, 64, 64, 2)
    assert batch["has_reference"].shape == (3,)
    assert batch["index"].tolist() == [0, 1, 2]


def test_reference_is_the_warped_target(tmp_path: Path) -> None:
    write_folder(tmp_path / "images", count=1)
    sample = ColorizationDataset(tmp_path / "images", size=64, zero_reference_probability=0)[0]
    target = sample["target"].permute(1, 2, 0).numpy()
    reference = sample["reference"].permute(1, 2, 0).numpy()
    correspondence = sample["correspondence"].numpy()
    defined = ~np.isnan(correspondence).any(axis=-1)
    assert defined.mean() > 0.7
    read_back = cv2.remap(
        reference, *np.nan_to_num(correspondence, nan=-1).transpose(2, 0, 1), cv2.INTER_LINEAR
    )
    # the target's colour shows in the reference where the correspondence says; edges blur a bit
    error = np.abs(read_back - target).max(axis=-1)[defined]
    assert np.median(error) < 0.02
    assert not np.allclose(reference, target, atol=0.05)


def test_every_skipped_file_is_named_with_its_reason(tmp_path, caplog, monkeypatch) -> None:
    folder = tmp_path / "images"
    write_folder(folder)
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image, not counted")
    (folder / ".thumbnails").mkdir()
    save(clip_art(8), folder / ".thumbnails" / "art0.png")  # hidden: not counted either
    save(clip_art(9, 20, 30), folder / "tiny.png")
    save(clip_art(10, 160, 200), folder / "huge.png")
    # Pillow refuses images over twice MAX_IMAGE_PIXELS: lowered so that 200×160 is too large
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 15000)
    with caplog.at_level(logging.WARNING, logger="colord.training.samples.dataset"):
        dataset = ColorizationDataset(folder, size=64)
    assert len(dataset) == 4
    assert dataset.skipped == {"unreadable": 3, "smaller than 64 px": 1}
    reasons = {path.name: reason for path, reason in dataset.skipped_files}
    assert reasons["corrupt.png"].startswith("unreadable (")
    assert reasons["empty.png"] == "empty file"
    assert reasons["tiny.png"] == "smaller than 64 px (30×20)"
    assert reasons["huge.png"].startswith("refused by Pillow's size limit")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for name in reasons:
        assert any(f"skipped {folder / name}: " in message for message in warnings)
    assert "skipped 1 smaller than 64 px, 3 unreadable in" in warnings[-1]
    for index in range(len(dataset)):
        assert dataset[index]["index"] == index


def test_a_file_that_fails_to_decode_later_is_replaced_not_fatal(tmp_path, caplog) -> None:
    folder = tmp_path / "images"
    paths = write_folder(folder, count=3)
    full = paths[2].read_bytes()  # a JPEG: a valid header, truncated pixels
    paths[2].write_bytes(full[: len(full) // 2])
    dataset = ColorizationDataset(folder, size=64)
    assert len(dataset) == 3  # the header check cannot see it
    with caplog.at_level(logging.WARNING, logger="colord.training.samples.dataset"):
        for _ in range(2):
            sample = dataset[2]
    assert sample["index"] == 2 and sample["sketch"].shape == (1, 64, 64)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and paths[2].name in warnings[0]


def test_paired_line_art_is_used_instead_of_xdog(tmp_path: Path) -> None:
    images, lines = tmp_path / "images", tmp_path / "lines"
    write_folder(images, count=2)
    lines.mkdir()
    # line art for art0 only: a cross that the colour picture does not contain
    cross = np.full((96, 128), 255, np.uint8)
    cv2.line(cross, (0, 48), (127, 48), 0, 3)
    cv2.line(cross, (64, 0), (64, 95), 0, 3)
    save(cross, lines / "art0.png")
    dataset = ColorizationDataset(images, size=(48, 64), line_art_dir=lines, min_crop_fraction=1.0)
    assert [entry.line_art is not None for entry in dataset.entries] == [True, False]
    sketch = dataset[0]["sketch"][0].numpy()
    expected = cv2.resize(cross, (64, 48), interpolation=cv2.INTER_AREA) < 200
    np.testing.assert_array_equal(sketch == -1, expected)
    # the other picture, without line art, gets XDoG of its own edges
    xdog_sketch = dataset[1]["sketch"][0].numpy()
    assert (xdog_sketch == -1).any() and not np.array_equal(xdog_sketch == -1, expected)


def test_line_art_gets_the_same_random_crop(tmp_path: Path) -> None:
    """Line art at twice the picture's resolution still lines up with the cropped picture."""
    images, lines = tmp_path / "images", tmp_path / "lines"
    images.mkdir()
    lines.mkdir()
    for i in range(3):
        flat = np.full((128, 160, 3), 230, np.uint8)
        outline = np.full((256, 320), 255, np.uint8)
        rng = np.random.default_rng(i)
        for _ in range(3):
            x, y = int(rng.integers(30, 130)), int(rng.integers(30, 100))
            r = int(rng.integers(10, 30))
            colour = tuple(int(c) for c in rng.integers(0, 200, 3))
            cv2.circle(flat, (x, y), r, colour, -1)
            cv2.circle(outline, (2 * x, 2 * y), 2 * r, 0, 3)
        save(flat, images / f"p{i}.png")
        save(outline, lines / f"p{i}.png")
    dataset = ColorizationDataset(images, size=64, line_art_dir=lines, min_crop_fraction=0.5)
    for index in range(3):
        sample = dataset[index]
        target = ((sample["target"].permute(1, 2, 0).numpy() + 1) * 127.5).astype(np.uint8)
        edges = cv2.Canny(cv2.cvtColor(target, cv2.COLOR_RGB2GRAY), 20, 60) > 0
        lines_mask = sample["sketch"][0].numpy() == -1
        assert lines_mask.any() and edges.any()
        near_edge = cv2.distanceTransform((~edges).astype(np.uint8), cv2.DIST_L2, 5)
        assert np.median(near_edge[lines_mask]) <= 1.5


def test_line_art_pairs_with_suffixes_and_any_case(tmp_path: Path) -> None:
    images, lines = tmp_path / "images", tmp_path / "lines"
    write_folder(images, count=4)  # art0.jpg, art1.png, art2.jpg, art3.png
    lines.mkdir()
    line_art = np.full((96, 128), 255, np.uint8)
    for name in ("art0_lines.png", "ART1.PNG", "Art2-line.png", "art3_LineArt.jpg", "cat.png"):
        save(line_art, lines / name)
    dataset = ColorizationDataset(images, size=64, line_art_dir=lines)
    pairs = {entry.image.name: entry.line_art.name for entry in dataset.entries}
    assert pairs == {
        "art0.jpg": "art0_lines.png",
        "art1.png": "ART1.PNG",
        "art2.jpg": "Art2-line.png",
        "art3.png": "art3_LineArt.jpg",
    }
    assert dataset.pairing_notes == [
        (lines / "cat.png", "line art with no colour image of the same name")
    ]


def test_line_art_beside_its_image_pairs_and_is_not_a_colour_image(tmp_path: Path) -> None:
    folder = tmp_path / "images"
    write_folder(folder, count=2)
    save(np.full((96, 128), 255, np.uint8), folder / "art0_lines.png")
    save(clip_art(5), folder / "pen-line.png")  # no `pen` image: a colour picture of its own
    dataset = ColorizationDataset(folder, size=64)
    pairs = {entry.image.name: entry.line_art for entry in dataset.entries}
    assert pairs == {"art0.jpg": folder / "art0_lines.png", "art1.png": None, "pen-line.png": None}


def test_line_art_of_another_aspect_ratio_is_refused_not_stretched(tmp_path: Path) -> None:
    images, lines = tmp_path / "images", tmp_path / "lines"
    write_folder(images, count=3)  # 128×96 each
    lines.mkdir()
    save(np.full((96, 64), 255, np.uint8), lines / "art0.png")  # half the width
    save(np.full((192, 256), 255, np.uint8), lines / "art1.png")  # twice the size: the same shape
    dataset = ColorizationDataset(images, size=64, line_art_dir=lines)
    assert [entry.image.name for entry in dataset.entries] == ["art1.png", "art2.jpg"]
    assert dataset.skipped == {"line art of another aspect ratio": 1}
    [(path, reason)] = dataset.skipped_files
    assert path == images / "art0.jpg"
    assert "is 64×96, the image 128×96" in reason and "refused rather than stretched" in reason


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_manifest_lists_images_and_line_art(tmp_path: Path, kind: str) -> None:
    root = tmp_path / "set"
    write_folder(root / "colour", count=2)
    (root / "ink").mkdir()
    blank = np.full((96, 128), 255, np.uint8)
    cv2.rectangle(blank, (20, 20), (100, 70), 0, 2)
    save(blank, root / "ink" / "box.png")
    rows = [
        {"image": "colour/art0.jpg", "lineart": "ink/box.png"},
        {"image": "colour/art1.png", "lineart": ""},
    ]
    if kind == "csv":
        lines = ["image,lineart"] + [f"{row['image']},{row['lineart']}" for row in rows]
    else:
        lines = [json.dumps(row) for row in rows]
    manifest = root / f"manifest.{kind}"
    manifest.write_text("\n".join(lines) + "\n")
    dataset = ColorizationDataset(manifest, size=64, min_crop_fraction=1.0)
    assert [entry.image.name for entry in dataset.entries] == ["art0.jpg", "art1.png"]
    assert dataset.entries[0].line_art == root / "ink" / "box.png"
    assert dataset.entries[1].line_art is None
    sketch = dataset[0]["sketch"][0].numpy() == -1
    # the 4:3 picture is cropped to a square of its full height, so the drawn box's top edge
    # (row 20 of 96) runs along row 13 of 64, and nothing else is drawn above it
    assert sketch[13:15, 20:40].any(axis=0).all()
    assert not sketch[:12].any()


def test_bad_manifest_and_bad_settings_are_clear_errors(tmp_path: Path) -> None:
    manifest = tmp_path / "bad.jsonl"
    manifest.write_text('{"image": "a.png"}\nnot json\n')
    with pytest.raises(ValueError, match="line 2"):
        ColorizationDataset(manifest)
    write_folder(tmp_path / "images", count=1)
    with pytest.raises(ValueError, match="multiples of 16"):
        ColorizationDataset(tmp_path / "images", size=100)
    with pytest.raises(ValueError, match="max_displacement"):
        ColorizationDataset(tmp_path / "images", warp_max_displacement=0.5)
    with pytest.raises(FileNotFoundError, match="missing"):
        ColorizationDataset(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no usable training images"):
        ColorizationDataset(tmp_path / "empty")


def test_samples_depend_on_seed_epoch_and_index_only(tmp_path: Path) -> None:
    write_folder(tmp_path / "images", count=3)
    first = ColorizationDataset(tmp_path / "images", size=48, seed=5)
    second = ColorizationDataset(tmp_path / "images", size=48, seed=5)
    second[2], second[0]
    assert_same_sample(first[1], second[1])

    first.set_epoch(3)
    second.set_epoch(3)
    assert_same_sample(first[1], second[1])
    first_epoch_3 = first[1]
    first.set_epoch(4)
    assert not torch.equal(first[1]["target"], first_epoch_3["target"])
    other_seed = ColorizationDataset(tmp_path / "images", size=48, seed=6)
    other_seed.set_epoch(3)
    assert not torch.equal(other_seed[1]["target"], first_epoch_3["target"])


def test_about_one_reference_in_ten_is_dropped(tmp_path: Path) -> None:
    write_folder(tmp_path / "images", count=2, height=64, width=64)
    dataset = ColorizationDataset(tmp_path / "images", size=16, min_side=16)
    dropped = []
    for epoch in range(300):
        dataset.set_epoch(epoch)
        for index in range(2):
            sample = dataset[index]
            dropped.append(not sample["has_reference"].item())
            if dropped[-1]:
                assert (sample["reference"] == 0).all()
                assert torch.isnan(sample["correspondence"]).all()
            else:
                assert not torch.isnan(sample["correspondence"]).all()
    # 600 draws at p = 0.1: the standard deviation of the rate is 0.012
    assert 0.064 < np.mean(dropped) < 0.136

    for probability, has_reference in [(0.0, True), (1.0, False)]:
        dataset = ColorizationDataset(
            tmp_path / "images", size=16, min_side=16, zero_reference_probability=probability
        )
        assert all(dataset[i]["has_reference"].item() is has_reference for i in range(2))


def test_line_art_folder_inside_the_image_folder_is_not_read_as_pictures(tmp_path: Path) -> None:
    images = tmp_path / "images"
    write_folder(images, count=2)
    (images / "lines").mkdir()
    save(np.full((96, 128), 255, np.uint8), images / "lines" / "art1.png")
    dataset = ColorizationDataset(images, size=64, line_art_dir=images / "lines")
    assert [entry.image.name for entry in dataset.entries] == ["art0.jpg", "art1.png"]
    assert [entry.line_art for entry in dataset.entries] == [None, images / "lines" / "art1.png"]
