"""What `colord eval` borrows from the daemon: the running daemon as a colorizer (`--daemon`) and
the flats colorizers (`--flats`: the engine of a checkpoint, or the running daemon).

Here rather than in training/, so that training never imports the daemon; the eval command is
assembled here with these and registered in the CLI's command table.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from colord.daemon.client import Client, ColordError
from colord.daemon.engine import Engine, EngineError
from colord.training.cli_eval import DaemonSupply, make_eval_command

# The plain colours (no lines over them) and their flats, the ground opaque so it is judged too.
FLATS_OPTIONS = {"keep_lines": False, "flats": "with_colour", "flats_ground": "opaque"}


class DaemonColorizer:
    """The model of a running `colord serve`, asked one image at a time at the sketch's size."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.name = daemon_name(client)

    def __call__(
        self, sketches: Sequence[np.ndarray], references: Sequence[np.ndarray] | None
    ) -> list[np.ndarray]:
        outputs = []
        for i, sketch in enumerate(sketches):
            reply = self.client.colorize(
                sketch,
                None if references is None else references[i],
                working_size=max(sketch.shape),
                keep_lines=False,
            )
            outputs.append(np.ascontiguousarray(reply.image[..., :3]))
        return outputs


class FlatsColorizer:
    """Plain colours and their flats at the line art's own size, from the engine's or the
    client's `colorize` (both return a record with `image` and `flats`)."""

    def __init__(self, name: str, colorize: Callable[..., Any]) -> None:
        self.name = name
        self._colorize = colorize

    def __call__(
        self, line_art: np.ndarray, reference: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        result = self._colorize(
            line_art, reference, working_size=max(line_art.shape), **FLATS_OPTIONS
        )
        return result.image, result.flats


def daemon_name(client: Client) -> str:
    info = client.info()
    return f"daemon: {info['model']} ({info['preset']}, {info['device']})"


def load_daemon_colorizer(connection_file: Path | None = None) -> DaemonColorizer:
    return DaemonColorizer(Client.from_connection_file(connection_file))


def load_engine_flats(checkpoint: Path, device: str) -> FlatsColorizer:
    engine = Engine(checkpoint, device=device, warmup=False)
    return FlatsColorizer(f"engine: {checkpoint}", engine.colorize)


def load_daemon_flats(connection_file: Path | None = None) -> FlatsColorizer:
    client = Client.from_connection_file(connection_file)
    return FlatsColorizer(daemon_name(client), client.colorize)


eval_command = make_eval_command(
    DaemonSupply(
        load_daemon_colorizer, load_engine_flats, load_daemon_flats, (ColordError, EngineError)
    )
)
