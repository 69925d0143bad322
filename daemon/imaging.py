"""Pure image processing around the model: numpy and OpenCV only, no torch.

Everything the engine does to pixels before and after the generator lives here:

1. **Check** an input array: uint8 or uint16; grey (H, W) or (H, W, 1), grey+alpha, RGB or RGBA;
   1..16384 pixels a side. Anything else raises `InputError`.
2. **Flatten** it on white: transparent pixels become paper. 16-bit input is reduced to 8 bits
   first (the output is 8-bit anyway).
3. **Find the lines** as training binarizes drawn line art: a pixel is a line when, flattened on
   white, it is darker than 200 of 255 (`colord.model.pixels.LINE_THRESHOLD`, which training's
   `binarize_line_art` uses too; set high so anti-aliased and thin strokes count).
   The value tested is the pixel's *darkest channel* rather than its luminance, so coloured inks
   count too: a red, blue or even yellow line is a line, while white or faintly tinted paper is
   not. White lines on a dark ground are not supported.
4. **Plan the working geometry**: the line art is scaled so its long side is the working size
   (never enlarged), then padded with blank paper to multiples of 16 (never distorted); the model's
   output is cropped back. The reference keeps its own aspect: its long side is scaled to the
   working long side and both sides are rounded to multiples of 16.
5. **Upsample the colours** under the full-resolution lines without smearing them across a line
   (`upsample_colours`, below).
6. **Keep the lines** if asked: the original line art is laid over the colours as ink over paper
   (`draw_lines`).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np

from colord.model.line_scale import thickened
from colord.model.pixels import LINE_THRESHOLD, on_white
from colord.model.pixels import SIZE_MULTIPLE as MULTIPLE

MAX_SIDE = 16384  # the longest canvas side accepted, in pixels
DEFAULT_WORKING_SIZE = 512


class EngineError(Exception):
    """Base of the engine's errors; the message is a sentence for the user."""


class InputError(EngineError, ValueError):
    """An input image the engine cannot use (wrong dtype, shape, size, ...)."""


# -- checking and flattening -------------------------------------------------------------------


def check_image(image: object, what: str = "image") -> np.ndarray:
    """Return `image` as an (H, W, C) uint8/uint16 array, C in 1..4, or raise InputError."""
    if not isinstance(image, np.ndarray):
        raise InputError(f"{what} must be a numpy array, got {type(image).__name__}")
    if image.dtype not in (np.uint8, np.uint16):
        raise InputError(f"{what} must be uint8 or uint16, got {image.dtype}")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3:
        raise InputError(f"{what} must be (H, W) or (H, W, C), got shape {image.shape}")
    height, width, channels = image.shape
    if not 1 <= channels <= 4:
        raise InputError(
            f"{what} has {channels} channels; expected 1 (grey), 2 (grey+alpha), 3 (RGB) "
            "or 4 (RGBA)"
        )
    if height == 0 or width == 0:
        raise InputError(f"{what} is empty ({width}x{height})")
    if height > MAX_SIDE or width > MAX_SIDE:
        raise InputError(f"{what} is {width}x{height}; at most {MAX_SIDE} pixels a side")
    return image


def to_uint8(image: np.ndarray) -> np.ndarray:
    """16-bit to 8-bit, rounded (65535 -> 255); 8-bit passes through."""
    if image.dtype == np.uint8:
        return image
    channels = image.shape[2] if image.ndim == 3 else 1
    # convertScaleAbs rounds and saturates; it works on up to 4 channels at once.
    out = cv2.convertScaleAbs(image, alpha=1 / 257)
    return out.reshape(image.shape[:2] + ((channels,) if image.ndim == 3 else ()))


def flatten_on_white(image: np.ndarray) -> np.ndarray:
    """(H, W, C) uint8/uint16 -> (H, W) grey or (H, W, 3) RGB uint8, composited on white."""
    image = to_uint8(check_image(image))
    height, width, channels = image.shape
    if channels == 1:
        return np.ascontiguousarray(image.reshape(height, width))
    if channels == 3:
        return np.ascontiguousarray(image)
    image = np.ascontiguousarray(image)
    alpha = cv2.extractChannel(image, channels - 1)
    if channels == 2:
        colour = cv2.extractChannel(image, 0)
    else:
        colour = cv2.cvtColor(image, cv2.COLOR_RGBA2RGB)
    if alpha.min() < 255:
        colour = on_white(colour, alpha)
    return colour


