"""Flats evaluation (issue 12): do the flats put one right colour in each closed region?

On held-out pairs whose colour pictures are true flats (OpenMoji: one colour per region between
the lines) and drawn line art, three methods on the same inputs:

- `flats`: the flats layer (ground opaque, so its colour is judged too);
- `plain`: the plain colour output the flats are made from;
- `mean_color`: the line art's regions filled with the reference's mean colour (the baseline of
  `colord eval`).

Each is scored against the ground truth by
- region colour accuracy: the share of closed regions (pooled over the images) whose median
  colour lies within CIEDE2000 10 of the true one (`metrics.region_color_errors`, as in
  `colord eval`), and their mean CIEDE2000;
- PSNR on the true flats: over the pixels more than 1 px from every line (the ground truth's
  line pixels and their anti-aliased edges are drawn ink, which no flats layer holds) in the
  line art's regions that are one colour in the ground truth (`true_flats`: OpenMoji's line art
  leaves out some colour borders, lettering for one, and no flats can hold those); and PSNR
  over all the pixels off the lines;
- one colour per region: the share of the closed regions' pixels that have their region's most
  common colour (100 % for flats that keep every closed region whole).

The colorizer is a callable, so this module needs neither the daemon nor a model: `colord eval
--flats` (`flats_report`) passes one that runs the engine, in process or in the daemon.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from colord.training.evaluation import metrics
from colord.training.evaluation.evaluate import contact_sheet, mean_color_fill

# (line art (H, W) uint8, lines 0 on 255; reference (h, w, 3) uint8 RGB) ->
# (plain output, flats), each (H, W, 3 or 4) uint8 RGB(A); alpha is laid over white paper
FlatsColorizer = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
METHODS = ("flats", "plain", "mean_color")
FLAT_SHARE = 0.95  # a region is flat in the ground truth when this share of it has one colour
SHEET_COLUMNS = ("line art", "reference", "plain", "flats", "flats + lines", "ground truth")


@dataclass(frozen=True)
class FlatsScore:
    method: str
    region_accuracy: float  # share of the pooled closed regions within CIEDE2000 10
    region_mean_de: float  # their mean CIEDE2000
    psnr_true_flats: float  # dB, mean over the images, on their `true_flats` pixels
    psnr_off_lines: float  # dB, mean over the images
    one_colour: float  # share of closed-region pixels in their region's most common colour
    regions: int  # closed regions scored
    images: int
    true_flat_share: float  # share of the pixels off the lines that are true flats


@dataclass(frozen=True)
class FlatsRun:
    scores: list[FlatsScore]  # one per METHODS entry, in that order
    outputs: dict[str, list[np.ndarray]]  # per method, its (H, W, 3) RGB outputs


def on_white(image: np.ndarray) -> np.ndarray:
    """(H, W, 3 or 4) uint8 -> (H, W, 3) RGB, alpha laid over white paper."""
    if image.shape[2] == 3:
        return image
    alpha = image[..., 3:].astype(np.float32) / 255
    return np.rint(image[..., :3] * alpha + 255 * (1 - alpha)).astype(np.uint8)


def off_lines(line_art: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels more than 1 px (8-neighbourhood) from every line pixel."""
    return cv2.erode((line_art > 0).view(np.uint8), np.ones((3, 3), np.uint8)) > 0


