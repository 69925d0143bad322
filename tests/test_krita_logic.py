"""The Krita plug-in's host-free parts (request flow, options, pixels rules, messages).

The package is imported from a bundle installed by `colord plugin install`, so the tests see the
same files (wire client included) that Krita loads. The host is a fake that records what the plug-in
asks of Krita; the daemon is a real `colord serve` process where a reply matters.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from capabilities import HOSTS, missing
from conftest import draw_line_art, draw_reference
from daemon_helpers import start_daemon

from colord.daemon.plugin_install import install

SYSTEM_PYTHON = Path("/usr/bin/python3")  # Debian's; Krita embeds the same Python and its PyQt5
PANEL_PROBE = Path(__file__).with_name("hosts") / "krita_panel_probe.py"


@pytest.fixture(scope="module")
def pykrita(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The pykrita folder of a fresh `colord plugin install krita`."""
    folder = tmp_path_factory.mktemp("krita")
    install("krita", folder, kritarc=folder / "kritarc")
    return folder / "pykrita"


@pytest.fixture(scope="module")
def plugin(pykrita: Path) -> SimpleNamespace:
    sys.path.insert(0, str(pykrita))
    try:
        names = ("colorizer", "colord_wire", "colord_plugin_core", "messages", "options", "pixels")
        return SimpleNamespace(
            **{name: importlib.import_module(f"colord_krita.{name}") for name in names}
        )
    finally:
        sys.path.remove(str(pykrita))


def layer(plugin, name: str, rgba: np.ndarray, x: int = 0, y: int = 0):
    bgra = np.ascontiguousarray(rgba[..., [2, 1, 0, 3]])
    height, width = rgba.shape[:2]
    return plugin.colord_plugin_core.LayerPixels(name, x, y, width, height, bgra.tobytes())


class FakeHost:
    """Krita as the colorizer sees it: two layers to read, a place to insert, a message box."""

    def __init__(self, plugin, *, read_error: str | None = None) -> None:
        self.plugin = plugin
        self.line_art = layer(plugin, "Inks", draw_line_art(48, 64), x=7, y=5)
        self.reference = layer(plugin, "Ref", draw_reference(40, 56))
        self.read_error = read_error
        self.insert_error: str | None = None
        self.lowest = False  # the line art is the lowest layer of its group
        self.names = ["Inks", "Ref"]
        self.reads: list[str] = []
        self.inserted: list[tuple] = []  # (target, name, pixels, above) per new layer
        self.placements: list = []
        self.messages: list[str] = []

    def read_inputs(self, options):
        self.reads.append(options.reference)
        if self.read_error is not None:
            raise self.plugin.colord_plugin_core.PluginError(self.read_error)
        reference = None if options.no_reference else self.reference
        return self.plugin.colorizer.Inputs(self.line_art, reference, target="inks-node")

    def room_below(self, target) -> bool:
        return not self.lowest

    def layer_names(self) -> list[str]:
        return list(self.names)

    def insert(self, target, placement) -> list[str]:
        if self.insert_error is not None:
            raise self.plugin.colord_plugin_core.PluginError(self.insert_error)
        self.placements.append(placement)
        for new in placement.layers:
            self.inserted.append((target, new.pixels.name, new.pixels, placement.above))
            self.names.append(new.pixels.name)
        return []

    def show_message(self, text: str) -> None:
        self.messages.append(text)


def colorizer_for(plugin, host, connect, **kwargs):
    """A Colorizer that finds a daemon running (unless told otherwise)."""
    kwargs.setdefault("find_daemon", lambda: None)
    return plugin.colorizer.Colorizer(host, connect, **kwargs)


def options(plugin, **changes):
    fields = {"reference": "Ref", "working_size": 64, "transparent_paper": False} | changes
    return plugin.options.ColorizeOptions(**fields)


