"""Flats: one exact colour per closed region, gaps closed, thin regions kept, lines filled under."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from colord.daemon import flats as flats_module
from colord.daemon import imaging
from colord.daemon.flats import (
    DEFAULT_GAP,
    FlatsOptions,
    flat_regions,
    flats,
    flats_layer,
    reference_palette,
    snap_to_palette,
)
from colord.daemon.imaging import InputError

RED, BLUE, GREEN, GREY = (230, 20, 30), (20, 40, 220), (30, 200, 60), (200, 200, 200)


def page(size: int = 2048) -> np.ndarray:
    return np.full((size, size), 255, np.uint8)


def lines_of(drawing: np.ndarray) -> np.ndarray:
    return drawing < 128


def wall_with_gap(size: int, gap: int) -> np.ndarray:
    """A closed frame cut in two by a vertical wall that has a `gap` px opening."""
    drawing = page(size)
    cv2.rectangle(drawing, (100, 100), (size - 100, size - 100), 0, 6)
    middle = size // 2
    drawing[100 : size - 100, middle - 3 : middle + 3] = 0
    drawing[middle : middle + gap, middle - 3 : middle + 3] = 255
    return drawing


def halves(size: int, left: tuple, right: tuple, ground: tuple = GREY) -> np.ndarray:
    """Model colours: the left half one colour, the right half another, a ground outside."""
    colours = np.empty((size, size, 3), np.uint8)
    colours[:] = ground
    colours[100 : size - 100, 100 : size // 2] = left
    colours[100 : size - 100, size // 2 : size - 100] = right
    return colours


def close(rgba: np.ndarray, rgb: tuple, tolerance: int = 3) -> bool:
    return rgba[3] == 255 and bool(np.all(np.abs(rgba[:3].astype(int) - rgb) <= tolerance))


def test_a_3px_gap_at_a_2048px_page_does_not_leak() -> None:
    size = 2048
    drawing = wall_with_gap(size, gap=3)
    out = flats(halves(size, RED, BLUE), lines_of(drawing))
    assert close(out[size // 2, size // 4], RED)
    assert close(out[size // 2, 3 * size // 4], BLUE)
    # the two halves stay two regions right at the gap, on either side of the wall
    assert close(out[size // 2 + 1, size // 2 - 8], RED)
    assert close(out[size // 2 + 1, size // 2 + 8], BLUE)


def test_a_gap_wider_than_the_setting_joins_the_regions() -> None:
    size = 512
    drawing = wall_with_gap(size, gap=60)
    regions = flat_regions(lines_of(drawing), gap=DEFAULT_GAP)
    assert regions.labels[size // 2, size // 4] == regions.labels[size // 2, 3 * size // 4]


def test_a_2px_region_between_two_lines_keeps_its_own_colour() -> None:
    drawing = page(512)
    drawing[200:203, 50:450] = 0
    drawing[205:208, 50:450] = 0  # rows 203 and 204: a strip 2 px wide
    drawing[200:208, 50:53] = 0
    drawing[200:208, 447:450] = 0
    colours = np.full((512, 512, 3), GREY, np.uint8)
    colours[203:205, 53:447] = GREEN
    out = flats(colours, lines_of(drawing), options=FlatsOptions(transparent_ground=False))
    assert close(out[203, 250], GREEN) and close(out[204, 250], GREEN)
    assert close(out[100, 250], GREY)


def test_no_colour_crosses_a_closed_line_and_lines_take_a_neighbours_colour() -> None:
    drawing = page(512)
    cv2.circle(drawing, (256, 256), 150, 0, 5)
    colours = np.full((512, 512, 3), GREY, np.uint8)
    yy, xx = np.mgrid[0:512, 0:512]
    inside = np.hypot(yy - 256, xx - 256) < 150
    colours[inside] = RED
    colours[~inside & (xx > 256)] = BLUE  # a model that smeared a second colour outside
    out = flats(colours, lines_of(drawing), options=FlatsOptions(transparent_ground=False))
    regions = flat_regions(lines_of(drawing))
    assert regions.count == 2
    inner = regions.labels == regions.labels[256, 256]
    assert len(np.unique(out[inner].reshape(-1, 4), axis=0)) == 1
    assert close(out[256, 256], RED)
    line_pixels = lines_of(drawing)
    assert np.all(out[line_pixels][:, 3] == 255)  # filled under the lines
    region_colours = {tuple(c) for c in np.unique(out.reshape(-1, 4), axis=0)}
    assert {tuple(c) for c in out[line_pixels]} <= region_colours


def test_every_pixel_is_exactly_one_region_colour() -> None:
    rng = np.random.default_rng(0)
    drawing = page(256)
    for _ in range(12):
        centre = tuple(int(v) for v in rng.integers(20, 236, 2))
        cv2.circle(drawing, centre, int(rng.integers(8, 60)), 0, int(rng.integers(1, 4)))
    colours = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)  # noisy, anti-aliased output
    regions = flat_regions(lines_of(drawing))
    out = flats(colours, lines_of(drawing), options=FlatsOptions(transparent_ground=False))
    for label in range(1, regions.count + 1):
        assert len(np.unique(out[regions.labels == label], axis=0)) == 1
    assert len(np.unique(out.reshape(-1, 4), axis=0)) <= regions.count


def test_the_ground_is_transparent_by_default_and_opaque_when_asked() -> None:
    drawing = page(256)
    cv2.rectangle(drawing, (64, 64), (192, 192), 0, 3)
    colours = np.full((256, 256, 3), GREY, np.uint8)
    colours[64:192, 64:192] = RED
    out = flats(colours, lines_of(drawing))
    assert out[10, 10, 3] == 0 and out[250, 128, 3] == 0
    assert close(out[128, 128], RED)
    opaque = flats(colours, lines_of(drawing), options=FlatsOptions(transparent_ground=False))
    assert close(opaque[10, 10], GREY)


def test_specks_join_a_neighbour() -> None:
    drawing = page(256)
    cv2.rectangle(drawing, (40, 40), (216, 216), 0, 3)
    cv2.rectangle(drawing, (120, 120), (123, 123), 0, 1)  # a 2x2 speck enclosed by ink
    regions = flat_regions(lines_of(drawing), min_area=64)
    assert regions.count == 2
    assert regions.labels[121, 121] == regions.labels[100, 100]


def test_palette_snapping_returns_only_reference_colours() -> None:
    reference = np.zeros((64, 64, 3), np.uint8)
    reference[:, :32] = RED
    reference[:, 32:] = BLUE
    palette = reference_palette(reference)
    assert {tuple(c) for c in palette} <= {tuple(np.array(c, np.uint8)) for c in (RED, BLUE)}
    drawing = page(256)
    cv2.line(drawing, (128, 0), (128, 255), 0, 3)
    colours = halves(256, (200, 60, 60), (60, 60, 190))  # near red and near blue
    out = flats(colours, lines_of(drawing), reference, FlatsOptions(snap_to_palette=True))
    visible = out[out[..., 3] == 255][:, :3]
    assert {tuple(c) for c in visible} <= {tuple(c) for c in palette}
    snapped = snap_to_palette(np.array([[190, 50, 60]], np.uint8), palette)
    assert tuple(snapped[0]) == RED


def test_snapping_without_a_reference_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="reference"):
        flats(np.zeros((32, 32, 3), np.uint8), np.zeros((32, 32), bool), None,
              FlatsOptions(snap_to_palette=True))  # fmt: skip


@pytest.mark.parametrize(
    "lines",
    [
        np.zeros((1, 1), bool),
        np.ones((1, 1), bool),
        np.ones((16, 16), bool),
        np.zeros((4, 1), bool),
        np.eye(5, 7, dtype=bool),
    ],
)
def test_degenerate_canvases_give_one_colour_per_region(lines: np.ndarray) -> None:
    colours = np.full((*lines.shape, 3), 90, np.uint8)
    out = flats(colours, lines, options=FlatsOptions(transparent_ground=False))
    assert out.shape == (*lines.shape, 4)
    assert np.all(out[..., 3] == 255)
    assert np.all(np.abs(out[..., :3].astype(int) - 90) <= 2)


def test_a_narrow_inlet_keeps_its_own_closed_areas_region() -> None:
    """A 4 px channel of the left area reaching 50 px into the right one, behind 1 px lines:
    its far end lies nearer the right area's paper than its own, yet never takes that region."""
    drawing = page(256)
    cv2.rectangle(drawing, (20, 20), (235, 235), 0, 1)
    drawing[20:236, 128] = 0  # the wall between the left and right areas
    drawing[100, 128:181] = 0
    drawing[105, 128:181] = 0
    drawing[100:106, 180] = 0
    drawing[101:105, 128] = 255  # the channel opens into the left area
    regions = flat_regions(lines_of(drawing))
    left, right = regions.labels[60, 60], regions.labels[60, 200]
    assert left != right
    assert np.all(regions.labels[101:105, 129:180] == left)
    assert np.all(regions.labels[106:110, 140:180] == right)


