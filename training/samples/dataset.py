"""Training samples for SCFT: sketch, augmented-self reference, ground truth, correspondence.

The dataset reads a folder of colour images of any size and common format (PNG, JPEG, WebP, BMP,
TIFF, GIF; 8- or 16-bit; with alpha, which is composited on white; palette images), or a manifest
listing them. Where drawn line art exists for an image it is used as the sketch instead of XDoG:
a file with the same relative path and stem in `line_art_dir`, or the manifest's `lineart` column.
Stems pair case-insensitively and with the usual line-art suffixes (`hero.png`, `HERO_lines.png`);
without `line_art_dir`, such a suffixed file beside its colour image is taken as its line art.
Every file left out or left unpaired is named with the reason (`Scan.notes`, `skipped_files`).

Each sample is decided by (seed, epoch, index) alone, so a resumed run sees the same samples: call
`set_epoch` at the start of every epoch (in the worker processes too: with `persistent_workers` the
workers keep the epoch they were started with).
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import Dataset

from colord.model.line_scale import stroke_width
from colord.model.pixels import SIZE_MULTIPLE, on_white, to_signed
from colord.training.samples.augment import (
    ReferenceMotion,
    check_warp_settings,
    jitter_colors,
    thin_plate_spline_warp,
)
from colord.training.samples.sketch import binarize_line_art, xdog

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"})
MANIFEST_SUFFIXES = frozenset({".csv", ".jsonl", ".ndjson", ".json"})
# What PIL raises for a file it cannot decode (truncated data: OSError; some codecs the others).
DECODE_ERRORS = (
    OSError,
    ValueError,
    SyntaxError,
    UnidentifiedImageError,
    Image.DecompressionBombError,
)


class ImageReadError(ValueError):
    """A file that is not a readable image."""


def _to_rgb(image: Image.Image) -> np.ndarray:
    """(H, W, 3) uint8 RGB of any PIL image; alpha is composited on white, 16 bits become 8."""
    if image.mode in ("I;16", "I;16L", "I;16B", "I"):
        grey = np.asarray(image, dtype=np.float64) / 257.0
        grey = np.clip(np.rint(grey), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = np.asarray(image.convert("RGBA"))
        return on_white(rgba[..., :3], rgba[..., 3])
    return np.asarray(image.convert("RGB"))


def load_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 RGB, honouring EXIF orientation.

    Raises `ImageReadError` naming the file when it cannot be read.
    """
    try:
        with Image.open(path) as image:
            return _to_rgb(ImageOps.exif_transpose(image))
    except DECODE_ERRORS as error:
        raise ImageReadError(f"{path}: not a readable image ({error})") from error


def load_line_art(path: str | Path) -> np.ndarray:
    """Read drawn line art as (H, W) uint8 grey: dark strokes on white (transparent = white)."""
    return cv2.cvtColor(load_rgb(path), cv2.COLOR_RGB2GRAY)


