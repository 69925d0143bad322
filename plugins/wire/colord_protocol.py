"""Protocol v1 of `colord serve` (docs/protocol.md): the one definition of the wire contract.

Standard-library Python only (>= 3.10): the daemon imports this module as
`colord.plugins.wire.colord_protocol`, and `colord plugin install|pack` copies it into each plug-in
bundle beside the wire client. It owns every fact both ends must agree on:

- the version, the ops, the image formats, the request options and the error codes;
- the errors a client raises (`ColordError` and its kinds) and a refused request (`ProtocolError`);
- the limits: ids, working sizes, image sides, message sizes, the request header;
- the request and reply shapes: `request_message`, `colorize_args`, `check_image`, `read_reply`;
- the connection file: where it lives, its fields, who may own and read it, a live pid.

Transports (msgpack and ZeroMQ, in pyzmq or in standard-library Python) live elsewhere.
"""

from __future__ import annotations

import errno
import json
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

PROTOCOL_VERSION = 1
OPS = ("ping", "info", "colorize")

# --- error codes ------------------------------------------------------------------------------

# The daemon's, in the order it checks a request (docs/protocol.md, Error codes).
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
# A client's own, for what happens before or instead of a reply.
NOT_RUNNING = "not_running"
UNSAFE_CONNECTION_FILE = "unsafe_connection_file"
CONNECTION_LOST = "connection_lost"
TIMEOUT = "timeout"
PROTOCOL = "protocol"  # the peer does not speak this protocol (or not this version of it)

START_HINT = "Start it with `colord serve`, then try again."


