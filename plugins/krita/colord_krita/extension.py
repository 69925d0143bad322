"""Everything that touches Krita: the Extension with its action, the docker, and the layer I/O.

Reading gives every layer as 8-bit sRGB BGRA over its bounds on the canvas (paint layers through
pixelData, others through their projection). Pixels in any other colour space are converted inside
a scratch document, so the artist's document and its undo history never see the conversion; the
result layer is the only change to it, added in one undo step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from krita import DockWidget, DockWidgetFactory, DockWidgetFactoryBase, Extension, Krita

from . import colord_plugin_core, messages
from .colord_plugin_core import LayerPixels, NewLayer, Placement, PluginError
from .colorizer import Colorizer, DaemonFeatures, Inputs, daemon_status
from .options import SETTINGS_GROUP, ColorizeOptions, dump, load
from .panel import ColordPanel, LayerChoice
from .pixels import SRGB8, Rect, intersect, is_srgb8
from .qt import QtCore, QtWidgets, as_qbytearray

ACTION_ID = "colord_colorize"
ACTION_TEXT = "Colorize with Reference…"
DOCKER_ID = "colord_docker"
MASK_TYPES = {"transparencymask", "filtermask", "transformmask", "selectionmask", "colorizemask"}
KIND_NAMES = {kind: kind.replace("mask", " mask") for kind in MASK_TYPES}
COLOUR_MODELS = {
    "GRAYA": "greyscale",
    "CMYKA": "CMYK",
    "LABA": "Lab",
    "XYZA": "XYZ",
    "YCbCrA": "YCbCr",
}
STATUS_BAR_MS = 10000
STARTUP_POLL_MS = 250
DAEMON_REFRESH_MS = 3000
REACTIVATE_MS = 250


def _walk(node: Any, depth: int = 0) -> Iterator[tuple[Any, int]]:
    """Every layer under `node`, top of the stack first (as the Layers docker shows them)."""
    for child in reversed(node.childNodes()):
        if child.type() in MASK_TYPES:
            continue
        yield child, depth
        yield from _walk(child, depth + 1)


def _space(node_or_doc: Any) -> tuple[str, str, str]:
    return (node_or_doc.colorModel(), node_or_doc.colorDepth(), node_or_doc.colorProfile())


def _convert(raw: Any, width: int, height: int, source: tuple, target: tuple) -> Any:
    """Pixels (a QByteArray or bytes-like) from one colour space to another, as a QByteArray,
    through a scratch document that is then closed."""
    scratch = Krita.instance().createDocument(width, height, "colord scratch", *source, 72.0)
    try:
        node = scratch.createNode("pixels", "paintlayer")
        node.setColorSpace(*source)
        node.setPixelData(as_qbytearray(raw), 0, 0, width, height)
        node.setColorSpace(*target)
        return node.pixelData(0, 0, width, height)
    finally:
        scratch.setModified(False)
        scratch.close()


class KritaHost:
    """The `colorizer.Host` in Krita: reads layers of the active document, inserts the result."""

    def __init__(self) -> None:
        # result layer id -> the line art it was made from: Krita activates a layer it has just
        # added a moment later, so the next run may find a result active and take its line art
        self._line_art_of: dict[str, Any] = {}

    def read_inputs(self, options: ColorizeOptions) -> Inputs:
        document = Krita.instance().activeDocument()
        if document is None:
            raise PluginError(messages.NO_DOCUMENT)
        line_art = document.activeNode()
        if line_art is not None:
            remembered = self._line_art_of.get(line_art.uniqueId().toString())
            if remembered is not None and remembered.parentNode() is not None:
                line_art = remembered
        if line_art is None or line_art.parentNode() is None:
            raise PluginError(messages.NO_ACTIVE_LAYER)
        if line_art.type() in MASK_TYPES:
            raise PluginError(messages.not_a_layer(line_art.name(), KIND_NAMES[line_art.type()]))
        colord_plugin_core.check_not_a_result(line_art.name())
        reference_node = None
        if not options.no_reference:
            reference_node = find_reference(document, options)
            if reference_node is None:
                raise PluginError(messages.reference_missing(options.reference))
            colord_plugin_core.check_distinct_reference(
                reference_node.uniqueId(), line_art.uniqueId(), reference_node.name()
            )
        document.waitForDone()
        canvas = Rect(0, 0, document.width(), document.height())
        return Inputs(
            line_art=self._read(line_art, canvas),
            reference=None if reference_node is None else self._read(reference_node, canvas),
            target=(document, line_art),
        )

    def _read(self, node: Any, canvas: Rect) -> LayerPixels:
        bounds = node.bounds()
        rect = intersect(Rect(bounds.x(), bounds.y(), bounds.width(), bounds.height()), canvas)
        if rect is None:
            raise PluginError(messages.empty_layer(node.name()))
        if node.type() == "paintlayer":
            raw = node.pixelData(*rect)
        else:  # group, vector, file, fill, filter and clone layers: what they show
            raw = node.projectionPixelData(*rect)
        space = _space(node)
        if not is_srgb8(*space):
            raw = _convert(raw, rect.width, rect.height, space, SRGB8)
        # A view of the QByteArray, not a copy: it goes to the socket as it is.
        return LayerPixels(node.name(), rect.x, rect.y, rect.width, rect.height, memoryview(raw))

    def room_below(self, target: Any) -> bool:
        _, line_art = target
        parent = line_art.parentNode()
        ids = [sibling.uniqueId() for sibling in parent.childNodes()] if parent is not None else []
        return bool(ids) and ids[0] != line_art.uniqueId()

    def layer_names(self) -> list[str]:
        document = Krita.instance().activeDocument()
        return [] if document is None else [node.name() for node, _ in _walk(document.rootNode())]

    def insert(self, target: Any, placement: Placement) -> list[str]:
        document, line_art = target
        parent = line_art.parentNode()
        siblings = parent.childNodes() if parent is not None else []
        ids = [sibling.uniqueId() for sibling in siblings]
        if line_art.uniqueId() not in ids:
            raise PluginError(messages.LINE_ART_REMOVED)
        index = ids.index(line_art.uniqueId())
        notes = []
        space = _space(document)
        model = space[0]
        if model != "RGBA":  # a Gray (or CMYK, Lab…) document: keep the colours in an RGB layer
            names = [layer.pixels.name for layer in placement.layers]
            notes.append(messages.colour_layer_in(COLOUR_MODELS.get(model, model), names))
        # Krita's scripting API makes each added layer an undo step of its own: the stack is
        # built bottom first, each new layer directly above the one before.
        anchor = line_art if placement.above else siblings[index - 1]
        for new in reversed(placement.layers):
            layer = self._paint_layer(document, new, space)
            # Added hidden, then shown: addChildNode waits for Krita to finish its pending work,
            # which for a visible layer is a recomposite of the whole canvas; shown afterwards,
            # the canvas is recomposited in the background while Krita stays responsive.
            layer.setVisible(False)
            parent.addChildNode(layer, anchor)  # one undoable step
            layer.setVisible(new.visible)
            self._line_art_of[layer.uniqueId().toString()] = line_art
            anchor = layer
        # The line art stays the line art for the next run: active again now, and once Krita has
        # activated the new layer itself.
        document.setActiveNode(line_art)
        QtCore.QTimer.singleShot(REACTIVATE_MS, lambda: document.setActiveNode(line_art))
        return notes

    @staticmethod
    def _paint_layer(document: Any, new: NewLayer, space: tuple[str, str, str]) -> Any:
        pixels = new.pixels
        layer = document.createNode(pixels.name, "paintlayer")
        data = pixels.data
        if space[0] != "RGBA":
            layer.setColorSpace(*SRGB8)
        elif not is_srgb8(*space):
            data = _convert(data, pixels.width, pixels.height, SRGB8, space)
        layer.setPixelData(as_qbytearray(data), pixels.x, pixels.y, pixels.width, pixels.height)
        if new.multiply:
            layer.setBlendingMode("multiply")
        return layer

    def show_message(self, text: str) -> None:
        window = Krita.instance().activeWindow()
        parent = window.qwindow() if window is not None else None
        box = QtWidgets.QMessageBox(
            QtWidgets.QMessageBox.Icon.Warning,
            messages.TITLE,
            text,
            QtWidgets.QMessageBox.StandardButton.Ok,
            parent,
        )
        box.setAttribute(QtCore.Qt.WidgetAttribute.WA_DeleteOnClose)
        box.show()  # not exec(): Krita keeps running while the message is up

    def show_progress(self, text: str) -> None:
        """`text` in the main window's status bar, seen with the docker closed too."""
        window = Krita.instance().activeWindow()
        if window is not None and text:
            window.qwindow().statusBar().showMessage(f"colord: {text}", STATUS_BAR_MS)

    def list_layers(self) -> list[LayerChoice]:
        document = Krita.instance().activeDocument()
        if document is None:
            return []
        return [
            LayerChoice(node.uniqueId().toString(), node.name(), depth, node.thumbnail(32, 32))
            for node, depth in _walk(document.rootNode())
        ]

    @staticmethod
    def has_document() -> bool:
        return Krita.instance().activeDocument() is not None


