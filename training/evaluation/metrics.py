"""Evaluation metrics (paper §4.2 and more) in a registry that `colord eval` checks names against.

Images are uint8 RGB numpy arrays (H, W, 3). Each metric sees a `MetricInputs` (the outputs of one
method in one setting, with whatever references, ground truths, keypoints, attention and line art
that setting has) and returns a `MetricResult` that names the feature backbone it measured with, so
a proxy FID can never pass for the real one.

Two families measure correspondence where it matters: attention accuracy (does the attention of
each sketch cell peak where its content really lies in the reference?) and region colour accuracy
(does each closed region of flat line art come out in its own colour?).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from colord.model.pixels import to_signed
from colord.training.evaluation.spair import KeypointPairs
from colord.training.samples.correspondence import cell_centres, landing_at_cells

PSNR_CAP_DB = 100.0  # what identical images score, instead of infinity
PIXELS = "pixels"  # the "backbone" of metrics computed on the pixels themselves

# ---------------------------------------------------------------------------------------------
# Pixel metrics


def psnr_from_mse(mse: float, peak: float = 255.0) -> float:
    """PSNR in dB, capped at PSNR_CAP_DB (identical images have MSE 0 and infinite PSNR)."""
    if mse <= 0.0:
        return PSNR_CAP_DB
    return min(PSNR_CAP_DB, 10.0 * math.log10(peak * peak / mse))


def _as_float(image: np.ndarray) -> np.ndarray:
    return np.asarray(image, dtype=np.float64)


def _check_same_shape(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"images must have the same shape, got {a.shape} and {b.shape}")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR of two uint8 images of the same shape."""
    _check_same_shape(a, b)
    return psnr_from_mse(float(np.mean((_as_float(a) - _as_float(b)) ** 2)))


def gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """The normalised 2-D Gaussian window of SSIM (Wang et al. 2004: 11 x 11, sigma 1.5)."""
    offsets = np.arange(size, dtype=np.float64) - (size - 1) / 2
    line = np.exp(-(offsets**2) / (2 * sigma**2))
    window = np.outer(line, line)
    return window / window.sum()


def ssim(
    a: np.ndarray,
    b: np.ndarray,
    *,
    window_size: int = 11,
    sigma: float = 1.5,
    data_range: float = 255.0,
) -> float:
    """Mean SSIM with a Gaussian window over every position where the window fits, per channel.

    Constants K1 = 0.01, K2 = 0.03 as in Wang et al.; grey (H, W) or colour (H, W, C) input.
    """
    _check_same_shape(a, b)
    if min(a.shape[:2]) < window_size:
        raise ValueError(f"SSIM needs images of at least {window_size} px a side, got {a.shape}")
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2

    def planes(image: np.ndarray) -> torch.Tensor:  # (C, 1, H, W) float64
        array = _as_float(image)
        array = array[..., None] if array.ndim == 2 else array
        return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))[:, None]

    x, y = planes(a), planes(b)
    window = torch.from_numpy(gaussian_window(window_size, sigma))[None, None]

    def local_mean(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, window)

    mu_x, mu_y = local_mean(x), local_mean(y)
    var_x = local_mean(x * x) - mu_x**2
    var_y = local_mean(y * y) - mu_y**2
    cov = local_mean(x * y) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
        (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    )
    return float(ssim_map.mean())


