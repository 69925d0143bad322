"""Screenshots of the colord docker in Krita and the colord dialog in GIMP 3, for the README.

    python tests/hosts/screenshots.py [--out docs]

Both apps run for real under Xvfb (as in the end-to-end tests, with the plug-ins installed by
`colord plugin install`) against a daemon serving the shipped default model, on an OpenMoji line
art from tests/data with another design as reference. Writes krita-window.png, krita-docker.png
and gimp-dialog.png into the output folder.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent
sys.path[:0] = [str(TESTS)]

from daemon_helpers import start_daemon  # noqa: E402
from hosts.gimp_harness import GimpRun, chroot_dir, chroot_problem, virtual_display  # noqa: E402
from hosts.krita_harness import KritaRun, krita_problem, to_bgra  # noqa: E402

MODEL = REPO / "model" / "weights" / "default.safetensors"
LINE_ART = TESTS / "data" / "openmoji" / "1F600-line.png"
REFERENCE = TESTS / "data" / "openmoji" / "1F381-color.png"
CANVAS = 512  # px a side: the line art is scaled to fit, on white paper as a scan would be


def read_rgba(path: Path, size: int) -> np.ndarray:
    """An image as (size, size, 4) RGBA8, scaled to fit and flattened on opaque white."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    codes = {2: cv2.COLOR_GRAY2RGBA, 3: cv2.COLOR_BGR2RGBA, 4: cv2.COLOR_BGRA2RGBA}
    channels = 2 if image.ndim == 2 else image.shape[2]
    image = cv2.cvtColor(image, codes[channels])
    image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    alpha = image[..., 3:].astype(np.float32) / 255.0
    flat = image[..., :3] * alpha + 255.0 * (1.0 - alpha)
    return np.dstack([flat.round().astype(np.uint8), np.full((size, size, 1), 255, np.uint8)])


def krita_shots(out: Path, connection_file: Path) -> None:
    problem = krita_problem()
    if problem is not None:
        raise SystemExit(f"Krita: {problem}")
    run = KritaRun()
    try:
        run.install_plugin()
        run.install_driver()
        line_art = run.add_pixels("line", to_bgra(read_rgba(LINE_ART, CANVAS)))
        reference = run.add_pixels("reference", to_bgra(read_rgba(REFERENCE, CANVAS // 2)))
        run.set_plugin_settings({"reference": "Reference", "working_size": "auto"})
        run.steps = [
            {
                "name": "screenshot",
                "document": {"width": CANVAS, "height": CANVAS, "model": "RGBA", "depth": "U8",
                             "profile": "sRGB-elle-V2-srgbtrc.icc"},
                "layers": [{"name": "Reference", "x": 0, "y": 0, **reference},
                           {"name": "Line art", "x": 0, "y": 0, **line_art}],
                "active": "Line art",
                "connection_file": str(connection_file),
                "screenshots": {"window": str(out / "krita-window.png"),
                                "docker": str(out / "krita-docker.png")},
            }
        ]  # fmt: skip
        result = run.run()
        if result.report is None or "error" in result.report:
            raise SystemExit(f"Krita run failed:\n{result.report}\n{result.output[-3000:]}")
    finally:
        run.remove()


def gimp_shots(out: Path, connection_file: Path) -> None:
    root = chroot_dir()
    problem = chroot_problem(root)
    if problem is not None:
        raise SystemExit(f"GIMP: {problem}")
    run = GimpRun(root)
    try:
        line_art = run.add_pixels("line", read_rgba(LINE_ART, CANVAS))
        reference = run.add_pixels("reference", read_rgba(REFERENCE, CANVAS // 2))
        run.cases = [
            {
                "name": "screenshot",
                "canvas": [CANVAS, CANVAS],
                "layers": [{"name": "Line art", "x": 0, "y": 0, **line_art},
                           {"name": "Reference", "x": 0, "y": 0, **reference}],
                "select": ["Line art"],
                "reference": "Reference",
                "connection": connection_file.read_text(),
                "run_mode": "interactive",
            }
        ]  # fmt: skip
        with virtual_display() as display:
            result = run.run(display=display)
        shot = run.work / "out" / "dialog.png"
        if result.returncode != 0 or not shot.exists():
            raise SystemExit(f"GIMP run failed:\n{result.output[-3000:]}")
        shutil.copyfile(shot, out / "gimp-dialog.png")
    finally:
        run.remove()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs")
    parser.add_argument("--only", choices=("krita", "gimp"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with start_daemon(MODEL) as daemon:
        if args.only in (None, "krita"):
            krita_shots(args.out.resolve(), daemon.connection_file)
        if args.only in (None, "gimp"):
            gimp_shots(args.out.resolve(), daemon.connection_file)
    print(f"Wrote the screenshots into {args.out}.")


if __name__ == "__main__":
    main()