def dominant_counts(image: np.ndarray, regions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per label 0..K of `regions` (0 left out: counts 0): (pixels in the region's most common
    colour, pixels)."""
    inside = regions > 0
    label = regions[inside].astype(np.int64)
    rgb = image[inside].astype(np.int64)
    keys = (label << 24) | (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]
    colours, counts = np.unique(keys, return_counts=True)
    most = np.zeros(int(regions.max()) + 1, np.int64)
    np.maximum.at(most, colours >> 24, counts)
    return most, np.bincount(label, minlength=len(most))


def true_flats(line_art: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(H, W) bool: the pixels off the lines in the line art's regions (4-connected paper, the
    ground included) that are flat in the ground truth: `FLAT_SHARE` of their pixels off the
    lines have one colour. A region holding colours the line art does not separate is not."""
    away = off_lines(line_art)
    _, regions = cv2.connectedComponents((line_art > 0).view(np.uint8), connectivity=4)
    regions[~away] = 0
    most, total = dominant_counts(truth, regions)
    flat = most >= FLAT_SHARE * np.maximum(total, 1)
    flat[0] = False
    return flat[regions]


def evaluate_flats(
    line_arts: Sequence[np.ndarray],
    references: Sequence[np.ndarray],
    truths: Sequence[np.ndarray],
    colorize: FlatsColorizer,
) -> FlatsRun:
    """Score the flats, the plain output and the mean-colour baseline (module docstring).

    line_arts: binarized drawn line art, (H, W) uint8, lines 0 on 255; truths: the flat colour
    pictures, (H, W, 3) uint8 RGB; references: (h, w, 3) uint8 RGB."""
    outputs: dict[str, list[np.ndarray]] = {method: [] for method in METHODS}
    for line_art, reference in zip(line_arts, references, strict=True):
        plain, flat = colorize(line_art, reference)
        outputs["plain"].append(on_white(plain))
        outputs["flats"].append(on_white(flat))
        outputs["mean_color"].append(mean_color_fill(line_art, reference))
    scores = []
    for method in METHODS:
        errors, psnrs, flat_psnrs, same, total, flat_pixels, away_pixels = [], [], [], 0, 0, 0, 0
        for output, truth, line_art in zip(outputs[method], truths, line_arts, strict=True):
            errors.append(metrics.region_color_errors(output, truth, line_art)[0])
            away, flat = off_lines(line_art), true_flats(line_art, truth)
            psnrs.append(metrics.psnr(output[away], truth[away]))
            if flat.any():
                flat_psnrs.append(metrics.psnr(output[flat], truth[flat]))
            flat_pixels, away_pixels = flat_pixels + int(flat.sum()), away_pixels + int(away.sum())
            most, pixels = dominant_counts(output, metrics.closed_regions(line_art))
            same, total = same + int(most.sum()), total + int(pixels.sum())
        delta_e = np.concatenate(errors)
        scores.append(
            FlatsScore(
                method,
                float(np.mean(delta_e <= metrics.REGION_DELTA_E)) if len(delta_e) else np.nan,
                float(np.mean(delta_e)) if len(delta_e) else np.nan,
                float(np.mean(flat_psnrs)) if flat_psnrs else np.nan,
                float(np.mean(psnrs)),
                same / total if total else np.nan,
                len(delta_e),
                len(psnrs),
                flat_pixels / away_pixels if away_pixels else np.nan,
            )
        )
    return FlatsRun(scores, outputs)


def results_table(scores: Sequence[FlatsScore]) -> str:
    """The scores as a markdown table."""
    lines = [
        f"| method | region acc (ΔE≤{metrics.REGION_DELTA_E:g}) ↑ | region mean ΔE ↓ | "
        "PSNR on true flats (dB) ↑ | PSNR off the lines (dB) ↑ | one colour per region ↑ |",
        "|---|---|---|---|---|---|",
    ]
    for score in scores:
        lines.append(
            f"| {score.method} | {score.region_accuracy:.1%} | {score.region_mean_de:.2f} | "
            f"{score.psnr_true_flats:.2f} | {score.psnr_off_lines:.2f} | {score.one_colour:.1%} |"
        )
    first = scores[0]
    lines.append(
        f"\n{first.images} images, {first.regions} closed regions scored; true flats: "
        f"{first.true_flat_share:.0%} of the pixels off the lines."
    )
    return "\n".join(lines)


def flats_contact_sheet(
    run: FlatsRun,
    line_arts: Sequence[np.ndarray],
    references: Sequence[np.ndarray],
    truths: Sequence[np.ndarray],
    names: Sequence[str],
    picks: Sequence[int],
) -> Image.Image:
    """A row per picked example: line art, reference, plain output, flats, the flats under the
    line art (as the layers show in the painting app), ground truth."""
    rows = []
    for index in picks:
        line_rgb = cv2.cvtColor(line_arts[index], cv2.COLOR_GRAY2RGB)
        flat = run.outputs["flats"][index]
        images = [line_rgb, references[index], run.outputs["plain"][index], flat]
        images += [cv2.multiply(flat, line_rgb, scale=1 / 255), truths[index]]
        rows.append((names[index], images))
    return contact_sheet(rows, SHEET_COLUMNS)
