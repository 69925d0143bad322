"""The two transforms that make an augmented-self reference (paper §3.2): a(·) and s(·).

a(·), `jitter_colors`, shifts each RGB channel by its own random offset; its output is the
ground truth I_gt. s(·), `thin_plate_spline_warp`, bends I_gt with a random smooth thin-plate
spline into the reference I_r and reports, for every pixel of I_gt, where its content lands in
I_r: that dense correspondence tells the triplet loss which reference position matches which
sketch position. All functions are pure; randomness comes only from the `numpy.random.Generator`
passed in.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


def jitter_colors(
    image: np.ndarray, rng: np.random.Generator, *, max_offset: float = 50.0
) -> tuple[np.ndarray, np.ndarray]:
    """Add one offset drawn from U[-max_offset, max_offset] to each RGB channel, then clip.

    image: (H, W, 3) uint8. Returns the jittered uint8 image and the three offsets (0–255 scale).
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    offsets = rng.uniform(-max_offset, max_offset, size=3)
    shifted = image.astype(np.float64) + offsets
    return np.clip(np.rint(shifted), 0, 255).astype(np.uint8), offsets


def _radial_basis(squared_distance: np.ndarray) -> np.ndarray:
    """The thin-plate kernel U(r) = r² log r², with U(0) = 0."""
    return squared_distance * np.log(np.maximum(squared_distance, 1e-30))


@dataclass(frozen=True)
class ThinPlateSpline:
    """A smooth map of the plane, f(p) = A·[1, p] + Σ_i w_i U(|p − c_i|), through control points.

    Coordinates are whatever the caller fits it in; the warp below uses [-1, 1] on both axes.
    """

    control_points: np.ndarray  # (K, 2)
    weights: np.ndarray  # (K, 2)
    affine: np.ndarray  # (3, 2): rows for 1, x, y

    @classmethod
    def fit(cls, control_points: np.ndarray, targets: np.ndarray) -> ThinPlateSpline:
        """The spline with f(control_points[i]) = targets[i] and the least bending energy."""
        control_points = np.asarray(control_points, dtype=np.float64)
        targets = np.asarray(targets, dtype=np.float64)
        count = len(control_points)
        if control_points.shape != (count, 2) or targets.shape != (count, 2) or count < 3:
            raise ValueError("need matching (K, 2) control points and targets with K >= 3")
        kernel = _radial_basis(_squared_distances(control_points, control_points))
        polynomial = np.hstack([np.ones((count, 1)), control_points])
        system = np.zeros((count + 3, count + 3))
        system[:count, :count] = kernel
        system[:count, count:] = polynomial
        system[count:, :count] = polynomial.T
        right_side = np.vstack([targets, np.zeros((3, 2))])
        solution = np.linalg.solve(system, right_side)
        return cls(control_points, solution[:count], solution[count:])

    def __call__(self, points: np.ndarray) -> np.ndarray:
        """Map (..., 2) points."""
        flat = points.reshape(-1, 2)
        bending = _radial_basis(_squared_distances(flat, self.control_points)) @ self.weights
        mapped = self.affine[0] + flat @ self.affine[1:] + bending
        return mapped.reshape(points.shape)


