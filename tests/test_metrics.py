"""Metrics: FID, SC-PSNR, PSNR, SSIM, colour distance, and the registry around them."""

from __future__ import annotations

import math
from importlib.util import find_spec

import numpy as np
import pytest
from capabilities import EXTRAS, missing

from colord.training.evaluation import metrics
from colord.training.evaluation.spair import KeypointPairs
from colord.training.train.backbones import BackboneError, load_feature_backbone


def random_image(rng: np.random.Generator, height: int = 32, width: int = 32) -> np.ndarray:
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def smooth_image(rng: np.random.Generator, size: int = 48) -> np.ndarray:
    """A picture with structure: a few coloured discs on a coloured background."""
    image = np.empty((size, size, 3), np.uint8)
    image[:] = rng.integers(0, 256, 3)
    ys, xs = np.mgrid[0:size, 0:size]
    for _ in range(4):
        cx, cy = rng.integers(0, size, 2).tolist()
        radius = int(rng.integers(4, size // 3))
        image[(xs - cx) ** 2 + (ys - cy) ** 2 < radius**2] = rng.integers(0, 256, 3)
    return image


def add_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    noisy = image.astype(np.float64) + rng.normal(0.0, sigma, image.shape)
    return noisy.clip(0, 255).astype(np.uint8)


# --- Fréchet distance ------------------------------------------------------------------------


def test_frechet_distance_of_a_set_against_itself_is_zero_even_with_singular_covariance():
    features = np.random.default_rng(0).normal(size=(10, 64))  # 10 samples, 64 dims: singular
    statistics = metrics.feature_statistics(features)
    assert metrics.frechet_distance(*statistics, *statistics) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_matches_the_closed_form_for_diagonal_gaussians():
    mu1, mu2 = np.array([0.0, 1.0]), np.array([3.0, 1.0])
    sigma1, sigma2 = np.diag([4.0, 1.0]), np.diag([1.0, 9.0])
    # |d|^2 + sum (sqrt(a) - sqrt(b))^2 = 9 + (2 - 1)^2 + (1 - 3)^2
    assert metrics.frechet_distance(mu1, sigma1, mu2, sigma2) == pytest.approx(14.0)


def test_frechet_distance_grows_with_added_noise():
    rng = np.random.default_rng(1)
    features = rng.normal(size=(200, 8))
    base = metrics.feature_statistics(features)
    distances = [
        metrics.frechet_distance(
            *metrics.feature_statistics(features + rng.normal(0, s, features.shape)), *base
        )
        for s in (0.1, 0.5, 2.0)
    ]
    assert distances[0] < distances[1] < distances[2]


def test_fid_on_the_real_backbone_is_zero_for_the_same_set_and_grows_with_noise():
    try:
        backbone = load_feature_backbone(kind="efficientnet_lite0")
    except BackboneError as error:  # the weights package is an optional extra
        missing(f"EfficientNet-Lite0 backbone unavailable: {error}", EXTRAS)
    extractor = metrics.BackbonePooledFeatures(backbone, input_size=64)
    rng = np.random.default_rng(2)
    real = [smooth_image(rng) for _ in range(6)]

    def fid_of(outputs):
        samples = [metrics.EvalSample(output=o, reference=o) for o in outputs]
        inputs = metrics.MetricInputs(samples, real_images=real, features=extractor)
        (result,) = metrics.calc_metrics(["fid"], inputs)
        return result

    same = fid_of(real)
    assert same.name == "fid_proxy_efficientnet_lite0"
    assert same.backbone == "efficientnet_lite0"
    assert same.value == pytest.approx(0.0, abs=1e-6)
    light = fid_of([add_noise(image, 20, rng) for image in real]).value
    heavy = fid_of([add_noise(image, 80, rng) for image in real]).value
    assert 0 < light < heavy


def test_fid_name_says_when_it_is_a_proxy():
    assert metrics.fid_name("inception_v3") == "fid"
    assert metrics.fid_name("efficientnet_lite0") == "fid_proxy_efficientnet_lite0"


# --- PSNR and SC-PSNR ------------------------------------------------------------------------


def test_psnr_of_identical_images_is_capped_and_known_for_a_constant_error():
    image = random_image(np.random.default_rng(3))
    assert metrics.psnr(image, image) == metrics.PSNR_CAP_DB
    shifted = image.astype(np.int16)
    shifted = np.where(shifted < 128, shifted + 10, shifted - 10).astype(np.uint8)  # |error| = 10
    assert metrics.psnr(image, shifted) == pytest.approx(10 * math.log10(255**2 / 100))


def grid_keypoints(size: int, step: int = 8) -> np.ndarray:
    coords = np.arange(step // 2, size, step, dtype=np.float64)
    return np.stack(np.meshgrid(coords, coords), axis=-1).reshape(-1, 2)


def test_sc_psnr_on_identical_images_is_capped_and_drops_with_misaligned_keypoints():
    rng = np.random.default_rng(4)
    image = smooth_image(rng, 64)
    points = grid_keypoints(64)
    aligned = metrics.sc_psnr(image, image, KeypointPairs(points, points))
    assert aligned == metrics.PSNR_CAP_DB
    scores = [
        metrics.sc_psnr(image, image, KeypointPairs(points, points + shift))
        for shift in ([3.0, 0.0], [12.0, 7.0])
    ]
    assert metrics.PSNR_CAP_DB > scores[0] > scores[1]


def test_sc_psnr_follows_the_correspondence_not_the_pixel_grid():
    """A reference that is the output shifted by 5 px scores perfectly with shifted keypoints."""
    image = smooth_image(np.random.default_rng(5), 64)
    reference = np.roll(image, shift=(0, 5), axis=(0, 1))
    points = grid_keypoints(64)
    assert metrics.sc_psnr(
        image, reference, KeypointPairs(points, points + np.array([5.0, 0.0]))
    ) == (metrics.PSNR_CAP_DB)
    assert metrics.sc_psnr(image, reference, KeypointPairs(points, points)) < 40


def test_sc_psnr_uses_only_pixels_near_the_keypoints():
    rng = np.random.default_rng(6)
    output, reference = random_image(rng, 40, 40), random_image(rng, 40, 40)
    reference[15:26, 15:26] = output[5:16, 5:16]  # the 11x11 patch around (10,10) -> (20,20)
    pairs = KeypointPairs(np.array([[10.0, 10.0]]), np.array([[20.0, 20.0]]))
    assert metrics.sc_psnr(output, reference, pairs, patch_size=11) == metrics.PSNR_CAP_DB
    assert metrics.sc_psnr(output, reference, pairs, patch_size=13) < 30


def test_sc_psnr_rejects_bad_patches_and_keypoints_outside_both_images():
    image = random_image(np.random.default_rng(7))
    points = np.array([[5.0, 5.0]])
    with pytest.raises(ValueError, match="odd"):
        metrics.sc_psnr(image, image, KeypointPairs(points, points), patch_size=4)
    with pytest.raises(ValueError, match="inside both"):
        metrics.sc_psnr(image, image, KeypointPairs(points + 100, points), patch_size=3)


# --- SSIM ------------------------------------------------------------------------------------


def test_ssim_matches_a_hand_computed_single_window():
    """On 11 x 11 images the window fits once: SSIM is the Gaussian-weighted formula itself."""
    rng = np.random.default_rng(8)
    a = rng.integers(0, 256, (11, 11)).astype(np.float64)
    b = (0.6 * a + rng.integers(0, 100, (11, 11))).round()
    weights = metrics.gaussian_window(11, 1.5)
    mu_a, mu_b = (weights * a).sum(), (weights * b).sum()
    var_a = (weights * (a - mu_a) ** 2).sum()
    var_b = (weights * (b - mu_b) ** 2).sum()
    cov = (weights * (a - mu_a) * (b - mu_b)).sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    expected = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    )
    assert metrics.ssim(a.astype(np.uint8), b.astype(np.uint8)) == pytest.approx(expected, 1e-9)


def test_ssim_of_constant_images_is_the_luminance_term():
    a, b = np.full((16, 16, 3), 100, np.uint8), np.full((16, 16, 3), 150, np.uint8)
    c1 = (0.01 * 255) ** 2
    expected = (2 * 100 * 150 + c1) / (100**2 + 150**2 + c1)
    assert metrics.ssim(a, b) == pytest.approx(expected)


def test_ssim_is_one_for_identical_images_and_falls_with_noise():
    rng = np.random.default_rng(9)
    image = smooth_image(rng)
    assert metrics.ssim(image, image) == pytest.approx(1.0)
    assert (
        1.0
        > metrics.ssim(image, add_noise(image, 10, rng))
        > metrics.ssim(image, add_noise(image, 60, rng))
    )


def test_ssim_rejects_images_smaller_than_the_window_or_of_different_shapes():
    with pytest.raises(ValueError, match="at least 11"):
        metrics.ssim(np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="same shape"):
        metrics.ssim(np.zeros((16, 16), np.uint8), np.zeros((16, 17), np.uint8))


# --- colour faithfulness ---------------------------------------------------------------------


def test_color_distance_is_zero_for_the_same_palette_and_largest_for_disjoint_ones():
    red = np.zeros((20, 20, 3), np.uint8)
    red[..., 0] = 220
    blue = np.zeros((20, 20, 3), np.uint8)
    blue[..., 2] = 220
    shuffled = np.random.default_rng(10).permutation(red.reshape(-1, 3)).reshape(20, 20, 3)
    half = red.copy()
    half[:10] = blue[:10]
    assert metrics.color_histogram_distance(red, shuffled) == pytest.approx(0.0, abs=1e-12)
    assert metrics.color_histogram_distance(red, blue) == pytest.approx(1.0)
    assert 0 < metrics.color_histogram_distance(red, half) < 1


# --- registry --------------------------------------------------------------------------------


def test_registry_skips_metrics_whose_inputs_are_missing_and_rejects_unknown_names():
    rng = np.random.default_rng(11)
    image = smooth_image(rng)
    points = grid_keypoints(48)
    with_truth = metrics.MetricInputs(
        [
            metrics.EvalSample(
                image, image, ground_truth=image, keypoints=KeypointPairs(points, points)
            )
        ]
    )
    without = metrics.MetricInputs([metrics.EvalSample(image, image)])
    names = ["fid", "sc_psnr_db", "psnr_db", "ssim_gt", "color_distance"]
    assert set(names) <= set(metrics.list_metrics())
    full = {r.name: r for r in metrics.calc_metrics(names, with_truth)}
    assert set(full) == {"sc_psnr_db", "psnr_db", "ssim_gt", "color_distance"}  # no features
    assert full["psnr_db"].value == metrics.PSNR_CAP_DB and full["psnr_db"].backbone == "pixels"
    assert full["ssim_gt"].value == pytest.approx(1.0) and full["ssim_gt"].higher_is_better
    assert [r.name for r in metrics.calc_metrics(names, without)] == ["color_distance"]
    with pytest.raises(ValueError, match="unknown metric"):
        metrics.calc_metrics(["fid50k"], without)


def test_fid_features_name_the_missing_piece_for_the_real_inception(tmp_path):
    with pytest.raises(FileNotFoundError, match="InceptionV3 weights not found"):
        metrics.load_fid_features(tmp_path / "missing.pth")
    weights = tmp_path / "inception.pth"
    weights.write_bytes(b"not a state dict")
    expected = "not an InceptionV3 state dict" if find_spec("torchvision") else "torchvision"
    with pytest.raises(ValueError, match=expected):
        metrics.load_fid_features(weights)
