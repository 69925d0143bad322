"""`colord eval --flats`: the flats evaluation on held-out pairs, written as flats.md, flats.json
and flats_contact_sheet.png.

The held-out colour pictures must come with their drawn line art: a picture whose regions are
flat between its drawn lines (OpenMoji's) is the ground-truth flats. The inputs are `colord
eval`'s self setting (each picture colour-jittered into the ground truth, then warped into the
reference; same seed, same inputs), and the colorizer is the caller's (the engine or the running
daemon), so nothing here imports the daemon.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from colord.training.evaluation import flats_eval
from colord.training.evaluation.evaluate import (
    EvalOptions,
    build_settings,
    load_held_out,
    write_report,
)


class FlatsColorizer(Protocol):
    """A `flats_eval.FlatsColorizer` with a name for the report."""

    name: str

    def __call__(
        self, line_art: np.ndarray, reference: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass
class FlatsReport:
    summary: dict  # what flats.json holds
    markdown: str
    paths: dict[str, Path]


def evaluate(colorizer: FlatsColorizer, options: EvalOptions) -> FlatsReport:
    """Score the flats, the plain output and the mean-colour baseline on the held-out pictures
    that have drawn line art (`options.images`, `options.line_art`); write the report files
    into `options.out`. Raises ValueError when there is nothing to score."""
    if options.images is None or options.line_art is None:
        raise ValueError(
            "the flats evaluation needs held-out colour pictures (--images) and their drawn line "
            "art (--line-art): the pictures' flat regions between those lines are the truth"
        )
    held_out = load_held_out(options.images, options.size, options.limit, options.line_art)
    setting = build_settings(
        held_out, seed=options.seed, keypoint_count=options.keypoints, patch_size=options.patch_size
    )["self"]
    assert setting.flat_line_art is not None and setting.ground_truths is not None
    paired = [i for i, line_art in enumerate(setting.flat_line_art) if line_art is not None]
    if not paired:
        raise ValueError(f"none of the pictures in {options.images} has drawn line art")
    line_arts = [setting.flat_line_art[i] for i in paired]
    references = [setting.references[i] for i in paired]
    truths = [setting.ground_truths[i] for i in paired]
    names = [setting.labels[i] for i in paired]
    run = flats_eval.evaluate_flats(line_arts, references, truths, colorizer)

    summary = {
        "model": colorizer.name,
        "size": options.size,
        "seed": options.seed,
        "images": len(paired),
        "skipped_files": held_out.skipped,
        "scores": [asdict(score) for score in run.scores],
    }
    markdown = (
        f"# Flats: {colorizer.name}\n\nHeld-out pictures with drawn line art at {options.size} "
        f"px, self references (seed {options.seed}).\n\n{flats_eval.results_table(run.scores)}\n"
    )
    paths = write_report(Path(options.out), "flats", markdown, summary)
    rows = min(options.contact_rows, len(paired))
    picks = [round(i * (len(paired) - 1) / max(1, rows - 1)) for i in range(rows)]
    sheet = flats_eval.flats_contact_sheet(run, line_arts, references, truths, names, picks)
    sheet.save(paths["contact_sheet"])
    return FlatsReport(summary, markdown, paths)
