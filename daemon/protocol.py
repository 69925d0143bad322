"""Protocol v1 (docs/protocol.md): message schema, decode + validate, encode.

Pure data handling: this module imports neither zmq nor torch, so the server, the Python client and
the tests share one definition of every message.
"""

from __future__ import annotations

import hmac
import struct
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

PROTOCOL_VERSION = 1
OPS = ("ping", "info", "colorize")

# Stable error codes, in the order the daemon checks for them.
MALFORMED = "malformed"
VERSION = "version"
UNAUTHORIZED = "unauthorized"
UNKNOWN_OP = "unknown_op"
BAD_REQUEST = "bad_request"
BAD_IMAGE = "bad_image"
TOO_LARGE = "too_large"
BUSY = "busy"
SHUTTING_DOWN = "shutting_down"
INTERNAL = "internal"
ERROR_CODES = (
    MALFORMED, VERSION, UNAUTHORIZED, UNKNOWN_OP, BAD_REQUEST, BAD_IMAGE, TOO_LARGE, BUSY,
    SHUTTING_DOWN, INTERNAL,
)  # fmt: skip

# format -> (channels, bytes per channel)
FORMATS: dict[str, tuple[int, int]] = {
    "RGBA8": (4, 1),
    "BGRA8": (4, 1),
    "RGB8": (3, 1),
    "GRAY8": (1, 1),
    "GRAYA8": (2, 1),
    "RGBA16": (4, 2),
}
RESULT_FORMATS = ("RGBA8", "BGRA8")
MAX_ID_BYTES = 256
WORKING_SIZE_MULTIPLE = 16  # the model's input sides are multiples of 16
DEFAULT_MAX_SIDE = 8192  # two RGBA16 images of 8192^2 make a 1 GiB request
REQUEST_OVERHEAD_BYTES = 1 << 16  # what a request holds besides pixels, with room to spare
# Buffers at least this long are joined into the message once instead of being copied twice.
_ZERO_COPY_MIN_BYTES = 1 << 16
BUFFER_MIN_BYTES = 1 << 20  # messages this long are written into a reusable bytearray


class ProtocolError(Exception):
    """A request the daemon answers with an error reply: `code` is one of ERROR_CODES."""

    def __init__(self, code: str, message: str, request_id: int | str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id


@dataclass(frozen=True)
class Limits:
    """What one request may ask for. `max_working_size` None: the daemon knows no cap below
    `max_side` (the server sets the engine's cap when it starts serving)."""

    max_side: int = DEFAULT_MAX_SIDE
    queue_size: int = 8
    max_working_size: int | None = None

    @property
    def max_message_bytes(self) -> int:
        """The longest valid request: line art and reference of max_side a side in the widest
        format, plus the rest of the message. ZeroMQ drops longer messages unread."""
        widest = max(bytes_per_pixel(image_format) for image_format in FORMATS)
        return 2 * self.max_side * self.max_side * widest + REQUEST_OVERHEAD_BYTES

    @property
    def working_size_cap(self) -> int:
        return self.max_side if self.max_working_size is None else self.max_working_size

    def to_message(self) -> dict[str, int]:
        return {
            "max_side": self.max_side,
            "max_message_bytes": self.max_message_bytes,
            "max_working_size": self.working_size_cap,
            "queue_size": self.queue_size,
        }


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


@dataclass(frozen=True)
class ColorizeArgs:
    line_art: WireImage
    reference: WireImage | None = None
    working_size: int | None = None
    keep_lines: bool = True
    result_format: str = "RGBA8"

    def to_message(self) -> dict[str, Any]:
        options: dict[str, Any] = {
            "keep_lines": self.keep_lines,
            "result_format": self.result_format,
        }
        if self.working_size is not None:
            options["working_size"] = self.working_size
        reference = None if self.reference is None else self.reference.to_message()
        # The pixel data goes last so the encoder can append it without a second copy.
        return {"options": options, "reference": reference, "line_art": self.line_art.to_message()}


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
    args: ColorizeArgs | None = None,
    *,
    into: bytearray | None = None,
) -> bytes | memoryview:
    message: dict[str, Any] = {"v": PROTOCOL_VERSION, "id": request_id, "op": op, "token": token}
    if args is not None:
        message["args"] = args.to_message()
    return encode(message, into)


