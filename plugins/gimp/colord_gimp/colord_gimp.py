#!/usr/bin/env python3
"""GIMP 3 plug-in: Layer › Colorize with Reference… (procedure `python-fu-colord-colorize`).

The selected layer is the line art; the `reference` argument names the picture whose colours to
follow. Both are sent to the local colord daemon, and its answer becomes a new layer
"Colorized (<reference>)" directly below the line art, in one undo step. Existing layers never
change.
This is the only module that touches GIMP; everything else lives in `colord_gimp_logic`.
"""

from __future__ import annotations

import sys
import threading

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
import colord_gimp_logic as logic  # noqa: E402
import colord_wire  # noqa: E402
from gi.repository import Gegl, Gimp, GLib, GObject  # noqa: E402

PROCEDURE_NAME = "python-fu-colord-colorize"
PROGRESS_PULSE_SECONDS = 0.1


def drawable_kind(drawable: Gimp.Drawable) -> str:
    if isinstance(drawable, Gimp.LayerMask):
        return "mask"
    if isinstance(drawable, Gimp.Channel):
        return "channel"
    if drawable.is_group():
        return "group"
    return "layer"


def read_layer(layer: Gimp.Layer) -> logic.LayerRecord:
    """The layer's own pixels (not the composite) as 8-bit non-linear RGBA, and its offsets."""
    width, height = layer.get_width(), layer.get_height()
    _, x, y = layer.get_offsets()
    pixels = layer.get_buffer().get(
        Gegl.Rectangle.new(0, 0, width, height), 1.0, logic.PIXEL_FORMAT, Gegl.AbyssPolicy.CLAMP
    )
    return logic.LayerRecord(layer.get_name(), x, y, width, height, bytes(pixels))


def insert_below(image: Gimp.Image, anchor: Gimp.Layer, record: logic.LayerRecord) -> Gimp.Layer:
    """A new layer holding `record` directly below `anchor` (same parent), as one undo step."""
    image.undo_group_start()
    try:
        layer = Gimp.Layer.new(
            image,
            record.name,
            record.width,
            record.height,
            Gimp.ImageType.RGBA_IMAGE,
            100.0,
            Gimp.LayerMode.NORMAL,
        )
        image.insert_layer(layer, anchor.get_parent(), image.get_item_position(anchor) + 1)
        layer.set_offsets(record.x, record.y)
        buffer = layer.get_buffer()
        buffer.set(
            Gegl.Rectangle.new(0, 0, record.width, record.height), logic.PIXEL_FORMAT, record.rgba
        )
        buffer.flush()
        layer.update(0, 0, record.width, record.height)
    finally:
        image.undo_group_end()
    return layer


def colorize_with_progress(
    client: colord_wire.WireClient,
    line_art: logic.LayerRecord,
    reference: logic.LayerRecord | None,
    working_size: int,
    keep_lines: bool,
) -> logic.LayerRecord:
    """Run the daemon round trip on a worker thread; pulse GIMP's progress bar until it ends."""
    outcome: dict[str, object] = {}

    def round_trip() -> None:
        try:
            outcome["result"], _ = logic.colorize_layers(
                client, line_art, reference, working_size=working_size, keep_lines=keep_lines
            )
        except BaseException as exc:  # handed to the main thread, which reports it
            outcome["error"] = exc

    worker = threading.Thread(target=round_trip, name="colord-request", daemon=True)
    Gimp.progress_init("Colorizing with colord…")
    worker.start()
    while worker.is_alive():
        worker.join(PROGRESS_PULSE_SECONDS)
        Gimp.progress_pulse()
    Gimp.progress_end()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def show_dialog(procedure: Gimp.Procedure, config: Gimp.ProcedureConfig) -> bool:
    # Imported here: loading Gtk would cost every non-interactive call about 50 ms for nothing.
    gi.require_version("GimpUi", "3.0")
    from gi.repository import GimpUi

    GimpUi.init("colord_gimp")
    dialog = GimpUi.ProcedureDialog.new(procedure, config, "Colorize with Reference")
    dialog.fill(None)
    accepted = dialog.run()
    dialog.destroy()
    return accepted


def colorize(procedure, run_mode, image, drawables, config, _data):
    try:
        # Checked before the dialog opens: no point choosing options for a run that must fail.
        logic.check_image_mode(image.get_base_type().value_nick)
        logic.check_line_art_selection([drawable_kind(d) for d in drawables])
        if run_mode == Gimp.RunMode.INTERACTIVE and not show_dialog(procedure, config):
            return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, GLib.Error())
        line_art_layer = drawables[0]
        reference_layer = config.get_property("reference")
        if reference_layer is not None:
            logic.check_distinct_reference(line_art_layer.get_id(), reference_layer.get_id())
        # The connection file is read first, so a missing daemon is reported before any pixels
        # are read.
        with colord_wire.WireClient.from_connection_file() as client:
            result = colorize_with_progress(
                client,
                read_layer(line_art_layer),
                read_layer(reference_layer) if reference_layer is not None else None,
                config.get_property("working-size"),
                config.get_property("keep-lines"),
            )
        insert_below(image, line_art_layer, result)
        Gimp.displays_flush()
    except Exception as exc:
        return procedure.new_return_values(
            Gimp.PDBStatusType.EXECUTION_ERROR, GLib.Error(logic.error_message(exc))
        )
    return procedure.new_return_values(Gimp.PDBStatusType.SUCCESS, GLib.Error())


class ColordPlugIn(Gimp.PlugIn):
    def do_query_procedures(self):
        return [PROCEDURE_NAME]

    def do_set_i18n(self, _name):
        return False

    def do_create_procedure(self, name):
        procedure = Gimp.ImageProcedure.new(self, name, Gimp.PDBProcType.PLUGIN, colorize, None)
        procedure.set_image_types("*")
        procedure.set_sensitivity_mask(Gimp.ProcedureSensitivityMask.DRAWABLE)
        procedure.set_menu_label("Colorize with Reference…")
        procedure.add_menu_path("<Image>/Layer")
        procedure.set_documentation(
            "Colour the selected line art after a reference layer",
            "Sends the selected layer (the line art) and the chosen reference layer to the local "
            "colord daemon and adds its answer as a new layer directly below the line art.",
            name,
        )
        procedure.set_attribution("colord", "colord", "2026")
        procedure.add_layer_argument(
            "reference",
            "Re_ference",
            "The layer whose colours to follow (none: colour without a reference)",
            True,
            GObject.ParamFlags.READWRITE,
        )
        procedure.add_int_argument(
            "working-size",
            "_Working size (0 = automatic)",
            "The resolution in pixels at which the model runs; 0: automatic, the size at which "
            "the strokes are as thick as those the model learnt from",
            logic.WORKING_SIZE_AUTOMATIC,
            logic.WORKING_SIZE_MAX,
            logic.WORKING_SIZE_AUTOMATIC,
            GObject.ParamFlags.READWRITE,
        )
        procedure.add_boolean_argument(
            "keep-lines",
            "_Keep lines",
            "Draw the original strokes crisply over the colour",
            True,
            GObject.ParamFlags.READWRITE,
        )
        return procedure


Gimp.main(ColordPlugIn.__gtype__, sys.argv)
