"""Synthetic probes of colour placement: does each region of a drawing take its own colour?

Each probe is a drawing made by code: nested and adjacent shapes outlined in black on white, every
shape filled with its own saturated colour (the ground truth). The reference is that coloured
drawing bent by a random thin-plate spline (training's s(·)), so a region comes out right only if
the model finds its part in the reference: a model that averages the reference's colours paints
every region the same mix. Probes are deterministic from a seed, at any size divisible by 16.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from colord.model.pixels import SIZE_MULTIPLE
from colord.training.evaluation.metrics import (
    ciede2000,
    closed_regions,
    region_cores,
    region_medians,
    rgb_to_lab,
)
from colord.training.samples.augment import thin_plate_spline_warp

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "blue": (40, 80, 220),
    "green": (40, 170, 70),
    "yellow": (245, 205, 40),
    "magenta": (200, 50, 180),
    "orange": (245, 135, 30),
    "cyan": (40, 190, 210),
}
GROUND = "white"  # the paper around the shapes; a region that took no colour is nearest to it
GROUND_RGB = (255, 255, 255)
LINE_RGB = (0, 0, 0)


@dataclass(frozen=True)
class Shape:
    """A filled, outlined shape; coordinates in units of the image side."""

    name: str
    kind: str  # "circle": (cx, cy, r); "rect": (x0, y0, x1, y1); "triangle": three (x, y)
    geometry: tuple[float, ...]
    color: str  # a PALETTE name

    def draw(self, canvas: np.ndarray, value: int | tuple[int, ...], thickness: int) -> None:
        """Fill (thickness -1) or outline the shape on `canvas`, in place."""
        size = canvas.shape[0]
        points = [round(v * size) for v in self.geometry]
        if self.kind == "circle":
            cv2.circle(canvas, (points[0], points[1]), points[2], value, thickness)
        elif self.kind == "rect":
            cv2.rectangle(canvas, (points[0], points[1]), (points[2], points[3]), value, thickness)
        elif self.kind == "triangle":
            corners = np.array(points, np.int32).reshape(3, 2)
            if thickness < 0:
                cv2.fillPoly(canvas, [corners], value)
            else:
                cv2.polylines(canvas, [corners], True, value, thickness)
        else:
            raise ValueError(f"unknown shape kind {self.kind!r}")


# Later shapes are drawn over earlier ones. The first two are the cases that showed the shipped
# model averaging colours: a circle with a square inside, red and blue, then green and yellow.
PROBE_SHAPES: dict[str, tuple[Shape, ...]] = {
    "square in circle (red, blue)": (
        Shape("circle", "circle", (0.5, 0.5, 0.38), "red"),
        Shape("square", "rect", (0.36, 0.36, 0.64, 0.64), "blue"),
    ),
    "square in circle (green, yellow)": (
        Shape("circle", "circle", (0.5, 0.5, 0.38), "green"),
        Shape("square", "rect", (0.36, 0.36, 0.64, 0.64), "yellow"),
    ),
    "adjacent rectangles": (
        Shape("left", "rect", (0.12, 0.25, 0.5, 0.75), "orange"),
        Shape("right", "rect", (0.5, 0.25, 0.88, 0.75), "blue"),
    ),
    "ring": (
        Shape("ring", "circle", (0.5, 0.5, 0.4), "magenta"),
        Shape("hole", "circle", (0.5, 0.5, 0.2), "cyan"),
    ),
    "circle beside triangle": (
        Shape("circle", "circle", (0.3, 0.5, 0.18), "yellow"),
        Shape("triangle", "triangle", (0.55, 0.7, 0.9, 0.7, 0.725, 0.3), "red"),
    ),
    "three nested": (
        Shape("square", "rect", (0.1, 0.1, 0.9, 0.9), "green"),
        Shape("circle", "circle", (0.5, 0.5, 0.3), "red"),
        Shape("inner square", "rect", (0.42, 0.42, 0.58, 0.58), "blue"),
    ),
}


def line_width(size: int) -> int:
    """OpenMoji's stroke (2 units of its 72-unit grid) at `size` px: the line art the shipped
    model was trained on."""
    return max(2, round(size * 2 / 72))


@dataclass(frozen=True)
class Probe:
    name: str
    shapes: tuple[Shape, ...]
    sketch: np.ndarray  # (S, S) uint8 line art: lines 0 on 255
    truth: np.ndarray  # (S, S, 3) uint8: the shapes filled, lines black
    reference: np.ndarray  # (S, S, 3) uint8: the truth warped
    owners: np.ndarray  # (S, S) int: index of the shape whose fill shows at each pixel, -1: ground


def make_probe(name: str, shapes: tuple[Shape, ...], size: int, rng: np.random.Generator) -> Probe:
    truth = np.full((size, size, 3), GROUND_RGB, np.uint8)
    owners = np.full((size, size), -1, np.int32)
    sketch = np.full((size, size), 255, np.uint8)
    for index, shape in enumerate(shapes):
        shape.draw(truth, PALETTE[shape.color], -1)
        shape.draw(owners, index, -1)
    width = line_width(size)
    for shape in shapes:
        shape.draw(sketch, 0, width)
    truth[sketch == 0] = LINE_RGB
    reference, _ = thin_plate_spline_warp(truth, rng)
    return Probe(name, shapes, sketch, truth, reference, owners)


def make_probes(size: int, *, seed: int = 0) -> list[Probe]:
    """Every probe of PROBE_SHAPES at size x size; the warps are decided by `seed` alone."""
    if size < 32 or size % SIZE_MULTIPLE:
        raise ValueError(
            f"the probe size must be a multiple of {SIZE_MULTIPLE} of at least 32, got {size}"
        )
    return [
        make_probe(name, shapes, size, np.random.default_rng([seed, index]))
        for index, (name, shapes) in enumerate(PROBE_SHAPES.items())
    ]


@dataclass(frozen=True)
class RegionResult:
    probe: str
    region: str  # the shape's name
    color: str  # its true colour's name
    output_rgb: tuple[int, int, int]  # the region's median output colour, off the lines
    delta_e: float  # CIEDE2000 of that colour to the true colour
    nearest: str  # the probe's colour (or the white ground) nearest to it in CIEDE2000

    @property
    def own_color(self) -> bool:
        return self.nearest == self.color


@dataclass
class ProbeReport:
    regions: list[RegionResult]
    outputs: list[np.ndarray]  # one per probe, in order

    @property
    def passed(self) -> bool:
        """Every region of every probe took its own colour."""
        return all(region.own_color for region in self.regions)

    def to_json(self) -> dict:
        return {
            "regions": [
                asdict(region) | {"own_color": region.own_color} for region in self.regions
            ],
            "own_color": sum(region.own_color for region in self.regions),
            "count": len(self.regions),
        }


def _lab_to_rgb(lab: np.ndarray) -> tuple[int, int, int]:
    rgb = cv2.cvtColor(lab.astype(np.float32).reshape(1, 1, 3), cv2.COLOR_LAB2RGB)
    red, green, blue = np.clip(np.rint(rgb.reshape(3) * 255), 0, 255).astype(int)
    return int(red), int(green), int(blue)


def score_probe(probe: Probe, output: np.ndarray) -> list[RegionResult]:
    """For each closed region of the probe's line art, the colour it came out in."""
    labels = closed_regions(probe.sketch)
    medians = region_medians(output, region_cores(probe.sketch, labels), int(labels.max()))
    names = [shape.color for shape in probe.shapes] + [GROUND]
    palette = rgb_to_lab(np.array([PALETTE[n] for n in names[:-1]] + [GROUND_RGB], np.uint8))
    results = []
    for k, median in enumerate(medians):
        owner = np.bincount(probe.owners[labels == k + 1] + 1).argmax() - 1  # -1: the ground
        shape = probe.shapes[owner] if owner >= 0 else None
        color = shape.color if shape else GROUND
        distances = ciede2000(median, palette)
        results.append(
            RegionResult(
                probe=probe.name,
                region=shape.name if shape else GROUND,
                color=color,
                output_rgb=_lab_to_rgb(median),
                delta_e=float(distances[names.index(color)]),
                nearest=names[int(np.argmin(distances))],
            )
        )
    return results


