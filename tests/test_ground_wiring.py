"""The colour layer's transparent ground through a real `colord serve` with the tiny model: `info`
lists it, the plug-ins' wire client gets the paper around the figure cleared as the plug-ins
cleared it themselves, and `colord colorize --ground` writes it, in process and through the
daemon."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from daemon_helpers import CLI, RunningDaemon, start_daemon
from PIL import Image

from colord.plugins.wire import colord_protocol

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins" / "wire"))
import colord_paper
import colord_wire

HEIGHT, WIDTH = 120, 160


def ring_on_paper() -> np.ndarray:
    """RGBA: a black ring with a 3 px gap on opaque white paper, and a dot far outside it."""
    line_art = np.full((HEIGHT, WIDTH, 4), 255, np.uint8)
    cv2.circle(line_art, (80, 60), 40, (0, 0, 0, 255), 3)
    line_art[58:61, 118:123, :3] = 255  # the gap
    line_art[5:8, 5:8, :3] = 0
    return line_art


@pytest.fixture(scope="module")
def daemon(tiny_checkpoint: Path) -> Iterator[RunningDaemon]:
    with start_daemon(tiny_checkpoint) as running:
        yield running


def test_the_daemon_clears_what_the_plugins_cleared(daemon: RunningDaemon) -> None:
    line_art = ring_on_paper()
    image = colord_wire.Image(WIDTH, HEIGHT, "RGBA8", line_art.tobytes())
    with colord_wire.WireClient(daemon.endpoint, daemon.token, timeout=60) as wire:
        assert colord_protocol.has_feature(wire.info(), "ground")
        plain, _ = wire.colorize(image, None, working_size=64)
        cleared, _ = wire.colorize(image, None, working_size=64, ground="transparent")
    by_plugin = bytearray(plain.data)
    assert colord_paper.clear_outside(by_plugin, line_art.tobytes(), WIDTH, HEIGHT) > 0
    assert cleared.data == bytes(by_plugin)
    alpha = np.frombuffer(cleared.data, np.uint8).reshape(HEIGHT, WIDTH, 4)[..., 3]
    assert alpha[0, 0] == 0 and alpha[60, 80] == 255


def test_the_cli_writes_a_transparent_ground(daemon: RunningDaemon, tmp_path: Path) -> None:
    Image.fromarray(ring_on_paper()).save(tmp_path / "line.png")
    for where in ([], ["--daemon"]):
        done = subprocess.run(
            [*CLI, "colorize", "line.png", "-o", "out.png", "--ground", "transparent", *where],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
            env={**os.environ, "COLORD_CONNECTION_FILE": str(daemon.connection_file)},
        )
        assert done.returncode == 0, done.stderr
        alpha = np.asarray(Image.open(tmp_path / "out.png"))[..., 3]
        assert alpha[0, 0] == 0 and alpha[110, 150] == 0 and alpha[60, 80] == 255, where