def test_the_flats_layer_takes_the_engines_line_mask_and_the_requests_reference() -> None:
    """Line art on transparent paper read as the engine reads it, and an RGBA reference, as a
    plug-in sends them."""
    line_art = np.zeros((256, 256, 4), np.uint8)  # transparent paper
    cv2.circle(line_art, (128, 128), 80, (0, 0, 0, 255), 3)
    plain = np.full((256, 256, 4), 255, np.uint8)
    plain[..., :3] = GREY
    cv2.circle(plain, (128, 128), 80, (200, 50, 60, 255), -1)  # near red, inside the ring
    reference = np.full((64, 64, 4), 255, np.uint8)
    reference[:, :32, :3] = RED
    reference[:, 32:, :3] = GREY
    lines = imaging.read_line_art(line_art)[2]
    out = flats_layer(lines, plain, reference, FlatsOptions(snap_to_palette=True))
    assert out.shape == (256, 256, 4)
    assert tuple(out[128, 128]) == (*RED, 255)
    assert out[5, 5, 3] == 0  # the ground, transparent by default
    visible = {tuple(c) for c in out[out[..., 3] == 255][:, :3]}
    assert visible == {RED}
    with pytest.raises(InputError):
        flats_layer(lines, plain[:100], reference)


def test_bands_label_as_the_whole_canvas_does_and_wide_ink_takes_a_side(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Regions grown in bands of rows (here 128 rows, seeing 32 beyond) match one band's paper
    labels; ink wider than a band's reach still takes a region beside it."""
    rng = np.random.default_rng(1)
    drawing = np.full((512, 256), 255, np.uint8)
    for _ in range(10):
        centre = (int(rng.integers(20, 236)), int(rng.integers(20, 130)))
        cv2.circle(drawing, centre, int(rng.integers(8, 50)), 0, int(rng.integers(1, 4)))
    drawing[150:460] = 0  # more ink across the canvas than a band and its margins
    lines = lines_of(drawing)
    whole = flat_regions(lines)
    monkeypatch.setattr(flats_module, "_GROW_MARGIN", 32)
    monkeypatch.setattr(imaging, "BAND_PIXELS", 128 * 256)
    banded = flat_regions(lines)
    assert banded.count == whole.count
    assert np.array_equal(banded.labels[~lines], whole.labels[~lines])
    assert banded.labels.min() >= 1
    beside = set(np.unique(whole.labels[150:460]))  # the regions that touch the ink
    assert set(np.unique(banded.labels[150:460])) <= beside


def test_options_for_a_canvas_scale_the_page_defaults() -> None:
    assert FlatsOptions.for_canvas(2048) == FlatsOptions()
    small = FlatsOptions.for_canvas(256, transparent_ground=False)
    assert (small.gap, small.min_area, small.transparent_ground) == (1, 1, False)
    assert FlatsOptions.for_canvas(4096).gap == 2 * DEFAULT_GAP