def sc_psnr(
    output: np.ndarray, reference: np.ndarray, keypoints: KeypointPairs, patch_size: int = 11
) -> float:
    """Semantically corresponding PSNR (paper §4.2) of one output/reference pair.

    The MSE runs only over `patch_size` x `patch_size` patches centred on corresponding keypoints
    (keypoint k of the output against keypoint k of the reference); pixels of a patch that fall
    outside either image are left out of both.
    """
    if patch_size < 1 or patch_size % 2 == 0:
        raise ValueError(f"patch_size must be a positive odd number, got {patch_size}")
    if len(keypoints) == 0:
        raise ValueError("SC-PSNR needs at least one keypoint pair")
    radius = patch_size // 2
    dy, dx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    offsets = np.stack([dx.ravel(), dy.ravel()], axis=1)  # (P, 2) as (x, y)
    source = np.rint(keypoints.source).astype(np.int64)[:, None, :] + offsets  # (K, P, 2)
    target = np.rint(keypoints.target).astype(np.int64)[:, None, :] + offsets

    def inside(points: np.ndarray, image: np.ndarray) -> np.ndarray:
        height, width = image.shape[:2]
        x, y = points[..., 0], points[..., 1]
        return (x >= 0) & (x < width) & (y >= 0) & (y < height)

    valid = inside(source, output) & inside(target, reference)
    if not valid.any():
        raise ValueError("no keypoint patch lies inside both the output and the reference")
    source, target = source[valid], target[valid]
    output_pixels = _as_float(output)[source[:, 1], source[:, 0]]
    reference_pixels = _as_float(reference)[target[:, 1], target[:, 0]]
    return psnr_from_mse(float(np.mean((output_pixels - reference_pixels) ** 2)))


def ab_histogram(image: np.ndarray, bins: int = 32) -> np.ndarray:
    """Normalised 2-D histogram of CIELAB a*, b* (OpenCV's 8-bit Lab, each axis 0..255)."""
    lab = cv2.cvtColor(np.ascontiguousarray(image, dtype=np.uint8), cv2.COLOR_RGB2LAB)
    histogram, _, _ = np.histogram2d(
        lab[..., 1].ravel(), lab[..., 2].ravel(), bins=bins, range=[[0, 256], [0, 256]]
    )
    return histogram / histogram.sum()


def color_histogram_distance(a: np.ndarray, b: np.ndarray, bins: int = 32) -> float:
    """Hellinger distance of the Lab a*/b* histograms: 0 = same colours, 1 = no colour in common.

    Images may differ in size: only the distribution of chroma is compared, not where it is.
    """
    overlap = np.sqrt(ab_histogram(a, bins) * ab_histogram(b, bins)).sum()
    return float(math.sqrt(max(0.0, 1.0 - overlap)))


# ---------------------------------------------------------------------------------------------
# Colour difference (CIEDE2000) and region colour accuracy

REGION_DELTA_E = 10.0  # a region "has its colour" when its median is within this CIEDE2000
MIN_REGION_FRACTION = 0.001  # regions smaller than this share of the image are not scored ...
MIN_REGION_PIXELS = 16  # ... nor smaller than this many pixels


