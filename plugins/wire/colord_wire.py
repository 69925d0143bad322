"""The plug-ins' client for `colord serve`, in one module of standard-library Python (>= 3.10).

Krita and GIMP on Windows and macOS bundle a Python without pip, so this module speaks everything
a plug-in needs by itself, and `colord plugin install|pack` copies it into each plug-in bundle
beside `colord_protocol`, the protocol's one definition (versions, formats, options, limits, error
codes and classes, the connection file), which it follows:

- the msgpack subset that protocol v1 uses: `packb` (and `pack_parts`), `unpackb`;
- ZMTP 3.0 over one TCP connection, as a DEALER peer with the NULL mechanism: `ZmtpPeer`;
- `WireClient`: requests carrying the token and an id, timeouts, and errors that `user_message`
  turns into one sentence for the painting app's message box.

The protocol itself is specified in docs/protocol.md.
"""

from __future__ import annotations

import itertools
import socket
import struct
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

if __package__:  # inside a plug-in's package (Krita) or colord.plugins.wire (the daemon)
    from . import colord_protocol as protocol
else:  # beside a plug-in's main script (GIMP), or on sys.path
    import colord_protocol as protocol

# What the plug-ins import from here; the definitions are the protocol's (DaemonError is its
# ErrorReply, under the name the plug-ins know).
ColordError = protocol.ColordError
Connection = protocol.Connection
DaemonError = protocol.ErrorReply
DaemonNotRunning = protocol.DaemonNotRunning
read_connection = protocol.read_connection


class WireFormatError(ValueError):
    """Bytes that are not the msgpack subset this module reads, or a value it cannot write."""


# --- msgpack subset -------------------------------------------------------------------------
# nil, bool, int (8 to 64 bit, signed and unsigned), float64 (float32 read too), str, bin,
# array and map. Encoding follows msgpack's own choices (smallest form, use_bin_type=True), so
# `packb(x) == msgpack.packb(x, use_bin_type=True)` byte for byte.

_MAX_DEPTH = 128  # protocol v1 nests 4 deep; this keeps far below Python's recursion limit
_U8, _U16, _U32, _U64 = (struct.Struct(f">B{code}") for code in "BHIQ")
_I8, _I16, _I32, _I64 = (struct.Struct(f">B{code}") for code in "bhiq")
_FLOAT64 = struct.Struct(">Bd")

# (largest value, type byte, struct) from the narrowest form up
_UINT_FORMS = (
    (0xFF, 0xCC, _U8),
    (0xFFFF, 0xCD, _U16),
    (0xFFFFFFFF, 0xCE, _U32),
    (2**64 - 1, 0xCF, _U64),
)
# (smallest value, type byte, struct)
_INT_FORMS = (
    (-(2**7), 0xD0, _I8),
    (-(2**15), 0xD1, _I16),
    (-(2**31), 0xD2, _I32),
    (-(2**63), 0xD3, _I64),
)


Buffer = bytes | bytearray | memoryview  # what the module packs, sends and receives into


def packb(obj: object) -> bytes:
    """Encode `obj` as msgpack (lists and tuples become arrays, bytes-like objects bin)."""
    return b"".join(pack_parts(obj))


def pack_parts(obj: object) -> list[Buffer]:
    """`packb(obj)` as the pieces that joined make it, the payloads of bin values among them
    uncopied: a frame sent in these parts never holds a second copy of a layer's pixels."""
    parts: list[Buffer] = []
    _pack_into(obj, parts, 0)
    return parts


