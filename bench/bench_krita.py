"""Click to layer in the real Krita, split into plug-in, transport, engine and model.

Starts two real daemons on the shipped default model (unless --model is given), one with its fast
path (the default) and one running eager fp32 (`colord serve --eager`), and the real Krita under
Xvfb with the plug-in installed. For each --sizes page it opens a SIZE x SIZE 8-bit sRGB document
holding opaque line art (a scan: strokes on white paper) and a reference, triggers "Colorize with
Reference…" --warmup + --repeat times per daemon with the plug-in's default settings, the clicks
taking the daemons in turn (each run undone before the next, so every run meets the same document
and both daemons meet Krita in the same state), and prints per size and daemon the medians of:

- elapsed: from the action to the inserted layer;
- plug-in: elapsed minus the round trip: reading the layers (`read`), naming and placing the new
  layer (`place`) and Krita adding it (`layers`); the daemon clears the paper around the figure;
- transport: the round trip minus the daemon's time from receiving the request to its reply (both
  wire ends, the sockets, the daemon's decoding and encoding), in parts: the plug-in packing and
  sending the request (`send`), the reply's wait beyond the daemon's time (`reply`), unpacking it
  (`unpack`) and the rest (`rest`: the worker thread, connecting, the `info` request);
- engine: the daemon's engine time minus the model's;
- model: the generator's forward pass in the daemon, as its reply's `forward_ms` says;
- canvas after: how much longer Krita's own work left by the insertion (the recomposite of the
  canvas) went on once the layer was in, seen by a test driver polling every 20 ms;
- the longest time Krita's event loop stalled while the daemon worked.

and the fast path's elapsed time against eager's.

    .venv/bin/python bench/bench_krita.py                 # 1024², 2048² and 4096², 5 each
    .venv/bin/python bench/bench_krita.py --no-opengl     # Krita's canvas drawn without OpenGL
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from conftest import draw_line_art, draw_reference  # noqa: E402
from daemon_helpers import start_daemon  # noqa: E402
from hosts.krita_harness import KritaRun, krita_problem, to_bgra  # noqa: E402

from colord.daemon.engine import Engine, Job, default_checkpoint  # noqa: E402

SRGB8 = {"model": "RGBA", "depth": "U8", "profile": "sRGB-elle-V2-srgbtrc.icc"}


def scanned_line_art(size: int) -> np.ndarray:
    """Black strokes on opaque white paper, the whole canvas (as a scanned drawing would be)."""
    strokes = draw_line_art(size, size)
    ink = strokes[..., 3:4].astype(np.float32) / 255.0
    grey = (255.0 * (1.0 - ink)).round().astype(np.uint8)
    return np.concatenate([grey, grey, grey, np.full_like(grey, 255)], axis=2)


# The daemons compared in one run: their names and `colord serve` arguments.
GENERATOR_PATHS = {"fast": [], "eager": ["--eager"]}


def measure_krita(
    model: Path, sizes: list[int], actions: int, settings: dict, opengl: bool
) -> dict[tuple[str, int], list]:
    """The plug-in's `inserted` events per (daemon, page size), with the event loop's longest
    stall; `opengl` False: Krita's canvas drawn without OpenGL."""
    with contextlib.ExitStack() as daemons:
        started = {
            name: daemons.enter_context(start_daemon(model, extra_args=args))
            for name, args in GENERATOR_PATHS.items()
        }
        run = KritaRun()
        if not opengl:
            run.canvas_without_opengl()
        try:
            run.install_plugin()
            run.install_driver()
            run.set_plugin_settings(settings)
            run.steps = []
            for size in sizes:
                line_art = run.add_pixels(f"line{size}", to_bgra(scanned_line_art(size)))
                reference = run.add_pixels(f"ref{size}", to_bgra(draw_reference(size, size)))
                run.steps.append(
                    {
                        "name": f"bench-{size}",
                        "document": {"width": size, "height": size, **SRGB8},
                        "layers": [
                            {"name": "Reference", "x": 0, "y": 0, **reference},
                            {"name": "Line art", "x": 0, "y": 0, **line_art},
                        ],
                        "active": "Line art",
                        "connection_files": [str(d.connection_file) for d in started.values()],
                        "repeat": actions * len(started),
                        "undo_each": True,
                        "dump": False,
                    }
                )
            result = run.run(timeout=1800)
            if result.report is None or "error" in result.report:
                raise SystemExit(f"the Krita run failed:\n{result.report}\n{result.output[-3000:]}")
        finally:
            run.remove()
    measured = {}
    paths = len(GENERATOR_PATHS)
    for size in sizes:
        step = result.report["steps"][f"bench-{size}"]
        inserted = [event for event in step["events"] if event["event"] == "inserted"]
        if len(inserted) != actions * paths:
            raise SystemExit(f"{size}²: expected {actions * paths} layers, got {inserted}")
        gaps, settled = step["event_loop_gaps_ms"], step["settled_at"]
        for event, (during, _), settled_at in zip(inserted, gaps, settled, strict=True):
            event["ui_stall_ms"] = during
            event["settled_ms"] = (settled_at - event["time"]) * 1000.0
        for turn, name in enumerate(GENERATOR_PATHS):  # the clicks took the daemons in turn
            measured[name, size] = inserted[turn::paths]
    return measured


