"""The engine's pure pixel work: checks, flattening, line finding, geometry, upsampling, lines."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from colord.daemon import imaging
from colord.daemon.imaging import InputError
from colord.model.line_scale import MIN_WORKING_STROKE

# -- checking ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((8, 8, 3), np.float32), "uint8 or uint16"),
        (np.zeros((8, 8), np.int16), "uint8 or uint16"),
        (np.zeros((8, 8, 5), np.uint8), "5 channels"),
        (np.zeros((0, 8, 4), np.uint8), "empty"),
        (np.zeros((8, 0), np.uint8), "empty"),
        (np.zeros((2, 8, 8, 3), np.uint8), "shape"),
        (np.zeros((imaging.MAX_SIDE + 1, 1), np.uint8), "at most 16384"),
        ([[0, 1], [2, 3]], "numpy array"),
    ],
)
def test_check_image_rejects(image, message):
    with pytest.raises(InputError, match=message):
        imaging.check_image(image, "line art")


@pytest.mark.parametrize("shape", [(5, 7), (5, 7, 1), (5, 7, 2), (5, 7, 3), (5, 7, 4)])
def test_check_image_accepts_grey_to_rgba(shape):
    checked = imaging.check_image(np.zeros(shape, np.uint16))
    assert checked.shape == (5, 7, shape[2] if len(shape) == 3 else 1)


def test_largest_side_is_accepted():
    imaging.check_image(np.zeros((imaging.MAX_SIDE, 1), np.uint8))


# -- flattening and lines ----------------------------------------------------------------------


def test_transparent_pixels_become_white_paper():
    rgba = np.zeros((4, 4, 4), np.uint8)  # transparent black
    rgba[0, 0] = (0, 0, 0, 255)  # one opaque black pixel
    rgba[0, 1] = (0, 0, 0, 128)  # half-covered black
    flat = imaging.flatten_on_white(rgba)
    assert flat.shape == (4, 4, 3)
    assert (flat[1:] == 255).all()
    assert (flat[0, 0] == 0).all()
    assert np.abs(flat[0, 1].astype(int) - 127).max() <= 1


def test_every_sixteen_bit_value_rounds_to_the_nearest_eight_bit_one():
    # all 65536 values, most of them not multiples of 257: truncation (>> 8) differs on 255 of
    # every 257 (e.g. 200 -> 1, not 0)
    values = np.arange(1 << 16, dtype=np.uint16).reshape(256, 256)
    expected = np.floor(values / 257 + 0.5).astype(np.uint8)  # v / 257 never ends in .5
    assert np.array_equal(imaging.to_uint8(values), expected)
    grey_alpha = np.stack([values, np.full_like(values, 65535)], axis=2)
    assert np.array_equal(imaging.flatten_on_white(grey_alpha), expected)


def test_sixteen_bit_is_rounded_to_eight():
    grey = np.array([[0, 257, 65535, 32767]], np.uint16)
    assert imaging.to_uint8(grey).tolist() == [[0, 1, 255, 127]]
    rgba16 = np.full((2, 3, 4), 65535, np.uint16)
    assert imaging.to_uint8(rgba16).shape == (2, 3, 4)


def test_grey_alpha_flattens_to_grey():
    la = np.zeros((3, 3, 2), np.uint8)
    la[1, 1] = (0, 255)
    flat = imaging.flatten_on_white(la)
    assert flat.shape == (3, 3)
    assert flat[1, 1] == 0
    assert flat[0, 0] == 255


@pytest.mark.parametrize(
    ("colour", "is_line"),
    [
        ((0, 0, 0), True),  # ink
        ((150, 150, 150), True),  # an anti-aliased edge or a soft pencil line
        ((220, 30, 30), True),  # red ink: luminance ~90, a line
        ((255, 230, 0), True),  # yellow ink: bright, but its blue channel is empty
        ((40, 60, 230), True),  # blue ink
        ((235, 235, 235), False),  # light paper texture
        ((250, 240, 225), False),  # cream paper
        ((255, 255, 255), False),
    ],
)
def test_line_mask_on_coloured_and_soft_lines(colour, is_line):
    flat = np.full((2, 2, 3), colour, np.uint8)
    assert imaging.line_mask(flat).tolist() == [[int(is_line)] * 2] * 2


def test_line_mask_of_transparent_layer():
    rgba = np.zeros((9, 9, 4), np.uint8)
    cv2.line(rgba, (0, 4), (8, 4), (0, 0, 0, 255), 1)
    lines = imaging.line_mask(imaging.flatten_on_white(rgba))
    assert lines[4].all()
    assert lines.sum() == 9


# -- geometry ----------------------------------------------------------------------------------


def test_geometry_odd_size_pads_instead_of_distorting():
    geometry = imaging.plan_geometry(333, 517, 512)
    assert (geometry.scaled_height, geometry.scaled_width) == (330, 512)
    assert geometry.working_shape == (336, 512)
    assert geometry.scale == pytest.approx(517 / 512, rel=1e-2)


def test_geometry_never_enlarges():
    geometry = imaging.plan_geometry(60, 100, 512)
    assert (geometry.scaled_height, geometry.scaled_width) == (60, 100)
    assert geometry.working_shape == (64, 112)
    assert geometry.scale == 1


@pytest.mark.parametrize("size", [0, 8, 100, 520.0, True, 16400])
def test_bad_working_size(size):
    with pytest.raises(InputError, match="multiple of 16"):
        imaging.plan_geometry(100, 100, size)


def test_reference_keeps_its_aspect():
    assert imaging.reference_shape(1000, 500, 512) == (512, 256)
    assert imaging.reference_shape(90, 1600, 512) == (32, 512)
    assert imaging.reference_shape(1, 4000, 256) == (16, 256)


def test_working_reference_is_flattened_on_white():
    reference = np.zeros((40, 80, 4), np.uint16)  # fully transparent, 16-bit
    working = imaging.working_reference(reference, 64)
    assert working.shape == (32, 64, 3)
    assert working.dtype == np.float32
    assert np.allclose(working, 1.0)


# -- the model's sketch ------------------------------------------------------------------------


def test_thin_lines_survive_shrinking_thickened_and_specks_vanish():
    lines = np.zeros((2048, 2048), np.uint8)
    lines[1001, :] = 1  # one pixel wide, at 1/4 of a working pixel
    lines[300, 300] = 1  # an isolated speck
    geometry = imaging.plan_geometry(2048, 2048, 512)
    sketch, widened = imaging.working_sketch(lines, geometry)
    assert sketch.shape == (512, 512)
    # the line, unbroken, and as wide as the thinnest strokes the model is shown
    assert sketch[249:252].all() and sketch.sum() == 3 * 512
    assert widened == 2 == MIN_WORKING_STROKE - 1
    assert sketch[75, 75] == 0


def test_strokes_as_thick_as_the_models_are_left_alone():
    lines = np.zeros((256, 256), np.uint8)
    lines[100:104, 20:230] = 1  # four pixels wide at the working size
    lines[20:230, 100:104] = 1
    geometry = imaging.plan_geometry(256, 256, 256)
    sketch, widened = imaging.working_sketch(lines, geometry)
    assert widened == 0
    assert np.array_equal(sketch, lines.astype(np.float32))


def test_sketch_padding_is_paper():
    lines = np.ones((40, 70), np.uint8)
    geometry = imaging.plan_geometry(40, 70, 512)
    sketch, _ = imaging.working_sketch(lines, geometry)
    assert sketch.shape == (48, 80)
    assert sketch[:40, :70].all()
    assert not sketch[40:].any()
    assert not sketch[:, 70:].any()


# -- upsampling --------------------------------------------------------------------------------

RED = (220, 40, 40)
BLUE = (40, 60, 220)


def two_regions(height: int, width: int, line_x: int, line_width: int) -> np.ndarray:
    lines = np.zeros((height, width), np.uint8)
    lines[:, line_x : line_x + line_width] = 1
    return lines


def test_colour_does_not_bleed_across_a_line():
    # the model's colours change from red to blue over the working pixels that the line crosses
    # (the line runs at working x 24.9..25.3; column 25 is half and half), as a real output
    # does there; bilinear upsampling alone smears purple several canvas pixels into both sides
    height, width = 200, 403
    line_x, line_width = 201, 3
    lines = two_regions(height, width, line_x, line_width)
    small_w = 50
    colours = np.empty((25, small_w, 3), np.uint8)
    ramp = np.clip((np.arange(small_w) - 24) / 2, 0, 1)[None, :, None]
    colours[:] = (np.array(RED) * (1 - ramp) + np.array(BLUE) * ramp).astype(np.uint8)
    plain = cv2.resize(colours, (width, height), interpolation=cv2.INTER_LINEAR)
    assert not (plain[:, :line_x] == RED).all()  # bilinear alone does bleed (the test bites)

    result = imaging.upsample_colours(colours, lines)
    assert result.shape == (height, width, 4)
    assert result.dtype == np.uint8
    assert (result[..., 3] == 255).all()
    left, right = result[:, :line_x, :3], result[:, line_x + line_width :, :3]
    assert (left == RED).all()
    assert (right == BLUE).all()


def test_thin_region_keeps_its_own_colour():
    # a strip four canvas pixels wide between two lines, at 4x upsampling: too thin to hold a
    # reliable pixel; it must not take the colour of the regions beyond its lines
    height, width = 64, 256
    lines = np.zeros((height, width), np.uint8)
    lines[:, 122:124] = 1
    lines[:, 128:130] = 1  # the strip, x 124..127, is working column 31
    colours = np.empty((16, 64, 3), np.uint8)
    colours[:, :31] = RED
    colours[:, 31] = (0, 200, 0)  # the model coloured the strip green
    colours[:, 32:] = BLUE
    result = imaging.upsample_colours(colours, lines)[..., :3]
    strip = result[:, 124:128].reshape(-1, 3).astype(int)
    assert (strip[:, 1] > strip[:, 0]).all() and (strip[:, 1] > strip[:, 2]).all()
    assert (result[:, :110] == RED).all()
    assert (result[:, 140:] == BLUE).all()


def test_thin_enclosed_shape_keeps_its_own_colour():
    # a second shape for step 3: a 3x3 hollow inside a closed square outline, at 4x upsampling;
    # every pixel in it lies within the reliable radius of the outline, so step 2 alone would
    # paint it with the blue beyond the outline
    lines = np.zeros((64, 64), np.uint8)
    lines[30:35, 30:35] = 1
    lines[31:34, 31:34] = 0
    colours = np.empty((16, 16, 3), np.uint8)
    colours[:] = BLUE
    colours[7:9, 7:9] = (0, 200, 0)  # the model coloured the shape's working pixels green
    result = imaging.upsample_colours(colours, lines)[..., :3]
    hollow = result[31:34, 31:34].reshape(-1, 3).astype(int)
    assert (hollow[:, 1] > hollow[:, 2]).all()  # green wins over blue inside
    assert (result[:20] == BLUE).all()


@st.composite
def line_masks(draw: st.DrawFn) -> np.ndarray:
    """Canvases from 1x1 to 40x40 with lines from none to all: strokes, dots and blocks."""
    height, width = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    lines = np.zeros((height, width), np.uint8)
    if draw(st.integers(0, 9)) == 0:
        lines[:] = 1
    for _ in range(draw(st.integers(0, 6))):
        top, left = draw(st.integers(0, height - 1)), draw(st.integers(0, width - 1))
        lines[top : top + draw(st.integers(1, height)), left : left + draw(st.integers(1, 3))] = 1
        lines[top : top + draw(st.integers(1, 3)), left : left + draw(st.integers(1, width))] = 1
    return lines


@settings(max_examples=150, deadline=None)
@given(lines=line_masks())
def test_no_paper_pixel_takes_a_colour_from_another_region(lines: np.ndarray) -> None:
    # at the canvas's own size, each 4-connected paper region gets one colour of its own and
    # the lines black: whatever the shape (1x1, 1xN, all lines, no lines), every paper pixel must
    # keep its region's colour, and every line pixel take one of the colours around
    count, regions = cv2.connectedComponents(lines ^ np.uint8(1), connectivity=4)
    palette = np.random.default_rng(count).integers(1, 256, (count, 3), dtype=np.uint8)
    palette[0] = 0
    colours = palette[regions]
    result = imaging.upsample_colours(colours, lines)
    assert result.shape == (*lines.shape, 4)
    assert (result[..., 3] == 255).all()
    paper = regions > 0
    assert np.array_equal(result[..., :3][paper], colours[paper])
    if paper.any():
        allowed = {tuple(colour) for colour in palette[1:].tolist()} | {(0, 0, 0)}
        assert {tuple(pixel) for pixel in result[..., :3][~paper].tolist()} <= allowed


def test_one_line_pixel_in_a_four_by_one_canvas():
    # OpenCV 4 reads a Python number beside a 4x1 array as a 4x1 array (this once crashed)
    lines = np.array([[1], [0], [0], [0]], np.uint8)
    colours = np.array([[RED], [RED], [BLUE], [BLUE]], np.uint8)
    result = imaging.upsample_colours(colours, lines)[..., :3]
    # no pixel is reliable: the region takes its own mean, weighted 1 beside the line, 4 beyond
    mean = np.floor((np.array(RED) + 4 * np.array(BLUE) * 2) / 9 + 0.5)
    assert result[1:].reshape(-1, 3).tolist() == [mean.tolist()] * 3


def test_line_pixels_get_a_colour_from_a_side():
    lines = two_regions(40, 80, 40, 2)
    colours = np.empty((10, 20, 3), np.uint8)
    colours[:, :10] = RED
    colours[:, 10:] = BLUE
    result = imaging.upsample_colours(colours, lines)[..., :3]
    under = result[:, 40:42].reshape(-1, 3)
    assert all(tuple(pixel) in (RED, BLUE) for pixel in under)


def test_no_lines_is_plain_bilinear():
    colours = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    lines = np.zeros((32, 32), np.uint8)
    expected = cv2.resize(colours, (32, 32), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(imaging.upsample_colours(colours, lines)[..., :3], expected)


def test_all_lines_still_returns_a_layer():
    result = imaging.upsample_colours(np.zeros((4, 4, 3), np.uint8), np.ones((16, 16), np.uint8))
    assert result.shape == (16, 16, 4)


# -- lines on top ------------------------------------------------------------------------------


def test_draw_lines_as_ink_over_paper():
    colours = np.zeros((1, 5, 4), np.uint8)
    colours[:] = (200, 100, 50, 255)
    flat = np.array(
        [[(255, 255, 255), (0, 0, 0), (128, 128, 128), (255, 0, 0), (250, 250, 250)]], np.uint8
    )
    out = imaging.draw_lines(colours, flat).astype(int)
    assert out[0, 0].tolist() == [200, 100, 50, 255]  # white paper: the colour
    assert out[0, 1].tolist() == [0, 0, 0, 255]  # black ink: black
    assert np.abs(out[0, 2, :3] - np.array([100, 50, 25])).max() <= 1  # grey: multiply
    assert out[0, 3].tolist() == [255, 0, 0, 255]  # red ink keeps its colour
    assert np.abs(out[0, 4, :3] - np.array([196, 98, 49])).max() <= 1  # faint paper: faint


def test_draw_lines_grey_line_art():
    colours = np.full((2, 2, 4), 255, np.uint8)
    colours[..., 0] = 100
    flat = np.array([[0, 255], [255, 255]], np.uint8)
    out = imaging.draw_lines(colours, flat)
    assert out[0, 0].tolist() == [0, 0, 0, 255]
    assert out[1, 1].tolist() == [100, 255, 255, 255]


def test_bands_do_not_change_the_result(monkeypatch):
    rng = np.random.default_rng(3)
    line_art = np.full((300, 200), 255, np.uint8)
    for _ in range(12):
        centre = tuple(int(v) for v in rng.integers(0, 200, 2))
        cv2.circle(line_art, centre, int(rng.integers(10, 90)), 0, int(rng.integers(1, 4)))
    lines = imaging.line_mask(line_art)
    colours = cv2.resize(
        rng.integers(0, 256, (6, 4, 3), dtype=np.uint8), (50, 75), interpolation=cv2.INTER_CUBIC
    )
    whole = imaging.upsample_colours(colours, lines)
    monkeypatch.setattr(imaging, "BAND_PIXELS", 200 * 64)  # five bands of 64 rows
    banded = imaging.upsample_colours(colours, lines)
    assert banded.shape == whole.shape
    same = (banded == whole).all(axis=2)
    far = cv2.distanceTransform(lines ^ 1, cv2.DIST_L2, 3) > imaging.reliable_radius(4)
    assert same[far].all()  # reliable pixels keep their bilinear colour either way
    # near the lines, only thin regions' colours (measured per band) may differ
    assert same.mean() > 0.9


def test_no_bleeding_across_bands(monkeypatch):
    monkeypatch.setattr(imaging, "BAND_PIXELS", 403 * 64)
    test_colour_does_not_bleed_across_a_line()
