"""Krita's pixel facts: the colour space sent as it is, and canvas rectangles."""

from __future__ import annotations

from typing import NamedTuple

# Krita's 8-bit RGBA with an sRGB tone curve: its pixelData is BGRA8, sent to the daemon as is.
SRGB8 = ("RGBA", "U8", "sRGB-elle-V2-srgbtrc.icc")
WIRE_FORMAT = "BGRA8"


class Rect(NamedTuple):
    x: int
    y: int
    width: int
    height: int


def intersect(a: Rect, b: Rect) -> Rect | None:
    """The overlap of two rectangles, or None when they do not overlap."""
    left, top = max(a.x, b.x), max(a.y, b.y)
    right = min(a.x + a.width, b.x + b.width)
    bottom = min(a.y + a.height, b.y + b.height)
    if right <= left or bottom <= top:
        return None
    return Rect(left, top, right - left, bottom - top)


def is_srgb8(model: str, depth: str, profile: str) -> bool:
    """True when Krita's pixelData in this colour space already is 8-bit sRGB BGRA."""
    name = profile.lower()
    return model == "RGBA" and depth == "U8" and ("srgbtrc" in name or name == "srgb built-in")
