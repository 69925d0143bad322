"""What a training run shows: scalar logs, image grids and attention maps (the paper's Fig. 7).

TensorBoard is used when it is installed; otherwise scalars go to `metrics.jsonl` and images to PNG
files in the run folder. Either way the images are also written as PNG, so a run can be inspected
without any viewer.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from colord.model.pixels import from_signed


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) in [-1, 1], C in {1, 3} -> (B, H, W, 3) uint8."""
    images = images.detach().float().cpu().clamp(-1, 1)
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    return from_signed(images).permute(0, 2, 3, 1).numpy()


def image_grid(columns: list[torch.Tensor], gap: int = 2) -> np.ndarray:
    """One row per sample, one column per tensor (e.g. sketch | reference | output | ground truth).

    Columns may differ in size; each cell is resized to the first column's height.
    """
    cells = [to_uint8(c) for c in columns]
    height = cells[0].shape[1]
    rows = []
    for i in range(cells[0].shape[0]):
        row = [_fit_height(column[i], height) for column in cells]
        rows.append(_join(row, axis=1, gap=gap))
    return _join(rows, axis=0, gap=gap)


def attention_figure(
    sketch: torch.Tensor,
    reference: torch.Tensor,
    attention: torch.Tensor,
    sketch_grid: tuple[int, int],
    reference_grid: tuple[int, int],
    positions: list[tuple[int, int]],
    gap: int = 2,
) -> np.ndarray:
    """For each sketch grid cell in `positions`: the sketch with the cell boxed | the reference with
    that cell's attention over it as a heat map.

    sketch (1, H, W), reference (3, Hr, Wr) in [-1, 1]; attention (N, M), rows over reference cells.
    """
    sketch_rgb = to_uint8(sketch[None])[0]
    reference_rgb = to_uint8(reference[None])[0]
    h, w = sketch_grid
    hr, wr = reference_grid
    cell_h, cell_w = sketch_rgb.shape[0] / h, sketch_rgb.shape[1] / w
    rows = []
    for row, col in positions:
        marked = sketch_rgb.copy()
        top_left = (int(col * cell_w), int(row * cell_h))
        bottom_right = (int((col + 1) * cell_w) - 1, int((row + 1) * cell_h) - 1)
        cv2.rectangle(marked, top_left, bottom_right, (255, 0, 0), thickness=2)
        weights = attention[row * w + col].detach().float().cpu().reshape(hr, wr).numpy()
        weights = (weights - weights.min()) / max(float(weights.max() - weights.min()), 1e-12)
        size = (reference_rgb.shape[1], reference_rgb.shape[0])
        heat = cv2.resize(weights, size, interpolation=cv2.INTER_NEAREST)
        colored = cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
        overlay = (0.45 * reference_rgb + 0.55 * colored).astype(np.uint8)
        rows.append(_join([marked, _fit_height(overlay, marked.shape[0])], axis=1, gap=gap))
    return _join(rows, axis=0, gap=gap)


def spread_positions(grid_hw: tuple[int, int], count: int = 4) -> list[tuple[int, int]]:
    """`count` grid cells spread over the grid's interior (on a diagonal pattern)."""
    h, w = grid_hw
    fractions = [(0.3, 0.3), (0.3, 0.7), (0.7, 0.3), (0.7, 0.7), (0.5, 0.5)]
    return [(int(fy * h), int(fx * w)) for fy, fx in fractions[:count]]


def save_png(image: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)


class RunLogger:
    """Scalars and images of one run; does nothing unless `enabled` (rank 0)."""

    def __init__(self, run_dir: Path, *, enabled: bool) -> None:
        self.run_dir = run_dir
        self.enabled = enabled
        self.tensorboard = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional
            SummaryWriter = None
        if SummaryWriter is not None:
            self.tensorboard = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        self.jsonl = (run_dir / "metrics.jsonl").open("a")

    @property
    def backend(self) -> str:
        return "tensorboard" if self.tensorboard is not None else "jsonl"

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        self.jsonl.write(json.dumps({"step": step, "time": time.time(), **values}) + "\n")
        self.jsonl.flush()
        if self.tensorboard is not None:
            for name, value in values.items():
                self.tensorboard.add_scalar(name, value, step)

    def image(self, step: int, name: str, image: np.ndarray) -> None:
        if not self.enabled:
            return
        save_png(image, self.run_dir / "images" / f"{name}-{step:08d}.png")
        if self.tensorboard is not None:
            self.tensorboard.add_image(name, image, step, dataformats="HWC")

    def close(self) -> None:
        if not self.enabled:
            return
        self.jsonl.close()
        if self.tensorboard is not None:
            self.tensorboard.close()


def _fit_height(image: np.ndarray, height: int) -> np.ndarray:
    if image.shape[0] == height:
        return image
    width = round(image.shape[1] * height / image.shape[0])
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def _join(images: list[np.ndarray], *, axis: int, gap: int) -> np.ndarray:
    """Concatenate with white gaps between the images."""
    parts = []
    for i, image in enumerate(images):
        if i:
            shape = list(image.shape)
            shape[axis] = gap
            parts.append(np.full(shape, 255, dtype=np.uint8))
        parts.append(image)
    return np.concatenate(parts, axis=axis)