def finish(colorizer, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not colorizer.poll():
        assert time.monotonic() < deadline, "the request never finished"
        time.sleep(0.01)


@pytest.fixture(scope="module")
def daemon(tiny_checkpoint):
    with start_daemon(tiny_checkpoint) as running:
        yield running


def connect_to(plugin, connection_file: Path):
    return lambda: plugin.colord_wire.WireClient.from_connection_file(connection_file, timeout=60)


# -- the request flow -------------------------------------------------------------------------


@pytest.mark.slow
def test_result_is_inserted_below_the_line_art_at_its_offset(plugin, daemon, tmp_path, monkeypatch):
    log = tmp_path / "log.jsonl"
    monkeypatch.setenv(plugin.messages.LOG_ENV, str(log))
    host = FakeHost(plugin)
    changes = []
    colorizer = colorizer_for(
        plugin,
        host,
        connect_to(plugin, daemon.connection_file),
        on_change=lambda: changes.append(1),
    )
    assert colorizer.start(options(plugin, keep_lines=False))
    assert colorizer.busy and changes
    finish(colorizer)
    assert not colorizer.busy and host.messages == []

    [(target, name, pixels, above)] = host.inserted
    assert (target, name, above) == ("inks-node", "Colorized (Ref)", False)
    assert (pixels.x, pixels.y, pixels.width, pixels.height) == (7, 5, 64, 48)
    wire = plugin.colord_wire
    with wire.WireClient.from_connection_file(daemon.connection_file) as client:
        expected, _ = client.colorize(
            wire.Image(64, 48, "BGRA8", host.line_art.data),
            wire.Image(56, 40, "BGRA8", host.reference.data),
            working_size=64,
            keep_lines=False,
            result_format="BGRA8",
        )
    assert pixels.data == bytes(expected.data)
    [event] = [json.loads(line) for line in log.read_text().splitlines()]
    assert event["event"] == "inserted" and event["layer"] == "Colorized (Ref)"
    assert {"engine_ms", "total_ms"} <= set(event["timings"])
    assert event["elapsed_ms"] >= event["round_trip_ms"] > 0
    # the colorize request's own split, within the round trip
    assert set(event["wire_ms"]) == {"encode", "send", "reply", "decode"}
    assert event["timings"]["total_ms"] <= event["wire_ms"]["send"] + event["wire_ms"]["reply"]
    assert sum(event["wire_ms"].values()) <= event["round_trip_ms"]


def test_a_not_running_status_goes_once_the_daemon_runs(plugin, tmp_path) -> None:
    host = FakeHost(plugin)
    wire = plugin.colord_wire
    colorizer = plugin.colorizer.Colorizer(
        host,
        lambda: pytest.fail("nothing may be sent"),
        find_daemon=lambda: wire.read_connection(tmp_path / "none.json"),
        launch_command=lambda: None,
    )
    colorizer.daemon_running()  # nothing stale yet: an earlier message stays
    assert not colorizer.start(options(plugin))
    assert "not running" in colorizer.status
    colorizer.daemon_running()
    assert colorizer.status == ""
    assert not colorizer.start(options(plugin, working_size=100))
    colorizer.daemon_running()
    assert "multiple of 16" in colorizer.status  # not about the daemon: it stays


def test_start_button_without_a_way_to_start_is_a_message(plugin, tmp_path) -> None:
    host = FakeHost(plugin)
    wire = plugin.colord_wire
    colorizer = plugin.colorizer.Colorizer(
        host,
        lambda: pytest.fail("nothing may be sent"),
        find_daemon=lambda: wire.read_connection(tmp_path / "none.json"),
        launch_command=lambda: None,
    )
    assert not colorizer.start_daemon()
    [message] = host.messages
    assert "not running" in message and "colord serve" in message and not colorizer.busy


def test_no_daemon_and_no_way_to_start_one_is_one_message(plugin, tmp_path) -> None:
    host = FakeHost(plugin)
    wire = plugin.colord_wire
    colorizer = plugin.colorizer.Colorizer(
        host,
        lambda: pytest.fail("nothing may be sent"),
        find_daemon=lambda: wire.read_connection(tmp_path / "none.json"),
        launch_command=lambda: None,
    )
    assert not colorizer.start(options(plugin))
    assert host.inserted == []
    [message] = host.messages
    assert "not running" in message and "colord serve" in message
    assert colorizer.status == message and not colorizer.busy


class BlockingClient:
    """A client whose reply waits for `release` (to hold a request in flight)."""

    def __init__(self, reply, release: threading.Event, wire) -> None:
        self.reply, self.release, self.wire = reply, release, wire
        self.exchange_ms = {"encode": 1.0, "send": 2.0, "reply": 3.0, "decode": 4.0}

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        pass

    def info(self) -> dict:
        return {"limits": {"max_working_size": 4096}, "features": ["flats"]}

    def colorize_layers(self, line_art, reference, **options):
        self.release.wait(30)
        if isinstance(self.reply, BaseException):
            raise self.reply
        answer = self.reply(line_art)
        flats = options.get("flats")
        return self.wire.Layers(
            None if flats == "only" else answer,
            None if flats is None else answer._replace(data=bytes(len(answer.data))),
            {"engine_ms": 1.0},
        )


def test_second_start_while_busy_does_nothing(plugin) -> None:
    host = FakeHost(plugin)
    release = threading.Event()
    echo = BlockingClient(lambda image: image, release, plugin.colord_wire)
    colorizer = colorizer_for(plugin, host, lambda: echo)
    assert colorizer.start(options(plugin))
    assert not colorizer.start(options(plugin))
    assert colorizer.status == plugin.messages.BUSY
    assert host.reads == ["Ref"] and host.messages == []
    assert not colorizer.poll()  # still waiting: nothing inserted yet
    release.set()
    finish(colorizer)
    assert len(host.inserted) == 1 and host.inserted[0][2].data == host.line_art.data
    assert colorizer.start(options(plugin))  # free again
    finish(colorizer)
    assert len(host.inserted) == 2


def test_requests_reuse_buffers_but_never_share_them_with_a_cancelled_one(plugin) -> None:
    host = FakeHost(plugin)
    release = threading.Event()
    clients: list[BlockingClient] = []

    def connect() -> BlockingClient:
        clients.append(BlockingClient(lambda image: image, release, plugin.colord_wire))
        return clients[-1]

    colorizer = colorizer_for(plugin, host, connect)
    assert colorizer.start(options(plugin))
    colorizer.cancel()  # its worker still waits for the reply, to be written into its buffers
    assert colorizer.start(options(plugin))
    release.set()
    finish(colorizer)
    assert colorizer.start(options(plugin))
    finish(colorizer)
    cancelled, second, third = (client.reply_buffer for client in clients)
    assert second is third and cancelled is not second


def test_click_during_insertion_is_refused(plugin) -> None:
    """Krita may run its event loop inside addChildNode, so a click can arrive mid-insertion."""
    host = FakeHost(plugin)
    release = threading.Event()
    release.set()
    colorizer = colorizer_for(
        plugin, host, lambda: BlockingClient(lambda i: i, release, plugin.colord_wire)
    )
    nested: list[bool] = []
    insert = host.insert
    host.insert = lambda *args: (
        nested.append(colorizer.start(options(plugin))),
        insert(*args),
    )
    assert colorizer.start(options(plugin))
    finish(colorizer)
    assert nested == [False] and len(host.inserted) == 1 and host.reads == ["Ref"]
    assert not colorizer.busy


def test_on_reply_runs_once_in_the_worker_after_the_reply(plugin) -> None:
    host = FakeHost(plugin)
    release = threading.Event()
    calls: list[tuple[int, bool]] = []
    colorizer = colorizer_for(
        plugin,
        host,
        lambda: BlockingClient(lambda image: image, release, plugin.colord_wire),
        on_reply=lambda: calls.append((threading.get_ident(), colorizer.poll())),
    )
    assert colorizer.start(options(plugin))
    assert calls == []
    release.set()
    deadline = time.monotonic() + 30
    while not calls:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    [(thread, finished)] = calls
    assert thread != threading.get_ident() and finished  # the reply was in when it ran
    assert len(host.inserted) == 1


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (lambda image: image._replace(width=image.width + 1), "65x48 BGRA8 image for a 64x48"),
        (lambda image: image._replace(format="RGBA8"), "compatible version"),
        (RuntimeError("boom"), "(RuntimeError: boom)"),
    ],
)
def test_bad_replies_become_messages(plugin, reply, expected) -> None:
    host = FakeHost(plugin)
    release = threading.Event()
    release.set()
    colorizer = colorizer_for(
        plugin, host, lambda: BlockingClient(reply, release, plugin.colord_wire)
    )
    assert colorizer.start(options(plugin))
    finish(colorizer)
    assert host.inserted == []
    [message] = host.messages
    assert expected in message and "Traceback" not in message


