"""The paper of a line art: is it opaque, and which pixels lie outside the drawing.

A daemon with the `ground` feature clears the paper around the figure itself, by this module's
definition (`colord.daemon.ground`, which takes GAP_PX from here); the plug-ins clear it with
`find_outside` only for a daemon without it.

Standard library only (shipped into both plug-in bundles). Pixels are 8-bit, four bytes a pixel
with alpha last and straight (Krita's BGRA and GIMP's RGBA alike: the colour order does not
matter here). Masks are worked as Python integers holding one byte per pixel, so every step over
all pixels runs in C; only the runs of paper along each row are visited in Python.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections import deque
from typing import NamedTuple

BYTES_PER_PIXEL = 4
# A pixel is ink when it is mostly opaque and one of its channels is darker than this: the
# plug-in's own reading of "a line", used only to tell the drawing from the paper around it.
INK_DARKER_THAN = 200
INK_ALPHA_FROM = 128
OPAQUE_SHARE = 0.5  # a line art at least this opaque hides whatever lies below it
GAP_PX = 2  # gaps in the outline up to twice this wide are closed before finding the outside
_PAPER_RUN = re.compile(b"\x01+")


def is_opaque(data: bytes | bytearray | memoryview) -> bool:
    """True when most of the layer is fully opaque (line art on paper, not on transparency)."""
    # bytes() first: a strided slice of a memoryview (Krita's pixels) is copied byte by byte
    alpha = bytes(data)[BYTES_PER_PIXEL - 1 :: BYTES_PER_PIXEL]
    return bool(alpha) and alpha.count(255) >= OPAQUE_SHARE * len(alpha)


class Outside(NamedTuple):
    """The pixels of a layer that lie outside its drawing, ready to clear."""

    keep: int  # one byte a pixel, 0xFF inside the drawing and 0 outside, as a Python integer
    cleared: int  # pixels outside
    count: int  # pixels in the layer


def find_outside(line_art: bytes | memoryview, width: int, height: int) -> Outside:
    """The paper of `line_art` reachable from the layer's border without crossing a line (gaps
    of up to 2 * GAP_PX closed)."""
    count = width * height
    ones = int.from_bytes(b"\x01" * count, "little")
    ink = _ink(bytes(line_art), ones)
    closed = _dilate(ink, width, ones, GAP_PX)
    paper = (closed ^ ones).to_bytes(count, "little")
    outside = _reachable_from_border(paper, width, height)
    # Grow the outside back over the band the closing took, never onto ink.
    outside = _dilate(outside, width, ones, GAP_PX) & (ink ^ ones)
    return Outside((outside ^ ones) * 255, outside.bit_count(), count)


def clear(result: bytearray, outside: Outside) -> int:
    """Make the pixels of `result` (of the layer `outside` was found in) that lie outside the
    drawing transparent; returns how many pixels were cleared."""
    alpha = int.from_bytes(result[BYTES_PER_PIXEL - 1 :: BYTES_PER_PIXEL], "little")
    alpha &= outside.keep
    result[BYTES_PER_PIXEL - 1 :: BYTES_PER_PIXEL] = alpha.to_bytes(outside.count, "little")
    return outside.cleared


def clear_outside(result: bytearray, line_art: bytes | memoryview, width: int, height: int) -> int:
    """Make the pixels of `result` that lie outside the drawing in `line_art` transparent (both
    width x height); returns how many pixels were cleared."""
    return clear(result, find_outside(line_art, width, height))


def _ink(data: bytes, ones: int) -> int:
    dark = bytes(1 if value < INK_DARKER_THAN else 0 for value in range(256))
    solid = bytes(1 if value >= INK_ALPHA_FROM else 0 for value in range(256))
    colour = 0
    for channel in range(BYTES_PER_PIXEL - 1):
        colour |= int.from_bytes(data[channel::BYTES_PER_PIXEL].translate(dark), "little")
    alpha = int.from_bytes(data[BYTES_PER_PIXEL - 1 :: BYTES_PER_PIXEL].translate(solid), "little")
    return colour & alpha & ones


def _dilate(mask: int, width: int, ones: int, steps: int) -> int:
    """Grow a one-byte-a-pixel mask by `steps` pixels (4-neighbourhood, then diagonals)."""
    row = 8 * width
    for _ in range(steps):
        mask |= (mask << 8) | (mask >> 8)
        mask |= (mask << row) | (mask >> row)
        mask &= ones
    return mask


def _reachable_from_border(paper: bytes, width: int, height: int) -> int:
    """The paper pixels 4-connected to the layer's border, as a one-byte-a-pixel mask."""
    starts: list[list[int]] = []
    ends: list[list[int]] = []
    for y in range(height):
        runs = [match.span() for match in _PAPER_RUN.finditer(paper, y * width, (y + 1) * width)]
        starts.append([start - y * width for start, _ in runs])
        ends.append([end - y * width for _, end in runs])
    seen = [bytearray(len(row)) for row in starts]
    queue: deque[tuple[int, int]] = deque()
    for y in range(height):
        for index, (start, end) in enumerate(zip(starts[y], ends[y], strict=True)):
            if y in (0, height - 1) or start == 0 or end == width:
                seen[y][index] = 1
                queue.append((y, index))
    outside = bytearray(width * height)
    while queue:
        y, index = queue.popleft()
        start, end = starts[y][index], ends[y][index]
        outside[y * width + start : y * width + end] = b"\x01" * (end - start)
        for near in (y - 1, y + 1):
            if not 0 <= near < height:
                continue
            # runs of the next row that overlap [start, end): end > start and start < end
            for other in range(bisect_right(ends[near], start), bisect_left(starts[near], end)):
                if not seen[near][other]:
                    seen[near][other] = 1
                    queue.append((near, other))
    return int.from_bytes(outside, "little")
