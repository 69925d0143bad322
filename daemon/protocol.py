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
DEFAULT_MAX_SIDE = 16384
DEFAULT_MAX_MESSAGE_BYTES = 1 << 30
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
    max_side: int = DEFAULT_MAX_SIDE
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    queue_size: int = 8


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


def _unpack_map(body: bytes | memoryview) -> dict[str, Any]:
    try:
        message = unpack(body)
    except ValueError as error:
        raise ProtocolError(MALFORMED, f"The message is not valid msgpack: {error}.") from None
    if not isinstance(message, dict):
        raise ProtocolError(MALFORMED, "The message must be a msgpack map.")
    return message


MAX_DEPTH = 32  # nesting deeper than any valid message


def unpack(body: bytes | memoryview) -> Any:
    """Decode one msgpack value filling all of body; raise ValueError on anything else.

    Unlike msgpack.unpackb, `bin` values come back as memoryviews into body (no copy of the
    pixels). Extension types are rejected; map keys must be strings.
    """
    view = memoryview(body).cast("B")
    value, end = _unpack_value(view, 0, 0)
    if end != len(view):
        raise ValueError(f"{len(view) - end} bytes follow the message")
    return value


_FIXED_FORMATS = {
    0xCA: ">f", 0xCB: ">d", 0xCC: ">B", 0xCD: ">H", 0xCE: ">I", 0xCF: ">Q",
    0xD0: ">b", 0xD1: ">h", 0xD2: ">i", 0xD3: ">q",
}  # fmt: skip
_LENGTH_FORMATS = {  # type byte -> (kind, length format)
    0xC4: ("bin", ">B"), 0xC5: ("bin", ">H"), 0xC6: ("bin", ">I"),
    0xD9: ("str", ">B"), 0xDA: ("str", ">H"), 0xDB: ("str", ">I"),
    0xDC: ("array", ">H"), 0xDD: ("array", ">I"), 0xDE: ("map", ">H"), 0xDF: ("map", ">I"),
}  # fmt: skip


def _read(view: memoryview, offset: int, fmt: str) -> tuple[Any, int]:
    size = struct.calcsize(fmt)
    if offset + size > len(view):
        raise ValueError("the message is truncated")
    return struct.unpack_from(fmt, view, offset)[0], offset + size


def _unpack_value(view: memoryview, offset: int, depth: int) -> tuple[Any, int]:
    if depth > MAX_DEPTH:
        raise ValueError(f"values are nested more than {MAX_DEPTH} deep")
    kind_byte, offset = _read(view, offset, ">B")
    if kind_byte <= 0x7F:
        return kind_byte, offset
    if kind_byte >= 0xE0:
        return kind_byte - 0x100, offset
    if kind_byte in (0xC0, 0xC2, 0xC3):
        return {0xC0: None, 0xC2: False, 0xC3: True}[kind_byte], offset
    if kind_byte in _FIXED_FORMATS:
        return _read(view, offset, _FIXED_FORMATS[kind_byte])
    if 0x80 <= kind_byte <= 0x8F:
        kind, length = "map", kind_byte & 0x0F
    elif 0x90 <= kind_byte <= 0x9F:
        kind, length = "array", kind_byte & 0x0F
    elif 0xA0 <= kind_byte <= 0xBF:
        kind, length = "str", kind_byte & 0x1F
    elif kind_byte in _LENGTH_FORMATS:
        kind, length_format = _LENGTH_FORMATS[kind_byte]
        length, offset = _read(view, offset, length_format)
    else:
        raise ValueError(f"unsupported msgpack type byte 0x{kind_byte:02x}")
    if kind in ("bin", "str"):
        end = offset + length
        if end > len(view):
            raise ValueError("the message is truncated")
        if kind == "bin":
            return view[offset:end], end
        return str(view[offset:end], "utf-8"), end  # UnicodeDecodeError is a ValueError
    if length > len(view) - offset:  # every element takes at least one byte
        raise ValueError("the message is truncated")
    if kind == "array":
        items = []
        for _ in range(length):
            item, offset = _unpack_value(view, offset, depth + 1)
            items.append(item)
        return items, offset
    mapping: dict[str, Any] = {}
    for _ in range(length):
        key, offset = _unpack_value(view, offset, depth + 1)
        if not isinstance(key, str):
            raise ValueError("map keys must be strings")
        mapping[key], offset = _unpack_value(view, offset, depth + 1)
    return mapping, offset


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _valid_id(value: Any) -> bool:
    if _is_int(value):
        return -(1 << 63) <= value < 1 << 64
    return isinstance(value, str) and len(value.encode("utf-8", "surrogatepass")) <= MAX_ID_BYTES


def decode_request(body: bytes | memoryview, *, token: str, limits: Limits) -> Request:
    """Decode and validate a request body, checking it in the order docs/protocol.md gives.

    `token` is the daemon's secret. Raises ProtocolError, carrying the request id once that id is
    known to be valid.
    """
    message = _unpack_map(body)
    version = message.get("v")
    if not _is_int(version) or version != PROTOCOL_VERSION:
        raise ProtocolError(
            VERSION,
            f"This daemon speaks protocol version {PROTOCOL_VERSION}; "
            f"the request says {version!r}.",
        )
    request_id = message.get("id")
    if not _valid_id(request_id):
        raise ProtocolError(
            BAD_REQUEST, "The request id must be an int or a string of at most 256 bytes."
        )
    sent_token = message.get("token")
    if not isinstance(sent_token, str) or not hmac.compare_digest(
        sent_token.encode("utf-8", "surrogatepass"), token.encode("utf-8")
    ):
        raise ProtocolError(
            UNAUTHORIZED,
            "The token is missing or wrong; read it from the daemon's connection file.",
            request_id,
        )
    op = message.get("op")
    if op not in OPS:
        raise ProtocolError(
            UNKNOWN_OP, f"Unknown op {op!r}; this daemon knows {', '.join(OPS)}.", request_id
        )
    args = message.get("args")
    if op != "colorize":
        if args is not None and not isinstance(args, dict):
            raise ProtocolError(BAD_REQUEST, "'args' must be a map.", request_id)
        return Request(request_id, op)
    try:
        colorize_args = _decode_colorize_args(args, limits)
    except ProtocolError as error:
        error.request_id = request_id
        raise
    return Request(request_id, op, colorize_args)


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
        and WORKING_SIZE_MULTIPLE <= working_size <= limits.max_side
        and working_size % WORKING_SIZE_MULTIPLE == 0
    ):
        raise ProtocolError(
            BAD_REQUEST,
            f"'working_size' must be a multiple of {WORKING_SIZE_MULTIPLE} from "
            f"{WORKING_SIZE_MULTIPLE} to {limits.max_side}; got {working_size!r}.",
        )
    keep_lines = options.get("keep_lines", True)
    if not isinstance(keep_lines, bool):
        raise ProtocolError(BAD_REQUEST, f"'keep_lines' must be true or false; got {keep_lines!r}.")
    result_format = options.get("result_format", "RGBA8")
    if result_format not in RESULT_FORMATS:
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
    if image_format not in FORMATS:
        raise ProtocolError(
            BAD_IMAGE,
            f"'{name}' has format {image_format!r}; supported formats: {', '.join(FORMATS)}.",
        )
    if not isinstance(data, memoryview):
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
    message = _unpack_map(body)
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
