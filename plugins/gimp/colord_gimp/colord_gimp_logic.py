"""The host-free part of the GIMP plug-in: GIMP's own checks, the daemon round trip, the result.

Nothing here imports GIMP. `colord_gimp.py` turns GIMP layers into `LayerPixels`, calls
`colorize_layers` and turns the returned record back into a layer, so everything in this module runs
under plain pytest with a fake client. What both plug-ins share (option checks, names, replies,
messages, paper) is `colord_plugin_core`'s and `colord_paper`'s.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import colord_plugin_core as core
import colord_wire
from colord_plugin_core import LayerPixels, Placement, PluginError

WORKING_SIZE_AUTOMATIC = 0  # the option's value for "the daemon chooses" (and its default)
# GIMP's pixel format for reading and writing layers: non-linear 8-bit RGBA, straight alpha (the
# values a PNG holds), whatever the image's own precision.
PIXEL_FORMAT = "R'G'B'A u8"
WIRE_FORMAT = "RGBA8"


class Result(NamedTuple):
    placement: Placement  # the new layers (RGBA8), top first, and where they go
    timings: dict


class ColorizeClient(Protocol):
    def info(self) -> dict: ...

    def colorize_layers(
        self,
        line_art: colord_wire.Image,
        reference: colord_wire.Image | None = None,
        **options: Any,
    ) -> colord_wire.Layers: ...


MODE_NAMES = {"gray": "Grayscale", "indexed": "Indexed"}
NO_REFERENCE_CHOSEN = (
    "Choose the reference layer whose colours to follow, or tick “Colour without a reference”."
)


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


def check_reference_choice(has_reference: bool, without_reference: bool) -> None:
    """A run without a reference must be the artist's explicit choice."""
    if not has_reference and not without_reference:
        raise PluginError(NO_REFERENCE_CHOSEN)


def default_reference(layers: list[tuple[int, str]], line_art_id: int) -> int | None:
    """The layer the dialog proposes as reference: the topmost one (`layers` top first, as
    (id, name)) that is neither the line art nor a colord result."""
    for layer_id, name in layers:
        if layer_id != line_art_id and not core.is_result_layer_name(name):
            return layer_id
    return None


def colorize_layers(
    client: ColorizeClient,
    line_art: LayerPixels,
    reference: LayerPixels | None,
    *,
    working_size: int = WORKING_SIZE_AUTOMATIC,
    keep_lines: bool = True,
    transparent_paper: bool = True,
    multiply_over_opaque: bool = True,
    flats: str = core.NO_FLATS,
    taken_names: tuple[str, ...] = (),
) -> Result:
    """Send both layers to the daemon; return the new layers (over the line art's area), where
    they go, and the daemon's timings. `working_size` is the dialog's value: 0 lets the daemon
    choose; `flats` one of `core.FLATS_CHOICES`."""
    layers = core.colorize(
        client,
        line_art,
        reference,
        WIRE_FORMAT,
        working_size=core.parse_working_size(working_size),
        keep_lines=keep_lines,
        transparent_paper=transparent_paper,
        flats=flats,
    )
    placement = core.place(
        layers,
        line_art,
        reference.name if reference is not None else None,
        taken_names,
        multiply_over_opaque=multiply_over_opaque,
    )
    return Result(placement, layers.timings)
