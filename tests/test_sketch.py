"""XDoG line extraction: binary, thin lines that follow the edges, white flat areas."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from colord.daemon.cli import main
from colord.training.samples.sketch import binarize_line_art, xdog

SIZE = 160


def filled_shapes() -> tuple[np.ndarray, np.ndarray]:
    """A clip-art picture (filled shapes of several tones on white) and the mask of its edges."""
    image = np.full((SIZE, SIZE, 3), 255, np.uint8)
    cv2.circle(image, (50, 50), 30, (200, 40, 40), -1)
    cv2.rectangle(image, (90, 80), (145, 145), (25, 25, 25), -1)
    cv2.ellipse(image, (50, 120), (35, 20), 15, 0, 360, (240, 210, 80), -1)
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    edges = cv2.Canny(grey, 10, 30) > 0
    return image, edges


def distance_to(mask: np.ndarray) -> np.ndarray:
    """Per pixel, the distance in pixels to the nearest True pixel of `mask`."""
    return cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 5)


def test_output_is_binary_uint8_of_the_input_size() -> None:
    image, _ = filled_shapes()
    sketch = xdog(image)
    assert sketch.shape == (SIZE, SIZE)
    assert sketch.dtype == np.uint8
    assert set(np.unique(sketch)) == {0, 255}


def test_lines_are_thin_and_follow_the_edges() -> None:
    image, edges = filled_shapes()
    lines = xdog(image) == 0
    # every line pixel lies next to a real edge (corners round off a little) ...
    assert distance_to(edges)[lines].max() <= 4
    # ... every edge is drawn, the faint yellow-on-white one included ...
    assert distance_to(lines)[edges].max() <= 3
    # ... and the lines are a few pixels wide: no line pixel is far from the background
    assert distance_to(~lines)[lines].max() <= 3
    assert lines.sum() < 4 * edges.sum()


def test_flat_areas_stay_white_whatever_their_tone() -> None:
    image, edges = filled_shapes()
    flat = distance_to(edges) > 4
    assert (xdog(image)[flat] == 255).all()


def test_pre_blur_suppresses_texture_noise() -> None:
    rng = np.random.default_rng(0)
    image, edges = filled_shapes()
    noisy = np.clip(image + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)
    flat = distance_to(edges) > 4
    blurred_lines = (xdog(noisy)[flat] == 0).mean()
    unblurred_lines = (xdog(noisy, blur_sigma=0)[flat] == 0).mean()
    assert blurred_lines < 0.01
    assert blurred_lines < unblurred_lines


def test_accepts_grey_and_rejects_other_input() -> None:
    image, _ = filled_shapes()
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    np.testing.assert_array_equal(xdog(grey), xdog(image))
    with pytest.raises(ValueError, match="uint8"):
        xdog(image.astype(np.float32))
    with pytest.raises(ValueError, match="shape"):
        xdog(np.zeros((8, 8, 4), np.uint8))


def test_binarize_keeps_faint_strokes_as_lines() -> None:
    line_art = np.full((10, 10), 255, np.uint8)
    line_art[2, :] = 0
    line_art[5, :] = 150  # an anti-aliased or downscaled thin stroke
    binary = binarize_line_art(line_art)
    assert (binary[2] == 0).all() and (binary[5] == 0).all()
    assert (binary[[0, 1, 3, 4, 6, 7, 8, 9]] == 255).all()


def test_sketch_command_writes_line_art(tmp_path) -> None:
    image, edges = filled_shapes()
    source = tmp_path / "picture.jpg"
    Image.fromarray(image).save(source, quality=95)
    out = tmp_path / "lines.png"
    result = CliRunner().invoke(main, ["sketch", str(source), "-o", str(out)])
    assert result.exit_code == 0, result.output
    sketch = np.asarray(Image.open(out))
    assert sketch.shape == (SIZE, SIZE)
    assert set(np.unique(sketch)) == {0, 255}
    assert distance_to(edges)[sketch == 0].max() <= 4


def test_sketch_command_reports_an_unreadable_file(tmp_path) -> None:
    source = tmp_path / "broken.png"
    source.write_bytes(b"not an image at all")
    result = CliRunner().invoke(main, ["sketch", str(source), "-o", str(tmp_path / "out.png")])
    assert result.exit_code != 0
    assert "broken.png" in result.output
    assert "Traceback" not in result.output
