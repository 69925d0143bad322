"""Evaluation metrics (paper §4.2 and more) in a registry that `colord eval` checks names against.

Images are uint8 RGB numpy arrays (H, W, 3). Each metric sees a `MetricInputs` (the outputs of one
method in one setting, with whatever references, ground truths and keypoints that setting has) and
returns a `MetricResult` that names the feature backbone it measured with, so a proxy FID can never
pass for the real one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from colord.training.spair import KeypointPairs

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
    return torch.cat(tensors) / 127.5 - 1.0


class BackbonePooledFeatures:
    """Global average of a feature backbone's deepest map, e.g. ImageNet EfficientNet-Lite0.

    `backbone` follows colord.training.backbones: `.name`, and `forward(image in [-1, 1])` giving a
    list of feature maps, shallow to deep.
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
    ImageNet EfficientNet-Lite0 backbone of colord.training.backbones as a labelled proxy."""
    if inception_weights is not None:
        if not Path(inception_weights).is_file():
            raise FileNotFoundError(f"InceptionV3 weights not found: {inception_weights}")
        return InceptionPool3(Path(inception_weights), device=device)
    cached = cached_inception_weights()
    if cached is not None:
        return InceptionPool3(cached, device=device)
    from colord.training.backbones import load_feature_backbone

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


@dataclass
class MetricInputs:
    """Everything one method produced in one setting, plus the real images FID compares with."""

    samples: list[EvalSample]
    real_images: list[np.ndarray] = field(default_factory=list)
    features: FeatureExtractor | None = None
    sc_psnr_patch_size: int = 11


@dataclass(frozen=True)
class MetricResult:
    metric: str  # registry name, e.g. "fid"
    name: str  # reported name, e.g. "fid_proxy_efficientnet_lite0"
    value: float
    backbone: str  # feature backbone measured with, or "pixels"
    higher_is_better: bool
    count: int  # images (or image pairs) it averages over


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
    "ground_truth" or "keypoints" (on every sample), "features" (a FeatureExtractor)."""

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


def is_applicable(name: str, inputs: MetricInputs) -> bool:
    """Whether `inputs` hold what the metric needs (e.g. the cross setting has no ground truth)."""
    if not inputs.samples:
        return False
    for need in _METRICS[name].requires:
        if need == "features":
            if inputs.features is None or len(inputs.real_images) < 2 or len(inputs.samples) < 2:
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
    return MetricResult(metric, metric, float(np.mean(values)), PIXELS, higher, len(values))


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
