"""Protocol v1 on the daemon's side of the wire: msgpack encoding and bounded decoding.

The contract itself (version, ops, formats, options, limits, error codes) is
`colord.plugins.wire.colord_protocol`, the module the plug-ins ship; this one adds what needs the
msgpack library and numpy: encoding with one copy of the pixels, decoding with msgpack's bounded
unpacker, and images as arrays. It imports neither zmq nor torch.
"""

from __future__ import annotations

import hmac
import struct
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

from colord.daemon.job import Job
from colord.plugins.wire.colord_protocol import (
    BAD_REQUEST,
    FORMATS,
    HEADER_BYTES,
    HEADER_KEYS,
    MALFORMED,
    MAX_CONTAINER_LEN,
    MAX_ID_BYTES,
    MAX_STR_BYTES,
    OPS,
    PROTOCOL_VERSION,
    TOO_LARGE,
    UNAUTHORIZED,
    UNKNOWN_OP,
    VERSION,
    ErrorReply,
    Limits,
    ProtocolError,
    check_image,
    colorize_args,
    colorize_options,
    error_message,
    ok_message,
    read_reply,
    request_message,
    valid_id,
)

# Buffers at least this long are joined into the message once instead of being copied twice.
_ZERO_COPY_MIN_BYTES = 1 << 16
BUFFER_MIN_BYTES = 1 << 20  # messages this long are written into a reusable bytearray


@dataclass(frozen=True)
class WireImage:
    """An IMAGE as it travels: raw pixel bytes with their size and format."""

    width: int
    height: int
    format: str
    data: bytes | bytearray | memoryview

    def to_message(self) -> dict[str, Any]:
        return {
            "width": self.width,
            "height": self.height,
            "format": self.format,
            "data": self.data,
        }

    def to_array(self) -> np.ndarray:
        """The pixels as a numpy array: (H, W) grey, else (H, W, C) in RGB(A) order."""
        channels, channel_bytes = FORMATS[self.format]
        dtype = np.dtype("<u2") if channel_bytes == 2 else np.dtype(np.uint8)
        array = np.frombuffer(self.data, dtype=dtype).reshape(self.height, self.width, channels)
        if self.format == "BGRA8":
            array = array[..., [2, 1, 0, 3]]
        if channels == 1:
            array = array[..., 0]
        return array.astype(array.dtype.newbyteorder("="), copy=False)


@dataclass(frozen=True)
class ColorizeArgs:
    """colorize's args as decoded: the images still as bytes (made arrays by the worker, off
    the socket thread) and every option, checked."""

    line_art: WireImage
    reference: WireImage | None
    options: dict[str, Any]

    def to_job(self) -> Job:
        reference = None if self.reference is None else self.reference.to_array()
        return Job(self.line_art.to_array(), reference, **self.options)


@dataclass(frozen=True)
class Request:
    id: int | str
    op: str
    args: ColorizeArgs | None = None


@dataclass(frozen=True)
class Reply:
    id: int | str | None
    ok: bool
    result: dict[str, Any] | None = None
    error_code: str | None = None
    error_message: str | None = None


# ---------------------------------------------------------------------------------------------
# encoding


def _bin_header(length: int) -> bytes:
    if length < 1 << 8:
        return struct.pack(">BB", 0xC4, length)
    if length < 1 << 16:
        return struct.pack(">BH", 0xC5, length)
    return struct.pack(">BI", 0xC6, length)


def _is_large_buffer(value: Any) -> bool:
    return isinstance(value, bytes | bytearray | memoryview) and len(value) >= _ZERO_COPY_MIN_BYTES


def encode(message: dict[str, Any], into: bytearray | None = None) -> bytes | memoryview:
    """msgpack-encode a message; large bytes-like values are copied into the result exactly once.

    A message of at least BUFFER_MIN_BYTES is written into a bytearray and returned as a view of
    it (`view.obj` is the buffer): into `into` when it is large enough, else into a new one. A
    caller that sends big messages repeatedly passes the last buffer back once ZeroMQ has let go
    of it, instead of faulting in fresh memory for every message. Smaller messages are bytes.
    """
    chunks: list[bytes | memoryview] = []
    packer = msgpack.Packer(autoreset=False)

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            packer.pack_map_header(len(value))
            for key, item in value.items():
                packer.pack(key)
                walk(item)
        elif _is_large_buffer(value):
            view = memoryview(value).cast("B")
            chunks.append(packer.bytes() + _bin_header(view.nbytes))
            packer.reset()
            chunks.append(view)
        else:
            packer.pack(value)

    walk(message)
    chunks.append(packer.bytes())
    size = sum(len(chunk) for chunk in chunks)
    if size < BUFFER_MIN_BYTES:
        return b"".join(chunks)
    if into is None or len(into) < size:
        into = bytearray(size)
    view = memoryview(into)
    offset = 0
    for chunk in chunks:
        view[offset : offset + len(chunk)] = chunk  # one memcpy (bytearray slices copy twice)
        offset += len(chunk)
    return view[:size]


