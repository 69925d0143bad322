"""One colorize job, from the decoded request to the engine and back, and what the engine made.

Torch-free (numpy only), so the protocol, the server and the clients import it without loading a
model. A request option is a field here with the default the protocol gives it
(`colord_protocol.COLORIZE_OPTIONS`); nothing between the decoder and the engine names options.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from colord.plugins.wire.colord_protocol import COLORIZE_OPTIONS

_DEFAULTS = {name: option.default for name, option in COLORIZE_OPTIONS.items()}


@dataclass
class Job:
    """One colorize request: the images as arrays and every option of the request."""

    line_art: np.ndarray  # (H, W) or (H, W, C), C in 1..4, uint8 or uint16
    reference: np.ndarray | None = None  # likewise, any size; None = no-reference mode
    working_size: int | None = _DEFAULTS["working_size"]  # long side the model runs at;
    # None = the engine's (automatic when the engine has none either)
    keep_lines: bool = _DEFAULTS["keep_lines"]  # lay the original lines over the colours
    result_format: str = _DEFAULTS["result_format"]  # how the result travels back
    flats: str | None = _DEFAULTS["flats"]  # None: no flats; "with_colour" or "only" (the
    # engine makes the flats either way; the reply leaves the colour out for "only")
    flats_gap: int | None = _DEFAULTS["flats_gap"]  # canvas px; None: flats.DEFAULT_GAP
    flats_palette: bool | None = _DEFAULTS["flats_palette"]  # snap to the reference's palette
    flats_ground: str | None = _DEFAULTS["flats_ground"]  # None or "transparent"; "opaque"
    ground: str | None = _DEFAULTS["ground"]  # "transparent": the colour layer's paper around
    # the figure cleared (`ground.outside_drawing`); None or "opaque": kept

    def options(self) -> dict[str, Any]:
        """The request options, by name (everything but the images)."""
        images = ("line_art", "reference")
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in images}


@dataclass
class ColorizeResult:
    """What the engine made of one Job."""

    image: np.ndarray  # (H, W, 4) uint8 RGBA, the line art's size, alpha 255 but 0 on a
    # transparent ground; with flats "only", the plain colours (no lines, ground kept: not sent)
    working_size: int  # the working size used, chosen or automatic
    timings: dict[str, float] = field(default_factory=dict)  # milliseconds: prepare, forward,
    # finish, flats (when asked) and their total, as the engine measured them; forward is the
    # model's own time (a batch's forward, shared by its jobs)
    flats: np.ndarray | None = None  # (H, W, 4) uint8 RGBA, one colour per region; when asked