# sRGB (IEC 61966-2-1): the 8-bit code values' linear light, and linear RGB -> CIE XYZ (D65).
_SRGB_LEVELS = np.arange(256) / 255.0
_SRGB_TO_LINEAR = np.where(
    _SRGB_LEVELS <= 0.04045, _SRGB_LEVELS / 12.92, ((_SRGB_LEVELS + 0.055) / 1.055) ** 2.4
)
_LINEAR_TO_XYZ = np.array(
    [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750],
     [0.0193339, 0.1191920, 0.9503041]]
)  # fmt: skip
_D65_WHITE = np.array([0.95047, 1.0, 1.08883])


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB uint8 (..., 3) -> CIELAB (D65) float64 (..., 3): L* in [0, 100], a* and b* unscaled.

    In numpy with a lookup table: OpenCV's float conversion is over ten times slower, and its
    8-bit one rounds a* and b* to whole units."""
    xyz = _SRGB_TO_LINEAR[np.asarray(rgb, dtype=np.uint8)] @ (_LINEAR_TO_XYZ.T / _D65_WHITE)
    epsilon = (6 / 29) ** 3
    f = np.where(xyz > epsilon, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack(
        [116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])],
        axis=-1,
    )


def ciede2000(lab1: np.ndarray, lab2: np.ndarray) -> np.ndarray:
    """CIEDE2000 colour difference of CIELAB colours (..., 3), k_L = k_C = k_H = 1.

    Follows Sharma, Wu and Dalal (2005), including their conventions for the hue of achromatic
    colours and for the mean hue across the 0/360 degree boundary.
    """
    lab1, lab2 = np.broadcast_arrays(np.asarray(lab1, np.float64), np.asarray(lab2, np.float64))
    l1, a1, b1 = np.moveaxis(lab1, -1, 0)
    l2, a2, b2 = np.moveaxis(lab2, -1, 0)
    c_bar7 = ((np.hypot(a1, b1) + np.hypot(a2, b2)) / 2) ** 7
    g = 0.5 * (1 - np.sqrt(c_bar7 / (c_bar7 + 25.0**7)))
    a1p, a2p = (1 + g) * a1, (1 + g) * a2
    c1p, c2p = np.hypot(a1p, b1), np.hypot(a2p, b2)
    h1p = np.degrees(np.arctan2(b1, a1p)) % 360  # atan2(0, 0) = 0: the achromatic convention
    h2p = np.degrees(np.arctan2(b2, a2p)) % 360
    chromatic = c1p * c2p != 0

    delta_l = l2 - l1
    delta_c = c2p - c1p
    delta_h = h2p - h1p
    delta_h = np.where(
        delta_h > 180, delta_h - 360, np.where(delta_h < -180, delta_h + 360, delta_h)
    )
    delta_h = np.where(chromatic, delta_h, 0.0)
    delta_big_h = 2 * np.sqrt(c1p * c2p) * np.sin(np.radians(delta_h) / 2)

    l_bar = (l1 + l2) / 2
    c_bar = (c1p + c2p) / 2
    h_sum = h1p + h2p
    h_bar = np.where(
        np.abs(h1p - h2p) <= 180, h_sum / 2, np.where(h_sum < 360, h_sum + 360, h_sum - 360) / 2
    )
    h_bar = np.where(chromatic, h_bar, h_sum)
    t = (
        1
        - 0.17 * np.cos(np.radians(h_bar - 30))
        + 0.24 * np.cos(np.radians(2 * h_bar))
        + 0.32 * np.cos(np.radians(3 * h_bar + 6))
        - 0.20 * np.cos(np.radians(4 * h_bar - 63))
    )
    delta_theta = 30 * np.exp(-(((h_bar - 275) / 25) ** 2))
    c_bar7 = c_bar**7
    r_c = 2 * np.sqrt(c_bar7 / (c_bar7 + 25.0**7))
    s_l = 1 + 0.015 * (l_bar - 50) ** 2 / np.sqrt(20 + (l_bar - 50) ** 2)
    s_c = 1 + 0.045 * c_bar
    s_h = 1 + 0.015 * c_bar * t
    r_t = -np.sin(np.radians(2 * delta_theta)) * r_c
    term_l, term_c, term_h = delta_l / s_l, delta_c / s_c, delta_big_h / s_h
    return np.sqrt(term_l**2 + term_c**2 + term_h**2 + r_t * term_c * term_h)


def closed_regions(line_art: np.ndarray) -> np.ndarray:
    """The closed regions of binary line art (lines 0 on 255): (H, W) int32, 1..K, 0 elsewhere.

    A region is a 4-connected component of non-line pixels. Left out (0): the lines; regions
    smaller than MIN_REGION_FRACTION of the image or MIN_REGION_PIXELS; and regions that touch the
    frame, which the lines do not close (the ground around a drawing: most of the picture, and it
    says nothing about whether colours are placed).
    """
    count, labels = cv2.connectedComponents((line_art > 0).astype(np.uint8), connectivity=4)
    areas = np.bincount(labels.ravel(), minlength=count)
    keep = areas >= max(MIN_REGION_PIXELS, MIN_REGION_FRACTION * line_art.size)
    keep[0] = False  # the lines
    for edge in (labels[0], labels[-1], labels[:, 0], labels[:, -1]):
        keep[edge] = False
    renumber = np.zeros(count, np.int32)
    renumber[keep] = np.arange(1, int(keep.sum()) + 1)
    return renumber[labels]


def region_cores(line_art: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """`labels` with the pixels next to a line set to 0: where a region's colour is read, away from
    the anti-aliased, line-tinted edge."""
    away = cv2.erode((line_art > 0).astype(np.uint8), np.ones((3, 3), np.uint8))
    return np.where(away > 0, labels, 0)


def region_medians(image: np.ndarray, labels: np.ndarray, count: int) -> np.ndarray:
    """The per-channel median CIELAB colour of regions 1..count of `labels`: (count, 3), NaN for
    a region with no pixel."""
    medians = np.full((count, 3), np.nan)
    inside = labels > 0
    region_of = labels[inside]
    order = np.argsort(region_of, kind="stable")
    lab = rgb_to_lab(image[inside][order])
    bounds = np.searchsorted(region_of[order], np.arange(1, count + 2))
    for k in range(count):
        if bounds[k + 1] > bounds[k]:
            medians[k] = np.median(lab[bounds[k] : bounds[k + 1]], axis=0)
    return medians


def region_color_errors(
    output: np.ndarray, ground_truth: np.ndarray, line_art: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(CIEDE2000, area) of each scored closed region of `line_art`, whose ground truth is flat:
    the region's median output colour against its median true colour, both read off the line."""
    labels = closed_regions(line_art)
    cores = region_cores(line_art, labels)
    count = int(labels.max())
    delta_e = ciede2000(
        region_medians(output, cores, count), region_medians(ground_truth, cores, count)
    )
    areas = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    scored = np.isfinite(delta_e)  # a region with no pixel off the lines is not scored
    return delta_e[scored], areas[scored].astype(np.float64)


