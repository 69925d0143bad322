"""What both plug-ins share above the wire: option checks, names, replies, paper, daemon start.

These modules ship into both bundles (plugins/wire/), so they run here as the GIMP plug-in imports
them: top-level modules side by side.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins" / "wire"))
import colord_launch
import colord_paper
import colord_plugin_core as core
import colord_protocol
import colord_wire


@pytest.mark.parametrize("value", [None, "", "auto", "Auto", 0, "0"])
def test_automatic_working_size(value) -> None:
    assert core.parse_working_size(value) is None


@pytest.mark.parametrize(("value", "size"), [(64, 64), ("512", 512), (4096, 4096), ("768", 768)])
def test_usable_working_sizes(value, size: int) -> None:
    assert core.parse_working_size(value) == size


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (100, ["100 px", "multiple of 16", "64 to 4096", "nearest is 96 px"]),
        (48, ["48 px", "nearest is 64 px"]),
        (5000, ["5000 px", "nearest is 4096 px"]),
        ("big", ["“big” is not a number", "Automatic"]),
    ],
)
def test_unusable_working_sizes_are_refused_in_the_artists_words(value, words) -> None:
    with pytest.raises(core.PluginError) as refused:
        core.parse_working_size(value)
    for word in words:
        assert word in str(refused.value)
    assert "working_size" not in str(refused.value)  # never the wire field's name


def test_working_size_above_the_daemons_cap_is_refused() -> None:
    def info(cap: int):
        return lambda: {"limits": {"max_working_size": cap}}

    core.check_working_size_cap(1024, info(1024))
    core.check_working_size_cap(None, lambda: pytest.fail("automatic needs no limits"))
    with pytest.raises(core.PluginError, match="at most 512 px") as refused:
        core.check_working_size_cap(1024, info(512))
    assert "working_size" not in str(refused.value)


def test_result_names_are_numbered_and_recognised() -> None:
    assert core.result_layer_name("Sky") == "Colorized (Sky)"
    assert core.result_layer_name(None) == "Colorized (no reference)"
    taken = ["Colorized (Sky)", "Colorized (Sky) 2", "Inks"]
    assert core.result_layer_name("Sky", taken) == "Colorized (Sky) 3"
    assert core.result_layer_name("Sea", taken) == "Colorized (Sea)"
    for name in ("Colorized (Sky)", "Colorized (Sky) 12", "Colorized (no reference)"):
        assert core.is_result_layer_name(name)
        with pytest.raises(core.PluginError, match="is a colord result"):
            core.check_not_a_result(name)
    for name in ("Inks", "Colorized", "My Colorized (Sky)"):
        assert not core.is_result_layer_name(name)
        core.check_not_a_result(name)


def test_reply_checks() -> None:
    good = colord_wire.Image(3, 2, "RGBA8", bytes(24))
    core.check_reply(good, 3, 2, "RGBA8")
    for bad, words in [
        (good._replace(width=4), "4x2 RGBA8 image for a 3x2"),
        (good._replace(format="BGRA8"), "compatible version"),
        (good._replace(data=bytes(23)), "23 bytes"),
    ]:
        with pytest.raises(core.PluginError, match=words):
            core.check_reply(bad, 3, 2, "RGBA8")


def test_error_messages_are_sentences() -> None:
    assert core.error_message(core.PluginError("Fix it.")) == "Fix it."
    error = colord_protocol.ColordError("busy", "The queue is full.")
    assert core.error_message(error) == colord_wire.user_message(error)
    unexpected = core.error_message(KeyError("x"))
    assert "KeyError" in unexpected and "Traceback" not in unexpected


# -- the paper ---------------------------------------------------------------------------------


def ring_on(paper_alpha: int, size: int = 64, gap: int = 0) -> np.ndarray:
    """A black ring (an outline with an inside) on white paper of the given alpha."""
    image = np.zeros((size, size, 4), np.uint8)
    image[..., :3] = 255
    image[..., 3] = paper_alpha
    yy, xx = np.mgrid[:size, :size]
    ring = np.abs(np.hypot(yy - size / 2, xx - size / 2) - size / 4) < 1.5
    if gap:
        ring[size // 2 - gap // 2 : size // 2 + (gap + 1) // 2, size // 2 :] = False
    image[ring] = (0, 0, 0, 255)
    return image


@pytest.mark.parametrize("paper_alpha", [255, 0])
def test_paper_outside_the_drawing_becomes_transparent(paper_alpha: int) -> None:
    line_art = ring_on(paper_alpha)
    result = bytearray(np.full((64, 64, 4), 180, np.uint8).tobytes())
    cleared = colord_paper.clear_outside(result, line_art.tobytes(), 64, 64)
    alpha = np.frombuffer(bytes(result), np.uint8).reshape(64, 64, 4)[..., 3]
    assert alpha[0, 0] == 0 and alpha[63, 63] == 0 and alpha[32, 60] == 0  # outside
    assert alpha[32, 32] == 180  # inside the ring
    on_ring = np.abs(np.hypot(*(np.mgrid[:64, :64] - 32)) - 16) < 1.0
    assert (alpha[on_ring] == 180).all()  # the lines themselves
    assert cleared == int((alpha == 0).sum())
    colours = np.frombuffer(bytes(result), np.uint8).reshape(64, 64, 4)[..., :3]
    assert (colours == 180).all()  # only alpha changes


def test_a_small_gap_in_the_outline_keeps_the_inside() -> None:
    result = bytearray(bytes([200]) * 64 * 64 * 4)
    colord_paper.clear_outside(result, ring_on(255, gap=3).tobytes(), 64, 64)
    assert np.frombuffer(bytes(result), np.uint8).reshape(64, 64, 4)[32, 32, 3] == 200


def test_opaque_line_art_is_told_from_line_art_on_transparency() -> None:
    assert colord_paper.is_opaque(ring_on(255).tobytes())
    assert not colord_paper.is_opaque(ring_on(0).tobytes())


# -- starting the daemon -------------------------------------------------------------------------

FAKE_DAEMON = """
import json, os, sys, time
time.sleep(0.3)
path = sys.argv[1]
fields = {"endpoint": "tcp://127.0.0.1:1", "token": "t" * 32, "pid": os.getpid(),
          "version": "0.0", "protocol": 1}
