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
4. **The layer** (`flats`; `flats_layer` from the engine's line mask and a request's
   reference): RGBA, every pixel exactly its region's colour; the outer ground (the region
   that holds most of the canvas border) transparent when asked.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from colord.daemon import imaging

PAGE_SIDE = 2048  # the page the defaults are made for
DEFAULT_GAP = 6  # canvas pixels: openings up to this wide are closed (tuned for a 2048 px page)
DEFAULT_MIN_AREA = 64  # canvas pixels: smaller regions (specks, hatching) join a neighbour
PALETTE_SIZE = 8  # colours k-means finds in the reference
_MEDIAN_SAMPLES = 1 << 20  # pixels sampled per channel for the region medians
_GROW_MARGIN = 64  # canvas rows a band of `_grow` sees beyond its own


@dataclass(frozen=True)
class FlatsOptions:
    gap: int = DEFAULT_GAP
    min_area: int = DEFAULT_MIN_AREA
    snap_to_palette: bool = False
    transparent_ground: bool = True

    def __post_init__(self) -> None:
        if self.gap < 0 or self.min_area < 0:
            raise ValueError("flats gap and min_area must be >= 0")

    @classmethod
    def for_canvas(cls, long_side: int, **choices: bool) -> FlatsOptions:
        """The defaults, made for a 2048 px page, scaled to a canvas of this long side (gap by
        the side, min_area by the area; at least 1 each), with the given `choices`."""
        scale = long_side / PAGE_SIDE
        gap = max(1, round(DEFAULT_GAP * scale))
        return cls(gap, max(1, round(DEFAULT_MIN_AREA * scale * scale)), **choices)


@dataclass(frozen=True)
class Regions:
    labels: np.ndarray  # (H, W) int32, 1..count, every pixel (lines included)
    count: int
    depth: np.ndarray  # (H, W) uint8: 0 on the lines, 1 on paper next to them, 2 farther


def flat_regions(
    lines: np.ndarray, gap: int = DEFAULT_GAP, min_area: int = DEFAULT_MIN_AREA
) -> Regions:
    """Label every pixel of a (H, W) line mask (bool, or uint8 1 on lines) with its region
    (module docstring, step 1).

    A canvas without paper (all line), or without a region of `min_area`, is one region.
    """
    paper = (np.asarray(lines) == 0).view(np.uint8)
    far = cv2.erode(paper, np.ones((3, 3), np.uint8))  # the canvas edge closes no region
    depth = cv2.add(paper, far)
    del far
    one_region = Regions(np.ones(paper.shape, np.int32), 1, depth)
    if not paper.any():
        return one_region
    area_count, areas = cv2.connectedComponents(paper, connectivity=4)  # 0 on the lines
    seeds = _clear_of_lines(paper, gap)
    seed_count, markers = cv2.connectedComponents(seeds, connectivity=4)
    has_seed = np.zeros(area_count, bool)
    has_seed[areas[seeds.view(bool)]] = True
    del seeds
    thin_area = ~has_seed  # closed areas too thin to hold a seed keep their own region
    thin_area[0] = False
    if thin_area.any():
        thin = thin_area[areas]
        markers[thin] = seed_count + areas[thin]
        del thin
    count = _drop_specks(markers, min_area)
    if count == 0:
        return one_region
    _grow(markers, areas)
    return Regions(markers, count, depth)


def _clear_of_lines(paper: np.ndarray, gap: int) -> np.ndarray:
    """(H, W) uint8, 1 on paper farther than gap / 2 from every line: a disc of that radius
    fits, so no seed passes an opening `gap` pixels wide or narrower."""
    if gap == 0:
        return paper
    radius = (gap + 1) // 2
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.erode(paper, disc)  # outside the canvas counts as paper


def _drop_specks(markers: np.ndarray, min_area: int) -> int:
    """In place: markers of fewer than `min_area` pixels become 0 (flooded by a neighbour), the
    rest are numbered 1..count in their order; returns count."""
    keep = np.bincount(markers.ravel()) >= min_area
    keep[0] = False
    renumber = np.where(keep, np.cumsum(keep), 0).astype(np.int32)
    np.take(renumber, markers, out=markers, mode="clip")  # no second canvas-sized array
    return int(keep.sum())


