"""Flats: one exact colour per closed region of the line art, the way a comic flatter delivers them.

A flats layer fills every region between the lines with one solid colour, fills under the lines
too, and has no anti-aliasing, so that a magic wand selects each region in one click. Made from
the canvas's line mask and the model's colours at canvas size (numpy and OpenCV only):

1. **Regions, with gaps closed** (`flat_regions`): distance-based closing. Paper farther than half
   the gap from every line forms the seeds: two areas joined only through an opening narrower than
   the gap get separate seeds. The seeds then grow back over all the paper of their own closed
   area (each pixel to its nearest seed, so two seeds meet in the middle of a gap), and the lines
   take the region of the nearest paper: regions lose no area, unlike after a morphological
   closing, which eats thin parts and shifts borders by the gap.
   Closed areas too thin to hold a seed (a 2 px strip between two lines) are not eaten by their
   neighbours: each keeps its own region. Specks under `min_area` pixels join a neighbour.
2. **One colour per region** (`region_colours`): the median, in CIELAB, of the model's colours over
   the region's pixels away from the lines (where the upsampled colours are least mixed), per
   channel; a region that lies wholly near lines uses all its pixels.
3. **Optionally the reference's palette** (`reference_palette`, `snap_to_palette`): the
   reference's dominant colours by k-means in CIELAB; each region takes the nearest of them.
4. **The layer** (`flats`): RGBA, every pixel exactly its region's colour; the outer ground (the
   region that holds most of the canvas border) transparent when asked.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

DEFAULT_GAP = 6  # canvas pixels: openings up to this wide are closed (tuned for a 2048 px page)
DEFAULT_MIN_AREA = 64  # canvas pixels: smaller regions (specks, hatching) join a neighbour
PALETTE_SIZE = 8  # colours k-means finds in the reference
_MEDIAN_SAMPLES = 1 << 20  # pixels sampled per channel for the region medians
_SEED_FAR = 2.0  # colours are read this many pixels or more away from the lines


@dataclass(frozen=True)
class FlatsOptions:
    gap: int = DEFAULT_GAP
    min_area: int = DEFAULT_MIN_AREA
    snap_to_palette: bool = False
    transparent_ground: bool = True

    def __post_init__(self) -> None:
        if self.gap < 0 or self.min_area < 0:
            raise ValueError("flats gap and min_area must be >= 0")


@dataclass(frozen=True)
class Regions:
    labels: np.ndarray  # (H, W) int32, 1..count, every pixel (lines included)
    count: int
    distance: np.ndarray  # (H, W) float32: each pixel's distance to the nearest line pixel


def flat_regions(
    lines: np.ndarray, gap: int = DEFAULT_GAP, min_area: int = DEFAULT_MIN_AREA
) -> Regions:
    """Label every pixel of a (H, W) bool line mask with its region (module docstring, step 1).

    A canvas without paper (all line), or without a region of `min_area`, is one region.
    """
    lines = np.asarray(lines, dtype=bool)
    paper = (~lines).view(np.uint8)
    # paper around the canvas, not line: the canvas edge closes no region
    distance = cv2.distanceTransform(
        cv2.copyMakeBorder(paper, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=1), cv2.DIST_L2, 3
    )[1:-1, 1:-1]
    if not paper.any():
        return Regions(np.ones(lines.shape, np.int32), 1, distance)
    area_count, areas = cv2.connectedComponents(paper, connectivity=4)
    seeds = (distance > gap / 2).view(np.uint8) if gap else paper
    seed_count, markers = cv2.connectedComponents(seeds, connectivity=4)
    has_seed = np.zeros(area_count, bool)
    has_seed[areas[seeds.astype(bool)]] = True
    thin = paper.astype(bool) & ~has_seed[areas]  # closed areas without a seed keep their own
    markers[thin] = seed_count + areas[thin]
    markers = _drop_specks(markers, min_area)
    if markers.max() == 0:
        return Regions(np.ones(lines.shape, np.int32), 1, distance)
    labels = _grow(markers, areas, paper.astype(bool))
    present = np.zeros(int(labels.max()) + 1, bool)
    present[labels] = True
    renumber = np.cumsum(present).astype(np.int32)  # 1..count in the order of the markers
    return Regions(renumber[labels], int(renumber[-1]), distance)


def _nearest_marker(markers: np.ndarray, where: np.ndarray) -> np.ndarray:
    """For the pixels `where`, the marker label of the nearest marked pixel (Euclidean)."""
    _, nearest = cv2.distanceTransformWithLabels(
        (markers == 0).view(np.uint8), cv2.DIST_L2, 3, labelType=cv2.DIST_LABEL_PIXEL
    )  # each marked pixel is its own label, numbered in raster order
    marked = markers.ravel()[np.flatnonzero(markers)]
    return marked[nearest[where] - 1]


def _grow(markers: np.ndarray, areas: np.ndarray, paper: np.ndarray) -> np.ndarray:
    """Every pixel labelled: paper by the nearest marker within its own closed area (so a label
    never jumps a line), lines by the region of the nearest paper."""
    labels = markers.copy()
    unmarked = paper & (markers == 0)
    labels[unmarked] = _nearest_marker(markers, unmarked)
    area_of = np.zeros(int(markers.max()) + 1, np.int32)
    area_of[markers[markers > 0]] = areas[markers > 0]
    has_marker = np.zeros(int(areas.max()) + 1, bool)
    has_marker[area_of[1:]] = True
    # rare: the nearest marker lies across a line although the pixel's own area has one; grow
    # those from their area's own labels (an area without a marker, a speck, keeps the nearest)
    jumped = unmarked & has_marker[areas] & (area_of[labels] != areas)
    while jumped.any():
        labels[jumped] = 0
        grown = cv2.dilate(labels.astype(np.float32), np.ones((3, 3), np.uint8)).astype(np.int32)
        reached = jumped & (grown > 0) & (area_of[grown] == areas)
        if not reached.any():  # cannot happen for a connected area; never loop forever
            break
        labels[reached] = grown[reached]
        jumped &= ~reached
    lines = ~paper
    if lines.any():
        labels[lines] = _nearest_marker(np.where(paper, labels, 0), lines)
    return labels


def _drop_specks(markers: np.ndarray, min_area: int) -> np.ndarray:
    """Markers whose region is smaller than `min_area` pixels become 0 (flooded by a neighbour)."""
    sizes = np.bincount(markers.ravel())
    small = sizes < min_area
    small[0] = False
    if small.any():
        markers = np.where(small[markers], 0, markers).astype(np.int32)
    return markers


def region_colours(colours: np.ndarray, regions: Regions) -> np.ndarray:
    """(count, 3) uint8 RGB: each region's median colour in CIELAB, read away from the lines
    where it can be.

    colours: (H, W, 3) uint8 RGB at canvas size. Large canvases are read on an even sample of at
    most `_MEDIAN_SAMPLES` pixels; a region the sample misses is read on all its pixels.
    """
    labels, count = regions.labels, regions.count
    # read each region where it is most its own: far from the lines, else on its paper, else all
    use = np.zeros(labels.shape, bool)
    for tier in (regions.distance >= _SEED_FAR, regions.distance > 0, np.ones_like(use)):
        unread = np.bincount(labels[use], minlength=count + 1) == 0
        use |= tier & unread[labels]
    step = max(1, int(np.ceil(np.sqrt(labels.size / _MEDIAN_SAMPLES))))
    sampled = np.zeros_like(use)
    sampled[::step, ::step] = True
    missed = np.bincount(labels[use & sampled], minlength=count + 1) == 0
    pick = use & (sampled | missed[labels])
    lab = cv2.cvtColor(colours, cv2.COLOR_RGB2LAB)[pick]  # (P, 3) uint8, OpenCV's 8-bit Lab
    chosen = _nearest_to_medians(lab, labels[pick], count)
    return colours[pick][chosen]


def _nearest_to_medians(lab: np.ndarray, labels: np.ndarray, count: int) -> np.ndarray:
    """(count,) indices into the (P, 3) samples: per label 1..count (each has samples), the
    sample nearest in Lab to the per-channel median of its samples. An actual colour of the
    region, so a flat region keeps its exact colour (a Lab median converted back to RGB would
    be off by a few levels)."""
    totals = np.bincount(labels, minlength=count + 1)[1:]
    starts = np.concatenate([[0], np.cumsum(totals)[:-1]])
    middle = starts + totals // 2
    medians = np.empty((count, 3), np.float32)
    for channel in range(3):
        order = np.lexsort((lab[:, channel], labels))
        medians[:, channel] = lab[order[middle], channel]
    distance = np.square(lab.astype(np.float32) - medians[labels - 1]).sum(axis=1)
    return np.lexsort((distance, labels))[starts]


def reference_palette(reference: np.ndarray, size: int = PALETTE_SIZE) -> np.ndarray:
    """(k, 3) uint8 RGB, k <= size: the reference's dominant colours, by k-means in CIELAB on an
    even sample of its pixels (deterministic), each one a colour the reference really has."""
    rgb = np.ascontiguousarray(reference[..., :3], dtype=np.uint8)
    step = max(1, int(np.ceil(np.sqrt(rgb.shape[0] * rgb.shape[1] / 40_000))))
    samples = np.ascontiguousarray(rgb[::step, ::step]).reshape(-1, 3)
    lab = cv2.cvtColor(samples[None], cv2.COLOR_RGB2LAB)[0].astype(np.float32)
    distinct = np.unique(lab, axis=0)
    if len(distinct) <= size:
        centres = distinct
    else:
        cv2.setRNGSeed(0)
        criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 0.5)
        _, _, centres = cv2.kmeans(lab, size, None, criteria, 3, cv2.KMEANS_PP_CENTERS)
    # each centre as the reference's own pixel nearest to it: colours the reference really has
    nearest = np.linalg.norm(lab[None] - centres[:, None], axis=2).argmin(axis=1)
    return np.unique(samples[nearest], axis=0)


def snap_to_palette(colours: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Each (N, 3) uint8 RGB colour replaced by the nearest palette colour in CIELAB."""
    lab = cv2.cvtColor(colours[None], cv2.COLOR_RGB2LAB)[0].astype(np.float32)
    palette_lab = cv2.cvtColor(palette[None], cv2.COLOR_RGB2LAB)[0].astype(np.float32)
    nearest = np.linalg.norm(lab[:, None] - palette_lab[None], axis=2).argmin(axis=1)
    return palette[nearest]


def ground_region(labels: np.ndarray) -> int:
    """The label that holds most of the canvas border: the paper around the figure."""
    border = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    return int(np.bincount(border).argmax())


def flats(
    colours: np.ndarray,
    lines: np.ndarray,
    reference: np.ndarray | None = None,
    options: FlatsOptions = FlatsOptions(),
) -> np.ndarray:
    """(H, W, 4) uint8 RGBA flats of the line art `lines` (bool, canvas size), coloured after the
    model's `colours` ((H, W, 3) uint8 RGB at canvas size); `reference` (RGB) for the palette."""
    regions = flat_regions(lines, options.gap, options.min_area)
    labels, count = regions.labels, regions.count
    palette_colours = region_colours(colours, regions)
    if options.snap_to_palette:
        if reference is None:
            raise ValueError("snapping flats to the reference's palette needs a reference")
        palette_colours = snap_to_palette(palette_colours, reference_palette(reference))
    table = np.concatenate([palette_colours, np.full((count, 1), 255, np.uint8)], axis=1)
    if options.transparent_ground:
        table[ground_region(labels) - 1] = 0
    return table[labels - 1]