descriptor = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT, 0o600)
os.write(descriptor, json.dumps(fields).encode())
os.close(descriptor)
os.replace(path + ".tmp", path)
time.sleep(float(sys.argv[2]))
"""


def wait_for(startup: colord_launch.Startup, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while True:
        connection = startup.poll()
        if connection is not None:
            return connection
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_launch_command_is_read_from_the_recorded_file(tmp_path: Path) -> None:
    launch = tmp_path / colord_launch.LAUNCH_FILE
    assert colord_launch.launch_command(launch) is None
    launch.write_text(json.dumps({"command": ["/usr/bin/python3", "-c", "pass"]}))
    assert colord_launch.launch_command(launch) == ["/usr/bin/python3", "-c", "pass"]
    launch.write_text(json.dumps({"command": "colord serve"}))
    assert colord_launch.launch_command(launch) is None


def test_startup_runs_detached_and_waits_for_the_connection_file(tmp_path, monkeypatch) -> None:
    connection_file = tmp_path / "colord" / "daemon.json"
    monkeypatch.setenv("COLORD_CONNECTION_FILE", str(connection_file))
    monkeypatch.setenv("PYTHONPATH", "/nonexistent")  # the app's own; the daemon must not get it
    script = tmp_path / "fake_daemon.py"
    script.write_text(FAKE_DAEMON + "print(os.environ.get('PYTHONPATH'))\n")
    connection_file.parent.mkdir()
    startup = colord_launch.Startup(
        [sys.executable, str(script), str(connection_file), "30"],
        read=lambda: colord_protocol.read_connection(connection_file),
    )
    try:
        assert startup.progress().startswith("Starting the colord daemon…")
        connection = wait_for(startup)
        assert connection.pid == startup.process.pid
        assert os.getsid(startup.process.pid) == startup.process.pid  # its own session
        assert startup.log == connection_file.parent / "daemon.log"
    finally:
        startup.process.kill()
        startup.process.wait()


def test_a_daemon_that_dies_while_starting_is_a_message(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("COLORD_CONNECTION_FILE", str(tmp_path / "daemon.json"))
    startup = colord_launch.Startup(
        [sys.executable, "-c", "import sys; print('no model'); sys.exit(3)"],
        read=lambda: colord_protocol.read_connection(tmp_path / "daemon.json"),
    )
    startup.process.wait()
    with pytest.raises(core.PluginError, match=r"exit code 3.*daemon.log"):
        startup.poll()
    assert "no model" in (tmp_path / "daemon.log").read_text()


# -- flats ---------------------------------------------------------------------------------------


def test_flats_names_are_numbered_and_never_taken_as_line_art() -> None:
    assert core.flats_layer_name("Sky") == "Flats (Sky)"
    assert core.flats_layer_name(None, ["Flats (no reference)"]) == "Flats (no reference) 2"
    assert core.is_result_layer_name("Flats (Sky) 3")
    with pytest.raises(core.PluginError, match="is a colord result"):
        core.check_not_a_result("Flats (Sky)")
    assert core.parse_flats("only") == "only" and core.parse_flats("lots") == core.NO_FLATS


def test_flats_are_refused_in_words_by_a_daemon_without_them() -> None:
    core.check_flats_available(core.NO_FLATS, lambda: pytest.fail("no flats: nothing to ask"))
    core.check_flats_available("only", lambda: {"features": ["flats"]})
    for older in ({}, {"features": []}, {"features": "flats"}):
        assert not core.flats_available(older)
        with pytest.raises(core.PluginError, match="cannot make flats"):
            core.check_flats_available("with_colour", lambda older=older: older)


def answer(colour: bool, flats: bool, size: int = 64) -> colord_wire.Layers:
    """The daemon's layers: colour 180, flats 9."""
    image = colord_wire.Image(size, size, "RGBA8", bytes([180]) * (size * size * 4))
    return colord_wire.Layers(
        image if colour else None,
        image._replace(data=bytes([9]) * size * size * 4) if flats else None,
        {},
    )