def _squared_distances(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """(N, K) squared distances between (N, 2) points and (K, 2) centres."""
    dx = points[:, :1] - centres[:, 0]
    dy = points[:, 1:] - centres[:, 1]
    return dx * dx + dy * dy


def control_grid(grid_size: int) -> np.ndarray:
    """(grid_size², 2) points evenly spread over [-1, 1]², corners included."""
    axis = np.linspace(-1.0, 1.0, grid_size)
    xs, ys = np.meshgrid(axis, axis)
    return np.stack([xs.ravel(), ys.ravel()], axis=1)


def check_warp_settings(grid_size: int, max_displacement: float) -> None:
    """Raise ValueError unless the settings make a fold-free `random_thin_plate_spline`."""
    if grid_size < 2:
        raise ValueError(f"grid_size must be at least 2, got {grid_size}")
    limit = 0.5 / (grid_size - 1)
    if not 0 <= max_displacement <= limit:
        raise ValueError(
            f"max_displacement must lie in [0, {limit:.3g}] for a {grid_size}x{grid_size} grid "
            f"(a quarter of its spacing; more folds the warp), got {max_displacement}"
        )


@dataclass(frozen=True)
class ReferenceMotion:
    """Bounds of a random similarity applied with the spline (none by default, as in the paper).

    shift: translation up to this fraction of the image side, each axis; zoom: scale 2^U[-zoom,
    zoom]; rotation: up to this many degrees either way. Without it, at the paper's displacement
    the true reference cell of most sketch cells is the cell at the same place, so the attention
    can score well by looking straight ahead; with it, it has to find the part.
    """

    shift: float = 0.0
    zoom: float = 0.0
    rotation: float = 0.0

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        """(3, 2) affine rows for [1, x, y] in the [-1, 1] frame; the identity when all are 0."""
        if not (self.shift or self.zoom or self.rotation):
            return np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
        scale = 2.0 ** rng.uniform(-self.zoom, self.zoom)
        angle = np.deg2rad(rng.uniform(-self.rotation, self.rotation))
        cos, sin = scale * np.cos(angle), scale * np.sin(angle)
        shift = rng.uniform(-2 * self.shift, 2 * self.shift, size=2)  # the frame is 2 wide
        return np.array([shift, [cos, sin], [-sin, cos]])


def random_thin_plate_spline(
    rng: np.random.Generator,
    *,
    grid_size: int = 4,
    max_displacement: float = 0.15,
    motion: ReferenceMotion | None = None,
) -> ThinPlateSpline:
    """A random smooth warp: a control grid whose points move by U[-max_displacement, …] each axis,
    after an optional random similarity (`motion`).

    Units are the [-1, 1] frame, so 0.15 moves a point by up to 7.5 % of the image side. Moves of
    up to a quarter of the grid spacing keep the map from folding over itself (larger ones fold
    it, and the correspondence would then be ill-defined), so larger values are refused; a
    similarity never folds.
    """
    check_warp_settings(grid_size, max_displacement)
    grid = control_grid(grid_size)
    moves = rng.uniform(-max_displacement, max_displacement, grid.shape)
    if motion is None:
        return ThinPlateSpline.fit(grid, grid + moves)
    affine = motion.sample(rng)
    return ThinPlateSpline.fit(grid, affine[0] + grid @ affine[1:] + moves)


def _upsample(grid: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear float32 read of a (h, w, 2) grid, for an upsampling by 2 or 4.

    OpenCV rounds sampling positions to 1/32 of a cell, so this is exact only for positions on
    such a lattice, as an integer upsampling's are; `_bilinear` serves arbitrary positions.
    """
    return cv2.remap(
        grid.astype(np.float32),
        x.astype(np.float32),
        y.astype(np.float32),
        interpolation=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )


def _bilinear(grid: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Sample a (h, w, C) grid at fractional (x, y) positions, holding the edge values beyond it."""
    height, width, channels = grid.shape
    x = np.clip(x, 0, width - 1)
    y = np.clip(y, 0, height - 1)
    left = np.minimum(x.astype(np.intp), width - 2)
    top = np.minimum(y.astype(np.intp), height - 2)
    fx = (x - left)[..., None]
    fy = (y - top)[..., None]
    flat = grid.reshape(-1, channels)
    corner = top * width + left
    upper = flat[corner] * (1 - fx) + flat[corner + 1] * fx
    lower = flat[corner + width] * (1 - fx) + flat[corner + width + 1] * fx
    return upper * (1 - fy) + lower * fy


@dataclass(frozen=True)
class _SampledMap:
    """A spline's map in pixel units, sampled on every `step`-th pixel with its Jacobian.

    The samples reach a quarter of the image beyond each side, so the inversion can step outside
    the frame, and are read bilinearly: the spline is smooth enough that this stays within about
    a sixth of a pixel of it at 256², at a fraction of the cost of evaluating it everywhere. The
    warp and its correspondence both come from these samples, so they agree with each other far
    more closely than that.
    """

    values: np.ndarray  # (h, w, 2): the source (x, y) shown at each sampled pixel
    with_jacobian: np.ndarray  # (h, w, 6): x, y, ∂x/∂x', ∂x/∂y', ∂y/∂x', ∂y/∂y'
    pad: int
    step: int

    @classmethod
    def of(cls, spline: ThinPlateSpline, height: int, width: int, step: int = 4) -> _SampledMap:
        pad = step * -(-max(height, width) // (4 * step))
        node_x = np.arange(-pad, width + pad + step, step, dtype=np.float64)
        node_y = np.arange(-pad, height + pad + step, step, dtype=np.float64)
        scale = np.array([2.0 / max(width - 1, 1), 2.0 / max(height - 1, 1)])
        nodes = np.stack(np.meshgrid(node_x, node_y), axis=-1)
        values = (spline(nodes * scale - 1.0) + 1.0) / scale
        d_dx = np.gradient(values, step, axis=1)
        d_dy = np.gradient(values, step, axis=0)
        jacobian = np.stack([d_dx[..., 0], d_dy[..., 0], d_dx[..., 1], d_dy[..., 1]], axis=-1)
        return cls(values, np.concatenate([values, jacobian], axis=-1), pad, step)

    def source_at_pixels(self, height: int, width: int) -> np.ndarray:
        """(height, width, 2) float32: the source position shown at each warped pixel."""
        ys, xs = np.mgrid[0:height, 0:width]
        return _upsample(self.values, (xs + self.pad) / self.step, (ys + self.pad) / self.step)

    def source_and_jacobian(self, points: np.ndarray) -> np.ndarray:
        """(..., 6): source position and Jacobian at (..., 2) warped pixel positions."""
        grid_x = (points[..., 0] + self.pad) / self.step
        grid_y = (points[..., 1] + self.pad) / self.step
        return _bilinear(self.with_jacobian, grid_x, grid_y)


def warp_with_spline(
    image: np.ndarray,
    spline: ThinPlateSpline,
    *,
    border_value: float = 255,
    iterations: int = 20,
    tolerance: float = 1e-3,
) -> tuple[np.ndarray, np.ndarray]:
    """Warp `image` so that the pixel at q of the result shows the input's content at `spline(q)`.

    The spline works in [-1, 1]² coordinates (pixel centres 0 and size − 1 at the ends). Returns
    (warped image, correspondence). The correspondence is (H, W, 2) float32: for each input pixel
    p = (y, x), the (x', y') pixel position in the warped image where its content lands, found by
    inverting the spline with Newton's method; NaN where that position lies outside the warped
    frame (or where the inversion did not converge, which a fold-free spline never causes).
    Pixels of the result whose source lies outside the input are filled with `border_value`.
    """
    height, width = image.shape[:2]
    sampled = _SampledMap.of(spline, height, width)
    source = sampled.source_at_pixels(height, width)
    warped = cv2.remap(
        image,
        source[..., 0],
        source[..., 1],
        interpolation=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(border_value,) * 4,
    )

    # The inverse is smooth too: solve it on every `step`-th pixel, then read it bilinearly.
    step = 2
    node_x = np.arange(0, width - 1 + step, step, dtype=np.float64)
    node_y = np.arange(0, height - 1 + step, step, dtype=np.float64)
    nodes = np.stack(np.meshgrid(node_x, node_y), axis=-1)
    landing = _invert(sampled, nodes, iterations=iterations, tolerance=tolerance)
    ys, xs = np.mgrid[0:height, 0:width]
    landing = _upsample(landing, xs / step, ys / step)
    inside = (
        (landing[..., 0] >= 0)
        & (landing[..., 0] <= width - 1)
        & (landing[..., 1] >= 0)
        & (landing[..., 1] <= height - 1)
    )  # NaN compares False
    landing[~inside] = np.nan
    return warped, landing


def _invert(
    sampled: _SampledMap, points: np.ndarray, *, iterations: int, tolerance: float
) -> np.ndarray:
    """Solve source(q) = p for each of the (..., 2) `points` p by Newton's method.

    Positions that have not converged within 0.05 px become NaN.
    """
    landing = points.copy()
    for _ in range(iterations):
        read = sampled.source_and_jacobian(landing)
        residual = read[..., :2] - points
        if np.abs(residual).max() < tolerance:
            break
        a, b, c, d = (read[..., i] for i in range(2, 6))
        determinant = a * d - b * c
        landing[..., 0] -= (d * residual[..., 0] - b * residual[..., 1]) / determinant
        landing[..., 1] -= (a * residual[..., 1] - c * residual[..., 0]) / determinant
    landing[np.abs(residual).max(axis=-1) >= 0.05] = np.nan
    return landing


def thin_plate_spline_warp(
    image: np.ndarray,
    rng: np.random.Generator,
    *,
    grid_size: int = 4,
    max_displacement: float = 0.15,
    motion: ReferenceMotion | None = None,
    border_value: int = 255,
) -> tuple[np.ndarray, np.ndarray]:
    """s(·): warp `image` with a random thin-plate spline; returns (warped, correspondence).

    See `random_thin_plate_spline` for the parameters and `warp_with_spline` for the outputs.
    """
    spline = random_thin_plate_spline(
        rng, grid_size=grid_size, max_displacement=max_displacement, motion=motion
    )
    return warp_with_spline(image, spline, border_value=border_value)
