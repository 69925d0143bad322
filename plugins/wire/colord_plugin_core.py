"""What the Krita and GIMP plug-ins share above the wire: options, names, checks and messages.

Standard library only, and shipped into both bundles by `colord plugin install|pack`: inside
Krita's package (imported relatively) and beside GIMP's main script (imported by name). Each
plug-in turns its host's layers into bytes and calls these; nothing here knows a host.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

if __package__:  # inside a plug-in's package (Krita) or colord.plugins.wire
    from . import colord_protocol as protocol
    from . import colord_wire
else:  # beside a plug-in's main script (GIMP), or on sys.path
    import colord_protocol as protocol
    import colord_wire

WORKING_SIZE_MULTIPLE = protocol.WORKING_SIZE_MULTIPLE
# The plug-ins offer working sizes in this range (the daemon's own cap, from its `info`, may be
# lower on a small device).
MIN_WORKING_SIZE = 64
MAX_WORKING_SIZE = 4096
AUTOMATIC = "auto"  # the stored text of the automatic working size

RESULT_PREFIX = "Colorized"
NO_REFERENCE_NAME = "no reference"
_RESULT_NAME = re.compile(rf"^{RESULT_PREFIX} \(.*\)( \d+)?$")


class PluginError(Exception):
    """A problem the artist can fix; the message is one readable sentence."""


class LayerPixels(NamedTuple):
    """A layer as both plug-ins read it: its pixels over `width` x `height` at canvas offset
    (`x`, `y`), four bytes a pixel with straight alpha, in the host's channel order."""

    name: str
    x: int
    y: int
    width: int
    height: int
    data: bytes | bytearray | memoryview


def to_wire(layer: LayerPixels, image_format: str) -> colord_wire.Image:
    """The layer as the protocol carries it; ValueError when its bytes do not fit its size."""
    expected = layer.width * layer.height * protocol.BYTES_PER_PIXEL[image_format]
    if len(layer.data) != expected:
        raise ValueError(
            f"layer {layer.name!r}: {len(layer.data)} bytes of pixels for "
            f"{layer.width}x{layer.height} {image_format} (expected {expected})"
        )
    return colord_wire.Image(layer.width, layer.height, image_format, layer.data)


# -- options -------------------------------------------------------------------------------------


def parse_working_size(value: str | int | None) -> int | None:
    """The working size to send for a stored or typed value: None means automatic.

    Accepts "auto" (or 0, empty, None) and multiples of WORKING_SIZE_MULTIPLE within the offered
    range; anything else is a PluginError saying what would work instead."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", AUTOMATIC)):
        return None
    try:
        size = int(value)
    except ValueError:
        raise PluginError(
            f"The working size “{value}” is not a number: choose Automatic or a size in pixels."
        ) from None
    if size == 0:
        return None
    if not MIN_WORKING_SIZE <= size <= MAX_WORKING_SIZE or size % WORKING_SIZE_MULTIPLE:
        raise PluginError(
            f"A working size of {size} px cannot be used: choose Automatic, or a multiple of "
            f"{WORKING_SIZE_MULTIPLE} from {MIN_WORKING_SIZE} to {MAX_WORKING_SIZE} px "
            f"(the nearest is {nearest_working_size(size)} px)."
        )
    return size


def nearest_working_size(size: int) -> int:
    """The usable working size closest to `size`."""
    rounded = round(size / WORKING_SIZE_MULTIPLE) * WORKING_SIZE_MULTIPLE
    return min(max(rounded, MIN_WORKING_SIZE), MAX_WORKING_SIZE)


def check_working_size_cap(size: int | None, info: Callable[[], dict[str, Any]]) -> None:
    """Refuse a working size above what the daemon says its device affords (`info` is the
    client's info request; asked only for a fixed size)."""
    if size is None:
        return
    limits = info().get("limits")
    cap = limits.get("max_working_size") if isinstance(limits, dict) else None
    if isinstance(cap, int) and size > cap:
        raise PluginError(
            f"The colord daemon runs at most {cap} px on its device; choose Automatic or a "
            f"working size up to {cap} px."
        )


def parse_bool(text: str, default: bool) -> bool:
    """A stored yes/no setting; unreadable text gives `default`."""
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    return default


# -- names ---------------------------------------------------------------------------------------


def result_layer_name(reference_name: str | None, taken: Iterable[str] = ()) -> str:
    """ "Colorized (<reference>)", numbered " 2", " 3"… when that name is already in `taken`."""
    base = f"{RESULT_PREFIX} ({reference_name or NO_REFERENCE_NAME})"
    names = set(taken)
    if base not in names:
        return base
    number = 2
    while f"{base} {number}" in names:
        number += 1
    return f"{base} {number}"


def is_result_layer_name(name: str) -> bool:
    """True for a name colord gives its result layers."""
    return _RESULT_NAME.match(name) is not None


def check_not_a_result(name: str) -> None:
    """Refuse to take one of colord's own results as line art."""
    if is_result_layer_name(name):
        raise PluginError(
            f"The selected layer “{name}” is a colord result, not line art: select the "
            "line-art layer and try again."
        )


def check_distinct_reference(line_art_id: object, reference_id: object, name: str) -> None:
    if line_art_id == reference_id:
        raise PluginError(
            f"“{name}” is both the line art and the reference: choose a different reference layer."
        )


# -- replies -------------------------------------------------------------------------------------


def check_reply(image: colord_wire.Image, width: int, height: int, image_format: str) -> None:
    """Refuse an answer that is not an image of the line art's size in the format asked for."""
    if (image.width, image.height, image.format) != (width, height, image_format):
        raise PluginError(
            f"The colord daemon answered with a {image.width}x{image.height} {image.format} "
            f"image for a {width}x{height} line art; is it a compatible version?"
        )
    expected = width * height * protocol.BYTES_PER_PIXEL[image_format]
    if len(image.data) != expected:
        raise PluginError(
            f"The colord daemon's answer holds {len(image.data)} bytes of pixels, not {expected}."
        )


# -- messages ------------------------------------------------------------------------------------


def error_message(error: BaseException) -> str:
    """One readable sentence for the app's message box, whatever went wrong."""
    if isinstance(error, PluginError):
        return str(error)
    return colord_wire.user_message(error)


def daemon_line(connection: protocol.Connection | None) -> str:
    """The daemon's state in a few words, for the docker or dialog."""
    if connection is None:
        return "Not running."
    return f"Running: colord {connection.version} (pid {connection.pid})."