def encode_ok(
    request_id: int | str, result: dict[str, Any], *, into: bytearray | None = None
) -> bytes | memoryview:
    return encode({"v": PROTOCOL_VERSION, "id": request_id, "ok": True, "result": result}, into)


def encode_error(request_id: int | str | None, code: str, message: str) -> bytes | memoryview:
    error = {"code": code, "message": message}
    return encode({"v": PROTOCOL_VERSION, "id": request_id, "ok": False, "error": error})


# ---------------------------------------------------------------------------------------------
# decoding
#
# A request is read in two steps so that a peer without the token costs the daemon next to
# nothing: first its header (v, id, op, token) from at most HEADER_BYTES at the start of the body;
# then, only for a request with the right token, the whole body. Both steps use msgpack's own
# unpacker with a limit on every length.

HEADER_BYTES = 4096  # v, id, op and token come before args, within this many bytes
HEADER_KEYS = ("v", "id", "op", "token")
MAX_CONTAINER_LEN = 64  # entries in any map or array; a valid request has at most 5
MAX_STR_BYTES = 1 << 16  # any str in a request; the longest valid one is a 256-byte id


def _read_header(body: bytes | memoryview) -> dict[str, Any]:
    """The first value of each header key, read from the entries before `args`."""
    unpacker = msgpack.Unpacker(
        raw=False,
        max_buffer_size=HEADER_BYTES,
        max_str_len=HEADER_BYTES,
        max_bin_len=HEADER_BYTES,
        max_array_len=MAX_CONTAINER_LEN,
        max_map_len=MAX_CONTAINER_LEN,
        max_ext_len=0,
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
            body,
            raw=False,
            max_str_len=MAX_STR_BYTES,
            max_bin_len=max_bin_len,
            max_array_len=MAX_CONTAINER_LEN,
            max_map_len=MAX_CONTAINER_LEN,
            max_ext_len=0,
        )
    except ValueError as error:  # msgpack's errors, including truncation, are ValueErrors
        raise ProtocolError(MALFORMED, f"The message is not valid msgpack: {error}.") from None
    if not isinstance(message, dict):
        raise ProtocolError(MALFORMED, "The message must be a msgpack map.")
    return message


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _valid_id(value: Any) -> bool:
    if _is_int(value):
        return -(1 << 63) <= value < 1 << 64
    return isinstance(value, str) and len(value.encode("utf-8", "surrogatepass")) <= MAX_ID_BYTES