def as_layer(image: np.ndarray) -> core.LayerPixels:
    return core.LayerPixels("Inks", 3, 4, image.shape[1], image.shape[0], image.tobytes())


def test_flats_lie_under_the_colour_below_line_art_on_transparency() -> None:
    line_art = as_layer(ring_on(0))
    placement = core.place(
        core.clear_paper(answer(True, True), line_art), line_art, "Sky", ["Inks"],
        multiply_over_opaque=True,
    )  # fmt: skip
    assert not placement.above
    colour, flats = placement.layers  # top first
    assert (colour.pixels.name, flats.pixels.name) == ("Colorized (Sky)", "Flats (Sky)")
    assert not colour.multiply and not flats.multiply and colour.visible and flats.visible
    assert (flats.pixels.x, flats.pixels.y) == (3, 4)
    assert bytes(flats.pixels.data) == bytes([9]) * 64 * 64 * 4  # the daemon's, untouched
    assert bytes(colour.pixels.data)[3] == 0  # the colour's paper cleared in the plug-in
    assert bytes(colour.pixels.data)[32 * 64 * 4 + 32 * 4 + 3] == 180  # inside the ring


def test_over_opaque_line_art_flats_go_in_multiply_hidden_under_the_colour() -> None:
    both = core.place(
        answer(True, True), as_layer(ring_on(255)), "Sky", [], multiply_over_opaque=True,
    )  # fmt: skip
    assert both.above and [(n.multiply, n.visible) for n in both.layers] == [
        (True, True),
        (True, False),  # shown, it would darken the colours through Multiply
    ]
    alone = core.place(
        answer(False, True), as_layer(ring_on(255)), None, [], multiply_over_opaque=True,
    )  # fmt: skip
    [flats] = alone.layers
    assert alone.above and flats.multiply and flats.visible
    assert flats.pixels.name == "Flats (no reference)"
    lowest = core.place(
        answer(False, True), as_layer(ring_on(0)), "Sky", [],
        multiply_over_opaque=True, room_below=False,
    )  # fmt: skip
    assert lowest.above and lowest.layers[0].multiply


