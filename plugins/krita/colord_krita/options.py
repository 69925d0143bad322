"""The artist's choices (reference layer, working size, keep lines), kept in Krita's settings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

SETTINGS_GROUP = "colord_krita"
MIN_WORKING_SIZE = 64
MAX_WORKING_SIZE = 4096
AUTOMATIC = "auto"  # the stored text of the automatic working size


@dataclass(frozen=True)
class ColorizeOptions:
    reference: str = ""  # the reference layer's name; the first layer with that name is used
    working_size: int | None = None  # None: automatic (the daemon chooses from the strokes)
    keep_lines: bool = True


def _parse_size(text: str) -> int | None:
    try:
        size = int(text)
    except ValueError:
        return None  # "auto", or unreadable
    return min(max(size, MIN_WORKING_SIZE), MAX_WORKING_SIZE)


def _parse_bool(text: str, default: bool) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    return default


def load(read: Callable[[str, str], str]) -> ColorizeOptions:
    """Options from settings; `read(key, default)` returns the stored text. Bad values fall back."""
    defaults = ColorizeOptions()
    return ColorizeOptions(
        reference=read("reference", defaults.reference),
        working_size=_parse_size(read("working_size", AUTOMATIC)),
        keep_lines=_parse_bool(
            read("keep_lines", str(defaults.keep_lines).lower()), defaults.keep_lines
        ),
    )


def dump(options: ColorizeOptions) -> dict[str, str]:
    """The settings to store for `options` (key -> text), the inverse of `load`."""
    return {
        "reference": options.reference,
        "working_size": AUTOMATIC if options.working_size is None else str(options.working_size),
        "keep_lines": str(options.keep_lines).lower(),
    }
