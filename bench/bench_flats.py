"""Flats benchmark (issue 12): the flats' time in the engine beside the plain output's.

    .venv/bin/python bench/bench_flats.py [--sizes 2048,4096] [--strokes enlarged,3px]
        [--repeats 3] [--threads 2]

A held-out OpenMoji drawing (line art and colour picture, `data/openmoji/test`, else the pairs
under `tests/data/openmoji`) makes two line arts at each canvas size: its line art enlarged
(bicubic, the strokes thickened with it: the automatic working size is then small and the plain
output is mostly upsampling) and the borders of its colour regions drawn 3 px wide (a page's
line weight: the working size is the CPU's largest). Each is coloured by the real engine on
the CPU with the shipped default model at the automatic working size, the colour picture as
reference, lines not drawn, once plain and once with flats (`Engine.colorize(...,
flats="with_colour")`, the request path: the engine makes them from the colours before the lines
go over them, with the defaults scaled to the canvas). Both are timed alternately in this run;
the table gives the fastest runs and the medians (a shared machine slows single runs by several
times) of the plain output, of the flats step (the engine's own `flats` timing) and of the whole
request with flats, flats / plain of each (the issue's bar: <= 30 % at 4096² on the CPU), and
the flats step's peak memory beyond its inputs (tracemalloc: numpy's buffers).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from colord.daemon import flats, imaging
from colord.daemon.engine import Engine, default_checkpoint

ROOT = Path(__file__).resolve().parent.parent
DRAWING = "1F10D"  # a held-out design with several closed regions


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="2048,4096", help="comma-separated canvas sides")
    parser.add_argument(
        "--strokes", default="enlarged,3px", help="line arts: enlarged and/or 3px (comma-separated)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each")
    parser.add_argument("--threads", type=int, default=None, help="torch and OpenCV threads")
    args = parser.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",") if s]
    args.strokes = [s for s in args.strokes.split(",") if s]
    if not set(args.strokes) <= {"enlarged", "3px"}:
        parser.error("--strokes takes enlarged and 3px")
    return args


def read_rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise SystemExit(f"{path}: cannot be read")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def drawing() -> tuple[np.ndarray, np.ndarray]:
    """(line art, colour picture) of the benchmark drawing, RGB uint8."""
    folder = ROOT / "data" / "openmoji" / "test"
    if (folder / "line" / f"{DRAWING}.png").exists():
        return read_rgb(folder / "line" / f"{DRAWING}.png"), read_rgb(
            folder / "color" / f"{DRAWING}.png"
        )
    fallback = ROOT / "tests" / "data" / "openmoji"
    line = sorted(fallback.glob("*-line.png"))[0]
    return read_rgb(line), read_rgb(line.with_name(line.name.replace("-line", "-color")))


def thin_line_art(colour: np.ndarray, size: int) -> np.ndarray:
    """(size, size) uint8: the borders between the colour picture's regions, 3 px black on white."""
    big = cv2.resize(colour, (size, size), interpolation=cv2.INTER_NEAREST)
    border = cv2.morphologyEx(big, cv2.MORPH_GRADIENT, np.ones((2, 2), np.uint8)).max(axis=2) > 32
    border = cv2.dilate(border.view(np.uint8), np.ones((2, 2), np.uint8))
    return np.where(border > 0, 0, 255).astype(np.uint8)


def timed(task: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    result = task(*args, **kwargs)
    return time.perf_counter() - start, result


def peak_bytes(task: Callable[..., Any], *args: Any) -> int:
    tracemalloc.start()
    try:
        task(*args)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
    engine = Engine(default_checkpoint(), device="cpu")
    line_art, reference = drawing()
    print(
        f"model {engine.model_path}; torch threads {torch.get_num_threads()}, "
        f"OpenCV threads {cv2.getNumThreads()}; {args.repeats} runs each: fastest / median"
    )
    print(
        "canvas | strokes | working size | plain (s) | flats (s) | with flats (s) | "
        "flats / plain | flats peak (MiB)"
    )
    print("--- | --- | --- | --- | --- | --- | --- | ---")
    for size, strokes in itertools.product(args.sizes, args.strokes):
        if strokes == "3px":
            canvas = thin_line_art(reference, size)
        else:
            canvas = cv2.resize(line_art, (size, size), interpolation=cv2.INTER_CUBIC)
        plain_times, flats_times, with_flats_times = [], [], []
        for _ in range(args.repeats):
            plain_times.append(timed(engine.colorize, canvas, reference, keep_lines=False)[0])
            seconds, result = timed(
                engine.colorize, canvas, reference, keep_lines=False, flats="with_colour"
            )
            with_flats_times.append(seconds)
            flats_times.append(result.timings["flats"] / 1000)
        options = flats.FlatsOptions.for_canvas(size)
        lines = imaging.read_line_art(canvas)[2]  # the engine's line mask, as it passes it
        peak = peak_bytes(flats.flats_layer, lines, result.image, reference, options)
        plain, flat, whole = (
            (min(times), statistics.median(times))
            for times in (plain_times, flats_times, with_flats_times)
        )
        ratio = flat[0] / plain[0], flat[1] / plain[1]
        print(
            f"{size}² | {strokes} | {result.working_size} | {plain[0]:.2f} / {plain[1]:.2f} | "
            f"{flat[0]:.2f} / {flat[1]:.2f} | {whole[0]:.2f} / {whole[1]:.2f} | "
            f"{ratio[0]:.0%} / {ratio[1]:.0%} | {peak / 2**20:.0f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
