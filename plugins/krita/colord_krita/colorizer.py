"""One colorize request from action to inserted layer, without Krita: the host is passed in.

The GUI thread calls `start`: it reads both layers through the host and, when no daemon runs,
starts one (`colord_launch`) and waits for it through `poll`; then the layers go out from a worker
thread so Krita stays responsive. When the reply is in, the worker calls `on_reply` (in Krita: a
queued Qt signal) and the GUI thread calls `poll`, which inserts the result through the host, again
in the GUI thread, since Krita's API is not thread-safe. While a request runs, `start` refuses a
second one; `cancel` drops it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from . import colord_launch, colord_plugin_core, colord_wire, messages
from .colord_plugin_core import LayerPixels, Placement, PluginError
from .options import ColorizeOptions
from .pixels import WIRE_FORMAT


@dataclass(frozen=True)
class Inputs:
    line_art: LayerPixels
    reference: LayerPixels | None  # None: colour without a reference (the artist chose so)
    target: Any  # the host's handle of the line-art layer, to place the result beside it


class Host(Protocol):
    def read_inputs(self, options: ColorizeOptions) -> Inputs:
        """Read the active layer (line art) and the chosen reference; PluginError if unfit."""

    def room_below(self, target: Any) -> bool:
        """Whether a layer can be inserted directly below the line art `target`."""

    def layer_names(self) -> list[str]:
        """The names of every layer of the document, to number the results."""

    def insert(self, target: Any, placement: Placement) -> list[str]:
        """Add the placement's layers as paint layers directly below `target` (or above it),
        top first, in as few undo steps as Krita allows, and make `target` the active layer
        again; returns notes for the artist about how the layers were made."""

    def show_message(self, text: str) -> None:
        """Tell the artist `text` without blocking."""


@dataclass(frozen=True)
class _Buffers:
    """Memory every request reuses (`colord_wire.reused`): the reference as sent, and the reply,
    whose layers are read from it until they are inserted; that ends before the next request may
    start (`Colorizer.busy`), and a cancelled request keeps its buffers to itself."""

    reference: bytearray = field(default_factory=bytearray)
    reply: bytearray = field(default_factory=bytearray)


class _Request:
    """The wire call, run in a worker thread; the outcome is read once `finished` is set."""

    def __init__(
        self,
        inputs: Inputs,
        options: ColorizeOptions,
        connect: Callable[[], Any],
        on_reply: Callable[[], None],
        started_at: float,
        buffers: _Buffers,
    ) -> None:
        self.inputs = inputs
        self.options = options
        self.started_at = started_at  # when the action ran
        self.finished = threading.Event()
        self.answer: colord_wire.Layers | None = None
        self.error: str | None = None
        self.sent_at = time.perf_counter()
        self.answered_at = 0.0  # the daemon's answer in (and checked)
        self.wire_ms: dict[str, float] = {}  # the colorize request's, as the wire client says
        self._connect = connect
        self._on_reply = on_reply
        self._buffers = buffers
        self._thread = threading.Thread(target=self._run, name="colord-request", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            with self._connect() as client:
                client.reply_buffer = self._buffers.reply
                self.answer = colord_plugin_core.colorize(
                    client,
                    self.inputs.line_art,
                    self.inputs.reference,
                    WIRE_FORMAT,
                    working_size=self.options.working_size,
                    keep_lines=self.options.keep_lines,
                    transparent_paper=self.options.transparent_paper,
                    flats=self.options.flats,
                    reference_buffer=self._buffers.reference,
                )
                self.wire_ms = dict(client.exchange_ms)
        except Exception as error:  # a message in Krita, never a traceback
            self.error = colord_plugin_core.error_message(error)
        finally:
            self.answered_at = time.perf_counter()
            self.finished.set()
            self._on_reply()


@dataclass
class _Waiting:
    """A request whose inputs are read, waiting for the daemon it started."""

    inputs: Inputs | None  # None: started by the Start button, nothing to send
    options: ColorizeOptions | None
    startup: colord_launch.Startup
    started_at: float


class Colorizer:
    def __init__(
        self,
        host: Host,
        connect: Callable[[], Any] = colord_wire.WireClient.from_connection_file,
        on_change: Callable[[], None] = lambda: None,
        on_reply: Callable[[], None] = lambda: None,
        find_daemon: Callable[[], Any] = colord_wire.read_connection,
        launch_command: Callable[[], list[str] | None] = colord_launch.launch_command,
    ) -> None:
        """`on_reply` runs in the worker thread once a reply (or failure) is in: it must only
        hand over to the GUI thread, which then calls `poll`. While the daemon starts, the GUI
        calls `poll` on a timer (`starting` says when)."""
        self._host = host
        self._connect = connect
        self._on_change = on_change
        self._on_reply = on_reply
        self._find_daemon = find_daemon
        self._launch_command = launch_command
        self._request: _Request | None = None
        self._buffers = _Buffers()
        self._waiting: _Waiting | None = None
        self._inserting = False
        self._status_says_daemon_down = False
        self.status = ""  # the last thing said to the artist, for the status line and bar

    @property
    def busy(self) -> bool:
        # Inserting counts: Krita may run its event loop (and so a click) while it adds the layer.
        return self._request is not None or self._waiting is not None or self._inserting

    @property
    def starting(self) -> bool:
        return self._waiting is not None

    def start(self, options: ColorizeOptions) -> bool:
        """Read the layers and send the request (starting the daemon first when none runs);
        False (with a message) when nothing was started."""
        if self.busy:
            self._say(messages.BUSY, show=False)
            return False
        started_at = time.perf_counter()
        try:
            colord_plugin_core.parse_working_size(options.working_size)
            if not options.has_reference_choice:
                raise PluginError(messages.NO_REFERENCE)
            inputs = self._host.read_inputs(options)
            startup = self._start_daemon_if_needed()
        except Exception as error:
            self._say(colord_plugin_core.error_message(error))
            self._status_says_daemon_down = isinstance(error, colord_wire.DaemonNotRunning)
            return False
        if startup is not None:
            self._waiting = _Waiting(inputs, options, startup, started_at)
            self._say(startup.progress(), show=False)
            return True
        self._send(inputs, options, started_at)
        return True

    def start_daemon(self) -> bool:
        """Start the daemon (the docker's Start button); False with a message when it cannot."""
        if self.busy:
            return False
        try:
            startup = self._start_daemon_if_needed()
        except Exception as error:  # no daemon and no way to start one, or it failed to start
            self._say(colord_plugin_core.error_message(error))
            return False
        if startup is None:
            return False
        self._waiting = _Waiting(None, None, startup, time.perf_counter())
        self._say(startup.progress(), show=False)
        return True

    def _start_daemon_if_needed(self) -> colord_launch.Startup | None:
        try:
            self._find_daemon()
            return None
        except colord_wire.DaemonNotRunning:
            command = self._launch_command()
            if command is None:
                raise
        return colord_launch.Startup(command, read=self._find_daemon)

    def _send(self, inputs: Inputs, options: ColorizeOptions, started_at: float) -> None:
        self._request = _Request(
            inputs, options, self._connect, self._on_reply, started_at, self._buffers
        )
        reference = inputs.reference
        after = "without a reference" if reference is None else f"after “{reference.name}”"
        self._say(f"Colouring “{inputs.line_art.name}” {after}…", show=False)

    def cancel(self) -> None:
        """Drop the request in flight (its reply is ignored) or stop waiting for the daemon."""
        if self._request is None and self._waiting is None:
            return
        self._request = None
        self._waiting = None
        self._buffers = _Buffers()  # the dropped request may still be writing into the old ones
        self._say(messages.CANCELLED, show=False)

    def poll(self) -> bool:
        """Carry the request on if it can (daemon up, reply in); True when none is pending."""
        if self._waiting is not None:
            return self._poll_startup(self._waiting)
        request = self._request
        if request is None:
            return True
        if not request.finished.is_set():
            return False
        self._request = None
        if request.error is not None:
            self._say(request.error)
            return True
        self._inserting = True
        try:
            self._insert(request)
        except Exception as error:
            self._say(colord_plugin_core.error_message(error))
        finally:
            self._inserting = False
            self._on_change()
        return True

    def _poll_startup(self, waiting: _Waiting) -> bool:
        try:
            connection = waiting.startup.poll()
        except Exception as error:
            self._waiting = None
            self._say(colord_plugin_core.error_message(error))
            return True
        if connection is None:
            self._say(waiting.startup.progress(), show=False)
            return False
        self._waiting = None
        if waiting.inputs is None or waiting.options is None:  # the Start button: nothing to send
            self._say(colord_plugin_core.daemon_line(connection), show=False)
            return True
        self._send(waiting.inputs, waiting.options, waiting.started_at)
        return False

    def _insert(self, request: _Request) -> None:
        line_art, reference = request.inputs.line_art, request.inputs.reference
        answer = request.answer
        if answer is None:
            raise PluginError("The colord daemon answered without an image.")
        room_below = self._host.room_below(request.inputs.target)
        placing_at = time.perf_counter()
        placement = colord_plugin_core.place(
            answer,
            line_art,
            None if reference is None else reference.name,
            self._host.layer_names(),
            multiply_over_opaque=request.options.multiply_over_opaque,
            room_below=room_below,
        )
        inserting_at = time.perf_counter()
        host_notes = self._host.insert(request.inputs.target, placement)
        done_at = time.perf_counter()
        names = [layer.pixels.name for layer in placement.layers]
        notes = messages.placement_notes(line_art.name, placement, lowest=not room_below)
        notes += host_notes
        self._say(" ".join(notes) or messages.added(names), show=False)
        messages.record(
            "inserted",
            layer=names[0],
            layers=names,
            above=placement.above,
            notes=notes,
            width=line_art.width,
            height=line_art.height,
            elapsed_ms=(done_at - request.started_at) * 1000.0,
            read_ms=(request.sent_at - request.started_at) * 1000.0,
            round_trip_ms=(request.answered_at - request.sent_at) * 1000.0,
            insert_ms=(done_at - request.answered_at) * 1000.0,
            place_ms=(inserting_at - placing_at) * 1000.0,  # names and places, in insert_ms
            layers_ms=(done_at - inserting_at) * 1000.0,  # Krita adding them, in insert_ms
            wire_ms=request.wire_ms,  # the colorize request's, in round_trip_ms
            timings=dict(answer.timings),
        )

    def daemon_running(self) -> None:
        """The daemon is up (the docker looked): a status saying it was not is stale now."""
        if self._status_says_daemon_down:
            self._say("", show=False)

    def _say(self, text: str, *, show: bool = True) -> None:
        self._status_says_daemon_down = False
        self.status = text
        if show:
            messages.record("message", text=text)
            self._host.show_message(text)
        self._on_change()


def daemon_status(
    read: Callable[[], Any] = colord_wire.read_connection,
) -> tuple[Any, str]:
    """The running daemon's connection (None when none runs) and one short line saying so, for
    the docker."""
    try:
        connection = read()
    except colord_wire.DaemonNotRunning:
        return None, colord_plugin_core.daemon_line(None)
    except colord_wire.ColordError as error:
        return None, colord_wire.user_message(error)
    return connection, colord_plugin_core.daemon_line(connection)


class DaemonFeatures:
    """Whether the running daemon can make flats: its `info`, asked once per daemon (by pid and
    token) in a worker thread, so the docker can grey out what it cannot do."""

    INFO_TIMEOUT_S = 5.0

    def __init__(
        self,
        connect: Callable[[], Any] = colord_wire.WireClient.from_connection_file,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        """`on_change` runs in the worker thread once an answer is in (hand it to the GUI)."""
        self._connect = connect
        self._on_change = on_change
        self._daemon: tuple[int, str] | None = None
        self.flats: bool | None = None  # None: not known (no daemon, or no answer yet)

    def update(self, connection: Any) -> None:
        """Ask the daemon of `connection` (None: none runs) unless it was asked already."""
        daemon = None if connection is None else (connection.pid, connection.token)
        if daemon == self._daemon:
            return
        self._daemon, self.flats = daemon, None
        if daemon is not None:
            threading.Thread(
                target=self._ask, args=(daemon,), name="colord-info", daemon=True
            ).start()

    def _ask(self, daemon: tuple[int, str]) -> None:
        try:
            with self._connect() as client:
                info = client.info(timeout=self.INFO_TIMEOUT_S)
        except Exception:  # no answer: not known; a run will say what is wrong
            return
        if self._daemon == daemon:
            self.flats = colord_plugin_core.flats_available(info)
            self._on_change()
