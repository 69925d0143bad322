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
        names = ("colorizer", "colord_wire", "messages", "options", "pixels")
        return SimpleNamespace(
            **{name: importlib.import_module(f"colord_krita.{name}") for name in names}
        )
    finally:
        sys.path.remove(str(pykrita))


def layer(plugin, name: str, rgba: np.ndarray, x: int = 0, y: int = 0):
    bgra = np.ascontiguousarray(rgba[..., [2, 1, 0, 3]])
    height, width = rgba.shape[:2]
    return plugin.pixels.LayerPixels(name, width, height, bgra.tobytes(), x, y)


class FakeHost:
    """Krita as the colorizer sees it: two layers to read, a place to insert, a message box."""

    def __init__(self, plugin, *, read_error: str | None = None) -> None:
        self.plugin = plugin
        self.line_art = layer(plugin, "Inks", draw_line_art(48, 64), x=7, y=5)
        self.reference = layer(plugin, "Ref", draw_reference(40, 56))
        self.read_error = read_error
        self.insert_error: str | None = None
        self.reads: list[str] = []
        self.inserted: list[tuple] = []
        self.messages: list[str] = []

    def read_inputs(self, reference: str):
        self.reads.append(reference)
        if self.read_error is not None:
            raise self.plugin.messages.PluginError(self.read_error)
        return self.plugin.colorizer.Inputs(self.line_art, self.reference, target="inks-node")

    def insert_below(self, target, name, pixels) -> None:
        if self.insert_error is not None:
            raise self.plugin.messages.PluginError(self.insert_error)
        self.inserted.append((target, name, pixels))

    def show_message(self, text: str) -> None:
        self.messages.append(text)


def options(plugin, **changes):
    fields = {"reference": "Ref", "working_size": 64} | changes
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
    colorizer = plugin.colorizer.Colorizer(
        host, connect_to(plugin, daemon.connection_file), on_change=lambda: changes.append(1)
    )
    assert colorizer.start(options(plugin, keep_lines=False))
    assert colorizer.busy and changes
    finish(colorizer)
    assert not colorizer.busy and host.messages == []

    [(target, name, pixels)] = host.inserted
    assert (target, name) == ("inks-node", "Colorized (Ref)")
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


def test_no_daemon_is_one_message_and_nothing_inserted(plugin, tmp_path) -> None:
    host = FakeHost(plugin)
    colorizer = plugin.colorizer.Colorizer(host, connect_to(plugin, tmp_path / "none.json"))
    assert colorizer.start(options(plugin))
    finish(colorizer)
    assert host.inserted == []
    [message] = host.messages
    assert "not running" in message and "colord serve" in message
    assert colorizer.status == message and not colorizer.busy


class BlockingClient:
    """A client whose reply waits for `release` (to hold a request in flight)."""

    def __init__(self, reply, release: threading.Event) -> None:
        self.reply, self.release = reply, release

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        pass

    def colorize(self, line_art, reference, **options):
        self.release.wait(30)
        if isinstance(self.reply, BaseException):
            raise self.reply
        return self.reply(line_art), {"engine_ms": 1.0}


def test_second_start_while_busy_does_nothing(plugin) -> None:
    host = FakeHost(plugin)
    release = threading.Event()
    echo = BlockingClient(lambda image: image, release)
    colorizer = plugin.colorizer.Colorizer(host, lambda: echo)
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


def test_click_during_insertion_is_refused(plugin) -> None:
    """Krita may run its event loop inside addChildNode, so a click can arrive mid-insertion."""
    host = FakeHost(plugin)
    release = threading.Event()
    release.set()
    colorizer = plugin.colorizer.Colorizer(host, lambda: BlockingClient(lambda i: i, release))
    nested: list[bool] = []
    insert = host.insert_below
    host.insert_below = lambda *args: (
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
    colorizer = plugin.colorizer.Colorizer(
        host,
        lambda: BlockingClient(lambda image: image, release),
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
        (lambda image: image._replace(width=image.width + 1), "wrong size"),
        (lambda image: image._replace(format="RGBA8"), "wrong size or format"),
        (RuntimeError("boom"), "unexpected problem (RuntimeError: boom)"),
    ],
)
def test_bad_replies_become_messages(plugin, reply, expected) -> None:
    host = FakeHost(plugin)
    release = threading.Event()
    release.set()
    colorizer = plugin.colorizer.Colorizer(host, lambda: BlockingClient(reply, release))
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
    colorizer = plugin.colorizer.Colorizer(host, lambda: BlockingClient(error, release))
    colorizer.start(options(plugin))
    finish(colorizer)
    assert host.messages == [wire.user_message(error)]


