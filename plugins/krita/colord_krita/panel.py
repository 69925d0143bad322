"""The docker's content: reference chooser, working size, keep lines, daemon status, Colorize."""

from __future__ import annotations

from collections.abc import Callable

from .options import MAX_WORKING_SIZE, MIN_WORKING_SIZE, ColorizeOptions
from .qt import QtWidgets

AUTOMATIC_BOX_VALUE = 0  # the working-size box's value that shows "Automatic"


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
        list_layers: Callable[[], list[tuple[str, int]]],
        on_options_changed: Callable[[ColorizeOptions], None],
        on_colorize: Callable[[], None],
        on_check_daemon: Callable[[], None],
    ) -> None:
        super().__init__()
        self._list_layers = list_layers
        self._on_options_changed = on_options_changed
        self._reference = ""

        self.reference_box = _LayerComboBox(self.refresh_layers)
        self.working_size_box = QtWidgets.QSpinBox()
        # the bottom of the range reads "Automatic": the daemon matches the model's stroke width
        self.working_size_box.setRange(AUTOMATIC_BOX_VALUE, MAX_WORKING_SIZE)
        self.working_size_box.setSpecialValueText("Automatic")
        self.working_size_box.setSingleStep(64)
        self.working_size_box.setSuffix(" px")
        self.working_size_box.setToolTip(
            "The size at which the model sees the drawing. Automatic: the size at which its "
            "strokes are as thick as those the model learnt from."
        )
        self.keep_lines_box = QtWidgets.QCheckBox("Keep lines crisp")
        self.daemon_label = QtWidgets.QLabel()
        self.daemon_label.setWordWrap(True)
        check_button = QtWidgets.QPushButton("Check")
        check_button.clicked.connect(on_check_daemon)
        self.colorize_button = QtWidgets.QPushButton("Colorize")
        self.colorize_button.clicked.connect(on_colorize)
        self.busy_bar = QtWidgets.QProgressBar()
        self.busy_bar.setRange(0, 0)  # no known progress: a moving bar while a request runs
        self.busy_bar.setVisible(False)
        self.status_label = QtWidgets.QLabel()
        self.status_label.setWordWrap(True)

        form = QtWidgets.QFormLayout()
        form.addRow("Reference", self.reference_box)
        form.addRow("Working size", self.working_size_box)
        form.addRow("", self.keep_lines_box)
        daemon_row = QtWidgets.QHBoxLayout()
        daemon_row.addWidget(self.daemon_label, 1)
        daemon_row.addWidget(check_button)
        form.addRow("Daemon", daemon_row)
        layout = QtWidgets.QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.colorize_button)
        layout.addWidget(self.busy_bar)
        layout.addWidget(self.status_label)
        layout.addStretch(1)

        self.reference_box.activated.connect(self._emit_options)
        self.working_size_box.valueChanged.connect(self._emit_options)
        self.keep_lines_box.toggled.connect(self._emit_options)

    def set_options(self, options: ColorizeOptions) -> None:
        """Show `options` (stored ones, not a change by the artist: nothing is emitted)."""
        self._reference = options.reference
        for widget in (self.working_size_box, self.keep_lines_box):
            widget.blockSignals(True)
        size = options.working_size
        self.working_size_box.setValue(AUTOMATIC_BOX_VALUE if size is None else size)
        self.keep_lines_box.setChecked(options.keep_lines)
        for widget in (self.working_size_box, self.keep_lines_box):
            widget.blockSignals(False)
        self.refresh_layers()

    def options(self) -> ColorizeOptions:
        reference = self.reference_box.currentData()
        return ColorizeOptions(
            reference=reference if isinstance(reference, str) else self._reference,
            working_size=self._working_size(),
            keep_lines=self.keep_lines_box.isChecked(),
        )

    def _working_size(self) -> int | None:
        value = self.working_size_box.value()
        return None if value == AUTOMATIC_BOX_VALUE else max(value, MIN_WORKING_SIZE)

    def refresh_layers(self) -> None:
        """List every layer of the active document (indented by depth), keeping the choice."""
        self.reference_box.blockSignals(True)
        self.reference_box.clear()
        for name, depth in self._list_layers():
            self.reference_box.addItem("    " * depth + name, name)
        index = self.reference_box.findData(self._reference)
        if index < 0 and self._reference:
            self.reference_box.addItem(f"{self._reference} (not in this document)", self._reference)
            index = self.reference_box.count() - 1
        self.reference_box.setCurrentIndex(index)
        self.reference_box.blockSignals(False)

    def set_busy(self, busy: bool) -> None:
        self.colorize_button.setEnabled(not busy)
        self.busy_bar.setVisible(busy)

    def set_daemon_status(self, text: str) -> None:
        self.daemon_label.setText(text)

    def set_status(self, text: str) -> None:
        self.status_label.setText(text)

    def _emit_options(self, *_: object) -> None:
        options = self.options()
        self._reference = options.reference
        self._on_options_changed(options)