def decode_request(body: bytes | memoryview, *, token: str, limits: Limits) -> Request:
    """Decode and validate a request body, checking it in the order docs/protocol.md gives.

    `token` is the daemon's secret. Nothing past the header is decoded before the token matched.
    Raises ProtocolError, carrying the request id once that id is known to be valid.
    """
    header = _read_header(body)
    version = header.get("v")
    if not _is_int(version) or version != PROTOCOL_VERSION:
        raise ProtocolError(
            VERSION,
            f"This daemon speaks protocol version {PROTOCOL_VERSION}; "
            f"the request says {version!r}.",
        )
    request_id = header.get("id")
    if not _valid_id(request_id):
        raise ProtocolError(
            BAD_REQUEST, "The request id must be an int or a string of at most 256 bytes."
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
    working_size = options.get("working_size")
    if working_size is not None and not (
        _is_int(working_size)
        and working_size >= WORKING_SIZE_MULTIPLE
        and working_size % WORKING_SIZE_MULTIPLE == 0
    ):
        raise ProtocolError(
            BAD_REQUEST,
            f"'working_size' must be a multiple of {WORKING_SIZE_MULTIPLE} from "
            f"{WORKING_SIZE_MULTIPLE}; got {working_size!r}.",
        )
    if working_size is not None and working_size > limits.working_size_cap:
        raise ProtocolError(
            TOO_LARGE,
            f"'working_size' {working_size} is above what this daemon's device affords "
            f"({limits.working_size_cap}); choose a smaller one or leave it automatic.",
        )
    keep_lines = options.get("keep_lines", True)
    if not isinstance(keep_lines, bool):
        raise ProtocolError(BAD_REQUEST, f"'keep_lines' must be true or false; got {keep_lines!r}.")
    result_format = options.get("result_format", "RGBA8")
    if not isinstance(result_format, str) or result_format not in RESULT_FORMATS:
        raise ProtocolError(
            BAD_REQUEST,
            f"'result_format' must be one of {', '.join(RESULT_FORMATS)}; got {result_format!r}.",
        )
    return ColorizeArgs(line_art, reference, working_size, keep_lines, result_format)


def _decode_image(message: Any, name: str, limits: Limits) -> WireImage:
    if not isinstance(message, dict):
        raise ProtocolError(BAD_IMAGE, f"'{name}' must be a map: width, height, format, data.")
    width, height = message.get("width"), message.get("height")
    image_format, data = message.get("format"), message.get("data")
    if not (_is_int(width) and _is_int(height)):
        raise ProtocolError(BAD_IMAGE, f"'{name}' needs an int 'width' and an int 'height'.")
    if not isinstance(image_format, str) or image_format not in FORMATS:
        raise ProtocolError(
            BAD_IMAGE,
            f"'{name}' has format {image_format!r}; supported formats: {', '.join(FORMATS)}.",
        )
    if not isinstance(data, bytes):
        raise ProtocolError(BAD_IMAGE, f"'{name}.data' must be msgpack bin (raw pixel bytes).")
    if width < 1 or height < 1:
        raise ProtocolError(BAD_IMAGE, f"'{name}' is {width}x{height}; both sides must be >= 1.")
    if width > limits.max_side or height > limits.max_side:
        raise ProtocolError(
            TOO_LARGE,
            f"'{name}' is {width}x{height}; "
            f"this daemon accepts at most {limits.max_side} px a side.",
        )
    expected = width * height * bytes_per_pixel(image_format)
    if len(data) != expected:
        raise ProtocolError(
            BAD_IMAGE,
            f"'{name}' is {width}x{height} {image_format}, which needs {expected} bytes of data; "
            f"got {len(data)}.",
        )
    return WireImage(width, height, image_format, data)


def decode_reply(body: bytes | memoryview) -> Reply:
    """Decode a reply (client side). Raises ProtocolError(MALFORMED) if it is not a v1 reply."""
    message = _unpack_map(body, len(body))
    if message.get("v") != PROTOCOL_VERSION or not isinstance(message.get("ok"), bool):
        raise ProtocolError(MALFORMED, "The daemon's reply is not a protocol v1 reply.")
    if message["ok"]:
        result = message.get("result")
        if not isinstance(result, dict):
            raise ProtocolError(MALFORMED, "The daemon's reply has no result map.")
        return Reply(message.get("id"), True, result=result)
    error = message.get("error")
    if not isinstance(error, dict):
        raise ProtocolError(MALFORMED, "The daemon's error reply has no error map.")
    return Reply(
        message.get("id"),
        False,
        error_code=str(error.get("code", INTERNAL)),
        error_message=str(error.get("message", "The daemon reported an error.")),
    )


# ---------------------------------------------------------------------------------------------
# images <-> numpy


def bytes_per_pixel(image_format: str) -> int:
    channels, channel_bytes = FORMATS[image_format]
    return channels * channel_bytes


def image_to_array(image: WireImage) -> np.ndarray:
    """A validated WireImage as a numpy array: (H, W) grey, else (H, W, C) in RGB(A) order."""
    channels, channel_bytes = FORMATS[image.format]
    dtype = np.dtype("<u2") if channel_bytes == 2 else np.dtype(np.uint8)
    array = np.frombuffer(image.data, dtype=dtype).reshape(image.height, image.width, channels)
    if image.format == "BGRA8":
        array = array[..., [2, 1, 0, 3]]
    if channels == 1:
        array = array[..., 0]
    return array.astype(array.dtype.newbyteorder("="), copy=False)


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
