"""What the plug-in tells the artist, and an optional log of it.

Setting COLORD_KRITA_LOG to a file path makes the plug-in append one JSON line per message and per
inserted layer there (with timings), besides showing messages in Krita; scripts and tests read it.
"""

from __future__ import annotations

import json
import os
import time

LOG_ENV = "COLORD_KRITA_LOG"
TITLE = "colord"


class PluginError(Exception):
    """A problem the artist can fix; the message is one readable sentence."""


NO_DOCUMENT = "Open a document first: colord colours the active layer of the active document."
NO_ACTIVE_LAYER = "Select the line-art layer first: colord colours the active layer."
NO_REFERENCE = (
    "No reference layer chosen: pick one in the colord docker (Settings › Dockers › colord)."
)
BUSY = "colord is still colouring the previous request; wait for it to finish."
LINE_ART_REMOVED = "The line-art layer was removed while colord was working; nothing was added."
AT_BOTTOM = (
    "The line-art layer is the lowest layer of its group, so there is no place below it for the "
    "result: add a layer under it (for example a white background) and try again."
)


def reference_missing(name: str) -> str:
    return (
        f"No layer is named “{name}” in this document: choose the reference in the colord docker."
    )


def reference_is_line_art(name: str) -> str:
    return f"“{name}” is both the line art and the reference: choose a different reference layer."


def not_a_layer(name: str, kind: str) -> str:
    return f"“{name}” is a {kind}, not a layer: select a paint, vector or group layer."


def empty_layer(name: str) -> str:
    return f"The layer “{name}” has nothing on the canvas to colour."


def unexpected(error: BaseException) -> str:
    return f"colord hit an unexpected problem ({type(error).__name__}: {error})."


def result_layer_name(reference_name: str) -> str:
    return f"Colorized ({reference_name})"


def record(event: str, **fields: object) -> None:
    """Append `event` with `fields` as one JSON line to $COLORD_KRITA_LOG, when it is set."""
    path = os.environ.get(LOG_ENV)
    if not path:
        return
    line = json.dumps({"event": event, "time": time.time(), **fields}, default=str)
    try:
        with open(path, "a", encoding="utf-8") as log:
            log.write(line + "\n")
    except OSError:
        pass  # the log is a diagnostic aid; the message itself is still shown in Krita