# ---------------------------------------------------------------------------------------------
# Attention accuracy


@dataclass(frozen=True)
class AttentionArgmax:
    """Where each sketch cell's attention peaks, with the grids that say where cells lie."""

    cells: np.ndarray  # (h*w,) int: the row-major reference cell of each sketch cell's argmax
    sketch_grid: tuple[int, int]
    reference_grid: tuple[int, int]


@dataclass(frozen=True)
class AttentionHits:
    hits: int  # sketch cells whose argmax reference cell lies within the radius of the truth
    chance: float  # summed over cells: the share of reference cells within the radius
    cells: int  # sketch cells whose content stays in the frame (the others are not scored)


def attention_hits(
    argmax: AttentionArgmax, correspondence: np.ndarray, radius: float
) -> AttentionHits:
    """Score one image's attention against the true correspondence, in image pixels.

    correspondence: (H, W, 2), for each sketch pixel the (x', y') reference pixel its content lands
    on, NaN where it leaves the frame; the reference has the sketch's size. The truth of a sketch
    cell is the landing place of its centre; its attention is right when the centre of its argmax
    reference cell lies within `radius` pixels of it, whatever the grids' sizes.
    """
    image_hw = correspondence.shape[:2]
    truth = landing_at_cells(
        torch.from_numpy(np.ascontiguousarray(correspondence))[None], argmax.sketch_grid, image_hw
    )[0].numpy()
    valid = np.isfinite(truth).all(axis=1)
    truth = truth[valid].astype(np.float64)
    centres = cell_centres(argmax.reference_grid, image_hw)
    predicted = centres[argmax.cells[valid]]
    hits = ((predicted - truth) ** 2).sum(axis=1) <= radius**2
    grid_h, grid_w = argmax.reference_grid
    chance = centres_within(truth, argmax.reference_grid, image_hw, radius) / (grid_h * grid_w)
    return AttentionHits(int(hits.sum()), float(chance.sum()), int(valid.sum()))


def centres_within(
    points: np.ndarray, grid_hw: tuple[int, int], image_hw: tuple[int, int], radius: float
) -> np.ndarray:
    """(N,) how many cell centres of the grid lie within `radius` px of each of the (N, 2) (x, y)
    points: per grid row, the columns inside the circle's chord form one run, so this costs N x h,
    not N x h x w."""
    (grid_h, grid_w), (image_h, image_w) = grid_hw, image_hw
    step_x, step_y = image_w / grid_w, image_h / grid_h
    row_y = (np.arange(grid_h) + 0.5) * step_y - 0.5
    squared = radius**2 - (row_y[None, :] - points[:, 1:2]) ** 2  # (N, h)
    half = np.sqrt(np.maximum(squared, 0.0))
    offset = step_x / 2 - 0.5  # centre x of column c: c * step_x + offset
    first = np.maximum(np.ceil((points[:, :1] - half - offset) / step_x), 0)
    last = np.minimum(np.floor((points[:, :1] + half - offset) / step_x), grid_w - 1)
    return np.where(squared >= 0, np.maximum(last - first + 1, 0), 0).sum(axis=1)