def _pack_into(obj: object, parts: list[Buffer], depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise WireFormatError(f"cannot pack data nested more than {_MAX_DEPTH} levels deep")
    if obj is None:
        parts.append(b"\xc0")
    elif obj is False or obj is True:
        parts.append(b"\xc3" if obj else b"\xc2")
    elif isinstance(obj, int):
        parts.append(_pack_int(obj))
    elif isinstance(obj, float):
        parts.append(_FLOAT64.pack(0xCB, obj))
    elif isinstance(obj, str):
        encoded = obj.encode("utf-8")
        parts += (_sized_header(len(encoded), "str", 0xA0, 32, (0xD9, 0xDA, 0xDB)), encoded)
    elif isinstance(obj, (bytes, bytearray, memoryview)):
        data = _contiguous_bytes(obj)
        parts += (_sized_header(len(data), "bin", 0, 0, (0xC4, 0xC5, 0xC6)), data)
    elif isinstance(obj, (list, tuple)):
        parts.append(_sized_header(len(obj), "array", 0x90, 16, (None, 0xDC, 0xDD)))
        for item in obj:
            _pack_into(item, parts, depth + 1)
    elif isinstance(obj, dict):
        parts.append(_sized_header(len(obj), "map", 0x80, 16, (None, 0xDE, 0xDF)))
        for key, value in obj.items():
            _pack_into(key, parts, depth + 1)
            _pack_into(value, parts, depth + 1)
    else:
        raise TypeError(f"cannot pack {type(obj).__name__} as msgpack")


def _pack_int(value: int) -> bytes:
    if -32 <= value < 128:  # positive and negative fixint: the value is the byte
        return bytes((value & 0xFF,))
    if value > 0:
        for largest, type_byte, form in _UINT_FORMS:
            if value <= largest:
                return form.pack(type_byte, value)
    else:
        for smallest, type_byte, form in _INT_FORMS:
            if value >= smallest:
                return form.pack(type_byte, value)
    raise WireFormatError(f"integer {value} does not fit msgpack's 64 bits")


def _sized_header(
    size: int, kind: str, fix_base: int, fix_limit: int, type_bytes: tuple[int | None, int, int]
) -> bytes:
    """The header of a str, bin, array or map: a fix form below `fix_limit`, else 8/16/32 bit."""
    if size < fix_limit:
        return bytes((fix_base | size,))
    byte8, byte16, byte32 = type_bytes
    if byte8 is not None and size <= 0xFF:
        return _U8.pack(byte8, size)
    if size <= 0xFFFF:
        return _U16.pack(byte16, size)
    if size <= 0xFFFFFFFF:
        return _U32.pack(byte32, size)
    raise WireFormatError(f"a msgpack {kind} holds at most 2**32 - 1 items or bytes; got {size}")


def _contiguous_bytes(obj: Buffer) -> Buffer:
    if not isinstance(obj, memoryview):
        return obj
    if not obj.c_contiguous:
        raise WireFormatError("cannot pack a non-contiguous memoryview as msgpack bin")
    return obj.cast("B")


def unpackb(data: Buffer, *, bins_as_views: bool = False) -> Any:
    """Decode exactly one msgpack object from `data` (bin comes back as bytes, arrays as lists).

    With `bins_as_views`, bin values are views of `data`, not copies: they keep it alive and show
    whatever is written to it later. A reply's layer of pixels then costs no second buffer beside
    the one it was received into."""
    reader = _Reader(data, bins_as_views)
    obj = reader.read_object(0)
    extra = len(reader.view) - reader.pos
    if extra:
        raise WireFormatError(f"{extra} bytes left over after the msgpack object")
    return obj


_CONSTANTS = {0xC0: None, 0xC2: False, 0xC3: True}
_NUMBERS = {
    0xCA: struct.Struct(">f"),
    0xCB: struct.Struct(">d"),
    **{0xCC + i: struct.Struct(">" + code) for i, code in enumerate("BHIQ")},
    **{0xD0 + i: struct.Struct(">" + code) for i, code in enumerate("bhiq")},
}
_B, _H, _I = (struct.Struct(">" + code) for code in "BHI")
_SIZED = {
    0xD9: ("str", _B), 0xDA: ("str", _H), 0xDB: ("str", _I),
    0xC4: ("bin", _B), 0xC5: ("bin", _H), 0xC6: ("bin", _I),
    0xDC: ("array", _H), 0xDD: ("array", _I),
    0xDE: ("map", _H), 0xDF: ("map", _I),
}  # fmt: skip


class _Reader:
    """Reads msgpack from a buffer by position; payloads are sliced, never walked byte by byte."""

    def __init__(self, data: Buffer, bins_as_views: bool) -> None:
        self.view = memoryview(data).cast("B")
        self.pos = 0
        self.bins_as_views = bins_as_views

    def take(self, size: int) -> memoryview:
        start, end = self.pos, self.pos + size
        if end > len(self.view):
            raise WireFormatError(
                f"truncated msgpack data: {size} bytes needed at offset {start}, "
                f"{len(self.view) - start} left"
            )
        self.pos = end
        return self.view[start:end]

    def read_object(self, depth: int) -> Any:
        if depth > _MAX_DEPTH:
            raise WireFormatError(f"msgpack data nested more than {_MAX_DEPTH} levels deep")
        offset = self.pos
        first = self.take(1)[0]
        if first <= 0x7F:
            return first
        if first >= 0xE0:
            return first - 0x100
        if first >= 0xA0 and first <= 0xBF:
            return self.read_sized("str", first & 0x1F, depth)
        if first >= 0x80 and first <= 0x9F:
            return self.read_sized("map" if first <= 0x8F else "array", first & 0x0F, depth)
        if first in _CONSTANTS:
            return _CONSTANTS[first]
        if first in _NUMBERS:
            form = _NUMBERS[first]
            return form.unpack(self.take(form.size))[0]
        if first in _SIZED:
            kind, form = _SIZED[first]
            return self.read_sized(kind, form.unpack(self.take(form.size))[0], depth)
        raise WireFormatError(
            f"byte 0x{first:02x} at offset {offset} starts no msgpack type that colord uses"
        )

    def read_sized(self, kind: str, size: int, depth: int) -> Any:
        if kind == "bin":
            payload = self.take(size)
            return payload if self.bins_as_views else bytes(payload)
        if kind == "str":
            raw = self.take(size)
            try:
                return str(raw, "utf-8")
            except UnicodeDecodeError as exc:
                raise WireFormatError(f"msgpack str is not valid UTF-8: {exc.reason}") from None
        if kind == "array":
            return [self.read_object(depth + 1) for _ in range(size)]
        result = {}
        for _ in range(size):
            key = self.read_object(depth + 1)
            value = self.read_object(depth + 1)
            try:
                result[key] = value
            except TypeError:
                raise WireFormatError(f"msgpack map key {key!r} cannot be a dict key") from None
        return result


# --- ZMTP 3.0 -------------------------------------------------------------------------------
# RFC 23/ZMTP: a 64-byte greeting each way, a READY command each way, then frames of
# flags (MORE, LONG, COMMAND) + size (1 byte, or 8 bytes big-endian when LONG) + body.

_FLAG_MORE, _FLAG_LONG, _FLAG_COMMAND = 0x01, 0x02, 0x04
_GREETING = b"\xff" + bytes(8) + b"\x7f" + bytes((3, 0)) + b"NULL".ljust(20, b"\0") + bytes(32)
_LONG_SIZE = struct.Struct(">Q")
_PROPERTY_SIZE = struct.Struct(">I")
_COALESCE_BELOW = 64 * 1024  # parts of a frame this small go out joined to their neighbours
# The largest frame received into a caller's reusable buffer (`ZmtpPeer.recv`'s `into`): a 4096²
# page's colour and flats layers. A larger one gets a buffer of its own, so that one huge page
# does not leave that much memory held for good.
REUSED_BUFFER_UP_TO = 2 * 4096 * 4096 * 4 + 64 * 1024
_PEER_TYPES_FOR_DEALER = (b"ROUTER", b"DEALER", b"REP")


def reused(buffer: bytearray, size: int) -> memoryview:
    """The first `size` bytes of `buffer`, grown to hold them: memory kept from one request to
    the next has its pages in place already, where each fresh buffer of a 2048² layer has its
    16 MB faulted in anew (in a painting app, at times slower than the copy itself). A buffer
    that must grow while a view of it is still held cannot: a new one is returned instead."""
    if len(buffer) < size:
        try:
            buffer += bytes(size - len(buffer))
        except BufferError:
            return memoryview(bytearray(size))
    return memoryview(buffer)[:size]


class ZmtpPeer:
    """One ZMTP 3.0 connection to a ZeroMQ socket, speaking as a DEALER with the NULL mechanism.

    Every blocking call takes `deadline`, a `time.monotonic()` value or None (wait forever); it
    raises TimeoutError once the deadline passes, and `ConnectionLost` when the peer goes away.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.peer_properties: dict[str, bytes] = {}

    @classmethod
    def connect(
        cls, host: str, port: int, *, deadline: float | None = None, identity: bytes = b""
    ) -> ZmtpPeer:
        """Open a TCP connection and run the ZMTP handshake (OSError if TCP cannot connect)."""
        sock = socket.create_connection((host, port), timeout=_seconds_left(deadline))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = cls(sock)
        try:
            peer._handshake(deadline, identity)
        except BaseException:
            peer.close()
            raise
        return peer

    def send(
        self, frames: Sequence[Buffer | Sequence[Buffer]], *, deadline: float | None = None
    ) -> None:
        """Send one message of one or more frames; a frame may come in parts (`pack_parts`),
        which are sent one after the other rather than joined."""
        last = len(frames) - 1
        for index, frame in enumerate(frames):
            self._send_frame(frame, _FLAG_MORE if index < last else 0, deadline)

    def recv(
        self, *, deadline: float | None = None, into: bytearray | None = None
    ) -> list[bytearray | memoryview]:
        """Receive the next message, all its frames; answers PING and skips other commands.

        With `into`, the message's first frame of at least `_COALESCE_BELOW` bytes (and at most
        `REUSED_BUFFER_UP_TO`) is received into it (`reused`) and comes back as a view of it."""
        frames: list[bytearray | memoryview] = []
        while True:
            flags, size = self._recv_frame_header(deadline)
            if flags & _FLAG_COMMAND:
                self._on_command(self._recv_exactly(size, deadline), deadline)
                continue
            if into is not None and _COALESCE_BELOW <= size <= REUSED_BUFFER_UP_TO:
                body: bytearray | memoryview = reused(into, size)
                self._recv_into(body, deadline)
                into = None  # one frame per message: another would overwrite it
            else:
                body = self._recv_exactly(size, deadline)
            frames.append(body)
            if not flags & _FLAG_MORE:
                return frames

    def close(self) -> None:
        self._sock.close()

    def _handshake(self, deadline: float | None, identity: bytes) -> None:
        # Signature and major version first, the rest once the peer's have arrived: libzmq does
        # the same, and answers a greeting it dislikes by closing before its own is complete.
        self._send_all(_GREETING[:11], deadline)
        greeting = self._recv_exactly(11, deadline)
        where = "{}:{}".format(*self._sock.getpeername()[:2])
        if greeting[0] != 0xFF or greeting[9] != 0x7F:
            raise ColordError(
                protocol.PROTOCOL,
                f"The program at {where} is not a colord daemon (it does not speak ZeroMQ).",
            )
        if greeting[10] < 3:
            raise ColordError(
                protocol.PROTOCOL,
                f"The program at {where} speaks ZeroMQ protocol {greeting[10]}.x; "
                "colord needs ZMTP 3.0 or newer.",
            )
        self._send_all(_GREETING[11:], deadline)
        greeting += self._recv_exactly(len(_GREETING) - 11, deadline)
        mechanism = bytes(greeting[12:32]).rstrip(b"\0").decode("ascii", "replace")
        if mechanism != "NULL":
            raise ColordError(
                protocol.PROTOCOL,
                f"The program at {where} asks for the ZeroMQ security mechanism {mechanism}; "
                "colord's plug-ins use NULL (the daemon checks a token instead).",
            )
        # The peer's READY first, then ours: a ZMTP peer sends its READY without waiting for ours,
        # and one that finds our socket type incompatible may close before its READY is out; read
        # first, the client judges the peer's type itself and always says what it found.
        flags, body = self._recv_frame(deadline)
        name, data = _split_command(body) if flags & _FLAG_COMMAND else (b"", b"")
        if name == b"ERROR":
            reason = bytes(data[1 : 1 + data[0]]).decode("utf-8", "replace") if data else ""
            raise ColordError(
                protocol.PROTOCOL, f"The ZeroMQ peer at {where} refused the connection: {reason}"
            )
        if name != b"READY":
            raise ColordError(
                protocol.PROTOCOL, f"The ZeroMQ peer at {where} did not complete the handshake."
            )
        self.peer_properties = _parse_properties(data)
        peer_type = self.peer_properties.get("socket-type", b"")
        if peer_type.upper() not in _PEER_TYPES_FOR_DEALER:
            raise ColordError(
                protocol.PROTOCOL,
                f"The ZeroMQ peer at {where} is a {peer_type.decode('ascii', 'replace')} socket, "
                "which cannot answer requests.",
            )
        properties = [(b"Socket-Type", b"DEALER")] + ([(b"Identity", identity)] if identity else [])
        self._send_frame(_ready_body(properties), _FLAG_COMMAND, deadline)

    def _on_command(self, body: bytearray, deadline: float | None) -> None:
        name, data = _split_command(body)
        if name == b"PING":  # ZMTP 3.1 heartbeat: 2-byte TTL, then a context to echo in PONG
            self._send_frame(_command_body(b"PONG", bytes(data[2:])), _FLAG_COMMAND, deadline)

    def _send_frame(
        self, body: Buffer | Sequence[Buffer], flags: int, deadline: float | None
    ) -> None:
        parts = [body] if isinstance(body, (bytes, bytearray, memoryview)) else body
        size = sum(memoryview(part).nbytes for part in parts)
        if size <= 0xFF:
            header = bytes((flags, size))
        else:
            header = bytes((flags | _FLAG_LONG,)) + _LONG_SIZE.pack(size)
        small: list[Buffer] = [header]  # sent together, when the next large part or the end comes
        for part in parts:
            if memoryview(part).nbytes < _COALESCE_BELOW:
                small.append(part)
                continue
            self._send_all(b"".join(small), deadline)
            small = []
            self._send_all(part, deadline)
        if small:
            self._send_all(b"".join(small), deadline)

    def _recv_frame(self, deadline: float | None) -> tuple[int, bytearray]:
        flags, size = self._recv_frame_header(deadline)
        return flags, self._recv_exactly(size, deadline)

    def _recv_frame_header(self, deadline: float | None) -> tuple[int, int]:
        flags = self._recv_exactly(1, deadline)[0]
        if flags & ~(_FLAG_MORE | _FLAG_LONG | _FLAG_COMMAND):
            raise ColordError(
                protocol.PROTOCOL, f"The ZeroMQ peer sent a frame with unknown flags 0x{flags:02x}."
            )
        if flags & _FLAG_LONG:
            size = _LONG_SIZE.unpack(self._recv_exactly(8, deadline))[0]
        else:
            size = self._recv_exactly(1, deadline)[0]
        return flags, size

    def _send_all(self, data: Buffer, deadline: float | None) -> None:
        self._sock.settimeout(_seconds_left(deadline))
        try:
            self._sock.sendall(data)
        except TimeoutError:
            raise
        except OSError as exc:
            raise _connection_lost(exc.strerror or str(exc)) from exc

    def _recv_exactly(self, size: int, deadline: float | None) -> bytearray:
        """Read `size` bytes straight into one buffer (large frames are never copied piecewise)."""
        buffer = bytearray(size)
        self._recv_into(memoryview(buffer), deadline)
        return buffer

    def _recv_into(self, view: memoryview, deadline: float | None) -> None:
        size = len(view)
        received = 0
        while received < size:
            self._sock.settimeout(_seconds_left(deadline))
            try:
                count = self._sock.recv_into(view[received:], size - received)
            except TimeoutError:
                raise
            except OSError as exc:
                raise _connection_lost(exc.strerror or str(exc)) from exc
            if count == 0:
                raise _connection_lost("it was closed")
            received += count


def _connection_lost(detail: str) -> protocol.ConnectionLost:
    return protocol.ConnectionLost(
        f"The connection to the colord daemon was lost ({detail}) before it answered: the "
        "daemon may have stopped, or the message exceeded its size limit. Check that "
        "`colord serve` is running, then try again."
    )


def _seconds_left(deadline: float | None) -> float | None:
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("deadline passed")
    return left


def _command_body(name: bytes, data: bytes) -> bytes:
    return bytes((len(name),)) + name + data


def _ready_body(properties: list[tuple[bytes, bytes]]) -> bytes:
    """READY metadata: name (1-byte size) and value (4-byte size) pairs."""
    data = b"".join(
        bytes((len(key),)) + key + _PROPERTY_SIZE.pack(len(value)) + value
        for key, value in properties
    )
    return _command_body(b"READY", data)


def _split_command(body: bytearray) -> tuple[bytes, bytearray]:
    if not body or len(body) < 1 + body[0]:
        raise ColordError(protocol.PROTOCOL, "The ZeroMQ peer sent a malformed command frame.")
    return bytes(body[1 : 1 + body[0]]), body[1 + body[0] :]


def _parse_properties(data: bytearray) -> dict[str, bytes]:
    """READY metadata: name (1-byte size) and value (4-byte size) pairs; names are case-blind."""
    properties = {}
    pos = 0
    while pos < len(data):
        name_end = pos + 1 + data[pos]
        value_start = name_end + 4
        if value_start > len(data):
            raise ColordError(protocol.PROTOCOL, "The ZeroMQ peer sent malformed READY metadata.")
        value_end = value_start + _PROPERTY_SIZE.unpack(data[name_end:value_start])[0]
        if value_end > len(data):
            raise ColordError(protocol.PROTOCOL, "The ZeroMQ peer sent malformed READY metadata.")
        name = bytes(data[pos + 1 : name_end]).decode("ascii", "replace").lower()
        properties[name] = bytes(data[value_start:value_end])
        pos = value_end
    return properties


# --- the client -----------------------------------------------------------------------------


class Image(NamedTuple):
    """Raw pixels as protocol v1 carries them: `format` is a key of `colord_protocol.FORMATS`."""

    width: int
    height: int
    format: str
    data: Buffer


class Layers(NamedTuple):
    """What one colorize request made: the layers asked for, and the daemon's timings (ms)."""

    colour: Image | None  # None when only the flats were asked for
    flats: Image | None  # None unless asked for
    timings: dict