def find_reference(document: Any, options: ColorizeOptions) -> Any:
    """The chosen reference layer: by its id, or by name when the choice has no id."""
    for node, _ in _walk(document.rootNode()):
        if options.reference_id:
            if node.uniqueId().toString() == options.reference_id:
                return node
        elif node.name() == options.reference:
            return node
    return None


class _GuiThreadCall(QtCore.QObject):
    """`trigger()` from any thread runs `callback` in the GUI thread (a queued Qt signal)."""

    _arrived = QtCore.pyqtSignal()

    def __init__(self, callback: Callable[[], None]) -> None:
        super().__init__()  # created in the GUI thread, so it lives there
        self._callback = callback
        self._arrived.connect(self._run, QtCore.Qt.ConnectionType.QueuedConnection)

    @QtCore.pyqtSlot()
    def _run(self) -> None:
        self._callback()

    def trigger(self) -> None:
        self._arrived.emit()


class Controller:
    """Shared by the action and every docker: one request at a time, options in Krita's settings."""

    def __init__(self) -> None:
        self.host = KritaHost()
        self._reply = _GuiThreadCall(self._finish)
        self.colorizer = Colorizer(self.host, on_change=self._changed, on_reply=self._reply.trigger)
        self._features_known = _GuiThreadCall(self._show_features)
        self.features = DaemonFeatures(on_change=self._features_known.trigger)
        self._panels: list[ColordPanel] = []
        # While the daemon starts there is no reply to wait for: poll it, and refresh the
        # docker's daemon line now and then so it never shows a stale state.
        self._startup_timer = QtCore.QTimer()
        self._startup_timer.setInterval(STARTUP_POLL_MS)
        self._startup_timer.timeout.connect(self._finish)
        self._daemon_timer = QtCore.QTimer()
        self._daemon_timer.setInterval(DAEMON_REFRESH_MS)
        self._daemon_timer.timeout.connect(self.refresh_daemon_status)

    def options(self) -> ColorizeOptions:
        krita = Krita.instance()
        return load(lambda key, default: krita.readSetting(SETTINGS_GROUP, key, default))

    def save_options(self, options: ColorizeOptions) -> None:
        krita = Krita.instance()
        for key, value in dump(options).items():
            krita.writeSetting(SETTINGS_GROUP, key, value)
        for panel in self._panels:  # the dockers of other windows show the change too
            if panel.options() != options:
                panel.set_options(options)

    def colorize(self) -> None:
        self.colorizer.start(self.options())
        self._follow_startup()

    def start_daemon(self) -> None:
        self.colorizer.start_daemon()
        self._follow_startup()

    def cancel(self) -> None:
        self.colorizer.cancel()
        self._startup_timer.stop()

    def _follow_startup(self) -> None:
        if self.colorizer.starting:
            self._startup_timer.start()

    def add_panel(self, panel: ColordPanel) -> None:
        self._panels.append(panel)
        panel.destroyed.connect(lambda *_: self._panels.remove(panel))
        panel.set_options(self.options())
        self.refresh_daemon_status()
        self._changed()
        self._daemon_timer.start()

    def refresh_daemon_status(self) -> None:
        connection, text = daemon_status()
        if connection is not None:
            self.colorizer.daemon_running()
        self.features.update(connection)
        for panel in self._panels:
            panel.set_daemon_status(connection is not None, text)
            panel.set_has_document(self.host.has_document())
        self._show_features()

    def _show_features(self) -> None:
        for panel in self._panels:
            panel.set_flats_available(self.features.flats)

    def _finish(self) -> None:
        self.colorizer.poll()
        if not self.colorizer.starting:
            self._startup_timer.stop()
        self.refresh_daemon_status()

    def _changed(self) -> None:
        self.host.show_progress(self.colorizer.status)
        for panel in self._panels:
            panel.set_busy(self.colorizer.busy)
            panel.set_status(self.colorizer.status)


