"""Shared steps of the data-preparation commands: a held-out split, parallel work with skip
counts, and JSON-lines manifests that `ColorizationDataset` and `colord train --data` read."""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import os
import shutil
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from PIL import Image

Task = TypeVar("Task")
Result = TypeVar("Result")


def split_groups(groups: Iterable[str], *, test_fraction: float, seed: int) -> set[str]:
    """The groups held out for testing: a seeded hash order, the first ceil(fraction * n) of it.

    Whole groups go to one side, so every file of a group (OpenMoji's skin-tone recolours of one
    design) lands on the same side; the choice does not depend on the order of `groups`.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test fraction must lie in (0, 1), got {test_fraction}")
    unique = sorted(set(groups))
    ordered = sorted(unique, key=lambda name: hashlib.sha256(f"{seed}:{name}".encode()).digest())
    return set(ordered[: math.ceil(test_fraction * len(unique))])


def parallel_map(
    function: Callable[[Task], Result], tasks: Sequence[Task], *, workers: int
) -> Iterator[Result]:
    """`function` over `tasks` in `workers` processes (in this one when workers <= 1), in order."""
    if workers <= 1 or len(tasks) < 2:
        yield from map(function, tasks)
        return
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        yield from pool.imap(function, tasks, chunksize=8)


def save_png(image: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, optimize=False, compress_level=6)


def write_manifest(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    """JSON lines, paths relative to the manifest's folder; returns the number of rows."""
    count = 0
    with path.open("w") as stream:
        for row in rows:
            stream.write(json.dumps(row, sort_keys=True) + "\n")
            count += 1
    return count


def read_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def merge_manifests(out: Path, sources: Sequence[Path]) -> int:
    """One manifest of all rows of `sources`, their image paths rewritten relative to `out`."""
    rows = []
    for source in sources:
        for row in read_rows(source):
            for key in ("image", "lineart"):
                if row.get(key):
                    absolute = (source.parent / row[key]).resolve()
                    row[key] = os.path.relpath(absolute, out.parent.resolve())
            rows.append(row)
    out.parent.mkdir(parents=True, exist_ok=True)
    return write_manifest(out, rows)


def split_by_design(
    out: Path, rows: list[dict[str, Any]], *, test_fraction: float, seed: int
) -> dict[str, list[dict[str, Any]]]:
    """Split the prepared rows by their `design` and write OUT/train.jsonl and OUT/test.jsonl.

    The held-out files are also copied to OUT/test/ under their relative paths, so that
    `colord eval --images OUT/test/...` reads the held-out set as plain folders.
    """
    held_out = split_groups((row["design"] for row in rows), test_fraction=test_fraction, seed=seed)
    manifests: dict[str, list[dict[str, Any]]] = {"train": [], "test": []}
    test_folder = out / "test"
    if test_folder.exists():
        shutil.rmtree(test_folder)
    for row in rows:
        split = "test" if row["design"] in held_out else "train"
        manifests[split].append(row)
        if split == "test":
            for key in ("image", "lineart"):
                if row.get(key):
                    (test_folder / row[key]).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(out / row[key], test_folder / row[key])
    for split, split_rows in manifests.items():
        write_manifest(out / f"{split}.jsonl", split_rows)
    return manifests


def write_summary(out: Path, summary: dict[str, Any]) -> None:
    (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")


def describe(counts: Counter[str]) -> str:
    return ", ".join(f"{count} {reason}" for reason, count in sorted(counts.items())) or "none"
