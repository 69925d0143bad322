"""colord.model.line_scale: stroke widths and the automatic working size."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from colord.model.line_scale import (
    LINE_WIDTH_KEY,
    MEASURE_SIDE,
    MIN_WORKING_STROKE,
    automatic_working_size,
    stroke_width,
    thickened,
)


def drawing(side: int, width: float) -> np.ndarray:
    """A ring, a slanted stroke and a straight bar, `width` pixels thick, on a side x side mask,
    the layout scaled with the side (a 256 px drawing enlarged)."""
    y, x = np.mgrid[:side, :side] + 0.5
    unit = side / 256
    ring = np.abs(np.hypot(x - 128 * unit, y - 128 * unit) - 90 * unit) < width / 2
    slant = np.abs((x - 30 * unit) * np.sin(0.6) - (y - 200 * unit) * np.cos(0.6)) < width / 2
    slant &= (x > 30 * unit) & (x < 220 * unit)
    bar = np.zeros_like(ring)
    top = int(40 * unit)
    bar[top : top + round(width), int(60 * unit) : int(200 * unit)] = True
    return ring | slant | bar


def enlarge(mask: np.ndarray, factor: int) -> np.ndarray:
    return cv2.resize(
        mask.view(np.uint8), None, fx=factor, fy=factor, interpolation=cv2.INTER_NEAREST
    ).astype(bool)


def shrink_by_area(mask: np.ndarray, factor: int) -> np.ndarray:
    coverage = cv2.resize(
        mask.view(np.uint8) * np.uint8(255),
        None,
        fx=1 / factor,
        fy=1 / factor,
        interpolation=cv2.INTER_AREA,
    )
    return coverage >= 128


@pytest.mark.parametrize("width", [1, 2, 3, 5, 8])
def test_stroke_width_reads_the_drawn_width(width: int) -> None:
    assert stroke_width(drawing(256, width)) == pytest.approx(width, rel=0.1)


@pytest.mark.parametrize("width", [1, 2, 3, 5])
def test_stroke_width_follows_the_scale(width: int) -> None:
    base = stroke_width(drawing(256, width))
    assert stroke_width(enlarge(drawing(256, width), 2)) == pytest.approx(2 * base, rel=0.1)
    assert stroke_width(enlarge(drawing(256, width), 4)) == pytest.approx(4 * base, rel=0.1)
    assert stroke_width(shrink_by_area(drawing(256, 4 * width), 2)) == pytest.approx(
        2 * width, rel=0.15
    )


def test_stroke_width_takes_uint8_masks_and_lines_along_the_border() -> None:
    mask = np.zeros((64, 64), np.uint8)
    mask[:3, :] = 1  # a 3 px stroke along the top edge
    mask[:, 61:] = 1
    assert stroke_width(mask) == pytest.approx(3, rel=0.1)


def test_stroke_width_ignores_specks_and_a_filled_area() -> None:
    lines = drawing(512, 4)
    lines[300:360, 300:380] = True  # a solid black patch
    rng = np.random.default_rng(0)
    specks = rng.integers(0, 512, size=(200, 2))
    lines[specks[:, 0], specks[:, 1]] = True
    assert stroke_width(lines) == pytest.approx(4, rel=0.1)


def test_stroke_width_is_none_without_enough_line() -> None:
    assert stroke_width(np.zeros((64, 64), bool)) is None
    few = np.zeros((64, 64), bool)
    few[10, 10:14] = True
    assert stroke_width(few) is None
    with pytest.raises(ValueError, match="mask"):
        stroke_width(np.zeros((4, 4, 3), bool))


def test_automatic_size_matches_the_training_width() -> None:
    # strokes already as thick as training's: the canvas's own size, never enlarged
    assert automatic_working_size(drawing(256, 5), 5.0, maximum=1024) == 256
    assert automatic_working_size(drawing(256, 3), 5.0, maximum=1024) == 256
    # shrinking by s turns w canvas pixels into about 1 + (w - 1) / s: 9 px -> 5 px at s = 2
    assert automatic_working_size(drawing(512, 9), 5.0, maximum=1024) == 256
    assert automatic_working_size(drawing(512, 9), 3.0, maximum=1024) == 128


@pytest.mark.parametrize("factor", [4, 8, 16])
def test_automatic_size_is_the_same_for_the_drawing_at_any_size(factor: int) -> None:
    base = automatic_working_size(drawing(256, 8), 5.0, maximum=4096)
    enlarged = enlarge(drawing(256, 8), factor)
    assert max(enlarged.shape) > MEASURE_SIDE or factor == 4  # the shrunk, bounded path too
    size = automatic_working_size(enlarged, 5.0, maximum=4096)
    assert abs(size - base) <= 0.12 * base
    assert size % 16 == 0


def test_automatic_size_when_strokes_vanish_from_the_measured_copy() -> None:
    # measured shrunk 16 times, 6 px and 1 px strokes fall under half a pixel: thin, not absent
    canvas = np.zeros((40, 16384), bool)
    canvas[10:16, :] = True
    canvas[:, ::512] = True
    assert automatic_working_size(canvas, 5.0, maximum=16384) >= 8192
    assert automatic_working_size(canvas, 5.0, maximum=1024) == 1024


def test_automatic_size_clamps_rounds_and_falls_back() -> None:
    lines = drawing(2048, 2)
    assert automatic_working_size(lines, 5.0, maximum=1024) == 1024
    assert automatic_working_size(drawing(256, 40), 5.0, minimum=96, maximum=1024) == 96
    assert automatic_working_size(drawing(256, 9), 5.0, multiple=64, maximum=1024) % 64 == 0
    blank = np.zeros((3000, 4000), bool)
    assert automatic_working_size(blank, 5.0, minimum=128, maximum=1024) == 128
    with pytest.raises(ValueError, match="one pixel"):
        automatic_working_size(lines, 1.0, maximum=1024)
    with pytest.raises(ValueError, match="minimum"):
        automatic_working_size(lines, 5.0, minimum=512, maximum=256)


def test_line_width_key_is_the_checkpoint_metadata_name() -> None:
    assert LINE_WIDTH_KEY == "training_line_width"


def test_strokes_thinner_than_the_models_are_thickened_to_it() -> None:
    thin = np.zeros((200, 200), np.uint8)
    thin[50, 10:190] = 1
    thin[10:190, 120] = 1
    strokes, widened = thickened(thin)
    assert widened == round(MIN_WORKING_STROKE) - 1
    assert stroke_width(strokes) == pytest.approx(MIN_WORKING_STROKE, abs=0.5)
    assert strokes[thin > 0].all()  # every original line pixel stays a line
    thick = cv2.dilate(thin, np.ones((5, 5), np.uint8))
    unchanged, widened = thickened(thick)
    assert widened == 0 and unchanged is thick
