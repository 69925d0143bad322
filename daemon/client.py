"""The Python client of the daemon (protocol v1 over a ZeroMQ DEALER socket).

    with Client.from_connection_file() as client:
        reply = client.colorize(line_art, reference)
        reply.image  # (H, W, 4) uint8 RGBA

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
from colord.daemon.connection import ConnectionFileError, read_connection
from colord.daemon.protocol import ColorizeArgs, ProtocolError

DEFAULT_TIMEOUT = 120.0


class DaemonError(Exception):
    """Base of the client's errors; `code` is the protocol error code (or a client-side one)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class DaemonNotRunning(DaemonError):
    """No connection file, or the daemon it names has gone."""

    def __init__(self, message: str):
        super().__init__("not_running", message)


class DaemonTimeout(DaemonError):
    """No reply within the client's timeout."""

    def __init__(self, message: str):
        super().__init__("timeout", message)


class ErrorReply(DaemonError):
    """The daemon answered with an error reply; `code` is its stable protocol code."""


class BadReply(DaemonError):
    """The daemon's reply does not follow the protocol."""

    def __init__(self, message: str):
        super().__init__(protocol.MALFORMED, message)


@dataclass(frozen=True)
class ColorizeReply:
    image: np.ndarray  # (H, W, 4) uint8 RGBA
    timings: dict[str, float]


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
        try:
            info = read_connection(Path(path) if path is not None else None)
        except ConnectionFileError as error:
            raise DaemonNotRunning(str(error)) from None
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
        self,
        line_art: np.ndarray,
        reference: np.ndarray | None = None,
        *,
        working_size: int | None = None,
        keep_lines: bool = True,
    ) -> ColorizeReply:
        """Colour line_art (uint8/uint16, grey to RGBA) after reference (or none)."""
        try:
            args = ColorizeArgs(
                line_art=protocol.array_to_image(line_art),
                reference=None if reference is None else protocol.array_to_image(reference),
                working_size=working_size,
                keep_lines=keep_lines,
            )
        except ValueError as error:
            raise DaemonError(protocol.BAD_IMAGE, f"Cannot send this image: {error}.") from None
        self._refuse_oversize(args)
        result = self.request("colorize", args)
        try:
            image = protocol.image_to_array(_result_image(result))
            timings = {key: float(value) for key, value in result["timings"].items()}
        except (KeyError, TypeError, ValueError, ProtocolError) as error:
            raise BadReply(f"The daemon's colorize result is not valid: {error}.") from None
        return ColorizeReply(image, timings)

    def _refuse_oversize(self, args: ColorizeArgs) -> None:
        """Fail at once on images above the daemon's limits: ZeroMQ would drop such a message
        unanswered and leave the client waiting out its timeout."""
        if self._limits is None:
            self._limits = self.info()["limits"]
        max_side, max_bytes = self._limits["max_side"], self._limits["max_message_bytes"]
        images = {"line art": args.line_art, "reference": args.reference}
        pixel_bytes = 0
        for name, image in images.items():
            if image is None:
                continue
            pixel_bytes += memoryview(image.data).nbytes
            if max(image.width, image.height) > max_side:
                raise ErrorReply(
                    protocol.TOO_LARGE,
                    f"The {name} is {image.width}x{image.height} px; the daemon accepts at most "
                    f"{max_side} px a side. Scale it down, or start the daemon with a larger "
                    "--max-side.",
                )
        if pixel_bytes + protocol.REQUEST_OVERHEAD_BYTES > max_bytes:
            raise ErrorReply(
                protocol.TOO_LARGE,
                f"The images take {pixel_bytes} bytes; the daemon accepts messages of at most "
                f"{max_bytes} bytes. Send smaller images.",
            )

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

    def request(self, op: str, args: ColorizeArgs | None = None) -> dict[str, Any]:
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
            frame = self._socket.recv(copy=False)
            try:
                reply = protocol.decode_reply(frame.buffer)
            except ProtocolError as error:
                raise BadReply(error.message) from None
            if reply.id == request_id:
                break
        if not reply.ok:
            raise ErrorReply(str(reply.error_code), str(reply.error_message))
        assert reply.result is not None
        return reply.result


def _result_image(result: dict[str, Any]) -> protocol.WireImage:
    message = result["image"]
    image = protocol.WireImage(
        message["width"], message["height"], message["format"], message["data"]
    )
    expected = image.width * image.height * protocol.bytes_per_pixel(image.format)
    if image.format != "RGBA8" or len(image.data) != expected:
        raise ValueError(f"expected {expected} bytes of RGBA8, got {image.format}")
    return image