# ---------------------------------------------------------------------------------------------
# Fréchet distance of features


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of (N, D) features, N >= 2."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"feature statistics need (N >= 2, D) features, got {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix (rounding clipped)."""
    eigenvalues, eigenvectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (eigenvectors * np.sqrt(eigenvalues.clip(min=0.0))) @ eigenvectors.T


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """Fréchet distance of two Gaussians: |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)).

    tr((S1 S2)^(1/2)) is taken as the sum of square roots of the eigenvalues of the symmetric
    S1^(1/2) S2 S1^(1/2), which has the same spectrum; unlike a general sqrtm of S1 S2 this stays
    real and stable when the covariances are singular (fewer images than feature dimensions).
    """
    root1 = _psd_sqrt(np.asarray(sigma1, np.float64))
    middle = root1 @ np.asarray(sigma2, np.float64) @ root1
    cross_trace = np.sqrt(np.linalg.eigvalsh((middle + middle.T) / 2).clip(min=0.0)).sum()
    difference = np.asarray(mu1, np.float64) - np.asarray(mu2, np.float64)
    distance = difference @ difference + np.trace(sigma1) + np.trace(sigma2) - 2 * cross_trace
    return float(max(0.0, distance))


class FeatureExtractor(Protocol):
    """Maps images to one pooled feature vector each."""

    name: str

    def __call__(self, images: Sequence[np.ndarray]) -> np.ndarray:  # (N, D) float
        ...


def images_to_tensor(images: Sequence[np.ndarray], size: int) -> torch.Tensor:
    """uint8 RGB images of any sizes -> (N, 3, size, size) float in [-1, 1] (antialiased resize)."""
    tensors = [
        F.interpolate(
            torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)[None].float(),
            size=(size, size),
            mode="bilinear",
            antialias=True,
            align_corners=False,
        )
        for image in images
    ]
    return to_signed(torch.cat(tensors))


class BackbonePooledFeatures:
    """Global average of a feature backbone's deepest map, e.g. ImageNet EfficientNet-Lite0.

    `backbone` follows colord.training.train.backbones: `.name`, and `forward(image in [-1, 1])`
    giving a list of feature maps, shallow to deep.
    """

    def __init__(
        self, backbone: torch.nn.Module, *, input_size: int = 224, batch_size: int = 16
    ) -> None:
        self.backbone = backbone.eval()
        self.name: str = backbone.name
        self.input_size = input_size
        self.batch_size = batch_size

    @torch.no_grad()
    def __call__(self, images: Sequence[np.ndarray]) -> np.ndarray:
        device = next(self.backbone.parameters()).device
        pooled = []
        for start in range(0, len(images), self.batch_size):
            batch = images_to_tensor(images[start : start + self.batch_size], self.input_size)
            deepest = self.backbone(batch.to(device))[-1]
            pooled.append(deepest.float().mean(dim=(2, 3)).cpu())
        return torch.cat(pooled).double().numpy()


class InceptionPool3:
    """The 2048-d pool3 features of torchvision's ImageNet InceptionV3, on which FID is defined.

    These are torchvision's port of the Inception weights; FID on them is close to, but not the
    same number as, the reference TensorFlow implementation's.
    """

    name = "inception_v3"

    def __init__(self, weights: Path, *, device: str = "cpu", batch_size: int = 16) -> None:
        try:
            from torchvision.models import inception_v3
        except ImportError:
            raise ValueError(
                "InceptionV3 weights were given but torchvision is not installed; "
                "install torchvision to compute the real FID"
            ) from None
        # transform_input=False: the ported weights expect [-1, 1] input, which is what we feed.
        network = inception_v3(weights=None, aux_logits=True, init_weights=False)
        try:
            network.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        except (RuntimeError, OSError, ValueError) as error:
            raise ValueError(f"{weights} is not an InceptionV3 state dict: {error}") from None
        network.fc = torch.nn.Identity()
        self.network = network.eval().to(device)
        self.batch_size = batch_size

    @torch.no_grad()
    def __call__(self, images: Sequence[np.ndarray]) -> np.ndarray:
        device = next(self.network.parameters()).device
        pooled = []
        for start in range(0, len(images), self.batch_size):
            batch = images_to_tensor(images[start : start + self.batch_size], 299)
            pooled.append(self.network(batch.to(device)).cpu())
        return torch.cat(pooled).double().numpy()


def cached_inception_weights() -> Path | None:
    """torchvision's InceptionV3 weights in the torch hub cache, if torchvision and they exist."""
    try:
        from torchvision.models import Inception_V3_Weights
    except ImportError:
        return None
    file_name = Inception_V3_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1]
    path = Path(torch.hub.get_dir()) / "checkpoints" / file_name
    return path if path.is_file() else None


