"""The paper around the figure: the part of a canvas that lies outside the drawing.

A request's `ground: "transparent"` clears it in the colour layer, so the layer holds only the
figure. The definition is the one the plug-ins used before the daemon did this (and still use
with a daemon that lacks it, `colord_paper.find_outside`): the paper reachable from the canvas's
border without crossing a line, with gaps in the outline up to `2 * GAP_PX` pixels closed; the
outside never covers a line pixel. The engine's own line mask is the ink (numpy and OpenCV only).
"""

from __future__ import annotations

import cv2
import numpy as np

from colord.plugins.wire.colord_paper import GAP_PX

# GAP_PX steps of growing by a 3x3 square close openings up to 2 * GAP_PX px wide
_CLOSING = np.ones((2 * GAP_PX + 1, 2 * GAP_PX + 1), np.uint8)


def outside_drawing(lines: np.ndarray) -> np.ndarray:
    """(H, W) bool, True on the paper around the figure of the (H, W) uint8 line mask (1 on
    lines): paper 4-connected to the canvas border once the outline's gaps are closed, grown back
    over the band the closing took, never onto a line."""
    paper = (cv2.dilate(lines, _CLOSING) == 0).view(np.uint8)
    count, areas = cv2.connectedComponents(paper, connectivity=4)
    if count == 1:
        return np.zeros(lines.shape, bool)  # no paper left: no outside
    touches = np.zeros(count, bool)
    for edge in (areas[0], areas[-1], areas[:, 0], areas[:, -1]):
        touches[edge] = True
    touches[0] = False  # label 0: the closed lines
    outside = touches[areas].view(np.uint8)
    grown = cv2.dilate(outside, _CLOSING)
    return grown.view(bool) & (lines == 0)


def clear_outside(image: np.ndarray, lines: np.ndarray) -> None:
    """In place: the (H, W, 4) RGBA `image`'s pixels outside the drawing made transparent (alpha
    0; colours kept, as the plug-ins did)."""
    image[..., 3][outside_drawing(lines)] = 0
