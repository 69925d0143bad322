"""Corresponding keypoints for SC-PSNR: SPair-71k annotations, or pairs drawn from a known warp.

SC-PSNR (paper §4.2) compares the output around a keypoint with the reference around the keypoint
that corresponds to it. The paper takes the pairs from SPair-71k's manual annotations; on any other
held-out image the augmented-self reference gives them for free, because the TPS warp that made the
reference says where every sketch position landed.

SPair-71k layout::

    SPair-71k/JPEGImages/<category>/<image>.jpg
    SPair-71k/PairAnnotation/<trn|val|test>/<pair>.json
        (src_imname, trg_imname, src_kps, trg_kps, category, ...)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SPAIR_SPLITS = ("trn", "val", "test")


@dataclass(frozen=True)
class KeypointPairs:
    """Corresponding points as (x, y) pixel coordinates: `source[k]` matches `target[k]`.

    Source is the image the sketch (and so the output) was made from; target is the reference.
    """

    source: np.ndarray  # (K, 2) float
    target: np.ndarray  # (K, 2) float

    def __post_init__(self) -> None:
        source = np.asarray(self.source, dtype=np.float64).reshape(-1, 2)
        target = np.asarray(self.target, dtype=np.float64).reshape(-1, 2)
        if len(source) != len(target):
            raise ValueError(
                f"keypoint pairs need as many source as target points, got {len(source)} "
                f"and {len(target)}"
            )
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "target", target)

    def __len__(self) -> int:
        return len(self.source)

    def scaled(
        self, source_scale: tuple[float, float], target_scale: tuple[float, float]
    ) -> KeypointPairs:
        """The same pairs after resizing the source and target images by (sx, sy) each."""
        return KeypointPairs(self.source * source_scale, self.target * target_scale)


@dataclass(frozen=True)
class SPairPair:
    """One annotated SPair-71k image pair."""

    name: str
    category: str
    source_image: Path
    target_image: Path
    keypoints: KeypointPairs


def load_spair_pair(annotation: Path, images_root: Path) -> SPairPair:
    """Read one SPair-71k pair annotation; image paths resolve under `images_root/<category>/`."""
    try:
        record = json.loads(Path(annotation).read_text())
        category = str(record["category"])
        source_name, target_name = str(record["src_imname"]), str(record["trg_imname"])
        source_kps, target_kps = record["src_kps"], record["trg_kps"]
    except (OSError, ValueError) as error:
        raise ValueError(
            f"{annotation}: not a readable SPair-71k pair annotation ({error})"
        ) from None
    except KeyError as error:
        raise ValueError(
            f"{annotation}: SPair-71k pair annotation lacks the field {error}"
        ) from None
    if not source_kps or len(source_kps) != len(target_kps):
        raise ValueError(
            f"{annotation}: src_kps and trg_kps must be equally long, non-empty lists of [x, y]"
        )
    return SPairPair(
        name=Path(annotation).stem,
        category=category,
        source_image=Path(images_root) / category / source_name,
        target_image=Path(images_root) / category / target_name,
        keypoints=KeypointPairs(np.array(source_kps, float), np.array(target_kps, float)),
    )


def load_spair_split(
    root: Path, split: str = "test", categories: tuple[str, ...] | None = None
) -> list[SPairPair]:
    """All pairs of one split of an SPair-71k folder, optionally only some categories, sorted."""
    if split not in SPAIR_SPLITS:
        raise ValueError(f"unknown SPair-71k split {split!r}; expected one of {SPAIR_SPLITS}")
    annotations = Path(root) / "PairAnnotation" / split
    if not annotations.is_dir():
        raise ValueError(f"{root} is not an SPair-71k folder: {annotations} is missing")
    pairs = [
        load_spair_pair(path, Path(root) / "JPEGImages")
        for path in sorted(annotations.glob("*.json"))
    ]
    if categories is not None:
        pairs = [pair for pair in pairs if pair.category in categories]
    return pairs


def keypoints_from_correspondence(
    correspondence: np.ndarray,
    count: int,
    rng: np.random.Generator,
    *,
    margin: int = 0,
) -> KeypointPairs:
    """Draw `count` keypoint pairs from a dense correspondence.

    `correspondence` is (H, W, 2): for each source pixel (row y, column x), the (x, y) position it
    maps to in the target; non-finite entries mark pixels that left the target. Source points are
    drawn without repetition among pixels at least `margin` px from the source border whose target
    lies at least `margin` px inside a target of the same size. Fewer than `count` come back when
    fewer qualify.
    """
    if correspondence.ndim != 3 or correspondence.shape[2] != 2:
        raise ValueError(f"correspondence must be (H, W, 2), got {correspondence.shape}")
    height, width = correspondence.shape[:2]
    ys, xs = np.mgrid[0:height, 0:width]
    target_x, target_y = correspondence[..., 0], correspondence[..., 1]
    with np.errstate(invalid="ignore"):
        usable = (
            np.isfinite(target_x)
            & np.isfinite(target_y)
            & (xs >= margin)
            & (xs < width - margin)
            & (ys >= margin)
            & (ys < height - margin)
            & (target_x >= margin)
            & (target_x <= width - 1 - margin)
            & (target_y >= margin)
            & (target_y <= height - 1 - margin)
        )
    candidates = np.flatnonzero(usable)
    chosen = rng.choice(candidates, size=min(count, len(candidates)), replace=False)
    chosen_y, chosen_x = np.unravel_index(chosen, (height, width))
    source = np.stack([chosen_x, chosen_y], axis=1).astype(np.float64)
    target = correspondence[chosen_y, chosen_x].astype(np.float64)
    return KeypointPairs(source, target)
