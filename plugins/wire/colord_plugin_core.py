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
    from . import colord_paper, colord_wire
    from . import colord_protocol as protocol
else:  # beside a plug-in's main script (GIMP), or on sys.path
    import colord_paper
    import colord_protocol as protocol
    import colord_wire

WORKING_SIZE_MULTIPLE = protocol.WORKING_SIZE_MULTIPLE
# The plug-ins offer working sizes in this range (the daemon's own cap, from its `info`, may be
# lower on a small device).
MIN_WORKING_SIZE = 64
MAX_WORKING_SIZE = 4096
AUTOMATIC = "auto"  # the stored text of the automatic working size

RESULT_PREFIX = "Colorized"
FLATS_PREFIX = "Flats"
NO_REFERENCE_NAME = "no reference"
_RESULT_NAME = re.compile(rf"^({RESULT_PREFIX}|{FLATS_PREFIX}) \(.*\)( \d+)?$")

# The flats choice: no flats layer, or one of the protocol's `flats` values.
NO_FLATS = "none"
FLATS_CHOICES = (NO_FLATS, *protocol.FLATS_LAYERS)
FLATS_LABELS = {
    NO_FLATS: "No flats",
    "with_colour": "Flats and colour",
    "only": "Flats only",
}
FLATS_FEATURE = "flats"  # what a daemon's `info` lists when it can make flats
GROUND_FEATURE = "ground"  # ... when it can clear the colour layer's paper around the figure
FLATS_UNAVAILABLE = (
    "This colord daemon cannot make flats: install the newest colord and restart its daemon."
)


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


