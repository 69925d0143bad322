"""The docker's content: reference chooser, options, daemon line with Start, Colorize and Cancel."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any, NamedTuple

from .colord_plugin_core import (
    FLATS_CHOICES,
    FLATS_LABELS,
    FLATS_UNAVAILABLE,
    MAX_WORKING_SIZE,
    NO_FLATS,
    WORKING_SIZE_MULTIPLE,
)
from .options import NO_REFERENCE_ID, ColorizeOptions
from .qt import QtCore, QtGui, QtWidgets

AUTOMATIC_BOX_VALUE = 0  # the working-size box's value that shows "Automatic"
# How long a request runs before the moving bar shows. Every frame of its animation has Qt
# recompose Krita's whole window through OpenGL, which costs the CPU the daemon needs wherever
# OpenGL is drawn in software; a click answered within this wait shows none.
BUSY_BAR_DELAY_MS = 1000
NO_REFERENCE_TEXT = "No reference (colours of its own)"


class LayerChoice(NamedTuple):
    """A layer the reference box offers: its id, name, depth in the stack and thumbnail."""

    uid: str
    name: str
    depth: int
    thumbnail: Any = None  # a QImage, or None


class _LayerComboBox(QtWidgets.QComboBox):
    """A combo box that refreshes its items just before it opens (layers come and go)."""

    def __init__(self, before_popup: Callable[[], None]) -> None:
        super().__init__()
        self._before_popup = before_popup

    def showPopup(self) -> None:
        self._before_popup()
        super().showPopup()


class ColordPanel(QtWidgets.QWidget):
    def __init__(
        self,
        list_layers: Callable[[], list[LayerChoice]],
        on_options_changed: Callable[[ColorizeOptions], None],
        on_colorize: Callable[[], None],
        on_cancel: Callable[[], None],
        on_start_daemon: Callable[[], None],
    ) -> None:
        super().__init__()
        self._list_layers = list_layers
        self._on_options_changed = on_options_changed
        self._options = ColorizeOptions()
        self._busy = False
        self._has_document = True

        self.reference_box = _LayerComboBox(self.refresh_layers)
        self.reference_box.setToolTip("The picture whose colours to follow; remembered by layer.")
        self.working_size_box = QtWidgets.QSpinBox()
        # the bottom of the range reads "Automatic": the daemon matches the model's stroke width
        self.working_size_box.setRange(AUTOMATIC_BOX_VALUE, MAX_WORKING_SIZE)
        self.working_size_box.setSpecialValueText("Automatic")
        self.working_size_box.setSingleStep(WORKING_SIZE_MULTIPLE)
        self.working_size_box.setSuffix(" px")
        self.working_size_box.setToolTip(
            "The size at which the model sees the drawing: Automatic (the size at which its "
            f"strokes are as thick as those the model learnt from) or a multiple of "
            f"{WORKING_SIZE_MULTIPLE}."
        )
        self.keep_lines_box = QtWidgets.QCheckBox("Keep lines crisp")
        self.transparent_paper_box = QtWidgets.QCheckBox("Transparent around the figure")
        self.transparent_paper_box.setToolTip(
            "The result holds only the drawing: the paper around it stays transparent."
        )
        self.multiply_box = QtWidgets.QCheckBox("Above opaque line art, in Multiply")
        self.multiply_box.setToolTip(
            "Line art on paper would hide a result below it: put the result above it in "
            "Multiply mode instead. Your layers are never changed."
        )
        self.flats_box = QtWidgets.QComboBox()
        for choice in FLATS_CHOICES:
            self.flats_box.addItem(FLATS_LABELS[choice], choice)
        self.flats_box.setToolTip(
            "Flats: every closed region of the line art in one solid colour, on a layer of its "
            "own, to select regions from with one click."
        )
        self.flats_note = QtWidgets.QLabel(FLATS_UNAVAILABLE)
        self.flats_note.setWordWrap(True)
        self.flats_note.setVisible(False)
        self.daemon_label = QtWidgets.QLabel()
        self.daemon_label.setWordWrap(True)
        self.start_button = QtWidgets.QPushButton("Start")
        self.start_button.setToolTip("Start the colord daemon on this computer.")
        self.start_button.clicked.connect(on_start_daemon)
        self.colorize_button = QtWidgets.QPushButton("Colorize")
        self.colorize_button.clicked.connect(on_colorize)
        self.cancel_button = QtWidgets.QPushButton("Cancel")
        self.cancel_button.clicked.connect(on_cancel)
        self.cancel_button.setVisible(False)
        self.busy_bar = QtWidgets.QProgressBar()
        self.busy_bar.setRange(0, 0)  # no known progress: a moving bar while a request runs
        self.busy_bar.setVisible(False)
        self._busy_bar_timer = QtCore.QTimer(self)
        self._busy_bar_timer.setSingleShot(True)
        self._busy_bar_timer.setInterval(BUSY_BAR_DELAY_MS)
        self._busy_bar_timer.timeout.connect(lambda: self.busy_bar.setVisible(self._busy))
        self.status_label = QtWidgets.QLabel()
        self.status_label.setWordWrap(True)

        form = QtWidgets.QFormLayout()
        form.addRow("Reference", self.reference_box)
        form.addRow("Working size", self.working_size_box)
        form.addRow("Flats", self.flats_box)
        form.addRow("", self.flats_note)
        for box in (self.keep_lines_box, self.transparent_paper_box, self.multiply_box):
            form.addRow("", box)
        daemon_row = QtWidgets.QHBoxLayout()
        daemon_row.addWidget(self.daemon_label, 1)
        daemon_row.addWidget(self.start_button)
        form.addRow("Daemon", daemon_row)
        buttons = QtWidgets.QHBoxLayout()
        buttons.addWidget(self.colorize_button, 1)
        buttons.addWidget(self.cancel_button)
        layout = QtWidgets.QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.busy_bar)
        layout.addWidget(self.status_label)
        layout.addStretch(1)

        self.reference_box.activated.connect(self._emit_options)
        self.working_size_box.valueChanged.connect(self._emit_options)
        self.flats_box.activated.connect(self._emit_options)
        for box in (self.keep_lines_box, self.transparent_paper_box, self.multiply_box):
            box.toggled.connect(self._emit_options)

    def _flag_boxes(self) -> dict[str, Any]:
        return {
            "keep_lines": self.keep_lines_box,
            "transparent_paper": self.transparent_paper_box,
            "multiply_over_opaque": self.multiply_box,
        }

    def set_options(self, options: ColorizeOptions) -> None:
        """Show `options` (stored ones, not a change by the artist: nothing is emitted)."""
        self._options = options
        widgets = [self.working_size_box, self.flats_box, *self._flag_boxes().values()]
        for widget in widgets:
            widget.blockSignals(True)
        size = options.working_size
        self.working_size_box.setValue(AUTOMATIC_BOX_VALUE if size is None else size)
        self.flats_box.setCurrentIndex(self.flats_box.findData(options.flats))
        for name, box in self._flag_boxes().items():
            box.setChecked(getattr(options, name))
        for widget in widgets:
            widget.blockSignals(False)
        self.refresh_layers()

    def options(self) -> ColorizeOptions:
        chosen = self.reference_box.currentData()
        reference_id, reference = self._options.reference_id, self._options.reference
        if isinstance(chosen, str):
            reference_id = chosen
            reference = "" if chosen == NO_REFERENCE_ID else self._names.get(chosen, reference)
        value = self.working_size_box.value()
        return ColorizeOptions(
            reference_id=reference_id,
            reference=reference,
            working_size=None if value == AUTOMATIC_BOX_VALUE else value,
            flats=self.flats_box.currentData(),
            **{name: box.isChecked() for name, box in self._flag_boxes().items()},
        )

    def refresh_layers(self) -> None:
        """List every layer of the active document (indented, with thumbnails), keeping the
        choice: by layer id, so a renamed reference stays chosen under its new name."""
        self.reference_box.blockSignals(True)
        self.reference_box.clear()
        self.reference_box.addItem(NO_REFERENCE_TEXT, NO_REFERENCE_ID)
        self._names: dict[str, str] = {}
        for choice in self._list_layers():
            self._names[choice.uid] = choice.name
            text = "    " * choice.depth + choice.name
            if choice.thumbnail is not None:
                icon = QtGui.QIcon(QtGui.QPixmap.fromImage(choice.thumbnail))
                self.reference_box.addItem(icon, text, choice.uid)
            else:
                self.reference_box.addItem(text, choice.uid)
        index = self._current_index()
        self.reference_box.setCurrentIndex(index)
        self.reference_box.blockSignals(False)

    def _current_index(self) -> int:
        options = self._options
        if options.reference_id:
            index = self.reference_box.findData(options.reference_id)
            if options.reference_id in self._names:  # renamed since: show and keep its new name
                self._options = replace(options, reference=self._names[options.reference_id])
        else:  # a choice stored by name only
            uid = next((u for u, name in self._names.items() if name == options.reference), None)
            index = -1 if uid is None else self.reference_box.findData(uid)
        if index < 0 and options.has_reference_choice:
            self.reference_box.addItem(
                f"{options.reference} (not in this document)", options.reference_id or None
            )
            index = self.reference_box.count() - 1
        return index

    def set_busy(self, busy: bool) -> None:
        """Colorize greyed out and Cancel shown while a request runs; the moving bar too, once it
        has run for `BUSY_BAR_DELAY_MS`."""
        if busy and not self._busy:
            self._busy_bar_timer.start()
        elif not busy:
            self._busy_bar_timer.stop()
            self.busy_bar.setVisible(False)
        self._busy = busy
        self.colorize_button.setEnabled(not busy and self._has_document)
        self.cancel_button.setVisible(busy)

    def set_has_document(self, has_document: bool) -> None:
        self._has_document = has_document
        self.set_busy(self._busy)

    def set_daemon_status(self, running: bool, text: str) -> None:
        self.daemon_label.setText(text)
        self.start_button.setVisible(not running and not self._busy)

    def set_flats_available(self, available: bool | None) -> None:
        """Grey the flats choices out, saying why, when the daemon cannot make flats (None: not
        known, no daemon asked yet); "No flats" stays choosable."""
        unavailable = available is False
        model = self.flats_box.model()
        for index in range(self.flats_box.count()):
            if self.flats_box.itemData(index) != NO_FLATS:
                model.item(index).setEnabled(not unavailable)
        self.flats_note.setVisible(unavailable)

    def set_status(self, text: str) -> None:
        self.status_label.setText(text)

    def _emit_options(self, *_: object) -> None:
        options = self.options()
        self._options = options
        self._on_options_changed(options)