Colorize = Callable[[Sequence[np.ndarray], Sequence[np.ndarray] | None], list[np.ndarray]]


def run_probes(colorize: Colorize, probes: Sequence[Probe]) -> ProbeReport:
    """Colour every probe's line art after its warped reference, and score each region."""
    outputs = colorize([p.sketch for p in probes], [p.reference for p in probes])
    regions = [
        r for probe, out in zip(probes, outputs, strict=True) for r in score_probe(probe, out)
    ]
    return ProbeReport(regions, outputs)


def markdown_section(report: dict) -> list[str]:
    """Markdown lines for a `ProbeReport.to_json()`."""
    lines = [
        "",
        "## Synthetic probes (flat shapes; the reference is the same drawing, warped)",
        "",
        f"{report['own_color']} of {report['count']} regions took their own colour (the nearest, "
        "in CIEDE2000, of the probe's colours and the white ground).",
        "",
        "| probe | region | true colour | output (median) | ΔE to true | nearest | own colour |",
        "|---|---|---|---|---|---|---|",
    ]
    for region in report["regions"]:
        output = "#{:02x}{:02x}{:02x}".format(*region["output_rgb"])
        lines.append(
            f"| {region['probe']} | {region['region']} | {region['color']} | {output} | "
            f"{region['delta_e']:.1f} | {region['nearest']} | "
            f"{'yes' if region['own_color'] else 'no'} |"
        )
    return lines