_controller: Controller | None = None


def controller() -> Controller:
    global _controller
    if _controller is None:
        _controller = Controller()
    return _controller


class ColordExtension(Extension):
    def setup(self) -> None:
        pass

    def createActions(self, window: Any) -> None:
        action = window.createAction(ACTION_ID, ACTION_TEXT, "tools/scripts")
        action.triggered.connect(lambda *_: controller().colorize())


class ColordDocker(DockWidget):
    def __init__(self) -> None:
        super().__init__()
        self.setWindowTitle("colord")
        shared = controller()
        self.panel = ColordPanel(
            list_layers=shared.host.list_layers,
            on_options_changed=shared.save_options,
            on_colorize=shared.colorize,
            on_cancel=shared.cancel,
            on_start_daemon=shared.start_daemon,
        )
        self.setWidget(self.panel)
        shared.add_panel(self.panel)

    def canvasChanged(self, canvas: Any) -> None:
        self.panel.refresh_layers()
        self.panel.set_has_document(canvas is not None and KritaHost.has_document())


def register() -> None:
    krita = Krita.instance()
    krita.addExtension(ColordExtension(krita))
    # Krita 5 (PyQt5) names the enum value unscoped, Krita 6 (PyQt6) only scoped.
    if hasattr(DockWidgetFactoryBase, "DockRight"):
        position = DockWidgetFactoryBase.DockRight
    else:
        position = DockWidgetFactoryBase.DockPosition.DockRight
    krita.addDockWidgetFactory(DockWidgetFactory(DOCKER_ID, position, ColordDocker))
