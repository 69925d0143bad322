"""Line extraction with XDoG (Winnemöller et al. 2012), the sketch extractor of the training data.

The image is blurred with σ = 0.7 first, which suppresses the superfluous edges XDoG finds in
texture and noise (paper, supplement A.3), then the difference of two Gaussians of its luminance
is thresholded. In the form used here, D = G_σ − τ·G_kσ, a pixel becomes a line where D < ε:
that happens in a thin band on the dark side of each edge, while a flat area of any tone keeps
D = (1 − τ)·I ≥ 0 and stays white.
"""

from __future__ import annotations

import cv2
import numpy as np

from colord.model.pixels import LINE_THRESHOLD

LINE = 0
BACKGROUND = 255


def _gaussian(image: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(
        image, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REPLICATE
    )


def xdog(
    image: np.ndarray,
    *,
    blur_sigma: float = 0.7,
    sigma: float = 0.8,
    k: float = 1.6,
    tau: float = 0.99,
    epsilon: float = -0.005,
) -> np.ndarray:
    """Binary line art of a colour picture: lines 0 on a 255 background, (H, W) uint8.

    image: (H, W, 3) uint8 RGB (or (H, W) uint8 grey). `blur_sigma` is the pre-blur in pixels
    (0 disables it); `sigma` and `k` set the two Gaussians (k·sigma is the wider one, in pixels);
    `tau` < 1 weights the wider one; `epsilon` is the threshold on D, measured on a [0, 1] luminance
    scale (slightly negative so that compression noise in flat dark areas draws no lines). Larger
    `sigma` draws thicker lines; larger `tau` or `epsilon` draws more of the weak edges.
    """
    grey = _luminance(image)
    if blur_sigma > 0:
        grey = _gaussian(grey, blur_sigma)
    difference = _gaussian(grey, sigma) - tau * _gaussian(grey, k * sigma)
    return np.where(difference < epsilon, LINE, BACKGROUND).astype(np.uint8)


def binarize_line_art(line_art: np.ndarray, *, threshold: int = LINE_THRESHOLD) -> np.ndarray:
    """Bring drawn line art (dark strokes on a light background, grey uint8) to XDoG's binary form.

    The threshold is the model's line threshold (see colord.model.pixels), so a drawing counts
    as lines here what the daemon counts as lines at inference.
    """
    if line_art.ndim != 2 or line_art.dtype != np.uint8:
        raise ValueError(f"line art must be (H, W) uint8, got {line_art.shape} {line_art.dtype}")
    return np.where(line_art < threshold, LINE, BACKGROUND).astype(np.uint8)


def _luminance(image: np.ndarray) -> np.ndarray:
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    elif image.ndim != 2:
        raise ValueError(f"image must be (H, W, 3) RGB or (H, W) grey, got shape {image.shape}")
    return image.astype(np.float32) / 255.0