def shrunk_reference(
    reference: LayerPixels, longest: int, into: bytearray | None = None
) -> LayerPixels:
    """The reference with every k-th pixel of every k-th row, k the largest whole step that keeps
    its long side at least `longest` (the largest working size the daemon may use; it shrinks the
    reference to the working size itself, filtering as it goes). Fewer bytes to send: a 2048 px
    reference to a daemon capped at 1024 px is a quarter of the request it was, and whole requests
    of 33 MB took hundreds of milliseconds longer to arrive than 21 MB ones (docs/cpu-fast-path.md).
    The pixels are written into `into` when given (see `colord_wire.reused`), else a new buffer.
    """
    step = max(reference.width, reference.height) // max(longest, 1)
    if step < 2:
        return reference
    pixels = memoryview(reference.data).cast("B").cast("I")  # one item a pixel
    tops = range(0, reference.height, step)
    width = -(-reference.width // step)
    size = width * len(tops) * pixels.itemsize
    out = colord_wire.reused(bytearray() if into is None else into, size).cast("I")
    for row, top in enumerate(tops):
        start = top * reference.width
        out[row * width : (row + 1) * width] = pixels[start : start + reference.width : step]
    return reference._replace(width=width, height=len(tops), data=out.cast("B"))


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


def largest_working_size(info: dict[str, Any]) -> int:
    """The largest working size the daemon says it runs (an older daemon: the protocol's)."""
    limits = info.get("limits")
    cap = limits.get("max_working_size") if isinstance(limits, dict) else None
    return cap if isinstance(cap, int) and cap > 0 else MAX_WORKING_SIZE


def check_working_size_cap(size: int | None, info: Callable[[], dict[str, Any]]) -> None:
    """Refuse a working size above what the daemon says its device affords (`info` is the
    client's info request; asked only for a fixed size)."""
    if size is None:
        return
    cap = largest_working_size(info())
    if size > cap:
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


def parse_flats(value: str) -> str:
    """The flats choice for a stored value; anything unknown is no flats."""
    return value if value in FLATS_CHOICES else NO_FLATS


def flats_available(info: dict[str, Any]) -> bool:
    """Whether the daemon whose `info` this is can make flats."""
    return protocol.has_feature(info, FLATS_FEATURE)


def check_flats_available(flats: str, info: Callable[[], dict[str, Any]]) -> None:
    """Refuse flats from a daemon that cannot make them (`info` is asked only for flats)."""
    if flats != NO_FLATS and not flats_available(info()):
        raise PluginError(FLATS_UNAVAILABLE)


# -- names ---------------------------------------------------------------------------------------


def result_layer_name(reference_name: str | None, taken: Iterable[str] = ()) -> str:
    """ "Colorized (<reference>)", numbered " 2", " 3"… when that name is already in `taken`."""
    return _layer_name(RESULT_PREFIX, reference_name, taken)


def flats_layer_name(reference_name: str | None, taken: Iterable[str] = ()) -> str:
    """ "Flats (<reference>)", numbered like the colour results."""
    return _layer_name(FLATS_PREFIX, reference_name, taken)


def _layer_name(prefix: str, reference_name: str | None, taken: Iterable[str]) -> str:
    base = f"{prefix} ({reference_name or NO_REFERENCE_NAME})"
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


# -- the round trip ------------------------------------------------------------------------------


def colorize(
    client: Any,
    line_art: LayerPixels,
    reference: LayerPixels | None,
    image_format: str,
    *,
    working_size: int | None,
    keep_lines: bool,
    transparent_paper: bool,
    flats: str,
    reference_buffer: bytearray | None = None,
) -> colord_wire.Layers:
    """Send both layers (`reference` None: colour without one) through `client` (a
    `colord_wire.WireClient`) and return the layers it answered, checked. `working_size` is
    parsed already (None: automatic); the daemon's `info` is asked once, and only when an option
    or the reference's size (`shrunk_reference`) needs it. With `transparent_paper` the paper
    around the figure comes transparent from the daemon in both layers; a daemon without the
    `ground` feature leaves the colour layer's to `clear_paper`, here (so run this off the app's
    GUI thread). A caller that colours again and again passes the same `reference_buffer` each
    time, for the reference sent subsampled."""
    asked: dict[str, Any] = {}

    def info() -> dict[str, Any]:
        if "info" not in asked:
            asked["info"] = client.info()
        return asked["info"]

    check_working_size_cap(working_size, info)
    check_flats_available(flats, info)
    options: dict[str, Any] = {
        "working_size": working_size,
        "keep_lines": keep_lines,
        "result_format": image_format,
    }
    if flats != NO_FLATS:
        options["flats"] = flats
        options["flats_ground"] = "transparent" if transparent_paper else "opaque"
    daemon_clears = transparent_paper and protocol.has_feature(info(), GROUND_FEATURE)
    if daemon_clears:
        options["ground"] = "transparent"
    if reference is not None:
        longest = working_size or largest_working_size(info())
        reference = shrunk_reference(reference, longest, reference_buffer)
    layers = client.colorize_layers(
        to_wire(line_art, image_format),
        None if reference is None else to_wire(reference, image_format),
        **options,
    )
    for image in (layers.colour, layers.flats):
        if image is not None:
            check_reply(image, line_art.width, line_art.height, image_format)
    if transparent_paper and not daemon_clears:
        layers = clear_paper(layers, line_art)
    return layers


def clear_paper(layers: colord_wire.Layers, line_art: LayerPixels) -> colord_wire.Layers:
    """The layers with the colour layer's pixels outside the drawing made transparent: what a
    daemon without the `ground` feature leaves undone (pure Python, 72-85 ms at 2048², 426 ms
    at 4096²). Not on a thread beside the request: holding the interpreter lock, it slowed the
    wire client's send and receive by more than it took."""
    if layers.colour is None:
        return layers
    data = bytearray(layers.colour.data)
    colord_paper.clear_outside(data, line_art.data, line_art.width, line_art.height)
    return layers._replace(colour=layers.colour._replace(data=data))


class NewLayer(NamedTuple):
    pixels: LayerPixels  # named, at the line art's offset
    multiply: bool  # blending mode Multiply, else Normal
    visible: bool = True


class Placement(NamedTuple):
    """The layers to add, top first, as one stack directly above or below the line art."""

    layers: tuple[NewLayer, ...]
    above: bool


def place(
    answer: colord_wire.Layers,
    line_art: LayerPixels,
    reference_name: str | None,
    taken: Iterable[str],
    *,
    multiply_over_opaque: bool,
    room_below: bool = True,
) -> Placement:
    """Where the answer's layers go, the way a colourist stacks them.

    The colour result lies directly below the line art, or above it in Multiply when the line art
    is opaque (and the artist keeps that option) or is the lowest layer of its group. The flats are
    the base colours: directly below the colour result (or below the line art, alone), in the same
    mode; under a Multiply colour result they are added hidden, since shown they would darken its
    colours, and serve to select regions from."""
    above = (multiply_over_opaque and colord_paper.is_opaque(line_art.data)) or not room_below
    colour, flats = answer.colour, answer.flats
    layers = []
    if colour is not None:
        name = result_layer_name(reference_name, taken)
        layers.append(NewLayer(line_art._replace(name=name, data=colour.data), multiply=above))
    if flats is not None:
        name = flats_layer_name(reference_name, taken)
        pixels = line_art._replace(name=name, data=flats.data)
        layers.append(NewLayer(pixels, multiply=above, visible=not (above and layers)))
    return Placement(tuple(layers), above)


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