class WireClient:
    """Talks protocol v1 to `colord serve`: one request at a time, over one lazy connection.

    `timeout` (seconds) bounds each whole request, connecting included. After a timeout or a
    lost connection the next request connects afresh. Not for use from several threads at once.
    `exchange_ms` says where the last answered request's time went: `encode` (packing it),
    `send` (connecting if need be, and until the socket took the last byte), `reply` (from
    then until the whole reply was in, the daemon's time included) and `decode`.

    The layers a reply brings are views of the frame it came in, never copies. Set
    `reply_buffer` to a bytearray to have large replies received into it, reused from request to
    request: those layers then stay valid only until the next request made with that buffer.
    """

    def __init__(
        self, endpoint: str, token: str, timeout: float = protocol.DEFAULT_TIMEOUT
    ) -> None:
        self.endpoint = endpoint
        self.token = token
        self.timeout = timeout
        self._address = _parse_endpoint(endpoint)
        self._peer: ZmtpPeer | None = None
        self._ids = itertools.count(1)
        self._limits: dict | None = None  # the daemon's info["limits"], asked once
        self.exchange_ms: dict[str, float] = {}
        self.reply_buffer: bytearray | None = None

    @classmethod
    def from_connection_file(
        cls, path: str | Path | None = None, timeout: float = protocol.DEFAULT_TIMEOUT
    ) -> WireClient:
        connection = protocol.read_connection(path)
        if connection.protocol != protocol.PROTOCOL_VERSION:
            raise _version_mismatch(f"protocol version {connection.protocol}")
        return cls(connection.endpoint, connection.token, timeout)

    def ping(self, *, timeout: float | None = None) -> dict:
        """`{"pong": True, "version": ...}`."""
        return self._request("ping", None, timeout)

    def info(self, *, timeout: float | None = None) -> dict:
        """The daemon's version, model, device, working size and limits."""
        return self._request("info", None, timeout)

    def colorize(
        self,
        line_art: Image,
        reference: Image | None = None,
        *,
        timeout: float | None = None,
        **options: Any,
    ) -> tuple[Image, dict]:
        """Colour `line_art` after `reference`; returns the colour layer (same size) and the
        timings. For flats too, `colorize_layers`."""
        if "flats" in options:
            raise ValueError("colorize returns the colour layer alone; flats: colorize_layers")
        layers = self.colorize_layers(line_art, reference, timeout=timeout, **options)
        assert layers.colour is not None  # asked for without flats="only"
        return layers.colour, layers.timings

    def colorize_layers(
        self,
        line_art: Image,
        reference: Image | None = None,
        *,
        timeout: float | None = None,
        **options: Any,
    ) -> Layers:
        """Colour `line_art` after `reference`: the colour layer and, with the `flats` option,
        the flats layer, as `Layers` (both the line art's size).

        `options` are colorize's (`colord_protocol.COLORIZE_OPTIONS`: working_size, keep_lines,
        result_format, flats and its settings), checked before anything is sent; ask for flats
        only of a daemon whose `info` has the feature (`colord_protocol.has_feature`). Images
        above the daemon's limits fail at once with `too_large` (ZeroMQ would drop such a
        message unanswered, and the request would only time out)."""
        args = protocol.colorize_args(
            line_art._asdict(), None if reference is None else reference._asdict(), options
        )
        self._refuse_oversize(line_art, reference, timeout)
        result = self._request("colorize", args, timeout)
        flats = options.get("flats")
        colour = None if flats == "only" else _image_from_wire(result.get("image"))
        flats_layer = None if flats is None else _image_from_wire(result.get("flats"))
        timings = result.get("timings")
        return Layers(colour, flats_layer, timings if isinstance(timings, dict) else {})

    def _refuse_oversize(
        self, line_art: Image, reference: Image | None, timeout: float | None
    ) -> None:
        if self._limits is None:
            limits = self.info(timeout=timeout).get("limits")
            self._limits = limits if isinstance(limits, dict) else {}
        images = {"line art": line_art, "reference": reference}
        sizes = {
            name: None if image is None else (image.width, image.height, len(image.data))
            for name, image in images.items()
        }
        problem = protocol.oversize_message(sizes, self._limits)
        if problem is not None:
            raise protocol.ErrorReply(protocol.TOO_LARGE, problem)

    def close(self) -> None:
        if self._peer is not None:
            self._peer.close()
            self._peer = None

    def __enter__(self) -> WireClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _request(self, op: str, args: dict | None, timeout: float | None) -> dict:
        request_id = next(self._ids)
        started = time.perf_counter()
        request = pack_parts(protocol.request_message(request_id, op, self.token, args))
        encoded = time.perf_counter()
        reply, sent, received = self._exchange(
            request, request_id, self.timeout if timeout is None else timeout
        )
        try:
            return protocol.read_reply(reply)
        except protocol.ErrorReply as error:
            if error.code == protocol.VERSION:
                raise _version_mismatch(f"a different protocol ({error.message})") from None
            raise
        except protocol.ProtocolError as error:
            if error.code == protocol.VERSION:
                raise _version_mismatch(f"protocol version {reply.get('v')!r}") from None
            raise _unreadable_reply(error.message) from None
        finally:
            marks = {"encode": encoded - started, "send": sent - encoded, "reply": received - sent}
            marks["decode"] = time.perf_counter() - received
            self.exchange_ms = {name: seconds * 1000.0 for name, seconds in marks.items()}

    def _exchange(
        self, request: list[Buffer], request_id: int, timeout: float
    ) -> tuple[Any, float, float]:
        """Send one request and wait for its reply; drops the connection on any failure.
        Returns the reply and when (`time.perf_counter`) the request was sent and the reply in."""
        deadline = time.monotonic() + timeout
        try:
            peer = self._connected(deadline)
            peer.send([request], deadline=deadline)
            sent = time.perf_counter()
            while True:
                frames = peer.recv(deadline=deadline, into=self.reply_buffer)
                received = time.perf_counter()
                reply = _decode_reply(frames)
                if not isinstance(reply, dict) or reply.get("id") in (request_id, None):
                    return reply, sent, received  # other ids: a late answer, skipped
        except TimeoutError:
            self.close()
            raise protocol.DaemonTimeout(
                f"The colord daemon did not answer within {timeout:g} seconds. It may still be "
                "busy with a large picture; try again, or restart `colord serve`."
            ) from None
        except BaseException:
            self.close()
            raise

    def _connected(self, deadline: float) -> ZmtpPeer:
        if self._peer is None:
            host, port = self._address
            try:
                self._peer = ZmtpPeer.connect(host, port, deadline=deadline)
            except ConnectionRefusedError:
                raise protocol.not_running(f"nothing listens at {self.endpoint}") from None
            except TimeoutError:
                raise
            except OSError as exc:
                raise DaemonNotRunning(
                    f"colord cannot reach its daemon at {self.endpoint} ({exc.strerror or exc}). "
                    f"{protocol.START_HINT}"
                ) from exc
        return self._peer


