"""Flats through a real `colord serve` with the tiny model: the protocol option, the refusal of an
option a daemon does not know, `info`'s feature list, both clients, and the CLI; every flats pixel
one of its region's colours."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
import msgpack
import numpy as np
import pytest
from conftest import draw_reference
from daemon_helpers import CLI, RunningDaemon, raw_dealer, start_daemon
from PIL import Image

from colord.daemon import protocol
from colord.daemon.engine import Engine
from colord.daemon.flats import reference_palette
from colord.plugins.wire import colord_protocol

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins" / "wire"))
import colord_wire

SIZE = 256


def drawn_regions() -> tuple[np.ndarray, np.ndarray, int]:
    """(line art RGB, 3 px black lines on white; its paper labelled 1..count, 0 on the lines;
    count): a frame split in two halves, a disc in the left one, the paper around it."""
    line_art = np.full((SIZE, SIZE, 3), 255, np.uint8)
    cv2.rectangle(line_art, (30, 30), (225, 225), (0, 0, 0), 3)
    cv2.line(line_art, (128, 30), (128, 225), (0, 0, 0), 3)
    cv2.circle(line_art, (78, 128), 30, (0, 0, 0), 3)
    count, paper = cv2.connectedComponents((line_art[..., 0] > 127).view(np.uint8), 4)
    return line_art, paper, count - 1


def colours_of(image: np.ndarray) -> set[tuple[int, ...]]:
    return {tuple(c) for c in image.reshape(-1, image.shape[-1]).tolist()}


@pytest.fixture(scope="module")
def daemon(tiny_checkpoint: Path) -> Iterator[RunningDaemon]:
    with start_daemon(tiny_checkpoint) as running:
        yield running


def test_info_lists_flats_for_both_clients(daemon: RunningDaemon) -> None:
    with daemon.client() as client:
        assert colord_protocol.has_feature(client.info(), "flats")
    with colord_wire.WireClient(daemon.endpoint, daemon.token, timeout=60) as wire:
        assert colord_protocol.has_feature(wire.info(), "flats")


def test_every_flats_pixel_is_its_regions_one_colour(
    daemon: RunningDaemon, tiny_checkpoint: Path
) -> None:
    line_art, paper, count = drawn_regions()
    reference = draw_reference(SIZE, SIZE)
    with daemon.client() as client:
        reply = client.colorize(line_art, reference, flats="with_colour", flats_ground="opaque")
    assert reply.image.shape == reply.flats.shape == (SIZE, SIZE, 4)
    assert reply.timings["flats_ms"] > 0 and reply.timings["engine_ms"] >= reply.timings["flats_ms"]
    region_colours = set()
    for region in range(1, count + 1):
        own = colours_of(reply.flats[paper == region])
        assert len(own) == 1, f"region {region} has {len(own)} colours"
        region_colours |= own
    assert colours_of(reply.flats) == region_colours  # the lines too: 100 % region colours
    engine = Engine(tiny_checkpoint, device="cpu", warmup=False)
    same = engine.colorize(line_art, reference, flats="with_colour", flats_ground="opaque")
    np.testing.assert_array_equal(reply.flats, same.flats)  # what the engine makes, unchanged


def test_the_wire_client_gets_palette_flats_alone(daemon: RunningDaemon) -> None:
    line_art, paper, _ = drawn_regions()
    reference = draw_reference(SIZE, SIZE)
    rgba = np.dstack([line_art, np.full((SIZE, SIZE), 255, np.uint8)])
    with colord_wire.WireClient(daemon.endpoint, daemon.token, timeout=60) as wire:
        layers = wire.colorize_layers(
            colord_wire.Image(SIZE, SIZE, "RGBA8", rgba.tobytes()),
            colord_wire.Image(SIZE, SIZE, "RGBA8", reference.tobytes()),
            flats="only",
            flats_palette=True,
            result_format="BGRA8",
        )
    assert layers.colour is None and layers.flats.format == "BGRA8"
    bgra = np.frombuffer(layers.flats.data, np.uint8).reshape(SIZE, SIZE, 4)
    flats = bgra[..., [2, 1, 0, 3]]
    ground = paper[0, 0]
    assert (flats[paper == ground][:, 3] == 0).all()  # the paper around the figure: transparent
    figure = flats[..., 3] == 255
    assert figure[(paper != ground) & (paper != 0)].all()  # every region inside: opaque
    palette = colours_of(reference_palette(reference[..., :3]))
    assert colours_of(flats[figure][:, :3]) <= palette


def test_an_option_the_daemon_does_not_know_is_refused_by_name(daemon: RunningDaemon) -> None:
    line_art = protocol.array_to_image(np.full((8, 8), 255, np.uint8)).to_message()
    args = {"options": {"flats": "only", "flats_shading": True}, "line_art": line_art}
    with raw_dealer(daemon.endpoint) as sock:
        sock.send(protocol.encode_request(5, "colorize", daemon.token, args))
        reply = msgpack.unpackb(sock.recv())
    assert reply["id"] == 5 and reply["ok"] is False
    assert reply["error"]["code"] == "bad_request"
    assert "'flats_shading'" in reply["error"]["message"]


def test_the_cli_writes_the_flats_through_the_daemon(daemon: RunningDaemon, tmp_path: Path) -> None:
    line_art, paper, count = drawn_regions()
    Image.fromarray(line_art).save(tmp_path / "line.png")
    Image.fromarray(draw_reference(SIZE, SIZE)).save(tmp_path / "ref.png")
    done = subprocess.run(
        [*CLI, "colorize", "line.png", "--ref", "ref.png", "-o", "out.png", "--daemon", "--flats"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "COLORD_CONNECTION_FILE": str(daemon.connection_file)},
    )
    assert done.returncode == 0, done.stderr
    assert "wrote out.png and out-flats.png" in done.stdout
    flats = np.asarray(Image.open(tmp_path / "out-flats.png"))
    assert flats.shape == (SIZE, SIZE, 4)
    inside = [colours_of(flats[paper == region]) for region in range(1, count + 1)]
    assert all(len(colours) == 1 for colours in inside)


def test_the_wire_clients_colorize_keeps_returning_the_colour_layer_alone() -> None:
    image = colord_wire.Image(1, 1, "GRAY8", b"\xff")
    with pytest.raises(ValueError, match="colorize_layers"):
        colord_wire.WireClient("tcp://127.0.0.1:9", "0" * 32).colorize(image, flats="only")