def as_rgb(flat: np.ndarray) -> np.ndarray:
    """A flattened grey or RGB uint8 image as (H, W, 3)."""
    return cv2.cvtColor(flat, cv2.COLOR_GRAY2RGB) if flat.ndim == 2 else flat


def darkest_channel(flat: np.ndarray) -> np.ndarray:
    """(H, W) uint8: min over R, G, B of a flattened image (the grey itself for grey)."""
    if flat.ndim == 2:
        return flat
    return np.minimum(np.minimum(flat[:, :, 0], flat[:, :, 1]), flat[:, :, 2])


def line_mask(
    flat: np.ndarray, threshold: int = LINE_THRESHOLD, darkest: np.ndarray | None = None
) -> np.ndarray:
    """(H, W) uint8, 1 on line pixels: darkest channel below `threshold` (see module doc)."""
    darkest = darkest_channel(flat) if darkest is None else darkest
    return cv2.threshold(darkest, threshold - 1, 1, cv2.THRESH_BINARY_INV)[1]


BAND_PIXELS = 1 << 21  # canvas pixels per band of rows in the full-resolution passes


def bands(height: int, width: int) -> list[slice]:
    """Row bands of about BAND_PIXELS pixels: large canvases are processed band by band, so the
    temporaries stay small (reused by the allocator instead of faulted in afresh)."""
    rows = max(64, BAND_PIXELS // max(1, width))
    return [slice(top, min(height, top + rows)) for top in range(0, height, rows)]


def flatten_in_bands(image: np.ndarray, what: str = "image") -> np.ndarray:
    """`flatten_on_white` of a whole canvas, band by band."""
    image = check_image(image, what)
    height, width, channels = image.shape
    flat = np.empty((height, width) if channels <= 2 else (height, width, 3), np.uint8)
    for rows in bands(height, width):
        flat[rows] = flatten_on_white(image[rows])
    return flat


def read_line_art(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A line-art array -> (flattened on white, its darkest channel, line mask)."""
    flat = flatten_in_bands(image, "line art")
    darkest = np.empty(flat.shape[:2], np.uint8)
    lines = np.empty(flat.shape[:2], np.uint8)
    for rows in bands(*flat.shape[:2]):
        darkest[rows] = darkest_channel(flat[rows])
        lines[rows] = line_mask(flat[rows], darkest=darkest[rows])
    return flat, darkest, lines


# -- working geometry --------------------------------------------------------------------------


@dataclass(frozen=True)
class Geometry:
    """How a canvas maps to the model's input: scale, then pad bottom/right to multiples of 16."""

    height: int  # the canvas
    width: int
    scaled_height: int  # the canvas at working scale (the model's output is cropped to this)
    scaled_width: int
    padded_height: int  # the model's input, multiples of 16
    padded_width: int

    @property
    def scale(self) -> float:
        """Canvas pixels per working pixel (>= 1)."""
        return max(self.height / self.scaled_height, self.width / self.scaled_width)

    @property
    def working_shape(self) -> tuple[int, int]:
        return self.padded_height, self.padded_width

    @property
    def long_side(self) -> int:
        return max(self.padded_height, self.padded_width)


def check_working_size(working_size: int) -> int:
    if (
        isinstance(working_size, bool)
        or not isinstance(working_size, (int, np.integer))
        or working_size < MULTIPLE
        or working_size % MULTIPLE
        or working_size > MAX_SIDE
    ):
        raise InputError(
            f"working size must be a multiple of {MULTIPLE} between {MULTIPLE} and {MAX_SIDE}, "
            f"got {working_size!r}"
        )
    return int(working_size)


def round_up(value: int, multiple: int = MULTIPLE) -> int:
    return -(-value // multiple) * multiple


def plan_geometry(height: int, width: int, working_size: int = DEFAULT_WORKING_SIZE) -> Geometry:
    """Long side to `working_size` (shrinking only), short side in proportion, pad to x16."""
    working_size = check_working_size(working_size)
    factor = min(1.0, working_size / max(height, width))
    scaled_height = max(1, min(working_size, round(height * factor)))
    scaled_width = max(1, min(working_size, round(width * factor)))
    return Geometry(
        height,
        width,
        scaled_height,
        scaled_width,
        round_up(scaled_height),
        round_up(scaled_width),
    )


def reference_shape(height: int, width: int, long_side: int) -> tuple[int, int]:
    """The reference's working (height, width): its aspect kept, long side = `long_side`, x16."""
    factor = long_side / max(height, width)
    return (
        max(MULTIPLE, round(height * factor / MULTIPLE) * MULTIPLE),
        max(MULTIPLE, round(width * factor / MULTIPLE) * MULTIPLE),
    )


# -- model inputs ------------------------------------------------------------------------------


def working_sketch(lines: np.ndarray, geometry: Geometry) -> tuple[np.ndarray, int]:
    """The model's sketch: (padded_h, padded_w) float32, 1 on lines, 0 on paper and padding; and
    the working pixels its strokes were widened by (see below; 0 when they were not).

    When shrinking, a working pixel is a line if its footprint holds at least half a line's worth
    of line pixels (coverage >= 0.5 / scale), so a one-pixel line at 4096 px survives at 512 px
    and closed shapes stay closed, while isolated specks vanish. Strokes still thinner than
    `line_scale.MIN_WORKING_STROKE` are then thickened to it (`line_scale.thickened`).
    """
    target = (geometry.scaled_width, geometry.scaled_height)
    if (geometry.height, geometry.width) == (geometry.scaled_height, geometry.scaled_width):
        small = lines
    else:  # coverage in 8 bits (a float copy of a 16384^2 canvas would take a gigabyte)
        coverage = cv2.resize(lines * np.uint8(255), target, interpolation=cv2.INTER_AREA)
        threshold = max(1, int(255 * min(0.5, 0.5 / geometry.scale)))
        small = coverage >= threshold
    sketch = np.zeros(geometry.working_shape, np.float32)
    strokes, widened = thickened(small)
    sketch[: geometry.scaled_height, : geometry.scaled_width] = strokes
    return sketch, widened


def working_reference(reference: np.ndarray, long_side: int) -> np.ndarray:
    """The model's reference: (h, w, 3) float32 RGB in [0, 1], flattened on white, aspect kept."""
    rgb = as_rgb(flatten_in_bands(reference, "reference"))
    height, width = reference_shape(rgb.shape[0], rgb.shape[1], long_side)
    shrinking = height * width < rgb.shape[0] * rgb.shape[1]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
    resized = cv2.resize(rgb, (width, height), interpolation=interpolation)
    return resized.astype(np.float32) / 255.0


# -- back to the canvas ------------------------------------------------------------------------


def crop_colours(output: np.ndarray, geometry: Geometry) -> np.ndarray:
    """The model's (padded_h, padded_w, 3) uint8 output with the padding cropped off."""
    return np.ascontiguousarray(output[: geometry.scaled_height, : geometry.scaled_width])


def reliable_radius(scale: float, widened: int = 0) -> float:
    """Canvas pixels around a line whose bilinearly upsampled colour may mix both sides.

    A canvas pixel's bilinear colour comes from working pixels up to one working pixel (`scale`
    canvas pixels) away, and a working pixel's own colour spans half a working pixel; the model
    also darkens a pixel or so around the lines it was trained to draw, and around strokes that
    `working_sketch` widened by `widened` working pixels, half that much further on each side.
    """
    return (1.5 + widened / 2) * scale + 1.5


def upsample_colours(colours: np.ndarray, lines: np.ndarray, widened: int = 0) -> np.ndarray:
    """Working-resolution colours -> canvas resolution, never carrying a colour across a line.

    `colours` is (h, w, 3) uint8 (the model's output, cropped); `lines` the canvas's (H, W) line
    mask; `widened` what `working_sketch` widened the model's strokes by. Returns (H, W, 4) uint8
    RGBA with alpha 255.

    1. Bilinear upsampling gives every canvas pixel a colour; it is *reliable* where no line lies
       within `reliable_radius` (then its bilinear sources all sit on its own side of every line).
    2. Every other pixel (line pixels and a band along both sides of each line) takes the colour
       of its nearest reliable pixel (a Euclidean distance transform with labels).
    3. A non-line pixel whose nearest reliable pixel lies in another line-enclosed region (4-
       connected paper; a region too thin to hold reliable pixels of its own) takes its own
       region's colour instead: the mean of its upsampled colours, weighted towards the pixels
       away from its lines.

    Pixels of one region thus never take a colour from across a line; line pixels take the colour
    of the nearer side, so the layer is coloured beneath the lines too. Large canvases are done in
    bands of rows (each with a margin wider than the reliable radius); a region is then judged
    within its band, which can only send more pixels to step 3, never across a line.
    """
    height, width = lines.shape
    small = cv2.cvtColor(colours, cv2.COLOR_RGB2RGBA)  # upsampling RGBA keeps alpha at 255
    rgba = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
    if not lines.any():
        return rgba
    scale = max(height / colours.shape[0], width / colours.shape[1], 1.0)
    radius = reliable_radius(scale, widened)
    row_bands = bands(height, width)
    if len(row_bands) == 1:
        _fill_near_lines(rgba, lines, radius, scale)
        return rgba
    margin = int(radius) + 2
    # each band sees its neighbours' original colours in its margins, and writes only its own
    # rows, so the bands can run in parallel
    margins = [
        (
            rgba[max(0, rows.start - margin) : rows.start].copy(),
            rgba[rows.stop : rows.stop + margin].copy(),
        )
        for rows in row_bands
    ]

    def fill(index: int) -> None:
        rows, (above, below) = row_bands[index], margins[index]
        window = np.concatenate([above, rgba[rows], below])
        start = rows.start - len(above)
        _fill_near_lines(window, lines[start : rows.stop + len(below)], radius, scale)
        rgba[rows] = window[len(above) : len(above) + rows.stop - rows.start]

    _in_parallel(fill, len(row_bands))
    return rgba


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _in_parallel(task, count: int) -> None:
    """task(0) .. task(count - 1) on a shared thread pool (OpenCV and numpy release the GIL)."""
    global _POOL
    workers = min(count, os.cpu_count() or 1, 8)
    if workers <= 1:
        for index in range(count):
            task(index)
        return
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(min(os.cpu_count() or 1, 8), "colord-bands")
    for future in [_POOL.submit(task, index) for index in range(count)]:
        future.result()


def _fill_near_lines(rgba: np.ndarray, lines: np.ndarray, radius: float, scale: float) -> None:
    """Steps 2 and 3 of `upsample_colours`, in place on a contiguous (H, W, 4) array."""
    unreliable = _near_lines(lines, radius)
    # one uint32 per pixel (its RGBA bytes), so that gathers move whole pixels
    packed = rgba.view(np.uint32).reshape(-1)
    todo = np.flatnonzero(unreliable)
    if todo.size == 0:
        return
    paper = lines ^ np.uint8(1)  # 1 off the lines
    regions_count, regions = cv2.connectedComponents(paper, connectivity=4)  # 0 = lines
    regions = regions.reshape(-1)
    own = regions[todo]
    if todo.size < packed.size:
        _, nearest = cv2.distanceTransformWithLabels(
            unreliable, cv2.DIST_L2, 3, labelType=cv2.DIST_LABEL_PIXEL
        )
        reliable = np.flatnonzero(unreliable == 0)
        # the labels number the zero (reliable) pixels from 1, in raster order
        source = reliable[nearest.reshape(-1)[todo] - 1]
        del nearest, reliable
        stray = own != regions[source]
        stray &= own != 0
    else:  # no reliable pixel anywhere: every region takes its own mean colour
        source = todo
        stray = own != 0
    strays = todo[stray]
    if strays.size:  # measured on the upsampled colours, before any is replaced
        # weights: 1 next to a line, 4 a pixel off it, 8 on reliable pixels
        # numpy arithmetic, not cv2.multiply(array, 3): OpenCV 4 reads a Python number beside a
        # 4x1 array as a 4x1 float64 array and raises on the mismatched types
        weights = (cv2.dilate(lines, np.ones((3, 3), np.uint8)) ^ np.uint8(1)) * np.uint8(3)
        weights += (unreliable ^ np.uint8(1)) * np.uint8(4)
        weights += np.uint8(1)
        step = max(1, int(scale))  # about one sample per working pixel
        own_colours = _region_colours(packed, weights, regions, regions_count, strays, step)
    packed[todo] = packed[source]
    if strays.size:
        packed[strays] = own_colours


def _near_lines(lines: np.ndarray, radius: float) -> np.ndarray:
    """(H, W) uint8, 1 within `radius` of a line pixel (Euclidean)."""
    if radius <= 12:  # a small disc: one dilation is quickest
        size = 2 * int(radius) + 1
        disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
        return cv2.dilate(lines, disc)
    distance = cv2.distanceTransform(lines ^ np.uint8(1), cv2.DIST_L2, 3)
    return (distance <= radius).view(np.uint8)


def _region_colours(
    packed: np.ndarray,
    weights: np.ndarray,
    regions: np.ndarray,
    count: int,
    pixels: np.ndarray,
    step: int,
) -> np.ndarray:
    """Packed colours for `pixels`: their region's mean colour, weighted by `weights`.

    The means are taken over every `step`-th pixel in each direction (the colours are smooth at
    that scale), and over `pixels` themselves for the small regions the sample misses.
    """
    height, width = weights.shape
    wanted = np.zeros(count, bool)
    wanted[regions[pixels]] = True
    grid = np.arange(0, height, step)[:, None] * width + np.arange(0, width, step)[None, :]
    members = grid.reshape(-1)
    members = members[wanted[regions[members]]]
    total, means = _weighted_means(packed, weights, regions, count, members)
    missed = wanted & (total == 0)
    if missed.any():
        members = pixels[missed[regions[pixels]]]
        _, means_missed = _weighted_means(packed, weights, regions, count, members)
        means[missed] = means_missed[missed]
    return means.view(np.uint32).reshape(-1)[regions[pixels]]


def _weighted_means(
    packed: np.ndarray, weights: np.ndarray, regions: np.ndarray, count: int, members: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    labels = regions[members]
    weights = weights.reshape(-1)[members].astype(np.float64)
    rgba = packed[members].view(np.uint8).reshape(-1, 4)
    total = np.bincount(labels, weights=weights, minlength=count)
    means = np.zeros((count, 4), np.uint8)
    for channel in range(3):
        sums = np.bincount(labels, weights=weights * rgba[:, channel], minlength=count)
        means[:, channel] = np.clip(sums / np.maximum(total, 1e-9) + 0.5, 0, 255)
    means[:, 3] = 255
    return total, means


def draw_lines(
    colours: np.ndarray, flat_line_art: np.ndarray, darkest: np.ndarray | None = None
) -> np.ndarray:
    """Lay the line art over RGBA colours as ink over paper, in place: (H, W, 4) uint8.

    The flattened line art L is read as ink of coverage 1 - m over white paper, m its darkest
    channel; removing the paper and laying the ink over the colours C gives
    out = L - m * (1 - C) (values in [0, 1]). White paper leaves C untouched, black ink stays
    black, coloured ink keeps its colour, and anti-aliased edges blend smoothly (for grey line
    art this is exactly a multiply blend). `darkest` is `darkest_channel(flat_line_art)`, if
    already at hand. Alpha stays 255.
    """
    for rows in bands(*colours.shape[:2]):
        flat = flat_line_art[rows]
        if flat.ndim == 2:
            line_rgba = cv2.cvtColor(flat, cv2.COLOR_GRAY2RGBA)
        else:
            line_rgba = cv2.cvtColor(flat, cv2.COLOR_RGB2RGBA)
        paper = darkest_channel(flat) if darkest is None else darkest[rows]
        shade = cv2.multiply(cv2.bitwise_not(colours[rows]), cv2.merge([paper] * 4), scale=1 / 255)
        colours[rows] = cv2.subtract(line_rgba, shade)  # alpha: 255 - 0 * m = 255
    return colours