def load_fid_features(
    inception_weights: Path | None = None, *, device: str = "cpu"
) -> FeatureExtractor:
    """InceptionV3 pool3 when its weights are given or cached (never downloaded), else the
    ImageNet EfficientNet-Lite0 backbone of colord.training.train.backbones as a labelled proxy."""
    if inception_weights is not None:
        if not Path(inception_weights).is_file():
            raise FileNotFoundError(f"InceptionV3 weights not found: {inception_weights}")
        return InceptionPool3(Path(inception_weights), device=device)
    cached = cached_inception_weights()
    if cached is not None:
        return InceptionPool3(cached, device=device)
    from colord.training.train.backbones import load_feature_backbone

    backbone = load_feature_backbone(kind="efficientnet_lite0").to(device)
    return BackbonePooledFeatures(backbone)


def fid_name(backbone: str) -> str:
    """`fid` on InceptionV3, `fid_proxy_<backbone>` on anything else."""
    return "fid" if backbone == InceptionPool3.name else f"fid_proxy_{backbone}"


# ---------------------------------------------------------------------------------------------
# The registry


@dataclass
class EvalSample:
    """One colourised image with what it can be measured against."""

    output: np.ndarray
    reference: np.ndarray
    ground_truth: np.ndarray | None = None
    keypoints: KeypointPairs | None = None  # output (source) <-> reference (target)
    # (H, W, 2): for each output pixel, the reference pixel its content lands on (NaN: none)
    correspondence: np.ndarray | None = None
    attention: AttentionArgmax | None = None  # the model's own attention, when it has one
    # Binary line art whose closed regions are each flat (one colour) in the ground truth
    flat_line_art: np.ndarray | None = None


@dataclass
class MetricInputs:
    """Everything one method produced in one setting, plus the real images FID compares with."""

    samples: list[EvalSample]
    real_images: list[np.ndarray] = field(default_factory=list)
    features: FeatureExtractor | None = None
    sc_psnr_patch_size: int = 11
    # What several metrics derive from the same samples, computed once (see `_region_errors`)
    cache: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class MetricResult:
    metric: str  # registry name, e.g. "fid"
    name: str  # reported name, e.g. "fid_proxy_efficientnet_lite0"
    value: float
    backbone: str  # feature backbone measured with, or "pixels"
    higher_is_better: bool
    count: int  # images (or image pairs, cells, regions) it averages over
    chance: float | None = None  # what a uniformly random guess scores, where that is defined
    # Per image (or image pair): (numerator, weight), value = sum of numerators / sum of weights;
    # what `bootstrap` resamples. Empty where the value does not split by image (FID).
    per_image: tuple[tuple[float, float], ...] = field(default=(), repr=False)


BOOTSTRAP_RESAMPLES = 2000
CONFIDENCE = 0.95


