"""Installed as `sitecustomize` for GIMP runs that test the plug-in's interactive mode.

Python imports it at the start of every plug-in process of such a run. In the colord plug-in's
process it wraps `GimpUi.ProcedureDialog.run`: once the real dialog is up on the (virtual) display,
it appends what the dialog shows to $COLORD_GIMP_DIALOG_RECORD (one JSON line; and, when
$COLORD_GIMP_DIALOG_SHOT names a file, saves a PNG of the dialog there) and presses OK, so the
procedure goes on exactly as after a user's click.
"""

import json
import os
import sys
from pathlib import Path

ACCEPT_AFTER_MS = 300

if Path(sys.argv[0]).name == "colord_gimp.py":
    import gi

    gi.require_version("GimpUi", "3.0")
    gi.require_version("Gtk", "3.0")
    gi.require_version("Gdk", "3.0")
    from gi.repository import Gdk, GimpUi, GLib, GObject, Gtk

    show_and_wait = GimpUi.ProcedureDialog.run

    def label_texts(widget):
        """The texts of every label shown inside `widget`."""
        if isinstance(widget, Gtk.Label):
            return [widget.get_text()] if widget.is_visible() else []
        if isinstance(widget, Gtk.Container):
            return [text for child in widget.get_children() for text in label_texts(child)]
        return []

    def run_then_accept(dialog):
        def record_and_accept():
            chooser = dialog.get_widget("reference", GObject.TYPE_NONE)
            flats = dialog.get_widget("flats", GObject.TYPE_NONE)
            record = {
                "title": dialog.get_title(),
                "visible": dialog.get_visible(),
                "reference_widget": type(chooser).__name__,
                "reference_shown": chooser is not None and chooser.get_visible(),
                "flats_shown": flats is not None and flats.get_visible(),
                "flats_notes": [text for text in label_texts(dialog) if "flats" in text],
            }
            with open(os.environ["COLORD_GIMP_DIALOG_RECORD"], "a", encoding="utf-8") as log:
                log.write(json.dumps(record) + "\n")
            shot = os.environ.get("COLORD_GIMP_DIALOG_SHOT")
            if shot:
                window = dialog.get_window()
                size = (window.get_width(), window.get_height())
                Gdk.pixbuf_get_from_window(window, 0, 0, *size).savev(shot, "png", [], [])
            dialog.response(Gtk.ResponseType.OK)
            return False

        GLib.timeout_add(ACCEPT_AFTER_MS, record_and_accept)
        return show_and_wait(dialog)

    GimpUi.ProcedureDialog.run = run_then_accept
