"""How long the Krita plug-in takes around the daemon, from action to inserted layer.

Starts a real daemon (a random-init `tiny` checkpoint unless --model is given) and the real Krita
under Xvfb with the plug-in installed, opens a SIZE x SIZE 8-bit sRGB document holding an opaque
line-art layer and a reference layer, triggers "Colorize with Reference…" --warmup + --repeat times
(each once the previous layer is in; the warm-up ones are not counted), and prints, per run and as
the median: the time from the action to the inserted layer, the daemon's engine_ms and total_ms, the
plug-in's own share (elapsed minus engine_ms, elapsed minus total_ms), and where that went (reading
the layers, the round trip to the daemon, inserting the layer), and the longest time Krita's
event loop stalled while the daemon worked (a 20 ms timer's ticks, ideally 20 ms apart).

    .venv/bin/python bench/bench_krita.py --size 2048 --repeat 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from conftest import draw_line_art, draw_reference  # noqa: E402
from daemon_helpers import start_daemon  # noqa: E402
from hosts.krita_harness import KritaRun, krita_problem, to_bgra  # noqa: E402

from colord.model import Generator, get_preset, save_checkpoint  # noqa: E402


def scanned_line_art(size: int) -> np.ndarray:
    """Black strokes on opaque white paper, the whole canvas (as a scanned drawing would be)."""
    strokes = draw_line_art(size, size)
    ink = strokes[..., 3:4].astype(np.float32) / 255.0
    grey = (255.0 * (1.0 - ink)).round().astype(np.uint8)
    return np.concatenate([grey, grey, grey, np.full_like(grey, 255)], axis=2)


def measure(model: Path, size: int, actions: int, working_size: int) -> list[dict]:
    with start_daemon(model) as daemon:
        run = KritaRun()
        try:
            run.install_plugin()
            run.install_driver()
            run.set_plugin_settings(
                {"reference": "Reference", "working_size": str(working_size), "keep_lines": "true"}
            )
            line_art = run.add_pixels("line", to_bgra(scanned_line_art(size)))
            reference = run.add_pixels("reference", to_bgra(draw_reference(size, size)))
            run.steps = [
                {
                    "name": "bench",
                    "document": {"width": size, "height": size, "model": "RGBA", "depth": "U8",
                                 "profile": "sRGB-elle-V2-srgbtrc.icc"},
                    "layers": [
                        {"name": "Reference", "x": 0, "y": 0, **reference},
                        {"name": "Line art", "x": 0, "y": 0, **line_art},
                    ],
                    "active": "Line art",
                    "connection_file": str(daemon.connection_file),
                    "repeat": actions,
                    "dump": False,
                }
            ]  # fmt: skip
            result = run.run()
            if result.report is None or "error" in result.report:
                raise SystemExit(f"the Krita run failed:\n{result.report}\n{result.output[-3000:]}")
            step = result.report["steps"]["bench"]
            events = step["events"]
            for event, (during, insertion) in zip(events, step["event_loop_gaps_ms"], strict=False):
                event["ui_stall_ms"] = {"during_request": during, "insertion": insertion}
        finally:
            run.remove()
    inserted = [event for event in events if event["event"] == "inserted"]
    if len(inserted) != actions:
        raise SystemExit(f"expected {actions} inserted layers, the plug-in logged: {events}")
    return inserted


def summarise(events: list[dict]) -> dict:
    rows = []
    for event in events:
        timings = event["timings"]
        rows.append(
            {
                "elapsed_ms": event["elapsed_ms"],
                "engine_ms": timings["engine_ms"],
                "total_ms": timings["total_ms"],
                "overhead_vs_engine_ms": event["elapsed_ms"] - timings["engine_ms"],
                "overhead_vs_total_ms": event["elapsed_ms"] - timings["total_ms"],
                "read_ms": event["read_ms"],
                "round_trip_ms": event["round_trip_ms"],
                "insert_ms": event["insert_ms"],
                "longest_ui_stall_during_request_ms": event["ui_stall_ms"]["during_request"],
            }
        )
    median = {key: statistics.median(row[key] for row in rows) for key in rows[0]}
    return {"runs": rows, "median": median}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=2048, help="document side in pixels")
    parser.add_argument("--repeat", type=int, default=5, help="actions to time, one after another")
    parser.add_argument("--warmup", type=int, default=1, help="untimed actions first")
    parser.add_argument("--working-size", type=int, default=512)
    parser.add_argument("--model", type=Path, help="checkpoint (default: random-init tiny)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    problem = krita_problem()
    if problem is not None:
        raise SystemExit(problem)
    with tempfile.TemporaryDirectory() as scratch:
        model = args.model
        if model is None:
            torch.manual_seed(0)
            model = save_checkpoint(
                Path(scratch) / "tiny.safetensors", Generator(get_preset("tiny"))
            )
        events = measure(model, args.size, args.warmup + args.repeat, args.working_size)
    summary = summarise(events[args.warmup :])
    summary["settings"] = vars(args) | {"model": str(args.model or "random-init tiny")}
    for number, row in enumerate(summary["runs"], 1):
        print(f"run {number}: " + ", ".join(f"{key} {value:.1f}" for key, value in row.items()))
    print("median: " + ", ".join(f"{key} {value:.1f}" for key, value in summary["median"].items()))
    if args.json is not None:
        args.json.write_text(json.dumps(summary, indent=1, default=str))


if __name__ == "__main__":
    main()