def _unreadable_reason(path: Path, error: Exception) -> str:
    if isinstance(error, Image.DecompressionBombError):
        return f"refused by Pillow's size limit, PIL.Image.MAX_IMAGE_PIXELS ({error})"
    if path.stat().st_size == 0:
        return "empty file"
    if isinstance(error, UnidentifiedImageError):
        return "not an image Pillow can read"
    return f"unreadable ({error})"


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file header alone, after EXIF orientation."""
    with Image.open(path) as image:
        width, height = image.size
        orientation = image.getexif().get(0x0112, 1)
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


@dataclass(frozen=True)
class Entry:
    """One training picture and, where it exists, its drawn line art."""

    image: Path
    line_art: Path | None = None


def _images_under(folder: Path) -> list[Path]:
    """Image files under `folder`, recursively and sorted, leaving out hidden files and folders."""
    return [
        path
        for path in sorted(folder.rglob("*"))
        if path.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
        and path.is_file()
    ]


# Stem endings that mark a line-art file, longest first so `_lineart` is not read as `_line`.
LINE_ART_SUFFIXES = ("_lineart", "-lineart", "_lines", "-lines", "_line", "-line", "_ink", "-ink")


def _key(relative: Path, *, strip_suffix: bool) -> tuple[str, ...]:
    """What a file pairs by: its folders and stem, case-folded, less a line-art ending if asked."""
    stem = relative.stem.casefold()
    if strip_suffix:
        for ending in LINE_ART_SUFFIXES:
            if stem.endswith(ending) and len(stem) > len(ending):
                stem = stem[: -len(ending)]
                break
    return (*(part.casefold() for part in relative.parent.parts), stem)


@dataclass
class Scan:
    """The colour images of a folder with their line art, and every file that was not paired."""

    entries: list[Entry]
    notes: list[tuple[Path, str]]  # (file, why it was left unpaired or which pair it lost to)


def scan_folder(folder: Path, line_art_dir: Path | None = None) -> list[Entry]:
    """Every image under `folder` (recursively, sorted), each paired with its line art if any."""
    return scan_folder_report(folder, line_art_dir).entries


def scan_folder_report(folder: Path, line_art_dir: Path | None = None) -> Scan:
    """Every image under `folder` (recursively, sorted), each paired with its line art if any.

    Line art pairs by relative path and stem, case-insensitively, with or without a line-art
    ending: `folder/cats/tom.jpg` with `line_art_dir/cats/Tom_lines.png`. Without `line_art_dir`,
    `folder/cats/tom_lines.png` is the line art of `folder/cats/tom.jpg` (and not a colour image).
    Files inside `line_art_dir` are never taken as colour images, so it may sit inside `folder`.
    """
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    if line_art_dir is not None and not line_art_dir.is_dir():
        raise FileNotFoundError(f"line art folder not found: {line_art_dir}")
    inside = line_art_dir.resolve() if line_art_dir else None
    images = [
        path
        for path in _images_under(folder)
        if not (inside and path.resolve().is_relative_to(inside))
    ]
    if line_art_dir is not None:
        line_root, line_files = line_art_dir, _images_under(line_art_dir)
    else:  # suffixed files beside a colour image of the same stem
        stems = {_key(p.relative_to(folder), strip_suffix=False) for p in images}

        def beside_its_image(path: Path) -> bool:
            relative = path.relative_to(folder)
            stripped = _key(relative, strip_suffix=True)
            return stripped != _key(relative, strip_suffix=False) and stripped in stems

        line_root, line_files = folder, [p for p in images if beside_its_image(p)]
        images = [p for p in images if p not in set(line_files)]
    candidates: dict[tuple[str, ...], list[Path]] = {}
    for path in line_files:  # under its stem with and without the ending: `tom_line` may be a name
        relative = path.relative_to(line_root)
        for key in {_key(relative, strip_suffix=True), _key(relative, strip_suffix=False)}:
            candidates.setdefault(key, []).append(path)
    for paths in candidates.values():  # an exact stem first, then by name
        paths.sort(key=lambda path: (path.stem.casefold().endswith(LINE_ART_SUFFIXES), path))

    entries, notes, used = [], [], set()
    for path in images:
        matches = candidates.get(_key(path.relative_to(folder), strip_suffix=False), [])
        if not matches and line_art_dir is not None:
            notes.append((path, "no line art of the same name: XDoG lines are used"))
        for extra in matches[1:]:
            notes.append((extra, f"another line art of {path.name}, {matches[0].name}, is used"))
        used.update(matches)
        entries.append(Entry(path, matches[0] if matches else None))
    for path in line_files:
        if path not in used:
            notes.append((path, "line art with no colour image of the same name"))
    return Scan(entries, notes)


def read_manifest(path: Path) -> list[Entry]:
    """Entries from a CSV file (header with `image` and optional `lineart` columns) or JSON lines
    (objects with those keys). Relative paths are taken from the manifest's folder."""
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
    with path.open(newline="", encoding="utf-8") as stream:
        if path.suffix.lower() == ".csv":
            rows = list(csv.DictReader(stream))
        else:
            lines = enumerate(stream, 1)
            rows = [_json_row(line, path, number) for number, line in lines if line.strip()]
    entries = []
    for number, row in enumerate(rows, 1):
        image = row.get("image")
        if not image:
            raise ValueError(f"{path}: entry {number} has no 'image'")
        line_art = row.get("lineart")
        entries.append(Entry(path.parent / image, path.parent / line_art if line_art else None))
    return entries


def _json_row(line: str, path: Path, number: int) -> dict[str, Any]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: line {number} is not JSON ({error.msg})") from None
    if not isinstance(row, dict):
        raise ValueError(f"{path}: line {number} is not a JSON object")
    return row