def _parse_endpoint(endpoint: str) -> tuple[str, int]:
    """`tcp://host:port` (an IPv6 host in brackets) -> (host, port)."""
    scheme, _, address = endpoint.partition("://")
    host, _, port = address.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if scheme != "tcp" or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ColordError(
            "bad_endpoint",
            f"colord's plug-ins reach the daemon at a tcp://host:port address, not {endpoint!r}. "
            "Restart `colord serve` to rewrite its connection file.",
        )
    return host, int(port)


def _decode_reply(frames: list[bytearray | memoryview]) -> Any:
    """A reply is one frame, after an empty delimiter frame when the peer is a REP socket; its
    layers' pixels come back as views of that frame."""
    while len(frames) > 1 and not frames[0]:
        frames = frames[1:]
    if len(frames) != 1:
        raise _unreadable_reply(f"a message of {len(frames)} frames where one was expected")
    try:
        return unpackb(frames[0], bins_as_views=True)
    except WireFormatError as exc:
        raise _unreadable_reply(str(exc)) from None


def _image_from_wire(fields: Any) -> Image:
    try:
        protocol.check_image(fields, "image")
    except protocol.ProtocolError as error:
        raise _unreadable_reply(f"its result image: {error.message}") from None
    return Image(fields["width"], fields["height"], fields["format"], fields["data"])


