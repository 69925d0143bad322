#!/usr/bin/env python3
"""GIMP 3 plug-in: Layer › Colorize with Reference… (procedure `python-fu-colord-colorize`).

The selected layer is the line art; the `reference` argument names the picture whose colours to
follow (or `without-reference` says to colour without one). Both are sent to the local colord
daemon, started first if none runs, and its answer becomes a new layer "Colorized (<reference>)"
directly below the line art (above it in Multiply mode when the line art is opaque), with a
"Flats (<reference>)" layer under it or instead of it when asked, in one undo step. Existing layers
never change.
This is the only module that touches GIMP; everything else lives in `colord_gimp_logic`.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
import colord_gimp_logic as logic  # noqa: E402
import colord_launch  # noqa: E402
import colord_plugin_core as core  # noqa: E402
import colord_wire  # noqa: E402
from gi.repository import Gegl, Gimp, GLib, GObject  # noqa: E402

PROCEDURE_NAME = "python-fu-colord-colorize"
PROGRESS_PULSE_SECONDS = 0.1
STARTUP_POLL_SECONDS = 0.25
INFO_TIMEOUT_S = 5.0


def drawable_kind(drawable: Gimp.Drawable) -> str:
    if isinstance(drawable, Gimp.LayerMask):
        return "mask"
    if isinstance(drawable, Gimp.Channel):
        return "channel"
    if drawable.is_group():
        return "group"
    return "layer"


def read_layer(layer: Gimp.Layer) -> core.LayerPixels:
    """The layer's own pixels (not the composite) as 8-bit non-linear RGBA, and its offsets."""
    width, height = layer.get_width(), layer.get_height()
    _, x, y = layer.get_offsets()
    pixels = layer.get_buffer().get(
        Gegl.Rectangle.new(0, 0, width, height), 1.0, logic.PIXEL_FORMAT, Gegl.AbyssPolicy.CLAMP
    )
    return core.LayerPixels(layer.get_name(), x, y, width, height, bytes(pixels))


def all_layers(layers: list[Gimp.Layer]) -> list[Gimp.Layer]:
    """Every layer under `layers` (groups opened), top first."""
    found = []
    for layer in layers:
        found.append(layer)
        if layer.is_group():
            found.extend(all_layers(layer.get_children()))
    return found


def insert_layers(image: Gimp.Image, anchor: Gimp.Layer, placement: core.Placement) -> None:
    """The placement's layers as one stack directly below `anchor` (same parent), or above it,
    top first, in one undo step; `anchor` stays the selected layer."""
    image.undo_group_start()
    try:
        # Inserting at one position puts each layer above the one inserted before: bottom first.
        position = image.get_item_position(anchor) + (0 if placement.above else 1)
        for new in reversed(placement.layers):
            record = new.pixels
            layer = Gimp.Layer.new(
                image,
                record.name,
                record.width,
                record.height,
                Gimp.ImageType.RGBA_IMAGE,
                100.0,
                Gimp.LayerMode.MULTIPLY if new.multiply else Gimp.LayerMode.NORMAL,
            )
            image.insert_layer(layer, anchor.get_parent(), position)
            layer.set_offsets(record.x, record.y)
            layer.set_visible(new.visible)
            buffer = layer.get_buffer()
            rectangle = Gegl.Rectangle.new(0, 0, record.width, record.height)
            buffer.set(rectangle, logic.PIXEL_FORMAT, bytes(record.data))
            buffer.flush()
            layer.update(0, 0, record.width, record.height)
        image.set_selected_layers([anchor])  # the line art stays the line art for the next run
    finally:
        image.undo_group_end()


def with_progress(text: str, work: Callable[[], object]) -> object:
    """Run `work` on a worker thread; pulse GIMP's progress bar until it ends."""
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["result"] = work()
        except BaseException as exc:  # handed to the main thread, which reports it
            outcome["error"] = exc

    worker = threading.Thread(target=run, name="colord-request", daemon=True)
    Gimp.progress_init(text)
    worker.start()
    while worker.is_alive():
        worker.join(PROGRESS_PULSE_SECONDS)
        Gimp.progress_pulse()
    Gimp.progress_end()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def start_daemon_if_needed() -> colord_launch.Startup | None:
    """Checked before the dialog: a running daemon, or one started now (it warms up while the
    artist chooses); DaemonNotRunning when there is none and no way to start one."""
    try:
        colord_wire.read_connection()
        return None
    except colord_wire.DaemonNotRunning:
        command = colord_launch.launch_command()
        if command is None:
            raise
    return colord_launch.Startup(command)


def wait_for_daemon(startup: colord_launch.Startup) -> None:
    def wait() -> None:
        while startup.poll() is None:
            time.sleep(STARTUP_POLL_SECONDS)

    with_progress("Starting the colord daemon…", wait)


def propose_reference(image: Gimp.Image, line_art: Gimp.Layer, config) -> None:
    """Preselect a reference in the dialog when none is chosen yet."""
    if config.get_property("reference") is not None:
        return
    layers = all_layers(image.get_layers())
    chosen = logic.default_reference(
        [(layer.get_id(), layer.get_name()) for layer in layers if not layer.is_group()],
        line_art.get_id(),
    )
    if chosen is not None:
        config.set_property("reference", Gimp.Layer.get_by_id(chosen))