def test_unfit_layers_and_missing_reference_are_messages(plugin) -> None:
    host = FakeHost(plugin, read_error="“Mask” is a transparency mask, not a layer.")
    colorizer = plugin.colorizer.Colorizer(host, lambda: pytest.fail("nothing may be sent"))
    assert not colorizer.start(options(plugin))
    assert host.messages == ["“Mask” is a transparency mask, not a layer."]
    assert not colorizer.busy

    host = FakeHost(plugin)
    colorizer = plugin.colorizer.Colorizer(host, lambda: pytest.fail("nothing may be sent"))
    assert not colorizer.start(options(plugin, reference=""))
    assert host.reads == [] and host.messages == [plugin.messages.NO_REFERENCE]


def test_insert_failure_is_a_message(plugin) -> None:
    host = FakeHost(plugin)
    host.insert_error = plugin.messages.LINE_ART_REMOVED
    release = threading.Event()
    release.set()
    colorizer = plugin.colorizer.Colorizer(host, lambda: BlockingClient(lambda i: i, release))
    colorizer.start(options(plugin))
    finish(colorizer)
    assert host.messages == [plugin.messages.LINE_ART_REMOVED] and not colorizer.busy


def test_daemon_status_line(plugin, tmp_path) -> None:
    wire = plugin.colord_wire
    running = wire.Connection("tcp://127.0.0.1:5547", "t" * 32, 42, "0.1.0")
    assert plugin.colorizer.daemon_status(lambda: running) == (
        "Running: colord 0.1.0 (pid 42) at tcp://127.0.0.1:5547."
    )
    status = plugin.colorizer.daemon_status(lambda: wire.read_connection(tmp_path / "none.json"))
    assert "not running" in status


# -- options, pixels, messages ----------------------------------------------------------------


def test_options_round_trip_and_fallbacks(plugin) -> None:
    opts = plugin.options
    chosen = opts.ColorizeOptions(reference="Colours", working_size=768, keep_lines=False)
    stored = opts.dump(chosen)
    assert opts.load(lambda key, default: stored.get(key, default)) == chosen
    assert opts.load(lambda key, default: default) == opts.ColorizeOptions()
    broken = {"working_size": "huge", "keep_lines": "maybe"}
    assert opts.load(lambda key, default: broken.get(key, default)) == opts.ColorizeOptions()
    clamped = opts.load(lambda key, default: {"working_size": "100000"}.get(key, default))
    assert clamped.working_size == opts.MAX_WORKING_SIZE
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


def test_check_size(plugin) -> None:
    pixels = plugin.pixels.LayerPixels("L", 2, 3, bytes(24), 0, 0)
    plugin.pixels.check_size(pixels)
    with pytest.raises(ValueError, match="expected 24"):
        plugin.pixels.check_size(pixels._replace(data=bytes(23)))


def test_message_log_only_when_asked(plugin, tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(plugin.messages.LOG_ENV, raising=False)
    plugin.messages.record("message", text="quiet")
    log = tmp_path / "log.jsonl"
    monkeypatch.setenv(plugin.messages.LOG_ENV, str(log))
    plugin.messages.record("message", text="hello")
    [line] = log.read_text().splitlines()
    assert json.loads(line)["text"] == "hello"
    assert plugin.messages.result_layer_name("Sky") == "Colorized (Sky)"


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
    assert seen["items"] == [["Inks", "Inks"], ["Colours", "Colours"], ["    Sky", "Sky"]]
    assert (seen["current"], seen["size"], seen["keep_lines"]) == ("Sky", 768, False)
    assert seen["missing"] == ["Sky (not in this document)", "Sky"]
    assert seen["automatic"] == ["Automatic", None]
    assert seen["busy"] == [False, True] and seen["idle"] == [True, False]
    assert seen["status"] == "Added “Colorized (Sky)”."
    assert seen["calls"] == [
        ["options", "Colours", 768, False],
        ["options", "Colours", 768, True],
        ["options", "Colours", 1024, True],
        ["colorize"],
        ["check"],
    ]
