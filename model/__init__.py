"""colord.model: the SCFT networks, their presets, checkpoint files and pixel facts.

The pixel facts (`colord.model.pixels`) import without torch, so torch-free code (the daemon's
image preparation, its protocol) can use them; the torch parts load on first use.
"""

from importlib import import_module
from typing import Any

from .pixels import LINE_THRESHOLD, SIZE_MULTIPLE, from_signed, on_white, to_signed

_LAZY = {
    "CheckpointError": ".checkpoint",
    "LoadedCheckpoint": ".checkpoint",
    "load_checkpoint": ".checkpoint",
    "save_checkpoint": ".checkpoint",
    "Discriminator": ".networks",
    "Generator": ".networks",
    "SCFTExtras": ".networks",
    "count_parameters": ".networks",
    "PRESETS": ".presets",
    "Preset": ".presets",
    "get_preset": ".presets",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_LAZY[name], __name__), name)


__all__ = [
    "LINE_THRESHOLD",
    "PRESETS",
    "SIZE_MULTIPLE",
    "CheckpointError",
    "Discriminator",
    "Generator",
    "LoadedCheckpoint",
    "Preset",
    "SCFTExtras",
    "count_parameters",
    "from_signed",
    "get_preset",
    "load_checkpoint",
    "on_white",
    "save_checkpoint",
    "to_signed",
]
