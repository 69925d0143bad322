"""SVG to pixels for the data-preparation commands: cairosvg (libcairo) rendered on white."""

from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ET

import numpy as np
from PIL import Image

from colord.model.pixels import on_white

SVG_NAMESPACE = "http://www.w3.org/2000/svg"

# CSS lengths in pixels at 96 dpi; a bare number is pixels.
_UNIT_PIXELS = {
    "": 1.0,
    "px": 1.0,
    "pt": 96 / 72,
    "pc": 16.0,
    "mm": 96 / 25.4,
    "cm": 96 / 2.54,
    "in": 96.0,
}
_LENGTH = re.compile(r"^\s*([0-9.eE+-]+)\s*([a-z]*)\s*$")


class SvgRenderError(ValueError):
    """An SVG that cannot be parsed or drawn."""


def render_svg_rgba(svg: bytes, *, width: int, height: int) -> np.ndarray:
    """(height, width, 4) uint8 RGBA (straight alpha) of the SVG scaled to that size."""
    import cairosvg  # imported here: only data preparation needs libcairo

    try:
        png = cairosvg.svg2png(bytestring=svg, output_width=width, output_height=height)
        image = Image.open(io.BytesIO(png))
        image.load()
    except Exception as error:  # cairosvg raises anything from XML, CSS, font and cairo code
        raise SvgRenderError(f"{type(error).__name__}: {error}") from error
    return np.asarray(image.convert("RGBA"))


def render_svg(svg: bytes, *, width: int, height: int) -> np.ndarray:
    """(height, width, 3) uint8 RGB of the SVG scaled to that size, composited on white."""
    rgba = render_svg_rgba(svg, width=width, height=height)
    return on_white(rgba[..., :3], rgba[..., 3])


def _length(text: str | None) -> float | None:
    if not text:
        return None
    match = _LENGTH.match(text)
    if match is None or match.group(2) not in _UNIT_PIXELS:
        return None  # percentages and unknown units: fall back to the viewBox
    try:
        return float(match.group(1)) * _UNIT_PIXELS[match.group(2)]
    except ValueError:
        return None


def intrinsic_size(svg: bytes) -> tuple[float, float]:
    """The (width, height) in CSS pixels that the SVG declares, from width/height or its viewBox."""
    try:
        root = ET.fromstring(svg)
    except ET.ParseError as error:
        raise SvgRenderError(f"not valid XML: {error}") from error
    width, height = _length(root.get("width")), _length(root.get("height"))
    view_box = (root.get("viewBox") or "").replace(",", " ").split()
    if (width is None or height is None) and len(view_box) == 4:
        try:
            box_w, box_h = float(view_box[2]), float(view_box[3])
        except ValueError:
            box_w = box_h = 0.0
        if box_w > 0 and box_h > 0:
            if width is None and height is None:
                width, height = box_w, box_h
            elif width is None:
                width = height * box_w / box_h
            else:
                height = width * box_h / box_w
    if not width or not height or width <= 0 or height <= 0:
        raise SvgRenderError("the SVG declares no usable size (width/height or viewBox)")
    return width, height


def require_renderer() -> None:
    """Fail early, with the fix, when the SVG renderer (cairosvg and libcairo) is missing."""
    try:
        import cairosvg  # noqa: F401
    except (ImportError, OSError) as error:
        raise SvgRenderError(
            "drawing SVG files needs cairosvg and the cairo library: "
            "pip install 'colord[train]' and install libcairo2 (Debian/Ubuntu) or cairo"
            f" ({error})"
        ) from error
