"""What the Krita plug-in tells the artist, and an optional log of it.

Setting COLORD_KRITA_LOG to a file path makes the plug-in append one JSON line per message and per
inserted layer there (with timings), besides showing messages in Krita; scripts and tests read it.
Sentences both plug-ins say live in `colord_plugin_core`.
"""

from __future__ import annotations

import json
import os
import time

from .colord_plugin_core import Placement

LOG_ENV = "COLORD_KRITA_LOG"
TITLE = "colord"

NO_DOCUMENT = "Open a document first: colord colours the active layer of the active document."
NO_ACTIVE_LAYER = "Select the line-art layer first: colord colours the active layer."
NO_REFERENCE = (
    "No reference layer chosen: pick one in the colord docker (Settings › Dockers › colord), "
    "or choose “No reference” there to colour without one."
)
BUSY = "colord is still colouring the previous request; wait for it to finish or cancel it."
CANCELLED = "Cancelled; nothing was added."
LINE_ART_REMOVED = "The line-art layer was removed while colord was working; nothing was added."


def reference_missing(name: str) -> str:
    return (
        f"The reference layer “{name}” is not in this document: choose it again in the colord "
        "docker."
    )


def not_a_layer(name: str, kind: str) -> str:
    return f"“{name}” is a {kind}, not a layer: select a paint, vector or group layer."


def empty_layer(name: str) -> str:
    return f"The layer “{name}” has nothing on the canvas to colour."


def added(names: list[str]) -> str:
    return f"Added {_listed(names)}."


def placement_notes(line_art: str, placement: Placement, *, lowest: bool) -> list[str]:
    """What the artist should know about where the new layers went ([] when nothing)."""
    notes = []
    names = [layer.pixels.name for layer in placement.layers]
    if placement.above:
        why = (
            f"“{line_art}” is the lowest layer of its group"
            if lowest
            else f"“{line_art}” is opaque and would hide it"
        )
        notes.append(
            f"Added {_listed(names)} above “{line_art}” in Multiply mode, since {why}; its "
            "colours show through the lines. Your layers were not changed."
        )
    hidden = [layer.pixels.name for layer in placement.layers if not layer.visible]
    if hidden:
        notes.append(
            f"{_listed(hidden)} is hidden under the colours (shown in Multiply it would darken "
            "them): show it, or pick regions from it with the contiguous selection tool."
        )
    return notes


def _listed(names: list[str]) -> str:
    return " and ".join(f"“{name}”" for name in names)


def colour_layer_in(model: str, names: list[str]) -> str:
    layers = "an RGB layer" if len(names) == 1 else "RGB layers"
    return (
        f"This document is in {model}, so {_listed(names)} {'was' if len(names) == 1 else 'were'} "
        f"added as {layers} to keep the colours; the canvas shows them once the image is "
        "converted to RGB (Image › Convert Image Color Space…)."
    )


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