def bootstrap(
    result: MetricResult, *, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> np.ndarray | None:
    """`resamples` values of the metric over the images drawn again with replacement (None: the
    value does not split by image, or one image). The same `seed` draws the same images for every
    result over the same images, so two models' draws pair up image by image."""
    if len(result.per_image) < 2:
        return None
    parts = np.asarray(result.per_image, dtype=np.float64)
    draws = np.random.default_rng(seed).integers(0, len(parts), (resamples, len(parts)))
    with np.errstate(invalid="ignore", divide="ignore"):
        return parts[draws, 0].sum(axis=1) / parts[draws, 1].sum(axis=1)


def interval(values: np.ndarray | None, level: float = CONFIDENCE) -> tuple[float, float] | None:
    """The percentile interval holding `level` of bootstrap `values` (draws of 0/0 left out)."""
    if values is None or np.isnan(values).all():
        return None
    tail = (1 - level) / 2 * 100
    low, high = np.nanpercentile(values, [tail, 100 - tail])
    return float(low), float(high)


@dataclass(frozen=True)
class Metric:
    name: str
    compute: Callable[[MetricInputs], MetricResult]
    requires: tuple[str, ...]  # sample fields / inputs that must be present


_METRICS: dict[str, Metric] = {}


def register_metric(
    *requires: str,
) -> Callable[[Callable[[MetricInputs], MetricResult]], Callable[[MetricInputs], MetricResult]]:
    """Register a metric under its function name; `requires` names what it cannot run without:
    "ground_truth", "keypoints", "correspondence" or "attention" (on every sample), "flat_line_art"
    (on at least one sample: the metric reads only those), "features" (a FeatureExtractor)."""

    def decorate(
        compute: Callable[[MetricInputs], MetricResult],
    ) -> Callable[[MetricInputs], MetricResult]:
        _METRICS[compute.__name__] = Metric(compute.__name__, compute, requires)
        return compute

    return decorate


def list_metrics() -> list[str]:
    return sorted(_METRICS)


def is_valid_metric(name: str) -> bool:
    return name in _METRICS


_ON_SOME_SAMPLES = frozenset({"flat_line_art"})  # needs met by some samples, not all


def is_applicable(name: str, inputs: MetricInputs) -> bool:
    """Whether `inputs` hold what the metric needs (e.g. the cross setting has no ground truth)."""
    if not inputs.samples:
        return False
    for need in _METRICS[name].requires:
        if need == "features":
            if inputs.features is None or len(inputs.real_images) < 2 or len(inputs.samples) < 2:
                return False
        elif need in _ON_SOME_SAMPLES:
            if all(getattr(sample, need) is None for sample in inputs.samples):
                return False
        elif any(getattr(sample, need) is None for sample in inputs.samples):
            return False
    return True


def calc_metrics(names: Sequence[str], inputs: MetricInputs) -> list[MetricResult]:
    """Run the named metrics that apply to `inputs`, in the order given."""
    unknown = [name for name in names if not is_valid_metric(name)]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; known: {', '.join(list_metrics())}")
    return [_METRICS[name].compute(inputs) for name in names if is_applicable(name, inputs)]


def _mean_over_samples(
    metric: str, value_of: Callable[[EvalSample], float], inputs: MetricInputs, higher: bool
) -> MetricResult:
    values = [value_of(sample) for sample in inputs.samples]
    per_image = tuple((float(value), 1.0) for value in values)
    return MetricResult(
        metric, metric, float(np.mean(values)), PIXELS, higher, len(values), None, per_image
    )


@register_metric("features")
def fid(inputs: MetricInputs) -> MetricResult:
    """Fréchet distance between the outputs' and the real images' pooled features."""
    assert inputs.features is not None
    real = feature_statistics(inputs.features(inputs.real_images))
    fake = feature_statistics(inputs.features([sample.output for sample in inputs.samples]))
    backbone = inputs.features.name
    distance = frechet_distance(*fake, *real)
    return MetricResult("fid", fid_name(backbone), distance, backbone, False, len(inputs.samples))


@register_metric("keypoints")
def sc_psnr_db(inputs: MetricInputs) -> MetricResult:
    """SC-PSNR (dB) between output and reference around corresponding keypoints, mean over pairs."""
    return _mean_over_samples(
        "sc_psnr_db",
        lambda s: sc_psnr(s.output, s.reference, s.keypoints, inputs.sc_psnr_patch_size),
        inputs,
        higher=True,
    )


@register_metric("ground_truth")
def psnr_db(inputs: MetricInputs) -> MetricResult:
    """PSNR (dB) of the output against the ground truth, mean over images."""
    return _mean_over_samples(
        "psnr_db", lambda s: psnr(s.output, s.ground_truth), inputs, higher=True
    )


@register_metric("ground_truth")
def ssim_gt(inputs: MetricInputs) -> MetricResult:
    """SSIM of the output against the ground truth, mean over images."""
    return _mean_over_samples(
        "ssim_gt", lambda s: ssim(s.output, s.ground_truth), inputs, higher=True
    )


@register_metric()
def color_distance(inputs: MetricInputs) -> MetricResult:
    """Hellinger distance of Lab a*/b* histograms of output and reference, mean over images."""
    return _mean_over_samples(
        "color_distance",
        lambda s: color_histogram_distance(s.output, s.reference),
        inputs,
        higher=False,
    )


def _attention_accuracy(metric: str, inputs: MetricInputs, radius: float) -> MetricResult:
    """The share of sketch cells, over all images, whose attention argmax lies within `radius`
    pixels of the truth, with the chance level of a uniformly random argmax beside it."""
    hits = cells = 0
    chance = 0.0
    per_image = []
    for sample in inputs.samples:
        assert sample.attention is not None and sample.correspondence is not None
        scored = attention_hits(sample.attention, sample.correspondence, radius)
        hits, cells, chance = hits + scored.hits, cells + scored.cells, chance + scored.chance
        per_image.append((float(scored.hits), float(scored.cells)))
    cells_or_one = max(cells, 1)
    return MetricResult(
        metric,
        metric,
        hits / cells_or_one,
        PIXELS,
        True,
        cells,
        chance / cells_or_one,
        tuple(per_image),
    )


@register_metric("attention", "correspondence")
def attention_acc_16px(inputs: MetricInputs) -> MetricResult:
    """Share of sketch cells whose attention argmax lies within 16 px of the true correspondence."""
    return _attention_accuracy("attention_acc_16px", inputs, 16.0)


@register_metric("attention", "correspondence")
def attention_acc_32px(inputs: MetricInputs) -> MetricResult:
    """Share of sketch cells whose attention argmax lies within 32 px of the true correspondence."""
    return _attention_accuracy("attention_acc_32px", inputs, 32.0)


def _region_errors(inputs: MetricInputs) -> list[tuple[np.ndarray, np.ndarray]]:
    """(CIEDE2000, area) of the scored regions of each sample with flat line art."""
    if "region_errors" not in inputs.cache:
        inputs.cache["region_errors"] = [
            region_color_errors(sample.output, sample.ground_truth, sample.flat_line_art)
            for sample in inputs.samples
            if sample.flat_line_art is not None and sample.ground_truth is not None
        ]
    return inputs.cache["region_errors"]


def _region_result(
    metric: str,
    per_region: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
    inputs: MetricInputs,
    higher: bool,
) -> MetricResult:
    """A ratio over the regions of all samples: `per_region(delta_e, area)` gives each region's
    (numerator, weight)."""
    parts = [per_region(delta_e, areas) for delta_e, areas in _region_errors(inputs)]
    per_image = tuple((float(np.sum(num)), float(np.sum(weight))) for num, weight in parts)
    numerator = np.concatenate([num for num, _ in parts])
    weight = np.concatenate([w for _, w in parts])
    value = numerator.sum() / weight.sum() if len(weight) else math.nan
    return MetricResult(metric, metric, float(value), PIXELS, higher, len(weight), None, per_image)


@register_metric("ground_truth", "flat_line_art")
def region_acc_de10(inputs: MetricInputs) -> MetricResult:
    """Share of the closed regions of flat line art whose median output colour lies within
    CIEDE2000 10 of their true colour."""
    return _region_result(
        "region_acc_de10",
        lambda de, _: (de <= REGION_DELTA_E, np.ones_like(de)),
        inputs,
        higher=True,
    )


@register_metric("ground_truth", "flat_line_art")
def region_mean_de(inputs: MetricInputs) -> MetricResult:
    """Mean CIEDE2000 of the closed regions' median colours against their true colours."""
    return _region_result(
        "region_mean_de", lambda de, _: (de, np.ones_like(de)), inputs, higher=False
    )


@register_metric("ground_truth", "flat_line_art")
def region_mean_de_area(inputs: MetricInputs) -> MetricResult:
    """As region_mean_de, each region weighted by its area."""
    return _region_result(
        "region_mean_de_area", lambda de, area: (de * area, area), inputs, higher=False
    )
