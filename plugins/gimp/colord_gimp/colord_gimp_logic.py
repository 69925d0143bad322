"""The host-free part of the GIMP plug-in: checks, naming, the daemon round trip and messages.

Nothing here imports GIMP. `colord_gimp.py` turns GIMP layers into `LayerRecord`s, calls
`colorize_layers` and turns the returned record back into a layer, so everything in this module runs
under plain pytest with a fake client.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

import colord_wire

RESULT_NAME_PATTERN = "Colorized ({})"
NO_REFERENCE_NAME = "no reference"
WORKING_SIZE_MIN = 64
WORKING_SIZE_MAX = 4096
WORKING_SIZE_AUTOMATIC = 0  # the option's value for "the daemon chooses" (and its default)
# GIMP's pixel format for reading and writing layers: non-linear 8-bit RGBA, straight alpha (the
# values a PNG holds), whatever the image's own precision.
PIXEL_FORMAT = "R'G'B'A u8"
BYTES_PER_PIXEL = 4


class PluginError(Exception):
    """A problem the user can fix; its message is shown as it is."""


class LayerRecord(NamedTuple):
    """A layer as the plug-in sees it: name, position on the canvas, size and RGBA8 pixels."""

    name: str
    x: int
    y: int
    width: int
    height: int
    rgba: bytes


class ColorizeClient(Protocol):
    def colorize(
        self,
        line_art: colord_wire.Image,
        reference: colord_wire.Image | None = None,
        *,
        working_size: int | None = None,
        keep_lines: bool = True,
        result_format: str = "RGBA8",
    ) -> tuple[colord_wire.Image, dict]: ...


MODE_NAMES = {"gray": "Grayscale", "indexed": "Indexed"}


def check_image_mode(base_type: str) -> None:
    """Only RGB images can hold a coloured result layer.

    `base_type` is the nick of GIMP's image base type: "rgb", "gray" or "indexed".
    """
    if base_type != "rgb":
        mode = MODE_NAMES.get(base_type, base_type)
        raise PluginError(
            f"Colorize with Reference needs an RGB image, but this image is in {mode} mode. "
            "Convert it with Image › Mode › RGB first."
        )


def check_line_art_selection(kinds: list[str]) -> None:
    """The selected drawables must be exactly one plain layer: the line art.

    `kinds` holds one word per selected drawable: "layer", "group", "mask" or "channel".
    """
    if len(kinds) != 1:
        raise PluginError(
            f"Select exactly one layer (the line art) before colorizing; {len(kinds)} are selected."
        )
    kind = kinds[0]
    if kind == "group":
        raise PluginError(
            "The selected layer is a layer group. Select the line-art layer itself, not its group."
        )
    if kind == "mask":
        raise PluginError(
            "A layer mask is selected. "
            "Click the line-art layer's thumbnail to select the layer itself."
        )
    if kind != "layer":
        raise PluginError(f"A {kind} is selected. Select the line-art layer instead.")


def check_distinct_reference(line_art_id: int, reference_id: int) -> None:
    if line_art_id == reference_id:
        raise PluginError(
            "The reference is the line-art layer itself. "
            "Choose the layer with the colours to follow."
        )


def requested_working_size(option: int) -> int | None:
    """The working size to send for the dialog's value: None (automatic) for 0."""
    if option == WORKING_SIZE_AUTOMATIC:
        return None
    if not WORKING_SIZE_MIN <= option <= WORKING_SIZE_MAX:
        raise PluginError(
            f"The working size must be {WORKING_SIZE_AUTOMATIC} (automatic) or between "
            f"{WORKING_SIZE_MIN} and {WORKING_SIZE_MAX} pixels, not {option}."
        )
    return option


def result_layer_name(reference_name: str | None) -> str:
    return RESULT_NAME_PATTERN.format(reference_name or NO_REFERENCE_NAME)


def to_wire_image(record: LayerRecord) -> colord_wire.Image:
    expected = record.width * record.height * BYTES_PER_PIXEL
    if len(record.rgba) != expected:
        raise ValueError(
            f"layer {record.name!r}: {len(record.rgba)} bytes of pixels for "
            f"{record.width}x{record.height} RGBA8 (expected {expected})"
        )
    return colord_wire.Image(record.width, record.height, "RGBA8", bytes(record.rgba))


def colorize_layers(
    client: ColorizeClient,
    line_art: LayerRecord,
    reference: LayerRecord | None,
    *,
    working_size: int = WORKING_SIZE_AUTOMATIC,
    keep_lines: bool = True,
) -> tuple[LayerRecord, dict]:
    """Send both layers to the daemon; return the result layer (over the line art) and timings.

    `working_size` is the dialog's value: 0 lets the daemon choose."""
    requested = requested_working_size(working_size)
    image, timings = client.colorize(
        to_wire_image(line_art),
        to_wire_image(reference) if reference is not None else None,
        working_size=requested,
        keep_lines=keep_lines,
        result_format="RGBA8",
    )
    if (image.width, image.height, image.format) != (line_art.width, line_art.height, "RGBA8"):
        raise PluginError(
            f"The colord daemon answered with a {image.width}x{image.height} {image.format} image "
            f"for a {line_art.width}x{line_art.height} line art; is it a compatible version?"
        )
    result = LayerRecord(
        name=result_layer_name(reference.name if reference is not None else None),
        x=line_art.x,
        y=line_art.y,
        width=image.width,
        height=image.height,
        rgba=image.data,
    )
    return result, timings


def error_message(exc: BaseException) -> str:
    """One readable sentence for GIMP's error dialog, whatever went wrong."""
    if isinstance(exc, PluginError):
        return str(exc)
    return colord_wire.user_message(exc)