def test_daemon_error_reply_is_the_wire_clients_sentence(plugin) -> None:
    wire = plugin.colord_wire
    error = wire.DaemonError("unauthorized", "The token is missing or wrong.")
    release = threading.Event()
    release.set()
    host = FakeHost(plugin)
    colorizer = colorizer_for(
        plugin, host, lambda: BlockingClient(error, release, plugin.colord_wire)
    )
    colorizer.start(options(plugin))
    finish(colorizer)
    assert host.messages == [wire.user_message(error)]


def test_unfit_layers_and_missing_reference_are_messages(plugin) -> None:
    host = FakeHost(plugin, read_error="“Mask” is a transparency mask, not a layer.")
    colorizer = colorizer_for(plugin, host, lambda: pytest.fail("nothing may be sent"))
    assert not colorizer.start(options(plugin))
    assert host.messages == ["“Mask” is a transparency mask, not a layer."]
    assert not colorizer.busy

    host = FakeHost(plugin)
    colorizer = colorizer_for(plugin, host, lambda: pytest.fail("nothing may be sent"))
    assert not colorizer.start(options(plugin, reference=""))
    assert host.reads == [] and host.messages == [plugin.messages.NO_REFERENCE]


def test_unusable_working_size_is_refused_before_anything_is_read(plugin) -> None:
    host = FakeHost(plugin)
    colorizer = colorizer_for(plugin, host, lambda: pytest.fail("nothing may be sent"))
    assert not colorizer.start(options(plugin, working_size=100))
    [message] = host.messages
    assert "100 px" in message and "multiple of 16" in message and "96 px" in message
    assert host.reads == [] and not colorizer.busy


