"""Flats evaluation with the real engine (issue 12), until `colord eval` runs it itself.

    .venv/bin/python bench/eval_flats.py [--limit 100] [--sheet docs/flats-contact-sheet.png]

The held-out OpenMoji pairs (`data/openmoji/test`: colour pictures, which are true flats, and
their drawn line art) at 256 px with the self references of `colord eval` (the colour picture
jittered, the ground truth, then warped by a thin-plate spline; same seed, same inputs), coloured
by the engine on the CPU with the shipped default model; the flats are made from that plain
output (lines not drawn) with the defaults scaled from a 2048 px page to 256 px
(`FlatsOptions.for_canvas`: gap 1 px, regions down to 1 px kept) and an opaque ground. Prints
`training.flats_eval`'s table and writes its contact sheet.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from colord.daemon import flats
from colord.daemon.engine import Engine, default_checkpoint
from colord.training import flats_eval
from colord.training.evaluation.evaluate import build_settings, load_held_out

ROOT = Path(__file__).resolve().parent.parent
HELD_OUT = ROOT / "data" / "openmoji" / "test"
SIZE = 256  # the evaluation size of `colord eval`


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=0, help="pairs (0 = all)")
    parser.add_argument("--sheet", type=Path, help="write the contact sheet here")
    parser.add_argument("--rows", type=int, default=6, help="examples on the contact sheet")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    held_out = load_held_out(HELD_OUT / "color", SIZE, args.limit, HELD_OUT / "line")
    self_setting = build_settings(held_out, seed=0, keypoint_count=64, patch_size=11)["self"]
    engine = Engine(default_checkpoint(), device="cpu")
    options = flats.FlatsOptions.for_canvas(SIZE, transparent_ground=False)

    def colorize(line_art: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        plain = engine.colorize(line_art, reference, keep_lines=False).image
        return plain, flats.flats_layer(line_art, plain, reference, options)

    line_arts = self_setting.flat_line_art
    if any(line_art is None for line_art in line_arts):
        raise SystemExit(f"{HELD_OUT}: every colour picture needs its drawn line art")
    run = flats_eval.evaluate_flats(
        line_arts, self_setting.references, self_setting.ground_truths, colorize
    )
    print(
        f"model {engine.model_path}; {HELD_OUT}, {SIZE} px, self references (seed 0); {options}\n"
    )
    print(flats_eval.results_table(run.scores))
    if args.sheet:
        count = len(line_arts)
        picks = [round(i * (count - 1) / max(1, args.rows - 1)) for i in range(args.rows)]
        sheet = flats_eval.flats_contact_sheet(
            run, line_arts, self_setting.references, self_setting.ground_truths,
            self_setting.labels, picks,
        )  # fmt: skip
        sheet.save(args.sheet)
        print(f"\ncontact sheet: {args.sheet}")


if __name__ == "__main__":
    main()