def layer_of(pixels: np.ndarray) -> core.LayerPixels:
    height, width = pixels.shape[:2]
    return core.LayerPixels("Reference", 5, 7, width, height, memoryview(pixels.tobytes()))


@pytest.mark.parametrize(
    ("width", "height", "longest", "step"),
    [(2048, 1536, 1024, 2), (4096, 4096, 1024, 4), (1001, 333, 384, 2), (1500, 900, 1024, 1)],
)
def test_a_large_reference_is_sent_subsampled_to_the_largest_working_size(
    width: int, height: int, longest: int, step: int
) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 4), dtype=np.uint8)
    shrunk = core.shrunk_reference(layer_of(pixels), longest)
    expected = pixels[::step, ::step]
    assert (shrunk.height, shrunk.width) == expected.shape[:2]
    assert max(shrunk.width, shrunk.height) >= longest
    assert np.array_equal(np.frombuffer(shrunk.data, np.uint8).reshape(expected.shape), expected)
    assert (shrunk.name, shrunk.x, shrunk.y) == ("Reference", 5, 7)


def test_a_reference_subsampled_into_a_buffer_reuses_it() -> None:
    rng = np.random.default_rng(1)
    first, second = (rng.integers(0, 256, (2048, 1536, 4), dtype=np.uint8) for _ in range(2))
    buffer = bytearray()
    shrunk = core.shrunk_reference(layer_of(first), 1024, buffer)
    assert shrunk.data == core.shrunk_reference(layer_of(first), 1024).data
    assert shrunk.data.obj is buffer and len(buffer) == 1024 * 768 * 4
    shrunk.data.release()
    again = core.shrunk_reference(layer_of(second), 1024, buffer)
    assert again.data.obj is buffer and len(buffer) == 1024 * 768 * 4
    assert np.array_equal(
        np.frombuffer(again.data, np.uint8).reshape(1024, 768, 4), second[::2, ::2]
    )


def test_colorize_sends_the_reference_no_larger_than_the_daemon_can_use(
    tiny_checkpoint: Path,
) -> None:
    from daemon_helpers import start_daemon

    sent: list[colord_wire.Image] = []

    class Recording(colord_wire.WireClient):
        def colorize_layers(self, line_art, reference=None, **options):
            sent.append(reference)
            return super().colorize_layers(line_art, reference, **options)

    line_art = np.full((128, 160, 4), 255, np.uint8)
    line_art[60:64, 20:140, :3] = 0
    reference = np.random.default_rng(1).integers(0, 256, (600, 800, 4), dtype=np.uint8)
    capped = ["--max-working-size", "192"]
    with (
        start_daemon(tiny_checkpoint, extra_args=capped) as daemon,
        Recording.from_connection_file(daemon.connection_file) as client,
    ):
        # automatic: no more than the daemon's largest (192: 800 / 4); a fixed 64: 800 / 12
        for working_size, shape in ((None, (150, 200)), (64, (50, 67))):
            layers = core.colorize(
                client,
                layer_of(line_art),
                layer_of(reference),
                "RGBA8",
                working_size=working_size,
                keep_lines=True,
                transparent_paper=False,
                flats=core.NO_FLATS,
            )
            assert (sent[-1].height, sent[-1].width) == shape
            assert (layers.colour.width, layers.colour.height) == (160, 128)