def working_sizes(model: Path, sizes: list[int], working_size: int | None) -> dict[int, int]:
    """The working size the daemon's engine chose for each page (prepared, not run)."""
    engine = Engine(model, device="cpu", working_size=working_size, warmup=False)
    return {size: engine.prepare(Job(scanned_line_art(size))).working_size for size in sizes}


def transport_split(wire_ms: dict, round_trip_ms: float, daemon_ms: float) -> dict:
    """Transport in parts: the plug-in packing and sending the colorize request, the reply's
    wait beyond the daemon's own time (its decoding and encoding, the reply's transfer), unpacking
    the reply, and the rest (the worker thread, connecting, the `info` request, the checks)."""
    parts = {
        "send_ms": wire_ms["encode"] + wire_ms["send"],
        "reply_ms": wire_ms["reply"] - daemon_ms,
        "unpack_ms": wire_ms["decode"],
    }
    parts["rest_ms"] = round_trip_ms - daemon_ms - sum(parts.values())
    return parts


def summarise(events: list[dict], working_size: int) -> dict:
    rows = []
    for event in events:
        timings = event["timings"]
        plugin = event["elapsed_ms"] - event["round_trip_ms"]
        rows.append(
            {
                "elapsed_ms": event["elapsed_ms"],
                "plugin_ms": plugin,
                "read_ms": event["read_ms"],
                "place_ms": event["place_ms"],
                "layers_ms": event["layers_ms"],
                "transport_ms": event["round_trip_ms"] - timings["total_ms"],
                **transport_split(event["wire_ms"], event["round_trip_ms"], timings["total_ms"]),
                "engine_ms": timings["engine_ms"] - timings["forward_ms"],
                "model_ms": timings["forward_ms"],
                "around_daemon_ms": event["elapsed_ms"] - timings["total_ms"],
                "canvas_after_ms": event["settled_ms"],
                "ui_stall_ms": event["ui_stall_ms"],
            }
        )
    median = {key: statistics.median(row[key] for row in rows) for key in rows[0]}
    return {"runs": rows, "median": median, "working_size": working_size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[1024, 2048, 4096], help="page sides"
    )
    parser.add_argument("--repeat", type=int, default=5, help="timed actions per size")
    parser.add_argument("--warmup", type=int, default=1, help="untimed actions first, per size")
    parser.add_argument("--working-size", type=int, help="fixed working size (default: auto)")
    parser.add_argument("--model", type=Path, help="checkpoint (default: the shipped model)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--no-opengl",
        action="store_true",
        help="Krita's canvas without OpenGL (under Xvfb, OpenGL renders on the CPU cores)",
    )
    args = parser.parse_args()
    problem = krita_problem()
    if problem is not None:
        raise SystemExit(problem)
    model = args.model or default_checkpoint()
    settings = {
        "reference": "Reference",
        "working_size": "auto" if args.working_size is None else str(args.working_size),
    }
    events = measure_krita(
        model, args.sizes, args.warmup + args.repeat, settings, opengl=not args.no_opengl
    )
    summary = {"settings": vars(args) | {"model": str(model)}, "sizes": {}}
    chosen = working_sizes(model, args.sizes, args.working_size)
    for size in args.sizes:
        figures = {
            name: summarise(events[name, size][args.warmup :], chosen[size])
            for name in GENERATOR_PATHS
        }
        summary["sizes"][size] = figures
        speedup = figures["eager"]["median"]["elapsed_ms"] / figures["fast"]["median"]["elapsed_ms"]
        print(
            f"{size}² (working size {chosen[size]}), median of {args.repeat}; "
            f"click to layer, eager / fast path: {speedup:.2f}x"
        )
        for name, path_figures in figures.items():
            medians = path_figures["median"]
            print(f"  {name:5}: " + ", ".join(f"{k} {v:.1f}" for k, v in medians.items()))
    if args.json is not None:
        args.json.write_text(json.dumps(summary, indent=1, default=str))


if __name__ == "__main__":
    main()