def test_no_reference_is_an_explicit_choice_sent_as_none(plugin) -> None:
    host = FakeHost(plugin)
    release = threading.Event()
    release.set()
    sent = []
    client = BlockingClient(lambda image: image, release, plugin.colord_wire)
    colorize = client.colorize_layers
    client.colorize_layers = lambda line_art, reference, **kw: (
        sent.append(reference),
        colorize(line_art, reference, **kw),
    )[1]
    colorizer = colorizer_for(plugin, host, lambda: client)
    assert colorizer.start(options(plugin, reference_id=plugin.options.NO_REFERENCE_ID))
    finish(colorizer)
    assert sent == [None] and host.inserted[0][1] == "Colorized (no reference)"


def test_results_are_numbered_and_go_above_opaque_line_art(plugin) -> None:
    host = FakeHost(plugin)
    opaque = np.full((48, 64, 4), 255, np.uint8)
    opaque[20:22, :, :3] = 0
    host.line_art = layer(plugin, "Scan", opaque)
    release = threading.Event()
    release.set()
    colorizer = colorizer_for(
        plugin, host, lambda: BlockingClient(lambda i: i, release, plugin.colord_wire)
    )
    for _ in range(2):
        assert colorizer.start(options(plugin))
        finish(colorizer)
    host.lowest, host.line_art = True, layer(plugin, "Inks", draw_line_art(48, 64))
    assert colorizer.start(options(plugin, multiply_over_opaque=False))
    finish(colorizer)
    assert [(name, above) for _, name, _, above in host.inserted] == [
        ("Colorized (Ref)", True),
        ("Colorized (Ref) 2", True),
        ("Colorized (Ref) 3", True),  # no room below the lowest layer
    ]
    assert "lowest layer" in colorizer.status and "Multiply" in colorizer.status


def test_flats_with_the_colour_are_inserted_in_one_stack_and_logged(
    plugin, tmp_path, monkeypatch
) -> None:
    log = tmp_path / "log.jsonl"
    monkeypatch.setenv(plugin.messages.LOG_ENV, str(log))
    host = FakeHost(plugin)
    release = threading.Event()
    release.set()
    client = BlockingClient(lambda image: image, release, plugin.colord_wire)
    sent = []
    colorize = client.colorize_layers
    client.colorize_layers = lambda line_art, reference, **kw: (
        sent.append(kw),
        colorize(line_art, reference, **kw),
    )[1]
    colorizer = colorizer_for(plugin, host, lambda: client)
    assert colorizer.start(options(plugin, flats="with_colour"))
    finish(colorizer)
    assert sent[0]["flats"] == "with_colour" and sent[0]["flats_ground"] == "opaque"
    [placement] = host.placements
    assert [new.pixels.name for new in placement.layers] == ["Colorized (Ref)", "Flats (Ref)"]
    assert colorizer.status == "Added “Colorized (Ref)” and “Flats (Ref)”."
    [event] = [json.loads(line) for line in log.read_text().splitlines()]
    assert event["layers"] == ["Colorized (Ref)", "Flats (Ref)"]


