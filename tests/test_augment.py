"""a(·) colour jitter, s(·) thin-plate-spline warp with its dense correspondence, and the
correspondence brought down to the attention grid."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from colord.training.samples.augment import (
    ThinPlateSpline,
    control_grid,
    jitter_colors,
    random_thin_plate_spline,
    thin_plate_spline_warp,
    warp_with_spline,
)
from colord.training.samples.correspondence import correspondence_to_grid


def coordinate_image(height: int, width: int) -> np.ndarray:
    """(H, W, 2) float32: each pixel holds its own (x, y)."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    return np.stack([xs, ys], axis=-1)


def read_at(image: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Bilinear read of `image` at (H, W, 2) (x, y) positions."""
    return cv2.remap(image, positions[..., 0], positions[..., 1], cv2.INTER_LINEAR)


# ---- a(·)


def test_jitter_offsets_lie_in_range_and_shift_each_channel() -> None:
    image = np.full((8, 8, 3), 128, np.uint8)
    all_offsets = []
    for seed in range(200):
        jittered, offsets = jitter_colors(image, np.random.default_rng(seed))
        assert offsets.shape == (3,)
        np.testing.assert_array_equal(jittered, np.broadcast_to(np.rint(128 + offsets), (8, 8, 3)))
        all_offsets.append(offsets)
    all_offsets = np.array(all_offsets)
    assert all_offsets.min() >= -50 and all_offsets.max() <= 50
    # drawn from the whole range, independently per channel
    assert all_offsets.min() < -40 and all_offsets.max() > 40
    assert abs(np.corrcoef(all_offsets.T)[0, 1]) < 0.3


def test_jitter_clips_to_the_byte_range() -> None:
    image = np.zeros((4, 4, 3), np.uint8)
    image[:2] = 255
    jittered, offsets = jitter_colors(image, np.random.default_rng(3))
    assert jittered.dtype == np.uint8
    for channel, offset in enumerate(offsets):
        bright, dark = jittered[0, 0, channel], jittered[3, 3, channel]
        assert bright == (255 if offset > 0 else round(255 + offset))
        assert dark == (0 if offset < 0 else round(offset))


def test_jitter_is_reproducible_and_rejects_non_rgb() -> None:
    image = np.random.default_rng(0).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    first = jitter_colors(image, np.random.default_rng(7))
    second = jitter_colors(image, np.random.default_rng(7))
    np.testing.assert_array_equal(first[0], second[0])
    with pytest.raises(ValueError, match="uint8"):
        jitter_colors(image[..., :1], np.random.default_rng(0))


# ---- the thin-plate spline


def test_spline_interpolates_its_control_points_and_keeps_affine_maps() -> None:
    rng = np.random.default_rng(0)
    points = control_grid(4)
    targets = points + rng.uniform(-0.2, 0.2, points.shape)
    spline = ThinPlateSpline.fit(points, targets)
    np.testing.assert_allclose(spline(points), targets, atol=1e-9)

    affine = np.array([[1.1, 0.2], [-0.1, 0.9]])
    shifted = ThinPlateSpline.fit(points, points @ affine + [0.3, -0.2])
    probes = rng.uniform(-1, 1, (50, 2))
    np.testing.assert_allclose(shifted(probes), probes @ affine + [0.3, -0.2], atol=1e-9)


# ---- s(·)


@pytest.mark.parametrize(("height", "width", "seed"), [(96, 128, 0), (128, 80, 1), (64, 64, 2)])
def test_correspondence_reads_back_the_original_coordinates(height, width, seed) -> None:
    coordinates = coordinate_image(height, width)
    warped, correspondence = thin_plate_spline_warp(
        coordinates, np.random.default_rng(seed), border_value=-1000
    )
    assert correspondence.shape == (height, width, 2)
    assert correspondence.dtype == np.float32
    defined = ~np.isnan(correspondence).any(axis=-1)
    assert 0.7 < defined.mean() < 1.0  # a real warp: most content stays, some leaves the frame
    # a warp that really moves things
    shift = np.abs(correspondence - coordinates)[defined].max()
    assert shift > 2
    # reading the warped coordinate image where each pixel landed gives that pixel back; a
    # margin keeps the bilinear read clear of the fill value beyond the source's edge
    read_back = read_at(warped, np.nan_to_num(correspondence, nan=-1))
    inner = np.zeros_like(defined)
    inner[3:-3, 3:-3] = True
    error = np.abs(read_back - coordinates).max(axis=-1)[defined & inner]
    assert error.max() < 0.25


def test_correspondence_is_nan_exactly_where_content_leaves_the_frame() -> None:
    height, width = 80, 96
    spline = ThinPlateSpline.fit(control_grid(3), control_grid(3) * 0.8)  # zoom in 1.25x
    image = np.zeros((height, width, 3), np.uint8)
    _, correspondence = warp_with_spline(image, spline)
    expected = (coordinate_image(height, width) - [(width - 1) / 2, (height - 1) / 2]) * 1.25 + [
        (width - 1) / 2,
        (height - 1) / 2,
    ]
    inside = (
        (expected[..., 0] >= 0)
        & (expected[..., 0] <= width - 1)
        & (expected[..., 1] >= 0)
        & (expected[..., 1] <= height - 1)
    )
    defined = ~np.isnan(correspondence[..., 0])
    # pixels exactly on the frame's edge may fall either side by rounding
    assert (defined != inside).sum() <= 2 * (height + width)
    np.testing.assert_allclose(correspondence[defined], expected[defined], atol=0.05)
    assert np.isnan(correspondence[~defined]).all()


def test_zero_displacement_gives_the_identity() -> None:
    image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    spline = random_thin_plate_spline(np.random.default_rng(0), max_displacement=0.0)
    warped, correspondence = warp_with_spline(image, spline)
    np.testing.assert_array_equal(warped, image)
    np.testing.assert_allclose(correspondence, coordinate_image(48, 64), atol=1e-4)


def test_warps_that_could_fold_are_refused() -> None:
    random_thin_plate_spline(np.random.default_rng(0), grid_size=4, max_displacement=1 / 6)
    with pytest.raises(ValueError, match="max_displacement"):
        random_thin_plate_spline(np.random.default_rng(0), grid_size=4, max_displacement=0.3)
    with pytest.raises(ValueError, match="grid_size"):
        random_thin_plate_spline(np.random.default_rng(0), grid_size=1)


def test_random_warps_do_not_fold() -> None:
    """The Jacobian determinant of the map stays positive over and around the frame."""
    axis = np.linspace(-1.2, 1.2, 121)
    points = np.stack(np.meshgrid(axis, axis), axis=-1)
    spacing = axis[1] - axis[0]
    for seed in range(50):
        mapped = random_thin_plate_spline(np.random.default_rng(seed), max_displacement=1 / 6)(
            points
        )
        along_x = np.diff(mapped, axis=1)[:-1]
        along_y = np.diff(mapped, axis=0)[:, :-1]
        determinant = along_x[..., 0] * along_y[..., 1] - along_x[..., 1] * along_y[..., 0]
        assert determinant.min() / spacing**2 > 0.05


def test_warp_is_reproducible_and_keeps_the_image_type() -> None:
    image = np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    first = thin_plate_spline_warp(image, np.random.default_rng(11))
    second = thin_plate_spline_warp(image, np.random.default_rng(11))
    third = thin_plate_spline_warp(image, np.random.default_rng(12))
    assert first[0].dtype == np.uint8 and first[0].shape == image.shape
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    assert not np.array_equal(first[0], third[0])


def test_warped_content_comes_from_where_the_correspondence_says() -> None:
    """On a picture (not coordinates): a pixel's colour is found at its landing position."""
    image = np.full((96, 96, 3), 255, np.uint8)
    cv2.circle(image, (48, 48), 25, (200, 30, 30), -1)
    cv2.rectangle(image, (10, 60), (40, 90), (20, 120, 220), -1)
    warped, correspondence = thin_plate_spline_warp(image, np.random.default_rng(5))
    defined = ~np.isnan(correspondence[..., 0])
    read_back = read_at(warped.astype(np.float32), np.nan_to_num(correspondence, nan=-1))
    # away from colour edges, the colour read back is the original colour
    flat = cv2.erode((cv2.Canny(image, 10, 30) == 0).astype(np.uint8), np.ones((7, 7))) > 0
    inner = np.zeros_like(defined)
    inner[3:-3, 3:-3] = True
    mask = defined & flat & inner
    assert np.abs(read_back - image)[mask].max() <= 1


# ---- correspondence_to_grid


def identity_correspondence(batch: int, height: int, width: int) -> torch.Tensor:
    return torch.from_numpy(coordinate_image(height, width)).expand(batch, height, width, 2)


def test_grid_of_the_identity_is_arange() -> None:
    correspondence = identity_correspondence(2, 64, 96)
    cells = correspondence_to_grid(correspondence, (4, 6), (64, 96))
    assert cells.dtype == torch.long
    assert cells.shape == (2, 24)
    torch.testing.assert_close(cells, torch.arange(24).expand(2, 24))


def test_grid_follows_a_shift_and_marks_content_that_leaves() -> None:
    # every pixel lands one cell (16 px) to the right; the last column leaves the frame
    correspondence = identity_correspondence(1, 32, 64).clone()
    correspondence[..., 0] += 16
    correspondence[..., 0][correspondence[..., 0] > 63] = float("nan")
    cells = correspondence_to_grid(correspondence, (2, 4), (32, 64))
    assert cells.tolist() == [[1, 2, 3, -1, 5, 6, 7, -1]]


def test_grid_matches_the_warp_at_cell_centres() -> None:
    height, width, grid = 64, 64, (4, 4)
    _, correspondence = thin_plate_spline_warp(
        np.zeros((height, width, 3), np.uint8), np.random.default_rng(4)
    )
    cells = correspondence_to_grid(torch.from_numpy(correspondence)[None], grid, (height, width))
    for row in range(4):
        for col in range(4):
            # the cell centre (7.5, 7.5) + 16·(col, row) lies between four pixels; their mean
            y, x = 16 * row + 7, 16 * col + 7
            landed = correspondence[y : y + 2, x : x + 2].reshape(-1, 2).mean(axis=0)
            index = cells[0, row * 4 + col].item()
            if np.isnan(landed).any():
                assert index == -1
            else:
                expected_col = int((landed[0] + 0.5) // 16)
                expected_row = int((landed[1] + 0.5) // 16)
                assert index == expected_row * 4 + expected_col


def test_grid_is_all_minus_one_for_a_dropped_reference() -> None:
    correspondence = torch.full((1, 32, 32, 2), float("nan"))
    assert (correspondence_to_grid(correspondence, (2, 2), (32, 32)) == -1).all()
    with pytest.raises(ValueError, match="image_hw"):
        correspondence_to_grid(correspondence, (2, 2), (32, 48))
