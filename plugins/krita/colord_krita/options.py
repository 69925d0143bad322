"""The artist's choices, kept in Krita's settings; checked by `colord_plugin_core` before a run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .colord_plugin_core import AUTOMATIC, NO_FLATS, parse_bool, parse_flats

SETTINGS_GROUP = "colord_krita"
NO_REFERENCE_ID = "none"  # the stored reference of the explicit "No reference" choice


@dataclass(frozen=True)
class ColorizeOptions:
    reference_id: str = ""  # the reference layer's uniqueId; NO_REFERENCE_ID: colour without one
    reference: str = ""  # its name: shown when the layer is gone, and used when there is no id
    working_size: int | None = None  # None: automatic; checked (multiple of 16…) before a run
    keep_lines: bool = True
    transparent_paper: bool = True  # the result holds only the figure, not the paper around it
    multiply_over_opaque: bool = True  # opaque line art: the result goes above it, in Multiply
    flats: str = NO_FLATS  # a flats layer: colord_plugin_core.FLATS_CHOICES

    @property
    def no_reference(self) -> bool:
        return self.reference_id == NO_REFERENCE_ID

    @property
    def has_reference_choice(self) -> bool:
        return bool(self.reference_id or self.reference)


def _size(text: str) -> int | None:
    try:
        return int(text)  # kept as typed: an unusable size is refused with a message at Colorize
    except ValueError:
        return None  # "auto", or unreadable


_FLAGS = ("keep_lines", "transparent_paper", "multiply_over_opaque")


def load(read: Callable[[str, str], str]) -> ColorizeOptions:
    """Options from settings; `read(key, default)` returns the stored text. Bad values fall back."""
    defaults = ColorizeOptions()
    flags = {
        name: parse_bool(read(name, str(getattr(defaults, name)).lower()), getattr(defaults, name))
        for name in _FLAGS
    }
    return ColorizeOptions(
        reference_id=read("reference_id", defaults.reference_id),
        reference=read("reference", defaults.reference),
        working_size=_size(read("working_size", AUTOMATIC)),
        flats=parse_flats(read("flats", defaults.flats)),
        **flags,
    )


def dump(options: ColorizeOptions) -> dict[str, str]:
    """The settings to store for `options` (key -> text), the inverse of `load`."""
    return {
        "reference_id": options.reference_id,
        "reference": options.reference,
        "working_size": AUTOMATIC if options.working_size is None else str(options.working_size),
        "flats": options.flats,
        **{name: str(getattr(options, name)).lower() for name in _FLAGS},
    }
