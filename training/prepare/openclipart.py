"""Open Clip Art (public domain) as colour images for XDoG sketches: the illustrations only.

Each file is drawn once on a transparent canvas; the drawing's own bounding box is cut out (many
files are whole pages with a small drawing on them) and judged: flags, drawings under `min_side`
pixels (icons), long strips (borders, banners) and near-grey drawings are left out. Kept drawings
are composited on white and scaled to `size` pixels on their long side.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from colord.model.pixels import on_white
from colord.training.prepare.common import (
    describe,
    parallel_map,
    save_png,
    split_by_design,
    write_summary,
)
from colord.training.prepare.svg_render import SvgRenderError, intrinsic_size, render_svg_rgba

DEFAULT_SOURCE = Path("/usr/share/openclipart/svg")  # Debian's openclipart-svg package
RENDER_LONG_SIDE = 768  # cap on the drawing before its bounding box is cut out, in pixels
MAX_ASPECT = 3.0
COLORFUL_CHROMA = 40  # max - min of R, G, B (0-255) for a pixel to count as coloured
MIN_COLORFUL_SHARE = 0.1  # of the drawing's opaque pixels


@dataclass(frozen=True)
class ClipArtTask:
    svg_path: Path
    out_path: Path
    size: int
    min_side: int


def is_flag(path: Path) -> bool:
    return any("flag" in part.lower() for part in path.parts)


def content_box(alpha: np.ndarray) -> tuple[int, int, int, int] | None:
    """(top, left, bottom, right) of the pixels with any opacity, None if there are none."""
    rows, cols = np.nonzero(alpha.max(axis=1))[0], np.nonzero(alpha.max(axis=0))[0]
    if rows.size == 0:
        return None
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def colorful_share(rgba: np.ndarray) -> float:
    """Share of the opaque pixels whose colour is clearly away from grey."""
    opaque = rgba[..., 3] >= 128
    if not opaque.any():
        return 0.0
    rgb = rgba[..., :3][opaque].astype(np.int16)
    chroma = rgb.max(axis=1) - rgb.min(axis=1)
    return float((chroma >= COLORFUL_CHROMA).mean())


def judge_and_render(task: ClipArtTask) -> str:
    """Write the kept illustration to `task.out_path`; returns "ok" or why it was left out."""
    if _drawn(task.out_path, task.size):
        return "ok"
    try:
        svg = task.svg_path.read_bytes()
        width, height = intrinsic_size(svg)
        if min(width, height) < task.min_side:  # the page itself is small: no need to draw it
            return f"smaller than {task.min_side} px (icons)"
        scale = min(1.0, RENDER_LONG_SIDE / max(width, height))
        rgba = render_svg_rgba(
            svg, width=max(1, round(width * scale)), height=max(1, round(height * scale))
        )
    except (OSError, SvgRenderError):
        return "failed to render"
    box = content_box(rgba[..., 3])
    if box is None:
        return "empty"
    top, left, bottom, right = box
    drawn_h, drawn_w = (bottom - top) / scale, (right - left) / scale
    if min(drawn_h, drawn_w) < task.min_side:
        return f"smaller than {task.min_side} px (icons)"
    if max(drawn_h, drawn_w) > MAX_ASPECT * min(drawn_h, drawn_w):
        return "long strips"
    drawing = rgba[top:bottom, left:right]
    if colorful_share(drawing) < MIN_COLORFUL_SHARE:
        return "near-grey"
    factor = task.size / max(drawing.shape[:2])
    out_w = max(16, round(drawing.shape[1] * factor))
    out_h = max(16, round(drawing.shape[0] * factor))
    interpolation = cv2.INTER_AREA if factor < 1 else cv2.INTER_CUBIC
    resized = cv2.resize(drawing, (out_w, out_h), interpolation=interpolation)
    save_png(on_white(resized[..., :3], resized[..., 3]), task.out_path)
    return "ok"


def _drawn(path: Path, size: int) -> bool:
    """Whether an earlier run kept this drawing, at this size."""
    try:
        with Image.open(path) as image:
            return max(image.size) == size
    except (OSError, ValueError):
        return False


def unique_files(source: Path) -> tuple[list[Path], Counter[str]]:
    """The SVG files under `source` once each: links and identical copies in other categories
    are left out (the Debian package files many drawings under two categories)."""
    skipped: Counter[str] = Counter()
    seen: set[str] = set()
    files = []
    for path in sorted(source.rglob("*.svg")):
        if path.is_symlink() or not path.is_file():
            skipped["links"] += 1
            continue
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest in seen:
            skipped["duplicates"] += 1
            continue
        seen.add(digest)
        files.append(path)
    return files, skipped


def output_stem(path: Path, source: Path) -> str:
    return "__".join(path.relative_to(source).with_suffix("").parts)


def prepare_openclipart(
    out: Path,
    *,
    source: Path = DEFAULT_SOURCE,
    size: int = 256,
    min_side: int = 256,
    test_fraction: float = 0.1,
    seed: int = 0,
    workers: int = 2,
) -> dict:
    """Write OUT/images/<name>.png, OUT/train.jsonl and OUT/test.jsonl (empty `lineart`: the
    dataset draws XDoG sketches), the held-out images again under OUT/test/images/ and
    OUT/summary.json; returns the summary. Drawings kept by an earlier run are not drawn again."""
    if not source.is_dir():
        raise FileNotFoundError(
            f"Open Clip Art not found at {source}: install Debian's openclipart-svg "
            "(apt install openclipart-svg) or pass --source DIR"
        )
    files, skipped = unique_files(source)
    if not files:
        raise FileNotFoundError(f"no .svg files under {source}")
    candidates = []
    for path in files:
        if is_flag(path.relative_to(source)):
            skipped["flags"] += 1
        else:
            candidates.append(path)
    tasks, rows = [], []
    for path in candidates:
        stem = output_stem(path, source)
        image = Path("images", f"{stem}.png")
        tasks.append(ClipArtTask(path, out / image, size, min_side))
        rows.append({"image": str(image), "lineart": "", "design": stem})
    out.mkdir(parents=True, exist_ok=True)
    kept = []
    for row, status in zip(
        rows, parallel_map(judge_and_render, tasks, workers=workers), strict=True
    ):
        if status == "ok":
            kept.append(row)
        else:
            skipped[status] += 1
    manifests = split_by_design(out, kept, test_fraction=test_fraction, seed=seed)
    summary = {
        "source": "openclipart",
        "size": size,
        "min_side": min_side,
        "seed": seed,
        "svg_files": len(files),
        "images": {split: len(split_rows) for split, split_rows in manifests.items()},
        "skipped": dict(skipped),
    }
    write_summary(out, summary)
    summary["skipped_text"] = describe(skipped)
    return summary
