"""Runs inside the real Krita (GUI): plays the scenario in $COLORD_E2E_SCENARIO, records, quits.

For each step it builds a document from raw pixel files, makes the line art active, writes the
plug-in's settings, triggers the plug-in's real action (as a menu click or a shortcut does), waits
for the plug-in to insert a layer or report a message, and dumps every layer's pixels before and
after. What it saw goes to report.json in the scenario's output folder; the test reads that.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
import traceback
from pathlib import Path

from colord_krita.qt import QtCore, QtWidgets
from krita import Extension, Krita

SCENARIO_ENV = "COLORD_E2E_SCENARIO"
PLUGIN_LOG_ENV = "COLORD_KRITA_LOG"
ACTION_ID = "colord_colorize"
WAIT_S = 120.0


def _walk(node, parent_name=""):
    children = node.childNodes()
    for index, child in enumerate(children):
        yield child, parent_name, index
        yield from _walk(child, child.name())


class Driver:
    def __init__(self, scenario_path: str) -> None:
        self.scenario = json.loads(Path(scenario_path).read_text())
        self.out = Path(self.scenario["output"])
        self.report = {
            "modules": {
                name: importlib.util.find_spec(name) is not None for name in ("zmq", "msgpack")
            },
            "qt": QtCore.qVersion(),
            "steps": {},
        }
        self.log_path = Path(os.environ[PLUGIN_LOG_ENV])
        self.steps = self.play()
        self.waiting = None
        self.deadline = 0.0
        self.timer = QtCore.QTimer()
        self.timer.setInterval(20)
        self.timer.timeout.connect(self.tick)

    # -- a tiny cooperative scheduler: play() yields "wait until this is true" ------------------

    def start(self, *_: object) -> None:
        self.timer.start()

    def tick(self) -> None:
        try:
            if self.waiting is not None and not self.waiting():
                if time.monotonic() > self.deadline:
                    raise TimeoutError("a step waited too long")
                return
            self.waiting = next(self.steps)
            self.deadline = time.monotonic() + WAIT_S
        except StopIteration:
            self.finish()
        except Exception:
            self.report["error"] = traceback.format_exc()
            self.finish()

    def finish(self) -> None:
        self.timer.stop()
        (self.out / "report.json").write_text(json.dumps(self.report, indent=1))
        for document in Krita.instance().documents():
            document.setModified(False)
        Krita.instance().action("file_quit").trigger()

    # -- the scenario ---------------------------------------------------------------------------

    def play(self):
        yield lambda: Krita.instance().activeWindow() is not None
        yield from self.settle()
        self.report["no_document"] = self.docker_state()
        for step in self.scenario["steps"]:
            record = self.report["steps"][step["name"]] = {}
            yield from self.play_step(step, record)

    def play_step(self, step: dict, record: dict):
        krita = Krita.instance()
        spec = step["document"]
        document = krita.createDocument(
            spec["width"], spec["height"], step["name"], spec["model"], spec["depth"],
            spec["profile"], 72.0,
        )  # fmt: skip
        nodes = {}
        for layer in step["layers"]:
            parent = nodes[layer["parent"]] if layer.get("parent") else document.rootNode()
            if layer.get("existing"):  # the layer the new document comes with
                node = document.nodeByName(layer["name"])
            else:
                node = document.createNode(layer["name"], layer.get("type", "paintlayer"))
            if "file" in layer:
                data = (self.out / layer["file"]).read_bytes()
                node.setPixelData(data, layer["x"], layer["y"], layer["width"], layer["height"])
            if not layer.get("existing"):
                parent.addChildNode(node, None)
            nodes[layer["name"]] = node
        if not step.get("background", True):
            document.nodeByName("Background").remove()
        window = krita.activeWindow()
        window.addView(document)
        yield (
            lambda: (
                krita.activeDocument() is not None and krita.activeDocument().name() == step["name"]
            )
        )
        document.setActiveNode(nodes[step["active"]])
        yield (
            lambda: (
                document.activeNode() is not None and document.activeNode().name() == step["active"]
            )
        )
        document.refreshProjection()
        document.waitForDone()
        if "screenshots" in step:  # the docker open, as an artist would have it
            dock, _ = self.panel()
            dock.setVisible(True)
            dock.raise_()

        settings = dict(step.get("settings", {}))
        if "reference_by_id" in step:  # the docker's choice: the layer's id, then renamed
            settings["reference_id"] = nodes[step["reference_by_id"]].uniqueId().toString()
        for key, value in settings.items():
            krita.writeSetting("colord_krita", key, value)
        if "rename" in step:
            old, new = step["rename"]
            nodes[old].setName(new)
        # several daemons: the rounds take them in turn, all meeting Krita in the same state
        daemons = step.get("connection_files") or [step["connection_file"]]
        os.environ["COLORD_CONNECTION_FILE"] = daemons[0]
        if step.get("ask_daemon_first"):  # the docker asks the daemon what it can do, in the
            self.docker_state()  # background, once it sees it
            yield from self.settle(2.0)
        dump = step.get("dump", True)
        record["before"] = self.dump(document, step["name"], "before") if dump else []
        record["projection_before"] = self.dump_projection(document, step["name"], "before")
        record["docker"] = self.docker_state()
        log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        action = krita.action(ACTION_ID)
        record["action_text"] = action.text()
        record["event_loop_gaps_ms"] = []
        for round_number in range(step.get("repeat", 1)):
            os.environ["COLORD_CONNECTION_FILE"] = daemons[round_number % len(daemons)]
            for _ in range(step.get("clicks", 1)):
                action.trigger()
            if step.get("cancel"):
                self.click_docker_button("Cancel")
                yield from self.settle(3.0)  # the reply comes and must be dropped
                break
            gaps: list[float] = []
            yield self.until_events(log_start, round_number + 1, gaps)
            # the longest wait between two timer ticks while the daemon worked, then the last
            # one, which holds the insertion of the layer
            record["event_loop_gaps_ms"].append([max(gaps[:-1], default=0.0), gaps[-1]])
            document.waitForDone()  # Krita's own work the insertion left, the redraw among it
            record.setdefault("settled_at", []).append(time.time())
            if step.get("undo_each"):  # every round in the same document, as a timing run wants
                yield from self.undo_to(document, len(list(_walk(document.rootNode()))) - 1)
        yield from self.settle()
        record["events"] = self.log_events(log_start)
        record["message_boxes"] = self.close_message_boxes()
        record["after"] = self.dump(document, step["name"], "after") if dump else []
        record["projection_after"] = self.dump_projection(document, step["name"], "after")
        yield from self.settle(1.0)  # Krita activates a layer it added a moment later
        active = document.activeNode()
        record["active_after"] = None if active is None else active.name()
        record["status_bar"] = krita.activeWindow().qwindow().statusBar().currentMessage()
        record["docker_after"] = self.docker_state()
        if "screenshots" in step:
            yield from self.settle(1.0)  # let the canvas and the docker repaint
            shots = step["screenshots"]
            dock, _ = self.panel()
            Krita.instance().activeWindow().qwindow().grab().save(shots["window"])
            dock.grab().save(shots["docker"])
        if step.get("undo"):
            yield from self.undo_to(document, len(record["before"]))
            record["after_undo"] = [node.name() for node, _, _ in _walk(document.rootNode())]

    def undo_to(self, document, layer_count: int):
        """Undo once and wait until the document holds `layer_count` nodes again and Krita has
        finished the work that left."""
        Krita.instance().action("edit_undo").trigger()
        yield lambda: len(list(_walk(document.rootNode()))) == layer_count
        document.waitForDone()

    def until_events(self, start: int, count: int, gaps: list[float]):
        """A wait for `count` plug-in log events that notes how long Krita's event loop stalled."""
        last = [time.perf_counter()]

        def done() -> bool:
            now = time.perf_counter()
            gaps.append((now - last[0]) * 1000.0)
            last[0] = now
            return len(self.log_events(start)) >= count

        return done

    def settle(self, seconds: float = 0.3):
        """Give Krita a moment, so that anything else the click caused would show up too."""
        until = time.monotonic() + seconds
        yield lambda: time.monotonic() > until

    def log_events(self, start: int) -> list:
        if not self.log_path.exists():
            return []
        with open(self.log_path, encoding="utf-8") as log:
            log.seek(start)
            return [json.loads(line) for line in log if line.strip()]

    def dump(self, document, step: str, phase: str) -> list:
        """Every node: name, kind, place, bounds, and its pixels over the whole canvas (raw)."""
        width, height = document.width(), document.height()
        nodes = []
        for number, (node, parent, index) in enumerate(_walk(document.rootNode())):
            bounds = node.bounds()
            name = f"{step}-{phase}-{number}.raw"
            if node.type() == "paintlayer":
                pixels = node.pixelData(0, 0, width, height)
            else:
                pixels = node.projectionPixelData(0, 0, width, height)
            (self.out / name).write_bytes(bytes(pixels))
            nodes.append(
                {
                    "name": node.name(),
                    "type": node.type(),
                    "parent": parent,
                    "index": index,
                    "uid": node.uniqueId().toString(),
                    "bounds": [bounds.x(), bounds.y(), bounds.width(), bounds.height()],
                    "space": [node.colorModel(), node.colorDepth(), node.colorProfile()],
                    "blending": node.blendingMode(),
                    "visible": node.visible(),
                    "file": name,
                }
            )
        return nodes

    def dump_projection(self, document, step: str, phase: str) -> dict:
        """The composited canvas, as the artist sees it (in the document's colour space)."""
        document.refreshProjection()
        document.waitForDone()
        name = f"{step}-projection-{phase}.raw"
        pixels = document.pixelData(0, 0, document.width(), document.height())
        (self.out / name).write_bytes(bytes(pixels))
        return {"file": name, "space": [document.colorModel(), document.colorDepth()]}

    def panel(self):
        window = Krita.instance().activeWindow().qwindow()
        for dock in window.findChildren(QtWidgets.QDockWidget):
            panel = getattr(dock, "panel", None)
            if panel is not None:
                return dock, panel
        return None, None

    def click_docker_button(self, text: str) -> None:
        _, panel = self.panel()
        for button in panel.findChildren(QtWidgets.QPushButton):
            if button.text() == text:
                button.click()

    def docker_state(self) -> dict:
        """The colord docker as the artist would see it: reference chooser, daemon, buttons."""
        dock, panel = self.panel()
        if panel is None:
            return {}
        import colord_krita.extension as extension

        shared = extension.controller()
        shared.refresh_daemon_status()  # as its timer does every few seconds
        panel.set_options(shared.options())  # the settings this step wrote, as stored ones show
        box = panel.reference_box
        return {
            "title": dock.windowTitle(),
            "layers": [box.itemData(i) for i in range(box.count())],
            "texts": [box.itemText(i) for i in range(box.count())],
            "thumbnails": [not box.itemIcon(i).isNull() for i in range(box.count())],
            "reference": box.currentData(),
            "reference_text": box.currentText(),
            "daemon": panel.daemon_label.text(),
            "start_visible": panel.start_button.isVisibleTo(panel),
            "colorize_enabled": panel.colorize_button.isEnabled(),
            "status": panel.status_label.text(),
            "flats_enabled": [
                panel.flats_box.model().item(i).isEnabled() for i in range(panel.flats_box.count())
            ],
            "flats_note": panel.flats_note.text() if panel.flats_note.isVisibleTo(panel) else "",
        }

    def close_message_boxes(self) -> list:
        texts = []
        for widget in QtWidgets.QApplication.topLevelWidgets():
            if isinstance(widget, QtWidgets.QMessageBox) and widget.isVisible():
                texts.append(widget.text())
                widget.close()
        return texts


class DriverExtension(Extension):
    def __init__(self, parent) -> None:
        super().__init__(parent)
        self.driver = None

    def setup(self) -> None:
        scenario = os.environ.get(SCENARIO_ENV)
        if not scenario:
            return
        self.driver = Driver(scenario)
        notifier = Krita.instance().notifier()
        notifier.setActive(True)
        notifier.windowCreated.connect(self.driver.start)

    def createActions(self, window) -> None:
        pass


Krita.instance().addExtension(DriverExtension(Krita.instance()))
