"""Pixel facts of the model, owned here for training, evaluation and the daemon alike.

The generator sees images whose sides are multiples of `SIZE_MULTIPLE`, with values in [-1, 1]
(0 -> -1, 255 -> +1); transparent pixels are paper, i.e. white; a line is a pixel darker than
`LINE_THRESHOLD`. numpy and OpenCV only (no torch import): the conversions accept torch tensors
too, through the tensor's own methods.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

SIZE_MULTIPLE = 16  # image sides must be multiples of this: four stride-2 convs per encoder
# 8-bit: a pixel (its darkest channel, on white) below this is a line. High, so that anti-aliased
# or downscaled thin strokes, grey rather than black, still count: drawn line art is binarized
# here for training, and the daemon reads the line mask of a canvas here.
LINE_THRESHOLD = 200


def to_signed(pixels: Any) -> Any:
    """uint8 values -> float in [-1, 1]: numpy arrays as float32, torch tensors as float."""
    if isinstance(pixels, np.ndarray):
        return pixels.astype(np.float32) / np.float32(127.5) - np.float32(1.0)
    return pixels.float() / 127.5 - 1.0


def from_signed(values: Any) -> Any:
    """float in [-1, 1] -> uint8, clamped and rounded (numpy arrays or torch tensors)."""
    if isinstance(values, np.ndarray):
        return np.rint((np.clip(values, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)
    return ((values.clamp(-1, 1) + 1) * 127.5).round().byte()


def on_white(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """uint8 `colour` (H, W) or (H, W, C) over white paper with uint8 `alpha` (H, W): uint8.

    colour * a + 255 * (1 - a), rounded; in uint8 arithmetic, which gives the exact rounded value
    since 255 * (1 - a) is a whole number.
    """
    colour = np.ascontiguousarray(colour)
    alpha = np.ascontiguousarray(alpha.reshape(alpha.shape[:2]))
    if colour.ndim == 3:
        alpha = cv2.merge([alpha] * colour.shape[2])
    painted = cv2.multiply(colour, alpha, scale=1 / 255)
    return cv2.add(painted, cv2.bitwise_not(alpha))
