"""Exercise the docker's panel in a real Qt (the system Python's PyQt) without Krita.

Run as `python3 krita_panel_probe.py PYKRITA_DIR` with QT_QPA_PLATFORM=offscreen; prints one JSON
object of what the panel showed and which callbacks it made.
"""

from __future__ import annotations

import json
import sys

sys.path.insert(0, sys.argv[1])

from colord_krita.options import ColorizeOptions
from colord_krita.panel import ColordPanel
from colord_krita.qt import QtWidgets

app = QtWidgets.QApplication([])
layers = [("Inks", 0), ("Colours", 0), ("Sky", 1)]
calls: list = []
panel = ColordPanel(
    list_layers=lambda: layers,
    on_options_changed=lambda options: calls.append(["options", options.reference,
                                                     options.working_size, options.keep_lines]),
    on_colorize=lambda: calls.append(["colorize"]),
    on_check_daemon=lambda: calls.append(["check"]),
)  # fmt: skip
box = panel.reference_box
seen: dict = {"binding": QtWidgets.__name__.split(".")[0]}

panel.set_options(ColorizeOptions(reference="Sky", working_size=768, keep_lines=False))
seen["items"] = [[box.itemText(i), box.itemData(i)] for i in range(box.count())]
seen["current"] = box.currentData()
seen["size"] = panel.working_size_box.value()
seen["keep_lines"] = panel.keep_lines_box.isChecked()

box.setCurrentIndex(1)
box.activated.emit(1)  # what a click on "Colours" in the list does
panel.keep_lines_box.setChecked(True)
panel.working_size_box.setValue(1024)

layers.remove(("Sky", 1))
panel.set_options(ColorizeOptions(reference="Sky"))
seen["missing"] = [box.currentText(), box.currentData()]
seen["automatic"] = [panel.working_size_box.text(), panel.options().working_size]

panel.set_busy(True)
seen["busy"] = [panel.colorize_button.isEnabled(), panel.busy_bar.isVisibleTo(panel)]
panel.set_busy(False)
seen["idle"] = [panel.colorize_button.isEnabled(), panel.busy_bar.isVisibleTo(panel)]
panel.colorize_button.click()
for button in panel.findChildren(QtWidgets.QPushButton):
    if button.text() == "Check":
        button.click()
panel.set_status("Added “Colorized (Sky)”.")
seen["status"] = panel.status_label.text()
seen["calls"] = calls
print(json.dumps(seen))