def encode_request(
    request_id: int | str,
    op: str,
    token: str,
    args: dict[str, Any] | None = None,
    *,
    into: bytearray | None = None,
) -> bytes | memoryview:
    """`args`: for colorize, `colord_protocol.colorize_args(...)` (see `colorize_request_args`)."""
    return encode(request_message(request_id, op, token, args), into)


def colorize_request_args(job: Job) -> tuple[dict[str, Any], WireImage, WireImage | None]:
    """colorize's args for a job, with its images as they travel (checked options; a ValueError
    for arrays that cannot travel)."""
    line_art = array_to_image(job.line_art)
    reference = None if job.reference is None else array_to_image(job.reference)
    args = colorize_args(
        line_art.to_message(), None if reference is None else reference.to_message(), job.options()
    )
    return args, line_art, reference


def encode_ok(
    request_id: int | str, result: dict[str, Any], *, into: bytearray | None = None
) -> bytes | memoryview:
    return encode(ok_message(request_id, result), into)


def encode_error(request_id: int | str | None, code: str, message: str) -> bytes | memoryview:
    return encode(error_message(request_id, code, message))


# ---------------------------------------------------------------------------------------------
# decoding
#
# A request is read in two steps so that a peer without the token costs the daemon next to
# nothing: first its header (v, id, op, token) from at most HEADER_BYTES at the start of the body;
# then, only for a request with the right token, the whole body. Both steps use msgpack's own
# unpacker with a limit on every length.


def _bounds(*, max_str_len: int, max_bin_len: int) -> dict[str, Any]:
    """msgpack's unpacker options: str keys and values, every length bounded, no extensions."""
    return {
        "raw": False,
        "max_str_len": max_str_len,
        "max_bin_len": max_bin_len,
        "max_array_len": MAX_CONTAINER_LEN,
        "max_map_len": MAX_CONTAINER_LEN,
        "max_ext_len": 0,
    }


def _read_header(body: bytes | memoryview) -> dict[str, Any]:
    """The first value of each header key, read from the entries before `args`."""
    unpacker = msgpack.Unpacker(
        max_buffer_size=HEADER_BYTES, **_bounds(max_str_len=HEADER_BYTES, max_bin_len=HEADER_BYTES)
    )
    unpacker.feed(memoryview(body)[:HEADER_BYTES])
    try:
        entries = unpacker.read_map_header()
    except msgpack.OutOfData:
        raise ProtocolError(MALFORMED, "The message is empty.") from None
    except ValueError:
        raise ProtocolError(
            MALFORMED, f"The message must be a msgpack map of at most {MAX_CONTAINER_LEN} entries."
        ) from None
    header: dict[str, Any] = {}
    try:
        for _ in range(entries):
            if len(header) == len(HEADER_KEYS):
                break
            key = unpacker.unpack()
            if not isinstance(key, str):
                raise ProtocolError(MALFORMED, "Map keys must be strings.")
            if key == "args":
                break
            value = unpacker.unpack()
            if key in HEADER_KEYS:
                header.setdefault(key, value)
    except msgpack.OutOfData:
        if len(body) <= HEADER_BYTES:
            raise ProtocolError(MALFORMED, "The message is truncated.") from None
        raise ProtocolError(
            MALFORMED,
            f"'v', 'id', 'op' and 'token' must come before 'args', within the first "
            f"{HEADER_BYTES} bytes of the message.",
        ) from None
    except ValueError as error:
        raise ProtocolError(MALFORMED, f"The message is not valid msgpack: {error}.") from None
    return header


def _unpack_map(body: bytes | memoryview, max_bin_len: int) -> dict[str, Any]:
    """The whole body, bounded: bin values at most max_bin_len, no extension types."""
    try:
        message = msgpack.unpackb(
            body, **_bounds(max_str_len=MAX_STR_BYTES, max_bin_len=max_bin_len)
        )
    except ValueError as error:  # msgpack's errors, including truncation, are ValueErrors
        raise ProtocolError(MALFORMED, f"The message is not valid msgpack: {error}.") from None
    if not isinstance(message, dict):
        raise ProtocolError(MALFORMED, "The message must be a msgpack map.")
    return message


