"""The attention grid's cell centres, and the dense TPS correspondence brought down to that grid:
the triplet loss's positives, the correspondence loss's targets, the attention metrics' truth."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def cell_centres(grid_hw: tuple[int, int], image_hw: tuple[int, int]) -> np.ndarray:
    """(h*w, 2) (x, y) pixel positions of a grid's cell centres, row-major, for a grid spread over
    an image of image_hw pixels (pixel centres at integers)."""
    (grid_h, grid_w), (image_h, image_w) = grid_hw, image_hw
    rows, cols = np.mgrid[0:grid_h, 0:grid_w]
    x = (cols.ravel() + 0.5) * image_w / grid_w - 0.5
    y = (rows.ravel() + 0.5) * image_h / grid_h - 0.5
    return np.stack([x, y], axis=1)


def landing_at_cells(
    correspondence: torch.Tensor, grid_hw: tuple[int, int], image_hw: tuple[int, int]
) -> torch.Tensor:
    """For each sketch grid cell, the reference pixel position its centre's content lands on.

    correspondence: (B, H, W, 2) float, for each sketch pixel the (x', y') reference pixel
    position, NaN where none (see `augment.warp_with_spline`). grid_hw: the (h, w) attention grid;
    image_hw: the (H, W) size of both images. The correspondence is read bilinearly at each cell's
    centre. Returns (B, h*w, 2) float32 (x', y') in reference pixels, row-major cells, NaN where
    the content has no landing place (it leaves the frame, or the reference was dropped).
    """
    batch, height, width, _ = correspondence.shape
    grid_h, grid_w = grid_hw
    image_h, image_w = image_hw
    if (height, width) != (image_h, image_w):
        raise ValueError(f"correspondence is {height}x{width}, image_hw says {image_h}x{image_w}")
    # Cell centres in grid_sample's [-1, 1] coordinates (align_corners=False: pixel edges at ±1).
    centre_y = (torch.arange(grid_h, dtype=torch.float32) + 0.5) / grid_h * 2 - 1
    centre_x = (torch.arange(grid_w, dtype=torch.float32) + 0.5) / grid_w * 2 - 1
    rows, cols = torch.meshgrid(centre_y, centre_x, indexing="ij")
    centres = torch.stack([cols, rows], dim=-1).to(correspondence.device)
    centres = centres.expand(batch, grid_h, grid_w, 2)
    landed = F.grid_sample(
        correspondence.permute(0, 3, 1, 2).float(), centres, mode="bilinear", align_corners=False
    )  # (B, 2, h, w): NaN wherever a neighbour is NaN
    return landed.flatten(2).transpose(1, 2)


def correspondence_to_grid(
    correspondence: torch.Tensor, grid_hw: tuple[int, int], image_hw: tuple[int, int]
) -> torch.Tensor:
    """For each sketch grid cell, the reference grid cell its content lands in.

    Arguments as `landing_at_cells`, whose reference grid is the same (h, w). Returns (B, h*w)
    long: row-major reference cell indices, -1 where the content leaves the frame (or the
    reference was dropped: all NaN).
    """
    grid_h, grid_w = grid_hw
    image_h, image_w = image_hw
    landed = landing_at_cells(correspondence, grid_hw, image_hw)
    target_col = torch.floor((landed[..., 0] + 0.5) * grid_w / image_w)
    target_row = torch.floor((landed[..., 1] + 0.5) * grid_h / image_h)
    inside = (target_col >= 0) & (target_col < grid_w) & (target_row >= 0) & (target_row < grid_h)
    index = target_row * grid_w + target_col
    index = torch.where(inside, index, torch.full_like(index, -1))  # NaN compares False: -1
    return index.long()
