"""One colorize request from action to inserted layer, without Krita: the host is passed in.

The GUI thread calls `start` (reads both layers through the host, then sends them from a worker
thread so Krita stays responsive). When the reply is in, the worker calls `on_reply` (in Krita: a
queued Qt signal) and the GUI thread calls `poll`, which inserts the result through the host, again
in the GUI thread, since Krita's API is not thread-safe. While a request runs, `start` refuses a
second one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from . import colord_wire, messages
from .messages import PluginError
from .options import ColorizeOptions
from .pixels import WIRE_FORMAT, LayerPixels, check_size


@dataclass(frozen=True)
class Inputs:
    line_art: LayerPixels
    reference: LayerPixels
    target: Any  # the host's handle of the line-art layer, to insert the result below it


class Host(Protocol):
    def read_inputs(self, reference: str) -> Inputs:
        """Read the active layer (line art) and the layer `reference`; PluginError if unfit."""

    def insert_below(self, target: Any, name: str, pixels: LayerPixels) -> None:
        """Add `pixels` as a new paint layer `name` directly below `target`, in one undo step."""

    def show_message(self, text: str) -> None:
        """Tell the artist `text` without blocking."""


def _to_wire(pixels: LayerPixels) -> colord_wire.Image:
    return colord_wire.Image(pixels.width, pixels.height, WIRE_FORMAT, pixels.data)


class _Request:
    """The wire call, run in a worker thread; the outcome is read once `finished` is set."""

    def __init__(
        self,
        inputs: Inputs,
        options: ColorizeOptions,
        connect: Callable[[], Any],
        on_reply: Callable[[], None],
        started_at: float,
    ) -> None:
        self.inputs = inputs
        self.started_at = started_at  # when the action ran
        self.finished = threading.Event()
        self.image: colord_wire.Image | None = None
        self.timings: dict = {}
        self.error: str | None = None
        self.sent_at = time.perf_counter()
        self.answered_at = 0.0
        self._options = options
        self._connect = connect
        self._on_reply = on_reply
        self._thread = threading.Thread(target=self._run, name="colord-request", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            with self._connect() as client:
                self.image, self.timings = client.colorize(
                    _to_wire(self.inputs.line_art),
                    _to_wire(self.inputs.reference),
                    working_size=self._options.working_size,
                    keep_lines=self._options.keep_lines,
                    result_format=WIRE_FORMAT,
                )
        except colord_wire.ColordError as error:
            self.error = colord_wire.user_message(error)
        except Exception as error:  # a message in Krita, never a traceback
            self.error = messages.unexpected(error)
        finally:
            self.answered_at = time.perf_counter()
            self.finished.set()
            self._on_reply()


class Colorizer:
    def __init__(
        self,
        host: Host,
        connect: Callable[[], Any] = colord_wire.WireClient.from_connection_file,
        on_change: Callable[[], None] = lambda: None,
        on_reply: Callable[[], None] = lambda: None,
    ) -> None:
        """`on_reply` runs in the worker thread once a reply (or failure) is in: it must only
        hand over to the GUI thread, which then calls `poll`."""
        self._host = host
        self._connect = connect
        self._on_change = on_change
        self._on_reply = on_reply
        self._request: _Request | None = None
        self._inserting = False
        self.status = ""  # the last thing said to the artist, for the docker's status line

    @property
    def busy(self) -> bool:
        # Inserting counts: Krita may run its event loop (and so a click) while it adds the layer.
        return self._request is not None or self._inserting

    def start(self, options: ColorizeOptions) -> bool:
        """Read the layers and send the request; False (with a message) when nothing was sent."""
        if self.busy:
            self._say(messages.BUSY, show=False)
            return False
        started_at = time.perf_counter()
        try:
            if not options.reference:
                raise PluginError(messages.NO_REFERENCE)
            inputs = self._host.read_inputs(options.reference)
        except PluginError as error:
            self._say(str(error))
            return False
        except Exception as error:
            self._say(messages.unexpected(error))
            return False
        self._request = _Request(inputs, options, self._connect, self._on_reply, started_at)
        self._say(
            f"Colouring “{inputs.line_art.name}” after “{inputs.reference.name}”…", show=False
        )
        return True

    def poll(self) -> bool:
        """Finish the request if its reply is in (insert or report); True when none is pending."""
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
        except PluginError as error:
            self._say(str(error))
        except Exception as error:
            self._say(messages.unexpected(error))
        finally:
            self._inserting = False
            self._on_change()
        return True

    def _insert(self, request: _Request) -> None:
        line_art, reference = request.inputs.line_art, request.inputs.reference
        image = request.image
        if image is None or (image.width, image.height, image.format) != (
            line_art.width,
            line_art.height,
            WIRE_FORMAT,
        ):
            raise PluginError("The daemon answered with an image of the wrong size or format.")
        name = messages.result_layer_name(reference.name)
        result = LayerPixels(
            name, image.width, image.height, bytes(image.data), line_art.x, line_art.y
        )
        check_size(result)
        self._host.insert_below(request.inputs.target, name, result)
        done_at = time.perf_counter()
        self._say(f"Added “{name}”.", show=False)
        messages.record(
            "inserted",
            layer=name,
            width=image.width,
            height=image.height,
            elapsed_ms=(done_at - request.started_at) * 1000.0,
            read_ms=(request.sent_at - request.started_at) * 1000.0,
            round_trip_ms=(request.answered_at - request.sent_at) * 1000.0,
            insert_ms=(done_at - request.answered_at) * 1000.0,
            timings=dict(request.timings),
        )

    def _say(self, text: str, *, show: bool = True) -> None:
        self.status = text
        if show:
            messages.record("message", text=text)
            self._host.show_message(text)
        self._on_change()


def daemon_status(read: Callable[[], Any] = colord_wire.read_connection) -> str:
    """One line for the docker: is a daemon's connection file there, and which daemon is it."""
    try:
        connection = read()
    except colord_wire.ColordError as error:
        return colord_wire.user_message(error)
    return f"Running: colord {connection.version} (pid {connection.pid}) at {connection.endpoint}."
