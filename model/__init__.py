"""colord.model: the SCFT networks, their presets and checkpoint files (nn.Modules only)."""

from .checkpoint import CheckpointError, LoadedCheckpoint, load_checkpoint, save_checkpoint
from .networks import Discriminator, Generator, SCFTExtras, count_parameters
from .presets import PRESETS, Preset, get_preset

__all__ = [
    "PRESETS",
    "CheckpointError",
    "Discriminator",
    "Generator",
    "LoadedCheckpoint",
    "Preset",
    "SCFTExtras",
    "count_parameters",
    "get_preset",
    "load_checkpoint",
    "save_checkpoint",
]