def decode_request(body: bytes | memoryview, *, token: str, limits: Limits) -> Request:
    """Decode and validate a request body, checking it in the order docs/protocol.md gives.

    `token` is the daemon's secret. Nothing past the header is decoded before the token matched.
    Raises ProtocolError, carrying the request id once that id is known to be valid.
    """
    header = _read_header(body)
    version = header.get("v")
    if not isinstance(version, int) or isinstance(version, bool) or version != PROTOCOL_VERSION:
        raise ProtocolError(
            VERSION,
            f"This daemon speaks protocol version {PROTOCOL_VERSION}; "
            f"the request says {version!r}.",
        )
    request_id = header.get("id")
    if not valid_id(request_id):
        raise ProtocolError(
            BAD_REQUEST,
            f"The request id must be an int or a string of at most {MAX_ID_BYTES} bytes.",
        )
    sent_token = header.get("token")
    if not isinstance(sent_token, str) or not hmac.compare_digest(
        sent_token.encode("utf-8", "surrogatepass"), token.encode("utf-8")
    ):
        raise ProtocolError(
            UNAUTHORIZED,
            "The token is missing or wrong; read it from the daemon's connection file.",
            request_id,
        )
    op = header.get("op")
    if not isinstance(op, str) or op not in OPS:
        raise ProtocolError(
            UNKNOWN_OP, f"Unknown op {op!r}; this daemon knows {', '.join(OPS)}.", request_id
        )
    try:
        args = _unpack_map(body, limits.max_message_bytes).get("args")
        if op != "colorize":
            if args is not None and not isinstance(args, dict):
                raise ProtocolError(BAD_REQUEST, "'args' must be a map.")
            return Request(request_id, op)
        return Request(request_id, op, _decode_colorize_args(args, limits))
    except ProtocolError as error:
        error.request_id = request_id
        raise


def _decode_colorize_args(args: Any, limits: Limits) -> ColorizeArgs:
    if not isinstance(args, dict):
        raise ProtocolError(BAD_REQUEST, "colorize needs 'args', a map with at least 'line_art'.")
    if "line_art" not in args:
        raise ProtocolError(BAD_REQUEST, "colorize needs 'args.line_art', the line art image.")
    line_art = _decode_image(args["line_art"], "line_art", limits)
    reference_message = args.get("reference")
    reference = None
    if reference_message is not None:
        reference = _decode_image(reference_message, "reference", limits)
    options = args.get("options")
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise ProtocolError(BAD_REQUEST, "'args.options' must be a map.")
    options = colorize_options(options, reference=reference is not None)
    working_size = options["working_size"]
    if working_size is not None and working_size > limits.working_size_cap:
        raise ProtocolError(
            TOO_LARGE,
            f"'working_size' {working_size} is above what this daemon's device affords "
            f"({limits.working_size_cap}); choose a smaller one or leave it automatic.",
        )
    return ColorizeArgs(line_art, reference, options)


def _decode_image(message: Any, name: str, limits: Limits) -> WireImage:
    check_image(message, name, limits.max_side)
    return WireImage(message["width"], message["height"], message["format"], message["data"])


def decode_message(body: bytes | memoryview) -> dict[str, Any]:
    """A reply's msgpack map (client side), bounded like a request but for its bin lengths."""
    return _unpack_map(body, len(body))


def decode_reply(body: bytes | memoryview) -> Reply:
    """Decode a reply as a whole (tests and tools). Raises ProtocolError if it is not v1."""
    message = decode_message(body)
    try:
        result = read_reply(message)
    except ErrorReply as error:
        return Reply(message.get("id"), False, error_code=error.code, error_message=error.message)
    return Reply(message.get("id"), True, result=result)


# ---------------------------------------------------------------------------------------------
# images <-> numpy


def array_to_image(array: np.ndarray, image_format: str | None = None) -> WireImage:
    """A numpy image as a WireImage.

    uint8 with 1, 2, 3 or 4 channels maps to GRAY8, GRAYA8, RGB8, RGBA8 (or BGRA8 on request);
    uint16 maps to RGBA16, expanding grey, grey+alpha and RGB to RGBA.
    """
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or not 1 <= array.shape[2] <= 4:
        raise ValueError(f"an image must be (H, W) or (H, W, C) with C in 1..4; got {array.shape}")
    height, width, channels = array.shape
    if array.dtype == np.uint16:
        if image_format not in (None, "RGBA16"):
            raise ValueError(f"a uint16 image travels as RGBA16, not {image_format}")
        image_format = "RGBA16"
        array = _expand_to_rgba(array).astype("<u2", copy=False)
    elif array.dtype == np.uint8:
        natural = ("GRAY8", "GRAYA8", "RGB8", "RGBA8")[channels - 1]
        image_format = image_format or natural
        if image_format == "BGRA8" and channels == 4:
            array = array[..., [2, 1, 0, 3]]
        elif image_format != natural:
            raise ValueError(f"a {channels}-channel uint8 image cannot travel as {image_format}")
    else:
        raise ValueError(f"image pixels must be uint8 or uint16; got {array.dtype}")
    array = np.ascontiguousarray(array)
    return WireImage(width, height, image_format, memoryview(array.reshape(-1).view(np.uint8)))


def _expand_to_rgba(array: np.ndarray) -> np.ndarray:
    channels = array.shape[2]
    if channels == 4:
        return array
    opaque = np.full((*array.shape[:2], 1), np.iinfo(array.dtype).max, dtype=array.dtype)
    if channels == 1:
        return np.concatenate([array, array, array, opaque], axis=2)
    if channels == 2:
        grey, alpha = array[..., :1], array[..., 1:]
        return np.concatenate([grey, grey, grey, alpha], axis=2)
    return np.concatenate([array, opaque], axis=2)
