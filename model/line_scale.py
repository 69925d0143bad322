"""Line scale: how thick a drawing's strokes are, and the working size that matches the model's.

A generator only knows the stroke widths and region sizes of its training sketches: the same
drawing shrunk to a size where its strokes are much thinner or thicker than those comes back
with little or no colour. A checkpoint records the median stroke width of its training sketches
at the training size (metadata key `LINE_WIDTH_KEY`, in pixels); `automatic_working_size` picks
the working size at which a drawing's strokes reach that width.

numpy and OpenCV only (no torch), so the engine's CPU-side preparation can use it.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from .pixels import SIZE_MULTIPLE

LINE_WIDTH_KEY = "training_line_width"
# The largest working size the stroke rule may choose, on any device. Thin strokes ask for about
# the canvas's own size, where a figure spans many times the cells of a 128 px training crop.
# Measured with `bench/bench_scale.py` on 2048-2304 px pages of held-out drawings (one drawing,
# 2 x 2 and 3 x 3 panels; strokes enlarged with the drawing, or redrawn 3 px wide with --pen 3):
# 1024 was worst on every page (1-5 dB below the best), 256 best on single drawings and thin
# pens but 1.2 dB short on 3 x 3 panels, 384 above 512 on all five pages and within 1.5 dB of
# the best (table in docs/cpu-fast-path.md). The forward's cost grows with the square of the
# size, the attention's with its fourth power.
AUTOMATIC_SIZE_CAP = 384
# The thinnest strokes the model is shown. At a working size capped below what the stroke rule
# asks (a large page drawn with a thin pen) strokes come out 1-2 px wide, far thinner than the
# 5 px the model learnt from, and it leaves them nearly uncoloured; they are thickened to this.
# Measured with bench/bench_scale.py --pen 3 at working size 384 on pages of held-out drawings
# (one drawing, 2 x 2 and 3 x 3 panels): +3.8 to +5.6 dB over the unthickened strokes; 4-5 px
# merged the small panels of 3 x 3 pages (2.4-3.4 dB below 3 px); 2.5 px gained less everywhere.
MIN_WORKING_STROKE = 3.0
MIN_RIDGE_PIXELS = 16  # fewer ridge pixels than this: too little line to read a width from
MEASURE_SIDE = 1024  # automatic_working_size reads widths on at most this many pixels a side
_BAND_ROWS = 1 << 21  # canvas pixels per band when shrinking a large mask


def stroke_width(lines: np.ndarray) -> float | None:
    """The typical stroke width, in pixels, of a (H, W) line mask (True or non-zero on lines).

    Method: the median, over the strokes' ridge (pixels of the distance transform that are a
    local maximum, i.e. the centre line), of the distance to the nearest paper pixel, read on
    the mask enlarged x2 with nearest neighbours. Why: the ridge samples every stroke once per
    pixel of its length, so long strokes count by length and the median ignores junctions,
    stroke ends, specks and the odd filled area; enlarging first makes every width even, so a
    stroke w pixels wide reads exactly w (read at the original size, even widths read one pixel
    short, which would break scale equivariance). Stroke widths 1, 2, 3, 5 and 8 read as such;
    the same drawing enlarged or shrunk by k reads about k times wider or narrower.

    Returns None when the mask holds too little line to read a width from.
    """
    mask = np.asarray(lines)
    if mask.ndim != 2:
        raise ValueError(f"lines must be a (H, W) mask, got shape {mask.shape}")
    binary = (mask != 0).view(np.uint8)
    if cv2.countNonZero(binary) < MIN_RIDGE_PIXELS:
        return None
    doubled = cv2.resize(binary, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    # paper around the canvas: a stroke running along the border still has two sides
    doubled = cv2.copyMakeBorder(doubled, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    distance = cv2.distanceTransform(doubled, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    ridge = (distance >= cv2.dilate(distance, np.ones((3, 3), np.uint8))) & (doubled > 0)
    widths = distance[ridge]
    if widths.size < MIN_RIDGE_PIXELS:
        return None
    return float(np.median(widths))


def thickened(lines: np.ndarray, minimum: float = MIN_WORKING_STROKE) -> tuple[np.ndarray, int]:
    """A (H, W) line mask whose strokes, when thinner than `minimum` px, are dilated to about
    that width (with a disc, so shapes keep their outline), and the pixels that added to every
    stroke's width (0: the mask itself, unchanged)."""
    width = stroke_width(lines)
    if width is None or width >= minimum - 0.5:
        return lines, 0
    size = round(minimum - width) + 1
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    return cv2.dilate((np.asarray(lines) != 0).view(np.uint8), disc), size - 1