@pytest.mark.slow
def test_the_docker_learns_once_per_daemon_whether_it_makes_flats(plugin, daemon) -> None:
    known = threading.Event()
    connects = []
    connect = connect_to(plugin, daemon.connection_file)
    features = plugin.colorizer.DaemonFeatures(
        lambda: (connects.append(1), connect())[1], on_change=known.set
    )
    connection = plugin.colord_wire.read_connection(daemon.connection_file)
    features.update(connection)
    assert known.wait(30) and features.flats is True
    features.update(connection)  # the same daemon: not asked again
    assert len(connects) == 1 and features.flats is True
    features.update(None)
    assert features.flats is None


def test_insert_failure_is_a_message(plugin) -> None:
    host = FakeHost(plugin)
    host.insert_error = plugin.messages.LINE_ART_REMOVED
    release = threading.Event()
    release.set()
    colorizer = colorizer_for(
        plugin, host, lambda: BlockingClient(lambda i: i, release, plugin.colord_wire)
    )
    colorizer.start(options(plugin))
    finish(colorizer)
    assert host.messages == [plugin.messages.LINE_ART_REMOVED] and not colorizer.busy


def test_daemon_status_line(plugin, tmp_path) -> None:
    wire = plugin.colord_wire
    running = wire.Connection("tcp://127.0.0.1:5547", "t" * 32, 42, "0.1.0")
    assert plugin.colorizer.daemon_status(lambda: running) == (
        running,
        "Running: colord 0.1.0 (pid 42).",
    )
    status = plugin.colorizer.daemon_status(lambda: wire.read_connection(tmp_path / "none.json"))
    assert status == (None, "Not running.")


# -- options, pixels, messages ----------------------------------------------------------------


def test_options_round_trip_and_fallbacks(plugin) -> None:
    opts = plugin.options
    chosen = opts.ColorizeOptions(
        reference_id="{1234}", reference="Colours", working_size=768, keep_lines=False,
        transparent_paper=False, multiply_over_opaque=False, flats="only",
    )  # fmt: skip
    stored = opts.dump(chosen)
    assert opts.load(lambda key, default: stored.get(key, default)) == chosen
    assert opts.load(lambda key, default: default) == opts.ColorizeOptions()
    broken = {"working_size": "huge", "keep_lines": "maybe", "flats": "lots"}
    assert opts.load(lambda key, default: broken.get(key, default)) == opts.ColorizeOptions()
    # an unusable size is kept as stored, to be refused in words at Colorize, never clamped
    typed = opts.load(lambda key, default: {"working_size": "100"}.get(key, default))
    assert typed.working_size == 100
    # automatic by default, stored as such; the daemon then chooses the working size
    assert opts.ColorizeOptions().working_size is None
    assert opts.dump(opts.ColorizeOptions())["working_size"] == "auto"
    assert (
        opts.load(lambda key, default: {"working_size": "512"}.get(key, default)).working_size
        == 512
    )


def test_intersect(plugin) -> None:
    Rect, intersect = plugin.pixels.Rect, plugin.pixels.intersect
    canvas = Rect(0, 0, 100, 80)
    assert intersect(Rect(10, 10, 20, 20), canvas) == Rect(10, 10, 20, 20)
    assert intersect(Rect(-5, 70, 20, 30), canvas) == Rect(0, 70, 15, 10)
    assert intersect(Rect(100, 0, 5, 5), canvas) is None
    assert intersect(Rect(0, 0, 0, 0), canvas) is None