def flats_available() -> bool | None:
    """Whether the running daemon can make flats (None: not known, none runs yet)."""
    try:
        with colord_wire.WireClient.from_connection_file() as client:
            return core.flats_available(client.info(timeout=INFO_TIMEOUT_S))
    except colord_wire.ColordError:
        return None


def show_dialog(
    procedure: Gimp.Procedure, config: Gimp.ProcedureConfig, flats: bool | None
) -> bool:
    """The procedure's dialog; the flats choices greyed out, saying why, when `flats` is False."""
    # Imported here: loading Gtk would cost every non-interactive call about 50 ms for nothing.
    gi.require_version("GimpUi", "3.0")
    from gi.repository import GimpUi

    GimpUi.init("colord_gimp")
    dialog = GimpUi.ProcedureDialog.new(procedure, config, "Colorize with Reference")
    fields = [spec.name for spec in procedure.get_arguments()]
    if flats is False:
        choice = Gimp.param_spec_choice_get_choice(procedure.find_argument("flats"))
        for nick in core.FLATS_CHOICES:
            choice.set_sensitive(nick, nick == core.NO_FLATS)
        dialog.get_label("flats-unavailable", core.FLATS_UNAVAILABLE, False, False)
        fields.insert(fields.index("flats") + 1, "flats-unavailable")
    dialog.fill(fields[fields.index("reference") :])
    accepted = dialog.run()
    dialog.destroy()
    return accepted


def colorize(procedure, run_mode, image, drawables, config, _data):
    try:
        # Checked before the dialog opens: no point choosing options for a run that must fail.
        logic.check_image_mode(image.get_base_type().value_nick)
        logic.check_line_art_selection([drawable_kind(d) for d in drawables])
        line_art_layer = drawables[0]
        core.check_not_a_result(line_art_layer.get_name())
        startup = start_daemon_if_needed()
        if run_mode == Gimp.RunMode.INTERACTIVE:
            propose_reference(image, line_art_layer, config)
            flats = None if startup is not None else flats_available()
            if not show_dialog(procedure, config, flats):
                return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, GLib.Error())
        reference_layer = config.get_property("reference")
        without_reference = config.get_property("without-reference")
        logic.check_reference_choice(reference_layer is not None, without_reference)
        if without_reference:
            reference_layer = None
        if reference_layer is not None:
            core.check_distinct_reference(
                line_art_layer.get_id(), reference_layer.get_id(), reference_layer.get_name()
            )
        if startup is not None:
            wait_for_daemon(startup)
        line_art = read_layer(line_art_layer)
        reference = read_layer(reference_layer) if reference_layer is not None else None
        taken = tuple(layer.get_name() for layer in all_layers(image.get_layers()))
        with colord_wire.WireClient.from_connection_file() as client:
            result = with_progress(
                "Colorizing with colord…",
                lambda: logic.colorize_layers(
                    client,
                    line_art,
                    reference,
                    working_size=config.get_property("working-size"),
                    keep_lines=config.get_property("keep-lines"),
                    transparent_paper=config.get_property("transparent-paper"),
                    multiply_over_opaque=config.get_property("multiply-over-opaque"),
                    flats=config.get_property("flats"),
                    taken_names=taken,
                ),
            )
        insert_layers(image, line_art_layer, result.placement)
        Gimp.displays_flush()
    except Exception as exc:
        return procedure.new_return_values(
            Gimp.PDBStatusType.EXECUTION_ERROR, GLib.Error(core.error_message(exc))
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
            "colord daemon (started first if none runs) and adds its answer as a new layer "
            "directly below the line art, or above it in Multiply mode when it is opaque.",
            name,
        )
        procedure.set_attribution("colord", "colord", "2026")
        procedure.add_layer_argument(
            "reference",
            "Re_ference",
            "The layer whose colours to follow",
            True,
            GObject.ParamFlags.READWRITE,
        )
        procedure.add_boolean_argument(
            "without-reference",
            "Colour _without a reference",
            "Ignore the reference: the model chooses colours of its own",
            False,
            GObject.ParamFlags.READWRITE,
        )
        procedure.add_int_argument(
            "working-size",
            "_Working size (0 = automatic)",
            "The resolution in pixels at which the model runs, a multiple of 16; 0: automatic, "
            "the size at which the strokes are as thick as those the model learnt from",
            logic.WORKING_SIZE_AUTOMATIC,
            core.MAX_WORKING_SIZE,
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
        procedure.add_boolean_argument(
            "transparent-paper",
            "_Transparent around the figure",
            "The result holds only the drawing: the paper around it stays transparent",
            True,
            GObject.ParamFlags.READWRITE,
        )
        procedure.add_boolean_argument(
            "multiply-over-opaque",
            "Above opaque line art, in _Multiply",
            "Line art on paper would hide a result below it: put the result above it in "
            "Multiply mode instead (your layers are never changed)",
            True,
            GObject.ParamFlags.READWRITE,
        )
        flats = Gimp.Choice.new()
        for number, nick in enumerate(core.FLATS_CHOICES):
            flats.add(nick, number, core.FLATS_LABELS[nick], "")
        procedure.add_choice_argument(
            "flats",
            "_Flats",
            "A layer of flats: every closed region of the line art in one solid colour, to "
            "select regions from; alone or with the colour layer",
            flats,
            core.NO_FLATS,
            GObject.ParamFlags.READWRITE,
        )
        return procedure


Gimp.main(ColordPlugIn.__gtype__, sys.argv)