def automatic_working_size(
    line_art_lines: np.ndarray,
    training_line_width: float,
    *,
    multiple: int = SIZE_MULTIPLE,
    minimum: int = 64,
    maximum: int,
) -> int:
    """The working size (long side, a multiple of `multiple`) at which the drawing's strokes are
    as thick as the training sketches' strokes, clamped to [minimum, maximum].

    `line_art_lines` is the canvas's (H, W) line mask; `training_line_width` the checkpoint's
    `LINE_WIDTH_KEY` (> 1); `maximum` what the device can afford. The engine shrinks a canvas by
    s keeping every working pixel that a line covers by half a canvas pixel, so a stroke w canvas
    pixels wide becomes about 1 + (w - 1) / s working pixels (a one-pixel line stays one pixel):
    s = (w - 1) / (training width - 1). The canvas is never enlarged (s >= 1). With no stroke
    to measure, the answer is `minimum`, the cheapest.

    Cost is bounded: canvases over MEASURE_SIDE pixels a side are measured shrunk by an integer
    factor k (a pixel is a line when half its area is), and the width read is multiplied by k.
    Strokes under about two shrunk pixels read coarsely (under half of one, they vanish and are
    taken as k / 2 wide), but they ask for a working size of at least about (training width - 1)
    * MEASURE_SIDE / 2, above which the device's cap rules anyway.
    """
    if training_line_width <= 1:
        raise ValueError(
            f"training_line_width must exceed one pixel, got {training_line_width!r}: "
            "every shrink leaves one-pixel lines one pixel wide"
        )
    if not 0 < minimum <= maximum:
        raise ValueError(f"need 0 < minimum <= maximum, got {minimum} and {maximum}")
    height, width = line_art_lines.shape
    reduced, factor = _shrunk_for_measuring(line_art_lines)
    measured = stroke_width(reduced)
    if measured is not None:
        canvas_width = measured * factor
    elif factor > 1 and line_art_lines.any():  # strokes too thin to survive the shrink
        canvas_width = factor / 2
    else:
        return minimum
    shrink = max(1.0, (canvas_width - 1.0) / (training_line_width - 1.0))
    long_side = max(height, width)
    size = min(round(long_side / shrink / multiple), math.ceil(long_side / multiple)) * multiple
    return int(min(max(size, minimum), maximum))


def _shrunk_for_measuring(lines: np.ndarray) -> tuple[np.ndarray, int]:
    """(mask, k): `lines` shrunk by the smallest integer k that brings it within MEASURE_SIDE,
    a shrunk pixel being a line when at least half of its k x k block is (which keeps a stroke's
    expected width w / k). Done in bands of rows, so a 16384-pixel canvas needs no full copy."""
    height, width = lines.shape
    factor = max(1, math.ceil(max(height, width) / MEASURE_SIDE))
    if factor == 1:
        return lines, 1
    out_height, out_width = math.ceil(height / factor), math.ceil(width / factor)
    shrunk = np.empty((out_height, out_width), np.uint8)
    band_rows = max(1, _BAND_ROWS // (width * factor)) * factor
    for top in range(0, height, band_rows):
        band = lines[top : top + band_rows]
        band = (band != 0).view(np.uint8) * np.uint8(255)
        pad_rows, pad_cols = -band.shape[0] % factor, -width % factor
        if pad_rows or pad_cols:  # paper up to whole blocks
            band = cv2.copyMakeBorder(band, 0, pad_rows, 0, pad_cols, cv2.BORDER_CONSTANT, value=0)
        rows = band.shape[0] // factor
        coverage = cv2.resize(band, (out_width, rows), interpolation=cv2.INTER_AREA)
        shrunk[top // factor : top // factor + rows] = coverage >= 128
    return shrunk, factor
