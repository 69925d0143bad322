"""Exercise the docker's panel in a real Qt (the system Python's PyQt) without Krita.

Run as `python3 krita_panel_probe.py PYKRITA_DIR` with QT_QPA_PLATFORM=offscreen; prints one JSON
object of what the panel showed and which callbacks it made.
"""

from __future__ import annotations

import json
import sys
from types import SimpleNamespace

sys.path.insert(0, sys.argv[1])

from colord_krita import qt
from colord_krita.options import ColorizeOptions
from colord_krita.panel import BUSY_BAR_DELAY_MS, ColordPanel, LayerChoice
from colord_krita.qt import QtCore, QtGui, QtWidgets

app = QtWidgets.QApplication([])
thumbnail = QtGui.QImage(32, 32, QtGui.QImage.Format.Format_ARGB32)
thumbnail.fill(0xFF3366CC)
layers = [LayerChoice("{1}", "Inks", 0), LayerChoice("{2}", "Colours", 0, thumbnail),
          LayerChoice("{3}", "Sky", 1)]  # fmt: skip
calls: list = []
panel = ColordPanel(
    list_layers=lambda: layers,
    on_options_changed=lambda options: calls.append(["options", options.reference_id,
                                                     options.reference, options.working_size,
                                                     options.keep_lines, options.flats]),
    on_colorize=lambda: calls.append(["colorize"]),
    on_cancel=lambda: calls.append(["cancel"]),
    on_start_daemon=lambda: calls.append(["start"]),
)  # fmt: skip
box = panel.reference_box
seen: dict = {"binding": QtWidgets.__name__.split(".")[0]}


def visible(widget) -> bool:
    return widget.isVisibleTo(panel)


panel.set_options(ColorizeOptions(reference_id="{3}", reference="Sky", working_size=768,
                                  keep_lines=False))  # fmt: skip
seen["items"] = [[box.itemText(i), box.itemData(i)] for i in range(box.count())]
seen["icons"] = [not box.itemIcon(i).isNull() for i in range(box.count())]
seen["current"] = box.currentData()
seen["size"] = panel.working_size_box.value()
seen["flags"] = [panel.keep_lines_box.isChecked(), panel.transparent_paper_box.isChecked(),
                 panel.multiply_box.isChecked()]  # fmt: skip

box.setCurrentIndex(2)
box.activated.emit(2)  # what a click on "Colours" in the list does
panel.keep_lines_box.setChecked(True)
panel.working_size_box.setValue(1024)

layers[1] = LayerChoice("{2}", "Palette", 0)  # the artist renames the reference layer
panel.refresh_layers()
seen["renamed"] = [box.currentText(), box.currentData(), panel.options().reference]

del layers[1]
panel.refresh_layers()
seen["missing"] = [box.currentText(), box.currentData()]
panel.set_options(ColorizeOptions())
seen["automatic"] = [panel.working_size_box.text(), panel.options().working_size]


def run_event_loop(milliseconds: int) -> None:
    loop = QtCore.QEventLoop()
    QtCore.QTimer.singleShot(milliseconds, loop.quit)
    loop.exec()


def busy_state() -> list:
    return [
        panel.colorize_button.isEnabled(),
        visible(panel.cancel_button),
        visible(panel.busy_bar),
    ]


panel.set_busy(True)  # a request answered quickly: no moving bar at all
seen["quick"] = busy_state()
panel.set_busy(False)
run_event_loop(BUSY_BAR_DELAY_MS + 300)
seen["quick_after"] = busy_state()
panel.set_busy(True)  # a long one: the bar once the delay is over, not before
seen["busy"] = busy_state()
run_event_loop(BUSY_BAR_DELAY_MS // 2)
panel.set_busy(True)  # the state refreshed while it runs: the wait goes on, not from the start
run_event_loop(BUSY_BAR_DELAY_MS // 2 + 300)
seen["busy_later"] = busy_state()
panel.cancel_button.click()
panel.set_busy(False)
seen["idle"] = busy_state()
panel.set_has_document(False)
seen["no_document"] = panel.colorize_button.isEnabled()
panel.set_has_document(True)
panel.colorize_button.click()
panel.set_daemon_status(False, "Not running.")
seen["stopped"] = [panel.daemon_label.text(), visible(panel.start_button)]
panel.start_button.click()
panel.set_daemon_status(True, "Running: colord 0.1.0 (pid 42).")
seen["running"] = [panel.daemon_label.text(), visible(panel.start_button)]
panel.set_status("Added “Colorized (Sky)”.")
seen["status"] = panel.status_label.text()

flats = panel.flats_box
seen["flats_items"] = [[flats.itemText(i), flats.itemData(i)] for i in range(flats.count())]
panel.set_options(ColorizeOptions(flats="only"))
seen["flats_stored"] = [flats.currentText(), panel.options().flats]
enabled = [flats.model().item(i).isEnabled() for i in range(flats.count())]
panel.set_flats_available(False)  # the daemon's info lacks the feature
seen["flats_unavailable"] = [[flats.model().item(i).isEnabled() for i in range(flats.count())],
                             visible(panel.flats_note), panel.flats_note.text()]  # fmt: skip
panel.set_flats_available(None)  # a new daemon, not asked yet
seen["flats_unknown"] = [[flats.model().item(i).isEnabled() for i in range(flats.count())],
                         visible(panel.flats_note)]  # fmt: skip
seen["flats_enabled"] = enabled
flats.setCurrentIndex(1)
flats.activated.emit(1)  # the artist picks "Flats and colour"
seen["flats_chosen"] = calls[-1][-1]
seen["calls"] = calls[:-1]

pixels = bytearray(b"\x01\x02\x03\x04" * 4)
wrapped = qt.as_qbytearray(memoryview(pixels)[4:])  # a reply's pixels are a view
pixels[4] = 9
# read through const access, as Krita's setPixelData does (other access would copy them first)
wraps = isinstance(wrapped, QtCore.QByteArray)  # PyQt5; PyQt6 converts the view itself
seen["uncopied"] = wraps and wrapped.at(0) == b"\t"  # Qt reads the memory itself
seen["qbytearray"] = [type(wrapped).__name__, bytes(wrapped) == bytes(pixels[4:])]
view = memoryview(pixels)
qt.QtCore = SimpleNamespace(QByteArray=type("QByteArray", (), {}))  # PyQt6: no fromRawData
seen["left_to_the_binding"] = qt.as_qbytearray(view) is view
print(json.dumps(seen))