def _crop_box(
    rng: np.random.Generator,
    image_hw: tuple[int, int],
    out_hw: tuple[int, int],
    min_fraction: float,
) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a random crop with the output's aspect ratio, covering between
    `min_fraction` and all of the largest such box that fits in the image, along each side."""
    image_h, image_w = image_hw
    aspect = out_hw[1] / out_hw[0]
    full_w = min(image_w, image_h * aspect)
    fraction = rng.uniform(min_fraction, 1.0)
    width = max(1, min(image_w, round(full_w * fraction)))
    height = max(1, min(image_h, round(full_w * fraction / aspect)))
    top = int(rng.integers(0, image_h - height + 1))
    left = int(rng.integers(0, image_w - width + 1))
    return top, left, height, width


def _crop_resize(image: np.ndarray, box: tuple[int, int, int, int], out_hw: tuple[int, int]):
    top, left, height, width = box
    crop = image[top : top + height, left : left + width]
    shrinking = height > out_hw[0] or width > out_hw[1]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(crop, (out_hw[1], out_hw[0]), interpolation=interpolation)


def _scale_box(box, from_hw, to_hw) -> tuple[int, int, int, int]:
    """The same region of a picture stored at another resolution."""
    sy, sx = to_hw[0] / from_hw[0], to_hw[1] / from_hw[1]
    top, left = round(box[0] * sy), round(box[1] * sx)
    return top, left, max(1, round(box[2] * sy)), max(1, round(box[3] * sx))


def _signed_unit(image: np.ndarray) -> torch.Tensor:
    """uint8 (H, W) or (H, W, C) -> float32 (C, H, W) in [-1, 1]."""
    channels_first = image[None] if image.ndim == 2 else image.transpose(2, 0, 1)
    return torch.from_numpy(to_signed(np.ascontiguousarray(channels_first)))


class ColorizationDataset(Dataset):
    """SCFT training samples from a folder of colour images or a manifest file.

    Each sample is a dict: `sketch` float32 (1, H, W) in [-1, 1] (background +1, lines -1);
    `target` float32 (3, H, W) in [-1, 1], I_gt = a(I); `reference` float32 (3, H, W),
    I_r = s(I_gt), all zeros when dropped; `correspondence` float32 (H, W, 2), for each sketch
    pixel the (x', y') reference pixel where its content lands, NaN where none (everywhere when the
    reference is dropped); `has_reference` bool scalar tensor; `index` int.

    Files that cannot be read, are smaller than `min_side` pixels, or whose line art has another
    aspect ratio (it would be stretched) are skipped; each is logged by name with the reason and
    kept in `skipped_files`, the counts by kind in `skipped`. Unpaired files are in `pairing_notes`.
    """

    def __init__(
        self,
        source: str | Path,
        *,
        size: int | tuple[int, int] = 256,  # training size, int or (H, W), multiples of 16
        line_art_dir: str | Path | None = None,  # drawn line art by relative path and stem
        seed: int = 0,
        zero_reference_probability: float = 0.1,
        min_side: int = 64,  # smaller images are skipped
        min_crop_fraction: float = 0.7,  # random crops span this much of the image side, or more
        max_color_offset: float = 50.0,  # a(·): U[-max, max] per RGB channel, 0–255 scale
        warp_grid_size: int = 4,  # s(·): control grid of the thin-plate spline
        warp_max_displacement: float = 0.15,  # s(·): control point moves, [-1, 1] frame units
        reference_motion: ReferenceMotion | None = None,  # s(·): a random similarity as well
        sketch_options: dict[str, float] | None = None,  # keyword arguments for `xdog`
    ) -> None:
        """`source` is a folder of images, or a manifest (.csv, .jsonl) with image and lineart."""
        height, width = (size, size) if isinstance(size, int) else size
        if height <= 0 or width <= 0 or height % SIZE_MULTIPLE or width % SIZE_MULTIPLE:
            raise ValueError(
                f"training size must be positive multiples of {SIZE_MULTIPLE}, got {size}"
            )
        if not 0.0 <= zero_reference_probability <= 1.0:
            raise ValueError("zero_reference_probability must lie in [0, 1]")
        if not 0.0 < min_crop_fraction <= 1.0:
            raise ValueError("min_crop_fraction must lie in (0, 1]")
        check_warp_settings(warp_grid_size, warp_max_displacement)
        self.size_hw = (height, width)
        self.seed = seed
        self.zero_reference_probability = zero_reference_probability
        self.min_side = min_side
        self.min_crop_fraction = min_crop_fraction
        self.max_color_offset = max_color_offset
        self.warp_grid_size = warp_grid_size
        self.warp_max_displacement = warp_max_displacement
        self.reference_motion = reference_motion
        self.sketch_options = dict(sketch_options or {})
        self.epoch = 0

        source = Path(source)
        if source.suffix.lower() in MANIFEST_SUFFIXES and not source.is_dir():
            if line_art_dir is not None:
                raise ValueError("give line art in the manifest or as line_art_dir, not both")
            scan = Scan(read_manifest(source), [])
            self.root = source.parent
        else:
            scan = scan_folder_report(source, Path(line_art_dir) if line_art_dir else None)
            self.root = source
        self.pairing_notes = scan.notes
        self.skipped: Counter[str] = Counter()
        self.skipped_files: list[tuple[Path, str]] = []
        self.entries = [entry for entry in scan.entries if self._usable(entry)]
        self._reported: set[Path] = set()
        for path, note in self.pairing_notes:
            logger.info("%s: %s", path, note)
        for path, reason in self.skipped_files:
            logger.warning("skipped %s: %s", path, reason)
        if not self.entries:
            raise ValueError(f"no usable training images in {source} ({self._describe_skipped()})")
        if self.skipped:
            logger.warning("skipped %s in %s", self._describe_skipped(), source)
        paired = sum(entry.line_art is not None for entry in self.entries)
        logger.info("%d training images, %d with drawn line art", len(self.entries), paired)

    def _usable(self, entry: Entry) -> bool:
        """Whether the entry's files open, are large enough and match, from the headers only;
        if not, the file and the reason go to `skipped_files`."""
        sizes = []
        for path in (entry.image, entry.line_art):
            if path is None:
                continue
            try:
                sizes.append(_image_size(path))
            except DECODE_ERRORS as error:
                return self._skip(path, "unreadable", _unreadable_reason(path, error))
        (width, height), line_size = sizes[0], sizes[1:]
        if min(width, height) < self.min_side:
            kind = f"smaller than {self.min_side} px"
            return self._skip(entry.image, kind, f"{kind} ({width}×{height})")
        if line_size and abs(line_size[0][0] * height / (line_size[0][1] * width) - 1) > 0.01:
            return self._skip(
                entry.image,
                "line art of another aspect ratio",
                f"its line art {entry.line_art} is {line_size[0][0]}×{line_size[0][1]}, the image "
                f"{width}×{height}: the pair is refused rather than stretched",
            )
        return True

    def _skip(self, path: Path, kind: str, reason: str) -> bool:
        self.skipped[kind] += 1
        self.skipped_files.append((path, reason))
        return False

    def _describe_skipped(self) -> str:
        return ", ".join(f"{count} {reason}" for reason, count in sorted(self.skipped.items()))

    def report(self) -> str:
        """Every skipped or unpaired file with its reason, one a line (empty when none)."""
        lines = [f"skipped {path}: {reason}" for path, reason in self.skipped_files]
        lines += [f"{path}: {note}" for path, note in self.pairing_notes]
        return "".join(line + "\n" for line in lines)

    def fingerprint(self) -> dict[str, int]:
        """The size in bytes of every file trained on, by path relative to the data's folder:
        what a resumed run checks to tell that the data is the same."""
        root = self.root.resolve()
        files = {}
        for entry in self.entries:
            for path in (entry.image, entry.line_art):
                if path is not None:
                    files[os.path.relpath(path.resolve(), root)] = path.stat().st_size
        return files

    def median_line_width(self, count: int = 64) -> float | None:
        """The median stroke width, in pixels, of the sketches of up to `count` samples spread
        over the dataset (epoch 0): the scale the trained model knows, which its checkpoint
        records for the engine's automatic working size."""
        step = max(1, len(self) // count)
        widths = [
            stroke_width(self[index]["sketch"][0].numpy() < 0)
            for index in range(0, len(self), step)[:count]
        ]
        widths = [width for width in widths if width is not None]
        return float(np.median(widths)) if widths else None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self.entries):
            raise IndexError(f"index {index} out of range for {len(self.entries)} images")
        rng = np.random.default_rng([self.seed, self.epoch, index])
        # A file that passed the header check can still fail to decode (truncated data): take the
        # next one, so that a long run never stops on one bad file.
        for offset in range(len(self.entries)):
            entry = self.entries[(index + offset) % len(self.entries)]
            try:
                image = load_rgb(entry.image)
                line_art = load_line_art(entry.line_art) if entry.line_art else None
            except ImageReadError as error:
                if entry.image not in self._reported:
                    self._reported.add(entry.image)
                    logger.warning("skipping %s", error)
                continue
            return self._sample(image, line_art, rng, index)
        raise RuntimeError(f"none of the {len(self.entries)} training images could be decoded")

    def _sample(
        self, image: np.ndarray, line_art: np.ndarray | None, rng: np.random.Generator, index: int
    ) -> dict[str, Any]:
        box = _crop_box(rng, image.shape[:2], self.size_hw, self.min_crop_fraction)
        picture = _crop_resize(image, box, self.size_hw)
        if line_art is None:
            sketch = xdog(picture, **self.sketch_options)
        else:
            line_box = _scale_box(box, image.shape[:2], line_art.shape[:2])
            sketch = binarize_line_art(_crop_resize(line_art, line_box, self.size_hw))
        target, _ = jitter_colors(picture, rng, max_offset=self.max_color_offset)
        reference, correspondence = thin_plate_spline_warp(
            target,
            rng,
            grid_size=self.warp_grid_size,
            max_displacement=self.warp_max_displacement,
            motion=self.reference_motion,
        )
        has_reference = bool(rng.random() >= self.zero_reference_probability)
        reference_tensor = _signed_unit(reference)
        if not has_reference:
            reference_tensor.zero_()
            correspondence[:] = np.nan
        return {
            "sketch": _signed_unit(sketch),
            "reference": reference_tensor,
            "target": _signed_unit(target),
            "correspondence": torch.from_numpy(correspondence),
            "has_reference": torch.tensor(has_reference),
            "index": index,
        }
