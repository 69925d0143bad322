"""Time GIMP 3's Layer › Colorize with Reference… from procedure call to inserted layer, less the
daemon's own processing time.

    .venv/bin/python bench/bench_gimp.py [--size 2048] [--calls 3] [--working-size 512] \
        [--model PATH]

Needs root and the GIMP chroot (tests/hosts/build_gimp_chroot.sh). Starts a daemon on the CPU (a
random-init `tiny` model unless --model) and runs GIMP once, calling the procedure --calls times on
a SIZE x SIZE line art with a SIZE x SIZE reference. Right after each call the batch script sends
the daemon the same bytes itself and reads the daemon's own processing time from the reply
(`timings.total_ms`); the overhead of a call is its time minus that: what GIMP, the plug-in process,
reading and writing the layers and the transfers add.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from conftest import draw_line_art, draw_reference  # noqa: E402
from daemon_helpers import RunningDaemon, start_daemon  # noqa: E402
from hosts.gimp_harness import GimpRun, chroot_dir, chroot_problem  # noqa: E402

from colord.model import Generator, get_preset, save_checkpoint  # noqa: E402

CASE = "bench"
FLOOR_CASE = "launch-only"


def tiny_model(folder: Path) -> Path:
    torch.manual_seed(0)
    return save_checkpoint(folder / "tiny.safetensors", Generator(get_preset("tiny")))


def time_in_gimp(
    root: Path, daemon: RunningDaemon, line_art: np.ndarray, reference: np.ndarray, args
) -> tuple[dict, dict]:
    """One GIMP run: the timed calls, then as many calls that fail at the plug-in's first check.

    The second set measures what GIMP charges any Python plug-in call (starting the process,
    importing PyGObject, the PDB round trip) before the plug-in does any work of its own.
    Returns the observations of both.
    """
    run = GimpRun(root)
    try:
        ink = run.add_pixels("ink", line_art)
        ref = run.add_pixels("ref", reference)
        layers = [
            {"name": "Line art", "x": 0, "y": 0, **ink},
            {"name": "Reference", "x": 0, "y": 0, **ref},
        ]
        common = {
            "canvas": [args.size, args.size],
            "select": ["Line art"],
            "reference": "Reference",
            "options": {"working-size": args.working_size, "keep-lines": True},
            "repeat": args.calls,
        }
        run.cases = [
            common
            | {
                "name": CASE,
                "layers": layers,
                "connection": daemon.connection_file.read_text(),
                "direct_calls": True,
            },
            common
            | {
                "name": FLOOR_CASE,
                "base_type": "gray",
                "layers": [entry | {"base_type": "gray"} for entry in layers],
                "connection": None,
            },
        ]
        result = run.run()
        if result.returncode != 0 or not run.completed():
            sys.exit(f"bench_gimp: GIMP run failed:\n{result.output}")
        observed, floor = run.observations(CASE), run.observations(FLOOR_CASE)
    finally:
        run.remove()
    if set(observed["statuses"]) != {"success"}:
        sys.exit(f"bench_gimp: the procedure failed: {observed['messages']}")
    return observed, floor


def format_ms(values: list[float]) -> str:
    return ", ".join(f"{value:.0f}" for value in values)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048, help="line art and reference side (px)")
    parser.add_argument("--calls", type=int, default=3, help="procedure calls (and direct calls)")
    parser.add_argument("--working-size", type=int, default=512)
    parser.add_argument("--model", type=Path, help="checkpoint to serve (default: random tiny)")
    args = parser.parse_args()

    root = chroot_dir()
    problem = chroot_problem(root)
    if problem is not None:
        sys.exit(f"bench_gimp: {problem}")
    line_art = draw_line_art(args.size, args.size)
    reference = draw_reference(args.size, args.size)

    with tempfile.TemporaryDirectory(prefix="colord-bench-") as scratch:
        model = args.model or tiny_model(Path(scratch))
        with start_daemon(model) as daemon:
            observed, floor = time_in_gimp(root, daemon, line_art, reference, args)

    call_ms = [seconds * 1000 for seconds in observed["elapsed_s"]]
    total_ms = [timings["total_ms"] for timings in observed["direct_timings"]]
    engine_ms = [timings["engine_ms"] for timings in observed["direct_timings"]]
    overhead_ms = [call - total for call, total in zip(call_ms, total_ms, strict=True)]
    print(f"GIMP 3 procedure call, {args.size}x{args.size}, working size {args.working_size}")
    print(f"  load average over the last minute: {os.getloadavg()[0]:.1f} ({os.cpu_count()} CPUs)")
    print(f"  call to inserted layer (ms):   {format_ms(call_ms)}")
    print(f"  daemon total_ms, same bytes:   {format_ms(total_ms)}")
    print(f"  daemon engine_ms:              {format_ms(engine_ms)}")
    print(f"  overhead, call - daemon (ms):  {format_ms(overhead_ms)}")
    print(f"  median overhead: {statistics.median(overhead_ms):.0f} ms")
    launch_ms = [seconds * 1000 for seconds in floor["elapsed_s"]]
    print(f"  of which GIMP's launch of any Python plug-in call (ms): {format_ms(launch_ms)}")
    print(f"  median launch: {statistics.median(launch_ms):.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
