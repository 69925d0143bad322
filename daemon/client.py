"""The Python client of the daemon (protocol v1 over a ZeroMQ DEALER socket).

    with Client.from_connection_file() as client:
        reply = client.colorize(line_art, reference)
        reply.image  # (H, W, 4) uint8 RGBA
        client.colorize(line_art, reference, flats="with_colour").flats  # its flats, RGBA

Every failure of a request (no daemon, a timeout, an error reply, an unreadable reply) is a
`ColordError`.

One Client is one socket: use one per thread.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from colord.daemon import protocol
from colord.daemon.job import Job
from colord.plugins.wire.colord_protocol import (
    BAD_IMAGE,
    DEFAULT_TIMEOUT,
    PROTOCOL,
    TOO_LARGE,
    ColordError,
    DaemonNotRunning,
    DaemonTimeout,
    ErrorReply,
    ProtocolError,
    check_image,
    oversize_message,
    read_connection,
    read_reply,
)

__all__ = [
    "Client",
    "ColordError",
    "ColorizeReply",
    "DaemonNotRunning",
    "DaemonTimeout",
    "ErrorReply",
    "ProtocolError",
]


@dataclass(frozen=True)
class ColorizeReply:
    image: np.ndarray | None  # (H, W, 4) uint8 RGBA; None when only flats were asked for
    timings: dict[str, float]
    flats: np.ndarray | None = None  # (H, W, 4) uint8 RGBA, when asked for


class Client:
    def __init__(
        self,
        endpoint: str,
        token: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        context: zmq.Context | None = None,
    ):
        self.endpoint = endpoint
        self.timeout = timeout
        self._token = token
        self._ids = itertools.count(1)
        self._socket = (context or zmq.Context.instance()).socket(zmq.DEALER)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.connect(endpoint)
        self._buffer: bytearray | None = None  # the last large request, reused when sent
        self._buffer_tracker: zmq.MessageTracker = zmq.MessageTracker()
        self._limits: dict[str, Any] | None = None  # the daemon's info.limits, asked once

    @classmethod
    def from_connection_file(
        cls, path: str | Path | None = None, *, timeout: float = DEFAULT_TIMEOUT
    ) -> Client:
        """Connect to the daemon named by the connection file (default: this user's)."""
        info = read_connection(path)
        return cls(info.endpoint, info.token, timeout=timeout)

    def close(self) -> None:
        self._socket.close(linger=0)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- ops -----------------------------------------------------------------------------------

    def ping(self) -> dict[str, Any]:
        return self.request("ping")

    def info(self) -> dict[str, Any]:
        return self.request("info")

    def colorize(
        self, line_art: np.ndarray, reference: np.ndarray | None = None, **options: Any
    ) -> ColorizeReply:
        """Colour line_art (uint8/uint16, grey to RGBA) after reference (or none); `options`
        are colorize's (`colord_protocol.COLORIZE_OPTIONS`), checked before anything is sent.
        With `flats`, the reply's `flats` holds them (and its `image` is None for "only")."""
        job = Job(line_art, reference, **options)
        try:
            args, line_image, reference_image = protocol.colorize_request_args(job)
        except ValueError as error:
            raise ErrorReply(BAD_IMAGE, f"Cannot send this image: {error}.") from None
        self._refuse_oversize(line_image, reference_image)
        result = self.request("colorize", args)
        layers = {"image": job.flats != "only", "flats": job.flats is not None}
        try:
            images = {
                name: _result_image(result[name]).to_array() if wanted else None
                for name, wanted in layers.items()
            }
            timings = {key: float(value) for key, value in result["timings"].items()}
        except (KeyError, TypeError, ValueError, ProtocolError) as error:
            raise ProtocolError(
                PROTOCOL, f"The daemon's colorize result is not valid: {error}."
            ) from None
        return ColorizeReply(images["image"], timings, images["flats"])

    def _refuse_oversize(
        self, line_art: protocol.WireImage, reference: protocol.WireImage | None
    ) -> None:
        """Fail at once on images above the daemon's limits: ZeroMQ would drop such a message
        unanswered and leave the client waiting out its timeout."""
        if self._limits is None:
            self._limits = self.info()["limits"]
        images = {"line art": line_art, "reference": reference}
        sizes = {
            name: None
            if image is None
            else (image.width, image.height, memoryview(image.data).nbytes)
            for name, image in images.items()
        }
        problem = oversize_message(sizes, self._limits)
        if problem is not None:
            raise ErrorReply(TOO_LARGE, problem)

    # -- one round trip ------------------------------------------------------------------------

    def _reusable(self) -> bytearray | None:
        """The send buffer, once ZeroMQ has let go of the previous message written into it."""
        return self._buffer if self._buffer_tracker.done else None

    def _send(self, body: bytes | memoryview) -> None:
        if isinstance(body, memoryview):  # a large message in a reusable buffer
            self._buffer = body.obj
            self._buffer_tracker = self._socket.send(body, copy=False, track=True)
        else:
            self._socket.send(body)

    def request(self, op: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send one request and wait for its reply; replies to earlier, abandoned requests are
        skipped. Raises ErrorReply for an error reply and DaemonTimeout after `timeout` seconds."""
        request_id = next(self._ids)
        self._send(
            protocol.encode_request(request_id, op, self._token, args, into=self._reusable())
        )
        deadline = time.monotonic() + self.timeout
        while True:
            remaining_ms = (deadline - time.monotonic()) * 1000.0
            if remaining_ms <= 0 or not self._socket.poll(max(1, int(remaining_ms))):
                raise DaemonTimeout(
                    f"The colord daemon at {self.endpoint} did not answer within "
                    f"{self.timeout:g} s (is it running? `colord serve` starts it)."
                )
            reply = protocol.decode_message(self._socket.recv(copy=False).buffer)
            if reply.get("id") == request_id:
                return read_reply(reply)


def _result_image(message: Any) -> protocol.WireImage:
    check_image(message, "image")
    if message["format"] != "RGBA8":
        raise ValueError(f"expected RGBA8, got {message['format']}")
    return protocol.WireImage(
        message["width"], message["height"], message["format"], message["data"]
    )