def _unreadable_reply(detail: str) -> ColordError:
    return ColordError(
        protocol.PROTOCOL, f"colord's plug-in could not read the daemon's reply ({detail})."
    )


def _version_mismatch(detail: str) -> ColordError:
    return ColordError(
        protocol.VERSION,
        f"The colord daemon speaks {detail}, but this plug-in speaks protocol version "
        f"{protocol.PROTOCOL_VERSION}. Install the plug-in that comes with your colord "
        "(`colord plugin install`) and restart `colord serve`.",
    )


# --- what the painting app shows ------------------------------------------------------------

_ADVICE = {
    protocol.UNAUTHORIZED: "The daemon may have restarted: try again, or restart `colord serve`.",
    protocol.BUSY: "Try again in a moment.",
    protocol.TOO_LARGE: "Try a smaller canvas or working size.",
    protocol.SHUTTING_DOWN: "Start it again with `colord serve`.",
    protocol.INTERNAL: "The daemon's log has the details.",
}


def user_message(exc: BaseException) -> str:
    """The sentence a plug-in shows in its message box for `exc` (never a traceback)."""
    if isinstance(exc, protocol.ErrorReply):
        advice = _ADVICE.get(exc.code)
        return f"colord could not do that: {exc.message}" + (f" {advice}" if advice else "")
    if isinstance(exc, ColordError):
        return exc.message
    return f"colord failed unexpectedly ({type(exc).__name__}: {exc})."