def _grow(labels: np.ndarray, areas: np.ndarray) -> None:
    """Label every unmarked pixel (0) in place with its nearest marker (Euclidean), then pull
    back paper whose nearest marker lies across a line while its own closed area has one, so
    a label never jumps a line. Lines take the nearest region on either side.

    Done in bands of rows, in parallel, each seeing `_GROW_MARGIN` rows beyond its own: the
    nearest marker is exact within that reach; a pixel farther from every marker (deep in a
    wide patch of ink) takes the nearest one its band sees, still a region beside it."""
    unmarked = labels == 0
    if not unmarked.any():
        return
    has_marker = np.zeros(int(areas.max()) + 1, bool)
    has_marker[areas[~unmarked]] = True
    has_marker[0] = False  # the lines may take any side
    pending = np.zeros(labels.shape, bool)
    height, width = labels.shape
    rows = max(4 * _GROW_MARGIN, imaging.BAND_PIXELS // width)
    tops = range(0, height, rows)

    def fill(index: int) -> None:
        top, bottom = tops[index], min(height, tops[index] + rows)
        start, stop = max(0, top - _GROW_MARGIN), min(height, bottom + _GROW_MARGIN)
        window = unmarked[start:stop]
        if window.all():
            return  # no marker within reach: left to the whole-canvas pass below
        _, nearest = cv2.distanceTransformWithLabels(
            window.view(np.uint8), cv2.DIST_L2, 3, labelType=cv2.DIST_LABEL_PIXEL
        )  # each marked pixel is its own label, numbered from 1 in raster order
        marked = ~window  # bands write only unmarked pixels: these stay as they are
        marked_label, marked_area = labels[start:stop][marked], areas[start:stop][marked]
        own = unmarked[top:bottom]
        source = nearest[top - start : bottom - start][own] - 1
        labels[top:bottom][own] = marked_label[source]
        own_area = areas[top:bottom][own]
        pending[top:bottom][own] = (marked_area[source] != own_area) & has_marker[own_area]

    imaging._in_parallel(fill, len(tops))
    left = labels == 0
    if left.any():
        _, nearest = cv2.distanceTransformWithLabels(
            left.view(np.uint8), cv2.DIST_L2, 3, labelType=cv2.DIST_LABEL_PIXEL
        )
        labels[left] = labels[~left][nearest[left] - 1]
    if pending.any():
        _pull_back(labels, areas > 0, pending)


def _pull_back(labels: np.ndarray, paper: np.ndarray, pending: np.ndarray) -> None:
    """Rare: the `pending` paper pixels, labelled across a line, take instead a 4-neighbour's
    label, step by step (a 4-neighbour on paper lies in the same closed area)."""
    while pending.any():
        own = np.where(paper & ~pending, labels, 0)
        grown = np.zeros_like(own)
        grown[1:] = own[:-1]
        np.maximum(grown[:-1], own[1:], out=grown[:-1])
        np.maximum(grown[:, 1:], own[:, :-1], out=grown[:, 1:])
        np.maximum(grown[:, :-1], own[:, 1:], out=grown[:, :-1])
        reached = pending & (grown > 0)
        if not reached.any():  # cannot happen for a connected area; never loop forever
            break
        labels[reached] = grown[reached]
        pending &= ~reached


def region_colours(colours: np.ndarray, regions: Regions) -> np.ndarray:
    """(count, 3) uint8 RGB: per region, its actual colour nearest the per-channel median in
    CIELAB of the model's colours, read where the region is most its own: away from the lines
    where it reaches that far, else on its paper, else on its lines.

    colours: (H, W, 3 or 4) uint8 RGB(A) at canvas size. Large canvases are read on an even
    grid of at most `_MEDIAN_SAMPLES` pixels; a region the grid misses is read on all its pixels.
    """
    labels, depth, count = regions.labels, regions.depth, regions.count
    step = max(1, int(np.ceil(np.sqrt(labels.size / _MEDIAN_SAMPLES))))
    sample = labels[::step, ::step].ravel()
    sample_depth = depth[::step, ::step].ravel()
    sample_rgb = colours[::step, ::step, :3].reshape(-1, 3)
    missed = np.bincount(sample, minlength=count + 1) == 0
    missed[0] = False
    if missed.any():
        extra = missed[labels]
        sample = np.concatenate([sample, labels[extra]])
        sample_depth = np.concatenate([sample_depth, depth[extra]])
        sample_rgb = np.concatenate([sample_rgb, colours[extra][:, :3]])
    deepest = np.zeros(count + 1, np.uint8)
    np.maximum.at(deepest, sample, sample_depth)
    pick = sample_depth == deepest[sample]
    rgb = np.ascontiguousarray(sample_rgb[pick])
    lab = cv2.cvtColor(rgb[None], cv2.COLOR_RGB2LAB)[0]  # OpenCV's 8-bit Lab
    return rgb[_nearest_to_medians(lab, sample[pick], count)]


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
    """(H, W, 4) uint8 RGBA flats of the line mask `lines` ((H, W) bool, or uint8 1 on lines),
    coloured after the model's `colours` ((H, W, 3 or 4) uint8 RGB(A), the same size);
    `reference` ((h, w, 3) uint8 RGB) for the palette."""
    if options.snap_to_palette and reference is None:
        raise ValueError("snapping flats to the reference's palette needs a reference")
    regions = flat_regions(lines, options.gap, options.min_area)
    region_rgb = region_colours(colours, regions)
    if reference is not None and options.snap_to_palette:
        region_rgb = snap_to_palette(region_rgb, reference_palette(reference))
    # one uint32 per RGBA pixel, row 0 unused (labels start at 1), so one gather paints the layer
    table = np.zeros((regions.count + 1, 4), np.uint8)
    table[1:, :3] = region_rgb
    table[1:, 3] = 255
    if options.transparent_ground:
        table[ground_region(regions.labels)] = 0
    packed = table.view(np.uint32).reshape(-1)[regions.labels]
    return packed.view(np.uint8).reshape(*regions.labels.shape, 4)


def flats_layer(
    lines: np.ndarray,
    plain: np.ndarray,
    reference: np.ndarray | None = None,
    options: FlatsOptions = FlatsOptions(),
) -> np.ndarray:
    """The engine's flats output, (H, W, 4) uint8 RGBA: `lines` the line art's (H, W) uint8
    line mask as the engine read it (`imaging.read_line_art`, so the line art is read once per
    request), `plain` the plain coloured output at its size ((H, W, 3 or 4) uint8, best before
    the lines are drawn over it), `reference` as the request carries it (any format
    `imaging.check_image` takes). Raises InputError for images the engine cannot use."""
    if plain.shape[:2] != lines.shape:
        raise imaging.InputError(
            f"the coloured output is {plain.shape[1]}x{plain.shape[0]}, the line art "
            f"{lines.shape[1]}x{lines.shape[0]}"
        )
    if reference is not None:
        reference = imaging.as_rgb(imaging.flatten_in_bands(reference, "reference"))
    return flats(plain, lines, reference, options)