@pytest.mark.parametrize(
    ("space", "direct"),
    [
        (("RGBA", "U8", "sRGB-elle-V2-srgbtrc.icc"), True),
        (("RGBA", "U8", "sRGB built-in"), True),
        (("RGBA", "U8", "sRGB-elle-V2-g10.icc"), False),  # linear light
        (("RGBA", "U16", "sRGB-elle-V2-srgbtrc.icc"), False),
        (("GRAYA", "U8", "Gray-D50-elle-V2-srgbtrc.icc"), False),
        (("CMYKA", "U8", "Chemical proof"), False),
    ],
)
def test_which_colour_spaces_are_sent_as_they_are(plugin, space, direct) -> None:
    assert plugin.pixels.is_srgb8(*space) is direct


def test_message_log_only_when_asked(plugin, tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(plugin.messages.LOG_ENV, raising=False)
    plugin.messages.record("message", text="quiet")
    log = tmp_path / "log.jsonl"
    monkeypatch.setenv(plugin.messages.LOG_ENV, str(log))
    plugin.messages.record("message", text="hello")
    [line] = log.read_text().splitlines()
    assert json.loads(line)["text"] == "hello"


def test_docker_panel_in_real_qt(pykrita: Path, tmp_path: Path) -> None:
    """The docker's widget under the PyQt that Krita uses, driven the way clicks drive it."""
    has_qt = (
        SYSTEM_PYTHON.exists()
        and subprocess.run(
            [str(SYSTEM_PYTHON), "-c", "import PyQt5.QtWidgets"], capture_output=True
        ).returncode
        == 0
    )
    if not has_qt:
        missing("no system Python with PyQt5 (installed with Krita, see tests/run.sh)", HOSTS)
    env = {
        "QT_QPA_PLATFORM": "offscreen",
        "XDG_RUNTIME_DIR": str(tmp_path),
        "PATH": "/usr/bin:/bin",
    }
    result = subprocess.run(
        [str(SYSTEM_PYTHON), str(PANEL_PROBE), str(pykrita)],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["binding"] == "PyQt5"
    assert seen["items"] == [
        ["No reference (colours of its own)", "none"],
        ["Inks", "{1}"],
        ["Colours", "{2}"],
        ["    Sky", "{3}"],
    ]
    assert seen["icons"] == [False, False, True, False]  # the thumbnail Krita gave
    assert (seen["current"], seen["size"], seen["flags"]) == ("{3}", 768, [False, True, True])
    assert seen["renamed"] == ["Palette", "{2}", "Palette"]  # remembered by id, not by name
    assert seen["missing"] == ["Palette (not in this document)", "{2}"]
    assert seen["automatic"] == ["Automatic", None]
    # Colorize greyed out and Cancel shown at once; the moving bar only for a request still
    # running after the delay, and gone when it ends
    assert seen["quick"] == [False, True, False] and seen["quick_after"] == [True, False, False]
    assert seen["busy"] == [False, True, False] and seen["busy_later"] == [False, True, True]
    assert seen["idle"] == [True, False, False]
    assert seen["no_document"] is False
    assert seen["stopped"] == ["Not running.", True]
    assert seen["running"] == ["Running: colord 0.1.0 (pid 42).", False]
    assert seen["status"] == "Added “Colorized (Sky)”."
    assert seen["flats_items"] == [
        ["No flats", "none"],
        ["Flats and colour", "with_colour"],
        ["Flats only", "only"],
    ]
    assert seen["flats_stored"] == ["Flats only", "only"]
    assert seen["flats_enabled"] == [True, True, True]
    # a daemon without flats: its choices greyed out, "No flats" still choosable, and why
    [items, note_shown, note] = seen["flats_unavailable"]
    assert items == [True, False, False] and note_shown and "cannot make flats" in note
    assert seen["flats_unknown"] == [[True, True, True], False]
    assert seen["flats_chosen"] == "with_colour"
    # pixels handed to Krita: wrapped by PyQt5 without a copy, else left to the binding
    assert seen["qbytearray"] == ["QByteArray", True] and seen["uncopied"]
    assert seen["left_to_the_binding"]
    assert seen["calls"] == [
        ["options", "{2}", "Colours", 768, False, "none"],
        ["options", "{2}", "Colours", 768, True, "none"],
        ["options", "{2}", "Colours", 1024, True, "none"],
        ["cancel"],
        ["colorize"],
        ["start"],
    ]