class ColordError(Exception):
    """Anything that kept a request from succeeding; `code` is stable, `message` a sentence."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class DaemonNotRunning(ColordError):
    """No daemon to talk to: no connection file, an invalid or stale one, or nothing listening."""

    def __init__(self, message: str) -> None:
        super().__init__(NOT_RUNNING, message)


class UnsafeConnectionFile(ColordError):
    """The connection file is there but cannot be trusted (a link, another user's, readable)."""

    def __init__(self, message: str) -> None:
        super().__init__(UNSAFE_CONNECTION_FILE, message)


class ConnectionLost(ColordError):
    """The daemon closed or reset the connection before it answered."""

    def __init__(self, message: str) -> None:
        super().__init__(CONNECTION_LOST, message)


class DaemonTimeout(ColordError):
    """The daemon did not answer in time."""

    def __init__(self, message: str) -> None:
        super().__init__(TIMEOUT, message)


class ErrorReply(ColordError):
    """The daemon answered with an error reply; `code` is one of ERROR_CODES."""


class ProtocolError(ColordError):
    """A message that breaks the protocol: a request the daemon refuses (answered with `code`
    and `request_id`, once that id is known to be valid), or a reply a client cannot read."""

    def __init__(self, code: str, message: str, request_id: int | str | None = None) -> None:
        super().__init__(code, message)
        self.request_id = request_id


# --- images -----------------------------------------------------------------------------------

# format -> (channels, bytes per channel); rows top to bottom, no padding, 16 bit little-endian
FORMATS: dict[str, tuple[int, int]] = {
    "RGBA8": (4, 1),
    "BGRA8": (4, 1),
    "RGB8": (3, 1),
    "GRAY8": (1, 1),
    "GRAYA8": (2, 1),
    "RGBA16": (4, 2),
}
BYTES_PER_PIXEL = {name: channels * size for name, (channels, size) in FORMATS.items()}
RESULT_FORMATS = ("RGBA8", "BGRA8")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_image(message: Any, name: str, max_side: int | None = None) -> None:
    """Raise ProtocolError (bad_image, or too_large above `max_side`) unless `message` is an IMAGE
    map whose width, height, format and bytes agree."""
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
    if not isinstance(data, (bytes, bytearray, memoryview)):  # a view: a reply's, uncopied
        raise ProtocolError(BAD_IMAGE, f"'{name}.data' must be msgpack bin (raw pixel bytes).")
    if width < 1 or height < 1:
        raise ProtocolError(BAD_IMAGE, f"'{name}' is {width}x{height}; both sides must be >= 1.")
    if max_side is not None and (width > max_side or height > max_side):
        raise ProtocolError(
            TOO_LARGE,
            f"'{name}' is {width}x{height}; this daemon accepts at most {max_side} px a side.",
        )
    expected = width * height * BYTES_PER_PIXEL[image_format]
    if len(data) != expected:
        raise ProtocolError(
            BAD_IMAGE,
            f"'{name}' is {width}x{height} {image_format}, which needs {expected} bytes of data; "
            f"got {len(data)}.",
        )


# --- limits -----------------------------------------------------------------------------------

MAX_ID_BYTES = 256
WORKING_SIZE_MULTIPLE = 16  # the model's input sides are multiples of 16
DEFAULT_MAX_SIDE = 8192  # two RGBA16 images of 8192^2 make a 1 GiB request
DEFAULT_QUEUE_SIZE = 8
# Seconds a client waits for a reply by default; the daemon skips a colorize request that has
# waited this long for the model (`colord serve --request-budget`): nobody would read its reply.
DEFAULT_TIMEOUT = 120.0
REQUEST_OVERHEAD_BYTES = 1 << 16  # what a request holds besides pixels, with room to spare
# The header (v, id, op, token) comes before args within this many bytes: the daemon reads only
# that much of a message before the token has matched.
HEADER_BYTES = 4096
HEADER_KEYS = ("v", "id", "op", "token")
MAX_CONTAINER_LEN = 64  # entries in any map or array; a valid request has at most 8 (its options)
MAX_STR_BYTES = 1 << 16  # any str in a request; the longest valid one is a 256-byte id


def valid_id(value: Any) -> bool:
    """A request id: an int that msgpack carries, or a str of at most MAX_ID_BYTES in UTF-8."""
    if _is_int(value):
        return -(1 << 63) <= value < 1 << 64
    return isinstance(value, str) and len(value.encode("utf-8", "surrogatepass")) <= MAX_ID_BYTES


def max_message_bytes(max_side: int) -> int:
    """The longest valid request: line art and reference of max_side a side in the widest format,
    plus the rest of the message. ZeroMQ drops longer messages unread."""
    return 2 * max_side * max_side * max(BYTES_PER_PIXEL.values()) + REQUEST_OVERHEAD_BYTES


@dataclass(frozen=True)
class Limits:
    """What one request may ask for (`info`'s `limits`). `max_working_size` None: no cap below
    `max_side` is known (the daemon sets its engine's cap when it starts serving)."""

    max_side: int = DEFAULT_MAX_SIDE
    queue_size: int = DEFAULT_QUEUE_SIZE
    max_working_size: int | None = None

    @property
    def max_message_bytes(self) -> int:
        return max_message_bytes(self.max_side)

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


def oversize_message(
    images: Mapping[str, tuple[int, int, int] | None], limits: Mapping[str, Any]
) -> str | None:
    """Why a request with these images (name -> (width, height, bytes)) is above the daemon's
    `info` limits, or None. Clients check before sending: ZeroMQ drops an oversize message
    unanswered, and the client would only wait out its timeout."""
    max_side, max_bytes = limits.get("max_side"), limits.get("max_message_bytes")
    pixel_bytes = 0
    for name, size in images.items():
        if size is None:
            continue
        width, height, nbytes = size
        pixel_bytes += nbytes
        if _is_int(max_side) and max(width, height) > max_side:
            return (
                f"The {name} is {width}x{height} px; the daemon accepts at most {max_side} px a "
                "side. Scale it down, or start the daemon with a larger --max-side."
            )
    if _is_int(max_bytes) and pixel_bytes + REQUEST_OVERHEAD_BYTES > max_bytes:
        return (
            f"The images take {pixel_bytes} bytes; the daemon accepts messages of at most "
            f"{max_bytes} bytes. Send smaller images."
        )
    return None


# --- requests ---------------------------------------------------------------------------------


def _check_working_size(value: Any) -> None:
    if value is not None and not (
        _is_int(value) and value >= WORKING_SIZE_MULTIPLE and value % WORKING_SIZE_MULTIPLE == 0
    ):
        raise ProtocolError(
            BAD_REQUEST,
            f"'working_size' must be a multiple of {WORKING_SIZE_MULTIPLE} from "
            f"{WORKING_SIZE_MULTIPLE}; got {value!r}.",
        )


def _check_keep_lines(value: Any) -> None:
    if not isinstance(value, bool):
        raise ProtocolError(BAD_REQUEST, f"'keep_lines' must be true or false; got {value!r}.")


def _check_result_format(value: Any) -> None:
    if not isinstance(value, str) or value not in RESULT_FORMATS:
        raise ProtocolError(
            BAD_REQUEST,
            f"'result_format' must be one of {', '.join(RESULT_FORMATS)}; got {value!r}.",
        )


FLATS_LAYERS = ("with_colour", "only")  # `flats`: the flats beside the colour layer, or alone
# `ground` and `flats_ground`: the paper around the figure in the colour layer and the flats
GROUNDS = ("transparent", "opaque")
MAX_FLATS_GAP = 32  # canvas px; wider gaps would cost the daemon seconds of erosion per request


def _check_flats(value: Any) -> None:
    if value is not None and (not isinstance(value, str) or value not in FLATS_LAYERS):
        raise ProtocolError(
            BAD_REQUEST, f"'flats' must be one of {', '.join(FLATS_LAYERS)}; got {value!r}."
        )


def _check_flats_gap(value: Any) -> None:
    if value is not None and not (_is_int(value) and 0 <= value <= MAX_FLATS_GAP):
        raise ProtocolError(
            BAD_REQUEST,
            f"'flats_gap' must be a whole number of pixels from 0 to {MAX_FLATS_GAP}; "
            f"got {value!r}.",
        )


def _check_flats_palette(value: Any) -> None:
    if value is not None and not isinstance(value, bool):
        raise ProtocolError(BAD_REQUEST, f"'flats_palette' must be true or false; got {value!r}.")


def _ground_check(name: str) -> Callable[[Any], None]:
    """The check of a ground option called `name`: None or one of GROUNDS."""

    def check(value: Any) -> None:
        if value is not None and (not isinstance(value, str) or value not in GROUNDS):
            raise ProtocolError(
                BAD_REQUEST, f"'{name}' must be one of {', '.join(GROUNDS)}; got {value!r}."
            )

    return check


class Option(NamedTuple):
    default: Any  # None: the option is left out of the message unless given
    check: Callable[[Any], None]  # raises ProtocolError(BAD_REQUEST)


# colorize's `args.options`, in the order a request carries them. A new option is a row here,
# a field of the daemon's job record, and its use in the engine.
COLORIZE_OPTIONS: dict[str, Option] = {
    "keep_lines": Option(True, _check_keep_lines),  # lay the original lines over the colours
    "result_format": Option("RGBA8", _check_result_format),
    "working_size": Option(None, _check_working_size),  # None: the daemon chooses
    "flats": Option(None, _check_flats),  # None: no flats layer; else one of FLATS_LAYERS
    "flats_gap": Option(None, _check_flats_gap),  # line gaps closed, px; None: the daemon's
    "flats_palette": Option(None, _check_flats_palette),  # snap to the reference's palette
    "flats_ground": Option(None, _ground_check("flats_ground")),  # None: transparent
    # the colour layer's paper around the figure; None: opaque, as before `ground` existed
    "ground": Option(None, _ground_check("ground")),
}
FLATS_SETTINGS = ("flats_gap", "flats_palette", "flats_ground")  # mean something only with flats

# What this protocol's daemon can do beyond protocol v1 as first published; `info` lists them
# and a client checks `has_feature` before asking for one.
FEATURES = ("flats", "ground")


def has_feature(info: Mapping[str, Any], feature: str) -> bool:
    """Whether a daemon's `info` result lists `feature` (a daemon older than the list: no)."""
    features = info.get("features")
    return isinstance(features, list) and feature in features


def colorize_options(options: Mapping[str, Any], *, reference: bool) -> dict[str, Any]:
    """Every option, checked, with its default where `options` lacks it; `reference`: whether
    the request has one (snapping flats to its palette needs it). Raises
    ProtocolError(BAD_REQUEST), naming an option this daemon does not know."""
    unknown = [name for name in options if name not in COLORIZE_OPTIONS]
    if unknown:
        raise ProtocolError(
            BAD_REQUEST,
            f"Unknown colorize option {unknown[0]!r}; protocol v1 has "
            f"{', '.join(COLORIZE_OPTIONS)} (a plug-in newer than its daemon needs a newer "
            "colord).",
        )
    checked = {}
    for name, option in COLORIZE_OPTIONS.items():
        value = options.get(name, option.default)
        option.check(value)
        checked[name] = value
    if checked["flats"] is None:
        given = [name for name in FLATS_SETTINGS if checked[name] is not None]
        if given:
            raise ProtocolError(BAD_REQUEST, f"'{given[0]}' needs 'flats' (a flats layer).")
    if checked["flats_palette"] and not reference:
        raise ProtocolError(
            BAD_REQUEST, "'flats_palette' snaps the flats to the reference's colours: send one."
        )
    return checked


def request_message(
    request_id: int | str, op: str, token: str, args: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A request map: the header keys first (the daemon reads only those before the token)."""
    message: dict[str, Any] = {"v": PROTOCOL_VERSION, "id": request_id, "op": op, "token": token}
    if args is not None:
        message["args"] = args
    return message


def colorize_args(
    line_art: dict[str, Any], reference: dict[str, Any] | None, options: Mapping[str, Any]
) -> dict[str, Any]:
    """colorize's args from IMAGE maps and options (checked; those left at None are left out).
    The line art's pixels go last, so an encoder can append them without a second copy."""
    checked = colorize_options(options, reference=reference is not None)
    sent = {name: value for name, value in checked.items() if value is not None}
    return {"options": sent, "reference": reference, "line_art": line_art}


# --- replies ----------------------------------------------------------------------------------


def ok_message(request_id: int | str, result: dict[str, Any]) -> dict[str, Any]:
    return {"v": PROTOCOL_VERSION, "id": request_id, "ok": True, "result": result}


def error_message(request_id: int | str | None, code: str, message: str) -> dict[str, Any]:
    error = {"code": code, "message": message}
    return {"v": PROTOCOL_VERSION, "id": request_id, "ok": False, "error": error}


def read_reply(message: Any) -> dict[str, Any]:
    """The result map of a decoded reply. Raises ErrorReply for an error reply and
    ProtocolError (code `version` or `protocol`) for anything that is not a v1 reply."""
    if not isinstance(message, dict):
        raise ProtocolError(PROTOCOL, "The daemon's reply is not a msgpack map.")
    if message.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(
            VERSION, f"The daemon's reply is protocol version {message.get('v')!r}, not 1."
        )
    ok = message.get("ok")
    if ok is True:
        result = message.get("result")
        if not isinstance(result, dict):
            raise ProtocolError(PROTOCOL, "The daemon's reply has no result map.")
        return result
    error = message.get("error")
    if ok is not False or not isinstance(error, dict):
        raise ProtocolError(PROTOCOL, "The daemon's error reply has no error map.")
    raise ErrorReply(
        str(error.get("code", INTERNAL)),
        str(error.get("message", "The daemon gave no reason.")),
    )


# --- the connection file ----------------------------------------------------------------------

ENV_VARIABLE = "COLORD_CONNECTION_FILE"
FOLDER_NAME = "colord"
FILE_NAME = "daemon.json"
FILE_MODE = 0o600
FOLDER_MODE = 0o700


class Connection(NamedTuple):
    """The connection file's fields: where the daemon listens and the token it expects."""

    endpoint: str
    token: str
    pid: int
    version: str
    protocol: int = PROTOCOL_VERSION


def connection_file_path(
    platform: str | None = None, environ: Mapping[str, str] | None = None, home: Path | None = None
) -> Path:
    """Where the daemon writes its connection file (docs/protocol.md, Connection file); the
    arguments default to this machine's."""
    platform = sys.platform if platform is None else platform
    environ = os.environ if environ is None else environ
    override = environ.get(ENV_VARIABLE)
    if override:
        return Path(override)
    home = Path.home() if home is None else home
    if platform == "win32":
        local = environ.get("LOCALAPPDATA")
        base = Path(local) if local else home / "AppData" / "Local"
    elif platform == "darwin":
        base = home / "Library" / "Application Support"
    else:
        runtime = environ.get("XDG_RUNTIME_DIR")
        base = Path(runtime) if runtime else home / ".local" / "state"
    return base / FOLDER_NAME / FILE_NAME


def not_running(reason: str) -> DaemonNotRunning:
    return DaemonNotRunning(f"The colord daemon is not running ({reason}). {START_HINT}")


def read_connection(path: str | Path | None = None, *, check_pid: bool = True) -> Connection:
    """Read the connection file (default: `connection_file_path()`).

    Raises DaemonNotRunning when it is missing, unreadable, not the daemon's JSON, or (with
    `check_pid`) names a process that has exited: a stale file left by a crash; and
    UnsafeConnectionFile when it cannot be trusted.
    """
    path = Path(path) if path is not None else connection_file_path()
    try:
        fields = json.loads(read_private_file(path))
    except FileNotFoundError:
        raise not_running(f"no connection file at {path}") from None
    except (OSError, ValueError) as exc:  # ValueError: not UTF-8 or not JSON
        raise not_running(f"its connection file {path} is unreadable: {exc}") from None
    try:
        connection = Connection(
            endpoint=_field(fields, "endpoint", str),
            token=_field(fields, "token", str),
            pid=_field(fields, "pid", int),
            version=_field(fields, "version", str),
            protocol=_field(fields, "protocol", int),
        )
    except TypeError as exc:
        raise not_running(f"its connection file {path} is invalid: {exc}") from None
    if check_pid and not pid_alive(connection.pid):
        raise not_running(
            f"its connection file {path} names process {connection.pid}, which has exited"
        )
    return connection


def read_private_file(path: Path) -> str:
    """The text of a file that is the user's own and private; never read through a symlink.
    Raises UnsafeConnectionFile, or OSError when it cannot be read."""
    if sys.platform == "win32":  # no POSIX modes: the folder under %LOCALAPPDATA% is private
        return path.read_text(encoding="utf-8")
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeConnectionFile(
                f"colord's connection file {path} is a symbolic link, which colord refuses to "
                "follow. Remove it and restart `colord serve`."
            ) from None
        raise
    with os.fdopen(descriptor, encoding="utf-8") as file:
        status = os.fstat(file.fileno())
        if status.st_uid != os.getuid():
            raise UnsafeConnectionFile(
                f"colord's connection file {path} belongs to another user (uid {status.st_uid}), "
                "who could have planted it. Remove it and restart `colord serve`."
            )
        if status.st_mode & 0o077:
            raise UnsafeConnectionFile(
                f"colord's connection file {path} is readable by other users (mode "
                f"{status.st_mode & 0o777:04o}), so its token is no longer secret. Restart "
                "`colord serve` to write a fresh one."
            )
        return file.read()


def _field(fields: Any, name: str, kind: type) -> Any:
    value = fields.get(name) if isinstance(fields, dict) else None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise TypeError(f"{name!r} should be a {kind.__name__}, not {value!r}")
    return value


def pid_alive(pid: int) -> bool:
    """Whether a process of this id exists. One owned by another user exists too ("access
    denied" means alive, on POSIX and on Windows)."""
    if pid <= 0:
        return False
    if sys.platform == "win32":
        return _windows_pid_alive(pid)
    try:
        os.kill(pid, 0)  # signal 0 only checks that the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _windows_pid_alive(pid: int) -> bool:
    # os.kill(pid, 0) would terminate the process on Windows; ask the kernel instead.
    import ctypes
    from ctypes import wintypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
    kernel32.OpenProcess.restype = wintypes.HANDLE
    kernel32.OpenProcess.argtypes = (wintypes.DWORD, wintypes.BOOL, wintypes.DWORD)
    kernel32.GetExitCodeProcess.argtypes = (wintypes.HANDLE, ctypes.POINTER(wintypes.DWORD))
    kernel32.CloseHandle.argtypes = (wintypes.HANDLE,)
    process_query_limited_information, still_active, error_access_denied = 0x1000, 259, 5
    handle = kernel32.OpenProcess(process_query_limited_information, False, pid)
    if not handle:
        return ctypes.get_last_error() == error_access_denied  # type: ignore[attr-defined]
    try:
        exit_code = wintypes.DWORD()
        if not kernel32.GetExitCodeProcess(handle, ctypes.byref(exit_code)):
            return True
        return exit_code.value == still_active
    finally:
        kernel32.CloseHandle(handle)
